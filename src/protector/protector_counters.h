// Internal: the Protector's counters, shared by the parts of its read path
// (tiered_cache.h, repository_loader.h, load_coordinator.h) so that each
// counts what it does and Protector::metrics() reads them all in one place.
//
// Thread safety: every counter is a StripedCounter (relaxed, lock-free).
#pragma once

#include "metrics/striped_counter.h"

namespace herdguard::internal {

struct ProtectorCounters {
  // A fresh L1 answer bumps one counter, l1_fast_hits, and nothing else: an
  // atomic increment is a good part of the hit path's cost. Every other
  // request bumps requests_past_l1; ProtectionMetrics::total_requests is
  // the sum, and l1_hits there is l1_fast_hits + l1_hits (L1 answers found
  // later on the path, e.g. while Redis is unreachable).
  StripedCounter l1_fast_hits;
  StripedCounter requests_past_l1;
  // Fresh answers from L2; with the L1 hits, ProtectionMetrics::cache_hits.
  StripedCounter l2_answers;
  // L3 (memcached): records promoted, none (or not fresh), refused by
  // Redis (older than a tombstone or another epoch), memcached errors.
  StripedCounter l3_hits;
  StripedCounter l3_misses;
  StripedCounter l3_rejected;
  StripedCounter l3_errors;
  StripedCounter cache_misses;
  StripedCounter stale_returns;
  StripedCounter background_refreshes;
  StripedCounter background_refreshes_dropped;
  StripedCounter early_refreshes;
  StripedCounter soft_timeouts;
  StripedCounter hot_keys_detected;
  StripedCounter ttl_lengthened;    // adaptive TTL: a reload found the value unchanged
  StripedCounter ttl_shortened;     // ... changed
  StripedCounter warmed_keys;       // warm-up (warm_up.h): keys loaded (or found absent)
  StripedCounter warm_up_failures;  // ... keys that failed, and a list that could not be had
  StripedCounter db_queries;
  StripedCounter db_errors;
  StripedCounter db_batches;  // Repository::load_many calls (get_many)
  StripedCounter fallbacks;
  StripedCounter load_shed;
  StripedCounter errors;
  StripedCounter not_found;
  StripedCounter l1_hits;
  StripedCounter fallbacks_stale;
  StripedCounter l2_hits;
  StripedCounter l2_misses;
  StripedCounter redis_errors;
  // The fleet path (load_coordinator.h).
  StripedCounter fleet_lock_acquisitions;
  StripedCounter fleet_lock_contentions;
  StripedCounter fleet_waited_loads;
  StripedCounter fleet_degraded_loads;
  StripedCounter fleet_polls;       // poll intervals waited (no pub/sub)
  StripedCounter refused_writes;    // L2 writes refused: superseded or past their deadline
  StripedCounter refused_l1_fills;  // L1 fills refused: a set/invalidate came in since the read
  // The L1 backplane (ProtectorOptions::l1_backplane).
  StripedCounter backplane_published;
  StripedCounter backplane_publish_failures;
  StripedCounter backplane_invalidations;
  StripedCounter backplane_resyncs;
  // Tags and clear() (tag_versions.h).
  StripedCounter tag_invalidations;            // this process's invalidate_tag() that succeeded
  StripedCounter clears;                       // this process's clear() that succeeded
  StripedCounter backplane_tag_invalidations;  // another process's, heard
  StripedCounter tag_syncs;                    // syncs with Redis
  StripedCounter tag_sync_errors;              // syncs that failed (retried)
  StripedCounter tag_rejections;      // L2/L3 entries refused (L1's: MemoryCacheStats::refused)
  StripedCounter not_modified;        // repository answers "not modified" (reload_entry)
  StripedCounter l2_extended;         // of their L2 writes, extended in place (no SET)
  StripedCounter rate_limited;        // get_for() over the client's limit
  StripedCounter rate_limited_stale;  // ... answered with the L1 copy
};

}  // namespace herdguard::internal
