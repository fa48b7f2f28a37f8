// The rate limiter's arithmetic (limit/gcra.h) and the limiter without Redis
// (the per-process fallback), on a ManualClock; Protector::get_for in front
// of a read. Against a real Redis: tests/integration/rate_limiter_test.cc.
#include "herdguard/rate_limiter.h"

#include <gtest/gtest.h>

#include <atomic>
#include <string>

#include "herdguard/protector.h"
#include "limit/gcra.h"

namespace herdguard {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

const Duration k100ms = milliseconds(100);

TEST(Gcra, AnIdleClientMayBurstThenOneRequestPerInterval) {
  const TimePoint start{seconds(1000)};
  TimePoint tat = TimePoint::min();
  // rate 10/s, burst 3: tolerance 200 ms.
  for (int i = 0; i < 3; ++i) {
    const internal::GcraDecision d = internal::gcra_decide(tat, start, k100ms, 2 * k100ms);
    ASSERT_TRUE(d.allowed) << i;
    tat = d.tat;
  }
  internal::GcraDecision refused = internal::gcra_decide(tat, start, k100ms, 2 * k100ms);
  EXPECT_FALSE(refused.allowed);
  EXPECT_EQ(refused.retry_after, k100ms);
  EXPECT_EQ(refused.tat, tat) << "a refused request costs nothing";
  EXPECT_FALSE(internal::gcra_decide(tat, start + milliseconds(99), k100ms, 2 * k100ms).allowed);
  EXPECT_TRUE(internal::gcra_decide(tat, start + k100ms, k100ms, 2 * k100ms).allowed);
}

TEST(Gcra, AClockThatSteppedBackDoesNotLockAClientOut) {
  const TimePoint now{seconds(1000)};
  // A TAT an hour ahead: the wall clock went back an hour.
  const internal::GcraDecision d =
      internal::gcra_decide(now + std::chrono::hours(1), now, k100ms, 2 * k100ms);
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.tat, now + k100ms);
}

TEST(Gcra, TheLocalTableStaysWithinItsBoundForgettingIdleClientsFirst) {
  internal::LocalGcra table(k100ms, Duration::zero(), /*max_clients=*/2);
  const TimePoint t0{seconds(1000)};
  ASSERT_TRUE(table.decide("a", t0).allowed);
  ASSERT_TRUE(table.decide("b", t0 + milliseconds(150)).allowed);
  // "a" is idle at 200 ms (its TAT was 100 ms), "b" is not (250 ms): "a" goes.
  ASSERT_TRUE(table.decide("c", t0 + milliseconds(200)).allowed);
  EXPECT_EQ(table.size(), 2u);
  EXPECT_FALSE(table.decide("b", t0 + milliseconds(200)).allowed) << "b's state was kept";
  // None idle: one is forgotten anyway, the table never grows.
  ASSERT_TRUE(table.decide("d", t0 + milliseconds(200)).allowed);
  EXPECT_EQ(table.size(), 2u);
}

TEST(RateLimiter, WithoutRedisTheProcessAdmitsTheRateOverASecond) {
  auto clock = std::make_shared<ManualClock>();
  auto limiter = RateLimiter::create({.rate = 50, .burst = 1}, nullptr, clock);
  ASSERT_TRUE(limiter) << limiter.error().to_string();
  int admitted = 0;
  // 200 requests a second, one every 5 ms, for one second.
  for (int i = 0; i < 200; ++i) {
    auto verdict = (*limiter)->admit("client-1", Deadline::after(seconds(1)));
    ASSERT_TRUE(verdict);
    EXPECT_TRUE(verdict->local);
    if (verdict->allowed) {
      ++admitted;
    } else {
      EXPECT_GT(verdict->retry_after, Duration::zero());
      EXPECT_LE(verdict->retry_after, milliseconds(20));
    }
    clock->advance(milliseconds(5));
  }
  EXPECT_EQ(admitted, 50);
  const RateLimiterStats stats = (*limiter)->stats();
  EXPECT_EQ(stats.allowed, 50u);
  EXPECT_EQ(stats.limited, 150u);
  EXPECT_EQ(stats.local_decisions, 200u);
  // Another client has its own allowance.
  EXPECT_TRUE((*limiter)->admit("client-2", Deadline::after(seconds(1)))->allowed);
}

