#include "herdguard/concurrency_limiter.h"

#include <gtest/gtest.h>

#include <optional>
#include <thread>
#include <vector>

#include "test_support.h"

namespace herdguard {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::wait_until;

std::shared_ptr<ConcurrencyLimiter> make(ConcurrencyLimitOptions options) {
  auto created = ConcurrencyLimiter::create(options);
  EXPECT_TRUE(created.has_value()) << created.error().to_string();
  return *created;
}

Deadline far() { return Deadline::after(seconds(60)); }

// An acquire() on its own thread, constructed once it waits for a slot
// (the limiter counts one more waiter); result() joins it.
class QueuedAcquire {
 public:
  QueuedAcquire(ConcurrencyLimiter& limiter, Deadline deadline) {
    const std::size_t before = limiter.stats().waiting;
    thread_ =
        std::thread([&limiter, deadline, this] { result_.emplace(limiter.acquire(deadline)); });
    wait_until([&] { return limiter.stats().waiting == before + 1; });
  }
  ~QueuedAcquire() {
    if (thread_.joinable()) thread_.join();
  }
  Result<ConcurrencyLimiter::Permit>& result() {
    if (thread_.joinable()) thread_.join();
    return *result_;
  }

 private:
  std::optional<Result<ConcurrencyLimiter::Permit>> result_;
  std::thread thread_;
};

TEST(ConcurrencyLimiter, FixedLimitShedsTheExcessWithARetryAfter) {
  auto limiter = make({.mode = LimitMode::kFixed, .limit = 2, .max_wait = Duration::zero()});
  auto a = limiter->acquire(far());
  auto b = limiter->acquire(far());
  ASSERT_TRUE(a.has_value());
  ASSERT_TRUE(b.has_value());
  auto c = limiter->acquire(far());
  ASSERT_FALSE(c.has_value());
  EXPECT_EQ(c.error().kind, ErrorKind::kOverloaded);
  EXPECT_GT(c.error().retry_after, Duration::zero());
  EXPECT_NE(c.error().to_string().find("retry after"), std::string::npos);
  const ConcurrencyLimiterStats stats = limiter->stats();
  EXPECT_EQ(stats.limit, 2u);
  EXPECT_EQ(stats.in_flight, 2u);
  EXPECT_EQ(stats.admitted, 2u);
  EXPECT_EQ(stats.shed, 1u);
}

TEST(ConcurrencyLimiter, APermitLetGoWithoutARecordFreesItsSlot) {
  auto limiter = make({.mode = LimitMode::kFixed, .limit = 1, .max_wait = Duration::zero()});
  {
    auto a = limiter->acquire(far());
    ASSERT_TRUE(a.has_value());
    EXPECT_FALSE(limiter->acquire(far()).has_value());
  }
  EXPECT_EQ(limiter->stats().in_flight, 0u);
  auto b = limiter->acquire(far());
  ASSERT_TRUE(b.has_value());
  b->record(milliseconds(1), LoadOutcome::kSuccess);
  b->record(milliseconds(1), LoadOutcome::kSuccess);  // only the first counts
  EXPECT_EQ(limiter->stats().in_flight, 0u);
}

TEST(ConcurrencyLimiter, ALoadBeyondTheLimitWaitsForAFreedSlot) {
  auto limiter = make({.mode = LimitMode::kFixed, .limit = 1, .max_wait = seconds(60)});
  auto held = limiter->acquire(far());
  ASSERT_TRUE(held.has_value());
  QueuedAcquire waited(*limiter, far());
  held->record(milliseconds(5), LoadOutcome::kSuccess);
  ASSERT_TRUE(waited.result().has_value());
  EXPECT_EQ(limiter->stats().in_flight, 1u);
  EXPECT_EQ(limiter->stats().shed, 0u);
}

// The caller's deadline bounds the wait, however long max_wait is.
TEST(ConcurrencyLimiter, TheWaitEndsAtTheCallersDeadline) {
  auto limiter = make({.mode = LimitMode::kFixed, .limit = 1, .max_wait = seconds(600)});
  auto held = limiter->acquire(far());
  ASSERT_TRUE(held.has_value());
  const auto start = std::chrono::steady_clock::now();
  auto late = limiter->acquire(Deadline::after(milliseconds(20)));
  ASSERT_FALSE(late.has_value());
  EXPECT_EQ(late.error().kind, ErrorKind::kOverloaded);
  EXPECT_LT(std::chrono::steady_clock::now() - start, seconds(600));
  EXPECT_EQ(limiter->stats().waiting, 0u);
}

// With loads taking 10 s, a caller with 5 s left would wait in vain: it is
// shed at once. One with a minute left waits.
TEST(ConcurrencyLimiter, ALoadThatCouldNotGetASlotInTimeIsShedAtOnce) {
  auto limiter = make({.mode = LimitMode::kFixed, .limit = 1, .max_wait = seconds(60)});
  limiter->acquire(far())->record(seconds(10), LoadOutcome::kSuccess);
  EXPECT_EQ(limiter->stats().average_latency, seconds(10));
  auto held = limiter->acquire(far());
  ASSERT_TRUE(held.has_value());

  const auto start = std::chrono::steady_clock::now();
  auto hopeless = limiter->acquire(Deadline::after(seconds(5)));
  ASSERT_FALSE(hopeless.has_value());
  EXPECT_LT(std::chrono::steady_clock::now() - start, seconds(5));  // did not wait it out
  EXPECT_EQ(hopeless.error().retry_after, seconds(10));
  EXPECT_NE(hopeless.error().message.find("expected wait"), std::string::npos);

  QueuedAcquire patient(*limiter, Deadline::after(seconds(60)));
  held->record(seconds(10), LoadOutcome::kSuccess);
  EXPECT_TRUE(patient.result().has_value());
}

// A freed slot goes to a load that waited for it, not to a newcomer that
// asks without waiting (a background refresh): whether the waiter has woken
// yet or not, the newcomer gets nothing.
TEST(ConcurrencyLimiter, NewcomersDoNotTakeASlotAheadOfWaiters) {
  auto limiter = make({.mode = LimitMode::kFixed, .limit = 1, .max_wait = seconds(60)});
  auto held = limiter->acquire(far());
  ASSERT_TRUE(held.has_value());
  QueuedAcquire waited(*limiter, far());
  held->record(milliseconds(1), LoadOutcome::kSuccess);
  EXPECT_FALSE(limiter->try_acquire().has_value());
  EXPECT_FALSE(limiter->acquire(Deadline::after(Duration::zero())).has_value());
  EXPECT_TRUE(waited.result().has_value());
}

// A load that releases its slot and asks again at once (a closed-loop
// caller) must queue behind the loads already waiting, or a few such
// callers keep the slots while the rest wait until their deadlines.
TEST(ConcurrencyLimiter, AFreedSlotIsHandedToTheOldestWaiterNotTakenByTheNextAcquire) {
  auto limiter = make({.mode = LimitMode::kFixed, .limit = 1, .max_wait = seconds(60)});
  auto held = limiter->acquire(far());
  ASSERT_TRUE(held.has_value());
  QueuedAcquire first(*limiter, far());
  QueuedAcquire second(*limiter, far());
  held->record(milliseconds(1), LoadOutcome::kSuccess);
  // Already counted for the first waiter, which may not have woken yet.
  EXPECT_EQ(limiter->stats().in_flight, 1u);
  EXPECT_EQ(limiter->stats().waiting, 1u);
  // The releaser comes back: it queues behind `second`.
  std::optional<Result<ConcurrencyLimiter::Permit>> again;
  std::thread comeback([&] { again.emplace(limiter->acquire(far())); });
  wait_until([&] { return limiter->stats().waiting == 2; });
  ASSERT_TRUE(first.result().has_value());
  first.result()->record(milliseconds(1), LoadOutcome::kSuccess);
  ASSERT_TRUE(second.result().has_value());
  EXPECT_EQ(limiter->stats().waiting, 1u);  // the comeback still waits
  second.result()->record(milliseconds(1), LoadOutcome::kSuccess);
  comeback.join();
  ASSERT_TRUE(again.has_value());
  EXPECT_TRUE(again->has_value());
}

// A waiter whose deadline passes leaves the queue; the next one is served.
TEST(ConcurrencyLimiter, AWaiterThatGaveUpIsSkipped) {
  auto limiter = make({.mode = LimitMode::kFixed, .limit = 1, .max_wait = seconds(60)});
  auto held = limiter->acquire(far());
  ASSERT_TRUE(held.has_value());
  QueuedAcquire impatient(*limiter, Deadline::after(milliseconds(20)));
  QueuedAcquire patient(*limiter, far());
  EXPECT_EQ(impatient.result().error().kind, ErrorKind::kOverloaded);
  EXPECT_EQ(limiter->stats().waiting, 1u);
  held->record(milliseconds(1), LoadOutcome::kSuccess);
  EXPECT_TRUE(patient.result().has_value());
}

TEST(ConcurrencyLimiter, WaitersBeyondMaxWaitingAreShedAtOnce) {
  auto limiter =
      make({.mode = LimitMode::kFixed, .limit = 1, .max_wait = seconds(60), .max_waiting = 1});
  auto held = limiter->acquire(far());
  ASSERT_TRUE(held.has_value());
  QueuedAcquire waited(*limiter, far());
  auto refused = limiter->acquire(far());  // would wait 60 s if it were queued
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().kind, ErrorKind::kOverloaded);
  held->record(milliseconds(1), LoadOutcome::kSuccess);
  EXPECT_TRUE(waited.result().has_value());
}

