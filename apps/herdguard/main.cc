// herdguard: the command-line tool. `demo` shows a cache stampede and its cure
// on embedded defaults (no servers needed); `simulate` reproduces one across
// several processes against real servers.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <functional>
#include <utility>
#include <vector>

#include "demo.h"
#include "simulate.h"

int main(int argc, char** argv) {
  CLI::App app{"herdguard: protects databases from cache stampedes (thundering herds)"};
  app.require_subcommand(1);

  herdguard::cli::DemoOptions demo;
  CLI::App* demo_cmd = app.add_subcommand(
      "demo",
      "Release a herd of concurrent requests on one expired hot key, first with plain "
      "cache-aside, then through herdguard, against an embedded SQLite database; print what "
      "the database saw.");
  demo_cmd->add_option("--requests", demo.requests, "Concurrent requests released at once")
      ->check(CLI::Range(1, 20000))
      ->capture_default_str();
  demo_cmd
      ->add_option("--db-latency-ms", demo.db_latency_ms,
                   "Time each database query takes, standing in for a loaded database")
      ->check(CLI::Range(0, 60000))
      ->capture_default_str();
  demo_cmd
      ->add_option("--db-connections", demo.db_connections,
                   "Database connections (concurrent queries the database serves)")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  demo_cmd
      ->add_option("--timeout-ms", demo.timeout_ms,
                   "Each request's deadline; a request still waiting then is an error")
      ->check(CLI::Range(1, 600000))
      ->capture_default_str();
  demo_cmd->add_flag("--json", demo.json, "Print the report as JSON instead of a table");
  demo_cmd->add_flag("--prometheus", demo.prometheus,
                     "Print the protected run's metrics in the Prometheus text format");
  demo_cmd->add_option("--redis", demo.redis_url,
                       "Use Redis as L2 cache and fleet lock in the protected run: "
                       "redis://[user:password@]host:port[/db] or unix:///path/redis.sock[?db=N]");

  // simulate: flags land in `sim`; each flag also records how to copy its
  // value onto a scenario loaded from --scenario FILE, so flags override it.
  herdguard::cli::Scenario sim;
  std::vector<std::pair<CLI::Option*, std::function<void(herdguard::cli::Scenario&)>>> overrides;
  std::string scenario_file;
  std::vector<std::string> fault_texts;
  CLI::App* sim_cmd = app.add_subcommand(
      "simulate",
      "Reproduce a stampede across worker processes against a database (SQLite file or "
      "PostgreSQL) and optionally Redis. Without --duration: one herd on one expired hot key. "
      "With --duration: a timed scenario with Zipf keys, faults, a per-second timeline.");
  auto flag = [&](CLI::Option* o, auto member) {
    overrides.emplace_back(
        o, [member, &sim](herdguard::cli::Scenario& dst) { dst.*member = sim.*member; });
    return o;
  };
  using S = herdguard::cli::Scenario;
  flag(sim_cmd->add_option("--processes", sim.processes, "Worker processes (pods)"), &S::processes)
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  flag(sim_cmd->add_option("--concurrency", sim.concurrency,
                           "Concurrent requests per process (herd size; in a timed scenario, "
                           "closed-loop threads, or the in-flight cap with --rate)"),
       &S::concurrency)
      ->check(CLI::Range(1, 10000))
      ->capture_default_str();
  flag(sim_cmd->add_option("--rate", sim.rate,
                           "Open loop: requests per second across all processes (0: closed loop)"),
       &S::rate)
      ->check(CLI::Range(0.0, 1e6));
  flag(sim_cmd->add_option("--duration", sim.duration_s, "Seconds to run a timed scenario"),
       &S::duration_s)
      ->check(CLI::Range(0.0, 86400.0));
  flag(sim_cmd->add_option("--keys", sim.keys, "Distinct keys in a timed scenario"), &S::keys)
      ->check(CLI::Range(1, 10000000))
      ->capture_default_str();
  flag(sim_cmd->add_option("--zipf", sim.zipf, "Zipf exponent of key popularity (0: uniform)"),
       &S::zipf)
      ->check(CLI::Range(0.0, 10.0))
      ->capture_default_str();
  flag(sim_cmd->add_option("--ttl-ms", sim.ttl_ms, "Cache TTL of a loaded value"), &S::ttl_ms)
      ->check(CLI::Range(1, 86400000))
      ->capture_default_str();
  flag(sim_cmd->add_option("--jitter", sim.jitter, "TTL jitter: each TTL is scaled by [1-j, 1+j]"),
       &S::jitter)
      ->check(CLI::Range(0.0, 0.99))
      ->capture_default_str();
  flag(sim_cmd->add_option("--protect", sim.protect,
                           "none: plain cache-aside; local: in-process protection; fleet: also the "
                           "Redis lock; full: fleet + stale-while-revalidate + fail-safe "
                           "(default: fleet with --redis, else local)"),
       &S::protect)
      ->check(CLI::IsMember({"none", "local", "fleet", "full"}));
  flag(sim_cmd->add_flag(
           "--compare", sim.compare,
           "Run the scenario with no protection first, then with --protect; report both"),
       &S::compare);
  flag(sim_cmd->add_option("--redis", sim.redis,
                           "Redis URL for the shared cache and the lock (without it, each process "
                           "caches in memory)"),
       &S::redis);
  flag(sim_cmd->add_option("--db", sim.db,
                           "SQLite file or postgresql://user@host/db (default: a temporary SQLite "
                           "file, seeded)"),
       &S::db);
  flag(sim_cmd->add_option("--db-latency-ms", sim.db_latency_ms,
                           "Extra time each database query takes"),
       &S::db_latency_ms)
      ->check(CLI::Range(0, 60000))
      ->capture_default_str();
  flag(sim_cmd->add_option("--db-connections", sim.db_connections,
                           "Database connections per process"),
       &S::db_connections)
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  flag(sim_cmd->add_option("--db-capacity", sim.db_capacity,
                           "Model the database as a server that runs N queries at full speed: "
                           "with k > N in flight across all processes, each takes "
                           "db-latency-ms x k / N (0: no limit, each takes db-latency-ms)"),
       &S::db_capacity)
      ->check(CLI::Range(0, 100000))
      ->capture_default_str();
  flag(sim_cmd->add_option("--db-limit", sim.db_limit,
                           "The protection's database concurrency limit per process: adaptive, "
                           "off (the library default), or fixed:N"),
       &S::db_limit)
      ->capture_default_str();
  flag(sim_cmd->add_option("--ready-channels", sim.ready_channels,
                           "Where fleet waiters hear that a load is done: auto (per-key on a "
                           "Redis Cluster, else shared), shared (one channel), per-key (Redis 7 "
                           "sharded pub/sub)"),
       &S::ready_channels)
      ->capture_default_str();
  flag(sim_cmd->add_option("--early-refresh", sim.early_refresh,
                           "Refresh hot entries before they expire: none (the library "
                           "default), xfetch, xfetch:BETA, or eager:FRACTION (of the TTL)"),
       &S::early_refresh)
      ->capture_default_str();
  flag(sim_cmd->add_option("--viral", sim.viral,
                           "KEY@SECOND: from that second on, KEY receives 5% of all requests "
                           "(e.g. key:9999@5, the least popular of 10,000 keys); the report's "
                           "hot_keys say when each process detected it"),
       &S::viral);
  flag(sim_cmd->add_option("--adaptive-ttl", sim.adaptive_ttl,
                           "MIN_MS-MAX_MS: each load's TTL doubles while the key's value is "
                           "unchanged and halves when it changes, within that range (off "
                           "without it)"),
       &S::adaptive_ttl);
  flag(sim_cmd->add_option("--clients", sim.clients,
                           "N clients fleet-wide, each sending --client-rate requests/s spread "
                           "over the processes (open loop; replaces --rate)"),
       &S::clients)
      ->check(CLI::Range(0, 100000));
  flag(sim_cmd->add_option("--client-rate", sim.client_rate, "Requests/s each client offers"),
       &S::client_rate)
      ->check(CLI::Range(0.0, 1e6));
  flag(sim_cmd->add_option("--rate-limit", sim.rate_limit,
                           "Limit each client to R requests/s (fleet-wide through --redis, per "
                           "process without); over the limit: the L1 copy or rate_limited"),
       &S::rate_limit)
      ->check(CLI::Range(0.0, 1e9));
  flag(sim_cmd->add_option("--rate-limit-burst", sim.rate_limit_burst,
                           "Requests a client may send at once after being idle"),
       &S::rate_limit_burst)
      ->check(CLI::Range(1.0, 1e9))
      ->capture_default_str();
  flag(sim_cmd->add_option("--get-many", sim.get_many,
                           "K: each request fetches K keys at once (Protector::get_many; the "
                           "misses are loaded in one batch query)"),
       &S::get_many)
      ->check(CLI::Range(1, 10000))
      ->capture_default_str();
  flag(sim_cmd->add_option("--invalidate-tag-rate", sim.invalidate_tag_rate,
                           "R: tag invalidations per second across the processes "
                           "(invalidate_tag of a random group; keys are tagged in groups of 100)"),
       &S::invalidate_tag_rate)
      ->check(CLI::Range(0.0, 1e6));
  flag(sim_cmd->add_option("--l3", sim.l3,
                           "memcached://HOST:PORT or memcached:///SOCKET: an L3 tier behind "
                           "Redis (needs --redis)"),
       &S::l3);
  flag(sim_cmd->add_option("--timeout-ms", sim.timeout_ms, "Each request's deadline"),
       &S::timeout_ms)
      ->check(CLI::Range(1, 600000))
      ->capture_default_str();
  flag(sim_cmd->add_option("--lease-ms", sim.lease_ms, "Lease of the fleet lock"), &S::lease_ms)
      ->check(CLI::Range(10, 600000))
      ->capture_default_str();
  flag(sim_cmd->add_flag("--notify,!--no-notify", sim.notify,
                         "Fleet waiters wait for a pub/sub notification (--no-notify: they poll)"),
       &S::notify);
  auto* fault_opt = sim_cmd->add_option(
      "--fault", fault_texts,
      "A fault on the timeline (repeatable): db-slow:START-END:MS, db-down:START-END, "
      "redis-down:START-END, l3-down:START-END (seconds from the start)");
  sim_cmd
      ->add_option("--scenario", scenario_file,
                   "Read the scenario from a TOML file (keys as the flags, e.g. duration = 30, "
                   "faults = [\"db-down:10-20\"]); flags given too override it")
      ->check(CLI::ExistingFile);
  flag(sim_cmd->add_option("--svg", sim.svg,
                           "Write a chart of database queries/s and p99 latency over time"),
       &S::svg);
  flag(sim_cmd->add_option("--key", sim.key, "Herd mode: the hot key"), &S::key)
      ->capture_default_str();
  flag(sim_cmd->add_option(
           "--rounds", sim.rounds,
           "Herd mode: herds to run one after the other; the report covers them all"),
       &S::rounds)
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  flag(sim_cmd->add_flag("--progress,!--no-progress", sim.progress,
                         "A progress line on the terminal while a timed scenario runs"),
       &S::progress);
  flag(sim_cmd->add_flag("--json", sim.json, "Print the report as JSON instead of a table"),
       &S::json);
  flag(sim_cmd->add_option("--metrics-port", sim.metrics_port,
                           "Worker i serves Prometheus /metrics on "
                           "127.0.0.1:PORT+i while it runs"),
       &S::metrics_port)
      ->check(CLI::Range(0, 65535));

  CLI11_PARSE(app, argc, argv);
  if (demo_cmd->parsed()) return herdguard::cli::run_demo(demo);
  if (sim_cmd->parsed()) {
    for (const auto& text : fault_texts) {
      auto fault = herdguard::cli::parse_fault(text);
      if (!fault) {
        fmt::print(stderr, "herdguard simulate: --fault: {}\n", fault.error().message);
        return 1;
      }
      sim.faults.push_back(*fault);
    }
    if (scenario_file.empty()) return herdguard::cli::run_simulate(sim);
    herdguard::cli::Scenario scenario;
    if (auto loaded = herdguard::cli::load_scenario_file(scenario_file, scenario); !loaded) {
      fmt::print(stderr, "herdguard simulate: --scenario: {}\n", loaded.error().message);
      return 1;
    }
    for (const auto& [option, copy] : overrides) {
      if (option->count() > 0) copy(scenario);
    }
    if (fault_opt->count() > 0) scenario.faults = sim.faults;
    return herdguard::cli::run_simulate(scenario);
  }
  return 0;
}
