#include "scenario_run.h"

#include <fmt/format.h>
#include <herdguard/herdguard.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <latch>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <thread>

#include "database.h"
#include "fault_proxy.h"
#include "faulty_repository.h"
#include "fd_io.h"
#include "load_overlap.h"
#include "report.h"
#include "saturating_database.h"
#include "temp_dir.h"
#include "worker_protection.h"
#include "zipf.h"

namespace herdguard::cli {
namespace {

using SteadyClock = std::chrono::steady_clock;

// What one request-issuing thread saw, per second of the run.
struct Second {
  std::uint64_t requests = 0;
  std::uint64_t errors = 0;
  std::uint64_t wrong = 0;
  std::uint64_t rate_limited = 0;                 // over their client's limit (not errors)
  std::vector<std::uint32_t> admitted_by_client;  // --clients: requests admitted, per client
  std::vector<std::uint32_t> latencies_us;
};

// The body of a worker process. Reports progress lines each second and one
// final line on `out_fd`. Never returns.
[[noreturn]] void run_worker(const Scenario& s, int index, const std::string& db,
                             const std::string& redis_url, const std::string& l3_url,
                             const std::string& refusing_socket, const std::string& prefix,
                             const std::shared_ptr<SharedDbLoad>& db_load, int ready_fd, int go_fd,
                             int out_fd) {
  auto setup =
      build_worker_protection(s, index, db, redis_url, l3_url, refusing_socket, prefix, db_load);
  if (!setup) {
    (void)write_all(ready_fd, "x");
    (void)write_all(
        out_fd,
        nlohmann::json{{"type", "error"}, {"error", setup.error().to_string()}}.dump() + "\n");
    ::_exit(2);
  }
  WorkerProtection& p = *setup;
  const ZipfSampler zipf(s.keys, s.zipf);
  const int seconds = static_cast<int>(std::ceil(s.duration_s));
  const int threads_n = s.concurrency;
  // With clients, every process sends each client's share: client_rate /
  // processes each, so a client's requests reach every process.
  const int clients = s.clients;
  const double rate_here = clients > 0  ? clients * s.client_rate / s.processes
                           : s.rate > 0 ? s.rate / s.processes
                                        : 0;
  Second empty_second;
  empty_second.admitted_by_client.resize(static_cast<std::size_t>(clients));
  std::vector<std::vector<Second>> per_thread(threads_n,
                                              std::vector<Second>(seconds + 1, empty_second));
  std::atomic<std::uint64_t> requests{0}, errors{0};
  std::atomic<std::uint64_t> next_ticket{0};
  // Errors by kind, with the first message of each: why requests failed.
  // A mutex is enough: it is taken on the error path only.
  std::mutex errors_mutex;
  std::map<std::string, std::uint64_t> errors_by_kind;     // guarded by errors_mutex
  std::map<std::string, std::string> first_error_of_kind;  // guarded by errors_mutex
  SteadyClock::time_point t0;
  SteadyClock::time_point end;
  std::latch armed(threads_n + 1);
  std::latch release(1);

  // validate() checked it.
  const std::optional<Viral> viral =
      s.viral.empty() ? std::nullopt : std::optional<Viral>(*parse_viral(s.viral));
  const auto viral_from = std::chrono::duration_cast<SteadyClock::duration>(
      std::chrono::duration<double>(viral ? viral->start_s : 0));
  // `client`: the client the request is sent for (--clients), else -1.
  auto issue = [&](int thread, std::mt19937_64& rng, SteadyClock::time_point started, int client) {
    auto pick = [&] {
      const bool goes_viral = viral && started - t0 >= viral_from &&
                              std::uniform_real_distribution<double>(0, 1)(rng) < kViralShare;
      return goes_viral ? viral->key : fmt::format("key:{}", zipf.sample(rng));
    };
    const std::string key = pick();
    bool limited = false;
    Result<std::string> r = make_error(ErrorKind::kInternal, "not sent");
    if (s.get_many > 1) {
      // One request of get_many keys: answered when every key is (the
      // first failure, or a wrong value, stands for the request).
      std::vector<std::string> keys = {key};
      while (keys.size() < static_cast<std::size_t>(s.get_many)) keys.push_back(pick());
      std::vector<Result<std::string>> answers = p.request_many(keys);
      r = "value-of-" + key;
      for (std::size_t i = 0; i < keys.size(); ++i) {
        if (!answers[i]) {
          r = std::unexpected(answers[i].error());
          break;
        }
        if (*answers[i] != "value-of-" + keys[i]) r = std::string("wrong");
      }
    } else if (client < 0) {
      r = p.request(key);
    } else {
      r = p.request_for(fmt::format("client-{}", client), key, &limited);
    }
    const auto now = SteadyClock::now();
    const int sec =
        std::clamp(static_cast<int>((started - t0) / std::chrono::seconds(1)), 0, seconds);
    Second& bucket = per_thread[thread][sec];
    ++bucket.requests;
    bucket.latencies_us.push_back(static_cast<std::uint32_t>(std::min<long long>(
        std::chrono::duration_cast<std::chrono::microseconds>(now - started).count(), UINT32_MAX)));
    requests.fetch_add(1, std::memory_order_relaxed);
    if (client >= 0) {
      if (limited) {
        ++bucket.rate_limited;
      } else {
        ++bucket.admitted_by_client[static_cast<std::size_t>(client)];
      }
    }
    if (!r && r.error().kind == ErrorKind::kRateLimited) {
      // Answered: "over your limit, come back later" (counted above).
    } else if (!r) {
      ++bucket.errors;
      errors.fetch_add(1, std::memory_order_relaxed);
      const std::string kind(to_string(r.error().kind));
      std::lock_guard lock(errors_mutex);
      if (errors_by_kind[kind]++ == 0) first_error_of_kind[kind] = r.error().to_string();
    } else if (*r != "value-of-" + key) {
      ++bucket.wrong;
    }
  };

  std::vector<std::thread> threads;
  for (int i = 0; i < threads_n; ++i) {
    threads.emplace_back([&, i] {
      std::mt19937_64 rng(static_cast<std::uint64_t>(index) * 1'000'003 +
                          static_cast<std::uint64_t>(i));
      armed.count_down();
      release.wait();
      if (rate_here > 0) {
        // Open loop: ticket n is due at t0 + n / rate; latency counts from
        // when it was due, so a slow system shows its queueing.
        for (;;) {
          const std::uint64_t n = next_ticket.fetch_add(1, std::memory_order_relaxed);
          const auto due =
              t0 + std::chrono::duration_cast<SteadyClock::duration>(
                       std::chrono::duration<double>(static_cast<double>(n) / rate_here));
          if (due >= end) break;
          std::this_thread::sleep_until(due);
          issue(i, rng, due,
                clients > 0 ? static_cast<int>(n % static_cast<std::uint64_t>(clients)) : -1);
        }
      } else {
        while (SteadyClock::now() < end) issue(i, rng, SteadyClock::now(), -1);
      }
    });
  }
  // --invalidate-tag-rate: this process's share, open loop from t0 to end.
  const double tag_rate_here = s.invalidate_tag_rate / s.processes;
  if (tag_rate_here > 0 && p.protector) {
    threads.emplace_back([&] {
      std::mt19937_64 rng(static_cast<std::uint64_t>(index) * 7'919 + 17);
      std::uniform_int_distribution<int> group(0, std::max(0, (s.keys - 1) / 100));
      release.wait();
      for (std::uint64_t n = 0;; ++n) {
        const auto due =
            t0 + std::chrono::duration_cast<SteadyClock::duration>(
                     std::chrono::duration<double>(static_cast<double>(n) / tag_rate_here));
        if (due >= end) break;
        std::this_thread::sleep_until(due);
        (void)p.protector->invalidate_tag(fmt::format("group:{}", group(rng)));
      }
    });
  }
  armed.arrive_and_wait();
  (void)write_all(ready_fd, "r");
  char go;
  while (::read(go_fd, &go, 1) < 0 && errno == EINTR) {
  }
  t0 = SteadyClock::now();
  end = t0 + std::chrono::duration_cast<SteadyClock::duration>(
                 std::chrono::duration<double>(s.duration_s));
  p.db->start();
  release.count_down();

  // Each second: cumulative counters, for the progress line and the
  // per-second database queries and stale answers.
  std::vector<std::uint64_t> db_at, stale_at, waits_at, early_at, redis_at;
  // The hot keys at the end of each second, and each key's first detection
  // in this process (detected_at_s from the start, rates then, and its load
  // waits since, as last seen).
  std::vector<nlohmann::json> hot_at;
  std::map<std::string, nlohmann::json> detected;
  const TimePoint wall_t0 = system_clock()->now();
  auto sample = [&](int t) {
    const ProtectionMetrics m = p.protector ? p.protector->metrics() : ProtectionMetrics{};
    nlohmann::json hot_now = nlohmann::json::array();
    if (p.protector) {
      for (const HotKey& h : p.protector->hot_keys()) {
        hot_now.push_back({{"key", h.key}, {"rate", h.rate}});
        auto [it, first] = detected.try_emplace(h.key);
        if (first) {
          it->second = {
              {"detected_at_s", std::chrono::duration<double>(h.detected_at - wall_t0).count()},
              {"rate", h.rate},
              {"previous_rate", h.previous_rate},
              {"previous_rate_max", h.previous_rate_max},
              {"viral", h.viral}};
        }
        it->second["load_waits"] = h.load_waits;
      }
    }
    hot_at.push_back(std::move(hot_now));
    db_at.push_back(p.db->calls());
    stale_at.push_back(m.stale_returns);
    // Without a protector every miss loads for itself: a database query each.
    waits_at.push_back(p.protector ? m.cache_misses : p.db->calls());
    early_at.push_back(m.early_refreshes);
    redis_at.push_back(m.redis_errors);
    (void)write_all(out_fd, nlohmann::json{{"type", "progress"},
                                           {"t", t},
                                           {"requests", requests.load()},
                                           {"errors", errors.load()},
                                           {"db_queries", p.db->calls()}}
                                    .dump() +
                                "\n");
  };
  for (int t = 1; t <= seconds; ++t) {
    std::this_thread::sleep_until(std::min(end, t0 + std::chrono::seconds(t)));
    sample(t);
  }
  for (auto& t : threads) t.join();
  sample(seconds);  // after the stragglers

  nlohmann::json timeline = nlohmann::json::array();
  for (int sec = 0; sec <= seconds; ++sec) {
    Second merged = empty_second;
    for (auto& thread : per_thread) {
      Second& b = thread[sec];
      merged.requests += b.requests;
      merged.errors += b.errors;
      merged.wrong += b.wrong;
      merged.rate_limited += b.rate_limited;
      for (std::size_t c = 0; c < b.admitted_by_client.size(); ++c)
        merged.admitted_by_client[c] += b.admitted_by_client[c];
      merged.latencies_us.insert(merged.latencies_us.end(), b.latencies_us.begin(),
                                 b.latencies_us.end());
    }
    const std::uint64_t db_before = sec == 0 ? 0 : db_at[sec - 1];
    const std::uint64_t stale_before = sec == 0 ? 0 : stale_at[sec - 1];
    const std::uint64_t waits_before = sec == 0 ? 0 : waits_at[sec - 1];
    const std::uint64_t early_before = sec == 0 ? 0 : early_at[sec - 1];
    const std::uint64_t redis_before = sec == 0 ? 0 : redis_at[sec - 1];
    const std::size_t at = std::min<std::size_t>(sec, db_at.size() - 1);
    timeline.push_back({{"requests", merged.requests},
                        {"errors", merged.errors},
                        {"wrong", merged.wrong},
                        {"db_queries", db_at[at] - std::min(db_before, db_at[at])},
                        {"stale", stale_at[at] - std::min(stale_before, stale_at[at])},
                        {"load_waits", waits_at[at] - std::min(waits_before, waits_at[at])},
                        {"early_refreshes", early_at[at] - std::min(early_before, early_at[at])},
                        {"redis_errors", redis_at[at] - std::min(redis_before, redis_at[at])},
                        {"hot_keys", hot_at[at]},
                        {"rate_limited", merged.rate_limited},
                        {"admitted_by_client", merged.admitted_by_client},
                        {"latencies_us", merged.latencies_us}});
  }
  const ProtectionMetrics m = p.protector ? p.protector->metrics() : ProtectionMetrics{};
  // Each load's key and start (steady clock ns, shared by the machine's
  // processes): the parent counts duplicates fleet-wide (load_overlap.h).
  nlohmann::json loads = nlohmann::json::array();
  for (const auto& load : p.db->load_log())
    loads.push_back({load.key, load.at.time_since_epoch().count(), load.refreshed_version});
  nlohmann::json final_line = {
      {"type", "final"},
      {"loads", std::move(loads)},
      {"timeline", timeline},
      {"db_queries", p.db->calls()},
      {"stale_served", m.stale_returns},
      {"load_waits", p.protector ? m.cache_misses : p.db->calls()},
      {"early_refreshes", m.early_refreshes},
      {"refreshes_dropped", m.background_refreshes_dropped},
      {"hot_keys", detected},
      {"ttl_lengthened", m.ttl_lengthened},
      {"ttl_shortened", m.ttl_shortened},
      {"breaker_trips", m.circuit_breaker_trips},
      {"redis_errors", m.redis_errors},
      {"fleet_waits", m.fleet_lock_contentions},
      {"announcements_received",
       p.fleet && p.fleet->notifier ? p.fleet->notifier->stats().received : 0},
      {"db_shed", m.db_shed},
      {"rate_limited", m.rate_limited},
      {"batch_queries", p.db->batches()},
      {"l3_hits", m.l3_hits},
      {"l3_errors", m.l3_errors},
      {"l3_rejected", m.l3_rejected},
      {"tag_invalidations", m.tag_invalidations},
      {"rate_limiter_local_decisions",
       p.rate_limiter ? p.rate_limiter->stats().local_decisions : 0},
      {"errors_by_kind", errors_by_kind},
      {"first_error_of_kind", first_error_of_kind}};
  const bool written = write_all(out_fd, final_line.dump() + "\n");
  ::_exit(written ? 0 : 3);
}

// Reads lines from the workers until each has sent its final line (or died).
class WorkerLines {
 public:
  explicit WorkerLines(std::vector<int> fds)
      : fds_(std::move(fds)), buffers_(fds_.size()), open_(fds_.size(), true) {}

  // Waits up to `timeout_ms` and hands every complete line to `on_line`.
  // Returns false once every worker has closed its pipe.
  template <typename OnLine>
  bool poll_once(int timeout_ms, OnLine on_line) {
    std::vector<pollfd> pfds;
    for (std::size_t i = 0; i < fds_.size(); ++i)
      pfds.push_back({open_[i] ? fds_[i] : -1, POLLIN, 0});
    const int n = ::poll(pfds.data(), pfds.size(), timeout_ms);
    if (n < 0 && errno != EINTR) return false;
    for (std::size_t i = 0; i < fds_.size(); ++i) {
      if (!open_[i] || pfds[i].revents == 0) continue;
      char buf[65536];
      const ssize_t got = ::read(fds_[i], buf, sizeof buf);
      if (got <= 0) {
        open_[i] = false;
        continue;
      }
      buffers_[i].append(buf, static_cast<std::size_t>(got));
      std::size_t nl;
      while ((nl = buffers_[i].find('\n')) != std::string::npos) {
        on_line(i, buffers_[i].substr(0, nl));
        buffers_[i].erase(0, nl + 1);
      }
    }
    return std::any_of(open_.begin(), open_.end(), [](bool b) { return b; });
  }

 private:
  std::vector<int> fds_;
  std::vector<std::string> buffers_;
  std::vector<bool> open_;
};

}  // namespace

Result<RunReport> run_scenario(const Scenario& s, const std::string& db) {
  TempDir dir("herdguard-scenario");
  if (dir.path().empty())
    return make_error(ErrorKind::kBackend, "cannot create a temporary folder");
  // A socket that is bound but never listened on: connecting to it is
  // refused by the kernel, as a dead database's port is (db-down faults).
  const std::string refusing = (dir.path() / "dead-db.sock").string();
  {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, refusing.c_str(), sizeof(addr.sun_path) - 1);
    if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      if (fd >= 0) ::close(fd);
      return make_error(ErrorKind::kBackend, "cannot bind the db-down socket");
    }
    ::close(fd);  // the file stays; nobody listens
  }
  // The saturating server's counters, mapped before the fork: every worker
  // inherits the mapping. One per run, so each run's peak is its own.
  std::shared_ptr<SharedDbLoad> db_load;
  if (s.db_capacity > 0) {
    auto created = SharedDbLoad::create((dir.path() / "db-load").string());
    if (!created) return std::unexpected(created.error());
    db_load = std::move(*created);
  }
  const std::string prefix = fmt::format("herdguard-simulate:{}-{}:", ::getpid(),
                                         SteadyClock::now().time_since_epoch().count());
  int ready_pipe[2];
  int go_pipe[2];
  if (::pipe(ready_pipe) != 0 || ::pipe(go_pipe) != 0)
    return make_error(ErrorKind::kBackend, "pipe failed");

