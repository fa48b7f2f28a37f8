#include "herdguard/protector.h"

#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

#include "protector/repository_loader.h"
#include "test_support.h"

namespace herdguard {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::Gate;
using testing::wait_until;

// A repository whose answer the test sets, counting its calls.
class ScriptedRepository {
 public:
  using Answer = Result<std::optional<std::string>>;

  void answer(Answer a) {
    std::lock_guard lock(mutex_);
    answer_ = std::move(a);
  }
  int calls() const { return calls_.load(); }
  std::shared_ptr<Repository> repository() {
    return std::make_shared<CallbackRepository>([this](std::string_view, Deadline) {
      calls_.fetch_add(1);
      if (gate_) gate_->wait();
      std::lock_guard lock(mutex_);
      return answer_;
    });
  }
  // Holds every load at the gate until it opens.
  void hold_loads_at(Gate* gate) { gate_ = gate; }

 private:
  std::atomic<int> calls_{0};
  Gate* gate_ = nullptr;
  std::mutex mutex_;
  Answer answer_ = std::optional<std::string>("v1");
};

struct Fixture {
  explicit Fixture(ProtectorOptions options = {}) {
    options.clock = clock;
    options.ttl_jitter = 0;  // exact expiry unless a test asks for jitter
    auto p = Protector::create(std::move(options), repo.repository());
    EXPECT_TRUE(p.has_value()) << p.error().to_string();
    protector = std::move(*p);
  }
  std::shared_ptr<ManualClock> clock = std::make_shared<ManualClock>();
  ScriptedRepository repo;
  std::unique_ptr<Protector> protector;
};

TEST(Protector, MissLoadsOnceThenServesFromL1) {
  Fixture f;
  for (int i = 0; i < 5; ++i) {
    auto v = f.protector->get("k");
    ASSERT_TRUE(v.has_value()) << v.error().to_string();
    EXPECT_EQ(*v, "v1");
  }
  EXPECT_EQ(f.repo.calls(), 1);
  auto m = f.protector->metrics();
  EXPECT_EQ(m.total_requests, 5u);
  EXPECT_EQ(m.cache_misses, 1u);
  EXPECT_EQ(m.cache_hits, 4u);
  EXPECT_EQ(m.l1_hits, 4u);
  EXPECT_EQ(m.db_queries, 1u);
  // A refused key is a request too (counted off the hit path).
  EXPECT_FALSE(f.protector->get(""));
  EXPECT_EQ(f.protector->metrics().total_requests, 6u);
  EXPECT_EQ(f.protector->metrics().l1_hits, 4u);
}

// A clock whose coarse reading lags the precise one by `behind`, within a
// declared coarse_lag(), as the kernel's coarse clock does between ticks.
class LaggingClock final : public Clock {
 public:
  TimePoint now() const noexcept override { return base_.now(); }
  TimePoint coarse_now() const noexcept override { return base_.now() - behind_.load(); }
  Duration coarse_lag() const noexcept override { return std::chrono::milliseconds(4); }
  void advance(Duration d) { base_.advance(d); }
  void set_behind(Duration d) { behind_.store(d); }

