// herdguard/redis_cache.h — the shared L2 cache in Redis, with versioned writes.
//
// Each entry is stored as an envelope (envelope.h) under the value key of its
// cache key (layout: docs/upgrade.md), with the Redis key's expiry at the
// entry's stale_until (PXAT), so Redis forgets an entry when herdguard would.
// A get is one GET.
//
// Versioned writes (memcache-lease semantics, docs/consistency.md): a load
// takes a *version snapshot* of its key before it reads the database —
// snapshot() here, or the fleet lock's acquire (redis_lock.h) — and writes
// its result with write_loaded(), which stores it only if the key's version
// is still the snapshot's and the snapshot's write deadline has not passed,
// both checked inside one Lua script. put() (a set) and erase() (an
// invalidate) bump the version in the same script as their write or delete,
// so a load that began before them can never overwrite what they did.
// Version keys exist only while some load may still write under them: each
// expires at its latest snapshot's write deadline, so scanning a million
// unique keys leaves nothing behind but their values, which expire too.
//
// Bytes under the prefix that do not decode (written by another program,
// truncated, another format) are a miss, counted in stats().corrupt; the next
// load overwrites them.
//
// Thread safety: safe from any number of threads (RedisClient is).
//
// Example:
//   auto redis = std::shared_ptr(std::move(*herdguard::RedisClient::create({.url = url})));
//   auto l2 = herdguard::RedisCache::create({.prefix = "shop:"}, redis, herdguard::system_clock());
//   auto snap = (*l2)->snapshot("sku-1", load_deadline);      // before reading the database
//   CacheEntry entry = load_from_database("sku-1");
//   auto outcome = (*l2)->write_loaded("sku-1", entry, *snap, load_deadline);
//   // kSuperseded: a set/invalidate came in between; the value was not stored.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "herdguard/cache.h"
#include "herdguard/envelope.h"
#include "herdguard/redis_client.h"

namespace herdguard {

struct RedisCacheOptions {
  // Starts every Redis key herdguard writes. Processes share a cache when
  // they share a prefix; other programs must not write under it.
  // REQUIRES: no '{' or '}' (they would change the Cluster hash tag), <= 256 bytes.
  std::string prefix = "herdguard:";
  // With replicas (Sentinel, Cluster), Redis acknowledges a write before
  // any replica has it, and a failover then can undo a set, an invalidate
  // or a tag invalidation that returned success (docs/consistency.md).
  // When > 0, each of those is followed by `WAIT wait_replicas
  // wait_timeout` on the same connection, and fails with kTimeout when
  // fewer replicas acknowledged in time (the change stands on the primary,
  // but is not known to survive a failover; counted in replica_shortfalls).
  // It adds a replication round trip to those calls, which then are not
  // bounded by a caller's deadline (up to command_timeout + wait_timeout).
  // REQUIRES: >= 0; wait_timeout in (0, 1 h].
  int wait_replicas = 0;
  Duration wait_timeout = std::chrono::milliseconds(100);
};

// A load's version snapshot: the key's version before the load read the
// database, and the instant (Redis's clock, Unix ms) after which the load may
// no longer write under it — its hard deadline.
struct VersionSnapshot {
  std::uint64_t version = 0;
  std::int64_t write_until_ms = 0;
};

enum class WriteOutcome {
  kWritten,     // stored
  kExtended,    // stored by extending the entry a "not modified" load confirmed, in place (no SET)
  kSuperseded,  // the key's version moved (set, invalidate, a later lock holder): not stored
  kTooLate,     // the snapshot's write deadline passed: not stored
};

// What Redis says about promoting an L3 record (memcached_cache.h) of a key:
// the lowest version it may have (its tombstone; 0: none) and the current epoch.
struct TierGuard {
  std::uint64_t min_version = 0;
  std::uint64_t epoch = 0;
};

// Tag invalidations since a version (tag_changes): what a process missed.
struct TagChanges {
  std::uint64_t sequence = 0;  // the fleet's tag sequence when read
  std::int64_t now_us = 0;     // Redis's clock then, Unix µs
  // (tag, version), in version order; the empty tag is clear().
  std::vector<std::pair<std::string, std::uint64_t>> changes;
  bool complete = false;  // every change above `after` is here (else ask again)
};

struct RedisCacheStats {
  std::uint64_t hits = 0;                // gets that returned an entry
  std::uint64_t misses = 0;              // gets that found nothing (or an expired / corrupt entry)
  std::uint64_t corrupt = 0;             // gets that found bytes that do not decode
  std::uint64_t errors = 0;              // Redis errors (any operation)
  std::uint64_t superseded = 0;          // write_loaded refused: the version moved
  std::uint64_t too_late = 0;            // write_loaded refused: past the write deadline
  std::uint64_t replica_shortfalls = 0;  // changes fewer than wait_replicas acknowledged in time
};

class RedisCache final : public Cache {
 public:
  // Errors: kInvalidArgument for a null client or clock, or a bad prefix.
  static Result<std::unique_ptr<RedisCache>> create(RedisCacheOptions options,
                                                    std::shared_ptr<RedisClient> client,
                                                    std::shared_ptr<Clock> clock);

