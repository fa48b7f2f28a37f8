// A fleet of real processes against one real redis-server: `herdguard
// simulate` end to end (8 processes x 125 callers), and a lock holder killed
// with SIGKILL in the middle of its load.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cstdlib>
#include <functional>
#include <latch>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "cli_runner.h"
#include "herdguard/herdguard.h"
#include "redis_cluster.h"
#include "redis_sentinel.h"
#include "redis_server.h"

namespace herdguard {
namespace {

using namespace std::chrono_literals;
using testing::CliRun;
using testing::RedisCluster;
using testing::RedisSentinelGroup;
using testing::RedisServer;
using testing::run_cli;

nlohmann::json simulate(const std::string& redis_url, const std::string& protect, int processes,
                        int concurrency) {
  CliRun r = run_cli("simulate --json --redis '" + redis_url + "' --protect " + protect +
                     " --processes " + std::to_string(processes) + " --concurrency " +
                     std::to_string(concurrency) + " --db-latency-ms 50");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  auto report = nlohmann::json::parse(r.output, nullptr, false);
  EXPECT_FALSE(report.is_discarded()) << r.output;
  return report;
}

TEST(FleetMultiprocess, EightProcessesOneExpiredKeyOneDatabaseLoad) {
  auto server = RedisServer::start();
  auto report = simulate(server->url(), "fleet", 8, 125);
  EXPECT_EQ(report["processes"], 8);
  EXPECT_EQ(report["requests"], 1000);
  EXPECT_EQ(report["db_queries"], 1) << report.dump();
  EXPECT_EQ(report["errors"], 0) << report.dump();
  EXPECT_EQ(report["wrong_values"], 0);
  EXPECT_LE(report["latency_ms"]["p50"].get<double>(), report["latency_ms"]["max"].get<double>());
}

TEST(FleetMultiprocess, EightProcessesOneExpiredKeyOneDatabaseLoadOnARedisCluster) {
  auto cluster = RedisCluster::start();
  auto report = simulate(cluster->url(), "fleet", 8, 125);
  EXPECT_EQ(report["requests"], 1000);
  EXPECT_EQ(report["db_queries"], 1) << report.dump();
  EXPECT_EQ(report["errors"], 0) << report.dump();
  EXPECT_EQ(report["wrong_values"], 0);
}

// A timed run of 4 processes (14 s, 2,000 keys, TTL 1 s) while `kill`
// takes the primary down 4 s in: no caller error, and once the failover is
// over (the first timeline second without a Redis error) each key is loaded
// at most once per expiry across the processes again.
// HERDGUARD_FAILOVER_RUN_S and HERDGUARD_FAILOVER_KILL_AT_S change the 14 s
// and the 4 s (issue 13's figure: 30 and 10).
void expect_failover_is_survived(const std::string& redis_url, const std::function<void()>& kill) {
  auto env = [](const char* name, int fallback) {
    const char* v = std::getenv(name);
    return v && *v ? std::atoi(v) : fallback;
  };
  const int run_s = env("HERDGUARD_FAILOVER_RUN_S", 14);
  const int kill_at_s = env("HERDGUARD_FAILOVER_KILL_AT_S", 4);
  CliRun run;
  std::thread simulate([&] {
    run = run_cli("simulate --json --no-progress --redis '" + redis_url +
                  "' --protect fleet --processes 4 --concurrency 4 --keys 2000 --ttl-ms 1000 "
                  "--duration " +
                  std::to_string(run_s));
  });
  // The fault is the scenario: the primary dies kill_at_s into the run.
  std::this_thread::sleep_for(std::chrono::seconds(kill_at_s));
  kill();
  simulate.join();
  ASSERT_EQ(run.exit_code, 0) << run.output;
  auto report = nlohmann::json::parse(run.output, nullptr, false);
  ASSERT_FALSE(report.is_discarded()) << run.output;
  EXPECT_EQ(report["errors"], 0) << report.dump();
  EXPECT_EQ(report["wrong_values"], 0);
  ASSERT_GT(report["redis_errors"].get<int>(), 0) << "the kill was not noticed";
  const auto& window = report["redis_error_window_s"];
  ASSERT_TRUE(window.is_object()) << report.dump();
  EXPECT_LT(window["to"].get<int>(), run_s) << window.dump();
  EXPECT_EQ(report["duplicate_loads_outside_redis_errors"], 0) << report.dump();
  std::string seconds;
  for (const auto& s : report["timeline"]) {
    seconds += fmt::format(" {}:{}/{}/{}/{}/{}", s["t"].get<int>(), s["requests"].get<int>(),
                           s["db_queries"].get<int>(), s["redis_errors"].get<int>(),
                           s["duplicate_loads"].get<int>(), s["p99"].get<double>());
  }
  std::printf("failover window %s; per second (t:requests/db/redis errors/duplicates/p99 ms):%s\n",
              window.dump().c_str(), seconds.c_str());
}

TEST(FleetMultiprocess, AClusterPrimaryKilledDuringATimedRunCostsNoErrorsAndNoExtraLoadsAfter) {
  auto cluster = RedisCluster::start({.replicas_per_primary = 1});
  const int victim = cluster->primary_ports()[0];
  expect_failover_is_survived(cluster->url(), [&] { cluster->kill(victim); });
}

TEST(FleetMultiprocess, ASentinelPrimaryKilledDuringATimedRunCostsNoErrorsAndNoExtraLoadsAfter) {
  auto group = RedisSentinelGroup::start();
  const int victim = group->primary_port();
  expect_failover_is_survived(group->url(), [&] { group->kill(victim); });
}

TEST(FleetMultiprocess, EightProcessesOneExpiredKeyOneDatabaseLoadBehindSentinel) {
  auto group = RedisSentinelGroup::start();
  auto report = simulate(group->url(), "fleet", 8, 125);
  EXPECT_EQ(report["requests"], 1000);
  EXPECT_EQ(report["db_queries"], 1) << report.dump();
  EXPECT_EQ(report["errors"], 0) << report.dump();
}

TEST(FleetMultiprocess, LocalProtectionLoadsAtMostOncePerProcess) {
  auto server = RedisServer::start();
  auto report = simulate(server->url(), "local", 8, 125);
  EXPECT_EQ(report["requests"], 1000);
  EXPECT_GE(report["db_queries"].get<int>(), 1);
  EXPECT_LE(report["db_queries"].get<int>(), 8) << report.dump();
  EXPECT_EQ(report["errors"], 0) << report.dump();
  EXPECT_EQ(report["wrong_values"], 0);
}

TEST(FleetMultiprocess, NoProtectionSendsTheHerdToTheDatabase) {
  auto server = RedisServer::start();
  auto report = simulate(server->url(), "none", 4, 50);
  EXPECT_EQ(report["requests"], 200);
  // Every caller misses before the first load (50 ms) finishes.
  EXPECT_GT(report["db_queries"].get<int>(), 8) << report.dump();
  EXPECT_EQ(report["wrong_values"], 0);
}

TEST(FleetMultiprocess, SimulateRejectsBadArguments) {
  CliRun fleet_without_redis = run_cli("simulate --protect fleet");
  EXPECT_NE(fleet_without_redis.exit_code, 0);
  EXPECT_NE(fleet_without_redis.output.find("--redis"), std::string::npos)
      << fleet_without_redis.output;
  CliRun bad_url = run_cli("simulate --protect fleet --redis 'redis://host:notaport'");
  EXPECT_NE(bad_url.exit_code, 0);
  EXPECT_NE(bad_url.output.find("port"), std::string::npos) << bad_url.output;
  CliRun bad_mode = run_cli("simulate --protect everything");
  EXPECT_NE(bad_mode.exit_code, 0);
}

TEST(FleetMultiprocess, DemoWithRedisMakesOneDatabaseQuery) {
  auto server = RedisServer::start();
  CliRun r = run_cli("demo --json --requests 200 --redis '" + server->url() + "'");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto report = nlohmann::json::parse(r.output);
  EXPECT_EQ(report["scenarios"][1]["name"], "protected+redis");
  EXPECT_EQ(report["scenarios"][1]["db_queries"], 1);
  EXPECT_EQ(report["scenarios"][1]["errors"], 0);
}

// --- A holder killed in the middle of its load -----------------------------

bool write_byte(int fd, char c) { return ::write(fd, &c, 1) == 1; }

char read_byte(int fd) {
  char c = 0;
  while (::read(fd, &c, 1) < 0 && errno == EINTR) {
  }
  return c;
}

// Builds a fleet-protected Protector in the calling (child) process.
std::unique_ptr<Protector> child_protector(const RedisServer& server, RedisFleet& fleet,
                                           std::shared_ptr<Repository> repository,
                                           Duration load_timeout) {
  auto connected =
      RedisFleet::connect({.redis = {.url = server.url()}, .prefix = "kill:", .lease = 900ms});
  if (!connected) ::_exit(10);
  fleet = std::move(*connected);
  if (!fleet.notifier->wait_subscribed(Deadline::after(5s))) ::_exit(11);
  ProtectorOptions options{.fleet_retry_interval = 100ms};
  options.single_flight.load_timeout = load_timeout;
  fleet.apply_to(options);
  auto protector = Protector::create(std::move(options), std::move(repository));
  if (!protector) ::_exit(12);
  return std::move(*protector);
}

TEST(FleetMultiprocess, HolderKilledMidLoadIsTakenOverAfterItsLease) {
  auto server = RedisServer::start();
  int loading[2];
  ASSERT_EQ(::pipe(loading), 0);

  // The holder: takes the lock, announces it is loading, and hangs.
  const pid_t holder = ::fork();
  ASSERT_GE(holder, 0);
  if (holder == 0) {
    ::close(loading[0]);
    RedisFleet fleet;
    auto repo = std::make_shared<CallbackRepository>(
        [&](std::string_view, Deadline) -> Result<std::optional<std::string>> {
          (void)write_byte(loading[1], 'L');
          std::this_thread::sleep_for(1h);  // a hung database call; SIGKILL ends it
          return std::optional<std::string>("never");
        });
    auto protector = child_protector(*server, fleet, repo, 1h);
    (void)protector->get("hot", Deadline::after(1h));
    ::_exit(0);
  }
  ::close(loading[1]);
  ASSERT_EQ(read_byte(loading[0]), 'L');
  ::close(loading[0]);

  // Waiters in three other processes. Each reports: its database loads, then
  // per caller 'v' (value), 't' (timeout error) or 'e' (other), and whether
  // the caller returned within its deadline plus a scheduling allowance.
  constexpr int kWaiters = 3;
  constexpr int kCallers = 10;
  constexpr auto kLongDeadline = 10s;
  // Ends while the dead holder's lease still runs: it was extended every 300 ms, so
  // at least 600 ms of it remain at the kill.
  constexpr auto kShortDeadline = 100ms;
  constexpr auto kAllowance = 2s;  // generous: a loaded CI machine, not a speed goal
  std::vector<std::pair<pid_t, int>> waiters;
  int armed[2];
  ASSERT_EQ(::pipe(armed), 0);
  for (int w = 0; w < kWaiters; ++w) {
    int report[2];
    ASSERT_EQ(::pipe(report), 0);
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::close(report[0]);
      ::close(armed[0]);
      std::atomic<int> loads{0};
      auto repo = std::make_shared<CallbackRepository>(
          [&](std::string_view, Deadline) -> Result<std::optional<std::string>> {
            loads.fetch_add(1);
            return std::optional<std::string>("fresh");
          });
      RedisFleet fleet;
      auto protector = child_protector(*server, fleet, repo, 10s);
      std::string outcome(kCallers * 2, '?');
      std::latch start(kCallers + 1);
      std::vector<std::thread> threads;
      for (int i = 0; i < kCallers; ++i) {
        threads.emplace_back([&, i] {
          start.arrive_and_wait();
          const auto deadline = i == 0 ? kShortDeadline : kLongDeadline;
          const auto begin = std::chrono::steady_clock::now();
          auto r = protector->get("hot", Deadline::after(deadline));
          const auto took = std::chrono::steady_clock::now() - begin;
          outcome[2 * i] = r && *r == "fresh"                            ? 'v'
                           : !r && r.error().kind == ErrorKind::kTimeout ? 't'
                                                                         : 'e';
          outcome[2 * i + 1] = took <= deadline + kAllowance ? 'y' : 'n';
        });
      }
      (void)write_byte(armed[1], 'a');
      start.arrive_and_wait();
      for (auto& t : threads) t.join();
      const std::string line = std::to_string(loads.load()) + " " + outcome;
      (void)!::write(report[1], line.data(), line.size());
      ::_exit(0);
    }
    ::close(report[1]);
    waiters.emplace_back(pid, report[0]);
  }
  ::close(armed[1]);
  for (int w = 0; w < kWaiters; ++w) ASSERT_EQ(read_byte(armed[0]), 'a');
  ::close(armed[0]);

  ASSERT_EQ(::kill(holder, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(::waitpid(holder, &status, 0), holder);
  EXPECT_TRUE(WIFSIGNALED(status));

  int total_loads = 0;
  for (auto [pid, fd] : waiters) {
    std::string out;
    char buf[512];
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof(buf))) > 0) out.append(buf, static_cast<std::size_t>(n));
    ::close(fd);
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "waiter exited with " << status;
    const auto space = out.find(' ');
    ASSERT_NE(space, std::string::npos) << out;
    total_loads += std::stoi(out.substr(0, space));
    const std::string outcome = out.substr(space + 1);
    ASSERT_EQ(outcome.size(), 2u * kCallers) << out;
    EXPECT_EQ(outcome[0], 't') << "the short-deadline caller should time out: " << out;
    for (int i = 1; i < kCallers; ++i) EXPECT_EQ(outcome[2 * i], 'v') << out;
    for (int i = 0; i < kCallers; ++i) EXPECT_EQ(outcome[2 * i + 1], 'y') << out;
  }
  // The dead holder's lease ran out and exactly one waiter took over.
  EXPECT_EQ(total_loads, 1);
}

}  // namespace
}  // namespace herdguard