 private:
  ManualClock base_;
  std::atomic<Duration> behind_{Duration::zero()};
};

// The L1 hit path reads the coarse clock; near an expiry it must decide as
// the precise clock would: serve until the last nanosecond, never after.
TEST(Protector, L1FreshnessNearExpiryFollowsThePreciseClock) {
  auto clock = std::make_shared<LaggingClock>();
  ScriptedRepository repo;
  ProtectorOptions options;
  options.ttl = seconds(10);
  options.ttl_jitter = 0;
  options.clock = clock;
  auto created = Protector::create(std::move(options), repo.repository());
  ASSERT_TRUE(created.has_value()) << created.error().to_string();
  Protector& protector = **created;
  ASSERT_TRUE(protector.get("k").has_value());
  ASSERT_EQ(repo.calls(), 1);

  // One nanosecond before expiry, the coarse reading 3 ms behind: still fresh.
  clock->advance(seconds(10) - Duration(1));
  clock->set_behind(std::chrono::milliseconds(3));
  EXPECT_EQ(protector.get("k").value_or(""), "v1");
  EXPECT_EQ(repo.calls(), 1);
  EXPECT_EQ(protector.metrics().l1_hits, 1u);  // the first get loaded

  // At expiry the coarse reading (3 ms behind) would still call it fresh;
  // the precise clock does not, so the key is loaded again.
  clock->advance(Duration(1));
  EXPECT_EQ(protector.get("k").value_or(""), "v1");
  EXPECT_EQ(repo.calls(), 2);
}

TEST(Protector, ExpiredEntryIsReloaded) {
  Fixture f({.ttl = seconds(10)});
  ASSERT_TRUE(f.protector->get("k"));
  f.repo.answer(std::optional<std::string>("v2"));
  f.clock->advance(seconds(9));
  EXPECT_EQ(*f.protector->get("k"), "v1");
  f.clock->advance(seconds(2));
  EXPECT_EQ(*f.protector->get("k"), "v2");
  EXPECT_EQ(f.repo.calls(), 2);
}

TEST(Protector, NotFoundIsCachedNegatively) {
  Fixture f({.negative_ttl = seconds(5)});
  f.repo.answer(std::optional<std::string>());
  for (int i = 0; i < 10; ++i) {
    auto v = f.protector->get("missing");
    ASSERT_FALSE(v.has_value());
    EXPECT_EQ(v.error().kind, ErrorKind::kNotFound);
  }
  EXPECT_EQ(f.repo.calls(), 1);
  EXPECT_EQ(f.protector->metrics().not_found, 10u);
  f.clock->advance(seconds(6));
  f.repo.answer(std::optional<std::string>("now exists"));
  EXPECT_EQ(*f.protector->get("missing"), "now exists");
  EXPECT_EQ(f.repo.calls(), 2);
}

TEST(Protector, NotFoundDoesNotCountAsBreakerFailure) {
  Fixture f({.negative_ttl = seconds(1), .breaker = {.consecutive_failures = 2}});
  f.repo.answer(std::optional<std::string>());
  for (int i = 0; i < 5; ++i) {
    (void)f.protector->get("missing");
    f.clock->advance(seconds(2));
  }
  EXPECT_EQ(f.repo.calls(), 5);
  EXPECT_EQ(f.protector->metrics().circuit_breaker_state, BreakerState::kClosed);
}

TEST(Protector, FallbackServesStaleValueFirst) {
  Fixture f(
      {.ttl = seconds(10),
       .fail_safe_max_staleness = seconds(60),
       .default_value = [](std::string_view) { return std::optional<std::string>("default"); }});
  ASSERT_TRUE(f.protector->get("k"));
  f.clock->advance(seconds(11));
  f.repo.answer(make_error(ErrorKind::kBackend, "database down"));
  auto v = f.protector->get("k");
  ASSERT_TRUE(v.has_value()) << v.error().to_string();
  EXPECT_EQ(*v, "v1");
  auto m = f.protector->metrics();
  EXPECT_EQ(m.fallbacks, 1u);
  EXPECT_EQ(m.stale_returns, 1u);
  EXPECT_EQ(m.db_errors, 1u);
}

// Starts a caller's load of "a" that waits at `gate` inside the database,
// holding a slot of the database limit until the gate opens (join the
// thread after opening it).
std::thread hold_a_load_in_the_database(Fixture& f, Gate& gate) {
  f.repo.hold_loads_at(&gate);
  std::thread holder([&f] { EXPECT_EQ(f.protector->get("a").value_or(""), "v1"); });
  wait_until([&] { return f.protector->metrics().db_in_flight == 1; });
  return holder;
}

// The database concurrency limit: a load beyond it is shed; the caller gets
// its stale value, else kOverloaded with a retry-after.
TEST(Protector, ALoadShedByTheConcurrencyLimitFallsBackToStaleElseOverloaded) {
  Fixture f({.ttl = seconds(10),
             .fail_safe_max_staleness = seconds(60),
             .db_limit = {.mode = LimitMode::kFixed, .limit = 1, .max_wait = Duration::zero()}});
  ASSERT_TRUE(f.protector->get("b"));
  f.clock->advance(seconds(11));  // "b" is stale now

  Gate gate;
  std::thread holder = hold_a_load_in_the_database(f, gate);

  auto stale = f.protector->get("b");
  ASSERT_TRUE(stale.has_value()) << stale.error().to_string();
  EXPECT_EQ(*stale, "v1");
  auto refused = f.protector->get("c");
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().kind, ErrorKind::kOverloaded);
  EXPECT_GT(refused.error().retry_after, Duration::zero());

