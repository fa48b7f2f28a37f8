#include "herdguard/circuit_breaker.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <ostream>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace herdguard {

// Lets gtest print states by name in failure messages.
void PrintTo(BreakerState state, std::ostream* os) { *os << to_string(state); }

namespace {

using std::chrono::hours;
using std::chrono::milliseconds;
using std::chrono::nanoseconds;
using std::chrono::seconds;

constexpr BreakerState kClosed = BreakerState::kClosed;
constexpr BreakerState kOpen = BreakerState::kOpen;
constexpr BreakerState kHalfOpen = BreakerState::kHalfOpen;
constexpr CallOutcome kSuccess = CallOutcome::kSuccess;
constexpr CallOutcome kFailure = CallOutcome::kFailure;
constexpr Duration kQuick = milliseconds(1);

using Transitions = std::vector<std::pair<BreakerState, BreakerState>>;

// Options where only the rate rule can open the breaker.
CircuitBreakerOptions rate_only(double failure_rate, std::uint32_t minimum_calls) {
  return {.consecutive_failures = 1000,
          .failure_rate = failure_rate,
          .minimum_calls = minimum_calls,
          .window = seconds(10),
          .window_buckets = 10};
}

// A breaker on a manual clock whose listener records every transition.
struct Harness {
  explicit Harness(CircuitBreakerOptions options)
      : breaker(options, clock, [this](BreakerState from, BreakerState to) {
          transitions.emplace_back(from, to);
        }) {}

  // Makes `n` calls through the breaker, each taking kQuick of clock time.
  void calls(int n, CallOutcome outcome) {
    for (int i = 0; i < n; ++i) {
      ASSERT_TRUE(breaker.try_acquire()) << "call " << i;
      clock->advance(kQuick);
      breaker.record(outcome, kQuick);
    }
  }
  void succeed(int n = 1) { calls(n, kSuccess); }
  void fail(int n = 1) { calls(n, kFailure); }

