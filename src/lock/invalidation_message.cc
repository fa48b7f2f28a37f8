#include "lock/invalidation_message.h"

namespace herdguard::internal {
namespace {

constexpr std::string_view kMagic{"\0hgI", 4};
constexpr std::size_t kOriginBytes = 8;

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

}  // namespace herdguard::internal
