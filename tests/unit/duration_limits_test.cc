// Every duration option at Duration::max() ("forever"). ProtectorOptions::
// validate() documents which options saturate (instants computed with
// add_saturating, so "forever" means TimePoint::max()) and which are refused
// (single_flight.load_timeout, and the Redis client's and lock's durations).
// For the saturating ones these tests check that the Protector really keeps
// working at the limit: signed overflow used to wrap fresh_until into the past,
// which silently turned caching off.
#include <gtest/gtest.h>

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "herdguard/alert_sink.h"
#include "herdguard/protector.h"
#include "herdguard/redis_client.h"
#include "herdguard/redis_lock.h"
#include "test_support.h"

namespace herdguard {
namespace {

using std::chrono::hours;
using std::chrono::seconds;
using testing::Gate;
using testing::wait_until;

constexpr Duration kForever = Duration::max();
// Far past any TTL a test sets explicitly, yet well inside TimePoint's range
// from ManualClock's start (2030): 2030 + 100 years < 2262.
constexpr Duration kCentury = hours(24 * 365 * 100);

// A repository whose answer the test sets, counting its calls. Loads can be
// held at a gate to keep them "in the middle".
class CountingRepository {
 public:
  using Answer = Result<std::optional<std::string>>;

  void answer(Answer a) {
    std::lock_guard lock(mutex_);
    answer_ = std::move(a);
  }
  void hold_loads_at(Gate* gate) { gate_.store(gate); }
  int calls() const { return calls_.load(); }

  std::shared_ptr<Repository> repository() {
    return std::make_shared<CallbackRepository>([this](std::string_view, Deadline) {
      calls_.fetch_add(1);
      if (Gate* gate = gate_.load()) gate->wait();
      std::lock_guard lock(mutex_);
      return answer_;
    });
  }

 private:
  std::atomic<int> calls_{0};
  std::atomic<Gate*> gate_{nullptr};
  std::mutex mutex_;
  Answer answer_ = std::optional<std::string>("v1");
};

// Records every alert it is sent.
class RecordingAlertSink final : public AlertSink {
 public:
  void send(const AlertEvent& event) noexcept override {
    std::lock_guard lock(mutex_);
    events_.push_back(event);
  }
  std::size_t count(AlertEvent::Kind kind) {
    std::lock_guard lock(mutex_);
    std::size_t n = 0;
    for (const auto& e : events_) n += e.kind == kind ? 1 : 0;
    return n;
  }

