#include "simulate.h"

#include <fmt/format.h>
#include <herdguard/herdguard.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <latch>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>
#include <vector>

#include "database.h"
#include "faulty_repository.h"
#include "fd_io.h"
#include "latency_stats.h"
#include "report.h"
#include "saturating_database.h"
#include "scenario_run.h"
#include "temp_dir.h"
#include "worker_protection.h"

namespace herdguard::cli {
namespace {

using SteadyClock = std::chrono::steady_clock;

std::string expected_value(const std::string& key) { return "value-of-" + key; }

// What one worker process saw, sent to the parent as one JSON line.
struct WorkerReport {
  std::uint64_t db_queries = 0;
  int errors = 0;
  int wrong_values = 0;
  std::vector<std::int64_t> latencies_ns;
  std::string first_error;
  nlohmann::json protection;  // a few ProtectionMetrics fields
};

// Opens up to `callers` pooled connections by running that many PINGs at
// once (errors are ignored: a Redis that is down is part of some scenarios).
void warm_redis_connections(RedisClient& client, int callers) {
  const int k = std::clamp(callers, 1, static_cast<int>(client.options().pool_size));
  std::latch together(k);
  std::vector<std::thread> pings;
  for (int i = 0; i < k; ++i) {
    pings.emplace_back([&] {
      together.arrive_and_wait();
      (void)client.command({"PING"});
    });
  }
  for (auto& t : pings) t.join();
}

// A round's pipes, as a worker process sees them (write ends it writes, read
// ends it reads).
struct WorkerPipes {
  int ready = -1;     // "r" once armed, "x" when set-up failed
  int go = -1;        // EOF releases every worker at once
  int measured = -1;  // "m" once every caller of this worker has its latency
  int done = -1;      // EOF once every worker has measured (or the wait gave up)
  int result = -1;    // the JSON report
};

// How long the parent waits for every worker to measure before it lets them
// report anyway (a worker that crashed never says "m").
constexpr int kMeasureWaitMs = 60'000;

// The body of a worker process. Never returns.
[[noreturn]] void run_worker(const Scenario& o, int index, const std::string& db_path,
                             const std::string& prefix,
                             const std::shared_ptr<SharedDbLoad>& db_load, WorkerPipes pipes) {
  const int ready_fd = pipes.ready;
  const int go_fd = pipes.go;
  const int result_fd = pipes.result;
  WorkerReport report;
  // Herd mode has no faults: nothing connects to the refusing socket.
  auto setup =
      build_worker_protection(o, index, db_path, o.redis, o.l3, std::string(), prefix, db_load);
  if (!setup) {
    nlohmann::json j = {{"setup_error", setup.error().to_string()}};
    (void)write_all(ready_fd, "x");
    (void)write_all(result_fd, j.dump());
    ::_exit(2);
  }
  WorkerProtection& w = *setup;
  const std::string expected = expected_value(o.key);
  const int n = o.concurrency;
  // A herd hits processes that have been running: their Redis connections
  // are open. Open them before the round (as many as callers, up to the
  // pool), so that the latencies measure the herd, not connection set-up.
  if (w.fleet) warm_redis_connections(*w.fleet->client, n);
  std::vector<std::int64_t> latencies(n, 0);
  std::vector<char> outcome(n, 0);  // 0 ok, 1 error, 2 wrong value
  std::vector<std::string> errors(n);
  std::latch armed(n + 1);
  std::latch release(1);
  std::vector<std::thread> threads;
  threads.reserve(n);
  for (int i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      armed.count_down();
      release.wait();
      const auto begin = SteadyClock::now();
      Result<std::string> r = w.request(o.key);
      latencies[i] = (SteadyClock::now() - begin).count();
      if (!r) {
        outcome[i] = 1;
        errors[i] = r.error().to_string();
      } else if (*r != expected) {
        outcome[i] = 2;
      }
    });
  }
  armed.arrive_and_wait();
  (void)write_all(ready_fd, "r");
  char go;
  while (::read(go_fd, &go, 1) < 0 && errno == EINTR) {
  }  // EOF: the parent released every worker at once
  release.count_down();
  for (auto& t : threads) t.join();
  // Stay quiet until every worker of the round has measured: in a fleet the
  // processes go on running after a herd, and a worker that built its
  // report and exited here (process teardown costs a few hundred us of CPU)
  // would delay the wake-up of the waiters still measuring, on a small
  // machine, which no real fleet's waiter pays.
  (void)write_all(pipes.measured, "m");
  char done;
  while (::read(pipes.done, &done, 1) < 0 && errno == EINTR) {
  }

