// Runs a timed `herdguard simulate` scenario: forks the worker processes,
// releases them at once, shows progress, and gathers what they saw into a
// report with a per-second timeline.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "herdguard/result.h"
#include "latency_stats.h"
#include "load_overlap.h"
#include "scenario.h"

namespace herdguard::cli {

// A key some process found hot (HotKeyDetector), as each process saw it
// first: when (seconds from the start), at what rate (reads/s in that
// process; the window before's rate), and how many of its requests waited
// for a load after that.
struct HotKeyDetection {
  int process = 0;
  double detected_at_s = 0;
  double rate = 0;
  double previous_rate = 0;
  double previous_rate_max = 0;
  bool viral = false;
  std::uint64_t load_waits = 0;
};
struct HotKeyReport {
  std::string key;
  std::vector<HotKeyDetection> by_process;
};
// A key hot at the end of a second: its rate summed over the processes
// that found it hot.
struct SecondHotKey {
  std::string key;
  double rate = 0;
  int processes = 0;
};

struct SecondReport {
  int t = 0;  // seconds since the start
  std::uint64_t requests = 0;
  std::uint64_t db_queries = 0;
  std::uint64_t errors = 0;
  std::uint64_t stale_served = 0;
  std::uint64_t load_waits = 0;
  std::uint64_t early_refreshes = 0;
  std::uint64_t redis_errors = 0;
  // Loads that repeated a load of the same key less than half a TTL earlier.
  std::uint64_t duplicate_loads = 0;
  // --clients: requests over their client's limit, and requests admitted
  // per client (index = client number), summed over the processes.
  std::uint64_t rate_limited = 0;
  std::vector<std::uint64_t> admitted_by_client;
  double p99_ms = 0;
  std::vector<SecondHotKey> hot_keys;
};

struct RunReport {
  std::string protect;
  int processes = 0;
  std::uint64_t requests = 0;
  std::uint64_t db_queries = 0;
  std::uint64_t errors = 0;
  std::uint64_t wrong_values = 0;
  std::uint64_t stale_served = 0;
  // Requests that waited for a load (the protectors' cache_misses; without
  // protection, every database query), and early refreshes started.
  std::uint64_t load_waits = 0;
  std::uint64_t early_refreshes = 0;
  // Adaptive TTL: loads that lengthened / shortened their key's TTL.
  std::uint64_t ttl_lengthened = 0;
  std::uint64_t ttl_shortened = 0;
  // Background refreshes (stale-while-revalidate, early) dropped because
  // max_background_refreshes were running.
  std::uint64_t refreshes_dropped = 0;
  std::uint64_t breaker_trips = 0;
  std::uint64_t redis_errors = 0;
  // Fleet protection: times a process found a key's fleet lock held and
  // waited for another's load (the protectors' fleet_lock_contentions), and
  // the ready announcements the processes' notifiers received. With one
  // shared channel every process receives every announcement; with per-key
  // channels (a Redis Cluster) about one per wait.
  std::uint64_t fleet_waits = 0;
  std::uint64_t announcements_received = 0;
  // Successful answers (values, stale ones included; not errors) per second
  // of the run.
  double goodput = 0;
  // Loads the protectors' database concurrency limiters shed (the sum of
  // ProtectionMetrics::db_shed over the workers).
  std::uint64_t db_shed = 0;
  // --rate-limit: requests over their client's limit (answered with the L1
  // copy or rate_limited; not errors), and the limiters' decisions made in
  // the process because Redis failed.
  std::uint64_t rate_limited = 0;
  std::uint64_t rate_limiter_local_decisions = 0;
  // --get-many: Repository::load_many calls (each also counts its keys in
  // db_queries).
  std::uint64_t batch_queries = 0;
  // --l3: records promoted from memcached, memcached errors (none fails a
  // request), records Redis refused (older than an invalidation).
  std::uint64_t l3_hits = 0;
  std::uint64_t l3_errors = 0;
  std::uint64_t l3_rejected = 0;
  // --invalidate-tag-rate: tag invalidations made (successful).
  std::uint64_t tag_invalidations = 0;
  // With --db-capacity: the saturating server's capacity and the most
  // queries it ran at once (0 and 0 without).
  int db_capacity = 0;
  std::int64_t db_peak = 0;
  int failed_workers = 0;
  // Failed requests by error kind ("timeout", "overloaded", ...), and the
  // first error message seen (a set-up failure, else a request's).
  std::map<std::string, std::uint64_t> errors_by_kind;
  std::string first_error;
  LatencySummary latency;
  std::vector<SecondReport> timeline;
  // Timed runs: loads of a key that began less than half a TTL after the
  // previous load of that key, in any process (more than one load per key
  // per expiry); those of which neither load began inside the Redis error
  // window (duplicates_outside, load_overlap.h); and that window
  // (from the first second with a Redis error to the first later second
  // without), if Redis failed at all.
  std::uint64_t duplicate_loads = 0;
  std::uint64_t duplicate_loads_outside_redis_errors = 0;
  std::optional<SecondsWindow> redis_error_window;
  std::vector<HotKeyReport> hot_keys;  // by key
};

// Runs `scenario` once with its own `protect`. `db` is the database to use
// (already seeded): a SQLite path or a postgresql:// URL. Errors: set-up
// failures (sockets, fork); failures of requests are in the report.
Result<RunReport> run_scenario(const Scenario& scenario, const std::string& db);

}  // namespace herdguard::cli