 private:
  std::mutex mutex_;
  std::vector<AlertEvent> events_;
};

// A Protector on a ManualClock over a CountingRepository; TTLs are not
// jittered unless a test asks, so instants are exact.
struct Fixture {
  explicit Fixture(ProtectorOptions options = {}) {
    options.clock = clock;
    auto p = Protector::create(std::move(options), repo.repository());
    EXPECT_TRUE(p.has_value()) << p.error().to_string();
    if (p) protector = std::move(*p);
  }
  std::shared_ptr<ManualClock> clock = std::make_shared<ManualClock>();
  CountingRepository repo;
  std::unique_ptr<Protector> protector;
};

ProtectorOptions exact(ProtectorOptions options) {
  options.ttl_jitter = 0;
  return options;
}

// ---------------------------------------------------------------------------
// Validation: which options accept Duration::max() and which refuse it.

struct DurationOption {
  const char* name;
  std::function<void(ProtectorOptions&)> set_to_max;
};

// Every duration option validate() documents as saturating, each set to
// Duration::max() with the others left at valid values.
std::vector<DurationOption> saturating_options() {
  return {
      {"ttl", [](ProtectorOptions& o) { o.ttl = kForever; }},
      {"stale_while_revalidate", [](ProtectorOptions& o) { o.stale_while_revalidate = kForever; }},
      {"fail_safe_max_staleness",
       [](ProtectorOptions& o) { o.fail_safe_max_staleness = kForever; }},
      {"negative_ttl", [](ProtectorOptions& o) { o.negative_ttl = kForever; }},
      {"request_timeout", [](ProtectorOptions& o) { o.request_timeout = kForever; }},
      {"fleet_retry_interval", [](ProtectorOptions& o) { o.fleet_retry_interval = kForever; }},
      {"fleet_poll_max", [](ProtectorOptions& o) { o.fleet_poll_max = kForever; }},
      {"fleet_poll_min (with fleet_poll_max)",
       [](ProtectorOptions& o) {
         o.fleet_poll_min = kForever;
         o.fleet_poll_max = kForever;
       }},
      {"l1_max_ttl", [](ProtectorOptions& o) { o.l1_max_ttl = kForever; }},
      {"alert_interval", [](ProtectorOptions& o) { o.alert_interval = kForever; }},
      {"breaker.window", [](ProtectorOptions& o) { o.breaker.window = kForever; }},
      {"breaker.slow_call_threshold",
       [](ProtectorOptions& o) { o.breaker.slow_call_threshold = kForever; }},
      {"breaker.open_timeout", [](ProtectorOptions& o) { o.breaker.open_timeout = kForever; }},
  };
}

TEST(DurationLimits, EverySaturatingOptionIsAcceptedAtMax) {
  for (const DurationOption& option : saturating_options()) {
    SCOPED_TRACE(option.name);
    ProtectorOptions options;
    option.set_to_max(options);
    auto valid = options.validate();
    EXPECT_TRUE(valid.has_value()) << valid.error().to_string();
  }
}

TEST(DurationLimits, EverySaturatingOptionAtMaxStillLoadsAndCaches) {
  for (const DurationOption& option : saturating_options()) {
    SCOPED_TRACE(option.name);
    ProtectorOptions options;
    option.set_to_max(options);
    Fixture f(std::move(options));
    ASSERT_NE(f.protector, nullptr);
    for (int i = 0; i < 3; ++i) {
      auto v = f.protector->get("k");
      ASSERT_TRUE(v.has_value()) << v.error().to_string();
      EXPECT_EQ(*v, "v1");
    }
    EXPECT_EQ(f.repo.calls(), 1);
  }
}

TEST(DurationLimits, LoadTimeoutAtMaxIsRefusedNamingTheField) {
  ProtectorOptions options{.single_flight = {.load_timeout = kForever}};
  auto valid = options.validate();
  ASSERT_FALSE(valid.has_value());
  EXPECT_EQ(valid.error().kind, ErrorKind::kInvalidArgument);
  EXPECT_NE(valid.error().message.find("single_flight"), std::string::npos)
      << valid.error().message;
  EXPECT_NE(valid.error().message.find("load_timeout"), std::string::npos) << valid.error().message;

  CountingRepository repo;
  auto created = Protector::create(options, repo.repository());
  ASSERT_FALSE(created.has_value());
  EXPECT_EQ(created.error().kind, ErrorKind::kInvalidArgument);
  EXPECT_NE(created.error().message.find("load_timeout"), std::string::npos)
      << created.error().message;
  EXPECT_EQ(repo.calls(), 0);
}

TEST(DurationLimits, LoadTimeoutIsAcceptedUpToOneHourAndRefusedPastIt) {
  EXPECT_TRUE((ProtectorOptions{.single_flight = {.load_timeout = hours(1)}}.validate()));
  auto over =
      ProtectorOptions{.single_flight = {.load_timeout = hours(1) + Duration(1)}}.validate();
  ASSERT_FALSE(over.has_value());
  EXPECT_NE(over.error().message.find("load_timeout"), std::string::npos) << over.error().message;
}

// ---------------------------------------------------------------------------
// Saturating options: the behaviour at the limit.

// Regression: fresh_until = now + ttl overflowed and wrapped into the past, so
// every get went to the repository.
TEST(DurationLimits, TtlAtMaxCachesAndMakesOneRepositoryCall) {
  Fixture f(exact({.ttl = kForever}));
  for (int i = 0; i < 3; ++i) {
    auto v = f.protector->get("k");
    ASSERT_TRUE(v.has_value()) << v.error().to_string();
    EXPECT_EQ(*v, "v1");
  }
  EXPECT_EQ(f.repo.calls(), 1);
  EXPECT_EQ(f.protector->metrics().cache_hits, 2u);
}

TEST(DurationLimits, TtlAtMaxIsFreshUntilTheEndOfTime) {
  Fixture f(exact({.ttl = kForever}));
  ASSERT_TRUE(f.protector->get("k"));
  auto entry = f.protector->peek("k");
  ASSERT_TRUE(entry.has_value());
  EXPECT_EQ(entry->fresh_until, TimePoint::max());
  EXPECT_EQ(entry->stale_until, TimePoint::max());

  f.repo.answer(std::optional<std::string>("v2"));
  f.clock->advance(kCentury);
  auto v = f.protector->get("k");
  ASSERT_TRUE(v.has_value()) << v.error().to_string();
  EXPECT_EQ(*v, "v1");
  EXPECT_EQ(f.repo.calls(), 1);
}

TEST(DurationLimits, TtlAtMaxWithJitterStillCaches) {
  // Jitter scales the TTL by up to 1.2: must clamp at max(), not wrap.
  Fixture f({.ttl = kForever, .ttl_jitter = 0.2});
  for (int i = 0; i < 20; ++i) {
    const std::string key = "k" + std::to_string(i);
    ASSERT_TRUE(f.protector->get(key));
    auto entry = f.protector->peek(key);
    ASSERT_TRUE(entry.has_value());
    EXPECT_GT(entry->fresh_until, f.clock->now() + kCentury);
  }
  f.clock->advance(kCentury);
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(f.protector->get("k" + std::to_string(i)));
  EXPECT_EQ(f.repo.calls(), 20);
}

TEST(DurationLimits, SetWithTtlMaxIsFreshUntilTheEndOfTime) {
  Fixture f(exact({}));
  ASSERT_TRUE(f.protector->set("k", "written", kForever));
  auto entry = f.protector->peek("k");
  ASSERT_TRUE(entry.has_value());
  EXPECT_EQ(entry->fresh_until, TimePoint::max());
  f.clock->advance(kCentury);
  EXPECT_EQ(*f.protector->get("k"), "written");
  EXPECT_EQ(f.repo.calls(), 0);
}

TEST(DurationLimits, FailSafeMaxStalenessAtMaxServesAStaleValueYearsLater) {
  Fixture f(exact({.ttl = seconds(10), .fail_safe_max_staleness = kForever}));
  ASSERT_EQ(*f.protector->get("k"), "v1");
  auto entry = f.protector->peek("k");
  ASSERT_TRUE(entry.has_value());
  EXPECT_EQ(entry->fresh_until, f.clock->now() + seconds(10));
  EXPECT_EQ(entry->stale_until, TimePoint::max());

  f.clock->advance(kCentury);
  f.repo.answer(make_error(ErrorKind::kBackend, "database down"));
  auto v = f.protector->get("k");
  ASSERT_TRUE(v.has_value()) << v.error().to_string();
  EXPECT_EQ(*v, "v1");
  EXPECT_EQ(f.repo.calls(), 2);  // the expired entry was reloaded, and the load failed
  auto m = f.protector->metrics();
  EXPECT_EQ(m.stale_returns, 1u);
  EXPECT_EQ(m.fallbacks_stale, 1u);
  EXPECT_EQ(m.db_errors, 1u);
}

TEST(DurationLimits, NegativeTtlAtMaxLoadsAMissingKeyOnce) {
  Fixture f(exact({.negative_ttl = kForever}));
  f.repo.answer(std::optional<std::string>());
  for (int i = 0; i < 3; ++i) {
    auto v = f.protector->get("missing");
    ASSERT_FALSE(v.has_value());
    EXPECT_EQ(v.error().kind, ErrorKind::kNotFound);
  }
  EXPECT_EQ(f.repo.calls(), 1);
  auto entry = f.protector->peek("missing");
  ASSERT_TRUE(entry.has_value());
  EXPECT_TRUE(entry->negative);
  EXPECT_EQ(entry->fresh_until, TimePoint::max());

  f.repo.answer(std::optional<std::string>("appeared"));
  f.clock->advance(kCentury);
  auto later = f.protector->get("missing");
  ASSERT_FALSE(later.has_value());
  EXPECT_EQ(later.error().kind, ErrorKind::kNotFound);
  EXPECT_EQ(f.repo.calls(), 1);
}

TEST(DurationLimits, RequestTimeoutAtMaxStillReturnsLoadsHitsAndErrors) {
  Fixture f(exact({.request_timeout = kForever}));
  // A miss: the caller's deadline saturates; the load answers.
  auto loaded = f.protector->get("k");
  ASSERT_TRUE(loaded.has_value()) << loaded.error().to_string();
  EXPECT_EQ(*loaded, "v1");
  auto hit = f.protector->get_stale_while_revalidate("k");
  ASSERT_TRUE(hit.has_value()) << hit.error().to_string();
  EXPECT_EQ(*hit, "v1");
  // A failing load returns its error (the deadline did not expire at once,
  // or the repository would not have been called).
  f.repo.answer(make_error(ErrorKind::kBackend, "database down"));
  auto failed = f.protector->get("other");
  ASSERT_FALSE(failed.has_value());
  EXPECT_EQ(failed.error().kind, ErrorKind::kBackend);
  EXPECT_EQ(f.repo.calls(), 2);
}

TEST(DurationLimits, StaleWhileRevalidateAtMaxServesStaleYearsLaterAndRefreshes) {
  Fixture f(exact({.ttl = seconds(10),
                   .stale_while_revalidate = kForever,
                   .fail_safe_max_staleness = Duration::zero()}));
  ASSERT_EQ(*f.protector->get("k"), "v1");
  auto entry = f.protector->peek("k");
  ASSERT_TRUE(entry.has_value());
  EXPECT_EQ(entry->stale_until, TimePoint::max());

  f.clock->advance(kCentury);
  f.repo.answer(std::optional<std::string>("v2"));
  Gate gate;
  f.repo.hold_loads_at(&gate);
  // The refresh is held at the gate, so these answers came before it finished.
  for (int i = 0; i < 3; ++i) {
    auto v = f.protector->get_stale_while_revalidate("k");
    ASSERT_TRUE(v.has_value()) << v.error().to_string();
    EXPECT_EQ(*v, "v1");
  }
  EXPECT_EQ(f.protector->metrics().stale_returns, 3u);
  EXPECT_EQ(f.protector->metrics().background_refreshes, 1u);

  gate.open();
  wait_until([&] { return f.protector->metrics().loads_in_flight == 0; });
  EXPECT_EQ(f.repo.calls(), 2);
  EXPECT_EQ(*f.protector->get_stale_while_revalidate("k"), "v2");
}

TEST(DurationLimits, AlertIntervalOfACenturySendsTheFirstAlertAndNoMore) {
  auto sink = std::make_shared<RecordingAlertSink>();
  Fixture f(exact({.alert_sinks = {sink}, .alert_interval = kCentury}));
  f.repo.answer(make_error(ErrorKind::kBackend, "database down"));
  ASSERT_FALSE(f.protector->get("a"));
  EXPECT_EQ(sink->count(AlertEvent::Kind::kFailure), 1u);
  f.clock->advance(kCentury / 2);
  ASSERT_FALSE(f.protector->get("b"));
  EXPECT_EQ(sink->count(AlertEvent::Kind::kFailure), 1u);
}

// "At most one per alert_interval": with Duration::max() that is one, not none.
TEST(DurationLimits, AlertIntervalAtMaxSendsTheFirstAlertAndNoMore) {
  auto sink = std::make_shared<RecordingAlertSink>();
  Fixture f(exact({.alert_sinks = {sink}, .alert_interval = kForever}));
  f.repo.answer(make_error(ErrorKind::kBackend, "database down"));
  ASSERT_FALSE(f.protector->get("a"));
  EXPECT_EQ(sink->count(AlertEvent::Kind::kFailure), 1u);
  f.clock->advance(kCentury);
  ASSERT_FALSE(f.protector->get("b"));
  EXPECT_EQ(sink->count(AlertEvent::Kind::kFailure), 1u);
}

TEST(DurationLimits, BreakerOpenTimeoutAtMaxStaysOpenForYears) {
  Fixture f(exact({.breaker = {.consecutive_failures = 1, .open_timeout = kForever}}));
  f.repo.answer(make_error(ErrorKind::kBackend, "database down"));
  ASSERT_FALSE(f.protector->get("k"));
  ASSERT_EQ(f.protector->metrics().circuit_breaker_state, BreakerState::kOpen);

  f.repo.answer(std::optional<std::string>("recovered"));
  f.clock->advance(kCentury);
  auto v = f.protector->get("k");
  ASSERT_FALSE(v.has_value());
  EXPECT_EQ(v.error().kind, ErrorKind::kCircuitOpen);
  EXPECT_EQ(f.protector->metrics().circuit_breaker_state, BreakerState::kOpen);
  EXPECT_EQ(f.repo.calls(), 1);
}

TEST(DurationLimits, BreakerWindowAtMaxCountsCallsYearsApart) {
  // Only the rate rule can open it: 2 failures of 4 calls, one a year apart.
  Fixture f(exact({.breaker = {.consecutive_failures = 100,
                               .failure_rate = 0.5,
                               .minimum_calls = 4,
                               .window = kForever}}));
  constexpr Duration kYear = hours(24 * 365);
  const bool fails[] = {false, true, false, true};
  for (int i = 0; i < 4; ++i) {
    if (i > 0) f.clock->advance(kYear);
    EXPECT_EQ(f.protector->metrics().circuit_breaker_state, BreakerState::kClosed) << i;
    if (fails[i]) {
      f.repo.answer(make_error(ErrorKind::kBackend, "database down"));
    } else {
      f.repo.answer(std::optional<std::string>("v"));
    }
    (void)f.protector->get("k" + std::to_string(i));
  }
  EXPECT_EQ(f.repo.calls(), 4);
  EXPECT_EQ(f.protector->metrics().circuit_breaker_state, BreakerState::kOpen);
  auto refused = f.protector->get("k9");
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().kind, ErrorKind::kCircuitOpen);
  EXPECT_EQ(f.repo.calls(), 4);
}

TEST(DurationLimits, BreakerSlowCallThresholdAtMaxCountsNoSuccessAsSlow) {
  // With one failure enough to open, a success misread as slow would open it.
  Fixture f(exact({.breaker = {.consecutive_failures = 1, .slow_call_threshold = kForever}}));
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(f.protector->get("k" + std::to_string(i)));
    f.clock->advance(kCentury / 10);
  }
  EXPECT_EQ(f.protector->metrics().circuit_breaker_state, BreakerState::kClosed);
  EXPECT_EQ(f.protector->metrics().circuit_breaker_trips, 0u);
  EXPECT_EQ(f.repo.calls(), 5);
}

