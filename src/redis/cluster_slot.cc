#include "redis/cluster_slot.h"

#include <boost/crc.hpp>

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

}  // namespace herdguard::internal