  std::shared_ptr<ManualClock> clock = std::make_shared<ManualClock>();
  Transitions transitions;
  CircuitBreaker breaker;
};

// A stand-in for the database: counts the calls that reach it.
struct FakeRepository {
  CallOutcome query() {
    ++calls;
    return answer;
  }
  int calls = 0;
  CallOutcome answer = kFailure;
};

// Calls `repo` through `breaker` the way the Protector does.
Result<void> guarded_call(CircuitBreaker& breaker, FakeRepository& repo) {
  if (auto permit = breaker.try_acquire(); !permit) return permit;
  breaker.record(repo.query(), kQuick);
  return ok();
}

TEST(CircuitBreaker, ToStringNamesEachState) {
  EXPECT_EQ(to_string(kClosed), "closed");
  EXPECT_EQ(to_string(kOpen), "open");
  EXPECT_EQ(to_string(kHalfOpen), "half_open");
}

TEST(CircuitBreaker, StartsClosedAndLetsCallsThrough) {
  Harness h({});
  EXPECT_EQ(h.breaker.state(), kClosed);
  h.succeed(100);
  EXPECT_EQ(h.breaker.state(), kClosed);
  EXPECT_EQ(h.breaker.trips(), 0u);
  EXPECT_TRUE(h.transitions.empty());
}

TEST(CircuitBreaker, OpensAfterConsecutiveFailures) {
  Harness h({.consecutive_failures = 3});
  h.fail(2);
  EXPECT_EQ(h.breaker.state(), kClosed);
  h.fail();
  EXPECT_EQ(h.breaker.state(), kOpen);
  EXPECT_EQ(h.breaker.trips(), 1u);
}

TEST(CircuitBreaker, SuccessResetsTheConsecutiveFailureCount) {
  Harness h({.consecutive_failures = 3, .minimum_calls = 1000});  // rate rule out of the way
  for (int round = 0; round < 10; ++round) {
    h.fail(2);
    h.succeed();
  }
  EXPECT_EQ(h.breaker.state(), kClosed);
  h.fail(3);
  EXPECT_EQ(h.breaker.state(), kOpen);
}

TEST(CircuitBreaker, RateRuleWaitsForMinimumCalls) {
  Harness h(rate_only(0.5, 10));
  h.fail(9);  // 100% failures, but only 9 calls
  EXPECT_EQ(h.breaker.state(), kClosed);
  // The call that brings the window to minimum_calls trips it even though it
  // succeeded: 9 of 10 calls failed.
  h.succeed();
  EXPECT_EQ(h.breaker.state(), kOpen);
  EXPECT_EQ(h.breaker.trips(), 1u);
}

TEST(CircuitBreaker, RateRuleOpensAtTheFailureRateNotBelow) {
  Harness below(rate_only(0.3, 10));
  below.succeed(8);
  below.fail(2);  // 20%
  below.succeed(10);
  EXPECT_EQ(below.breaker.state(), kClosed);

  Harness at(rate_only(0.3, 10));
  at.succeed(4);
  at.fail();
  at.succeed(3);
  at.fail();
  EXPECT_EQ(at.breaker.state(), kClosed);  // 2 of 9, and under minimum_calls
  at.fail();                               // 3 of 10 = exactly 30%
  EXPECT_EQ(at.breaker.state(), kOpen);
}

TEST(CircuitBreaker, FailuresWithinTheWindowStillCount) {
  Harness h(rate_only(0.5, 10));
  h.fail(6);
  h.clock->advance(seconds(9));  // the first bucket is still the window's oldest
  h.fail(4);
  EXPECT_EQ(h.breaker.state(), kOpen);
}

TEST(CircuitBreaker, OldFailuresFallOutOfTheRollingWindow) {
  Harness h(rate_only(0.5, 10));
  h.fail(6);
  h.clock->advance(seconds(15));
  h.fail(4);  // 4 calls in the window; 10 if the old ones still counted
  EXPECT_EQ(h.breaker.state(), kClosed);
  h.clock->advance(seconds(25));
  h.fail(9);
  EXPECT_EQ(h.breaker.state(), kClosed);
  h.fail();
  EXPECT_EQ(h.breaker.state(), kOpen);
}

TEST(CircuitBreaker, StaleBucketIsResetWhenItsSlotIsReused) {
  Harness h(rate_only(0.5, 10));
  h.fail(6);
  // Exactly one window later the same ring slot comes round again; it must
  // start from zero rather than add to the 6 old failures.
  h.clock->advance(seconds(10));
  h.fail(4);
  EXPECT_EQ(h.breaker.state(), kClosed);
}

TEST(CircuitBreaker, SlowSuccessCountsAsFailure) {
  Harness h({.consecutive_failures = 2, .slow_call_threshold = seconds(2)});
  ASSERT_TRUE(h.breaker.try_acquire());
  h.breaker.record(kSuccess, seconds(2));  // exactly the threshold: not slow
  ASSERT_TRUE(h.breaker.try_acquire());
  h.breaker.record(kSuccess, seconds(2) + nanoseconds(1));
  EXPECT_EQ(h.breaker.state(), kClosed);
  ASSERT_TRUE(h.breaker.try_acquire());
  h.breaker.record(kSuccess, seconds(10));
  EXPECT_EQ(h.breaker.state(), kOpen);
}

TEST(CircuitBreaker, OpenRefusesEveryCallAndTheRepositoryIsNotCalled) {
  Harness h({.consecutive_failures = 3, .open_timeout = seconds(30)});
  FakeRepository repo;
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(guarded_call(h.breaker, repo));
  ASSERT_EQ(h.breaker.state(), kOpen);
  EXPECT_EQ(repo.calls, 3);

  repo.answer = kSuccess;
  for (int i = 0; i < 100; ++i) {
    auto r = guarded_call(h.breaker, repo);
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().kind, ErrorKind::kCircuitOpen);
    if (i == 50) h.clock->advance(seconds(29));  // still inside open_timeout
  }
  EXPECT_EQ(repo.calls, 3);
  EXPECT_EQ(h.breaker.state(), kOpen);
}

TEST(CircuitBreaker, GoesHalfOpenAfterOpenTimeout) {
  Harness h({.consecutive_failures = 1, .open_timeout = seconds(5)});
  h.fail();
  h.clock->advance(seconds(5) - nanoseconds(1));
  EXPECT_EQ(h.breaker.state(), kOpen);
  h.clock->advance(nanoseconds(1));
  EXPECT_EQ(h.breaker.state(), kHalfOpen);
}

TEST(CircuitBreaker, HalfOpenAllowsExactlyHalfOpenProbesConcurrentProbes) {
  Harness h({.consecutive_failures = 1, .open_timeout = seconds(5), .half_open_probes = 3});
  h.fail();
  h.clock->advance(seconds(5));
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(h.breaker.try_acquire()) << "probe " << i;
  auto refused = h.breaker.try_acquire();
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().kind, ErrorKind::kCircuitOpen);

  // A probe that finished does not free a slot: the period's 3 probes decide.
  h.breaker.record(kSuccess, kQuick);
  EXPECT_FALSE(h.breaker.try_acquire());
  EXPECT_EQ(h.breaker.state(), kHalfOpen);
}

