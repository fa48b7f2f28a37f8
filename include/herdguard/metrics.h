// herdguard/metrics.h — what the protection did, as a snapshot of counters.
//
// `Protector::metrics()` returns a `ProtectionMetrics`: monotonically growing
// counters since the Protector was created, plus a few gauges. Each field is
// exact, but the snapshot is not taken atomically as a whole (counters are
// bumped without locks on the hot path), so two fields read while requests
// run may be a few requests apart.
//
// Thread safety: a plain value.
//
// Example:
//   herdguard::ProtectionMetrics m = protector.metrics();
//   double hit_rate = m.total_requests ? double(m.cache_hits) / m.total_requests : 0;
//   fmt::print("db queries: {}, shared loads: {}\n", m.db_queries, m.single_flight_hits);
#pragma once

#include <cstdint>

#include "herdguard/circuit_breaker.h"

namespace herdguard {

struct ProtectionMetrics {
  // Calls of get / get_stale_while_revalidate / get_async.
  std::uint64_t total_requests = 0;
  // Requests answered by a fresh cached entry (including negative entries),
  // and how many of those came from L1.
  std::uint64_t cache_hits = 0;
  std::uint64_t l1_hits = 0;
  // Requests that found no fresh entry (absent or stale) and went to load.
  std::uint64_t cache_misses = 0;
  // Callers that shared a load started by another caller.
  std::uint64_t single_flight_hits = 0;
  // Loads this process led: single-flight leaderships, each one load of
  // the key in this process (Prometheus: lock_acquisitions{scope="local"}).
  std::uint64_t single_flight_leads = 0;
  // Times the circuit breaker opened.
  std::uint64_t circuit_breaker_trips = 0;
  // Requests answered with a stale value (stale-while-revalidate or fail-safe).
  std::uint64_t stale_returns = 0;
  // Background refreshes started by stale-while-revalidate.
  std::uint64_t background_refreshes = 0;
  // Background refreshes dropped because the load queue was full.
  std::uint64_t background_refreshes_dropped = 0;
  // Refreshes of fresh entries started before their expiry (early_refresh.h).
  std::uint64_t early_refreshes = 0;
  // Requests answered with their stale value at the soft load timeout
  // (ProtectorOptions::soft_load_timeout; also counted in stale_returns).
  std::uint64_t soft_timeouts = 0;
  // Keys hot now (ProtectorOptions::hot_keys; Protector::hot_keys() names
  // them), and how many times a key turned hot.
  std::uint64_t hot_keys = 0;
  std::uint64_t hot_keys_detected = 0;
  // Adaptive TTL (adaptive_ttl.h): loads that gave their key a longer TTL
  // than its previous one (value unchanged), or a shorter one (changed).
  std::uint64_t ttl_lengthened = 0;
  std::uint64_t ttl_shortened = 0;
  // Warm-up (warm_up.h): keys loaded (or found absent) at start, and the
  // ones that failed (plus a key list that could not be had).
  std::uint64_t warmed_keys = 0;
  std::uint64_t warm_up_failures = 0;
  // Calls made to the repository, and how many of them failed.
  std::uint64_t db_queries = 0;
  std::uint64_t db_errors = 0;
  // Repository::load_many calls (get_many's batches; their keys count in
  // db_queries, one each).
  std::uint64_t db_batches = 0;
  // Requests answered by the fallback chain (stale fail-safe or default
  // value), and how many of those with a stale value.
  std::uint64_t fallbacks = 0;
  std::uint64_t fallbacks_stale = 0;
  // Requests refused by admission control (waiter cap, full load queue,
  // the database concurrency limit) that had no stale value to fall back on
  // or fell back to one (both count).
  std::uint64_t load_shed = 0;
  // Requests that returned an error other than not_found.
  std::uint64_t errors = 0;
  // Requests that returned not_found.
  std::uint64_t not_found = 0;

