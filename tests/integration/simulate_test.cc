// `herdguard simulate` scenarios end to end, against a real redis-server and
// a real PostgreSQL cluster started here, with 4 worker processes.
#include <gtest/gtest.h>
#include <herdguard/hot_keys.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sqlite3.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <pugixml.hpp>
#include <string>
#include <thread>

#include "cli_runner.h"
#include "herdguard/clock.h"
#include "loopback_port.h"
#include "memcached_server.h"
#include "postgres_server.h"
#include "redis_server.h"

namespace herdguard {
namespace {

using testing::CliRun;
using testing::MemcachedServer;
using testing::PostgresServer;
using testing::RedisServer;
using testing::run_cli;

nlohmann::json run_json(const std::string& args) {
  CliRun r = run_cli("simulate --json --no-progress " + args);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  auto j = nlohmann::json::parse(r.output, nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << r.output;
  return j;
}

class TempFile {
 public:
  explicit TempFile(const std::string& name, const std::string& content = "") {
    path_ = (std::filesystem::temp_directory_path() /
             (name + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++)))
                .string();
    if (!content.empty()) std::ofstream(path_) << content;
  }
  ~TempFile() { std::filesystem::remove(path_); }
  const std::string& path() const { return path_; }

 private:
  static inline int counter_ = 0;
  std::string path_;
};

class Simulate : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    redis_ = RedisServer::start().release();
    postgres_ = PostgresServer::start().release();
  }
  static void TearDownTestSuite() {
    delete redis_;
    delete postgres_;
  }
  std::string servers() const {
    return "--redis '" + redis_->url() + "' --db '" + postgres_->url() + "'";
  }
  static RedisServer* redis_;
  static PostgresServer* postgres_;
};
RedisServer* Simulate::redis_ = nullptr;
PostgresServer* Simulate::postgres_ = nullptr;

// The scenario of the first test: few keys, so that each expiry meets a herd.
constexpr int kKeys = 5;
constexpr int kTtlMs = 1000;
constexpr double kDuration = 3;

TEST_F(Simulate, FleetLoadsEachKeyOncePerExpiryAndNoneLoadsFarMore) {
  auto report = run_json(servers() +
                         " --compare --protect fleet --processes 4 --concurrency 8 --duration 3"
                         " --keys 5 --zipf 0 --ttl-ms 1000 --jitter 0 --db-latency-ms 50");
  ASSERT_TRUE(report.contains("runs")) << report.dump();
  ASSERT_EQ(report["runs"].size(), 2u);
  const auto& none = report["runs"][0];
  const auto& fleet = report["runs"][1];
  EXPECT_EQ(none["protect"], "none");
  EXPECT_EQ(fleet["protect"], "fleet");
  EXPECT_EQ(fleet["processes"], 4);
  EXPECT_EQ(fleet["errors"], 0) << fleet.dump();
  EXPECT_EQ(fleet["wrong_values"], 0);
  // Each key is loaded once when first asked, then once per expiry — or,
  // as these keys are hot (hot_keys.h), once per refresh ahead of expiry,
  // from 20% of the TTL before it (up to 40% when loads are slow, as they
  // are on a busy machine: MemoryCache::pinned_lead): at most
  // duration / (0.6 ttl) + 1 loads per key for the whole fleet, and never
  // two loads of one value.
  EXPECT_EQ(fleet["duplicate_loads"], 0) << fleet.dump();
  const double earliest_refresh = 1 - 2 * (1 - HotKeyOptions{}.refresh_fraction);
  const double per_key = kDuration * 1000 / (earliest_refresh * kTtlMs) + 1;
  const auto bound = static_cast<std::uint64_t>(kKeys * per_key);
  EXPECT_GE(fleet["db_queries"].get<std::uint64_t>(), static_cast<std::uint64_t>(kKeys));
  EXPECT_LE(fleet["db_queries"].get<std::uint64_t>(), bound) << fleet.dump();
  // Without protection each expiry meets a herd: several loads per key per expiry.
  EXPECT_GT(none["db_queries"].get<std::uint64_t>(), bound) << none["db_queries"];
  EXPECT_GT(none["db_queries"].get<std::uint64_t>(), 2 * fleet["db_queries"].get<std::uint64_t>())
      << none["db_queries"];
  for (const auto& run : report["runs"]) {
    ASSERT_GE(run["timeline"].size(), 3u);
    for (const auto& second : run["timeline"]) {
      for (const char* field : {"t", "requests", "db_queries", "errors", "p99"}) {
        EXPECT_TRUE(second.contains(field)) << field;
      }
    }
    for (const char* field :
         {"processes", "requests", "db_queries", "errors", "stale_served", "breaker_trips"}) {
      EXPECT_TRUE(run.contains(field)) << field;
    }
    EXPECT_LE(run["latency_ms"]["p50"].get<double>(), run["latency_ms"]["p99"].get<double>());
    EXPECT_LE(run["latency_ms"]["p99"].get<double>(), run["latency_ms"]["max"].get<double>());
  }
}