TEST(CircuitBreaker, AllProbesSucceedingClosesTheBreaker) {
  Harness h({.consecutive_failures = 1, .open_timeout = seconds(5), .half_open_probes = 2});
  h.fail();
  h.clock->advance(seconds(5));
  ASSERT_TRUE(h.breaker.try_acquire());
  ASSERT_TRUE(h.breaker.try_acquire());
  h.breaker.record(kSuccess, kQuick);
  EXPECT_EQ(h.breaker.state(), kHalfOpen);
  h.breaker.record(kSuccess, kQuick);
  EXPECT_EQ(h.breaker.state(), kClosed);
  h.succeed(10);
  EXPECT_EQ(h.breaker.trips(), 1u);
}

TEST(CircuitBreaker, FailingProbeReopensAndCountsATrip) {
  Harness h({.consecutive_failures = 1, .open_timeout = seconds(5), .half_open_probes = 2});
  h.fail();
  ASSERT_EQ(h.breaker.trips(), 1u);
  h.clock->advance(seconds(5));
  ASSERT_TRUE(h.breaker.try_acquire());
  ASSERT_TRUE(h.breaker.try_acquire());
  h.breaker.record(kSuccess, kQuick);
  h.breaker.record(kFailure, kQuick);
  EXPECT_EQ(h.breaker.state(), kOpen);
  EXPECT_EQ(h.breaker.trips(), 2u);
  // Open again for a whole open_timeout.
  h.clock->advance(seconds(4));
  EXPECT_FALSE(h.breaker.try_acquire());
  h.clock->advance(seconds(1));
  EXPECT_TRUE(h.breaker.try_acquire());
}

TEST(CircuitBreaker, SlowProbeReopens) {
  Harness h(
      {.consecutive_failures = 1, .slow_call_threshold = seconds(2), .open_timeout = seconds(5)});
  h.fail();
  h.clock->advance(seconds(5));
  ASSERT_TRUE(h.breaker.try_acquire());
  h.clock->advance(seconds(3));
  h.breaker.record(kSuccess, seconds(3));
  EXPECT_EQ(h.breaker.state(), kOpen);
  EXPECT_EQ(h.breaker.trips(), 2u);
}

TEST(CircuitBreaker, ReclosingStartsWithAnEmptyWindow) {
  CircuitBreakerOptions options = rate_only(0.5, 4);
  options.open_timeout = seconds(5);
  Harness h(options);
  h.fail(4);
  ASSERT_EQ(h.breaker.state(), kOpen);
  h.clock->advance(seconds(5));
  h.succeed();  // the probe
  ASSERT_EQ(h.breaker.state(), kClosed);
  h.fail();  // 1 call in the new window; 5 of 5 failed if the old ones counted
  EXPECT_EQ(h.breaker.state(), kClosed);
}

TEST(CircuitBreaker, ListenerSeesEveryTransitionInOrder) {
  Harness h({.consecutive_failures = 1, .open_timeout = seconds(5)});
  h.fail();
  h.clock->advance(seconds(5));
  h.fail();  // the probe fails
  h.clock->advance(seconds(5));
  h.succeed();  // the probe succeeds
  const Transitions expected = {{kClosed, kOpen},
                                {kOpen, kHalfOpen},
                                {kHalfOpen, kOpen},
                                {kOpen, kHalfOpen},
                                {kHalfOpen, kClosed}};
  EXPECT_EQ(h.transitions, expected);
  EXPECT_EQ(h.breaker.trips(), 2u);
}

TEST(CircuitBreaker, ListenerIsCalledWithoutTheLockHeld) {
  auto clock = std::make_shared<ManualClock>();
  CircuitBreaker* self = nullptr;
  Transitions seen;
  // Calling back into the breaker would deadlock if the listener ran under
  // the breaker's mutex.
  auto breaker = CircuitBreaker::create({.consecutive_failures = 1}, clock,
                                        [&](BreakerState from, BreakerState to) {
                                          seen.emplace_back(from, to);
                                          EXPECT_EQ(self->state(), to);
                                          EXPECT_EQ(self->trips(), 1u);
                                        });
  ASSERT_TRUE(breaker.has_value());
  self = breaker->get();
  ASSERT_TRUE(self->try_acquire());
  self->record(kFailure, kQuick);
  EXPECT_EQ(seen, (Transitions{{kClosed, kOpen}}));
}

