#include "lock/invalidation_message.h"

#include "herdguard/envelope.h"

namespace herdguard::internal {
namespace {

constexpr std::string_view kMagic{"\0hgI", 4};
constexpr std::string_view kTagMagic{"\0hgG", 4};
constexpr std::size_t kOriginBytes = 8;

void put_u64(std::string& out, std::uint64_t v) {
  for (std::size_t i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
std::uint64_t get_u64(std::string_view in, std::size_t at) {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < 8; ++i)
    v |= static_cast<std::uint64_t>(static_cast<unsigned char>(in[at + i])) << (8 * i);
  return v;
}

}  // namespace

std::string encode_invalidation(std::uint64_t origin, std::string_view key) {
  std::string out;
  out.reserve(kMagic.size() + kOriginBytes + key.size());
  out.append(kMagic);
  for (std::size_t i = 0; i < kOriginBytes; ++i)
    out.push_back(static_cast<char>((origin >> (8 * i)) & 0xff));
  out.append(key);
  return out;
}

std::optional<DecodedInvalidation> decode_invalidation(std::string_view message) {
  if (!message.starts_with(kMagic) || message.size() <= kMagic.size() + kOriginBytes)
    return std::nullopt;
  DecodedInvalidation out;
  for (std::size_t i = 0; i < kOriginBytes; ++i) {
    out.origin |= static_cast<std::uint64_t>(static_cast<unsigned char>(message[kMagic.size() + i]))
                  << (8 * i);
  }
  out.key = message.substr(kMagic.size() + kOriginBytes);
  return out;
}

std::string encode_tag_invalidation(std::uint64_t origin, std::uint64_t version,
                                    std::string_view tag) {
  std::string out;
  out.reserve(kTagMagic.size() + 16 + tag.size());
  out.append(kTagMagic);
  put_u64(out, origin);
  put_u64(out, version);
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
  out.origin = get_u64(message, kTagMagic.size());
  out.version = get_u64(message, kTagMagic.size() + 8);
  out.tag = message.substr(kFixed);
  if (out.version == 0) return std::nullopt;
  return out;
}

}  // namespace herdguard::internal
