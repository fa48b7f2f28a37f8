// Internal: the bytes of a "ready" announcement on the fleet's pub/sub
// channel — what a lock holder publishes when it finishes a load that other
// processes wait for (redis_lock.h, LockHold::finish), and what the notifier
// hands to the waiters of the key (redis_notifier.h).
//
// Format 2 (this release):
//   "\0hg\x02"                 4 bytes, magic
//   key length                 u32, little-endian
//   key                        the cache key's bytes
//   version                    u64, little-endian: the hold's snapshot
//   0x00                       the value was not stored (failed, superseded,
//                              too large to announce): look in L2
//   | 0x01 envelope bytes      the value, as stored in L2 (envelope.h)
// Format 1 (earlier releases): the key's bytes alone, no value.
//
// Why a head the client builds and a tail the script appends: only the Lua
// script knows whether the value was stored, and it should not have to
// encode integers.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace herdguard::internal {

// Magic, key length, key and version: the script appends the rest.
std::string announcement_head(std::string_view key, std::uint64_t version);

struct DecodedAnnouncement {
  std::string_view key;
  std::uint64_t version = 0;              // 0 for format 1
  std::optional<std::string_view> value;  // the envelope bytes, when announced
};

// Parses a message of format 2, or takes it as format 1 (a key alone) when
// it does not parse as format 2. Views point into `message`.
DecodedAnnouncement decode_announcement(std::string_view message);

}  // namespace herdguard::internal
