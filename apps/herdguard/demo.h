// `herdguard demo`: a herd against an embedded SQLite database, first with
// plain cache-aside, then through the Protector.
#pragma once

#include <string>
#include <vector>

#include "latency_stats.h"

namespace herdguard::cli {

struct DemoOptions {
  int requests = 1000;
  int db_latency_ms = 50;
  int db_connections = 8;
  int timeout_ms = 2000;
  bool json = false;
  // When set, the protected run uses Redis as L2 cache and fleet lock.
  std::string redis_url;
  // Print the protected run's Prometheus metrics instead of the table.
  bool prometheus = false;
};

struct ScenarioReport {
  std::string name;
  unsigned long long db_queries = 0;
  int errors = 0;
  LatencySummary latency;
  // The protected run's metrics in the Prometheus text format (--prometheus).
  std::string prometheus;
};

struct DemoReport {
  DemoOptions options;
  std::vector<ScenarioReport> scenarios;
};

// Runs both scenarios. Returns a message on a set-up failure (e.g. the
// temporary database cannot be created).
int run_demo(const DemoOptions& options);

}  // namespace herdguard::cli
