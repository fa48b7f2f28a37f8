// Internal: what one flight does to produce a key's value — the body of the
// single-flight loader. The read path flows one way through it:
//
//   Protector::get → (L1, L2 miss) → SingleFlight → LoadCoordinator::load
//        → TieredCache (re-checks, versioned writes, L1 fill)
//        → RepositoryLoader (breaker, repository)
//
// and nothing here calls back into the Protector.
//
// With the fleet lock (Redis), one process of the fleet loads; the others
// wait for its value:
//
//   loop until the load deadline:
//     watch(key)            interest first, so no wake-up is lost
//     L2 fresh?             another process finished: done
//     try_acquire(lock)     won: its version is our snapshot, and it brings
//                           what L2 held (the re-check) → load, then finish:
//                           versioned write, release and announce in one
//                           script (redis_lock.h)
//                           lost: the key is marked as waited for, and we
//                           learn its version
//     wait                  for the announcement (pub/sub), or a jittered
//                           poll interval when pub/sub is down; at most
//                           retry_interval, so that a dead holder's expired
//                           lease is noticed and taken over
//     announced value?      at or above the version we saw: done, no GET
//
// The holder announces as it releases the lock, also when its load failed,
// so a woken waiter without a value finds the lock free and tries at once.
// Round trips per load: the holder 2 (acquire, finish), each waiting
// process 1 (its failed acquire) plus its look when it had not just read L2.
//
// Deadlines: every wait ends by the load deadline; when it has passed the
// result is kTimeout — never a database call, never counted as a Redis error.
//
// Degrade, don't fail: when Redis errors (down, timing out), the load runs
// without the lock (the database then sees at most one load per process) and
// its value is not written to L2 — without a version snapshot taken before
// the database read, a write could resurrect an invalidated value.
//
// Thread safety: safe from any number of threads; at most one thread per
// process is here for a key (single-flight).
#pragma once

#include <memory>
#include <string>

#include "herdguard/redis_lock.h"
#include "herdguard/redis_notifier.h"
#include "protector/repository_loader.h"
#include "protector/tiered_cache.h"

namespace herdguard::internal {

struct FleetWaitOptions {
  // Longest wait between two lock attempts while another process holds it.
  Duration retry_interval = std::chrono::milliseconds(250);
  // Polling backoff when pub/sub is unavailable: starts at poll_min, doubles
  // up to poll_max, each interval jittered by ±50%.
  Duration poll_min = std::chrono::milliseconds(5);
  Duration poll_max = std::chrono::milliseconds(100);
};

// What a load is for.
struct LoadRequest {
  LoadPriority priority = LoadPriority::kForeground;
  // The caller found no fresh entry in L2 a moment ago, so the first round
  // skips its own L2 look (the lock holder's re-check under the lock still
  // reads it): one GET per process per load, not two.
  bool l2_just_read = false;
  // An entry found on the way (L1, L2, under the lock, announced) answers
  // the load only if it is fresh at this instant, when it is later than now.
  // An early refresh (early_refresh.h) passes the fresh_until of the entry
  // it replaces: only a newer entry (another process refreshed) saves the
  // database load.
  TimePoint fresh_at_least_until = TimePoint::min();
  // A get that skips L1 (GetOptions::skip_l1): the load does not answer
  // from L1 either (it still fills it).
  bool skip_l1 = false;
  // The stored entry's lifetime (and tags) when the repository gives none.
  EntryOptions entry{};
  // Set by load(): the tag stamp of what the repository returns, taken
  // before the load began (tag_versions.h).
  std::uint64_t tag_stamp = 0;
  // Set by load_once (L1's copy) and the lock holder (what L2 held): the entry the load would
  // replace (usable, maybe stale), for the repository's "not modified" (reload_entry).
  std::optional<CacheEntry> previous{};
};

// Where a loaded value's L3 record goes once its L2 write succeeded: the
// epoch read before the load (0: write none) and the deadline of the write.
struct L3Write {
  std::uint64_t epoch = 0;
  Deadline deadline = Deadline::after(Duration::zero());
};

class LoadCoordinator {
 public:
  // REQUIRES: locks only with cache.has_l2(); notifier only with locks.
  LoadCoordinator(TieredCache& cache, RepositoryLoader& loader,
                  std::shared_ptr<RedisLockManager> locks, std::shared_ptr<RedisNotifier> notifier,
                  std::shared_ptr<Clock> clock, FleetWaitOptions options,
                  ProtectorCounters& counters);

  // The entry for `key` (negative entries included), filled into L1 unless
  // a set/invalidate came in since the load began. When one came in (the L2
  // write was superseded), loads once more within the deadline, so that the
  // flight's callers get the value as of after the change. Errors: the
  // repository loader's; kTimeout when `load_deadline` passed first.
  Result<CacheEntry> load(const std::string& key, Deadline load_deadline,
                          const LoadRequest& request = {});