TEST(CircuitBreaker, ListenerExceptionIsContained) {
  auto clock = std::make_shared<ManualClock>();
  int calls = 0;
  CircuitBreaker breaker({.consecutive_failures = 1, .open_timeout = seconds(5)}, clock,
                         [&](BreakerState, BreakerState) {
                           ++calls;
                           throw std::runtime_error("listener bug");
                         });
  ASSERT_TRUE(breaker.try_acquire());
  EXPECT_NO_THROW(breaker.record(kFailure, kQuick));
  EXPECT_EQ(breaker.state(), kOpen);
  clock->advance(seconds(5));
  EXPECT_NO_THROW(EXPECT_EQ(breaker.state(), kHalfOpen));
  EXPECT_EQ(calls, 2);
}

TEST(CircuitBreaker, LateRecordFromBeforeTheBreakerOpenedIsIgnored) {
  Harness h({.consecutive_failures = 3, .open_timeout = seconds(5)});
  ASSERT_TRUE(h.breaker.try_acquire());  // call A, still running
  ASSERT_TRUE(h.breaker.try_acquire());  // call B, still running
  h.fail(3);
  ASSERT_EQ(h.breaker.state(), kOpen);

  h.breaker.record(kSuccess, seconds(1));  // A reports while open: must not close it
  EXPECT_EQ(h.breaker.state(), kOpen);

  h.clock->advance(seconds(5));
  ASSERT_TRUE(h.breaker.try_acquire());  // the probe
  h.clock->advance(milliseconds(10));
  // B reports while the probe is out. It ran for longer than the breaker has
  // been half-open, so it is not the probe, and its failure is ignored.
  h.breaker.record(kFailure, seconds(6));
  EXPECT_EQ(h.breaker.state(), kHalfOpen);
  EXPECT_EQ(h.breaker.trips(), 1u);

  h.breaker.record(kSuccess, milliseconds(10));  // the probe
  EXPECT_EQ(h.breaker.state(), kClosed);
}

TEST(CircuitBreaker, RecordWithoutPermitIsIgnored) {
  Harness h({.consecutive_failures = 1, .open_timeout = seconds(5)});
  h.breaker.record(kFailure, kQuick);  // caller bug: no try_acquire()
  EXPECT_EQ(h.breaker.state(), kClosed);
  h.fail();
  h.clock->advance(seconds(5));
  ASSERT_EQ(h.breaker.state(), kHalfOpen);
  h.breaker.record(kSuccess, kQuick);  // not a probe: must not close the breaker
  EXPECT_EQ(h.breaker.state(), kHalfOpen);
}

TEST(CircuitBreaker, ProbeThatNeverReportsReopensInsteadOfWedging) {
  Harness h(
      {.consecutive_failures = 1, .slow_call_threshold = seconds(2), .open_timeout = seconds(5)});
  h.fail();
  h.clock->advance(seconds(5));
  ASSERT_TRUE(h.breaker.try_acquire());  // a probe whose caller never calls record()
  h.clock->advance(seconds(2));
  EXPECT_EQ(h.breaker.state(), kHalfOpen);  // could still succeed
  h.clock->advance(nanoseconds(1));
  EXPECT_EQ(h.breaker.state(), kOpen);  // could only be a slow call now
  EXPECT_EQ(h.breaker.trips(), 2u);

  h.clock->advance(seconds(5));
  h.succeed();  // a new probe, told apart from the lost one by its elapsed time
  EXPECT_EQ(h.breaker.state(), kClosed);
}

TEST(CircuitBreaker, ClockGoingBackwardsNeitherCrashesNorStallsTheBreaker) {
  CircuitBreakerOptions options = rate_only(0.5, 4);
  options.open_timeout = seconds(5);
  Harness h(options);
  h.fail(2);
  h.clock->set(h.clock->now() - hours(1));
  h.fail(2);  // a backward step is no time: the first two failures still count
  ASSERT_EQ(h.breaker.state(), kOpen);

  h.clock->set(h.clock->now() - hours(24));
  EXPECT_EQ(h.breaker.state(), kOpen);
  h.clock->advance(seconds(5));  // not a day and 5 s
  EXPECT_EQ(h.breaker.state(), kHalfOpen);
  h.succeed();
  EXPECT_EQ(h.breaker.state(), kClosed);

  h.clock->set(TimePoint{});  // the epoch
  h.succeed(3);
  h.clock->set(TimePoint::max());
  h.succeed(3);
  h.clock->set(TimePoint::min());
  h.succeed(3);
  EXPECT_EQ(h.breaker.state(), kClosed);
}

