// Internal: what this process knows of the fleet's tag invalidations
// (Protector::invalidate_tag, clear) — the passive half of tagging.
//
// Nothing is done to the entries a tag invalidation hits; each entry is
// judged when read. Every invalidation gets a version from one fleet-wide
// sequence (RedisCache::invalidate_tag; this process's own without an L2),
// and every entry carries its *stamp*: the highest version this process knew
// of when the entry's load began (a set: when it was called). An entry
// stands while each of its tags, and clear() (the empty tag, which every
// entry carries), was last invalidated at or below its stamp.
//
// Why a stamp this process knew, rather than the sequence read from Redis:
// any stamp at or below the fleet's sequence when the load began is safe —
// an invalidation that returned after that instant has a higher version, so
// the entry does not stand for its tag — and a known one costs no round
// trip. A stamp that lags (an invalidation not heard yet) only makes the
// entry stand less long: it is refused, and loaded again, once that
// invalidation is heard — never accepted wrongly.
//
// What is known is learned three ways: this process's own invalidations
// (before they return), the backplane (another process's, within
// milliseconds), and a sync with Redis (every change since the last sync,
// in one round trip: at least every `sync_interval` while L2 is read, and at
// once after a backplane gap), which bounds how long a lost message goes
// unheard.
//
// Versions are Redis's clock in microseconds (raised by one when two fall in
// one microsecond), so a version older than `keep` (the longest an entry may
// live after its load began) is forgotten: every entry stamped below it has
// expired.
//
// Thread safety: safe from any number of threads. valid() and epoch() are
// what MemoryCache calls on its read path (EntryValidity).
#pragma once

#include <atomic>
#include <boost/unordered/unordered_flat_map.hpp>
#include <cstdint>
#include <shared_mutex>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/string_hash.h"
#include "herdguard/cache.h"
#include "herdguard/result.h"

namespace herdguard::internal {

// Errors: kInvalidArgument naming the first bad tag (empty, longer than
// kMaxTagBytes), or more than kMaxEntryTags tags. Duplicates are allowed.
Result<void> validate_tags(std::span<const std::string> tags);
// Errors: kInvalidArgument for an empty tag or one longer than kMaxTagBytes.
Result<void> validate_tag(std::string_view tag);

class TagVersions final : public EntryValidity {
 public:
  // `keep`: how long a version is remembered (see file comment).
  explicit TagVersions(Duration keep) : keep_us_(to_us(keep)) {}

  bool valid(const CacheEntry& entry) const override;
  // The stamp for an entry whose load (or set) begins now.
  std::uint64_t stamp() const noexcept { return known_max_.load(std::memory_order_acquire); }

  // `tag` (empty: clear) was invalidated at `version`. Bumps the epoch when
  // that refuses more than before. Unless `trusted` (Redis's own answer to
  // this process), a version that cannot be one (0, or over an hour ahead
  // of this host's clock: a forged backplane message) is ignored: returns false.
  bool learn(std::string_view tag, std::uint64_t version, bool trusted = false);
  // A sync's answer: these changes (tag, version), and — when `complete` —
  // every change up to `through` (the fleet's sequence then). `now_us` is
  // Redis's clock, for forgetting versions older than keep.
  // Implausible versions (over an hour past now_us) are skipped; since the
  // changes come in version order, the rest after one are too, so the sync
  // is then complete. Returns whether it is.
  bool learn_synced(std::span<const std::pair<std::string, std::uint64_t>> changes,
                    std::uint64_t through, bool complete, std::int64_t now_us);
  // Every change above this is what the next sync asks for.
  std::uint64_t synced_through() const noexcept { return synced_.load(std::memory_order_acquire); }
  // A version for an invalidation without an L2 (this process's sequence):
  // above every version known, and at least this host's clock in µs.
  std::uint64_t next_local_version();

  // Tags with a remembered version.
  std::size_t size() const;

 private:
  static std::int64_t to_us(Duration d) {
    return std::chrono::duration_cast<std::chrono::microseconds>(d).count();
  }
  // REQUIRES: mutex_ held exclusively. Returns whether `version` raised `tag`.
  bool raise_locked(std::string_view tag, std::uint64_t version);
  void forget_older_locked(std::int64_t now_us);

  const std::int64_t keep_us_;
  // The last version clear() got (0: none). Read without the lock.
  std::atomic<std::uint64_t> clear_version_{0};
  // The highest version known (stamp()); only grows.
  std::atomic<std::uint64_t> known_max_{0};
  // Every change at or below this is known (from syncs); only grows.
  std::atomic<std::uint64_t> synced_{0};
  mutable std::shared_mutex mutex_;
  // Guarded by mutex_: each tag's last invalidation version.
  boost::unordered_flat_map<std::string, std::uint64_t, StringHash, StringEqual> versions_;
  // Guarded by mutex_: versions_.size() at the last forget_older_locked, so
  // a process without syncs (no L2) forgets when the map doubled.
  std::size_t size_at_last_forget_ = 0;
};

}  // namespace herdguard::internal
