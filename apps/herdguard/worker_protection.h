// What one `herdguard simulate` worker process builds, as a pod of a real
// service would: its database connection (wrapped to play the scenario's
// faults and to count loads), its Redis fleet, its protection for the chosen
// mode, and (with --metrics-port) its Prometheus endpoint. Shared by the herd
// and the timed scenario so that both exercise the same set-up.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "faulty_repository.h"
#include "herdguard/herdguard.h"
#include "saturating_database.h"
#include "scenario.h"

namespace herdguard::cli {

struct WorkerProtection {
  // Counts every load that reached the database (or its dead endpoint).
  std::shared_ptr<FaultyRepository> db;
  std::shared_ptr<MetricsRegistry> registry;
  std::optional<RedisFleet> fleet;
  std::unique_ptr<Protector> protector;
  std::unique_ptr<MetricsServer> metrics_server;  // destroyed first: it reads the protector
  std::function<Result<std::string>(const std::string& key)> request;
  // A request on behalf of a client (--clients): through the rate limiter
  // when there is one (--rate-limit), setting *rate_limited; else request().
  std::function<Result<std::string>(const std::string& client, const std::string& key,
                                    bool* rate_limited)>
      request_for;
  // Several keys at once (--get-many): get_many, or one get per key.
  std::function<std::vector<Result<std::string>>(const std::vector<std::string>& keys)>
      request_many;
  std::shared_ptr<RateLimiter> rate_limiter;  // --rate-limit only
};

// Builds worker `index`'s protection for `s.protect`: none (plain
// cache-aside), local, fleet or full. `redis_url` may differ from s.redis (a
// fault proxy); `l3_url` likewise for s.l3 (empty: no L3);
// `refusing_socket` is where db-down faults connect.
// `db_load`: the saturating server's shared counters, REQUIRED (non-null)
// when s.db_capacity > 0, else unused.
// Errors: opening the database or Redis, bad options, a taken metrics port.
Result<WorkerProtection> build_worker_protection(
    const Scenario& s, int index, const std::string& db, const std::string& redis_url,
    const std::string& l3_url, const std::string& refusing_socket, const std::string& prefix,
    std::shared_ptr<SharedDbLoad> db_load);

}  // namespace herdguard::cli
