// herdguard/memory_cache.h — the bounded in-process L1 cache.
//
// Holds up to `max_entries` entries and `max_bytes` bytes (keys + values +
// a fixed per-entry overhead). When a put would exceed either bound, entries
// are evicted by the CLOCK algorithm (second chance), an approximation of LRU
// that lets reads run under a shared lock: a read only sets an "accessed" bit.
// Entries past their stale_until are dropped lazily.
//
// Generations (the L1 half of the consistency contract, docs/consistency.md):
// put() and erase() bump a per-key generation (striped: 64 counters per
// shard, so a few unrelated keys share one). A filler that read its value
// elsewhere takes a ticket() *before* reading, and stores with
// put_if_unchanged(), which refuses when a put or erase of the key came in
// between — so a slow fill can never overwrite a newer set or invalidate.
// A key sharing the stripe can cause a spurious refusal: the fill is then
// skipped, which costs a later read, never a wrong value.
//
// Thread safety: all methods are safe from any number of threads. The key
// space is split into `shards`, each behind its own reader/writer lock, so
// reads of different keys never contend and reads of one key share the lock;
// the lock's reader side is striped by thread (8 stripes, 512 bytes per
// shard), so reads of one hot key on several cores write no common cache
// line, and a write (a fill, an erase) takes all 8 stripes.
//
// Example:
//   auto l1 = herdguard::MemoryCache::create({.max_entries = 10'000}, herdguard::system_clock());
//   if (!l1) die(l1.error().to_string());
//   (*l1)->put("user:1", entry);
//   auto hit = (*l1)->get("user:1");
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>

#include "herdguard/cache.h"

namespace herdguard {

struct MemoryCacheOptions {
  // Upper bound on the number of entries. REQUIRES: >= shards.
  std::size_t max_entries = 100'000;
  // Upper bound on key bytes + value bytes + kEntryOverheadBytes per entry.
  // REQUIRES: > 0.
  std::size_t max_bytes = 256u << 20;
  // Number of independently locked shards; rounded up to a power of two.
  // REQUIRES: 1..1024.
  std::size_t shards = 16;
  // Returns kInvalidArgument naming the first bad field.
  Result<void> validate() const;
};

struct MemoryCacheStats {
  std::size_t entries = 0;
  std::size_t bytes = 0;
  std::uint64_t evictions = 0;    // entries removed to make room (not expiries)
  std::uint64_t expirations = 0;  // entries dropped because they were past stale_until
  std::uint64_t refused = 0;      // entries dropped because the validity refused them
};

class MemoryCache final : public Cache {
 public:
  // Bookkeeping bytes charged per entry on top of its key and value.
  static constexpr std::size_t kEntryOverheadBytes = 64;

  // Errors: kInvalidArgument from options.validate(). Entries `validity`
  // refuses are never returned (as if absent) and never keep a fill out
  // (the Protector's tags and clear(): cache.h); null: none.
  static Result<std::unique_ptr<MemoryCache>> create(
      MemoryCacheOptions options, std::shared_ptr<Clock> clock,
      std::shared_ptr<const EntryValidity> validity = nullptr);
  ~MemoryCache() override;

  // Never fails; nullopt on a miss or an entry past stale_until.
  Result<std::optional<CacheEntry>> get(std::string_view key) override;
  // get() as of `now`, for callers that already read the clock (saves a
  // second clock read on the hot path).
  Result<std::optional<CacheEntry>> get(std::string_view key, TimePoint now);
  // The hot path's read, copying only the value. kFresh when `key`'s entry
  // is fresh at `fresh_at` (before both fresh_until and recheck_at): its
  // value is copied into `value` and `negative` set from it. kAbsent when
  // there is no entry; kNotFresh when there is one that is not fresh at
  // `fresh_at` (get() gives it whole, and drops it if expired). kRefreshDue:
  // fresh, but `fresh_at` is at or past the entry's refresh_from (an early
  // refresh may be due, early_refresh.h); like kNotFresh, nothing is copied
  // (the caller reads the entry whole to decide).
  enum class Freshness { kAbsent, kFresh, kNotFresh, kRefreshDue };
  Freshness get_fresh_value(std::string_view key, TimePoint fresh_at, std::string& value,
                            bool& negative) const;
  // What deciding about an early refresh takes of an entry.
  struct RefreshTiming {
    TimePoint fresh_until{};
    Duration load_duration{};
  };
  // Stores `entry`, replacing any previous one, and bumps the key's
  // generation. Errors: kInvalidArgument when one entry is larger than a
  // shard's byte budget (max_bytes / shards); the cache is left unchanged
  // (the generation is still bumped: a fill in progress is outdated anyway).
  Result<void> put(std::string_view key, CacheEntry entry) override;
  // Removes `key` and bumps its generation.
  Result<void> erase(std::string_view key) override;