TEST(RateLimiter, BadOptionsAndClientIdsAreRefused) {
  for (const RateLimitOptions& bad :
       {RateLimitOptions{.rate = 0}, RateLimitOptions{.rate = std::nan("")},
        RateLimitOptions{.rate = 1e10}, RateLimitOptions{.burst = 0.5},
        RateLimitOptions{.rate = 1e-6}, RateLimitOptions{.rate = 0.1, .burst = 1e9},
        RateLimitOptions{.prefix = "rl:{x}"}, RateLimitOptions{.max_client_bytes = 0},
        RateLimitOptions{.max_local_clients = 0}}) {
    auto created = RateLimiter::create(bad, nullptr);
    ASSERT_FALSE(created);
    EXPECT_EQ(created.error().kind, ErrorKind::kInvalidArgument);
  }
  EXPECT_FALSE(RateLimiter::create({}, nullptr, nullptr));
  auto limiter = RateLimiter::create({.max_client_bytes = 4}, nullptr);
  ASSERT_TRUE(limiter);
  EXPECT_EQ((*limiter)->admit("", Deadline::after(seconds(1))).error().kind,
            ErrorKind::kInvalidArgument);
  EXPECT_EQ((*limiter)->admit("12345", Deadline::after(seconds(1))).error().kind,
            ErrorKind::kInvalidArgument);
  EXPECT_TRUE((*limiter)->admit("1234", Deadline::after(seconds(1))));
}

// get_for: over the limit, the L1 copy or kRateLimited; under it, a get.
struct LimitedFixture {
  LimitedFixture() {
    ProtectorOptions options{.ttl = seconds(10), .ttl_jitter = 0};
    options.clock = clock;
    auto limiter = RateLimiter::create({.rate = 1, .burst = 1}, nullptr, clock);
    EXPECT_TRUE(limiter);
    options.rate_limiter = std::move(*limiter);
    auto p = Protector::create(
        std::move(options),
        std::make_shared<CallbackRepository>(
            [this](std::string_view key, Deadline) -> Result<std::optional<std::string>> {
              loads.fetch_add(1);
              return std::optional<std::string>("value-of-" + std::string(key));
            }));
    EXPECT_TRUE(p);
    protector = std::move(*p);
  }
  std::shared_ptr<ManualClock> clock = std::make_shared<ManualClock>();
  std::atomic<int> loads{0};
  std::unique_ptr<Protector> protector;
};

TEST(ProtectorGetFor, OverTheLimitACallerGetsItsL1CopyElseRateLimitedWithRetryAfter) {
  LimitedFixture f;
  bool limited = true;
  ASSERT_EQ(f.protector->get_for("tenant", "k", Deadline::after(seconds(1)), &limited).value(),
            "value-of-k");
  EXPECT_FALSE(limited);
  // Over the limit (1/s): the copy held in L1, no load.
  ASSERT_EQ(f.protector->get_for("tenant", "k", Deadline::after(seconds(1)), &limited).value(),
            "value-of-k");
  EXPECT_TRUE(limited);
  // ... also when it is stale (past its TTL, within fail_safe_max_staleness).
  f.clock->advance(seconds(11));
  // (the limit's second is over: this one is admitted and reloads)
  ASSERT_EQ(f.protector->get_for("tenant", "k", Deadline::after(seconds(1)), &limited).value(),
            "value-of-k");
  EXPECT_FALSE(limited);
  EXPECT_EQ(f.loads.load(), 2);
  // No copy of "other": refused, with when to come back.
  auto refused = f.protector->get_for("tenant", "other", Deadline::after(seconds(1)), &limited);
  ASSERT_FALSE(refused);
  EXPECT_TRUE(limited);
  EXPECT_EQ(refused.error().kind, ErrorKind::kRateLimited);
  EXPECT_GT(refused.error().retry_after, Duration::zero());
  EXPECT_LE(refused.error().retry_after, seconds(1));
  EXPECT_EQ(f.loads.load(), 2);
  const ProtectionMetrics m = f.protector->metrics();
  EXPECT_EQ(m.rate_limited, 2u);
  EXPECT_EQ(m.rate_limited_stale, 1u);
  // Another tenant is not held back by this one.
  EXPECT_TRUE(f.protector->get_for("other-tenant", "other", Deadline::after(seconds(1))));
}

TEST(ProtectorGetFor, AStaleCopyTooOldForTheFailSafeIsNotAnswered) {
  LimitedFixture f;
  ASSERT_TRUE(f.protector->get_for("tenant", "k", Deadline::after(seconds(1))));
  f.clock->advance(seconds(10) + std::chrono::hours(1) + seconds(1));  // past the fail-safe
  ASSERT_TRUE(f.protector->get_for("tenant", "other", Deadline::after(seconds(1))));  // admitted
  auto refused = f.protector->get_for("tenant", "k", Deadline::after(seconds(1)));
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().kind, ErrorKind::kRateLimited);
}

}  // namespace
}  // namespace herdguard
