// One process of the race test's fleet (race_test.cc): a Protector over a
// versioned SQLite table, shared through Redis with the other workers, driven
// by threads that run random gets, invalidates, update+invalidates and
// update+sets on a few keys until the run ends. Each operation is logged as
// one record (race_history.h) to --log, written when the run is over.
//
// The repository is the race: 30% of loads (by default) sleep 50..400 ms
// AFTER reading the row, so the row may be updated and invalidated before the
// load hands its old version to the cache.
//
// Usage: race_worker --redis URL --db PATH --log PATH --worker N --seed S
//          --start-at-ns T --duration-ms D --threads N --keys K
//          [--l1 on|off] [--ready-channels shared|per-key] [--lease-ms 900]
//          [--load-timeout-ms 2000]
//          [--ttl-ms 20000] [--deadline-ms 1500] [--slow-percent 30]
//          [--slow-min-ms 50] [--slow-max-ms 400] [--think-max-us 4000]
// Exit status: 0 after a run (whatever its operations returned), 2 for bad
// arguments, 3 when setting up the database or the Protector failed.
#include <sqlite3.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "herdguard/herdguard.h"
#include "race_history.h"

namespace herdguard::race {
namespace {

using namespace std::chrono_literals;

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

struct Config {
  std::string redis_url, db_path, log_path;
  int worker = 0;
  std::uint64_t seed = 1;
  std::int64_t start_at_ns = 0;
  int duration_ms = 8000, threads = 4, keys = 3;
  bool l1 = true;
  // Invalidations by tag (Protector::invalidate_tag, clear): each key's
  // entries carry the tag "t:<key>" (and "all"); an invalidate of k is
  // invalidate_tag("t:k"), a plain invalidate is clear() (logged as one
  // invalidate per key), and a set carries the tags.
  bool tags = false;
  // Ready notifications on the keys' own channels (sharded pub/sub).
  bool per_key = false;
  int lease_ms = 900, load_timeout_ms = 2000, ttl_ms = 20000, deadline_ms = 1500;
  int slow_percent = 30, slow_min_ms = 50, slow_max_ms = 400, think_max_us = 4000;
};

std::optional<Config> parse_args(int argc, char** argv) {
  std::map<std::string, std::string> flags;
  for (int i = 1; i + 1 < argc; i += 2) flags[argv[i]] = argv[i + 1];
  if (argc % 2 != 1) return std::nullopt;
  Config c;
  auto text = [&](const char* name, std::string& out) {
    if (auto it = flags.find(name); it != flags.end()) out = it->second;
  };
  auto number = [&](const char* name, auto& out) {
    if (auto it = flags.find(name); it != flags.end()) out = std::stoll(it->second);
  };
  try {
    text("--redis", c.redis_url);
    text("--db", c.db_path);
    text("--log", c.log_path);
    number("--worker", c.worker);
    number("--seed", c.seed);
    number("--start-at-ns", c.start_at_ns);
    number("--duration-ms", c.duration_ms);
    number("--threads", c.threads);
    number("--keys", c.keys);
    number("--lease-ms", c.lease_ms);
    number("--load-timeout-ms", c.load_timeout_ms);
    number("--ttl-ms", c.ttl_ms);
    number("--deadline-ms", c.deadline_ms);
    number("--slow-percent", c.slow_percent);
    number("--slow-min-ms", c.slow_min_ms);
    number("--slow-max-ms", c.slow_max_ms);
    number("--think-max-us", c.think_max_us);
  } catch (const std::exception&) {
    return std::nullopt;
  }
  std::string l1 = "on";
  text("--l1", l1);
  c.l1 = l1 == "on";
  std::string tags = "off";
  text("--tags", tags);
  c.tags = tags == "on";
  std::string channels = "shared";
  text("--ready-channels", channels);
  c.per_key = channels == "per-key";
  if (c.redis_url.empty() || c.db_path.empty() || c.log_path.empty() || c.threads < 1 ||
      c.keys < 1 || (l1 != "on" && l1 != "off")) {
    return std::nullopt;
  }
  return c;
}

// One SQLite connection. Several processes write the file, so WAL and a busy
// timeout; a failed step reads as std::nullopt (logged as db_error).
class Database {
 public:
  explicit Database(const std::string& path) {
    if (sqlite3_open(path.c_str(), &db_) != SQLITE_OK) return;
    sqlite3_busy_timeout(db_, 5000);
    sqlite3_exec(db_, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", nullptr, nullptr,
                 nullptr);
    sqlite3_prepare_v2(db_, "SELECT version FROM rows WHERE key = ?", -1, &read_, nullptr);
    sqlite3_prepare_v2(db_, "UPDATE rows SET version = version + 1 WHERE key = ? RETURNING version",
                       -1, &update_, nullptr);
  }
  ~Database() {
    sqlite3_finalize(read_);
    sqlite3_finalize(update_);
    sqlite3_close(db_);
  }
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;

  bool usable() const { return read_ != nullptr && update_ != nullptr; }
  std::optional<std::int64_t> read(const std::string& key) { return step(read_, key); }
  std::optional<std::int64_t> update(const std::string& key) { return step(update_, key); }

