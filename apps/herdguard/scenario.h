// A `herdguard simulate` scenario: the workload, the protection, the servers
// and a timeline of faults. Built from flags, from a TOML file
// (--scenario FILE, flags override it), or both.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "herdguard/adaptive_ttl.h"
#include "herdguard/concurrency_limiter.h"
#include "herdguard/early_refresh.h"
#include "herdguard/redis_fleet.h"
#include "herdguard/result.h"

namespace herdguard::cli {

struct Fault {
  enum class Kind { kDbSlow, kDbDown, kRedisDown, kL3Down };
  Kind kind = Kind::kDbDown;
  double start_s = 0;
  double end_s = 0;
  int extra_ms = 0;  // kDbSlow only

  bool active(double t_s) const { return t_s >= start_s && t_s < end_s; }
  std::string to_string() const;
};

// Parses `db-slow:START-END:MS`, `db-down:START-END`, `redis-down:START-END`,
// `l3-down:START-END`
// (seconds from the start). Errors: kInvalidArgument naming what is wrong.
Result<Fault> parse_fault(std::string_view text);

// Parses --db-limit: `adaptive`, `off` (the library default), or `fixed:N`
// (N in 1..100000) into the workers' ProtectorOptions::db_limit.
// Errors: kInvalidArgument naming --db-limit and what is wrong.
Result<ConcurrencyLimitOptions> parse_db_limit(std::string_view text);

// Parses --early-refresh: `none` (the library default), `xfetch` (β = 1),
// `xfetch:BETA` (β > 0) or `eager:FRACTION` (a fraction of the TTL in
// (0, 1)). Errors: kInvalidArgument naming --early-refresh and what is wrong.
Result<EarlyRefreshOptions> parse_early_refresh(std::string_view text);
// How the workers protect the database: none (plain cache-aside), local
// (in-process protection), fleet (also the Redis fleet lock), full (fleet,
// stale-while-revalidate and fail-safe).
enum class Protection { kUnset, kNone, kLocal, kFleet, kFull };
// "none", "local", "fleet" or "full"; nullopt for anything else.
std::optional<Protection> parse_protection(std::string_view text);
// The name parse_protection takes ("" for kUnset).
std::string_view protection_name(Protection protection);
// Whether the protection uses the fleet lock (and so needs Redis).
constexpr bool uses_fleet_lock(Protection p) {
  return p == Protection::kFleet || p == Protection::kFull;
}

// "auto", "shared" or "per-key"; nullopt for anything else.
std::optional<RedisFleetOptions::ReadyChannels> parse_ready_channels(std::string_view text);

// Parses --adaptive-ttl `MIN_MS-MAX_MS` (1 <= MIN_MS <= MAX_MS) into enabled
// AdaptiveTtlOptions. Errors: kInvalidArgument naming --adaptive-ttl.
Result<AdaptiveTtlOptions> parse_adaptive_ttl(std::string_view text);

// A key that goes viral: from `start_s` on, it receives kViralShare of all
// requests (the others follow the zipf distribution as before).
struct Viral {
  std::string key;
  double start_s = 0;
};
inline constexpr double kViralShare = 0.05;

// Parses --viral `KEY@SECOND` (KEY non-empty, SECOND >= 0; the last '@'
// splits, so keys may contain '@'). Errors: kInvalidArgument naming --viral.
Result<Viral> parse_viral(std::string_view text);

struct Scenario {
  // Workload. duration_s == 0 is "herd mode": one burst of `concurrency`
  // requests per process on one expired hot key, then the report.
  int processes = 4;
  int concurrency = 100;  // closed loop: threads per process, each looping requests
  double rate = 0;        // open loop when > 0: requests/s across all processes
  double duration_s = 0;
  int keys = 1000;
  double zipf = 1.1;
  int ttl_ms = 2000;
  double jitter = 0.2;
  int timeout_ms = 5000;

  // Not chosen (kUnset): fleet with --redis, else local, so that
  // `herdguard simulate` alone runs on the embedded defaults.
  Protection protect = Protection::kUnset;
  bool compare = false;  // also run with `none` first, report both

  // Servers. redis empty: in-memory cache per process. db empty: a temporary
  // SQLite file; a path: that SQLite file; postgresql://...: PostgreSQL.
  std::string redis;
  std::string db;
  int db_latency_ms = 50;
  int db_connections = 8;
  int lease_ms = 5000;
  bool notify = true;
  // Where fleet waiters hear "ready": auto | shared | per-key
  // (RedisFleetOptions::ready_channels).
  std::string ready_channels = "auto";
  // > 0: the database is a saturating server of this capacity, shared by
  // all processes (saturating_database.h); 0: each query takes db_latency_ms.
  int db_capacity = 0;
  // The protectors' database concurrency limit: adaptive | off | fixed:N.
  std::string db_limit = "off";
  // The protectors' early refresh: none | xfetch[:BETA] | eager:FRACTION.
  std::string early_refresh = "none";
  // Timed runs: a key that goes viral (KEY@SECOND, empty: none).
  std::string viral;
  // The protectors' adaptive TTL: MIN_MS-MAX_MS (empty: off).
  std::string adaptive_ttl;
  // Timed runs: `clients` clients fleet-wide, each offering `client_rate`
  // requests/s spread evenly over the processes (as a load balancer would),
  // open loop; replaces `rate`. 0: no clients (requests are anonymous).
  int clients = 0;
  double client_rate = 0;
  // > 0 (needs clients and a protector): each request goes through
  // Protector::get_for with a RateLimiter of this rate per client
  // (fleet-wide through --redis, else per process) and this burst.
  double rate_limit = 0;
  double rate_limit_burst = 2;
  // Timed runs: > 1: each request fetches this many keys at once
  // (Protector::get_many; without protection, one get per key).
  int get_many = 1;
  // memcached://HOST:PORT or memcached:///socket: the protectors' L3 tier
  // (needs --redis and a protection; empty: none).
  std::string l3;
  // Timed runs, with a protector: tag invalidations per second across the
  // processes (Protector::invalidate_tag of a random group; keys are tagged
  // in groups of 100: key:N carries "group:<N / 100>"). 0: none.
  double invalidate_tag_rate = 0;

  std::vector<Fault> faults;

  // Herd mode only: the hot key, and how many herds to run one after another.
  std::string key = "product:1";
  int rounds = 1;

  // Output.
  bool json = false;
  std::string svg;
  bool progress = true;  // a progress line on a terminal
  // When > 0, worker i serves /metrics (Prometheus) on 127.0.0.1:metrics_port+i
  // while it runs.
  int metrics_port = 0;

  // Checks ranges and combinations. Errors: kInvalidArgument naming the field.
  Result<void> validate() const;
  bool herd_mode() const { return duration_s <= 0; }
};

// Reads a TOML scenario into `scenario` (fields not in the file are left as
// they are). Keys are the long flag names with '_' for '-', e.g.
//   processes = 4
//   duration = 30          # seconds
//   rate = 2000            # omit for closed loop (concurrency)
//   protect = "full"
//   faults = ["db-down:10-20"]
// Errors: kInvalidArgument with "FILE:LINE:" for syntax errors, unknown keys
// and values of the wrong type or range.
Result<void> load_scenario_file(const std::string& path, Scenario& scenario);

}  // namespace herdguard::cli