  gate.open();
  holder.join();
  const ProtectionMetrics m = f.protector->metrics();
  EXPECT_EQ(m.db_shed, 2u);
  EXPECT_EQ(m.load_shed, 2u);
  EXPECT_EQ(m.fallbacks_stale, 1u);
  EXPECT_EQ(m.db_limit, 1u);
  EXPECT_EQ(m.db_in_flight, 0u);
  EXPECT_EQ(f.repo.calls(), 2);  // "b" once at first, "a"; the shed loads never ran
}

// An open breaker refuses a load before the concurrency limiter is asked:
// with every slot taken, the load is circuit_open, not shed.
TEST(RepositoryLoader, AnOpenBreakerRefusesBeforeTheLimiterIsAsked) {
  auto clock = std::make_shared<ManualClock>();
  auto breaker = CircuitBreaker::create({.consecutive_failures = 1}, clock);
  ASSERT_TRUE(breaker.has_value());
  ASSERT_TRUE((*breaker)->try_acquire().has_value());
  (*breaker)->record(CallOutcome::kFailure, milliseconds(1));
  ASSERT_EQ((*breaker)->state(), BreakerState::kOpen);
  auto limiter = ConcurrencyLimiter::create(
      {.mode = LimitMode::kFixed, .limit = 1, .max_wait = Duration::zero()});
  ASSERT_TRUE(limiter.has_value());
  auto held = (*limiter)->acquire(Deadline::after(seconds(1)));  // the only slot
  ASSERT_TRUE(held.has_value());
  ScriptedRepository repo;
  internal::ProtectorCounters counters;
  internal::RepositoryLoader loader(
      repo.repository(), **breaker, *limiter,
      internal::EntryPolicy{
          .ttl = seconds(10), .negative_ttl = seconds(1), .max_value_bytes = 1024},
      clock, counters);
  auto refused = loader.load("k", Deadline::after(seconds(1)));
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().kind, ErrorKind::kCircuitOpen);
  EXPECT_EQ((*limiter)->stats().shed, 0u);
  EXPECT_EQ(repo.calls(), 0);
}

// A background refresh never waits for a database slot: with every slot
// taken by a caller's load, the refresh is shed at once (the caller already
// has its stale answer) instead of queueing ahead of later callers' loads.
TEST(Protector, ABackgroundRefreshDoesNotWaitForADatabaseSlot) {
  Fixture f({.ttl = seconds(10),
             .stale_while_revalidate = seconds(60),
             .db_limit = {.mode = LimitMode::kFixed, .limit = 1}});
  ASSERT_TRUE(f.protector->get("b"));
  f.clock->advance(seconds(11));  // "b" is stale now
  Gate gate;
  std::thread holder = hold_a_load_in_the_database(f, gate);

  EXPECT_EQ(f.protector->get_stale_while_revalidate("b").value_or(""), "v1");
  // The refresh of "b" ends without a slot: only the load of "a" is left.
  wait_until([&] { return f.protector->metrics().loads_in_flight == 1; });
  EXPECT_EQ(f.protector->metrics().db_shed, 1u);
  EXPECT_EQ(f.protector->metrics().db_waiting, 0u);
  gate.open();
  holder.join();
  EXPECT_EQ(f.repo.calls(), 2);  // "b" at first, then "a"
}