 private:
  static std::optional<std::int64_t> step(sqlite3_stmt* stmt, const std::string& key) {
    sqlite3_reset(stmt);
    sqlite3_bind_text(stmt, 1, key.data(), static_cast<int>(key.size()), SQLITE_TRANSIENT);
    std::optional<std::int64_t> version;
    if (sqlite3_step(stmt) == SQLITE_ROW) version = sqlite3_column_int64(stmt, 0);
    // Drain the statement so that the UPDATE commits.
    while (version && sqlite3_step(stmt) == SQLITE_ROW) {
    }
    sqlite3_reset(stmt);
    return version;
  }

  sqlite3* db_ = nullptr;
  sqlite3_stmt* read_ = nullptr;
  sqlite3_stmt* update_ = nullptr;
};

// The repository: reads the row, then maybe stalls (the slow load that
// loses the race). Loads come from herdguard's pool of load threads, so the
// connection and the stall RNG are shared under a mutex, released before the
// stall.
class SlowRepository {
 public:
  explicit SlowRepository(const Config& config)
      : config_(config), db_(config.db_path), rng_(config.seed * 1'000'003 + config.worker) {}

  bool usable() const { return db_.usable(); }

  // A slow load stalls after its read (the value it read may be superseded
  // meanwhile), but like every real repository it honours its deadline:
  // it never holds a caller's thread past it (single_flight.h).
  Result<std::optional<std::string>> load(std::string_view key, Deadline deadline) {
    std::int64_t read_at = 0;
    std::optional<std::int64_t> version;
    std::chrono::milliseconds stall{0};
    {
      std::lock_guard lock(mutex_);
      read_at = now_ns();
      version = db_.read(std::string(key));
      if (std::uniform_int_distribution<int>(0, 99)(rng_) < config_.slow_percent) {
        stall = std::chrono::milliseconds(
            std::uniform_int_distribution<int>(config_.slow_min_ms, config_.slow_max_ms)(rng_));
      }
    }
    if (!version) return make_error(ErrorKind::kBackend, "sqlite read failed");
    if (stall > Duration::zero()) {
      if (stall >= deadline.remaining()) {
        std::this_thread::sleep_until(deadline.when());
        return make_error(ErrorKind::kTimeout, "slow load: its deadline passed");
      }
      std::this_thread::sleep_for(stall);
    }
    return std::optional<std::string>(encode_value(*version, {.kind = ValueSource::Kind::kLoad,
                                                              .worker = config_.worker,
                                                              .read_ns = read_at,
                                                              .done_ns = now_ns()}));
  }