  // The shared L2 (Redis): gets that found a fresh or usable entry, gets that
  // found none, entries under the prefix that did not decode (a miss each).
  std::uint64_t l2_hits = 0;
  std::uint64_t l2_misses = 0;
  std::uint64_t l2_corrupt = 0;
  // The L3 (memcached, memcached_cache.h), read on an L2 miss before the
  // database: records promoted to L2, lookups that found none (or none
  // fresh, or Redis could not confirm one), records Redis refused (older than
  // an invalidation, or of a Redis that since lost its data), memcached
  // errors (none fails a request), records that did not decode.
  std::uint64_t l3_hits = 0;
  std::uint64_t l3_misses = 0;
  std::uint64_t l3_rejected = 0;
  std::uint64_t l3_errors = 0;
  std::uint64_t l3_corrupt = 0;
  // Redis errors on every path (L2, lock, notifications). None of them fails
  // a request by itself: reads count as misses, loads run without the lock.
  std::uint64_t redis_errors = 0;
  // The fleet lock: loads this process ran holding it, attempts that found
  // another process holding it, loads answered by another process's value,
  // loads run without the lock because Redis failed, and L2 writes of loaded
  // values refused because the key's version moved (a set, an invalidate or
  // a later lock holder came in) or the load's deadline had passed.
  std::uint64_t fleet_lock_acquisitions = 0;
  std::uint64_t fleet_lock_contentions = 0;
  std::uint64_t fleet_waited_loads = 0;
  std::uint64_t fleet_degraded_loads = 0;
  std::uint64_t fenced_off_writes = 0;
  // Waits for another process's load spent polling (pub/sub down or not
  // configured: a jittered, doubling interval between looks).
  std::uint64_t fleet_polls = 0;
  // L1 fills skipped because a set/invalidate of the key (in this process)
  // came in while the value was read or loaded.
  std::uint64_t refused_l1_fills = 0;
  // The L1 backplane (ProtectorOptions::l1_backplane): set()/invalidate()
  // announced to the fleet, announcements that failed (others then see the
  // change within l1_max_ttl), L1 copies dropped for another process's
  // announcement, and losses and (re)establishments of the subscription,
  // after each of which every L1 copy was rechecked against L2 before being
  // answered again (announcements made while it was down go unheard).
  std::uint64_t backplane_published = 0;
  std::uint64_t backplane_publish_failures = 0;
  std::uint64_t backplane_invalidations = 0;
  std::uint64_t backplane_resyncs = 0;
  // Tags and clear() (Protector::invalidate_tag): this process's tag
  // invalidations and clears that succeeded, other processes' heard on the
  // backplane, entries refused because a tag of theirs (or clear) was
  // invalidated after their load began (L1 copies dropped, plus L2 and L3
  // reads that found one: an L2 entry is counted by each read until replaced),
  // syncs of the known tag versions with Redis and the syncs that failed,
  // and the number of tags with a remembered version.
  // Repository answers "not modified" (Repository::reload_entry), and of
  // their L2 writes those that extended the entry in place (no SET).
  std::uint64_t not_modified = 0;
  std::uint64_t l2_extended = 0;
  std::uint64_t tag_invalidations = 0;
  std::uint64_t clears = 0;
  std::uint64_t backplane_tag_invalidations = 0;
  std::uint64_t tag_rejections = 0;
  std::uint64_t tag_syncs = 0;
  std::uint64_t tag_sync_errors = 0;
  std::uint64_t tags_known = 0;
  // get_for() requests over their client's rate limit, and of those the
  // ones answered with the key's L1 copy (the rest got kRateLimited).
  std::uint64_t rate_limited = 0;
  std::uint64_t rate_limited_stale = 0;

  // Gauges at snapshot time.
  BreakerState circuit_breaker_state = BreakerState::kClosed;
  std::uint64_t l1_entries = 0;
  std::uint64_t l1_bytes = 0;
  std::uint64_t l1_evictions = 0;
  std::uint64_t loads_in_flight = 0;
  // The database concurrency limiter (concurrency_limiter.h): its current
  // limit (0: off), loads holding / waiting for a slot, loads it shed. With
  // a limiter shared by several protectors, these are the shared one's.
  std::uint64_t db_limit = 0;
  std::uint64_t db_in_flight = 0;
  std::uint64_t db_waiting = 0;
  std::uint64_t db_shed = 0;
  // Single-flight (single_flight.h): loads the leader ran on its own
  // thread, loads handed to the executor, inline loads cut by the leader's
  // deadline that went on there, and the executor's threads now.
  std::uint64_t inline_loads = 0;
  std::uint64_t handed_off_loads = 0;
  std::uint64_t continued_loads = 0;
  std::uint64_t load_threads = 0;
};

}  // namespace herdguard
