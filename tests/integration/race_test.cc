// The race test: a fleet of worker processes (race_worker.cc) reads, updates
// and invalidates a few keys of a versioned SQLite table through herdguard,
// while Redis is paused and killed on a seeded schedule; then the checker
// (race_history.h) judges the merged history against the consistency
// contract (memcache-lease semantics: a load that began before invalidate or
// set returned never overwrites what those wrote).
//
// Environment (CI-friendly defaults):
//   HERDGUARD_RACE_SEED                 RNG seed of workers and faults (1)
//   HERDGUARD_RACE_SECONDS              length of each run (8)
//   HERDGUARD_RACE_WORKERS              processes of the fleet cases (3)
//   HERDGUARD_RACE_THREADS              threads per process (4)
//   HERDGUARD_RACE_FAULTS               on|off: the fault schedule of the fleet case (on)
//   HERDGUARD_RACE_OTHER_ALLOWANCE_MS   P1 allowance for other processes (1500)
//   HERDGUARD_RACE_KEEP                 keep the run's folder (logs, report) even when it passes
// A failing run keeps its folder and prints its path; the report there lists
// every violation and the fault schedule, and the seed replays the schedule.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "race_history.h"
#include "redis_server.h"

namespace herdguard::race {
namespace {

using namespace std::chrono_literals;
using herdguard::testing::RedisServer;

std::int64_t env_int(const char* name, std::int64_t fallback) {
  const char* value = std::getenv(name);
  return value && *value ? std::strtoll(value, nullptr, 10) : fallback;
}

bool env_on(const char* name, bool fallback) {
  const char* value = std::getenv(name);
  if (!value || !*value) return fallback;
  const std::string v = value;
  return v == "on" || v == "1" || v == "true";
}

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

struct RunConfig {
  std::string name;
  std::uint64_t seed = 1;
  int seconds = 8;
  int workers = 3;
  int threads = 4;
  int keys = 3;
  bool l1 = true;
  bool faults = false;
  bool tags = false;     // invalidations by tag and clear() (race_worker.cc)
  bool per_key = false;  // ready notifications on the keys' own channels
};

RunConfig from_env(std::string name, int workers, bool l1, bool faults) {
  return RunConfig{.name = std::move(name),
                   .seed = static_cast<std::uint64_t>(env_int("HERDGUARD_RACE_SEED", 1)),
                   .seconds = static_cast<int>(env_int("HERDGUARD_RACE_SECONDS", 8)),
                   .workers = workers,
                   .threads = static_cast<int>(env_int("HERDGUARD_RACE_THREADS", 4)),
                   .l1 = l1,
                   .faults = faults};
}

// --- The fault schedule -------------------------------------------------------

struct Fault {
  enum class Kind { kPause, kRestart };
  Kind kind = Kind::kPause;
  int at_ms = 0;      // after the run starts
  int length_ms = 0;  // paused for / down for
};

std::string describe(const Fault& f) {
  return fmt::format("+{:.3f}s {} {} ms", f.at_ms / 1e3,
                     f.kind == Fault::Kind::kPause ? "pause (SIGSTOP)" : "kill -9, restart after",
                     f.length_ms);
}

// One fault every 0.7..2 s, from 0.5 s until 1 s before the end.
std::vector<Fault> fault_schedule(std::uint64_t seed, int seconds) {
  std::mt19937_64 rng(seed ^ 0xFA17FA17ull);
  std::vector<Fault> faults;
  int at = 500 + std::uniform_int_distribution<int>(0, 500)(rng);
  while (at < seconds * 1000 - 1000) {
    Fault f{.at_ms = at};
    if (std::uniform_int_distribution<int>(0, 2)(rng) == 0) {
      f.kind = Fault::Kind::kRestart;
      f.length_ms = std::uniform_int_distribution<int>(0, 200)(rng);
    } else {
      f.length_ms = std::uniform_int_distribution<int>(100, 400)(rng);
    }
    faults.push_back(f);
    at += f.length_ms + std::uniform_int_distribution<int>(700, 2000)(rng);
  }
  return faults;
}

// --- The fleet -----------------------------------------------------------------

// Worker processes: each dies with the test (PR_SET_PDEATHSIG), and any still
// running when this is destroyed is killed and reaped.
class Workers {
 public:
  ~Workers() {
    for (pid_t pid : pids_) {
      if (pid > 0) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
      }
    }
  }

