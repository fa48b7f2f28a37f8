// Internal: the Protector's cache tiers as one — the in-process L1
// (MemoryCache), the optional shared L2 (RedisCache) and, behind it, the
// optional L3 (MemcachedCache) — with the consistency contract's bookkeeping
// (docs/consistency.md) and the hit, miss and error counting of each.
//
// Invariants:
//  * Every L1 write that carries data read elsewhere (from L2 or the
//    database) is a fill under a ticket taken *before* that read, so it never
//    overwrites a set() or invalidate() of this process that came in between.
//  * set() and invalidate() act on L2 first, then L1: a reader whose ticket
//    predates the L1 step may have read the old L2 value, and its fill is
//    refused; a reader whose ticket follows it reads the new L2 state.
//  * With an L2, an L1 copy is served as fresh only until its recheck_at
//    (now + l1_max_ttl at the fill): that bounds how long another process's
//    set/invalidate can go unseen here.
//  * Tags (tag_versions.h): no entry a tag invalidation or clear() known to
//    this process refused is answered — L1 asks TagVersions itself (its
//    validity), and every entry read from L2 (a GET, an MGET, what the
//    fleet lock's acquire brought, an announcement) or L3 is judged here
//    and reads as a miss when refused. What this process knows is synced
//    with Redis at least every l1_max_ttl / 2 while L2 is read.
//  * Redis errors never fail a read: they count and read as a miss.
//  * L3 (only with an L2): a record is answered only after Redis confirmed
//    it (its epoch is the current one, its version at or above the key's
//    tombstone) and only as a value to write to L2 under the load's own
//    snapshot — a promotion is a versioned write like a load's. Records are
//    written only for values whose L2 write succeeded, with the epoch read
//    before the load began. memcached errors read as a miss and skip writes.
//
// Thread safety: safe from any number of threads.
#pragma once

#include <atomic>
#include <memory>
#include <optional>
#include <span>
#include <string_view>

#include "herdguard/early_refresh.h"
#include "herdguard/memcached_cache.h"
#include "herdguard/memory_cache.h"
#include "herdguard/redis_cache.h"
#include "protector/protector_counters.h"
#include "protector/tag_versions.h"

namespace herdguard::internal {

class TieredCache {
 public:
  // REQUIRES: l1 and clock non-null; l2 may be null (no shared tier); l3
  // only with l2. `early_refresh` and `ttl` set each L1 copy's refresh_from
  // (early_refresh.h); `load_timeout` (the hard one) sizes L3 tombstones.
  TieredCache(std::unique_ptr<MemoryCache> l1, bool l1_enabled, Duration l1_max_ttl,
              std::shared_ptr<RedisCache> l2, std::shared_ptr<MemcachedCache> l3,
              Duration load_timeout, std::shared_ptr<Clock> clock,
              EarlyRefreshOptions early_refresh, Duration ttl, std::shared_ptr<TagVersions> tags,
              Duration tag_history, ProtectorCounters& counters);

  bool has_l2() const noexcept { return l2_ != nullptr; }
  RedisCache* l2() const noexcept { return l2_.get(); }
  MemoryCache& l1() const noexcept { return *l1_; }
  bool has_l3() const noexcept { return l3_ != nullptr; }

  // The L1 entry for `key` (usable, maybe stale), or nullopt. Does not count.
  std::optional<CacheEntry> l1_get(std::string_view key, TimePoint now) const;
  // The hot path's L1 read, as of the time of the call: reads the clock's
  // cheap coarse_now(), and the precise now() only when the entry's
  // freshness ends within the clock's coarse_lag() (so the answer is the one
  // a precise read would give). Does not count.
  // A fresh entry comes as its value alone (the hit path copies nothing
  // else); any other usable entry comes whole, for the stale and fallback paths.
  struct L1Read {
    bool fresh = false;               // may be answered as fresh (fresh_in_l1)
    bool negative = false;            // fresh: the entry is a negative one
    std::string value;                // fresh: the entry's value
    std::optional<CacheEntry> entry;  // not fresh: the entry, if one is usable
    // fresh, and past the entry's refresh_from: an early refresh may be due;
    // `timing` has what deciding takes.
    bool refresh_due = false;
    MemoryCache::RefreshTiming timing;
  };
  L1Read l1_read(std::string_view key) const;
  // l1_read in two steps, so the hit path keeps its value in the caller's
  // own string: l1_peek looks at the coarse clock's latest possible time
  // only (kFresh: `value` and `negative` are set; kNotFresh, kRefreshDue:
  // the precise time must decide, and the entry's timing with it), and
  // l1_settle turns its answer into what l1_read returns.
  MemoryCache::Freshness l1_peek(std::string_view key, std::string& value, bool& negative) const;
  L1Read l1_settle(std::string_view key, MemoryCache::Freshness peeked, std::string&& value,
                   bool negative) const;
  // Whether an L1 copy may be answered as fresh (fresh and before recheck_at).
  static bool fresh_in_l1(const CacheEntry& e, TimePoint now) noexcept {
    return e.is_fresh_in_l1(now);
  }
  MemoryCache::Ticket ticket(std::string_view key) const noexcept { return l1_->ticket(key); }