TEST_F(Simulate, DatabaseDownUnderFullProtectionServesStaleValuesWithoutErrors) {
  auto report = run_json(servers() +
                         " --protect full --processes 4 --concurrency 4 --duration 4"
                         " --keys 20 --zipf 0 --ttl-ms 300 --db-latency-ms 5"
                         " --fault db-down:1.5-3.5");
  EXPECT_EQ(report["errors"], 0) << report.dump();
  EXPECT_EQ(report["wrong_values"], 0);
  EXPECT_GT(report["breaker_trips"].get<int>(), 0) << report.dump();
  EXPECT_GT(report["stale_served"].get<int>(), 0) << report.dump();
  ASSERT_EQ(report["faults"].size(), 1u);
  EXPECT_EQ(report["faults"][0], "db-down:1.5-3.5");
}

// Errors are reported by kind, with the first message: a run's errors say why.
TEST_F(Simulate, ErrorsAreReportedByKindWithTheFirstMessage) {
  const std::string args = servers() +
                           " --protect none --processes 2 --concurrency 2 --duration 2"
                           " --keys 20 --ttl-ms 200 --db-latency-ms 1 --fault db-down:0.5-1.5";
  auto report = run_json(args);
  ASSERT_GT(report["errors"].get<std::uint64_t>(), 0u) << report.dump();
  ASSERT_TRUE(report["errors_by_kind"].is_object()) << report.dump();
  std::uint64_t sum = 0;
  for (const auto& [kind, count] : report["errors_by_kind"].items())
    sum += count.get<std::uint64_t>();
  EXPECT_EQ(sum, report["errors"].get<std::uint64_t>()) << report.dump();
  EXPECT_GT(report["errors_by_kind"].value("backend", 0u), 0u) << report.dump();
  EXPECT_NE(report["first_error"].get<std::string>().find("database"), std::string::npos)
      << report.dump();
  // The table names them too.
  CliRun table = run_cli("simulate --no-progress " + args);
  EXPECT_EQ(table.exit_code, 0) << table.output;
  EXPECT_NE(table.output.find("none errors: backend "), std::string::npos) << table.output;
}

TEST_F(Simulate, RedisDownWindowCausesNoErrorsUnderFleetProtection) {
  auto report = run_json(servers() +
                         " --protect fleet --processes 4 --concurrency 2 --duration 3"
                         " --keys 20 --ttl-ms 300 --db-latency-ms 5 --fault redis-down:1-2");
  EXPECT_EQ(report["errors"], 0) << report.dump();
  EXPECT_GT(report["redis_errors"].get<int>(), 0) << report.dump();
}

TEST_F(Simulate, SvgChartHasBothSeriesForEachRunAndTheFaultWindows) {
  TempFile svg("herdguard-chart.svg");
  run_json(servers() +
           " --compare --protect fleet --processes 4 --concurrency 2 --duration 2"
           " --keys 10 --ttl-ms 500 --db-latency-ms 5 --fault db-slow:0.5-1:20"
           " --svg '" +
           svg.path() + "'");
  pugi::xml_document doc;
  const pugi::xml_parse_result parsed = doc.load_file(svg.path().c_str());
  ASSERT_TRUE(parsed) << parsed.description();
  const pugi::xml_node root = doc.child("svg");
  ASSERT_TRUE(root);
  int db_series = 0, p99_series = 0, faults = 0;
  for (const pugi::xpath_node& n : doc.select_nodes("//polyline[@class='series']")) {
    const std::string series = n.node().attribute("data-series").value();
    db_series += series == "db_queries";
    p99_series += series == "p99";
    EXPECT_FALSE(std::string(n.node().attribute("points").value()).empty());
  }
  for (const pugi::xpath_node& n : doc.select_nodes("//rect[@class='fault']")) {
    (void)n;
    ++faults;
  }
  EXPECT_EQ(db_series, 2);  // none and fleet
  EXPECT_EQ(p99_series, 2);
  EXPECT_EQ(faults, 2);  // the window shaded in both panels
}