  std::string redis_url = s.redis;
  std::optional<FaultProxy> proxy;
  const bool redis_faults = std::any_of(s.faults.begin(), s.faults.end(), [](const Fault& f) {
    return f.kind == Fault::Kind::kRedisDown;
  });
  if (redis_faults) {
    auto upstream = RedisUrl::parse(s.redis);
    if (!upstream) return std::unexpected(upstream.error());
    auto started =
        start_fault_proxy(*upstream, (dir.path() / "redis-proxy.sock").string(), s.faults,
                          go_pipe[0], {go_pipe[1], ready_pipe[0], ready_pipe[1]});
    if (!started) return std::unexpected(started.error());
    proxy = std::move(*started);
    redis_url = proxy->url;
  }
  std::string l3_url = s.l3;
  std::optional<FaultProxy> l3_proxy;
  const bool l3_faults = std::any_of(s.faults.begin(), s.faults.end(),
                                     [](const Fault& f) { return f.kind == Fault::Kind::kL3Down; });
  if (l3_faults) {
    auto upstream = memcached_upstream(s.l3);
    if (!upstream) return std::unexpected(upstream.error());
    auto started =
        start_fault_proxy(*upstream, (dir.path() / "l3-proxy.sock").string(), s.faults, go_pipe[0],
                          {go_pipe[1], ready_pipe[0], ready_pipe[1]}, Fault::Kind::kL3Down);
    if (!started) return std::unexpected(started.error());
    l3_proxy = std::move(*started);
    l3_url = l3_proxy->url;
  }