// ---------------------------------------------------------------------------
// Redis options: refused past an hour, not saturated. validate() is pure: no
// server is needed.

void expect_refused_naming(const Result<void>& r, std::string_view field) {
  ASSERT_FALSE(r.has_value()) << field << " was accepted at Duration::max()";
  EXPECT_EQ(r.error().kind, ErrorKind::kInvalidArgument);
  EXPECT_NE(r.error().message.find(field), std::string::npos) << r.error().message;
}

TEST(DurationLimits, RedisOptionsDefaultsAreValid) {
  auto valid = RedisOptions{}.validate();
  EXPECT_TRUE(valid.has_value()) << valid.error().to_string();
}

TEST(DurationLimits, RedisConnectTimeoutAtMaxIsRefusedNamingTheField) {
  expect_refused_naming(RedisOptions{.connect_timeout = kForever}.validate(), "connect_timeout");
}

TEST(DurationLimits, RedisCommandTimeoutAtMaxIsRefusedNamingTheField) {
  expect_refused_naming(RedisOptions{.command_timeout = kForever}.validate(), "command_timeout");
}

TEST(DurationLimits, RedisPoolWaitTimeoutAtMaxIsRefusedNamingTheField) {
  expect_refused_naming(RedisOptions{.pool_wait_timeout = kForever}.validate(),
                        "pool_wait_timeout");
}

TEST(DurationLimits, RedisReconnectBackoffMaxAtMaxIsRefusedNamingTheField) {
  expect_refused_naming(RedisOptions{.reconnect_backoff_max = kForever}.validate(),
                        "reconnect_backoff_max");
}

TEST(DurationLimits, RedisDurationsOfExactlyOneHourAreAccepted) {
  auto valid = RedisOptions{.connect_timeout = hours(1),
                            .command_timeout = hours(1),
                            .pool_wait_timeout = hours(1),
                            .reconnect_backoff_max = hours(1)}
                   .validate();
  EXPECT_TRUE(valid.has_value()) << valid.error().to_string();
}

TEST(DurationLimits, RedisLockLeaseAtMaxIsRefusedNamingTheField) {
  EXPECT_TRUE(RedisLockOptions{}.validate().has_value());
  expect_refused_naming(RedisLockOptions{.lease = kForever}.validate(), "lease");
}

}  // namespace
}  // namespace herdguard
