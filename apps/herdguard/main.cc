// herdguard: the command-line tool. `demo` shows a cache stampede and its cure
// on embedded defaults (no servers needed); `simulate` reproduces one across
// several processes against real servers.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "demo.h"
#include "scenario.h"
#include "simulate.h"

namespace {

using herdguard::cli::Scenario;

// `herdguard demo`; its options land in `options`, which must outlive the parse.
CLI::App* add_demo_command(CLI::App& app, herdguard::cli::DemoOptions& options) {
  CLI::App* demo_cmd = app.add_subcommand(
      "demo",
      "Release a herd of concurrent requests on one expired hot key, first with plain "
      "cache-aside, then through herdguard, against an embedded SQLite database; print what "
      "the database saw.");
  demo_cmd->add_option("--requests", options.requests, "Concurrent requests released at once")
      ->check(CLI::Range(1, 20000))
      ->capture_default_str();
  demo_cmd
      ->add_option("--db-latency-ms", options.db_latency_ms,
                   "Time each database query takes, standing in for a loaded database")
      ->check(CLI::Range(0, 60000))
      ->capture_default_str();
  demo_cmd
      ->add_option("--db-connections", options.db_connections,
                   "Database connections (concurrent queries the database serves)")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  demo_cmd
      ->add_option("--timeout-ms", options.timeout_ms,
                   "Each request's deadline; a request still waiting then is an error")
      ->check(CLI::Range(1, 600000))
      ->capture_default_str();
  demo_cmd->add_flag("--json", options.json, "Print the report as JSON instead of a table");
  demo_cmd->add_flag("--prometheus", options.prometheus,
                     "Print the protected run's metrics in the Prometheus text format");
  demo_cmd->add_option("--redis", options.redis_url,
                       "Use Redis as L2 cache and fleet lock in the protected run: "
                       "redis://[user:password@]host:port[/db], unix:///path/redis.sock[?db=N], "
                       "redis-cluster://host:port[,host:port...] or "
                       "redis-sentinel://host:port[,host:port...]/NAME");
  return demo_cmd;
}

// `herdguard simulate`. Its flags land in `flags`; each also records how to
// copy its value onto a scenario loaded from --scenario FILE, so that flags
// given override the file. Not moved once its flags are added (they point
// into it).
struct SimulateCommand {
  CLI::App* app = nullptr;
  Scenario flags;
  std::vector<std::pair<CLI::Option*, std::function<void(Scenario&)>>> overrides;
  std::string scenario_file;
  std::vector<std::string> fault_texts;
  CLI::Option* fault_option = nullptr;