TEST_F(Simulate, TomlScenarioWithFlagsOverridingIt) {
  TempFile scenario("herdguard-scenario.toml",
                    "# a small scenario\n"
                    "processes = 3\n"
                    "concurrency = 2\n"
                    "duration = 1.5\n"
                    "keys = 10\n"
                    "ttl_ms = 500\n"
                    "db_latency_ms = 1\n"
                    "protect = \"local\"\n"
                    "faults = [\"db-slow:0.2-0.4:5\"]\n");
  auto report = run_json("--scenario '" + scenario.path() + "' --processes 2 --db '" +
                         postgres_->url() + "'");
  EXPECT_EQ(report["processes"], 2);      // the flag wins
  EXPECT_EQ(report["protect"], "local");  // from the file
  EXPECT_DOUBLE_EQ(report["duration_s"].get<double>(), 1.5);
  ASSERT_EQ(report["faults"].size(), 1u);
  EXPECT_EQ(report["faults"][0], "db-slow:0.2-0.4:5");
  EXPECT_EQ(report["errors"], 0);
}

TEST_F(Simulate, MalformedScenarioFilesNameTheLine) {
  TempFile syntax("herdguard-bad.toml", "processes = 2\nduration = 1\nkeys = [\n");
  CliRun r = run_cli("simulate --scenario '" + syntax.path() + "'");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find(syntax.path() + ":3"), std::string::npos) << r.output;

  TempFile unknown("herdguard-unknown.toml", "processes = 2\n\nduratoin = 5\n");
  r = run_cli("simulate --scenario '" + unknown.path() + "'");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find(unknown.path() + ":3: unknown key 'duratoin'"), std::string::npos)
      << r.output;

  TempFile wrong_type("herdguard-type.toml", "processes = \"four\"\n");
  r = run_cli("simulate --scenario '" + wrong_type.path() + "'");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find(":1: 'processes' must be an integer"), std::string::npos) << r.output;

  TempFile bad_fault("herdguard-fault.toml", "duration = 2\nfaults = [\"db-sideways:1-2\"]\n");
  r = run_cli("simulate --scenario '" + bad_fault.path() + "'");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("unknown fault 'db-sideways'"), std::string::npos) << r.output;
}

TEST_F(Simulate, MetricsPortServesEachWorkersMetricsWhileItRuns) {
  // A port pair nobody uses now (the kernel's pick for one, and the next).
  // A port pair that was free a moment ago: the workers bind port and port + 1.
  int port = 0;
  for (int attempt = 0; attempt < 20 && port == 0; ++attempt) {
    const int p = testing::free_loopback_port();
    if (p > 0 && p < 65535 && testing::free_loopback_port(p + 1) == p + 1) port = p;
  }
  ASSERT_GT(port, 0);
  CliRun run;
  std::thread simulate([&] {
    run = run_cli(
        "simulate --json --no-progress --protect local --processes 2 --concurrency 2"
        " --duration 3 --keys 10 --db-latency-ms 1 --metrics-port " +
        std::to_string(port));
  });
  std::string body;
  httplib::Client client("127.0.0.1", port + 1);  // the second worker
  const Deadline give_up = Deadline::after(std::chrono::seconds(30));
  while (!give_up.expired()) {
    auto r = client.Get("/metrics");
    if (r && r->status == 200 &&
        r->body.find("thundering_herd_db_queries_total") != std::string::npos) {
      body = r->body;
      break;
    }
    std::this_thread::sleep_for(
        std::chrono::milliseconds(50));  // polling a process that is starting
  }
  simulate.join();
  EXPECT_EQ(run.exit_code, 0) << run.output;
  EXPECT_NE(body.find("thundering_herd_db_queries_total{cache=\"worker1\"}"), std::string::npos)
      << body;
}