  std::vector<pid_t> pids;
  std::vector<int> out_fds;
  for (int i = 0; i < s.processes; ++i) {
    int out[2];
    if (::pipe(out) != 0) break;
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::close(ready_pipe[0]);
      ::close(go_pipe[1]);
      ::close(out[0]);
      for (int fd : out_fds) ::close(fd);
      run_worker(s, i, db, redis_url, l3_url, refusing, prefix, db_load, ready_pipe[1], go_pipe[0],
                 out[1]);
    }
    ::close(out[1]);
    if (pid < 0) {
      ::close(out[0]);
      break;
    }
    pids.push_back(pid);
    out_fds.push_back(out[0]);
  }
  ::close(ready_pipe[1]);
  ::close(go_pipe[0]);
  for (std::size_t i = 0; i < pids.size(); ++i) {
    char c;
    ssize_t n;
    while ((n = ::read(ready_pipe[0], &c, 1)) < 0 && errno == EINTR) {
    }
    if (n <= 0) break;
  }
  const auto t0 = SteadyClock::now();
  ::close(go_pipe[1]);  // EOF releases the workers (and starts the proxy's timeline)
  ::close(ready_pipe[0]);

  RunReport report;
  report.protect = std::string(protection_name(s.protect));
  report.processes = s.processes;
  report.failed_workers = s.processes - static_cast<int>(pids.size());
  const bool show_progress = s.progress && ::isatty(STDERR_FILENO);
  std::vector<nlohmann::json> progress(pids.size());
  std::vector<nlohmann::json> finals(pids.size());
  WorkerLines lines(out_fds);
  std::uint64_t last_requests = 0, last_db = 0;
  double last_t = 0;
  while (lines.poll_once(200, [&](std::size_t worker, const std::string& line) {
    auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.contains("type")) return;
    if (j["type"] == "progress") progress[worker] = j;
    if (j["type"] == "final") finals[worker] = std::move(j);
    if (j.is_object() && j["type"] == "error" && report.first_error.empty()) {
      report.first_error = j["error"].get<std::string>();
    }
  })) {
    if (!show_progress) continue;
    std::uint64_t req = 0, err = 0, dbq = 0;
    for (const auto& p : progress) {
      if (!p.is_object()) continue;
      req += p["requests"].get<std::uint64_t>();
      err += p["errors"].get<std::uint64_t>();
      dbq += p["db_queries"].get<std::uint64_t>();
    }
    const double t = std::chrono::duration<double>(SteadyClock::now() - t0).count();
    if (t - last_t >= 1.0) {
      fmt::print(stderr, "\r  {:>5.1f} s   {:>9} requests/s   {:>7} db queries/s   {:>7} errors   ",
                 t, thousands(static_cast<std::uint64_t>((req - last_requests) / (t - last_t))),
                 thousands(static_cast<std::uint64_t>((dbq - last_db) / (t - last_t))),
                 thousands(err));
      last_t = t;
      last_requests = req;
      last_db = dbq;
    }
  }
  if (show_progress) fmt::print(stderr, "\r{:80}\r", "");
  for (std::size_t i = 0; i < pids.size(); ++i) {
    int status = 0;
    while (::waitpid(pids[i], &status, 0) < 0 && errno == EINTR) {
    }
    ::close(out_fds[i]);
  }
  for (const std::optional<FaultProxy>* stopping : {&proxy, &l3_proxy}) {
    if (!*stopping) continue;
    ::kill((*stopping)->pid, SIGKILL);
    int status = 0;
    while (::waitpid((*stopping)->pid, &status, 0) < 0 && errno == EINTR) {
    }
  }

  // Merge the workers' timelines.
  std::vector<std::vector<std::uint32_t>> latencies_by_second;
  std::vector<std::chrono::nanoseconds> all_latencies;
  std::vector<LoadEvent> load_events;
  std::map<std::string, HotKeyReport> hot_keys;
  for (std::size_t worker = 0; worker < finals.size(); ++worker) {
    const auto& f = finals[worker];
    if (!f.is_object() || f["type"] != "final") {
      ++report.failed_workers;
      continue;
    }
    for (const auto& [key, d] : f["hot_keys"].items()) {
      HotKeyReport& h = hot_keys[key];
      h.key = key;
      h.by_process.push_back({.process = static_cast<int>(worker),
                              .detected_at_s = d["detected_at_s"].get<double>(),
                              .rate = d["rate"].get<double>(),
                              .previous_rate = d["previous_rate"].get<double>(),
                              .previous_rate_max = d["previous_rate_max"].get<double>(),
                              .viral = d["viral"].get<bool>(),
                              .load_waits = d["load_waits"].get<std::uint64_t>()});
    }
    report.db_queries += f["db_queries"].get<std::uint64_t>();
    report.stale_served += f["stale_served"].get<std::uint64_t>();
    report.load_waits += f["load_waits"].get<std::uint64_t>();
    report.early_refreshes += f["early_refreshes"].get<std::uint64_t>();
    report.refreshes_dropped += f["refreshes_dropped"].get<std::uint64_t>();
    report.ttl_lengthened += f["ttl_lengthened"].get<std::uint64_t>();
    report.ttl_shortened += f["ttl_shortened"].get<std::uint64_t>();
    report.breaker_trips += f["breaker_trips"].get<std::uint64_t>();
    report.redis_errors += f["redis_errors"].get<std::uint64_t>();
    report.fleet_waits += f["fleet_waits"].get<std::uint64_t>();
    report.announcements_received += f["announcements_received"].get<std::uint64_t>();
    for (const auto& load : f["loads"]) {
      const auto at = SteadyClock::time_point(SteadyClock::duration(load[1].get<std::int64_t>()));
      load_events.push_back({.key = load[0].get<std::string>(),
                             .t_s = std::chrono::duration<double>(at - t0).count(),
                             .refreshed_version = load[2].get<std::uint64_t>()});
    }
    report.db_shed += f["db_shed"].get<std::uint64_t>();
    report.rate_limited += f["rate_limited"].get<std::uint64_t>();
    report.batch_queries += f["batch_queries"].get<std::uint64_t>();
    report.l3_hits += f["l3_hits"].get<std::uint64_t>();
    report.l3_errors += f["l3_errors"].get<std::uint64_t>();
    report.l3_rejected += f["l3_rejected"].get<std::uint64_t>();
    report.tag_invalidations += f["tag_invalidations"].get<std::uint64_t>();
    report.rate_limiter_local_decisions += f["rate_limiter_local_decisions"].get<std::uint64_t>();
    for (const auto& [kind, count] : f["errors_by_kind"].items()) {
      if (report.errors_by_kind[kind] == 0 && report.first_error.empty())
        report.first_error = f["first_error_of_kind"].value(kind, std::string());
      report.errors_by_kind[kind] += count.get<std::uint64_t>();
    }
    const auto& timeline = f["timeline"];
    if (report.timeline.size() < timeline.size()) {
      report.timeline.resize(timeline.size());
      latencies_by_second.resize(timeline.size());
    }
    for (std::size_t sec = 0; sec < timeline.size(); ++sec) {
      const auto& b = timeline[sec];
      SecondReport& r = report.timeline[sec];
      r.t = static_cast<int>(sec);
      r.requests += b["requests"].get<std::uint64_t>();
      r.errors += b["errors"].get<std::uint64_t>();
      r.db_queries += b["db_queries"].get<std::uint64_t>();
      r.stale_served += b["stale"].get<std::uint64_t>();
      r.load_waits += b["load_waits"].get<std::uint64_t>();
      r.early_refreshes += b["early_refreshes"].get<std::uint64_t>();
      r.redis_errors += b["redis_errors"].get<std::uint64_t>();
      r.rate_limited += b["rate_limited"].get<std::uint64_t>();
      const auto& admitted = b["admitted_by_client"];
      if (r.admitted_by_client.size() < admitted.size())
        r.admitted_by_client.resize(admitted.size());
      for (std::size_t c = 0; c < admitted.size(); ++c)
        r.admitted_by_client[c] += admitted[c].get<std::uint64_t>();
      for (const auto& hot : b["hot_keys"]) {
        const std::string key = hot["key"].get<std::string>();
        auto it = std::find_if(r.hot_keys.begin(), r.hot_keys.end(),
                               [&](const SecondHotKey& h) { return h.key == key; });
        if (it == r.hot_keys.end()) it = r.hot_keys.insert(r.hot_keys.end(), {.key = key});
        it->rate += hot["rate"].get<double>();
        ++it->processes;
      }
      report.wrong_values += b["wrong"].get<std::uint64_t>();
      for (auto us : b["latencies_us"]) {
        const auto v = us.get<std::uint32_t>();
        latencies_by_second[sec].push_back(v);
        all_latencies.emplace_back(std::chrono::microseconds(v));
      }
    }
  }
  for (auto& [key, h] : hot_keys) report.hot_keys.push_back(std::move(h));
  for (std::size_t sec = 0; sec < report.timeline.size(); ++sec) {
    SecondReport& r = report.timeline[sec];
    report.requests += r.requests;
    report.errors += r.errors;
    std::vector<std::chrono::nanoseconds> samples;
    samples.reserve(latencies_by_second[sec].size());
    for (auto us : latencies_by_second[sec]) samples.emplace_back(std::chrono::microseconds(us));
    r.p99_ms = summarize(std::move(samples)).p99_ms;
  }
  report.latency = summarize(std::move(all_latencies));
  // Duplicates: loads of a key less than half a TTL after its previous load.
  const auto duplicates =
      count_duplicate_loads(std::move(load_events), s.ttl_ms / 2000.0, report.timeline.size());
  std::vector<std::uint64_t> redis_by_second;
  for (std::size_t sec = 0; sec < report.timeline.size(); ++sec) {
    report.timeline[sec].duplicate_loads = duplicates.by_second[sec];
    redis_by_second.push_back(report.timeline[sec].redis_errors);
  }
  report.duplicate_loads = duplicates.total;
  report.redis_error_window = redis_error_window(redis_by_second);
  report.duplicate_loads_outside_redis_errors =
      duplicates_outside(duplicates, report.redis_error_window);
  report.goodput = static_cast<double>(report.requests - std::min(report.errors, report.requests)) /
                   s.duration_s;
  if (db_load) {
    report.db_capacity = s.db_capacity;
    report.db_peak = db_load->peak();  // every worker has exited
  }
  return report;
}

}  // namespace herdguard::cli
