// The Protector's Prometheus metrics against the real tools: promtool checks
// the exposition, and a real Prometheus server (started here on loopback)
// scrapes a /metrics endpoint and reports the same db_queries_total as the
// library's snapshot.
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <latch>
#include <mutex>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>
#include <thread>
#include <vector>

#include "cli_runner.h"
#include "herdguard/herdguard.h"
#include "loopback_port.h"

namespace herdguard {
namespace {

using namespace std::chrono_literals;

using testing::CliRun;

CliRun shell(const std::string& command) { return testing::run_command(command); }

class TempDir {
 public:
  TempDir() {
    std::string pattern =
        (std::filesystem::temp_directory_path() / "herdguard-obs-XXXXXX").string();
    if (::mkdtemp(pattern.data()) != nullptr) path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// A protector with Prometheus series, over a repository that takes a little
// time, after a herd on one key plus a few other requests.
struct Instrumented {
  std::shared_ptr<MetricsRegistry> registry = std::make_shared<MetricsRegistry>();
  std::unique_ptr<Protector> protector;

  Instrumented() {
    auto repo = std::make_shared<CallbackRepository>(
        [](std::string_view key, Deadline) -> Result<std::optional<std::string>> {
          std::this_thread::sleep_for(20ms);  // stands for query time, so the herd overlaps
          if (key.starts_with("missing")) return std::optional<std::string>();
          return std::optional<std::string>("v");
        });
    ProtectorOptions options{.metrics_registry = registry, .key_patterns = {"product:", "user:"}};
    auto created = Protector::create(std::move(options), repo);
    EXPECT_TRUE(created) << created.error().to_string();
    protector = std::move(*created);
  }

  void herd() {
    std::latch start(50);
    std::vector<std::thread> threads;
    for (int i = 0; i < 50; ++i) {
      threads.emplace_back([&] {
        start.arrive_and_wait();
        EXPECT_TRUE(protector->get("product:1"));
      });
    }
    for (auto& t : threads) t.join();
    EXPECT_TRUE(protector->get("product:1"));
    EXPECT_TRUE(protector->get("user:7"));
    EXPECT_FALSE(protector->get("missing:1"));
  }
};

TEST(Observability, ExpositionPassesPromtoolCheckMetrics) {
  Instrumented app;
  app.herd();
  TempDir dir;
  const std::string file = dir / "metrics.txt";
  std::ofstream(file) << app.registry->render();
  CliRun check = shell("promtool check metrics < '" + file + "'");
  EXPECT_EQ(check.exit_code, 0) << check.output;
  EXPECT_EQ(check.output, "") << "promtool lint findings:\n" << check.output;

  const std::string text = app.registry->render();
  const ProtectionMetrics m = app.protector->metrics();
  EXPECT_NE(text.find("thundering_herd_db_queries_total{cache=\"default\"} " +
                      std::to_string(m.db_queries) + "\n"),
            std::string::npos)
      << text;
  EXPECT_NE(
      text.find("thundering_herd_requests_total{cache=\"default\",result=\"ok\",layer=\"load\","
                "pattern=\"product:\"} 50\n"),
      std::string::npos)
      << text;
  EXPECT_NE(text.find("thundering_herd_requests_total{cache=\"default\",result=\"ok\",layer=\"l1\","
                      "pattern=\"product:\"} 1\n"),
            std::string::npos);
  EXPECT_NE(text.find("result=\"not_found\",layer=\"load\",pattern=\"other\"} 1\n"),
            std::string::npos);
  EXPECT_NE(
      text.find(
          "thundering_herd_single_flight_wait_duration_seconds_count{cache=\"default\"} 52\n"),
      std::string::npos)
      << text;
  EXPECT_EQ(text.find("product:1"), std::string::npos) << "a raw key leaked into a label";
}

// Hot keys are exported one sample per key, the key as a label value:
// bounded (top_k), escaped, and what promtool accepts, even for a key of
// quotes, backslashes, newlines and non-ASCII bytes.
TEST(Observability, HotKeysAreExportedAsBoundedEscapedLabelsThatPromtoolAccepts) {
  auto registry = std::make_shared<MetricsRegistry>();
  auto clock = std::make_shared<ManualClock>();
  ProtectorOptions options{.metrics_registry = registry, .metrics_name = "hot"};
  options.clock = clock;
  options.hot_keys = {.top_k = 2, .min_rate = 100, .viral_min_rate = 100, .sample_one_in = 1};
  auto created = Protector::create(
      std::move(options), std::make_shared<CallbackRepository>([](std::string_view, Deadline) {
        return Result<std::optional<std::string>>(std::optional<std::string>("v"));
      }));
  ASSERT_TRUE(created) << created.error().to_string();
  Protector& protector = **created;
  const std::string odd = std::string("we\"ird\\key\n\xff\x01", 13);
  for (int bucket = 0; bucket < 5; ++bucket) {
    for (int i = 0; i < 60; ++i) ASSERT_TRUE(protector.get("product:7"));
    for (int i = 0; i < 40; ++i) ASSERT_TRUE(protector.get(odd));
    for (int i = 0; i < 30; ++i) ASSERT_TRUE(protector.get("third"));  // hot, but not top 2
    clock->advance(250ms);
  }
  ASSERT_EQ(protector.hot_keys().size(), 2u);
  const std::string text = registry->render();
  EXPECT_NE(text.find("thundering_herd_hot_keys{cache=\"hot\",key=\"product:7\"} 240\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("thundering_herd_hot_keys{cache=\"hot\",key=\"we\\\"ird\\\\key???\"} 160\n"),
            std::string::npos)
      << text;
  EXPECT_EQ(text.find("key=\"third\""), std::string::npos) << text;
  EXPECT_NE(text.find("thundering_herd_hot_keys_detected_total{cache=\"hot\"} 2\n"),
            std::string::npos)
      << text;
  TempDir dir;
  const std::string file = dir / "metrics.txt";
  std::ofstream(file) << text;
  CliRun check = shell("promtool check metrics < '" + file + "'");
  EXPECT_EQ(check.exit_code, 0) << check.output;
  EXPECT_EQ(check.output, "") << "promtool lint findings:\n" << check.output;
}

TEST(Observability, MetricsServerServesMetricsAndHealth) {
  Instrumented app;
  app.herd();
  bool healthy = true;
  auto server = MetricsServer::start({.health = [&]() -> std::optional<std::string> {
                                       if (healthy) return std::nullopt;
                                       return std::string("circuit breaker open");
                                     }},
                                     app.registry);
  ASSERT_TRUE(server) << server.error().to_string();
  httplib::Client client("127.0.0.1", (*server)->port());
  auto metrics = client.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_EQ(metrics->status, 200);
  EXPECT_NE(metrics->body.find("thundering_herd_db_queries_total"), std::string::npos);
  EXPECT_NE(metrics->get_header_value("Content-Type").find("text/plain"), std::string::npos);
  auto ok = client.Get("/healthz");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);
  healthy = false;
  auto sick = client.Get("/healthz");
  ASSERT_TRUE(sick);
  EXPECT_EQ(sick->status, 503);
  EXPECT_NE(sick->body.find("circuit breaker open"), std::string::npos);
  EXPECT_FALSE(MetricsServer::start({.port = 70000}, app.registry));
  EXPECT_FALSE(MetricsServer::start({.port = (*server)->port()}, app.registry)) << "port in use";
}

// A real Prometheus, scraping our endpoint every 200 ms.
class PrometheusServer {
 public:
  PrometheusServer(int target_port, const TempDir& dir) {
    port_ = free_port();
    const std::string config = dir / "prometheus.yml";
    std::ofstream(config) << "global:\n  scrape_interval: 200ms\n  scrape_timeout: 150ms\n"
                          << "scrape_configs:\n  - job_name: herdguard\n    static_configs:\n"
                          << "      - targets: ['127.0.0.1:" << target_port << "']\n";
    std::vector<std::string> args = {
        "prometheus", "--config.file=" + config, "--storage.tsdb.path=" + (dir / "tsdb"),
        "--web.listen-address=127.0.0.1:" + std::to_string(port_), "--log.level=error"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const std::string log = dir / "prometheus.log";
    pid_ = ::fork();
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (std::freopen(log.c_str(), "w", stderr) == nullptr) ::_exit(126);
      ::execvp("prometheus", argv.data());
      ::_exit(127);
    }
  }
  ~PrometheusServer() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      int status = 0;
      ::waitpid(pid_, &status, 0);
    }
  }
  int port() const { return port_; }
  bool exited() {
    int status = 0;
    return pid_ > 0 && ::waitpid(pid_, &status, WNOHANG) == pid_ && (pid_ = -1, true);
  }