// A database of capacity 4 (50 ms per query up to 4 at once, slower beyond)
// under 2 processes x 32 threads asking for distinct keys (5,000, uniform,
// short TTL: nearly every request is a load), each with 300 ms to get an
// answer.
std::string saturating_load(const std::string& db) {
  return "--db '" + db +
         "' --protect local --processes 2 --concurrency 32 --duration 2 --keys 5000 --zipf 0"
         " --ttl-ms 200 --db-latency-ms 50 --timeout-ms 300 --db-capacity 4";
}

TEST_F(Simulate, FixedDbLimitKeepsTheSaturatingDatabaseWithinProcessesTimesLimit) {
  auto report = run_json(saturating_load(postgres_->url()) + " --db-limit fixed:2");
  EXPECT_EQ(report["db_limit"], "fixed:2");
  EXPECT_EQ(report["db_capacity"], 4);
  // Each process's limiter admits 2 loads at once: the database never sees more than 2 x 2.
  EXPECT_GE(report["db_peak"].get<int>(), 1) << report.dump();
  EXPECT_LE(report["db_peak"].get<int>(), 4) << report.dump();
  // 2 slots of 50 ms serve 40 loads/s per process; 32 threads that each need
  // an answer within 300 ms ask for about 100: the rest must be shed.
  EXPECT_GT(report["db_shed"].get<std::uint64_t>(), 0u) << report.dump();
  EXPECT_GT(report["goodput"].get<double>(), 0) << report.dump();
  EXPECT_EQ(report["wrong_values"], 0);
}

TEST_F(Simulate, DbLimitOffLetsTheHerdSaturateTheDatabase) {
  auto report = run_json(saturating_load(postgres_->url()) + " --db-limit off");
  EXPECT_EQ(report["db_limit"], "off");
  // 64 threads miss at once; each process's 8 connections carry them to the database.
  EXPECT_GT(report["db_peak"].get<int>(), 4) << report.dump();
  EXPECT_EQ(report["db_shed"], 0) << report.dump();  // nothing limits, nothing is shed
}