TEST(ConcurrencyLimiter, OffAdmitsEverythingAndCountsIt) {
  auto limiter = make({.mode = LimitMode::kOff, .limit = 1, .max_wait = Duration::zero()});
  std::vector<ConcurrencyLimiter::Permit> permits;
  for (int i = 0; i < 100; ++i) {
    auto p = limiter->acquire(far());
    ASSERT_TRUE(p.has_value());
    permits.push_back(std::move(*p));
  }
  EXPECT_EQ(limiter->stats().in_flight, 100u);
  EXPECT_EQ(limiter->stats().limit, 0u);
  permits.clear();
  EXPECT_EQ(limiter->stats().in_flight, 0u);
}

// Fills every slot, then records all loads with `latency`: the limiter is
// in full use, so it learns from each sample.
void run_full_rounds(ConcurrencyLimiter& limiter, int rounds, Duration latency) {
  for (int r = 0; r < rounds; ++r) {
    std::vector<ConcurrencyLimiter::Permit> permits;
    const std::size_t limit = limiter.stats().limit;
    for (std::size_t i = 0; i < limit; ++i) {
      auto p = limiter.acquire(Deadline::after(Duration::zero()));
      if (!p) break;
      permits.push_back(std::move(*p));
    }
    for (auto& p : permits) p.record(latency, LoadOutcome::kSuccess);
  }
}

