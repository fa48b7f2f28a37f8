#include "lock/announcement.h"

#include "core/little_endian.h"

namespace herdguard::internal {
namespace {

constexpr std::string_view kMagic{"\0hg\x02", 4};

}  // namespace

std::string announcement_head(std::string_view key, std::uint64_t version) {
  std::string out;
  out.reserve(kMagic.size() + 4 + key.size() + 8 + 1);
  out.append(kMagic);
  append_le(out, key.size(), 4);
  out.append(key);
  append_le(out, version, 8);
  return out;
}

DecodedAnnouncement decode_announcement(std::string_view message) {
  const DecodedAnnouncement as_key{.key = message, .version = 0, .value = std::nullopt};
  if (!message.starts_with(kMagic)) return as_key;
  std::string_view rest = message.substr(kMagic.size());
  if (rest.size() < 4) return as_key;
  const std::uint64_t key_size = read_le(rest, 0, 4);
  rest.remove_prefix(4);
  // key, version, flag
  if (rest.size() < key_size || rest.size() - key_size < 9) return as_key;
  DecodedAnnouncement out{.key = rest.substr(0, key_size), .version = 0, .value = std::nullopt};
  rest.remove_prefix(key_size);
  out.version = read_le(rest, 0, 8);
  rest.remove_prefix(8);
  const char flag = rest[0];
  rest.remove_prefix(1);
  if (flag == 1) {
    out.value = rest;
  } else if (flag != 0 || !rest.empty()) {
    return as_key;
  }
  return out;
}

}  // namespace herdguard::internal