TEST_F(Simulate, BadDbLimitIsRefusedNamingTheFlag) {
  for (const char* bad : {"fast", "fixed:0", "fixed:", "fixed:2.5"}) {
    CliRun r = run_cli(std::string("simulate --duration 1 --protect local --db-limit ") + bad);
    EXPECT_NE(r.exit_code, 0) << bad;
    EXPECT_NE(r.output.find("--db-limit"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find(bad), std::string::npos) << r.output;
  }
}

// Eager refresh at half the TTL: every key is refreshed ~0.5 s after each
// load, long before it expires (a 20 ms load), so after the first herd of
// the first second no request waits for a load; and the fleet still loads
// each key once per refresh: at most duration / (TTL / 2) + 1 per key.
TEST_F(Simulate, EagerRefreshLeavesNoLoadWaitsAfterTheFirstSecond) {
  auto report = run_json(servers() +
                         " --protect fleet --processes 4 --concurrency 4 --duration 3 --keys 5"
                         " --zipf 0 --ttl-ms 1000 --jitter 0 --db-latency-ms 20"
                         " --early-refresh eager:0.5");
  EXPECT_EQ(report["early_refresh"], "eager:0.5");
  EXPECT_EQ(report["errors"], 0) << report.dump();
  EXPECT_GT(report["early_refreshes"].get<std::uint64_t>(), 0u) << report.dump();
  const auto& timeline = report["timeline"];
  ASSERT_GE(timeline.size(), 3u);
  std::uint64_t waits = 0, early = 0;
  for (const auto& second : timeline) {
    waits += second["load_waits"].get<std::uint64_t>();
    early += second["early_refreshes"].get<std::uint64_t>();
    if (second["t"].get<int>() >= 1) {
      EXPECT_EQ(second["load_waits"], 0) << second.dump();
    }
  }
  EXPECT_EQ(waits, report["load_waits"].get<std::uint64_t>());
  EXPECT_EQ(early, report["early_refreshes"].get<std::uint64_t>());
  EXPECT_GT(waits, 0u);  // the first herd on each key waited
  EXPECT_LE(report["db_queries"].get<std::uint64_t>(), 5u * (3 * 2 + 1)) << report.dump();
}

// The least popular of 1,000 keys goes viral at second 3 (5% of all
// requests from then on): every process finds it hot within a second, at a
// rate far above its previous window's, and no request for it waits for a
// load after that (it is pinned and refreshed ahead of expiry).
TEST_F(Simulate, AViralKeyIsDetectedInEveryProcessWithinASecondAndNeverWaitedOnAfter) {
  auto report = run_json(servers() +
                         " --protect fleet --processes 4 --concurrency 4 --duration 6 --keys 1000"
                         " --zipf 1.1 --ttl-ms 1000 --db-latency-ms 20 --viral key:999@3");
  EXPECT_EQ(report["viral"], "key:999@3");
  EXPECT_EQ(report["errors"], 0) << report.dump();
  const nlohmann::json* viral = nullptr;
  for (const auto& hot : report["hot_keys"]) {
    if (hot["key"] == "key:999") viral = &hot;
  }
  ASSERT_NE(viral, nullptr) << report["hot_keys"].dump();
  EXPECT_EQ((*viral)["processes"], 4) << viral->dump();
  for (const auto& seen : (*viral)["by_process"]) {
    EXPECT_GE(seen["detected_at_s"].get<double>(), 3.0) << seen.dump();
    EXPECT_LT(seen["detected_at_s"].get<double>(), 4.0) << seen.dump();
    EXPECT_GE(seen["rate"].get<double>(), 10 * seen["previous_rate"].get<double>()) << seen.dump();
    EXPECT_GE(seen["previous_rate_max"].get<double>(), seen["previous_rate"].get<double>());
    EXPECT_EQ(seen["load_waits_after_detection"], 0) << seen.dump();
  }
  // The timeline shows it hot from its second on, in every process.
  const auto& timeline = report["timeline"];
  ASSERT_GE(timeline.size(), 6u);
  for (int t = 3; t < 6; ++t) {
    bool listed = false;
    for (const auto& hot : timeline[t]["hot_keys"]) {
      if (hot["key"] == "key:999") listed = hot["processes"] == 4;
    }
    EXPECT_TRUE(listed) << timeline[t].dump();
  }
}

// The simulated database never changes a value: with an adaptive TTL every
// reload lengthens its key's TTL, none shortens it, and the fleet loads less
// often than with the fixed TTL of the same run.
TEST_F(Simulate, AdaptiveTtlLengthensTheTtlOfValuesThatNeverChange) {
  const std::string load = servers() +
                           " --protect fleet --processes 2 --concurrency 4 --duration 3 --keys 5"
                           " --zipf 0 --ttl-ms 200 --jitter 0 --db-latency-ms 5";
  auto fixed = run_json(load);
  auto adaptive = run_json(load + " --adaptive-ttl 200-3000");
  EXPECT_EQ(adaptive["adaptive_ttl"], "200-3000");
  EXPECT_EQ(adaptive["errors"], 0) << adaptive.dump();
  EXPECT_GT(adaptive["ttl_lengthened"].get<std::uint64_t>(), 0u) << adaptive.dump();
  EXPECT_EQ(adaptive["ttl_shortened"], 0) << adaptive.dump();
  EXPECT_EQ(fixed["ttl_lengthened"], 0) << fixed.dump();
  // TTLs of 200, 400, 800, 1600 ms... against 200 ms throughout (the keys
  // are hot: both refresh them at 80% of their TTL).
  EXPECT_LT(2 * adaptive["db_queries"].get<std::uint64_t>(),
            fixed["db_queries"].get<std::uint64_t>())
      << adaptive["db_queries"] << " vs " << fixed["db_queries"];
}

// Each client's admitted requests over the run, summed over the timeline.
std::vector<std::uint64_t> admitted_by_client(const nlohmann::json& report) {
  std::vector<std::uint64_t> total;
  for (const auto& second : report["timeline"]) {
    const auto& admitted = second["admitted_by_client"];
    total.resize(std::max(total.size(), admitted.size()));
    for (std::size_t c = 0; c < admitted.size(); ++c) total[c] += admitted[c].get<std::uint64_t>();
  }
  return total;
}

// 8 clients offer 100 requests/s each, spread over 4 processes; the limit
// is 20/s per client (burst 2): fleet-wide through Redis, each client is
// admitted ~20/s (81 in 4 s: the burst adds one), however many processes
// its requests reach; the rest are rate_limited, not errors.
constexpr const char* kLimitedClients =
    " --protect fleet --processes 4 --clients 8 --client-rate 100"
    " --rate-limit 20 --duration 4 --keys 100 --db-latency-ms 1";

TEST_F(Simulate, ClientsAreAdmittedAtTheirRateLimitFleetWide) {
  auto report = run_json(servers() + kLimitedClients);
  EXPECT_EQ(report["errors"], 0) << report["errors_by_kind"];
  EXPECT_EQ(report["rate_limiter_local_decisions"], 0);
  const std::vector<std::uint64_t> admitted = admitted_by_client(report);
  ASSERT_EQ(admitted.size(), 8u);
  std::uint64_t all = 0;
  for (std::uint64_t a : admitted) {
    EXPECT_GE(a, 72u) << "client admitted " << a << " of ~81";
    EXPECT_LE(a, 90u) << "client admitted " << a << " of ~81";
    all += a;
  }
  EXPECT_EQ(report["rate_limited"].get<std::uint64_t>() + all,
            report["requests"].get<std::uint64_t>());
}

// Redis down for 2 of the 4 s: no caller gets an error, and the limit then
// holds per process (each of the 4 admits up to 20/s of a client's 25/s
// share), so clients get well over the fleet-wide 81.
TEST_F(Simulate, WithRedisDownTheRateLimitHoldsPerProcessAndNoCallerFails) {
  auto report = run_json(servers() + kLimitedClients + " --fault redis-down:1-3");
  EXPECT_EQ(report["errors"], 0) << report["errors_by_kind"];
  EXPECT_GT(report["rate_limiter_local_decisions"].get<std::uint64_t>(), 0u);
  for (std::uint64_t a : admitted_by_client(report)) EXPECT_GT(a, 120u);
}

// The embedded SQLite database is seeded in one transaction (chunks of a
// recursive CTE): more keys than one chunk, into a file seeded before with
// other values, and every value read is the one the run expects.
TEST_F(Simulate, SeedingASqliteFileWritesEveryKeyAndOverwritesOldRows) {
  TempFile db("seed.db");
  const std::string run = "simulate --db '" + db.path() +
                          "' --protect local --processes 1 --concurrency 2 --duration 1 --json";
  CliRun first = run_cli(run + " --keys 1000");
  ASSERT_EQ(first.exit_code, 0) << first.output;
  {
    sqlite3* conn = nullptr;
    ASSERT_EQ(sqlite3_open(db.path().c_str(), &conn), SQLITE_OK);
    ASSERT_EQ(sqlite3_exec(conn, "UPDATE products SET value = 'stale'", nullptr, nullptr, nullptr),
              SQLITE_OK);
    sqlite3_close(conn);
  }
  auto report =
      run_json("--db '" + db.path() +
               "' --protect local --processes 1 --concurrency 2 --duration 1 --keys 300000"
               " --zipf 0.01");
  EXPECT_EQ(report["errors"], 0) << report["errors_by_kind"];
  EXPECT_EQ(report["wrong_values"], 0) << "old rows were overwritten";
  EXPECT_GT(report["requests"].get<std::uint64_t>(), 0u);
  sqlite3* conn = nullptr;
  ASSERT_EQ(sqlite3_open(db.path().c_str(), &conn), SQLITE_OK);
  sqlite3_stmt* count = nullptr;
  ASSERT_EQ(
      sqlite3_prepare_v2(conn, "SELECT count(*), sum(value = 'value-of-' || key) FROM products", -1,
                         &count, nullptr),
      SQLITE_OK);
  ASSERT_EQ(sqlite3_step(count), SQLITE_ROW);
  EXPECT_EQ(sqlite3_column_int64(count, 0), 300'001) << "300,000 keys and the hot key";
  EXPECT_EQ(sqlite3_column_int64(count, 1), 300'001) << "each with its value";
  sqlite3_finalize(count);
  sqlite3_close(conn);
}

// `herdguard simulate` alone runs on the embedded defaults: without --redis
// the protection is local (with it, fleet).
TEST_F(Simulate, WithNoFlagsItRunsOnTheEmbeddedDefaults) {
  auto report = run_json("");
  EXPECT_EQ(report["protect"], "local") << report.dump();
  EXPECT_EQ(report["errors"], 0);
  auto with_redis = run_json("--redis '" + redis_->url() + "' --processes 2 --concurrency 10");
  EXPECT_EQ(with_redis["protect"], "fleet") << with_redis.dump();
  EXPECT_EQ(with_redis["db_queries"], 1) << "one load for the fleet";
}

// --get-many: requests of 10 keys, their misses loaded in batches
// (PostgreSQL: one statement each) holding several keys on average.
TEST_F(Simulate, GetManyLoadsMissesInBatchQueries) {
  auto report = run_json(servers() +
                         " --protect fleet --processes 2 --concurrency 4 --duration 2"
                         " --keys 2000 --ttl-ms 500 --db-latency-ms 5 --get-many 10");
  EXPECT_EQ(report["errors"], 0) << report["errors_by_kind"];
  EXPECT_EQ(report["wrong_values"], 0);
  const auto batches = report["batch_queries"].get<std::uint64_t>();
  EXPECT_GT(batches, 0u);
  EXPECT_GT(report["db_queries"].get<std::uint64_t>(), batches) << "several keys per batch";
  CliRun herd = run_cli("simulate --protect local --get-many 5");
  EXPECT_NE(herd.exit_code, 0);
  EXPECT_NE(herd.output.find("--get-many"), std::string::npos) << herd.output;
}

// --invalidate-tag-rate: tag invalidations across the fleet while it serves;
// the invalidated groups are loaded again (more database queries than
// without), and no request fails or gets a wrong value.
TEST_F(Simulate, TagInvalidationsAreReportedAndCostNoErrors) {
  const std::string run = servers() +
                          " --protect fleet --processes 2 --concurrency 4 --duration 2"
                          " --keys 1000 --ttl-ms 60000 --db-latency-ms 1";
  auto quiet = run_json(run);
  auto invalidating = run_json(run + " --invalidate-tag-rate 50");
  EXPECT_EQ(invalidating["errors"], 0) << invalidating["errors_by_kind"];
  EXPECT_EQ(invalidating["wrong_values"], 0);
  const auto made = invalidating["tag_invalidations"].get<std::uint64_t>();
  EXPECT_GE(made, 80u) << "50/s for 2 s";
  EXPECT_LE(made, 100u);
  EXPECT_EQ(quiet["tag_invalidations"].get<std::uint64_t>(), 0u);
  // With a 60 s TTL the quiet run loads each key about once; the other
  // reloads what each invalidation refused.
  EXPECT_GT(invalidating["db_queries"].get<std::uint64_t>(),
            quiet["db_queries"].get<std::uint64_t>());
  CliRun none = run_cli("simulate --duration 1 --protect none --invalidate-tag-rate 5");
  EXPECT_NE(none.exit_code, 0);
  EXPECT_NE(none.output.find("--invalidate-tag-rate"), std::string::npos) << none.output;
}

// memcached as L3 (over TCP, as the flag's URL form says): its fault window,
// and then memcached killed for good mid-run, cost no request an error.
TEST_F(Simulate, MemcachedDownOrKilledMidRunCausesNoErrors) {
  auto memcached = MemcachedServer::start({.tcp = true});
  std::thread killer([&] {
    // The run is 3 s: the fault window is 0.5-1.5 s, the kill at ~2 s (the
    // report says whether the run saw errors either way).
    std::this_thread::sleep_for(std::chrono::milliseconds(2000));
    memcached->stop();
  });
  auto report = run_json(servers() + " --l3 " + memcached->url() +
                         " --protect fleet --processes 2 --concurrency 4 --duration 3"
                         " --keys 50 --ttl-ms 300 --db-latency-ms 2 --fault l3-down:0.5-1.5");
  killer.join();
  EXPECT_EQ(report["errors"], 0) << report["errors_by_kind"];
  EXPECT_EQ(report["wrong_values"], 0);
  EXPECT_GT(report["l3_errors"].get<std::uint64_t>(), 0u) << report.dump();
  EXPECT_EQ(report["l3_rejected"].get<std::uint64_t>(), 0u);
  CliRun no_redis = run_cli("simulate --duration 1 --protect local --l3 memcached://127.0.0.1:1");
  EXPECT_NE(no_redis.exit_code, 0);
  EXPECT_NE(no_redis.output.find("--l3 needs --redis"), std::string::npos) << no_redis.output;
  CliRun bad_url = run_cli("simulate --duration 1 " + servers() + " --l3 redis://x:1");
  EXPECT_NE(bad_url.exit_code, 0);
  EXPECT_NE(bad_url.output.find("--l3"), std::string::npos) << bad_url.output;
  CliRun fault_without = run_cli("simulate --duration 1 " + servers() + " --fault l3-down:0-1");
  EXPECT_NE(fault_without.exit_code, 0);
  EXPECT_NE(fault_without.output.find("needs --l3"), std::string::npos) << fault_without.output;
}

TEST_F(Simulate, BadClientAndRateLimitFlagsAreRefusedNamingThem) {
  const std::pair<const char*, const char*> cases[] = {
      {"--duration 1 --protect local --clients 5", "--client-rate"},
      {"--duration 1 --protect local --client-rate 5", "--clients"},
      {"--protect local --clients 5 --client-rate 5", "--duration"},
      {"--duration 1 --protect local --clients 5 --client-rate 5 --rate 10", "--rate"},
      {"--duration 1 --protect local --rate-limit 5", "--clients"},
      {"--duration 1 --protect none --clients 5 --client-rate 5 --rate-limit 5", "--protect"},
  };
  for (const auto& [flags, named] : cases) {
    CliRun r = run_cli(std::string("simulate ") + flags);
    EXPECT_NE(r.exit_code, 0) << flags;
    EXPECT_NE(r.output.find(named), std::string::npos) << flags << ": " << r.output;
  }
}

TEST_F(Simulate, BadAdaptiveTtlIsRefusedNamingTheFlag) {
  for (const char* bad : {"100", "0-100", "200-100", "a-b", "-5"}) {
    CliRun r = run_cli(std::string("simulate --duration 1 --protect local --adaptive-ttl ") + bad);
    EXPECT_NE(r.exit_code, 0) << bad;
    EXPECT_NE(r.output.find("--adaptive-ttl"), std::string::npos) << r.output;
  }
}

TEST_F(Simulate, BadViralIsRefusedNamingTheFlag) {
  for (const char* bad :
       {"key:5", "@3", "key:5@", "key:5@-1", "key:5000@1", "other@1", "key:5@9"}) {
    CliRun r = run_cli(std::string("simulate --duration 2 --protect local --viral ") + bad);
    EXPECT_NE(r.exit_code, 0) << bad;
    EXPECT_NE(r.output.find("--viral"), std::string::npos) << r.output;
  }
  CliRun herd = run_cli("simulate --protect local --viral key:5@0");
  EXPECT_NE(herd.exit_code, 0);
  EXPECT_NE(herd.output.find("--duration"), std::string::npos) << herd.output;
}

TEST_F(Simulate, BadEarlyRefreshIsRefusedNamingTheFlag) {
  for (const char* bad : {"soon", "xfetch:0", "xfetch:", "eager:1", "eager:-0.5", "eager"}) {
    CliRun r = run_cli(std::string("simulate --duration 1 --protect local --early-refresh ") + bad);
    EXPECT_NE(r.exit_code, 0) << bad;
    EXPECT_NE(r.output.find("--early-refresh"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find(bad), std::string::npos) << r.output;
  }
}

TEST_F(Simulate, BadFlagsAreClearErrors) {
  CliRun r = run_cli("simulate --duration 2 --fault db-down:5-1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("START < END"), std::string::npos) << r.output;
  r = run_cli("simulate --duration 2 --protect full");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("needs --redis"), std::string::npos) << r.output;
  r = run_cli("simulate --fault db-down:1-2 --protect local");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("--duration"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace herdguard
