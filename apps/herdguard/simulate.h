// `herdguard simulate`: a stampede across several processes against real
// servers. Forks `processes` workers; each builds its own protection (as a
// separate pod would), arms `concurrency` threads, and all of them are
// released at the same moment on one expired hot key. Reports what the
// database saw (queries summed over the workers' repositories), errors,
// wrong values and latency.
#pragma once

#include <string>

namespace herdguard::cli {

struct SimulateOptions {
  int processes = 4;
  int concurrency = 100;
  // none: plain cache-aside; local: in-process protection only; fleet: also
  // the Redis lock (REQUIRES redis_url).
  std::string protect = "fleet";
  // Redis for the shared cache and the lock; empty: each worker caches in memory.
  std::string redis_url;
  // The SQLite database file shared by the workers; empty: a temporary one.
  std::string db;
  int db_latency_ms = 50;
  int db_connections = 8;
  int timeout_ms = 5000;
  int lease_ms = 5000;
  // false: fleet waiters poll instead of waiting for a pub/sub notification.
  bool notify = true;
  std::string key = "product:1";
  // Herds run one after the other (fresh processes and key state each);
  // the report covers all of them. For stable latency percentiles.
  int rounds = 1;
  bool json = false;
};

// Runs the simulation and prints the report. Returns the exit code: 0 when
// the run completed (whatever its errors), 1 when it could not be set up.
int run_simulate(const SimulateOptions& options);

}  // namespace herdguard::cli