  // A snapshot of `key`'s generation. Lock-free.
  struct Ticket {
    std::uint64_t generation = 0;
    std::uint64_t sequence = 0;  // orders tickets of this cache: later is larger
  };
  Ticket ticket(std::string_view key) const noexcept;
  // Stores `entry` only if the key's generation is still `ticket`'s (no put
  // or erase since) and the usable entry present, if any, has no higher
  // version (CacheEntry::version), without bumping the generation. So of two
  // fills racing, the one read from the later state of L2 stays. An entry of
  // unknown version (0) replaces one of known version only once that one is
  // no longer fresh (fresh_until, recheck_at). Two entries of unknown
  // version are ordered by their tickets: a fill whose ticket is older than
  // the present entry's loses (it read its source earlier). Returns whether
  // it was stored.
  // Errors: as put().
  Result<bool> put_if_unchanged(std::string_view key, CacheEntry entry, Ticket ticket);

  // Pins `key` (HotKeyDetector's hot keys): while pinned, its entry —
  // present now or stored later — is evicted only when nothing unpinned is
  // left to evict in its shard (or once past stale_until), and its
  // refresh_from is at most fresh_until − pinned_lead(refresh_lead, its
  // load_duration), so reads near its end report kRefreshDue. Pinning is remembered per key, entry
  // or not: pin a bounded set (the Protector pins at most HotKeyOptions::top_k). REQUIRES:
  // refresh_lead >= 0.
  void pin(std::string_view key, Duration refresh_lead);
  // How long before its expiry a pinned entry's refresh window opens:
  // `refresh_lead`, or two of its loads' durations when that is longer (a
  // refresh must land before the entry expires, and a slow or queueing
  // database makes loads long), at most 2 × refresh_lead. Pure.
  static Duration pinned_lead(Duration refresh_lead, Duration load_duration) noexcept;
  // Unpins `key`; its entry keeps its refresh_from until replaced.
  void unpin(std::string_view key);
  bool is_pinned(std::string_view key) const;

  // Removes everything (and bumps every generation). Pins stay.
  void clear();
  // Makes every entry due for its recheck at `now` (recheck_at = min(its
  // recheck_at, now)), so it is no longer answered as fresh without asking
  // L2 again, and bumps every generation, so no fill that began before this
  // call lands. For when invalidations may have been missed (the backplane's
  // subscription was down). O(entries).
  void recheck_all(TimePoint now);
  // A consistent-per-shard (not global) snapshot of sizes and counters.
  MemoryCacheStats stats() const;

 private:
  // One reader/writer lock, one map and one CLOCK ring (memory_cache.cc).
  struct Shard;
  MemoryCache(MemoryCacheOptions options, std::shared_ptr<Clock> clock,
              std::shared_ptr<const EntryValidity> validity);
  // The shard owning keys with this hash.
  Shard& shard_for(std::size_t key_hash) const;
  // put() (no ticket: bumps) and put_if_unchanged() (ticket: compares).
  Result<bool> store(std::string_view key, CacheEntry entry, std::optional<Ticket> ticket);

  // Immutable after construction, so read without a lock.
  const MemoryCacheOptions options_;  // shards already rounded up to a power of two
  const std::shared_ptr<Clock> clock_;
  const std::shared_ptr<const EntryValidity> validity_owner_;
  const EntryValidity* const validity_;  // validity_owner_.get(): read on the hit path
  // Each shard's share of the bounds, rounded down (max_entries / shards and
  // max_bytes / shards), so the shards together never exceed the cache's bounds.
  const std::size_t shard_max_entries_;
  const std::size_t shard_max_bytes_;
  const std::size_t shard_mask_;  // shards - 1
  // Hands out Ticket::sequence; only misses and writes take one.
  mutable std::atomic<std::uint64_t> ticket_sequence_{1};
  const std::unique_ptr<Shard[]> shards_;
};

}  // namespace herdguard