  report.db_queries = w.db->calls();
  for (int i = 0; i < n; ++i) {
    if (outcome[i] == 1) {
      ++report.errors;
      if (report.first_error.empty()) report.first_error = errors[i];
    }
    if (outcome[i] == 2) ++report.wrong_values;
  }
  nlohmann::json protection = nlohmann::json::object();
  if (w.protector) {
    const ProtectionMetrics m = w.protector->metrics();
    protection = {{"single_flight_hits", m.single_flight_hits},
                  {"l2_hits", m.l2_hits},
                  {"redis_errors", m.redis_errors},
                  {"fleet_lock_acquisitions", m.fleet_lock_acquisitions},
                  {"fleet_lock_contentions", m.fleet_lock_contentions},
                  {"fleet_waited_loads", m.fleet_waited_loads},
                  {"fleet_degraded_loads", m.fleet_degraded_loads},
                  {"db_shed", m.db_shed}};
  }
  nlohmann::json j = {{"db_queries", report.db_queries},     {"errors", report.errors},
                      {"wrong_values", report.wrong_values}, {"first_error", report.first_error},
                      {"latencies_ns", latencies},           {"protection", protection}};
  const bool written = write_all(result_fd, j.dump());
  ::_exit(written ? 0 : 3);
}

struct Child {
  pid_t pid = -1;
  int result_fd = -1;
};

struct RoundResult {
  std::uint64_t db_queries = 0;
  int errors = 0;
  int wrong = 0;
  int failed_workers = 0;
  std::string first_error;
  std::vector<std::chrono::nanoseconds> latencies;
  nlohmann::json workers = nlohmann::json::array();
};

// Reads one "m" from each of `armed` workers, or gives up after
// kMeasureWaitMs without one (a crashed worker) or at EOF.
void wait_until_measured(int measured_fd, std::size_t armed) {
  for (std::size_t seen = 0; seen < armed;) {
    pollfd fd{measured_fd, POLLIN, 0};
    const int ready = ::poll(&fd, 1, kMeasureWaitMs);
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) return;
    char c;
    const ssize_t n = ::read(measured_fd, &c, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    ++seen;
  }
}

// One herd: forks the workers, releases them at once, collects their reports.
RoundResult run_round(const Scenario& o, const std::string& db_path,
                      const std::shared_ptr<SharedDbLoad>& db_load) {
  RoundResult result;
  // A fresh prefix per run: the hot key is absent from Redis (as after its
  // expiry), and runs never see each other's values or locks.
  const std::string prefix = fmt::format("herdguard-simulate:{}-{}:", ::getpid(),
                                         SteadyClock::now().time_since_epoch().count());

  int ready_pipe[2];
  int go_pipe[2];
  int measured_pipe[2];
  int done_pipe[2];
  if (::pipe(ready_pipe) != 0 || ::pipe(go_pipe) != 0 || ::pipe(measured_pipe) != 0 ||
      ::pipe(done_pipe) != 0) {
    result.failed_workers = o.processes;
    result.first_error = "pipe() failed";
    return result;
  }
  std::vector<Child> children;
  for (int i = 0; i < o.processes; ++i) {
    int result_pipe[2];
    if (::pipe(result_pipe) != 0) break;
    pid_t pid = ::fork();
    if (pid == 0) {
      ::close(ready_pipe[0]);
      ::close(go_pipe[1]);
      ::close(measured_pipe[0]);
      ::close(done_pipe[1]);
      ::close(result_pipe[0]);
      for (const Child& c : children) ::close(c.result_fd);
      run_worker(o, i, db_path, prefix, db_load,
                 {.ready = ready_pipe[1],
                  .go = go_pipe[0],
                  .measured = measured_pipe[1],
                  .done = done_pipe[0],
                  .result = result_pipe[1]});
    }
    ::close(result_pipe[1]);
    if (pid < 0) {
      ::close(result_pipe[0]);
      break;
    }
    children.push_back({pid, result_pipe[0]});
  }
  ::close(ready_pipe[1]);
  ::close(go_pipe[0]);
  ::close(measured_pipe[1]);
  ::close(done_pipe[0]);
  if (static_cast<int>(children.size()) != o.processes) {
    fmt::print(stderr, "herdguard simulate: fork() failed after {} workers\n", children.size());
    result.failed_workers += o.processes - static_cast<int>(children.size());
    if (result.first_error.empty()) result.first_error = "fork() failed";
  }
  // Every worker has armed its threads (or failed) before any is released.
  std::size_t armed = 0;
  for (std::size_t i = 0; i < children.size(); ++i) {
    char c;
    ssize_t n;
    while ((n = ::read(ready_pipe[0], &c, 1)) < 0 && errno == EINTR) {
    }
    if (n <= 0) break;
    if (c == 'r') ++armed;
  }
  ::close(go_pipe[1]);  // EOF wakes all workers at once
  ::close(ready_pipe[0]);
  wait_until_measured(measured_pipe[0], armed);
  ::close(measured_pipe[0]);
  ::close(done_pipe[1]);  // EOF: the workers report and exit

  for (const Child& c : children) {
    const std::string out = read_all(c.result_fd);
    ::close(c.result_fd);
    int status = 0;
    while (::waitpid(c.pid, &status, 0) < 0 && errno == EINTR) {
    }
    auto j = nlohmann::json::parse(out, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.contains("db_queries")) {
      ++result.failed_workers;
      if (result.first_error.empty()) {
        result.first_error = j.is_object() && j.contains("setup_error")
                                 ? j["setup_error"].get<std::string>()
                                 : "a worker exited without a report";
      }
      continue;
    }
    result.db_queries += j["db_queries"].get<std::uint64_t>();
    result.errors += j["errors"].get<int>();
    result.wrong += j["wrong_values"].get<int>();
    if (result.first_error.empty()) result.first_error = j["first_error"].get<std::string>();
    for (auto ns : j["latencies_ns"]) result.latencies.emplace_back(ns.get<std::int64_t>());
    result.workers.push_back(j["protection"]);
  }
  return result;
}

}  // namespace

