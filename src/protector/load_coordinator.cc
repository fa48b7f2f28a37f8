#include "protector/load_coordinator.h"

#include <fmt/format.h>

#include <algorithm>
#include <thread>

#include "core/random.h"
#include "protector/load_batch.h"

namespace herdguard::internal {
namespace {

Duration jittered(Duration d) { return scale_saturating(d, uniform_real(0.5, 1.5)); }

}  // namespace

LoadCoordinator::LoadCoordinator(TieredCache& cache, RepositoryLoader& loader,
                                 std::shared_ptr<RedisLockManager> locks,
                                 std::shared_ptr<RedisNotifier> notifier,
                                 std::shared_ptr<Clock> clock, FleetWaitOptions options,
                                 ProtectorCounters& counters)
    : cache_(cache),
      loader_(loader),
      locks_(std::move(locks)),
      notifier_(std::move(notifier)),
      clock_(std::move(clock)),
      options_(options),
      counters_(counters) {}

Result<CacheEntry> LoadCoordinator::timed_out(const std::string& key) {
  return make_error(ErrorKind::kTimeout,
                    fmt::format("load of key '{}': the load deadline passed", key));
}

Result<CacheEntry> LoadCoordinator::load(const std::string& key, Deadline load_deadline,
                                         const LoadRequest& request) {
  // A load whose value was superseded while it ran (a set or invalidate
  // came in) goes round once more, so that callers who joined this flight
  // after the change — and may already have seen a newer value — do not get
  // the outdated one. Once: two changes during two loads is a hot-written
  // key, whose callers get the second load's value (docs/consistency.md).
  bool superseded = false;
  // The tag stamp before anything is read: no tag invalidation that
  // returns after this instant is at or below it (tag_versions.h).
  LoadRequest stamped = request;
  stamped.tag_stamp = cache_.tag_stamp(load_deadline);
  Result<CacheEntry> entry = load_once(key, load_deadline, stamped, &superseded);
  if (!superseded) return entry;
  // The first value is outdated: never hand it out, even when no time is left.
  if (load_deadline.expired()) return timed_out(key);
  bool again = false;
  stamped.l2_just_read = false;
  stamped.tag_stamp = cache_.tag_stamp(load_deadline);
  return load_once(key, load_deadline, stamped, &again);
}

Result<CacheEntry> LoadCoordinator::from_repository(const std::string& key, Deadline load_deadline,
                                                    const LoadRequest& request) {
  Result<CacheEntry> entry = loader_.load(key, load_deadline, request.priority, request.entry,
                                          request.previous ? &*request.previous : nullptr);
  if (entry) entry->tag_stamp = request.tag_stamp;
  return entry;
}

Result<CacheEntry> LoadCoordinator::load_once(const std::string& key, Deadline load_deadline,
                                              LoadRequest& request, bool* superseded) {
  const TimePoint bar = request.fresh_at_least_until;
  // Each read below takes its L1 ticket just before it reads (L2 or the
  // database), so an invalidate of this process that lands during the read
  // keeps its result out of L1.
  // A flight that finished just before this one started may have filled L1
  // after our caller looked.
  const TimePoint now = clock_->now();
  if (!request.skip_l1) {
    auto got = cache_.l1_get(key, now);
    if (got && TieredCache::fresh_in_l1(*got, std::max(now, bar))) return *got;
    // Not fresh: what a "not modified" reload would keep (reload_entry).
    request.previous = std::move(got);
  }
  if (!cache_.has_l2()) {
    const MemoryCache::Ticket ticket = cache_.ticket(key);
    Result<CacheEntry> entry = from_repository(key, load_deadline, request);
    if (entry) cache_.fill_l1(key, *entry, ticket, clock_->now());
    return entry;
  }
  if (locks_) return load_with_fleet_lock(key, load_deadline, request, superseded);
  // Async callers and refreshes skip L2 on their own thread: look here.
  if (!request.l2_just_read) {
    if (auto fresh = fresh_in_l2(key, load_deadline, bar)) return std::move(*fresh);
  }
  return load_with_snapshot(key, load_deadline, request, superseded);
}

std::optional<CacheEntry> LoadCoordinator::fresh_in_l2(const std::string& key, Deadline deadline,
                                                       TimePoint fresh_at_least_until) {
  // The ticket right before the read it guards: a set/invalidate of this
  // process after it keeps this (possibly older) value out of L1, and one
  // before it is already reflected in what L2 returns.
  const MemoryCache::Ticket ticket = cache_.ticket(key);
  const TimePoint now = clock_->now();
  auto got = cache_.l2_get(key, now, deadline);
  if (!got || !*got || !answers((*got)->entry, now, fresh_at_least_until)) return std::nullopt;
  cache_.fill_l1(key, (*got)->entry, ticket, now);
  return std::move((*got)->entry);
}

std::optional<WriteOutcome> LoadCoordinator::store(const std::string& key, const CacheEntry& entry,
                                                   const VersionSnapshot& snapshot,
                                                   Deadline deadline, MemoryCache::Ticket ticket,
                                                   const L3Write& l3) {
  return settle(key, &entry, cache_.l2()->write_loaded(key, entry, snapshot, deadline),
                snapshot.version, ticket, l3);
}

Result<CacheEntry> LoadCoordinator::load_behind_l3(const std::string& key, Deadline load_deadline,
                                                   const LoadRequest& request, L3Write* l3) {
  if (cache_.has_l3()) {
    // The epoch before the database is read, so a record never claims a
    // Redis era later than its value's (tiered_cache.h). After the version
    // snapshot is fine too: a Redis that lost its data after the snapshot
    // lost the snapshot's version key, and the L2 write (which must succeed
    // before any record is written) is refused.
    const std::uint64_t epoch = cache_.l3_epoch(key, load_deadline);
    if (auto promoted = cache_.l3_promotable(key, load_deadline, request.fresh_at_least_until))
      return std::move(*promoted);  // its record is in L3 already
    *l3 = {.epoch = epoch, .deadline = load_deadline};
  }
  return from_repository(key, load_deadline, request);
}

std::optional<WriteOutcome> LoadCoordinator::settle(const std::string& key, const CacheEntry* entry,
                                                    const Result<WriteOutcome>& written,
                                                    std::uint64_t version,
                                                    MemoryCache::Ticket ticket, const L3Write& l3) {
  const bool stored =
      written && (*written == WriteOutcome::kWritten || *written == WriteOutcome::kExtended);
  if (stored && entry && entry->is_usable(clock_->now()))
    cache_.l3_store(key, *entry, version, l3.epoch, l3.deadline);
  if (written && *written == WriteOutcome::kExtended) counters_.l2_extended.add();
  if (!written) {
    // Unknown whether it landed; the value itself was read under a snapshot,
    // and this process's own invalidations are guarded by the ticket.
    counters_.redis_errors.add();
  } else if (!stored) {
    // Superseded (a set/invalidate or a later holder came in) or too late:
    // the value may be outdated, so it is kept out of L1 as well.
    counters_.refused_writes.add();
    return *written;
  }
  if (entry) {
    CacheEntry filled = *entry;
    filled.version = version;
    filled.extends_version = 0;
    cache_.fill_l1(key, std::move(filled), ticket, clock_->now());
  }
  return std::nullopt;
}

Result<CacheEntry> LoadCoordinator::after_store(const std::string& key, Result<CacheEntry> entry,
                                                std::optional<WriteOutcome> refused,
                                                bool* superseded) {
  if (refused == WriteOutcome::kSuperseded) *superseded = true;
  // Past its hard deadline the load is over, as if the watchdog had ended
  // it first: its value may be outdated and nobody can tell, so its callers
  // get a timeout (and the fallback chain) rather than the value.
  if (refused == WriteOutcome::kTooLate) return timed_out(key);
  return entry;
}

Result<CacheEntry> LoadCoordinator::load_with_snapshot(const std::string& key,
                                                       Deadline load_deadline,
                                                       const LoadRequest& request,
                                                       bool* superseded) {
  const MemoryCache::Ticket ticket = cache_.ticket(key);
  auto snapshot = cache_.l2()->snapshot(key, load_deadline);
  if (!snapshot) {
    if (load_deadline.expired()) return timed_out(key);
    counters_.redis_errors.add();
    return load_degraded(key, load_deadline, request);
  }
  L3Write l3;
  Result<CacheEntry> entry = load_behind_l3(key, load_deadline, request, &l3);
  if (!entry) return entry;
  auto refused = store(key, *entry, *snapshot, load_deadline, ticket, l3);
  return after_store(key, std::move(entry), refused, superseded);
}

Result<CacheEntry> LoadCoordinator::load_degraded(const std::string& key, Deadline load_deadline,
                                                  const LoadRequest& request) {
  counters_.fleet_degraded_loads.add();
  const MemoryCache::Ticket ticket = cache_.ticket(key);
  Result<CacheEntry> entry = from_repository(key, load_deadline, request);
  if (entry) cache_.fill_l1(key, *entry, ticket, clock_->now());
  return entry;
}

Result<CacheEntry> LoadCoordinator::load_with_fleet_lock(const std::string& key,
                                                         Deadline load_deadline,
                                                         const LoadRequest& request,
                                                         bool* superseded) {
  const TimePoint bar = request.fresh_at_least_until;
  Duration poll = options_.poll_min;
  bool waited = false;
  // The first look is skipped when the caller has just read L2: a value
  // announced since is found by the holder's re-check under the lock (if
  // the lock is free) or wakes the waiter registered below (if it is not).
  bool look = !request.l2_just_read;
  // Interest first, then the checks: an announcement after this point wakes
  // us. One waiter for the whole wait: a key's own channel (per_key) stays
  // subscribed while we loop, whatever its linger.
  const std::unique_ptr<Waiter> waiter = notifier_ ? notifier_->watch(key) : nullptr;
  for (;;) {
    // Before the acquire, which reads L2 for a holder, and before the wait,
    // whose announcement may bring the value: an in-process set/invalidate
    // after this point keeps either out of L1.
    const MemoryCache::Ticket ticket = cache_.ticket(key);
    if (look) {
      if (auto fresh = fresh_in_l2(key, load_deadline, bar)) {
        if (waited) counters_.fleet_waited_loads.add();
        return std::move(*fresh);
      }
    }
    look = true;
    if (load_deadline.expired()) return timed_out(key);
    // Armed before the acquire is sent: the holder's announcement, which
    // follows the mark our acquire leaves, cannot go unheard.
    const bool armed_before = waiter && waiter->armed();
    std::uint64_t seen_version = 0;
    auto hold = locks_->try_acquire(key, load_deadline, &seen_version);
    if (hold) {
      counters_.fleet_lock_acquisitions.add();
      return load_as_holder(key, **hold, ticket, load_deadline, request, superseded);
    }
    if (hold.error().kind != ErrorKind::kLockNotAcquired) {
      // Our own deadline running out is not a Redis failure, and the
      // database is not called for a load nobody can wait for any more.
      if (load_deadline.expired()) return timed_out(key);
      counters_.redis_errors.add();
      return load_degraded(key, load_deadline, request);
    }
    counters_.fleet_lock_contentions.add();
    waited = true;
    // Another process loads the key: a get_many batch does not wait for
    // this flight (load_batch.h).
    if (BatchMember* member = current_batch_member()) member->step_aside();
    // A key's own channel (per_key) is subscribed by watch(), alongside the
    // look and the acquire. Armed only after the acquire was sent: the
    // holder may have finished in between, its announcement unheard (and
    // our mark taken with it), so look once more (one GET, for the first
    // wait of a key within the channel's linger); nothing there (the load
    // failed, or its value does not answer us): try the lock again, now
    // armed, rather than sleep until retry_interval.
    bool armed = armed_before;
    if (waiter && !armed_before) {
      armed = waiter->wait_armed(
          Deadline::earliest(load_deadline, Deadline::after(options_.retry_interval)));
      if (armed) {
        if (auto fresh = fresh_in_l2(key, load_deadline, bar)) {
          counters_.fleet_waited_loads.add();
          return std::move(*fresh);
        }
        look = false;  // just looked
        continue;
      }
    }
    // Woken by the holder's announcement; otherwise come back after
    // retry_interval to take over the lock of a holder that died.
    if (armed) {
      const bool woken =
          waiter->wait(Deadline::earliest(load_deadline, Deadline::after(options_.retry_interval)));
      if (woken) {
        if (auto announced = from_announcement(key, *waiter, seen_version, ticket, bar)) {
          counters_.fleet_waited_loads.add();
          return std::move(*announced);
        }
      }
      continue;
    }
    // Pub/sub is down: poll, with jittered backoff so a fleet of waiters
    // does not hit Redis in lockstep.
    const Deadline until = Deadline::earliest(load_deadline, Deadline::after(jittered(poll)));
    poll = std::min(add_saturating(poll, poll), options_.poll_max);
    counters_.fleet_polls.add();
    if (waiter) {
      (void)waiter->wait(until);  // an announcement may still arrive: wake early then
    } else {
      std::this_thread::sleep_until(until.when());
    }
  }
}

std::optional<CacheEntry> LoadCoordinator::from_announcement(const std::string& key,
                                                             const Waiter& waiter,
                                                             std::uint64_t seen_version,
                                                             MemoryCache::Ticket ticket,
                                                             TimePoint fresh_at_least_until) {
  const std::shared_ptr<const Announcement> announced = waiter.announcement();
  // Below the version our failed acquire saw, it was published before that
  // acquire — before a set/invalidate our caller may already know of. An
  // unknown version (0) proves nothing either.
  if (!announced || !announced->envelope || seen_version == 0 ||
      announced->version < seen_version) {
    return std::nullopt;
  }
  std::optional<Envelope> decoded = cache_.l2_decode(*announced->envelope);
  const TimePoint now = clock_->now();
  if (!decoded || !answers(decoded->entry, now, fresh_at_least_until)) return std::nullopt;
  cache_.fill_l1(key, decoded->entry, ticket, now);
  return std::move(decoded->entry);
}

std::optional<WriteOutcome> LoadCoordinator::finish(const std::string& key, LockHold& hold,
                                                    const CacheEntry* entry,
                                                    MemoryCache::Ticket ticket, const L3Write& l3) {
  // An entry already past stale_until has nothing to keep in L2.
  const bool keep = entry && entry->is_usable(clock_->now());
  auto done = hold.finish(keep ? entry : nullptr);
  // A notifier that is not the lock's announce channel (wired by hand) is
  // told the old way, after the release.
  if (notifier_ && !locks_->options().announces()) {
    if (auto published = notifier_->publish(key); !published) counters_.redis_errors.add();
  }
  // Nothing to write (a failed load, an entry past stale_until) counts as
  // written, as RedisCache::write_loaded reports it.
  const Result<WriteOutcome> written =
      done ? Result<WriteOutcome>(done->write.value_or(WriteOutcome::kWritten))
           : Result<WriteOutcome>(std::unexpected(done.error()));
  return settle(key, entry, written, hold.snapshot().version, ticket, l3);
}

Result<CacheEntry> LoadCoordinator::load_as_holder(const std::string& key, LockHold& hold,
                                                   MemoryCache::Ticket ticket,
                                                   Deadline load_deadline,
                                                   const LoadRequest& request, bool* superseded) {
  // Re-check under the lock: the previous holder may have written just
  // before releasing, after our last look. The acquire brought what L2 held.
  LoadRequest reload = request;
  if (const auto& bytes = hold.value_at_acquire()) {
    std::optional<Envelope> current = cache_.l2_decode(*bytes);
    const TimePoint now = clock_->now();
    if (current && answers(current->entry, now, request.fresh_at_least_until)) {
      cache_.fill_l1(key, current->entry, ticket, now);
      (void)finish(key, hold, nullptr, ticket);
      return std::move(current->entry);
    }
    // What L2 holds is what a "not modified" would extend there.
    if (current && (!reload.previous || reload.previous->version <= current->version)) {
      current->entry.version = current->version;
      reload.previous = std::move(current->entry);
    }
  }
  const MemoryCache::Ticket load_ticket = cache_.ticket(key);
  L3Write l3;
  Result<CacheEntry> entry = load_behind_l3(key, load_deadline, reload, &l3);
  // Finish also when the load failed, so that waiters try at once.
  auto refused = finish(key, hold, entry ? &*entry : nullptr, load_ticket, l3);
  if (!entry) return entry;
  return after_store(key, std::move(entry), refused, superseded);
}

}  // namespace herdguard::internal
