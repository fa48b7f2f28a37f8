#include "redis/cluster_slot.h"

#include <boost/crc.hpp>
#include <charconv>

namespace herdguard::internal {

std::string_view cluster_hash_tag(std::string_view key) noexcept {
  const auto open = key.find('{');
  if (open == std::string_view::npos) return key;
  const auto close = key.find('}', open + 1);
  if (close == std::string_view::npos || close == open + 1) return key;
  return key.substr(open + 1, close - open - 1);
}

std::uint16_t cluster_slot(std::string_view key) noexcept {
  const std::string_view hashed = cluster_hash_tag(key);
  // CRC16/XMODEM: polynomial 0x1021, initial 0, no reflection, no final XOR.
  boost::crc_optimal<16, 0x1021, 0, 0, false, false> crc;
  crc.process_bytes(hashed.data(), hashed.size());
  return static_cast<std::uint16_t>(crc.checksum() & (kClusterSlots - 1));
}

std::optional<Redirect> parse_redirect(std::string_view text) {
  Redirect r;
  if (text.starts_with("MOVED ")) {
    r.moved = true;
    text.remove_prefix(6);
  } else if (text.starts_with("ASK ")) {
    text.remove_prefix(4);
  } else {
    return std::nullopt;
  }
  const auto space = text.find(' ');
  const auto colon = text.rfind(':');
  if (space == std::string_view::npos || colon == std::string_view::npos || colon < space) {
    return std::nullopt;
  }
  unsigned slot = 0;
  const std::string_view slot_text = text.substr(0, space);
  if (auto [p, ec] = std::from_chars(slot_text.data(), slot_text.data() + slot_text.size(), slot);
      ec != std::errc() || p != slot_text.data() + slot_text.size() || slot >= kClusterSlots) {
    return std::nullopt;
  }
  r.slot = static_cast<std::uint16_t>(slot);
  std::string_view host = text.substr(space + 1, colon - space - 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  if (host == "?") return std::nullopt;  // an endpoint the node does not know
  r.host = std::string(host);
  const std::string_view port = text.substr(colon + 1);
  if (auto [p, ec] = std::from_chars(port.data(), port.data() + port.size(), r.port);
      ec != std::errc() || p != port.data() + port.size() || r.port < 1 || r.port > 65535) {
    return std::nullopt;
  }
  return r;
}

}  // namespace herdguard::internal