int run_herd(const Scenario& o) {
  TempDir dir("herdguard-simulate");
  std::string db_path = o.db;
  if (db_path.empty()) {
    if (dir.path().empty()) {
      fmt::print(stderr, "herdguard simulate: cannot create a temporary folder\n");
      return 1;
    }
    db_path = (dir.path() / "products.db").string();
  }
  // Seed the hot key; the workers open their own connections.
  if (auto seeded = seed_database(db_path, 0, o.key); !seeded) {
    fmt::print(stderr, "herdguard simulate: --db: {}\n", seeded.error().to_string());
    return 1;
  }
  // The saturating server's counters, mapped before the workers fork.
  std::shared_ptr<SharedDbLoad> db_load;
  if (o.db_capacity > 0) {
    if (dir.path().empty()) {
      fmt::print(stderr, "herdguard simulate: cannot create a temporary folder\n");
      return 1;
    }
    auto created = SharedDbLoad::create((dir.path() / "db-load").string());
    if (!created) {
      fmt::print(stderr, "herdguard simulate: {}\n", created.error().to_string());
      return 1;
    }
    db_load = std::move(*created);
  }
  std::uint64_t db_queries = 0;
  int errors = 0;
  int wrong = 0;
  int failed_workers = 0;
  std::string first_error;
  std::vector<std::chrono::nanoseconds> latencies;
  nlohmann::json workers = nlohmann::json::array();
  for (int round = 0; round < o.rounds; ++round) {
    RoundResult r = run_round(o, db_path, db_load);
    db_queries += r.db_queries;
    errors += r.errors;
    wrong += r.wrong;
    failed_workers += r.failed_workers;
    if (first_error.empty()) first_error = r.first_error;
    latencies.insert(latencies.end(), r.latencies.begin(), r.latencies.end());
    for (auto& w : r.workers) workers.push_back(std::move(w));
  }
  const int requests = o.rounds * o.processes * o.concurrency;
  // Requests of workers that failed count as errors: nobody answered them.
  errors += failed_workers * o.concurrency;
  const LatencySummary latency = summarize(std::move(latencies));
  std::uint64_t db_shed = 0;
  for (const auto& w : workers) db_shed += w.value("db_shed", std::uint64_t{0});
  const std::int64_t db_peak = db_load ? db_load->peak() : 0;

  if (o.json) {
    nlohmann::json report = {
        {"processes", o.processes},
        {"concurrency", o.concurrency},
        {"rounds", o.rounds},
        {"requests", requests},
        {"protect", protection_name(o.protect)},
        {"redis", !o.redis.empty()},
        {"db_latency_ms", o.db_latency_ms},
        {"db_queries", db_queries},
        {"errors", errors},
        {"wrong_values", wrong},
        {"failed_workers", failed_workers},
        {"first_error", first_error},
        {"db_limit", o.db_limit},
        {"db_shed", db_shed},
        {"db_capacity", o.db_capacity},
        {"db_peak", db_peak},
        {"latency_ms", {{"p50", latency.p50_ms}, {"p99", latency.p99_ms}, {"max", latency.max_ms}}},
        {"workers", workers}};
    fmt::print("{}\n", report.dump());
  } else {
    fmt::print("herdguard simulate: {} processes x {} concurrent requests for one expired key\n",
               o.processes, o.concurrency);
    fmt::print("protection: {}; cache: {}; database: SQLite, {} ms per query\n\n",
               protection_name(o.protect), o.redis.empty() ? "memory (per process)" : "Redis",
               o.db_latency_ms);
    fmt::print("{:>10} {:>10} {:>8} {:>8} {:>10} {:>10} {:>10}\n", "requests", "db queries",
               "errors", "wrong", "p50 ms", "p99 ms", "max ms");
    fmt::print("{:>10} {:>10} {:>8} {:>8} {:>10.1f} {:>10.1f} {:>10.1f}\n\n", requests, db_queries,
               errors, wrong, latency.p50_ms, latency.p99_ms, latency.max_ms);
    fmt::print("The database saw {} quer{} for {} requests from {} processes{}.\n", db_queries,
               db_queries == 1 ? "y" : "ies", requests, o.processes,
               errors ? fmt::format("; {} requests failed (first: {})", errors, first_error) : "");
    if (o.db_capacity > 0 || db_shed > 0) {
      fmt::print("The concurrency limit ({}) shed {} loads{}.\n", o.db_limit, db_shed,
                 o.db_capacity > 0 ? fmt::format("; the database ran at most {} queries at once "
                                                 "(capacity {})",
                                                 db_peak, o.db_capacity)
                                   : "");
    }
  }
  return failed_workers == o.rounds * o.processes ? 1 : 0;
}