  // One GET, within the client's timeouts. Returns nullopt for no entry, an
  // entry past stale_until, or bytes that do not decode (counted as
  // corrupt). Errors: kBackend/kTimeout from Redis.
  Result<std::optional<CacheEntry>> get(std::string_view key) override;
  // Like get, bounded by `deadline` too, with the version the entry was
  // written under.
  Result<std::optional<Envelope>> get_envelope(std::string_view key, Deadline deadline);
  // get_envelope for several keys in one MGET, answers in the order of
  // `keys`. Errors: kBackend/kTimeout (then nothing was read).
  Result<std::vector<std::optional<Envelope>>> get_envelopes(std::span<const std::string> keys,
                                                             Deadline deadline);
  // Decodes bytes this cache stored (read by other means: the fleet lock's
  // acquire, an announcement), as get_envelope would: nullopt for bytes that
  // do not decode (counted as corrupt) or an entry past stale_until.
  std::optional<Envelope> decode_value(std::string_view bytes);

  // A set: bumps the key's version (when one exists) and stores `entry`, in
  // one script, so no load that began before can overwrite it. An entry
  // already past stale_until deletes the key instead. Errors: kBackend/kTimeout.
  Result<void> put(std::string_view key, CacheEntry entry) override;
  // put(), returning the version the value was written under (also stored
  // in its envelope).
  Result<std::uint64_t> set(std::string_view key, CacheEntry entry);
  // set(), leaving an L3 tombstone at the new version for `tombstone_for`
  // (zero: none), in the same script.
  Result<std::uint64_t> set(std::string_view key, CacheEntry entry, Duration tombstone_for);
  // An invalidate: bumps the key's version (when one exists) and deletes the
  // value, in one script. Leaves no L3 tombstone: with an L3 (memcached_cache.h)
  // change keys through Protector::set/invalidate, which do.
  // Errors: kBackend/kTimeout.
  Result<void> erase(std::string_view key) override;
  // erase(), leaving an L3 tombstone for `tombstone_for` (zero: none) at the
  // bumped version, or at the server clock in µs when no load holds one.
  Result<void> invalidate(std::string_view key, Duration tombstone_for);
  // One round trip: `key`'s tombstone and the epoch (created when absent).
  // Errors: kBackend/kTimeout.
  Result<TierGuard> tier_guard(std::string_view key, Deadline deadline);

  // Tags (Protector::invalidate_tag, clear): gives `tag` (empty: clear) the
  // next version of the fleet's tag sequence — Redis's clock in µs, or one
  // above the last version when that is not later — and records it, in one
  // script; versions older than `keep` are dropped then (Duration::max():
  // never). O(1) commands whatever the number of tagged entries. Returns
  // the version. REQUIRES: keep > 0. Errors: kBackend/kTimeout.
  Result<std::uint64_t> invalidate_tag(std::string_view tag, Duration keep, Deadline deadline);
  // Every tag invalidation above version `after` (at most `limit`, oldest
  // first) with the sequence, in one round trip. Errors: kBackend/kTimeout.
  Result<TagChanges> tag_changes(std::uint64_t after, std::size_t limit, Deadline deadline);

  // Takes a version snapshot for a load that does not hold the fleet lock
  // (one round trip): creates the version key when missing and keeps it
  // until `hard_deadline`. REQUIRES: hard_deadline not expired.
  // Errors: kBackend/kTimeout (within hard_deadline); kTimeout when it passed.
  Result<VersionSnapshot> snapshot(std::string_view key, Deadline hard_deadline);
  // Stores a loaded entry under `snapshot` (see file comment); bounded by
  // `deadline`. Errors: kBackend/kTimeout from Redis (then nothing is known
  // about whether it was stored).
  Result<WriteOutcome> write_loaded(std::string_view key, const CacheEntry& entry,
                                    const VersionSnapshot& snapshot, Deadline deadline);

  // The Redis keys of `key`'s value and version (layout above).
  std::string redis_key(std::string_view key) const;
  std::string version_key(std::string_view key) const;
  std::string tombstone_key(std::string_view key) const;
  std::string epoch_key() const;
  // The fleet's tag sequence, and each tag's last version (a sorted set);
  // one hash tag, so Redis Cluster keeps both in one slot.
  std::string tag_sequence_key() const;
  std::string tag_versions_key() const;
  const RedisCacheOptions& options() const noexcept { return options_; }
  // True when the client talks to a Redis Cluster (redis-cluster:// URL).
  bool on_cluster() const noexcept {
    return client_->url().transport == RedisUrl::Transport::kCluster;
  }
  RedisCacheStats stats() const;

 private:
  RedisCache(RedisCacheOptions options, std::shared_ptr<RedisClient> client,
             std::shared_ptr<Clock> clock);
  Result<std::optional<Envelope>> decode_reply(Result<RedisReply> reply);
  // A change (set, invalidate, tag invalidation): the script, then WAIT
  // when options_.wait_replicas > 0. `deadline` bounds it without WAIT.
  Result<RedisReply> change(const RedisScript& script, std::span<const std::string_view> keys,
                            std::span<const std::string_view> args,
                            std::optional<Deadline> deadline, std::string_view what);

  const RedisCacheOptions options_;
  const std::shared_ptr<RedisClient> client_;
  const std::shared_ptr<Clock> clock_;
  std::atomic<std::uint64_t> hits_{0}, misses_{0}, corrupt_{0}, errors_{0}, superseded_{0},
      too_late_{0}, replica_shortfalls_{0};
};

}  // namespace herdguard