// At most max_background_refreshes run at once; beyond it a refresh is
// dropped (the caller still gets its stale value), and a finished refresh
// frees its place.
TEST(Protector, BackgroundRefreshesAreCappedAndFreeTheirPlaceWhenDone) {
  Fixture f(
      {.ttl = seconds(10), .stale_while_revalidate = seconds(60), .max_background_refreshes = 1});
  ASSERT_TRUE(f.protector->get("b"));
  ASSERT_TRUE(f.protector->get("c"));
  f.clock->advance(seconds(11));  // both stale
  Gate gate;
  f.repo.hold_loads_at(&gate);
  EXPECT_EQ(f.protector->get_stale_while_revalidate("b").value_or(""), "v1");
  wait_until([&] { return f.repo.calls() == 3; });  // b's refresh is in the database
  EXPECT_EQ(f.protector->get_stale_while_revalidate("c").value_or(""), "v1");
  EXPECT_EQ(f.protector->metrics().background_refreshes, 1u);
  EXPECT_EQ(f.protector->metrics().background_refreshes_dropped, 1u);
  gate.open();
  // Once b's refresh is done, c's may start.
  wait_until([&] {
    (void)f.protector->get_stale_while_revalidate("c");
    return f.protector->metrics().background_refreshes == 2;
  });
  wait_until([&] { return f.protector->metrics().loads_in_flight == 0; });
  EXPECT_EQ(f.repo.calls(), 4);
}

// Stale hits on a key whose refresh already runs start nothing and drop
// nothing: one refresh per key, whatever the number of stale readers.
TEST(Protector, StaleHitsDuringARefreshShareIt) {
  Fixture f({.ttl = seconds(10), .stale_while_revalidate = seconds(60)});
  ASSERT_TRUE(f.protector->get("b"));
  f.clock->advance(seconds(11));
  Gate gate;
  f.repo.hold_loads_at(&gate);
  EXPECT_EQ(f.protector->get_stale_while_revalidate("b").value_or(""), "v1");
  wait_until([&] { return f.repo.calls() == 2; });  // the refresh is in the database
  for (int i = 0; i < 100; ++i) {
    EXPECT_EQ(f.protector->get_stale_while_revalidate("b").value_or(""), "v1");
  }
  const ProtectionMetrics m = f.protector->metrics();
  EXPECT_EQ(m.background_refreshes, 1u);
  EXPECT_EQ(m.background_refreshes_dropped, 0u);
  EXPECT_EQ(m.stale_returns, 101u);
  gate.open();
  wait_until([&] { return f.protector->metrics().loads_in_flight == 0; });
  EXPECT_EQ(f.repo.calls(), 2);
}

TEST(Protector, FallbackUsesDefaultWhenStaleIsTooOld) {
  Fixture f({.ttl = seconds(10),
             .fail_safe_max_staleness = seconds(60),
             .default_value = [](std::string_view key) {
               return std::optional<std::string>("default for " + std::string(key));
             }});
  ASSERT_TRUE(f.protector->get("k"));
  f.clock->advance(seconds(10 + 61));  // past the fail-safe window
  f.repo.answer(make_error(ErrorKind::kBackend, "database down"));
  auto v = f.protector->get("k");
  ASSERT_TRUE(v.has_value());
  EXPECT_EQ(*v, "default for k");
  EXPECT_EQ(f.protector->metrics().stale_returns, 0u);
  EXPECT_EQ(f.protector->metrics().fallbacks, 1u);
}