  template <typename T>
  CLI::Option* flag(CLI::Option* option, T Scenario::*member) {
    overrides.emplace_back(option, [member, this](Scenario& dst) { dst.*member = flags.*member; });
    return option;
  }
};

// The load: processes, threads or rates, keys, TTLs, deadlines, herd rounds.
void add_workload_flags(SimulateCommand& c) {
  using S = Scenario;
  c.flag(c.app->add_option("--processes", c.flags.processes, "Worker processes (pods)"),
         &S::processes)
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  c.flag(c.app->add_option("--concurrency", c.flags.concurrency,
                           "Concurrent requests per process (herd size; in a timed scenario, "
                           "closed-loop threads, or the in-flight cap with --rate)"),
         &S::concurrency)
      ->check(CLI::Range(1, 10000))
      ->capture_default_str();
  c.flag(c.app->add_option("--rate", c.flags.rate,
                           "Open loop: requests per second across all processes (0: closed loop)"),
         &S::rate)
      ->check(CLI::Range(0.0, 1e6));
  c.flag(c.app->add_option("--duration", c.flags.duration_s, "Seconds to run a timed scenario"),
         &S::duration_s)
      ->check(CLI::Range(0.0, 86400.0));
  c.flag(c.app->add_option("--keys", c.flags.keys, "Distinct keys in a timed scenario"), &S::keys)
      ->check(CLI::Range(1, 10000000))
      ->capture_default_str();
  c.flag(c.app->add_option("--zipf", c.flags.zipf, "Zipf exponent of key popularity (0: uniform)"),
         &S::zipf)
      ->check(CLI::Range(0.0, 10.0))
      ->capture_default_str();
  c.flag(c.app->add_option("--ttl-ms", c.flags.ttl_ms, "Cache TTL of a loaded value"), &S::ttl_ms)
      ->check(CLI::Range(1, 86400000))
      ->capture_default_str();
  c.flag(c.app->add_option("--jitter", c.flags.jitter,
                           "TTL jitter: each TTL is scaled by [1-j, 1+j]"),
         &S::jitter)
      ->check(CLI::Range(0.0, 0.99))
      ->capture_default_str();
  c.flag(c.app->add_option("--viral", c.flags.viral,
                           "KEY@SECOND: from that second on, KEY receives 5% of all requests "
                           "(e.g. key:9999@5, the least popular of 10,000 keys); the report's "
                           "hot_keys say when each process detected it"),
         &S::viral);
  c.flag(c.app->add_option("--clients", c.flags.clients,
                           "N clients fleet-wide, each sending --client-rate requests/s spread "
                           "over the processes (open loop; replaces --rate)"),
         &S::clients)
      ->check(CLI::Range(0, 100000));
  c.flag(c.app->add_option("--client-rate", c.flags.client_rate, "Requests/s each client offers"),
         &S::client_rate)
      ->check(CLI::Range(0.0, 1e6));
  c.flag(c.app->add_option("--get-many", c.flags.get_many,
                           "K: each request fetches K keys at once (Protector::get_many; the "
                           "misses are loaded in one batch query)"),
         &S::get_many)
      ->check(CLI::Range(1, 10000))
      ->capture_default_str();
  c.flag(c.app->add_option("--invalidate-tag-rate", c.flags.invalidate_tag_rate,
                           "R: tag invalidations per second across the processes "
                           "(invalidate_tag of a random group; keys are tagged in groups of 100)"),
         &S::invalidate_tag_rate)
      ->check(CLI::Range(0.0, 1e6));
  c.flag(c.app->add_option("--timeout-ms", c.flags.timeout_ms, "Each request's deadline"),
         &S::timeout_ms)
      ->check(CLI::Range(1, 600000))
      ->capture_default_str();
  c.flag(c.app->add_option("--key", c.flags.key, "Herd mode: the hot key"), &S::key)
      ->capture_default_str();
  c.flag(
       c.app->add_option("--rounds", c.flags.rounds,
                         "Herd mode: herds to run one after the other; the report covers them all"),
       &S::rounds)
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
}

// How the workers protect the database.
void add_protection_flags(SimulateCommand& c) {
  using S = Scenario;
  c.flag(c.app->add_option("--protect", c.flags.protect,
                           "none: plain cache-aside; local: in-process protection; fleet: also the "
                           "Redis lock; full: fleet + stale-while-revalidate + fail-safe "
                           "(default: fleet with --redis, else local)"),
         &S::protect)
      ->transform(CLI::CheckedTransformer(
          std::map<std::string, herdguard::cli::Protection>{
              {"none", herdguard::cli::Protection::kNone},
              {"local", herdguard::cli::Protection::kLocal},
              {"fleet", herdguard::cli::Protection::kFleet},
              {"full", herdguard::cli::Protection::kFull}},
          CLI::ignore_case));
  c.flag(c.app->add_flag(
             "--compare", c.flags.compare,
             "Run the scenario with no protection first, then with --protect; report both"),
         &S::compare);
  c.flag(c.app->add_option("--db-limit", c.flags.db_limit,
                           "The protection's database concurrency limit per process: adaptive, "
                           "off (the library default), or fixed:N"),
         &S::db_limit)
      ->capture_default_str();
  c.flag(c.app->add_option("--ready-channels", c.flags.ready_channels,
                           "Where fleet waiters hear that a load is done: auto (per-key on a "
                           "Redis Cluster, else shared), shared (one channel), per-key (Redis 7 "
                           "sharded pub/sub)"),
         &S::ready_channels)
      ->capture_default_str();
  c.flag(c.app->add_option("--early-refresh", c.flags.early_refresh,
                           "Refresh hot entries before they expire: none (the library "
                           "default), xfetch, xfetch:BETA, or eager:FRACTION (of the TTL)"),
         &S::early_refresh)
      ->capture_default_str();
  c.flag(c.app->add_option("--adaptive-ttl", c.flags.adaptive_ttl,
                           "MIN_MS-MAX_MS: each load's TTL doubles while the key's value is "
                           "unchanged and halves when it changes, within that range (off "
                           "without it)"),
         &S::adaptive_ttl);
  c.flag(c.app->add_option("--rate-limit", c.flags.rate_limit,
                           "Limit each client to R requests/s (fleet-wide through --redis, per "
                           "process without); over the limit: the L1 copy or rate_limited"),
         &S::rate_limit)
      ->check(CLI::Range(0.0, 1e9));
  c.flag(c.app->add_option("--rate-limit-burst", c.flags.rate_limit_burst,
                           "Requests a client may send at once after being idle"),
         &S::rate_limit_burst)
      ->check(CLI::Range(1.0, 1e9))
      ->capture_default_str();
  c.flag(c.app->add_option("--lease-ms", c.flags.lease_ms, "Lease of the fleet lock"), &S::lease_ms)
      ->check(CLI::Range(10, 600000))
      ->capture_default_str();
  c.flag(c.app->add_flag("--notify,!--no-notify", c.flags.notify,
                         "Fleet waiters wait for a pub/sub notification (--no-notify: they poll)"),
         &S::notify);
}

// The servers, the faults played on them, and the scenario file.
void add_servers_flags(SimulateCommand& c) {
  using S = Scenario;
  c.flag(c.app->add_option("--redis", c.flags.redis,
                           "Redis URL for the shared cache and the lock (redis://, unix://, "
                           "redis-cluster:// or redis-sentinel://; without it, each process "
                           "caches in memory)"),
         &S::redis);
  c.flag(c.app->add_option("--db", c.flags.db,
                           "SQLite file or postgresql://user@host/db (default: a temporary SQLite "
                           "file, seeded)"),
         &S::db);
  c.flag(c.app->add_option("--db-latency-ms", c.flags.db_latency_ms,
                           "Extra time each database query takes"),
         &S::db_latency_ms)
      ->check(CLI::Range(0, 60000))
      ->capture_default_str();
  c.flag(c.app->add_option("--db-connections", c.flags.db_connections,
                           "Database connections per process"),
         &S::db_connections)
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  c.flag(c.app->add_option("--db-capacity", c.flags.db_capacity,
                           "Model the database as a server that runs N queries at full speed: "
                           "with k > N in flight across all processes, each takes "
                           "db-latency-ms x k / N (0: no limit, each takes db-latency-ms)"),
         &S::db_capacity)
      ->check(CLI::Range(0, 100000))
      ->capture_default_str();
  c.flag(c.app->add_option("--l3", c.flags.l3,
                           "memcached://HOST:PORT or memcached:///SOCKET: an L3 tier behind "
                           "Redis (needs --redis)"),
         &S::l3);
  c.fault_option = c.app->add_option(
      "--fault", c.fault_texts,
      "A fault on the timeline (repeatable): db-slow:START-END:MS, db-down:START-END, "
      "redis-down:START-END, l3-down:START-END (seconds from the start)");
  c.app
      ->add_option("--scenario", c.scenario_file,
                   "Read the scenario from a TOML file (keys as the flags, e.g. duration = 30, "
                   "faults = [\"db-down:10-20\"]); flags given too override it")
      ->check(CLI::ExistingFile);
}

// What the run reports, and where.
void add_output_flags(SimulateCommand& c) {
  using S = Scenario;
  c.flag(c.app->add_option("--svg", c.flags.svg,
                           "Write a chart of database queries/s and p99 latency over time"),
         &S::svg);
  c.flag(c.app->add_flag("--progress,!--no-progress", c.flags.progress,
                         "A progress line on the terminal while a timed scenario runs"),
         &S::progress);
  c.flag(c.app->add_flag("--json", c.flags.json, "Print the report as JSON instead of a table"),
         &S::json);
  c.flag(c.app->add_option("--metrics-port", c.flags.metrics_port,
                           "Worker i serves Prometheus /metrics on "
                           "127.0.0.1:PORT+i while it runs"),
         &S::metrics_port)
      ->check(CLI::Range(0, 65535));
}

void add_simulate_command(CLI::App& app, SimulateCommand& c) {
  c.app = app.add_subcommand(
      "simulate",
      "Reproduce a stampede across worker processes against a database (SQLite file or "
      "PostgreSQL) and optionally Redis. Without --duration: one herd on one expired hot key. "
      "With --duration: a timed scenario with Zipf keys, faults, a per-second timeline.");
  add_workload_flags(c);
  add_protection_flags(c);
  add_servers_flags(c);
  add_output_flags(c);
}

int run_simulate_command(SimulateCommand& c) {
  for (const auto& text : c.fault_texts) {
    auto fault = herdguard::cli::parse_fault(text);
    if (!fault) {
      fmt::print(stderr, "herdguard simulate: --fault: {}\n", fault.error().message);
      return 1;
    }
    c.flags.faults.push_back(*fault);
  }
  if (c.scenario_file.empty()) return herdguard::cli::run_simulate(c.flags);
  Scenario scenario;
  if (auto loaded = herdguard::cli::load_scenario_file(c.scenario_file, scenario); !loaded) {
    fmt::print(stderr, "herdguard simulate: --scenario: {}\n", loaded.error().message);
    return 1;
  }
  for (const auto& [option, copy] : c.overrides) {
    if (option->count() > 0) copy(scenario);
  }
  if (c.fault_option->count() > 0) scenario.faults = c.flags.faults;
  return herdguard::cli::run_simulate(scenario);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"herdguard: protects databases from cache stampedes (thundering herds)"};
  app.require_subcommand(1);
  herdguard::cli::DemoOptions demo;
  CLI::App* demo_cmd = add_demo_command(app, demo);
  SimulateCommand simulate;
  add_simulate_command(app, simulate);
  CLI11_PARSE(app, argc, argv);
  if (demo_cmd->parsed()) return herdguard::cli::run_demo(demo);
  if (simulate.app->parsed()) return run_simulate_command(simulate);
  return 0;
}
