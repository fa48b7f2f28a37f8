// Internal: the bytes of an invalidation on the fleet's backplane channel —
// what Protector::set() and invalidate() publish so that every other
// process drops its L1 copy of the key (redis_notifier.h).
//
// Format 1:
//   "\0hgI"      4 bytes, magic
//   origin       u64, little-endian: the publishing Protector's random id,
//                so a Protector skips its own messages
//   key          the cache key's bytes (the rest of the message, ≥ 1 byte)
//
// A tag invalidation (Protector::invalidate_tag, clear), format 1:
//   "\0hgG"      4 bytes, magic
//   origin       u64, little-endian
//   version      u64, little-endian: the tag's new version (tag_versions.h)
//   tag          the rest (empty: clear)
//
// Why the key comes last without a length: it is the only variable part,
// and PUBLISH carries the message's length already.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace herdguard::internal {

std::string encode_invalidation(std::uint64_t origin, std::string_view key);

struct DecodedInvalidation {
  std::uint64_t origin = 0;
  std::string_view key;  // points into the message
};

// nullopt for anything that is not a format-1 invalidation (another
// writer's bytes on the channel, a truncated message, an empty key).
std::optional<DecodedInvalidation> decode_invalidation(std::string_view message);

std::string encode_tag_invalidation(std::uint64_t origin, std::uint64_t version,
                                    std::string_view tag);

struct DecodedTagInvalidation {
  std::uint64_t origin = 0;
  std::uint64_t version = 0;
  std::string_view tag;  // points into the message; empty: clear
};

// nullopt for anything that is not a format-1 tag invalidation with a
// version > 0 and a tag of at most kMaxTagBytes.
std::optional<DecodedTagInvalidation> decode_tag_invalidation(std::string_view message);

}  // namespace herdguard::internal
