#include "protector/fleet_coordinator.h"

#include <fmt/format.h>

#include <algorithm>
#include <thread>

#include "core/random.h"
#include "herdguard/envelope.h"

namespace herdguard::internal {
namespace {

constexpr auto kRelaxed = std::memory_order_relaxed;

Duration jittered(Duration d) {
  return std::chrono::duration_cast<Duration>(d * uniform_real(0.5, 1.5));
}

}  // namespace

FleetCoordinator::FleetCoordinator(std::shared_ptr<RedisCache> l2,
                                   std::shared_ptr<RedisLockManager> locks,
                                   std::shared_ptr<RedisNotifier> notifier,
                                   std::shared_ptr<Clock> clock, FleetWaitOptions options)
    : l2_(std::move(l2)),
      locks_(std::move(locks)),
      notifier_(std::move(notifier)),
      clock_(std::move(clock)),
      options_(options) {}

std::optional<CacheEntry> FleetCoordinator::fresh_in_l2(const std::string& key) {
  auto got = l2_->get(key);
  if (!got) {
    redis_errors_.fetch_add(1, kRelaxed);
    return std::nullopt;
  }
  if (*got && (*got)->is_fresh(clock_->now())) return std::move(**got);
  return std::nullopt;
}

Result<CacheEntry> FleetCoordinator::load(const std::string& key, Deadline load_deadline,
                                          const DatabaseLoad& database_load) {
  Duration poll = options_.poll_min;
  bool waited = false;
  for (;;) {
    // Interest first, then the check: a publish after this point wakes us.
    std::unique_ptr<Waiter> waiter = notifier_ ? notifier_->watch(key) : nullptr;
    if (auto fresh = fresh_in_l2(key)) {
      if (waited) waited_loads_.fetch_add(1, kRelaxed);
      return std::move(*fresh);
    }
    auto hold = locks_->try_acquire(key, load_deadline);
    if (hold) {
      lock_acquisitions_.fetch_add(1, kRelaxed);
      return load_as_holder(key, **hold, load_deadline, database_load);
    }
    if (hold.error().kind != ErrorKind::kLockNotAcquired) {
      redis_errors_.fetch_add(1, kRelaxed);
      return load_degraded(key, load_deadline, database_load);
    }
    lock_contentions_.fetch_add(1, kRelaxed);
    waited = true;
    if (load_deadline.expired()) {
      return make_error(ErrorKind::kTimeout,
                        fmt::format("key '{}': another process held the fleet lock until the "
                                    "load deadline",
                                    key));
    }
    // Woken by the holder's publish; otherwise come back after retry_interval
    // to take over the lock of a holder that died (its lease has run out).
    if (waiter && notifier_->subscribed()) {
      const Deadline until =
          Deadline::earliest(load_deadline, Deadline::after(options_.retry_interval));
      if (waiter->wait(until)) notified_wakeups_.fetch_add(1, kRelaxed);
      continue;
    }
    // Pub/sub is down: poll, with jittered backoff so a fleet of waiters
    // does not hit Redis in lockstep.
    const Deadline until = Deadline::earliest(load_deadline, Deadline::after(jittered(poll)));
    poll = std::min(poll * 2, options_.poll_max);
    polls_.fetch_add(1, kRelaxed);
    if (waiter) {
      (void)waiter->wait(until);  // a notification may still arrive: wake early then
    } else {
      std::this_thread::sleep_until(until.when());
    }
  }
}

Result<CacheEntry> FleetCoordinator::load_as_holder(const std::string& key, LockHold& hold,
                                                    Deadline load_deadline,
                                                    const DatabaseLoad& database_load) {
  // Re-check under the lock: the previous holder may have written just before
  // releasing, after our last look.
  if (auto fresh = fresh_in_l2(key)) {
    (void)hold.release();
    return std::move(*fresh);
  }
  Result<CacheEntry> entry = database_load(load_deadline);
  if (entry) {
    const std::string bytes = encode_envelope({.entry = *entry, .fence = hold.fence()});
    auto written = hold.fenced_write(l2_->redis_key(key), bytes, entry->stale_until);
    if (!written) {
      redis_errors_.fetch_add(1, kRelaxed);
    } else if (!*written) {
      fenced_off_writes_.fetch_add(1, kRelaxed);
    }
    // Announce even when fenced off: waiters re-check L2 and find the later
    // holder's value (or keep waiting for it).
    if (notifier_) {
      if (auto published = notifier_->publish(key); !published)
        redis_errors_.fetch_add(1, kRelaxed);
    }
  }
  // Released at once (also on failure) so that a waiter can take over.
  if (auto released = hold.release(); !released) redis_errors_.fetch_add(1, kRelaxed);
  return entry;
}

Result<CacheEntry> FleetCoordinator::load_degraded(const std::string& key, Deadline load_deadline,
                                                   const DatabaseLoad& database_load) {
  degraded_loads_.fetch_add(1, kRelaxed);
  Result<CacheEntry> entry = database_load(load_deadline);
  if (entry) {
    if (auto put = l2_->put(key, *entry); !put) redis_errors_.fetch_add(1, kRelaxed);
  }
  return entry;
}

FleetStats FleetCoordinator::stats() const {
  return FleetStats{
      .lock_acquisitions = lock_acquisitions_.load(kRelaxed),
      .lock_contentions = lock_contentions_.load(kRelaxed),
      .waited_loads = waited_loads_.load(kRelaxed),
      .notified_wakeups = notified_wakeups_.load(kRelaxed),
      .polls = polls_.load(kRelaxed),
      .degraded_loads = degraded_loads_.load(kRelaxed),
      .redis_errors = redis_errors_.load(kRelaxed),
      .fenced_off_writes = fenced_off_writes_.load(kRelaxed),
  };
}

}  // namespace herdguard::internal