 private:
  const Config& config_;
  std::mutex mutex_;
  Database db_;          // guarded by mutex_
  std::mt19937_64 rng_;  // guarded by mutex_
};

std::string outcome_of(const Error& error) { return std::string(to_string(error.kind)); }

// The tags of `key`'s entries (Config::tags).
std::vector<std::string> tags_of(const Config& config, std::string_view key) {
  if (!config.tags) return {};
  return {"t:" + std::string(key), "all"};
}

// One thread's operations, from its own RNG, until `end_ns`.
std::vector<Op> run_thread(const Config& config, int thread, Protector& protector,
                           std::int64_t end_ns) {
  Database db(config.db_path);
  std::mt19937_64 rng(config.seed * 0x9E3779B97F4A7C15ull + config.worker * 1000 + thread);
  std::uniform_int_distribution<int> pick_key(0, config.keys - 1);
  std::uniform_int_distribution<int> pick_op(0, 99);
  std::uniform_int_distribution<int> think(0, config.think_max_us);
  const auto deadline = std::chrono::milliseconds(config.deadline_ms);
  std::vector<Op> ops;
  while (now_ns() < end_ns) {
    Op op{.worker = config.worker, .thread = thread, .key = "k" + std::to_string(pick_key(rng))};
    const int dice = pick_op(rng);
    op.start_ns = now_ns();
    if (dice < 65) {
      op.kind = OpKind::kGet;
      op.deadline_ns = std::chrono::nanoseconds(deadline).count();
      Result<std::string> got = protector.get(op.key, Deadline::after(deadline));
      if (!got) {
        op.outcome = outcome_of(got.error());
      } else if (auto value = decode_value(*got)) {
        op.version = value->version;
        op.source = value->source;
      } else {
        op.outcome = "bad_value";
      }
    } else if (config.tags && dice < 70) {
      // clear(): an invalidate of every key, each logged with the version
      // read before (so the checker holds every later get to it).
      std::vector<Op> each;
      for (int k = 0; k < config.keys; ++k) {
        Op one{.kind = OpKind::kInvalidate,
               .worker = config.worker,
               .thread = thread,
               .key = "k" + std::to_string(k),
               .start_ns = op.start_ns};
        if (auto version = db.read(one.key)) {
          one.version = *version;
        } else {
          one.outcome = "db_error";
        }
        each.push_back(std::move(one));
      }
      Result<void> done = protector.clear();
      const std::int64_t end = now_ns();
      for (Op& one : each) {
        if (!done && one.outcome == "ok") one.outcome = outcome_of(done.error());
        one.end_ns = end;
        ops.push_back(std::move(one));
      }
      std::this_thread::sleep_for(std::chrono::microseconds(think(rng)));
      continue;
    } else {
      op.kind = dice < 70   ? OpKind::kInvalidate
                : dice < 88 ? OpKind::kUpdateInvalidate
                            : OpKind::kUpdateSet;
      std::optional<std::int64_t> version =
          op.kind == OpKind::kInvalidate ? db.read(op.key) : db.update(op.key);
      if (!version) {
        op.outcome = "db_error";
      } else {
        op.version = *version;
        const std::string value =
            encode_value(*version, {.kind = ValueSource::Kind::kSet, .worker = config.worker});
        Result<void> done =
            op.kind == OpKind::kUpdateSet
                ? protector.set(op.key, value, EntryOptions{.tags = tags_of(config, op.key)})
            : config.tags ? protector.invalidate_tag("t:" + op.key)
                          : protector.invalidate(op.key);
        if (!done) op.outcome = outcome_of(done.error());
      }
    }
    op.end_ns = now_ns();
    ops.push_back(std::move(op));
    std::this_thread::sleep_for(std::chrono::microseconds(think(rng)));
  }
  return ops;
}

int run(const Config& config) {
  auto repository = std::make_shared<SlowRepository>(config);
  if (!repository->usable()) return 3;
  auto fleet = RedisFleet::connect(
      {.redis = {.url = config.redis_url},
       .prefix = "race:",
       .lease = std::chrono::milliseconds(config.lease_ms),
       .ready_channels = config.per_key ? RedisFleetOptions::ReadyChannels::kPerKey
                                        : RedisFleetOptions::ReadyChannels::kShared});
  if (!fleet) {
    std::fprintf(stderr, "worker %d: %s\n", config.worker, fleet.error().to_string().c_str());
    return 3;
  }
  if (fleet->notifier) (void)fleet->notifier->wait_subscribed(Deadline::after(5s));
  std::mt19937_64 rng(config.seed + static_cast<std::uint64_t>(config.worker));
  ProtectorOptions options{
      .ttl = std::chrono::milliseconds(config.ttl_ms),
      .ttl_jitter = std::uniform_real_distribution<double>(0.0, 0.2)(rng),
      .stale_while_revalidate = Duration::zero(),
      .fail_safe_max_staleness = Duration::zero(),
      .request_timeout = std::chrono::milliseconds(config.deadline_ms),
      .l1_enabled = config.l1,
  };
  options.single_flight.load_timeout = std::chrono::milliseconds(config.load_timeout_ms);
  fleet->apply_to(options);
  auto protector = Protector::create(
      std::move(options),
      CallbackRepository::with_entries(
          [repository, &config](std::string_view key, Deadline deadline) -> Result<LoadedEntry> {
            auto loaded = repository->load(key, deadline);
            if (!loaded) return std::unexpected(loaded.error());
            return LoadedEntry{.value = std::move(*loaded),
                               .options = {.tags = tags_of(config, key)}};
          }));
  if (!protector) {
    std::fprintf(stderr, "worker %d: %s\n", config.worker, protector.error().to_string().c_str());
    return 3;
  }

  // All workers begin together, so that their operations collide.
  std::this_thread::sleep_until(
      std::chrono::steady_clock::time_point(std::chrono::nanoseconds(config.start_at_ns)));
  const std::int64_t end_ns =
      std::max(config.start_at_ns, now_ns()) + config.duration_ms * 1'000'000ll;
  std::vector<std::vector<Op>> logs(config.threads);
  {
    std::vector<std::jthread> threads;
    for (int t = 0; t < config.threads; ++t) {
      threads.emplace_back([&, t] { logs[t] = run_thread(config, t, **protector, end_ns); });
    }
  }
  const ProtectionMetrics m = (*protector)->metrics();
  // Loads still running (stalled) end with the Protector, before the log is
  // written: a worker that exits has finished every operation it logged.
  protector->reset();

  std::ofstream out(config.log_path, std::ios::trunc);
  out << "# race_worker " << config.worker << " seed " << config.seed << '\n';
  // For reading a failed run: how often this process degraded or was refused.
  out << "# metrics redis_errors=" << m.redis_errors << " degraded_loads=" << m.fleet_degraded_loads
      << " refused_l2_writes=" << m.fenced_off_writes << " refused_l1_fills=" << m.refused_l1_fills
      << " db_queries=" << m.db_queries << '\n';
  for (const auto& ops : logs) {
    for (const Op& op : ops) out << format_op(op) << '\n';
  }
  out.flush();
  return out ? 0 : 3;
}

}  // namespace
}  // namespace herdguard::race

int main(int argc, char** argv) {
  auto config = herdguard::race::parse_args(argc, argv);
  if (!config) {
    std::fprintf(stderr, "race_worker: bad arguments (see the comment atop race_worker.cc)\n");
    return 2;
  }
  return herdguard::race::run(*config);
}