struct BadField {
  const char* name;
  std::function<void(CircuitBreakerOptions&)> spoil;
  const char* message;
};

TEST(CircuitBreaker, ValidateRejectsEachBadField) {
  const BadField cases[] = {
      {"consecutive_failures", [](auto& o) { o.consecutive_failures = 0; },
       "circuit breaker: consecutive_failures must be >= 1, got 0"},
      {"failure_rate", [](auto& o) { o.failure_rate = 1.5; },
       "circuit breaker: failure_rate must be in (0, 1], got 1.5"},
      {"failure_rate", [](auto& o) { o.failure_rate = 0; },
       "circuit breaker: failure_rate must be in (0, 1], got 0"},
      {"failure_rate", [](auto& o) { o.failure_rate = -0.25; },
       "circuit breaker: failure_rate must be in (0, 1], got -0.25"},
      {"failure_rate", [](auto& o) { o.failure_rate = std::nan(""); },
       "circuit breaker: failure_rate must be in (0, 1], got nan"},
      {"minimum_calls", [](auto& o) { o.minimum_calls = 0; },
       "circuit breaker: minimum_calls must be >= 1, got 0"},
      {"window", [](auto& o) { o.window = Duration::zero(); },
       "circuit breaker: window must be > 0, got 0 ms"},
      {"window", [](auto& o) { o.window = -seconds(1); },
       "circuit breaker: window must be > 0, got -1000 ms"},
      {"window_buckets", [](auto& o) { o.window_buckets = 0; },
       "circuit breaker: window_buckets must be in 1..1000, got 0"},
      {"window_buckets", [](auto& o) { o.window_buckets = 1001; },
       "circuit breaker: window_buckets must be in 1..1000, got 1001"},
      {"slow_call_threshold", [](auto& o) { o.slow_call_threshold = -nanoseconds(5); },
       "circuit breaker: slow_call_threshold must be > 0, got -5 ns"},
      {"open_timeout", [](auto& o) { o.open_timeout = Duration::zero(); },
       "circuit breaker: open_timeout must be > 0, got 0 ms"},
      {"half_open_probes", [](auto& o) { o.half_open_probes = 0; },
       "circuit breaker: half_open_probes must be >= 1, got 0"},
  };
  for (const BadField& c : cases) {
    SCOPED_TRACE(c.name);
    CircuitBreakerOptions options;
    c.spoil(options);
    auto r = options.validate();
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().kind, ErrorKind::kInvalidArgument);
    EXPECT_EQ(r.error().message, c.message);
  }
}

TEST(CircuitBreaker, ValidateAcceptsDefaultsAndBoundaries) {
  EXPECT_TRUE(CircuitBreakerOptions{}.validate());
  EXPECT_TRUE((CircuitBreakerOptions{.consecutive_failures = 1,
                                     .failure_rate = 1.0,
                                     .minimum_calls = 1,
                                     .window = nanoseconds(1),
                                     .window_buckets = 1000,
                                     .slow_call_threshold = nanoseconds(1),
                                     .open_timeout = nanoseconds(1),
                                     .half_open_probes = 1}
                   .validate()));
}

TEST(CircuitBreaker, CreateRejectsBadOptionsAndNullClock) {
  auto clock = std::make_shared<ManualClock>();
  auto bad_options = CircuitBreaker::create({.failure_rate = 1.5}, clock);
  ASSERT_FALSE(bad_options.has_value());
  EXPECT_EQ(bad_options.error().kind, ErrorKind::kInvalidArgument);
  EXPECT_NE(bad_options.error().message.find("failure_rate"), std::string::npos);

  auto no_clock = CircuitBreaker::create({}, nullptr);
  ASSERT_FALSE(no_clock.has_value());
  EXPECT_EQ(no_clock.error().kind, ErrorKind::kInvalidArgument);
  EXPECT_EQ(no_clock.error().message, "circuit breaker: clock must not be null");

  auto good = CircuitBreaker::create({}, clock);
  ASSERT_TRUE(good.has_value());
  EXPECT_EQ((*good)->state(), kClosed);
}

