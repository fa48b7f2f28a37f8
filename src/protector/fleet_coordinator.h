// Internal: one database load per key across a fleet of processes.
//
// Runs inside a single-flight loader, so at most one thread per process is
// here for a key. It takes the fleet lock (Redis) and loads, or, when another
// process holds the lock, waits for that process's value to appear in L2:
//
//   loop until the load deadline:
//     watch(key)            subscribe interest first, so no wake-up is lost
//     L2 fresh?             another process finished: done
//     try_acquire(lock)     won: re-check L2, load, fenced write, publish
//     wait                  for the ready notification (pub/sub), or a
//                           jittered poll interval when pub/sub is down;
//                           at most retry_interval, so that a dead holder's
//                           expired lease is noticed and taken over
//
// Degrade, don't fail: when Redis errors (down, timing out), the load runs
// without the fleet lock, so the database sees at most one load per process,
// and the value is still offered to L2 (errors ignored, counted).
//
// Thread safety: safe from any number of threads (each call is independent;
// counters are atomics).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "herdguard/cache.h"
#include "herdguard/redis_cache.h"
#include "herdguard/redis_lock.h"
#include "herdguard/redis_notifier.h"
#include "herdguard/result.h"

namespace herdguard::internal {

struct FleetWaitOptions {
  // Longest wait between two lock attempts while another process holds it.
  Duration retry_interval = std::chrono::milliseconds(250);
  // Polling backoff when pub/sub is unavailable: starts at poll_min, doubles
  // up to poll_max, each interval jittered by ±50%.
  Duration poll_min = std::chrono::milliseconds(5);
  Duration poll_max = std::chrono::milliseconds(100);
};

struct FleetStats {
  std::uint64_t lock_acquisitions = 0;  // loads this process ran under the fleet lock
  std::uint64_t lock_contentions = 0;   // lock attempts that found another holder
  std::uint64_t waited_loads = 0;       // loads answered by another process's value
  std::uint64_t notified_wakeups = 0;   // waits ended by a ready notification
  std::uint64_t polls = 0;              // waits ended by a poll interval (pub/sub down)
  std::uint64_t degraded_loads = 0;     // loads run without the lock because Redis failed
  std::uint64_t redis_errors = 0;       // Redis errors seen on this path
  std::uint64_t fenced_off_writes = 0;  // our write refused: a later holder exists
};

class FleetCoordinator {
 public:
  // Loads from the database; returns the entry to cache (negative entries
  // included) or an error. Called at most once per load().
  using DatabaseLoad = std::function<Result<CacheEntry>(Deadline load_deadline)>;

  // REQUIRES: l2 and locks non-null; notifier may be null (then: polling).
  FleetCoordinator(std::shared_ptr<RedisCache> l2, std::shared_ptr<RedisLockManager> locks,
                   std::shared_ptr<RedisNotifier> notifier, std::shared_ptr<Clock> clock,
                   FleetWaitOptions options);

  // The entry for `key`: another process's fresh value from L2, or the result
  // of `database_load` run by this process under the fleet lock (written to L2
  // with its fence, then announced). Errors: those of `database_load`, or
  // kTimeout when `load_deadline` passed while another process held the lock.
  Result<CacheEntry> load(const std::string& key, Deadline load_deadline,
                          const DatabaseLoad& database_load);

  FleetStats stats() const;

 private:
  // L2's fresh entry for key, nullopt when none; Redis errors count and read as none.
  std::optional<CacheEntry> fresh_in_l2(const std::string& key);
  Result<CacheEntry> load_as_holder(const std::string& key, LockHold& hold, Deadline load_deadline,
                                    const DatabaseLoad& database_load);
  Result<CacheEntry> load_degraded(const std::string& key, Deadline load_deadline,
                                   const DatabaseLoad& database_load);

  const std::shared_ptr<RedisCache> l2_;
  const std::shared_ptr<RedisLockManager> locks_;
  const std::shared_ptr<RedisNotifier> notifier_;
  const std::shared_ptr<Clock> clock_;
  const FleetWaitOptions options_;

  std::atomic<std::uint64_t> lock_acquisitions_{0}, lock_contentions_{0}, waited_loads_{0},
      notified_wakeups_{0}, polls_{0}, degraded_loads_{0}, redis_errors_{0}, fenced_off_writes_{0};
};

}  // namespace herdguard::internal
