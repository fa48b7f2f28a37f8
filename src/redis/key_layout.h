// Internal: the Redis keys herdguard writes for one cache key, and the Lua
// helpers every script that touches a key's version shares.
//
// Layout (format 2; docs/upgrade.md):
//   <prefix>{<key>}:v   the value, an envelope (envelope.h); expires at its stale_until
//   <prefix>{<key>}:l   the fleet lock (a random token); expires after its lease
//   <prefix>{<key>}:n   the key's version; exists only while a load may still
//                       write under a snapshot of it, and expires after that
//   <prefix>{<key>}:t   the L3 tombstone (memcached_cache.h): the lowest version
//                       an L3 record may have to be promoted; left by a
//                       set/invalidate when an L3 is configured; expires
//                       after the L3's max_lifetime (plus the load timeout)
//   <prefix>epoch       the L3 epoch: made afresh when Redis lost its data
//                       (outside any hash tag: not Cluster-ready, issue 13)
//   <prefix>{<key>}:w   "a process of the fleet waits for this key's load":
//                       set by a try_acquire that found the lock held, taken
//                       by the holder's finish (which then announces);
//                       expires after a lease
//   <prefix>{<key>}:r   (a channel, not a key) the key's own ready channel
//                       for sharded pub/sub (RedisNotifierOptions::per_key):
//                       in the key's slot, so the holder's finish script
//                       may SPUBLISH on it
// Why this shape:
//   * Separate namespaces: the part after the key is fixed ("}:v", "}:l",
//     "}:n", "}:w"), so every Redis key maps back to exactly one (cache key,
//     purpose) pair, and no user key can name another key's lock or version
//     (with "lock:" + key in the value namespace, the user key "lock:k" was
//     k's lock).
//   * One hash tag: Redis Cluster hashes only what is between the first "{"
//     and the next "}", which is the same for the three keys of one cache
//     key whatever bytes the key holds, so each script touches one slot.
//     The prefix may not contain braces (validated) for that to hold.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "herdguard/clock.h"
#include "herdguard/redis_cache.h"
#include "herdguard/redis_client.h"
#include "herdguard/result.h"

namespace herdguard::internal {

inline std::string redis_key_for(std::string_view prefix, std::string_view key, char purpose) {
  std::string out;
  out.reserve(prefix.size() + key.size() + 4);
  out.append(prefix);
  out.push_back('{');
  out.append(key);
  out.append("}:");
  out.push_back(purpose);
  return out;
}

inline std::string value_key(std::string_view prefix, std::string_view key) {
  return redis_key_for(prefix, key, 'v');
}
inline std::string lock_key(std::string_view prefix, std::string_view key) {
  return redis_key_for(prefix, key, 'l');
}
inline std::string version_key(std::string_view prefix, std::string_view key) {
  return redis_key_for(prefix, key, 'n');
}
inline std::string tombstone_key(std::string_view prefix, std::string_view key) {
  return redis_key_for(prefix, key, 't');
}
inline std::string waiters_key(std::string_view prefix, std::string_view key) {
  return redis_key_for(prefix, key, 'w');
}
inline std::string ready_channel(std::string_view prefix, std::string_view key) {
  return redis_key_for(prefix, key, 'r');
}

// `v` as 8 little-endian bytes (an envelope's field); "" for 0.
std::string little_endian(std::uint64_t v);
// A duration as PX / PEXPIRE milliseconds: at least 1 (Redis refuses 0).
std::string redis_ms(Duration d);
// An instant as PXAT Unix milliseconds: at least 1, whatever the instant
// (an entry's stale_until may be in the past or TimePoint::max()).
std::string redis_unix_ms(TimePoint t);
// A snapshot's write deadline in Redis's clock. `redis_now_ms` was read
// between our send and the reply, so now + what is left after the reply
// never exceeds `hard_deadline`.
std::int64_t write_until_ms(std::int64_t redis_now_ms, Deadline hard_deadline);
// A version in a script reply (a decimal string or an integer, > 0).
// Errors: kBackend.
Result<std::uint64_t> parse_version_reply(const RedisReply& reply);
// Like parse_version_reply, 0 included. Errors: kBackend.
Result<std::uint64_t> parse_count_reply(const RedisReply& reply);

// Errors: kInvalidArgument when `prefix` holds a brace (it would move the
// hash tag) or is over 256 bytes.
Result<void> validate_prefix(std::string_view prefix, std::string_view component);

// Lua functions prepended to every script that reads or moves a version.
//
// hg_bump(key): INCR the version. A version key that did not exist starts
//   from the server clock in microseconds instead of 1, so a version number
//   is not handed out twice after the key expired or Redis restarted empty
//   (a load holding the old number must not match a new one). A key holding
//   something that is not a version (written by another program) is replaced.
// hg_keep_for(key, ms): keeps the key at least `ms` more milliseconds.
// hg_now_ms(): the server's clock, Unix milliseconds.
// hg_get(key): GET that reads a key of the wrong type as absent.
// Numbers stay below 2^53, so Lua's doubles hold them exactly; they are
// formatted with %.0f, never tostring (which would round to 14 digits).
inline constexpr std::string_view kVersionLua = R"lua(
local function hg_now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function hg_get(key)
  local ok, v = pcall(redis.call, 'GET', key)
  if ok then return v end
  return false
end
local function hg_bump(key)
  local ok, v = pcall(redis.call, 'INCR', key)
  if not ok then
    redis.call('DEL', key)
    v = 1
  end
  if v == 1 then
    local t = redis.call('TIME')
    v = tonumber(t[1]) * 1000000 + tonumber(t[2])
    redis.call('SET', key, string.format('%.0f', v))
  end
  return v
end
local function hg_keep_for(key, ms)
  if redis.call('PTTL', key) < ms then redis.call('PEXPIRE', key, ms) end
end
)lua";