TEST(Protector, FallbackEndsWithTheErrorWhenNothingIsLeft) {
  Fixture f({.default_value = [](std::string_view) -> std::optional<std::string> {
    throw std::runtime_error("provider broken");
  }});
  f.repo.answer(make_error(ErrorKind::kBackend, "database down"));
  auto v = f.protector->get("k");
  ASSERT_FALSE(v.has_value());
  EXPECT_EQ(v.error().kind, ErrorKind::kBackend);
  EXPECT_NE(v.error().message.find("database down"), std::string::npos);
  EXPECT_EQ(f.protector->metrics().errors, 1u);
  EXPECT_EQ(f.protector->metrics().fallbacks, 0u);
}

TEST(Protector, BreakerOpensAndRepositoryIsNotCalledWhileOpen) {
  Fixture f({.breaker = {.consecutive_failures = 3, .open_timeout = seconds(30)}});
  f.repo.answer(make_error(ErrorKind::kBackend, "database down"));
  for (int i = 0; i < 3; ++i) EXPECT_FALSE(f.protector->get("k"));
  EXPECT_EQ(f.repo.calls(), 3);
  EXPECT_EQ(f.protector->metrics().circuit_breaker_state, BreakerState::kOpen);
  EXPECT_EQ(f.protector->metrics().circuit_breaker_trips, 1u);

  for (int i = 0; i < 20; ++i) {
    auto v = f.protector->get("k");
    ASSERT_FALSE(v.has_value());
    EXPECT_EQ(v.error().kind, ErrorKind::kCircuitOpen);
  }
  EXPECT_EQ(f.repo.calls(), 3);  // not called while open

  f.clock->advance(seconds(31));
  f.repo.answer(std::optional<std::string>("recovered"));
  auto probe = f.protector->get("k");
  ASSERT_TRUE(probe.has_value()) << probe.error().to_string();
  EXPECT_EQ(*probe, "recovered");
  EXPECT_EQ(f.protector->metrics().circuit_breaker_state, BreakerState::kClosed);
  EXPECT_EQ(f.repo.calls(), 4);
}

TEST(Protector, StaleWhileRevalidateAnswersBeforeTheLoadFinishes) {
  Fixture f({.ttl = seconds(10), .stale_while_revalidate = seconds(30)});
  ASSERT_TRUE(f.protector->get("k"));
  f.clock->advance(seconds(11));
  f.repo.answer(std::optional<std::string>("v2"));
  Gate gate;
  f.repo.hold_loads_at(&gate);

  // The refresh cannot finish while the gate is shut, so every answer below
  // was given before the load completed.
  for (int i = 0; i < 50; ++i) {
    auto v = f.protector->get_stale_while_revalidate("k");
    ASSERT_TRUE(v.has_value()) << v.error().to_string();
    EXPECT_EQ(*v, "v1");
  }
  EXPECT_EQ(f.protector->metrics().background_refreshes, 1u);
  EXPECT_EQ(f.protector->metrics().stale_returns, 50u);

  gate.open();
  wait_until([&] { return f.protector->metrics().loads_in_flight == 0; });
  EXPECT_EQ(f.repo.calls(), 2);
  EXPECT_EQ(*f.protector->get_stale_while_revalidate("k"), "v2");
  EXPECT_EQ(f.protector->peek("k")->value, "v2");
}

TEST(Protector, StaleWhileRevalidateBlocksPastItsWindow) {
  Fixture f({.ttl = seconds(10), .stale_while_revalidate = seconds(5)});
  ASSERT_TRUE(f.protector->get("k"));
  f.clock->advance(seconds(16));
  f.repo.answer(std::optional<std::string>("v2"));
  EXPECT_EQ(*f.protector->get_stale_while_revalidate("k"), "v2");
  EXPECT_EQ(f.protector->metrics().stale_returns, 0u);
}

