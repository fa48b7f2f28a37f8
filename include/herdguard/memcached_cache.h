// herdguard/memcached_cache.h — the optional L3 tier: a memcached behind the
// Redis L2, for values Redis has no room to keep.
//
// The Protector (ProtectorOptions::l3) reads L3 when L2 misses, just before it
// would call the database (so with the fleet lock, one process of the fleet
// reads it), promotes what it finds to L2 with a versioned write, and writes
// every value it loads from the database (and every set()) to L3 too.
//
// Each record carries what makes promotion safe (docs/consistency.md): the
// key's version (redis_cache.h) the value was written to L2 under, and the
// Redis *epoch* (a number Redis keeps under the prefix, new whenever Redis
// lost its data) current when the load began. A set()/invalidate() leaves a
// tombstone in Redis — the lowest version a record may have to be promoted —
// that outlives every record written before it, so L3 never brings back an
// invalidated value, also when deleting it from memcached failed; a Redis that
// restarted empty has a new epoch, and every older record is refused.
//
// memcached keys are at most 250 printable bytes without spaces; a key that
// does not fit (with the prefix) is stored under a hash of it, and the record
// holds the full key, so two keys that share a hash never read each other's
// values. Bytes that are not a record of this key (another program, a
// truncated write, a hash collision) are a miss, counted as corrupt.
//
// Failures degrade like Redis's: an error (memcached down, timing out) reads
// as a miss and skips the write, counted in stats().errors. After a failure
// (refused, reset, or no answer within the timeout: a hung server) memcached
// is left alone for `retry_interval`, so while it is down or hung each call
// fails at once instead of paying the timeout.
//
// URLs: `memcached://HOST:PORT` (TCP) and `memcached:///path/to/socket` (unix).
//
// Thread safety: safe from any number of threads (a pool of libmemcached
// handles, each used by one thread at a time).
//
// Example:
//   auto l3 = herdguard::MemcachedCache::create({.url = "memcached://10.0.0.7:11211"});
//   if (!l3) die(l3.error().to_string());             // a malformed URL or option
//   herdguard::ProtectorOptions options{.ttl = std::chrono::minutes(5)};
//   fleet->apply_to(options);                           // L3 needs the Redis L2
//   options.l3 = std::move(*l3);
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "herdguard/clock.h"
#include "herdguard/envelope.h"
#include "herdguard/result.h"

namespace herdguard {

struct MemcachedCacheOptions {
  // memcached://HOST:PORT or memcached:///absolute/socket/path.
  std::string url = "memcached://127.0.0.1:11211";
  // Starts every memcached key herdguard writes: printable ASCII, no space,
  // at most 64 bytes.
  std::string prefix = "herdguard:";
  // Bound on one operation (connect included), within the caller's
  // deadline. REQUIRES: 0 < timeout <= 10 s.
  Duration timeout = std::chrono::milliseconds(50);
  // How long a failed server is left alone before it is tried again.
  // REQUIRES: 1 s <= retry_interval <= 1 h (libmemcached counts seconds).
  Duration retry_interval = std::chrono::seconds(1);
  // The longest a record is kept, whatever its stale_until: tombstones live
  // this long (plus the load timeout), so this bounds the Redis memory they
  // take. REQUIRES: 1 s <= max_lifetime <= 30 days (memcached's limit for
  // relative expiries).
  Duration max_lifetime = std::chrono::hours(1);
  // Most connections open at once; a call beyond them waits for one (within
  // its timeout). REQUIRES: 1 <= pool_size <= 1024.
  std::size_t pool_size = 8;

  // Errors: kInvalidArgument naming the first bad field.
  Result<void> validate() const;
};

// Where a memcached server is: memcached://HOST:PORT or memcached:///SOCKET.
struct MemcachedAddress {
  bool unix_socket = false;
  std::string host{};         // TCP only
  int port = 0;               // TCP only, 1..65535
  std::string socket_path{};  // unix only, absolute
};
// Errors: kInvalidArgument naming what is wrong with `url`.
Result<MemcachedAddress> parse_memcached_url(std::string_view url);

// What L3 holds for a key: the entry with the version it was written to L2
// under (Envelope::version), and the Redis epoch of its load.
struct L3Record {
  Envelope envelope{};
  std::uint64_t epoch = 0;
};

struct MemcachedCacheStats {
  std::uint64_t hits = 0;     // gets that returned a record
  std::uint64_t misses = 0;   // gets that found nothing (corrupt included)
  std::uint64_t corrupt = 0;  // gets that found bytes that are not this key's record
  std::uint64_t errors = 0;   // failed operations (any)
  std::uint64_t writes = 0;   // records stored
};

class MemcachedCache {
 public:
  // Connects lazily: succeeds while memcached is down. `clock` tells when a
  // record's stale_until is (the Protector passes its own).
  // Errors: kInvalidArgument for bad options (the URL included) or a null clock.
  static Result<std::unique_ptr<MemcachedCache>> create(
      MemcachedCacheOptions options, std::shared_ptr<Clock> clock = system_clock());
  ~MemcachedCache();
  MemcachedCache(const MemcachedCache&) = delete;
  MemcachedCache& operator=(const MemcachedCache&) = delete;

  // The record for `key`, or nullopt (none, or bytes that are not its
  // record). Bounded by `deadline` and the timeout. Errors: kBackend,
  // kTimeout (nothing was read).
  Result<std::optional<L3Record>> get(std::string_view key, Deadline deadline);
  // Stores `record` under `key`, to expire at its stale_until (capped at
  // max_lifetime). A record already past its stale_until is not stored.
  // Errors: kBackend, kTimeout; kInvalidArgument when it is larger than
  // memcached takes (1 MiB by default).
  Result<void> put(std::string_view key, const L3Record& record, Deadline deadline);
  // Deletes `key`'s record; an absent one is not an error. Errors: kBackend, kTimeout.
  Result<void> erase(std::string_view key, Deadline deadline);

  // The memcached key `key` is stored under (see file comment).
  std::string memcached_key(std::string_view key) const;
  const MemcachedCacheOptions& options() const noexcept;
  MemcachedCacheStats stats() const;

 private:
  struct Impl;
  explicit MemcachedCache(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The bytes of a record (exposed for tests and fuzzing): magic "\0hg3", a
// format byte (1), the epoch and the key's length (little-endian u64, u32),
// the key, then the envelope (envelope.h).
std::string encode_l3_record(std::string_view key, const L3Record& record);
// Errors: kCorrupt when `bytes` are not a record of `key` in a format this
// build reads.
Result<L3Record> decode_l3_record(std::string_view key, std::string_view bytes);

}  // namespace herdguard