TEST(ConcurrencyLimiter, AdaptiveLimitGrowsWhileLatencyHolds) {
  auto limiter = make({.mode = LimitMode::kAdaptive,
                       .limit = 10,
                       .min_limit = 4,
                       .max_limit = 200,
                       .max_wait = Duration::zero()});
  run_full_rounds(*limiter, 20, milliseconds(10));
  const std::size_t grown = limiter->stats().limit;
  EXPECT_GT(grown, 10u);
  EXPECT_LE(grown, 200u);
  EXPECT_EQ(limiter->stats().average_latency, milliseconds(10));
  run_full_rounds(*limiter, 200, milliseconds(10));
  EXPECT_EQ(limiter->stats().limit, 200u);  // up to max_limit, no further
}

TEST(ConcurrencyLimiter, AdaptiveLimitShrinksWhenLatencyRisesButNotBelowMin) {
  auto limiter = make({.mode = LimitMode::kAdaptive,
                       .limit = 50,
                       .min_limit = 4,
                       .max_limit = 200,
                       .max_wait = Duration::zero()});
  run_full_rounds(*limiter, 3, milliseconds(10));
  const std::size_t before = limiter->stats().limit;
  run_full_rounds(*limiter, 3, milliseconds(100));  // 10× the average: queueing
  const std::size_t after = limiter->stats().limit;
  EXPECT_LT(after, before);
  run_full_rounds(*limiter, 100, seconds(1));
  EXPECT_GE(limiter->stats().limit, 4u);
}

TEST(ConcurrencyLimiter, AdaptiveLimitDoesNotGrowWhileMostlyUnused) {
  auto limiter = make({.mode = LimitMode::kAdaptive, .limit = 20, .max_wait = Duration::zero()});
  for (int i = 0; i < 500; ++i) {
    auto p = limiter->acquire(far());  // one at a time: 1 of 20 in use
    ASSERT_TRUE(p.has_value());
    p->record(milliseconds(10), LoadOutcome::kSuccess);
  }
  EXPECT_EQ(limiter->stats().limit, 20u);
}

TEST(ConcurrencyLimiter, IgnoredOutcomesTeachNothing) {
  auto limiter = make({.mode = LimitMode::kAdaptive, .limit = 10, .max_wait = Duration::zero()});
  std::vector<ConcurrencyLimiter::Permit> permits;
  for (int i = 0; i < 10; ++i) permits.push_back(std::move(*limiter->acquire(far())));
  for (auto& p : permits) p.record(seconds(5), LoadOutcome::kIgnore);
  EXPECT_EQ(limiter->stats().limit, 10u);
  EXPECT_EQ(limiter->stats().average_latency, Duration::zero());
}

TEST(ConcurrencyLimiter, BadOptionsAreRefusedByName) {
  const auto error_of = [](ConcurrencyLimitOptions o) {
    auto r = ConcurrencyLimiter::create(o);
    return r ? std::string() : r.error().to_string();
  };
  EXPECT_NE(error_of({.limit = 0}).find("limit"), std::string::npos);
  EXPECT_NE(
      error_of({.mode = LimitMode::kAdaptive, .limit = 10, .min_limit = 11}).find("min_limit"),
      std::string::npos);
  EXPECT_NE(error_of({.mode = LimitMode::kAdaptive, .limit = 10, .max_limit = 9}).find("max_limit"),
            std::string::npos);
  EXPECT_NE(error_of({.tolerance = 0.5}).find("tolerance"), std::string::npos);
  EXPECT_NE(error_of({.smoothing = 0}).find("smoothing"), std::string::npos);
  EXPECT_NE(error_of({.max_wait = -milliseconds(1)}).find("max_wait"), std::string::npos);
  EXPECT_NE(error_of({.max_waiting = 0}).find("max_waiting"), std::string::npos);
  EXPECT_EQ(error_of({}), "");
}

}  // namespace
}  // namespace herdguard