TEST(Protector, GetAsyncDeliversHitsInlineAndLoadsOnce) {
  Fixture f;
  Gate gate;
  f.repo.hold_loads_at(&gate);
  std::atomic<int> delivered{0};
  for (int i = 0; i < 10; ++i) {
    f.protector->get_async("k", [&](const Result<std::string>& r) {
      EXPECT_TRUE(r.has_value());
      delivered.fetch_add(1);
    });
  }
  EXPECT_EQ(delivered.load(), 0);
  gate.open();
  wait_until([&] { return delivered.load() == 10; });
  EXPECT_EQ(f.repo.calls(), 1);
  bool inline_hit = false;
  f.protector->get_async("k", [&](const Result<std::string>& r) { inline_hit = r.has_value(); });
  EXPECT_TRUE(inline_hit);
}

TEST(Protector, LoaderExceptionBecomesBackendError) {
  auto repo = std::make_shared<CallbackRepository>(
      [](std::string_view, Deadline) -> Result<std::optional<std::string>> {
        throw std::logic_error("bug in loader");
      });
  auto p = Protector::create({}, repo);
  ASSERT_TRUE(p.has_value());
  auto v = (*p)->get("k");
  ASSERT_FALSE(v.has_value());
  EXPECT_EQ(v.error().kind, ErrorKind::kBackend);
  EXPECT_NE(v.error().message.find("bug in loader"), std::string::npos);
}

TEST(Protector, BadKeysAndValuesGetClearErrors) {
  Fixture f({.max_key_bytes = 8, .max_value_bytes = 4});
  auto empty = f.protector->get("");
  ASSERT_FALSE(empty.has_value());
  EXPECT_EQ(empty.error().kind, ErrorKind::kInvalidArgument);
  EXPECT_NE(empty.error().message.find("empty"), std::string::npos);

  auto long_key = f.protector->get("123456789");
  ASSERT_FALSE(long_key.has_value());
  EXPECT_NE(long_key.error().message.find("max_key_bytes"), std::string::npos);

  auto big = f.protector->set("k", "12345");
  ASSERT_FALSE(big.has_value());
  EXPECT_NE(big.error().message.find("max_value_bytes"), std::string::npos);
  EXPECT_FALSE(f.protector->peek("k").has_value());  // nothing stored

  f.repo.answer(std::optional<std::string>("too large"));
  auto loaded = f.protector->get("k");
  ASSERT_FALSE(loaded.has_value());
  EXPECT_EQ(loaded.error().kind, ErrorKind::kInvalidArgument);
  EXPECT_EQ(f.repo.calls(), 1);  // only the last get reached the repository
}

TEST(Protector, SetStoresWithTtlAndBinaryValues) {
  Fixture f({.ttl = seconds(100)});
  const std::string key("bin\0key", 7), value("v\0\xff", 3);
  ASSERT_TRUE(f.protector->set(key, value, seconds(5)));
  EXPECT_EQ(*f.protector->get(key), value);
  EXPECT_EQ(f.repo.calls(), 0);
  f.clock->advance(seconds(6));
  EXPECT_EQ(*f.protector->get(key), "v1");  // expired: loaded
  EXPECT_FALSE(f.protector->set("k", "v", Duration::zero()));
}

TEST(Protector, InvalidOptionsAreRefused) {
  auto repo = std::make_shared<CallbackRepository>(
      [](std::string_view, Deadline) { return Result<std::optional<std::string>>(std::nullopt); });
  auto bad_jitter = Protector::create({.ttl_jitter = 1.5}, repo);
  ASSERT_FALSE(bad_jitter.has_value());
  EXPECT_NE(bad_jitter.error().message.find("ttl_jitter"), std::string::npos);
  auto bad_nested = Protector::create({.breaker = {.failure_rate = 0}}, repo);
  ASSERT_FALSE(bad_nested.has_value());
  EXPECT_NE(bad_nested.error().message.find("breaker"), std::string::npos);
  EXPECT_FALSE(Protector::create({}, nullptr).has_value());
}

}  // namespace
}  // namespace herdguard