#ifdef NDEBUG
TEST(CircuitBreaker, ConstructorReplacesInvalidFieldsWithDefaultsInReleaseBuilds) {
  auto clock = std::make_shared<ManualClock>();
  CircuitBreaker breaker({.consecutive_failures = 0, .window_buckets = 0, .half_open_probes = 0},
                         clock);
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(breaker.try_acquire());
    breaker.record(kFailure, kQuick);
  }
  EXPECT_EQ(breaker.state(), kClosed);  // consecutive_failures fell back to 5
  ASSERT_TRUE(breaker.try_acquire());
  breaker.record(kFailure, kQuick);
  EXPECT_EQ(breaker.state(), kOpen);

  CircuitBreaker no_clock({}, nullptr);  // falls back to the system clock
  EXPECT_TRUE(no_clock.try_acquire());
}
#else
TEST(CircuitBreakerDeathTest, ConstructorAbortsOnInvalidOptionsInDebugBuilds) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  auto clock = std::make_shared<ManualClock>();
  EXPECT_DEATH({ CircuitBreaker breaker({.failure_rate = 1.5}, clock); }, "invalid options");
  EXPECT_DEATH({ CircuitBreaker breaker({}, nullptr); }, "clock must not be null");
}
#endif

// Several threads hammer one breaker while another moves the clock. TSan
// checks the locking (including that the listener, which keeps no lock of its
// own, is never called concurrently); the test checks that the books balance.
TEST(CircuitBreaker, ConcurrentCallersKeepCountsAndTransitionsConsistent) {
  constexpr int kThreads = 4;
  constexpr int kAttemptsPerThread = 20000;
  auto clock = std::make_shared<ManualClock>();
  Transitions transitions;  // written only by the listener
  CircuitBreaker breaker(
      {.consecutive_failures = 4,
       .failure_rate = 0.5,
       .minimum_calls = 10,
       .window = seconds(1),
       .window_buckets = 4,
       .slow_call_threshold = milliseconds(500),
       .open_timeout = milliseconds(200),
       .half_open_probes = 2},
      clock, [&](BreakerState from, BreakerState to) { transitions.emplace_back(from, to); });

  std::atomic<std::uint64_t> repository_calls{0};
  std::atomic<bool> done{false};
  std::vector<std::uint64_t> granted(kThreads), refused(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::uint32_t seed = 12345u + static_cast<std::uint32_t>(t);
      for (int i = 0; i < kAttemptsPerThread; ++i) {
        seed = seed * 1664525u + 1013904223u;  // LCG: deterministic per thread
        if (!breaker.try_acquire()) {
          ++refused[t];
          continue;
        }
        ++granted[t];
        repository_calls.fetch_add(1, std::memory_order_relaxed);
        const bool fails = (seed >> 16) % 100 < 35;
        const Duration elapsed = (seed >> 8) % 50 == 0 ? seconds(1) : Duration::zero();
        breaker.record(fails ? kFailure : kSuccess, elapsed);
        if (i % 64 == 0) (void)breaker.state();
      }
    });
  }
  std::thread ticker([&] {
    while (!done.load()) {
      clock->advance(milliseconds(50));
      std::this_thread::yield();
    }
  });
  for (auto& thread : threads) thread.join();
  done.store(true);
  ticker.join();

  const BreakerState final_state = breaker.state();  // delivers anything pending
  std::uint64_t total_granted = 0;
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(granted[t] + refused[t], static_cast<std::uint64_t>(kAttemptsPerThread));
    total_granted += granted[t];
  }
  EXPECT_EQ(repository_calls.load(), total_granted);
  EXPECT_GT(total_granted, 0u);

  // The transitions form one chain from closed to the final state, every step
  // legal, and the trips are exactly the steps into open.
  ASSERT_FALSE(transitions.empty());
  BreakerState at = kClosed;
  std::uint64_t into_open = 0;
  for (const auto& [from, to] : transitions) {
    ASSERT_EQ(from, at);
    const bool legal = (from == kClosed && to == kOpen) || (from == kOpen && to == kHalfOpen) ||
                       (from == kHalfOpen && (to == kOpen || to == kClosed));
    ASSERT_TRUE(legal) << to_string(from) << " -> " << to_string(to);
    if (to == kOpen) ++into_open;
    at = to;
  }
  EXPECT_EQ(at, final_state);
  EXPECT_EQ(breaker.trips(), into_open);
  RecordProperty("transitions", static_cast<int>(transitions.size()));
  RecordProperty("granted", static_cast<int>(total_granted));
}

}  // namespace
}  // namespace herdguard
