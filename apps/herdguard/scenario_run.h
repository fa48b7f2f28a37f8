// Runs a timed `herdguard simulate` scenario: forks the worker processes,
// releases them at once, shows progress, and gathers what they saw into a
// report with a per-second timeline.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "herdguard/result.h"
#include "latency_stats.h"
#include "scenario.h"

namespace herdguard::cli {

struct SecondReport {
  int t = 0;  // seconds since the start
  std::uint64_t requests = 0;
  std::uint64_t db_queries = 0;
  std::uint64_t errors = 0;
  std::uint64_t stale_served = 0;
  double p99_ms = 0;
};

struct RunReport {
  std::string protect;
  int processes = 0;
  std::uint64_t requests = 0;
  std::uint64_t db_queries = 0;
  std::uint64_t errors = 0;
  std::uint64_t wrong_values = 0;
  std::uint64_t stale_served = 0;
  std::uint64_t breaker_trips = 0;
  std::uint64_t redis_errors = 0;
  int failed_workers = 0;
  std::string first_error;
  LatencySummary latency;
  std::vector<SecondReport> timeline;
};

// Runs `scenario` once with its own `protect`. `db` is the database to use
// (already seeded): a SQLite path or a postgresql:// URL. Errors: set-up
// failures (sockets, fork); failures of requests are in the report.
Result<RunReport> run_scenario(const Scenario& scenario, const std::string& db);

}  // namespace herdguard::cli