// hg_write_loaded(value, version, expected, write_until, bytes, at): a loaded
//   value's versioned write, shared by RedisCache::write_loaded and the lock
//   holder's finish. Stores `bytes` under `value` (PXAT `at`) only if the
//   version key still holds `expected` and Redis's clock is before
//   `write_until` (Unix ms). Returns 1 written, 0 superseded, -1 too late.
// REQUIRES: appended after kVersionLua (it uses hg_now_ms and hg_get).
// `previous` (optional): the 8 little-endian bytes of the version a
// "not modified" answer confirmed (CacheEntry::extends_version). When the
// value key still holds that version's envelope and it equals `bytes` but
// for the fields that move — fresh_until, stale_until, version,
// load_duration (bytes 7..38) and the tag stamp (43..50) — only those are
// rewritten in place, and its expiry: returns 2, and the value is not
// written again. Else a plain SET.
inline constexpr std::string_view kWriteLoadedLua = R"lua(
local function hg_write_loaded(value, version, expected, write_until, bytes, at, previous)
  if hg_now_ms() >= tonumber(write_until) then return -1 end
  if hg_get(version) ~= expected then return 0 end
  if previous and previous ~= '' then
    local ok, cur = pcall(redis.call, 'GET', value)
    if ok and type(cur) == 'string' and #cur == #bytes and #cur >= 43
        and string.sub(cur, 1, 7) == string.sub(bytes, 1, 7)
        and string.sub(cur, 24, 31) == previous then
      -- Only the moving fields may differ: bytes 7..38 and the tag stamp
      -- (43..50, when the header has it); everything else — value length,
      -- tags, the value itself — must be what the repository confirmed
      -- (two loads can write different values under one snapshot version).
      local header = string.byte(bytes, 6) + 256 * string.byte(bytes, 7)
      local rest = 40
      if header >= 53 then
        rest = 52
        if string.sub(cur, 40, 43) ~= string.sub(bytes, 40, 43) then rest = nil end
      end
      if rest and string.sub(cur, rest) == string.sub(bytes, rest) then
        redis.call('SETRANGE', value, 7, string.sub(bytes, 8, 39))
        if header >= 53 then redis.call('SETRANGE', value, 43, string.sub(bytes, 44, 51)) end
        redis.call('PEXPIREAT', value, at)
        return 2
      end
    end
  end
  redis.call('SET', value, bytes, 'PXAT', at)
  return 1
end
)lua";

// What a hg_write_loaded result stands for; nullopt for any other integer.
std::optional<WriteOutcome> loaded_write_outcome(long long result);

}  // namespace herdguard::internal
