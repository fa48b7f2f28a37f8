#include "demo.h"

#include <fmt/format.h>
#include <herdguard/herdguard.h>
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <latch>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "temp_dir.h"

namespace herdguard::cli {
namespace {

using Clock = std::chrono::steady_clock;
constexpr char kHotKey[] = "product:1";
constexpr int kProducts = 100;
// Short, so the demo does not wait long for the hot key to expire.
constexpr auto kTtl = std::chrono::milliseconds(200);

// Releases `requests` threads at once, each running `request`; returns each
// request's latency and counts the failed ones.
struct HerdResult {
  std::vector<std::chrono::nanoseconds> latencies;
  int errors = 0;
};

HerdResult release_herd(int requests, const std::function<bool()>& request) {
  HerdResult result;
  result.latencies.resize(requests);
  std::vector<char> ok(requests, 0);
  std::latch start(requests);
  std::vector<std::thread> threads;
  threads.reserve(requests);
  for (int i = 0; i < requests; ++i) {
    threads.emplace_back([&, i] {
      start.arrive_and_wait();
      const auto begin = Clock::now();
      ok[i] = request() ? 1 : 0;
      result.latencies[i] = Clock::now() - begin;
    });
  }
  for (auto& t : threads) t.join();
  for (char c : ok) result.errors += c ? 0 : 1;
  return result;
}

void wait_for_expiry() { std::this_thread::sleep_for(kTtl * 1.2 + std::chrono::milliseconds(50)); }

Result<ScenarioReport> run_unprotected(const DemoOptions& options, SqliteRepository& db) {
  auto cache = MemoryCache::create({}, system_clock());
  if (!cache) return std::unexpected(cache.error());
  auto fill = [&](const std::string& value) {
    const TimePoint now = system_clock()->now();
    (void)(*cache)->put(kHotKey,
                        {.value = value, .fresh_until = now + kTtl, .stale_until = now + kTtl});
  };
  auto warm = db.load(kHotKey, Deadline::after(std::chrono::seconds(5)));
  if (!warm || !*warm) return make_error(ErrorKind::kBackend, "cannot warm the hot key");
  fill(**warm);
  wait_for_expiry();

  const auto queries_before = db.queries();
  const auto timeout = std::chrono::milliseconds(options.timeout_ms);
  // Plain cache-aside: every miss goes to the database.
  HerdResult herd = release_herd(options.requests, [&] {
    auto hit = (*cache)->get(kHotKey);
    if (hit && *hit && (*hit)->is_fresh(system_clock()->now())) return true;
    auto loaded = db.load(kHotKey, Deadline::after(timeout));
    if (!loaded || !*loaded) return false;
    fill(**loaded);
    return true;
  });
  return ScenarioReport{"unprotected",
                        db.queries() - queries_before,
                        herd.errors,
                        summarize(std::move(herd.latencies)),
                        {}};
}

Result<ScenarioReport> run_protected(const DemoOptions& options,
                                     const std::shared_ptr<SqliteRepository>& db) {
  ProtectorOptions protector_options{
      .ttl = kTtl,
      .fail_safe_max_staleness = std::chrono::seconds(30),
      .request_timeout = std::chrono::milliseconds(options.timeout_ms)};
  std::optional<RedisFleet> fleet;
  if (!options.redis_url.empty()) {
    // A prefix of its own, so that runs never see each other's values.
    auto connected =
        RedisFleet::connect({.redis = {.url = options.redis_url},
                             .prefix = fmt::format("herdguard-demo:{}-{}:", getpid(),
                                                   Clock::now().time_since_epoch().count())});
    if (!connected) return std::unexpected(connected.error());
    fleet = std::move(*connected);
    fleet->apply_to(protector_options);
    if (fleet->notifier)
      (void)fleet->notifier->wait_subscribed(Deadline::after(std::chrono::seconds(2)));
  }
  auto registry = std::make_shared<MetricsRegistry>();
  protector_options.metrics_registry = registry;
  protector_options.metrics_name = "demo";
  protector_options.key_patterns = {"product:"};
  auto protector = Protector::create(std::move(protector_options), db);
  if (!protector) return std::unexpected(protector.error());
  if (auto warm = (*protector)->get(kHotKey); !warm) return std::unexpected(warm.error());
  wait_for_expiry();

  const auto queries_before = db->queries();
  HerdResult herd =
      release_herd(options.requests, [&] { return (*protector)->get(kHotKey).has_value(); });
  return ScenarioReport{fleet ? "protected+redis" : "protected", db->queries() - queries_before,
                        herd.errors, summarize(std::move(herd.latencies)), registry->render()};
}

nlohmann::json to_json(const DemoReport& report) {
  nlohmann::json scenarios = nlohmann::json::array();
  for (const auto& s : report.scenarios) {
    scenarios.push_back(
        {{"name", s.name},
         {"db_queries", s.db_queries},
         {"errors", s.errors},
         {"latency_ms",
          {{"p50", s.latency.p50_ms}, {"p99", s.latency.p99_ms}, {"max", s.latency.max_ms}}}});
  }
  return {{"requests", report.options.requests},
          {"db_latency_ms", report.options.db_latency_ms},
          {"db_connections", report.options.db_connections},
          {"timeout_ms", report.options.timeout_ms},
          {"scenarios", scenarios}};
}

void print_table(const DemoReport& report) {
  const auto& o = report.options;
  fmt::print("herdguard demo: {} concurrent requests for one expired hot key\n", o.requests);
  fmt::print("database: SQLite, {} ms per query, {} connections; request timeout {} ms\n",
             o.db_latency_ms, o.db_connections, o.timeout_ms);
  fmt::print("cache: {}\n\n", o.redis_url.empty()
                                  ? std::string("in-process memory")
                                  : "L1 memory + L2 Redis, fleet lock (" +
                                        RedisUrl::parse(o.redis_url)->redacted() + ")");
  fmt::print("{:<12} {:>10} {:>8} {:>10} {:>10} {:>10}\n", "scenario", "db queries", "errors",
             "p50 ms", "p99 ms", "max ms");
  for (const auto& s : report.scenarios) {
    fmt::print("{:<12} {:>10} {:>8} {:>10.1f} {:>10.1f} {:>10.1f}\n", s.name, s.db_queries,
               s.errors, s.latency.p50_ms, s.latency.p99_ms, s.latency.max_ms);
  }
  const auto& bare = report.scenarios[0];
  const auto& guarded = report.scenarios[1];
  fmt::print(
      "\n{}\n",
      fmt::format("Without protection the database took {} queries for one key and {} requests "
                  "failed; with herdguard it took {} and {} failed.",
                  bare.db_queries, bare.errors, guarded.db_queries, guarded.errors));
}

}  // namespace

int run_demo(const DemoOptions& options) {
  if (!options.redis_url.empty()) {
    if (auto url = RedisUrl::parse(options.redis_url); !url) {
      fmt::print(stderr, "herdguard demo: --redis: {}\n", url.error().message);
      return 1;
    }
  }
  TempDir dir("herdguard-demo");
  if (dir.path().empty()) {
    fmt::print(stderr, "herdguard demo: cannot create a temporary folder\n");
    return 1;
  }
  auto opened = SqliteRepository::open(
      {.path = (dir.path() / "products.db").string(),
       .table = "products",
       .pool_size = static_cast<std::size_t>(options.db_connections),
       .simulated_latency = std::chrono::milliseconds(options.db_latency_ms)});
  if (!opened) {
    fmt::print(stderr, "herdguard demo: {}\n", opened.error().to_string());
    return 1;
  }
  std::shared_ptr<SqliteRepository> db = std::move(*opened);
  for (int i = 1; i <= kProducts; ++i) {
    auto seeded = db->upsert(
        fmt::format("product:{}", i),
        fmt::format(R"({{"id":{},"name":"Product {}","price_cents":{}}})", i, i, 100 * i));
    if (!seeded) {
      fmt::print(stderr, "herdguard demo: seeding failed: {}\n", seeded.error().to_string());
      return 1;
    }
  }

  DemoReport report{options, {}};
  for (auto run : {+[](const DemoOptions&o, const std::shared_ptr<SqliteRepository>&d) {
                     return run_unprotected(o, *d);
                   },
                   +[](const DemoOptions&o, const std::shared_ptr<SqliteRepository>&d) {
                     return run_protected(o, d);
                   }}) {
    auto scenario = run(options, db);
    if (!scenario) {
      fmt::print(stderr, "herdguard demo: {}\n", scenario.error().to_string());
      return 1;
    }
    report.scenarios.push_back(std::move(*scenario));
  }
  if (options.prometheus) {
    fmt::print("{}", report.scenarios.back().prometheus);
  } else if (options.json) {
    fmt::print("{}\n", to_json(report).dump());
  } else {
    print_table(report);
  }
  return 0;
}

}  // namespace herdguard::cli
