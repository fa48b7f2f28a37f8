// herdguard: the command-line tool. `demo` shows a cache stampede and its cure
// on embedded defaults (no servers needed); `simulate` reproduces one across
// several processes against real servers.
#include <CLI/CLI.hpp>

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
  demo_cmd->add_option("--redis", demo.redis_url,
                       "Use Redis as L2 cache and fleet lock in the protected run: "
                       "redis://[user:password@]host:port[/db] or unix:///path/redis.sock[?db=N]");

  herdguard::cli::SimulateOptions sim;
  CLI::App* sim_cmd = app.add_subcommand(
      "simulate",
      "Fork worker processes that each release concurrent requests on one expired hot key at "
      "the same moment, against a SQLite database file they share and (optionally) Redis; "
      "report what the database saw.");
  sim_cmd->add_option("--processes", sim.processes, "Worker processes (pods)")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  sim_cmd->add_option("--concurrency", sim.concurrency, "Concurrent requests per process")
      ->check(CLI::Range(1, 10000))
      ->capture_default_str();
  sim_cmd
      ->add_option("--protect", sim.protect,
                   "none: plain cache-aside; local: in-process protection only; fleet: also "
                   "the Redis lock (needs --redis)")
      ->check(CLI::IsMember({"none", "local", "fleet"}))
      ->capture_default_str();
  sim_cmd->add_option("--redis", sim.redis_url,
                      "Redis URL for the shared cache and the lock (without it, each process "
                      "caches in memory)");
  sim_cmd->add_option("--db", sim.db,
                      "SQLite database file shared by the workers (default: a temporary one)");
  sim_cmd->add_option("--db-latency-ms", sim.db_latency_ms, "Time each database query takes")
      ->check(CLI::Range(0, 60000))
      ->capture_default_str();
  sim_cmd->add_option("--db-connections", sim.db_connections, "Database connections per process")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  sim_cmd->add_option("--timeout-ms", sim.timeout_ms, "Each request's deadline")
      ->check(CLI::Range(1, 600000))
      ->capture_default_str();
  sim_cmd->add_option("--lease-ms", sim.lease_ms, "Lease of the fleet lock")
      ->check(CLI::Range(10, 600000))
      ->capture_default_str();
  sim_cmd
      ->add_flag("--notify,!--no-notify", sim.notify,
                 "Fleet waiters wait for a pub/sub notification (--no-notify: they poll)")
      ->capture_default_str();
  sim_cmd->add_option("--key", sim.key, "The hot key")->capture_default_str();
  sim_cmd
      ->add_option("--rounds", sim.rounds,
                   "Herds to run one after the other; the report covers them all")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  sim_cmd->add_flag("--json", sim.json, "Print the report as JSON instead of a table");

  CLI11_PARSE(app, argc, argv);
  if (demo_cmd->parsed()) return herdguard::cli::run_demo(demo);
  if (sim_cmd->parsed()) return herdguard::cli::run_simulate(sim);
  return 0;
}