int run_simulate(const Scenario& given) {
  Scenario scenario = given;
  if (scenario.protect == Protection::kUnset)
    scenario.protect = scenario.redis.empty() ? Protection::kLocal : Protection::kFleet;
  if (auto valid = scenario.validate(); !valid) {
    fmt::print(stderr, "herdguard simulate: {}\n", valid.error().message);
    return 1;
  }
  if (!scenario.redis.empty()) {
    if (auto url = RedisUrl::parse(scenario.redis); !url) {
      fmt::print(stderr, "herdguard simulate: --redis: {}\n", url.error().message);
      return 1;
    }
  }
  if (scenario.herd_mode()) return run_herd(scenario);

  TempDir dir("herdguard-simulate");
  std::string db = scenario.db;
  if (db.empty()) {
    if (dir.path().empty()) {
      fmt::print(stderr, "herdguard simulate: cannot create a temporary folder\n");
      return 1;
    }
    db = (dir.path() / "products.db").string();
  }
  // Millions of keys take seconds to seed: say so on a terminal.
  const bool show_seeding = scenario.progress && scenario.keys > kSeedChunk && ::isatty(2) == 1;
  auto seeding = [&](int done, int total) {
    if (show_seeding) fmt::print(stderr, "\rseeding the database: {}/{} keys", done, total);
  };
  auto seeded = seed_database(db, scenario.keys, scenario.key, seeding);
  if (show_seeding) fmt::print(stderr, "\n");
  if (!seeded) {
    fmt::print(stderr, "herdguard simulate: --db: {}\n", seeded.error().to_string());
    return 1;
  }
  std::vector<Protection> modes;
  if (scenario.compare && scenario.protect != Protection::kNone) modes.push_back(Protection::kNone);
  modes.push_back(scenario.protect);
  std::vector<RunReport> runs;
  for (const Protection mode : modes) {
    Scenario run = scenario;
    run.protect = mode;
    auto report = run_scenario(run, db);
    if (!report) {
      fmt::print(stderr, "herdguard simulate: {}\n", report.error().to_string());
      return 1;
    }
    runs.push_back(std::move(*report));
  }
  if (!scenario.svg.empty()) {
    std::FILE* f = std::fopen(scenario.svg.c_str(), "w");
    const std::string svg = report_svg(scenario, runs);
    if (f == nullptr || std::fwrite(svg.data(), 1, svg.size(), f) != svg.size()) {
      fmt::print(stderr, "herdguard simulate: cannot write --svg {}\n", scenario.svg);
      if (f) std::fclose(f);
      return 1;
    }
    std::fclose(f);
  }
  if (scenario.json) {
    fmt::print("{}\n", report_json(scenario, runs).dump());
  } else {
    fmt::print("{}", report_table(scenario, runs));
  }
  const bool all_failed = std::all_of(runs.begin(), runs.end(), [&](const RunReport& r) {
    return r.failed_workers == scenario.processes;
  });
  return all_failed ? 1 : 0;
}

}  // namespace herdguard::cli