 private:
  static int free_port() { return testing::free_loopback_port(); }
  int port_ = 0;
  pid_t pid_ = -1;
};

TEST(Observability, RealPrometheusScrapesTheSameDbQueriesAsTheSnapshot) {
  Instrumented app;
  app.herd();
  const std::uint64_t expected = app.protector->metrics().db_queries;
  ASSERT_GE(expected, 1u);
  auto server = MetricsServer::start({}, app.registry);
  ASSERT_TRUE(server);
  TempDir dir;
  PrometheusServer prometheus((*server)->port(), dir);
  httplib::Client api("127.0.0.1", prometheus.port());
  api.set_connection_timeout(1, 0);
  // Poll the query API until a scrape has landed (Prometheus starts, then
  // scrapes every 200 ms); bounded so a broken set-up fails instead of hanging.
  const Deadline give_up = Deadline::after(60s);
  std::string last;
  double seen = -1;
  while (!give_up.expired() && !prometheus.exited()) {
    auto r = api.Get("/api/v1/query?query=thundering_herd_db_queries_total");
    if (r && r->status == 200) {
      last = r->body;
      auto j = nlohmann::json::parse(r->body, nullptr, false);
      if (!j.is_discarded() && j["status"] == "success" && !j["data"]["result"].empty()) {
        seen = std::stod(j["data"]["result"][0]["value"][1].get<std::string>());
        break;
      }
    }
    std::this_thread::sleep_for(100ms);  // polling an external server's API
  }
  ASSERT_GE(seen, 0) << "no sample from Prometheus; last answer: " << last
                     << "\nlog: " << shell("cat '" + (dir / "prometheus.log") + "'").output;
  EXPECT_EQ(static_cast<std::uint64_t>(seen), expected);
}

template <typename Condition>
void testing_wait(Condition condition) {
  const Deadline give_up = Deadline::after(30s);
  while (!condition() && !give_up.expired()) std::this_thread::yield();
  ASSERT_TRUE(condition());
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Every thundering_herd_* name in `text`, with histogram sample suffixes
// (_bucket, _sum, _count) mapped to their family.
std::set<std::string> metric_names_in(const std::string& text,
                                      const std::set<std::string>& families) {
  std::set<std::string> out;
  const std::regex name("thundering_herd_[a-z0-9_]+");
  for (auto it = std::sregex_iterator(text.begin(), text.end(), name); it != std::sregex_iterator();
       ++it) {
    std::string n = it->str();
    for (const char* suffix : {"_bucket", "_sum", "_count"}) {
      const std::string sfx(suffix);
      if (n.size() > sfx.size() && n.ends_with(sfx) &&
          families.count(n.substr(0, n.size() - sfx.size()))) {
        n = n.substr(0, n.size() - sfx.size());
      }
    }
    out.insert(n);
  }
  return out;
}

TEST(Observability, DashboardAndAlertsUseOnlyExportedMetrics) {
  Instrumented app;
  const auto exported_list = app.registry->names();
  const std::set<std::string> exported(exported_list.begin(), exported_list.end());

  const std::string dashboard_text =
      read_text(std::string(HERDGUARD_SOURCE_DIR) + "/deploy/grafana/dashboard.json");
  auto dashboard = nlohmann::json::parse(dashboard_text, nullptr, false);
  ASSERT_FALSE(dashboard.is_discarded()) << "dashboard.json is not valid JSON";
  ASSERT_TRUE(dashboard.contains("panels"));
  std::string exprs;
  int targets = 0;
  for (const auto& panel : dashboard["panels"]) {
    ASSERT_TRUE(panel.contains("title"));
    for (const auto& target : panel["targets"]) {
      exprs += target["expr"].get<std::string>() + "\n";
      ++targets;
    }
  }
  EXPECT_GE(targets, 6);
  const auto used_by_dashboard = metric_names_in(exprs, exported);
  EXPECT_FALSE(used_by_dashboard.empty());
  for (const std::string& name : used_by_dashboard) {
    EXPECT_TRUE(exported.count(name))
        << "dashboard.json uses " << name << ", which herdguard does not export";
  }
  // The panels the operators need are there.
  for (const char* needed :
       {"thundering_herd_requests_total", "thundering_herd_cache_hits_total",
        "thundering_herd_db_queries_total", "thundering_herd_single_flight_wait_duration_seconds",
        "thundering_herd_circuit_breaker_state", "thundering_herd_stale_served_total",
        "thundering_herd_fallback_total"}) {
    EXPECT_TRUE(used_by_dashboard.count(needed)) << "no panel shows " << needed;
  }

  const std::string alerts =
      read_text(std::string(HERDGUARD_SOURCE_DIR) + "/deploy/prometheus/alerts.yml");
  const auto used_by_alerts = metric_names_in(alerts, exported);
  EXPECT_FALSE(used_by_alerts.empty());
  for (const std::string& name : used_by_alerts) {
    EXPECT_TRUE(exported.count(name))
        << "alerts.yml uses " << name << ", which herdguard does not export";
  }
}

// --- Alert hooks ------------------------------------------------------------

// An HTTP receiver for the webhook: records each POSTed body; can be made to
// hold every request until released (a hung receiver).
class Receiver {
 public:
  explicit Receiver(bool hang = false) : hang_(hang) {
    server_.Post("/alerts", [this](const httplib::Request& req, httplib::Response& res) {
      {
        std::unique_lock lock(mutex_);
        bodies_.push_back(req.body);
        changed_.notify_all();
        changed_.wait(lock, [this] { return !hang_; });
      }
      res.set_content("ok", "text/plain");
    });
    port_ = server_.bind_to_any_port("127.0.0.1");
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    while (!server_.is_running()) std::this_thread::yield();
  }
  ~Receiver() {
    release();
    server_.stop();
    thread_.join();
  }
  void release() {
    std::lock_guard lock(mutex_);
    hang_ = false;
    changed_.notify_all();
  }
  // Waits until a body satisfies `match`; returns it (or "" after 30 s).
  template <typename Match>
  std::string wait_for(Match match) {
    std::unique_lock lock(mutex_);
    std::string found;
    changed_.wait_for(lock, 30s, [&] {
      for (const auto& b : bodies_) {
        if (match(b)) {
          found = b;
          return true;
        }
      }
      return false;
    });
    return found;
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_) + "/alerts"; }

 private:
  httplib::Server server_;
  std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<std::string> bodies_;  // guarded by mutex_
  bool hang_;                        // guarded by mutex_
  int port_ = 0;
  std::thread thread_;
};

std::unique_ptr<Protector> failing_protector(std::shared_ptr<AlertSink> sink, Duration interval) {
  auto repo = std::make_shared<CallbackRepository>(
      [](std::string_view, Deadline) -> Result<std::optional<std::string>> {
        return make_error(ErrorKind::kBackend, "database down");
      });
  ProtectorOptions options{.metrics_name = "shop",
                           .key_patterns = {"product:"},
                           .alert_sinks = {std::move(sink)},
                           .alert_interval = interval};
  options.breaker.consecutive_failures = 2;
  auto p = Protector::create(std::move(options), repo);
  EXPECT_TRUE(p) << p.error().to_string();
  return std::move(*p);
}

TEST(AlertHooks, WebhookReceivesBreakerChangesAndFailuresAsJson) {
  Receiver receiver;
  auto sink = WebhookAlertSink::create({.url = receiver.url()});
  ASSERT_TRUE(sink) << sink.error().to_string();
  auto protector = failing_protector(*sink, Duration::zero());
  for (int i = 0; i < 3; ++i) EXPECT_FALSE(protector->get("product:42"));

  const std::string opened = receiver.wait_for(
      [](const std::string& b) { return b.find("\"breaker_state_change\"") != std::string::npos; });
  ASSERT_FALSE(opened.empty()) << "no breaker alert arrived";
  auto event = nlohmann::json::parse(opened);
  EXPECT_EQ(event["cache"], "shop");
  EXPECT_EQ(event["from"], "closed");
  EXPECT_EQ(event["to"], "open");
  const std::string failure = receiver.wait_for(
      [](const std::string& b) { return b.find("\"failure\"") != std::string::npos; });
  ASSERT_FALSE(failure.empty());
  auto failed = nlohmann::json::parse(failure);
  EXPECT_EQ(failed["pattern"], "product:");
  EXPECT_NE(failed["message"].get<std::string>().find("database down"), std::string::npos);
  EXPECT_EQ(failure.find("product:42"), std::string::npos) << "the raw key leaked into an alert";
}

TEST(AlertHooks, AHungReceiverNeitherSlowsNorFailsRequests) {
  Receiver receiver(/*hang=*/true);
  auto sink = WebhookAlertSink::create({.url = receiver.url(), .queue_capacity = 5});
  ASSERT_TRUE(sink);
  auto protector = failing_protector(*sink, Duration::zero());
  // The receiver holds the first POST; requests go on regardless, each
  // answered with the database's error (or circuit_open), never blocked.
  for (int i = 0; i < 200; ++i) {
    auto r = protector->get("product:" + std::to_string(i));
    ASSERT_FALSE(r);
    EXPECT_TRUE(r.error().kind == ErrorKind::kBackend || r.error().kind == ErrorKind::kCircuitOpen)
        << r.error().to_string();
  }
  EXPECT_GT((*sink)->dropped(), 0u) << "the bounded queue should have overflowed";
  receiver.release();
}

TEST(AlertHooks, ADeadReceiverCountsFailuresAndRequestsGoOn) {
  // A port nobody listens on.
  const int dead_port = testing::free_loopback_port();
  auto sink =
      WebhookAlertSink::create({.url = "http://127.0.0.1:" + std::to_string(dead_port) + "/x"});
  ASSERT_TRUE(sink);
  auto protector = failing_protector(*sink, Duration::zero());
  for (int i = 0; i < 20; ++i) EXPECT_FALSE(protector->get("product:1"));
  testing_wait([&] { return (*sink)->failed() > 0; });
  EXPECT_EQ((*sink)->delivered(), 0u);
}

TEST(AlertHooks, WebhookUrlsAreChecked) {
  EXPECT_FALSE(WebhookAlertSink::create({.url = "https://example/x"}));
  EXPECT_FALSE(WebhookAlertSink::create({.url = "http://:80/x"}));
  EXPECT_FALSE(WebhookAlertSink::create({.url = "http://host:99999/x"}));
  EXPECT_FALSE(WebhookAlertSink::create({.url = "http://host/x", .queue_capacity = 0}));
}

TEST(AlertHooks, FallbackAndFailureAlertsAreRateLimited) {
  struct Counting final : AlertSink {
    std::atomic<int> failures{0};
    void send(const AlertEvent& e) noexcept override {
      if (e.kind == AlertEvent::Kind::kFailure) failures.fetch_add(1);
    }
  };
  auto sink = std::make_shared<Counting>();
  auto protector = failing_protector(sink, std::chrono::hours(1));
  for (int i = 0; i < 50; ++i) EXPECT_FALSE(protector->get("product:1"));
  EXPECT_EQ(sink->failures.load(), 1);
}

}  // namespace
}  // namespace herdguard