  void spawn(const std::vector<std::string>& args) {
    std::vector<char*> argv;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    pids_.push_back(pid);
  }

  // Waits until every worker exited or `deadline` passed (then kills the
  // rest); returns the exit statuses (-1 for a killed or signalled worker).
  std::vector<int> wait_all(std::chrono::steady_clock::time_point deadline) {
    std::vector<int> statuses(pids_.size(), -1);
    for (std::size_t i = 0; i < pids_.size(); ++i) {
      int status = 0;
      for (;;) {
        const pid_t done = ::waitpid(pids_[i], &status, WNOHANG);
        if (done == pids_[i]) {
          if (WIFEXITED(status)) statuses[i] = WEXITSTATUS(status);
          pids_[i] = -1;
          break;
        }
        if (std::chrono::steady_clock::now() > deadline) {
          ::kill(pids_[i], SIGKILL);
          ::waitpid(pids_[i], nullptr, 0);
          pids_[i] = -1;
          break;
        }
        std::this_thread::sleep_for(20ms);
      }
    }
    return statuses;
  }

 private:
  std::vector<pid_t> pids_;
};

void create_database(const std::string& path, int keys) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  std::string sql =
      "PRAGMA journal_mode=WAL; CREATE TABLE rows(key TEXT PRIMARY KEY, version INTEGER NOT "
      "NULL);";
  for (int k = 0; k < keys; ++k) sql += fmt::format("INSERT INTO rows VALUES('k{}', 1);", k);
  char* error = nullptr;
  const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &error);
  const std::string message = error ? error : "";
  sqlite3_free(error);
  sqlite3_close(db);
  ASSERT_EQ(rc, SQLITE_OK) << message;
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Runs the fleet, injects the faults, checks the history; fails the test with
// the first violations.
void run_race(const RunConfig& config) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path() /
                                    fmt::format("herdguard-race-{}-{}", config.name, ::getpid());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::string db_path = (dir / "rows.db").string();
  create_database(db_path, config.keys);
  auto redis = RedisServer::start();

  const std::vector<Fault> faults =
      config.faults ? fault_schedule(config.seed, config.seconds) : std::vector<Fault>{};
  std::string report = fmt::format(
      "# race {}: seed {}, {} s, {} workers x {} threads, {} keys, l1 {}, faults {}, "
      "tags {}\n",
      config.name, config.seed, config.seconds, config.workers, config.threads, config.keys,
      config.l1 ? "on" : "off", config.faults ? "on" : "off", config.tags ? "on" : "off");
  for (const Fault& f : faults) report += "# fault " + describe(f) + "\n";
  std::fputs(report.c_str(), stdout);

  // Workers set up (connect, subscribe) before the common start.
  const std::int64_t start_ns = now_ns() + 1'500'000'000;
  Workers workers;
  for (int w = 0; w < config.workers; ++w) {
    workers.spawn({HERDGUARD_RACE_WORKER_PATH,
                   "--redis",
                   redis->url(),
                   "--db",
                   db_path,
                   "--log",
                   (dir / fmt::format("worker{}.log", w)).string(),
                   "--worker",
                   std::to_string(w),
                   "--seed",
                   std::to_string(config.seed),
                   "--start-at-ns",
                   std::to_string(start_ns),
                   "--duration-ms",
                   std::to_string(config.seconds * 1000),
                   "--threads",
                   std::to_string(config.threads),
                   "--keys",
                   std::to_string(config.keys),
                   "--l1",
                   config.l1 ? "on" : "off",
                   "--tags",
                   config.tags ? "on" : "off",
                   "--ready-channels",
                   config.per_key ? "per-key" : "shared"});
  }
  for (const Fault& f : faults) {
    std::this_thread::sleep_until(std::chrono::steady_clock::time_point(
        std::chrono::nanoseconds(start_ns) + std::chrono::milliseconds(f.at_ms)));
    if (f.kind == Fault::Kind::kPause) {
      redis->pause();
      std::this_thread::sleep_for(std::chrono::milliseconds(f.length_ms));
      redis->resume();
    } else {
      redis->stop();
      std::this_thread::sleep_for(std::chrono::milliseconds(f.length_ms));
      redis->start_again();
    }
  }
  const std::vector<int> statuses = workers.wait_all(std::chrono::steady_clock::now() +
                                                     std::chrono::seconds(config.seconds) + 30s);
  redis->stop();

  std::string logs;
  for (int w = 0; w < config.workers; ++w) {
    EXPECT_EQ(statuses[w], 0) << "worker " << w;
    logs += read_file(dir / fmt::format("worker{}.log", w));
  }
  auto history = parse_history(logs);
  ASSERT_TRUE(history) << history.error().to_string();

  const CheckerOptions options{.other_process_allowance = std::chrono::milliseconds(
                                   env_int("HERDGUARD_RACE_OTHER_ALLOWANCE_MS", 1500))};
  const CheckReport checked = check_history(*history, options);

  std::string summary = fmt::format(
      "# {} operations, {} successful gets checked, {} writes, {} "
      "failed writes, {} faults\n",
      history->size(), checked.gets_checked, checked.writes, checked.failed_writes, faults.size());
  for (const auto& [what, n] : count_operations(*history))
    summary += fmt::format("#   {:<28} {}\n", what, n);
  summary += fmt::format("# worst get overshoot past its deadline: {:.1f} ms\n",
                         checked.worst_overshoot.count() / 1e6);
  summary += fmt::format("# violations: {}\n", checked.violations.size());
  for (const auto& [kind, n] : checked.counts())
    summary += fmt::format("#   {:<28} {}\n", to_string(kind), n);
  std::fputs(summary.c_str(), stdout);
  report += summary;
  report +=
      fmt::format("# times below are relative to the common start, steady_clock {} ns\n", start_ns);
  for (const Violation& v : checked.violations) report += describe(v, start_ns) + "\n";
  std::ofstream(dir / "report.txt") << report;

  std::string first;
  for (std::size_t i = 0; i < checked.violations.size() && i < 20; ++i)
    first += describe(checked.violations[i], start_ns) + "\n";
  EXPECT_TRUE(checked.violations.empty())
      << checked.violations.size() << " violations (seed " << config.seed << "); all in "
      << (dir / "report.txt").string() << "; the first:\n"
      << first;
  EXPECT_GT(checked.gets_checked, 0u);
  if (!::testing::Test::HasFailure() && !env_on("HERDGUARD_RACE_KEEP", false)) {
    std::filesystem::remove_all(dir);
  }
}

