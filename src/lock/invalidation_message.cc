#include "lock/invalidation_message.h"

#include "core/little_endian.h"
#include "herdguard/envelope.h"

namespace herdguard::internal {
namespace {

constexpr std::string_view kMagic{"\0hgI", 4};
constexpr std::string_view kTagMagic{"\0hgG", 4};
constexpr std::size_t kOriginBytes = 8;

}  // namespace

std::string encode_invalidation(std::uint64_t origin, std::string_view key) {
  std::string out;
  out.reserve(kMagic.size() + kOriginBytes + key.size());
  out.append(kMagic);
  append_le(out, origin, kOriginBytes);
  out.append(key);
  return out;
}

std::optional<DecodedInvalidation> decode_invalidation(std::string_view message) {
  if (!message.starts_with(kMagic) || message.size() <= kMagic.size() + kOriginBytes)
    return std::nullopt;
  DecodedInvalidation out;
  out.origin = read_le(message, kMagic.size(), kOriginBytes);
  out.key = message.substr(kMagic.size() + kOriginBytes);
  return out;
}

std::string encode_tag_invalidation(std::uint64_t origin, std::uint64_t version,
                                    std::string_view tag) {
  std::string out;
  out.reserve(kTagMagic.size() + 16 + tag.size());
  out.append(kTagMagic);
  append_le(out, origin);
  append_le(out, version);
  out.append(tag);
  return out;
}

std::optional<DecodedTagInvalidation> decode_tag_invalidation(std::string_view message) {
  constexpr std::size_t kFixed = kTagMagic.size() + 16;
  if (!message.starts_with(kTagMagic) || message.size() < kFixed ||
      message.size() - kFixed > kMaxTagBytes) {
    return std::nullopt;
  }
  DecodedTagInvalidation out;
  out.origin = read_le(message, kTagMagic.size());
  out.version = read_le(message, kTagMagic.size() + 8);
  out.tag = message.substr(kFixed);
  if (out.version == 0) return std::nullopt;
  return out;
}

}  // namespace herdguard::internal
