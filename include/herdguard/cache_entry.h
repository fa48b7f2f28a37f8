// herdguard/cache_entry.h — one cached entry: the value and its instants.
//
// A `CacheEntry` is what every tier stores (the in-process L1, Redis's
// envelope, memcached's record): the value plus the two instants that drive
// herd protection. Until `fresh_until` the value is served as is. Between
// `fresh_until` and `stale_until` it is stale: served by
// stale-while-revalidate and by the fail-safe fallback while a reload runs or
// when the database is down. After `stale_until` the cache forgets it.
// `EntryValidity` lets a cache refuse entries beyond their instants (the
// Protector's tags and clear()).
//
// Thread safety: CacheEntry is a plain value; EntryValidity as documented.
//
// Example:
//   herdguard::CacheEntry e{.value = "v", .fresh_until = now + 60s, .stale_until = now + 1h};
//   if (e.is_fresh(now)) serve(e.value);
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "herdguard/clock.h"

namespace herdguard {

struct CacheEntry {
  // The cached bytes. Empty for a negative entry.
  std::string value{};
  // Served as fresh strictly before this instant.
  TimePoint fresh_until{};
  // Kept (and usable as a stale fallback) strictly before this instant.
  // REQUIRES: stale_until >= fresh_until.
  TimePoint stale_until{};
  // True when the entry remembers that the repository had no such key
  // (negative caching), so a herd on a missing key does not reach the database.
  bool negative = false;
  // How long the load that produced this entry took (probabilistic early refresh uses it).
  Duration load_duration{};
  // In-process copies only (never stored in Redis): the Protector serves an
  // L1 copy as fresh only before this instant, then reads the shared L2
  // again, which bounds how long another process's invalidate can go unseen
  // (ProtectorOptions::l1_max_ttl, docs/consistency.md).
  TimePoint recheck_at = TimePoint::max();
  // In-process copies only: from this instant on, a read of the fresh entry
  // decides whether to refresh it early (early_refresh.h); max(): never.
  TimePoint refresh_from = TimePoint::max();
  // The key's version in L2 when this value was written there (redis_cache.h;
  // 0 when unknown: no L2, or a degraded load). Versions only grow, so an L1
  // fill never replaces an entry of a higher version (memory_cache.h).
  std::uint64_t version = 0;
  // The tags the entry carries (EntryOptions::tags): Protector::invalidate_tag
  // of any of them invalidates it. Stored in L2 with the entry.
  std::vector<std::string> tags{};
  // The Protector's tag sequence (protector.h, invalidate_tag) when the load
  // that produced the entry began (for a set: when it was called): the entry
  // stands only while every one of its tags, and clear(), was last
  // invalidated at or below it. 0: before any (an entry of an older release).
  std::uint64_t tag_stamp = 0;
  // In-process only (never stored): a load whose repository answered "not
  // modified" (LoadedEntry::not_modified) for the value written to L2 under
  // this version; L2 then extends that entry in place instead of rewriting
  // its value (RedisCache::write_loaded). 0: a plain write.
  std::uint64_t extends_version = 0;

  bool is_fresh(TimePoint now) const noexcept { return now < fresh_until; }
  // Fresh and not due for its L1 recheck: an in-process copy that may be
  // answered as fresh without asking L2.
  bool is_fresh_in_l1(TimePoint now) const noexcept { return is_fresh(now) && now < recheck_at; }
  bool is_usable(TimePoint now) const noexcept { return now < stale_until; }
};

// Decides whether an entry still stands beyond its instants — the
// Protector's tags and clear() (protector.h). A MemoryCache given one
// (MemoryCacheOptions::validity) never returns an entry it refuses, and
// asks it again about an entry only when epoch() moved since it last did,
// so the hit path pays one atomic load for it.
//
// Thread safety: valid() and epoch() are called from any number of threads.
class EntryValidity {
 public:
  virtual ~EntryValidity() = default;
  // Whether `entry` still stands. Once false for an entry, false for it
  // forever. Must be quick: called under the cache shard's reader lock.
  virtual bool valid(const CacheEntry& entry) const = 0;
  // Moves (never back to a value it had) whenever an entry that was valid
  // may have stopped being so. Read before valid(), so that a change made
  // during valid() shows as a later epoch.
  std::uint64_t epoch() const noexcept { return epoch_.load(std::memory_order_acquire); }

 protected:
  // Call after making valid() refuse more (release: the change is visible
  // to whoever reads the new epoch).
  void bump_epoch() noexcept { epoch_.fetch_add(1, std::memory_order_acq_rel); }

 private:
  std::atomic<std::uint64_t> epoch_{1};
};

}  // namespace herdguard