  // The tag versions this process knows (L1's validity).
  TagVersions& tags() const noexcept { return *tags_; }
  // The stamp of a load or set that begins now (tag_versions.h), after a
  // sync with Redis when one is due.
  std::uint64_t tag_stamp(Deadline deadline);
  // Syncs the tag versions with Redis when due (at most one caller at a
  // time; the others go on with what is known). Failures are counted and
  // retried after the interval.
  void sync_tags_if_due(Deadline deadline);
  // Makes the next L2 read sync (a backplane gap: messages may be lost).
  void force_tag_sync() noexcept { next_tag_sync_ns_.store(0, std::memory_order_release); }
  // Invalidates `tag` (empty: clear) for the fleet (Redis) or, without an
  // L2, for this process; this process knows it before this returns.
  // Returns its version. Errors: Redis's (then nothing changed here).
  Result<std::uint64_t> invalidate_tag(std::string_view tag, Deadline deadline);
  // Bytes read from L2 by other means (the lock's acquire, an announcement),
  // decoded as an L2 read is: nullopt when they do not decode, are past
  // stale_until or a tag invalidation refuses them.
  std::optional<Envelope> l2_decode(std::string_view bytes);

  // L2's usable entry for `key` within `deadline`. Counts an L2 hit or miss,
  // or a Redis error (returned as the error, for callers that degrade).
  // REQUIRES: has_l2().
  Result<std::optional<Envelope>> l2_get(std::string_view key, TimePoint now, Deadline deadline);

  // The epoch an L3 record of a load that begins now is written with: the
  // last one Redis told, else asked for now (one round trip, once); 0 (write
  // no record) without an L3 or when Redis fails.
  std::uint64_t l3_epoch(std::string_view key, Deadline deadline);
  // L3's record for `key` when Redis confirms it may be promoted (see
  // Invariants) and it is fresh at the later of now and `fresh_at_least_until`;
  // else nullopt (counted: hit, miss, rejected, error). A refused record is
  // deleted from L3. REQUIRES: has_l3().
  std::optional<CacheEntry> l3_promotable(std::string_view key, Deadline deadline,
                                          TimePoint fresh_at_least_until);
  // Writes `entry`'s record (written to L2 under `version`) to L3, unless
  // there is no L3, `epoch` is 0 or `deadline` passed. Failures are counted.
  void l3_store(std::string_view key, const CacheEntry& entry, std::uint64_t version,
                std::uint64_t epoch, Deadline deadline);

  // l2_get for several keys in one MGET (get_many), answers in the order of
  // `keys`, each counted as l2_get counts it. REQUIRES: has_l2().
  Result<std::vector<std::optional<Envelope>>> l2_get_many(std::span<const std::string> keys,
                                                           TimePoint now, Deadline deadline);

  // Fills L1 unless a set/invalidate of `key` came in since `ticket` (then
  // counted and skipped). Caps freshness at l1_max_ttl when there is an L2.
  void fill_l1(std::string_view key, CacheEntry entry, MemoryCache::Ticket ticket, TimePoint now);

  // The set/invalidate of the contract: L2 (version bump + write/delete in
  // one script, with the L3 tombstone), then L3 (best effort: the tombstone
  // keeps a record it failed to replace from being promoted), then L1.
  // Errors: L2's (L1 is updated regardless).
  Result<void> set(std::string_view key, CacheEntry entry);
  Result<void> invalidate(std::string_view key);

 private:
  // Sets entry.refresh_from for an L1 copy.
  void mark_refresh_window(CacheEntry& entry) const noexcept;
  // Whether an entry read from L2 or L3 stands by the tags known, and this
  // process has synced them once (counted when it does not).
  bool stands(const CacheEntry& entry) const;

  const std::shared_ptr<TagVersions> tags_;
  const Duration tag_history_;
  // When the next tag sync is due (steady ns; 0: at once). Only the caller
  // whose compare-exchange moves it syncs.
  std::atomic<std::int64_t> next_tag_sync_ns_{0};
  const std::int64_t tag_sync_interval_ns_;
  static constexpr std::int64_t kTagSyncRetryNs = 50'000'000;  // 50 ms after a failed sync
  // A sync has completed once: what this process knows covers every tag
  // invalidation made before it started (only then are L2 entries trusted).
  std::atomic<bool> synced_once_{false};
  static constexpr std::size_t kTagSyncBatch = 1024;

  const std::unique_ptr<MemoryCache> l1_;
  const bool l1_enabled_;
  const Duration l1_max_ttl_;
  const std::shared_ptr<RedisCache> l2_;
  const std::shared_ptr<MemcachedCache> l3_;
  // How long a set/invalidate's tombstone lives: longer than any L3 record
  // written before it. A record's write starts at most a load timeout (a
  // load's) or an L3 timeout (a set's) after the L2 write it follows, and
  // expires at an absolute instant at most max_lifetime after it started
  // (memcached_cache.h); the margin covers memcached's whole seconds and
  // the clock skew between this host, Redis and memcached.
  static constexpr Duration kTombstoneMargin = std::chrono::seconds(60);
  const Duration tombstone_for_;
  // The last L3 epoch Redis told (0: none yet), and when (steady ns). Only
  // ever a value read from Redis; a stale one only makes records that Redis
  // then refuses, so it is asked again when older than kEpochRecheck (a
  // process that rarely reads L3 would otherwise write dead records for long).
  static constexpr Duration kEpochRecheck = std::chrono::seconds(1);
  std::atomic<std::uint64_t> l3_epoch_{0};
  std::atomic<std::int64_t> l3_epoch_read_ns_{0};
  void remember_epoch(std::uint64_t epoch) noexcept;
  const std::shared_ptr<Clock> clock_;
  const Duration coarse_lag_;  // clock_->coarse_lag(), read once
  // clock_ when it is the SystemClock (almost always): the hit path then
  // reads it without a virtual call. Null for any other clock.
  const SystemClock* const system_clock_;
  const EarlyRefreshOptions early_refresh_;
  const Duration ttl_;
  ProtectorCounters& counters_;
};

}  // namespace herdguard::internal