 private:
  // One round of load(); `*superseded` tells whether its value lost to a
  // set/invalidate (or a later holder) that came in while it ran.
  Result<CacheEntry> load_once(const std::string& key, Deadline load_deadline, LoadRequest& request,
                               bool* superseded);
  Result<CacheEntry> load_with_fleet_lock(const std::string& key, Deadline load_deadline,
                                          const LoadRequest& request, bool* superseded);
  // `ticket` was taken before the acquire (guards the value it brought).
  Result<CacheEntry> load_as_holder(const std::string& key, LockHold& hold,
                                    MemoryCache::Ticket ticket, Deadline load_deadline,
                                    const LoadRequest& request, bool* superseded);
  // Finishes a hold (write, release, announce) and fills L1 when that is
  // safe; `entry` null for a failed load. Returns why the write was refused.
  std::optional<WriteOutcome> finish(const std::string& key, LockHold& hold,
                                     const CacheEntry* entry, MemoryCache::Ticket ticket,
                                     const L3Write& l3 = {});
  // The value a holder announced to `waiter`, filled into L1, when it may
  // be answered: announced at or above `seen_version` (so published after
  // our failed acquire) and fresh at `fresh_at_least_until` (or now). Else
  // nullopt: read L2.
  std::optional<CacheEntry> from_announcement(const std::string& key, const Waiter& waiter,
                                              std::uint64_t seen_version,
                                              MemoryCache::Ticket ticket,
                                              TimePoint fresh_at_least_until);
  // L2 without the fleet lock: snapshot, load, versioned write.
  Result<CacheEntry> load_with_snapshot(const std::string& key, Deadline load_deadline,
                                        const LoadRequest& request, bool* superseded);
  // Redis failed: load, fill L1 only.
  Result<CacheEntry> load_degraded(const std::string& key, Deadline load_deadline,
                                   const LoadRequest& request);
  // L2's entry when it is fresh at `fresh_at_least_until` (or now) (filled
  // into L1), or nullopt; Redis errors read as nullopt.
  std::optional<CacheEntry> fresh_in_l2(const std::string& key, Deadline deadline,
                                        TimePoint fresh_at_least_until);
  // Writes a loaded entry under `snapshot` and fills L1 when that is safe.
  // Returns why the write was refused, or nullopt (stored, or Redis failed).
  std::optional<WriteOutcome> store(const std::string& key, const CacheEntry& entry,
                                    const VersionSnapshot& snapshot, Deadline deadline,
                                    MemoryCache::Ticket ticket, const L3Write& l3 = {});
  // What a write of a loaded entry (null: none) under `version` means for
  // L1: filled unless the write was refused; returns the refusal. A Redis
  // error (nothing known) is counted and fills L1. Only a write known to
  // have landed makes an L3 record (`l3`).
  std::optional<WriteOutcome> settle(const std::string& key, const CacheEntry* entry,
                                     const Result<WriteOutcome>& written, std::uint64_t version,
                                     MemoryCache::Ticket ticket, const L3Write& l3 = {});
  // Under a version snapshot (ours, or the fleet lock's), before the
  // database: the key's L3 record when Redis confirms it (tiered_cache.h),
  // else the repository's value; `*l3` is where a loaded value's record goes.
  Result<CacheEntry> load_behind_l3(const std::string& key, Deadline load_deadline,
                                    const LoadRequest& request, L3Write* l3);
  // The load's result after store(): a timeout when it was too late, and
  // `*superseded` set when the version moved.
  Result<CacheEntry> after_store(const std::string& key, Result<CacheEntry> entry,
                                 std::optional<WriteOutcome> refused, bool* superseded);
  static Result<CacheEntry> timed_out(const std::string& key);
  // The repository's entry for `key`, stamped with the request's tag stamp.
  Result<CacheEntry> from_repository(const std::string& key, Deadline load_deadline,
                                     const LoadRequest& request);
  // Whether `entry` answers a load: fresh at the later of `now` and the
  // request's bar.
  static bool answers(const CacheEntry& entry, TimePoint now, TimePoint fresh_at_least_until) {
    return entry.is_fresh(std::max(now, fresh_at_least_until));
  }

  TieredCache& cache_;
  RepositoryLoader& loader_;
  const std::shared_ptr<RedisLockManager> locks_;
  const std::shared_ptr<RedisNotifier> notifier_;
  const std::shared_ptr<Clock> clock_;
  const FleetWaitOptions options_;
  ProtectorCounters& counters_;
};

}  // namespace herdguard::internal
