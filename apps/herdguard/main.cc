// herdguard: the command-line tool. `demo` shows a cache stampede and its cure
// on embedded defaults (no servers needed).
#include <CLI/CLI.hpp>

#include "demo.h"

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
  demo_cmd->add_option("--db-latency-ms", demo.db_latency_ms,
                       "Time each database query takes, standing in for a loaded database")
      ->check(CLI::Range(0, 60000))
      ->capture_default_str();
  demo_cmd->add_option("--db-connections", demo.db_connections,
                       "Database connections (concurrent queries the database serves)")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  demo_cmd->add_option("--timeout-ms", demo.timeout_ms,
                       "Each request's deadline; a request still waiting then is an error")
      ->check(CLI::Range(1, 600000))
      ->capture_default_str();
  demo_cmd->add_flag("--json", demo.json, "Print the report as JSON instead of a table");

  CLI11_PARSE(app, argc, argv);
  if (demo_cmd->parsed()) return herdguard::cli::run_demo(demo);
  return 0;
}