TEST(RaceTest, FleetWithFaultsKeepsLeaseSemantics) {
  run_race(from_env("fleet", static_cast<int>(env_int("HERDGUARD_RACE_WORKERS", 3)), true,
                    env_on("HERDGUARD_RACE_FAULTS", true)));
}

// One process, no faults: races between threads and the process's own L1.
TEST(RaceTest, SingleProcessKeepsLeaseSemantics) { run_race(from_env("single", 1, true, false)); }

// No L1, no faults: races in Redis (L2) alone.
// Invalidations by tag and clear(), with Redis paused and killed: the
// passive invalidation keeps the same contract (Protector::invalidate_tag).
TEST(RaceTest, FleetInvalidatingByTagWithFaultsKeepsLeaseSemantics) {
  RunConfig config = from_env("tags", static_cast<int>(env_int("HERDGUARD_RACE_WORKERS", 3)), true,
                              env_on("HERDGUARD_RACE_FAULTS", true));
  config.tags = true;
  run_race(config);
}

// The same contract when waiters hear "ready" on the keys' own channels
// (sharded pub/sub, subscribed per waited key), with Redis paused and killed.
TEST(RaceTest, FleetOnPerKeyChannelsWithFaultsKeepsLeaseSemantics) {
  RunConfig config = from_env("perkey", static_cast<int>(env_int("HERDGUARD_RACE_WORKERS", 3)),
                              true, env_on("HERDGUARD_RACE_FAULTS", true));
  config.per_key = true;
  run_race(config);
}

TEST(RaceTest, FleetWithoutL1KeepsLeaseSemantics) {
  run_race(from_env("nol1", static_cast<int>(env_int("HERDGUARD_RACE_WORKERS", 3)), false, false));
}

}  // namespace
}  // namespace herdguard::race
