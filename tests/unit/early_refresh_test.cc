// Early refresh (include/herdguard/early_refresh.h): the XFetch decision and
// the refresh window as pure functions, then the Protector refreshing a fresh
// entry in the background on a ManualClock — eager at its threshold, XFetch
// near expiry — without any caller waiting for a load.
#include "herdguard/early_refresh.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <mutex>
#include <random>
#include <thread>

#include "herdguard/protector.h"
#include "test_support.h"

namespace herdguard {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::wait_until;

const TimePoint kT0 = TimePoint(seconds(1'900'000'000));

TEST(XFetch, AReadAtOrPastExpiryIsAlwaysDue) {
  EXPECT_TRUE(xfetch_due(kT0, kT0, milliseconds(10), 1.0, 1.0));
  EXPECT_TRUE(xfetch_due(kT0 + seconds(1), kT0, Duration::zero(), 1.0, 1.0));
}

TEST(XFetch, DueWhenTheDrawReachesPastFreshUntil) {
  // −ln(e^−1) = 1: the draw reaches exactly Δ·β ahead.
  const double one = std::exp(-1.0);
  const Duration delta = milliseconds(100);
  EXPECT_TRUE(xfetch_due(kT0 - milliseconds(99), kT0, delta, 1.0, one));
  EXPECT_FALSE(xfetch_due(kT0 - milliseconds(101), kT0, delta, 1.0, one));
  // β scales the reach.
  EXPECT_TRUE(xfetch_due(kT0 - milliseconds(199), kT0, delta, 2.0, one));
  EXPECT_FALSE(xfetch_due(kT0 - milliseconds(201), kT0, delta, 2.0, one));
  // u = 1 reaches nowhere; u = 0 is taken as the smallest positive double.
  EXPECT_FALSE(xfetch_due(kT0 - milliseconds(1), kT0, delta, 1.0, 1.0));
  EXPECT_TRUE(xfetch_due(kT0 - seconds(70), kT0, delta, 1.0, 0.0));
}

TEST(XFetch, AnInstantLoadIsNeverRefreshedEarly) {
  EXPECT_FALSE(xfetch_due(kT0 - Duration(1), kT0, Duration::zero(), 1.0, 1e-300));
}

// The probability of a refresh at a gap g before expiry is e^(−g/(Δβ)).
TEST(XFetch, RefreshesWithTheExponentialProbabilityOfThePaper) {
  std::mt19937_64 rng(42);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  const Duration delta = milliseconds(50);
  for (const double gaps : {0.5, 1.0, 2.0}) {
    const auto gap = std::chrono::duration_cast<Duration>(delta * gaps);
    int due = 0;
    constexpr int kDraws = 200'000;
    for (int i = 0; i < kDraws; ++i) {
      if (xfetch_due(kT0 - gap, kT0, delta, 1.0, 1.0 - unit(rng))) ++due;
    }
    EXPECT_NEAR(static_cast<double>(due) / kDraws, std::exp(-gaps), 0.005) << gaps;
  }
}

TEST(RefreshWindow, StartsWhereEachPolicyMayRefresh) {
  const EarlyRefreshOptions none{};
  const EarlyRefreshOptions xfetch{.mode = EarlyRefreshMode::kXFetch, .beta = 2.0};
  const EarlyRefreshOptions eager{.mode = EarlyRefreshMode::kEager, .eager_fraction = 0.75};
  const Duration delta = milliseconds(10);
  const Duration ttl = seconds(60);
  EXPECT_EQ(refresh_window_start(none, kT0, delta, ttl, false), TimePoint::max());
  EXPECT_EQ(refresh_window_start(xfetch, kT0, delta, ttl, false),
            kT0 - milliseconds(160));  // kXFetchHorizon · Δ · β
  EXPECT_EQ(refresh_window_start(xfetch, kT0, Duration::zero(), ttl, false), kT0);
  EXPECT_EQ(refresh_window_start(eager, kT0, delta, ttl, false), kT0 - seconds(15));
  // Negative entries and entries that never expire are never refreshed early.
  EXPECT_EQ(refresh_window_start(eager, kT0, delta, ttl, true), TimePoint::max());
  EXPECT_EQ(refresh_window_start(xfetch, TimePoint::max(), delta, ttl, false), TimePoint::max());
}

TEST(EarlyRefreshOptions, RefusesBadValues) {
  EXPECT_TRUE(EarlyRefreshOptions{}.validate());
  for (double beta : {0.0, -1.0, std::nan(""), HUGE_VAL}) {
    auto r = EarlyRefreshOptions{.beta = beta}.validate();
    ASSERT_FALSE(r) << beta;
    EXPECT_EQ(r.error().kind, ErrorKind::kInvalidArgument);
  }
  for (double fraction : {0.0, 1.0, 1.5, std::nan("")}) {
    EXPECT_FALSE(EarlyRefreshOptions{.eager_fraction = fraction}.validate()) << fraction;
  }
  ProtectorOptions options;
  options.early_refresh.beta = 0;
  auto p = Protector::create(
      options, std::make_shared<CallbackRepository>([](std::string_view, Deadline) {
        return Result<std::optional<std::string>>(std::optional<std::string>("v"));
      }));
  ASSERT_FALSE(p);
  EXPECT_NE(p.error().message.find("beta"), std::string::npos) << p.error().message;
}

// A repository answering "v<n>" on its n-th call (or what the test scripts),
// optionally taking `load_time` of real time (the entry's load_duration).
class CountingRepository {
 public:
  int calls() const { return calls_.load(); }
  void fail_from_now() { fail_.store(true); }
  void answer_not_found() { not_found_.store(true); }
  void take(Duration load_time) { load_time_ = load_time; }
  std::shared_ptr<Repository> repository() {
    return std::make_shared<CallbackRepository>(
        [this](std::string_view, Deadline) -> Result<std::optional<std::string>> {
          const int n = calls_.fetch_add(1) + 1;
          if (load_time_ > Duration::zero()) std::this_thread::sleep_for(load_time_);
          if (fail_.load()) return make_error(ErrorKind::kBackend, "database down");
          if (not_found_.load()) return std::optional<std::string>();
          return std::optional<std::string>("v" + std::to_string(n));
        });
  }

 private:
  std::atomic<int> calls_{0};
  std::atomic<bool> fail_{false};
  std::atomic<bool> not_found_{false};
  Duration load_time_{};
};

struct Fixture {
  explicit Fixture(EarlyRefreshOptions early, Duration load_time = Duration::zero()) {
    repo.take(load_time);
    ProtectorOptions options{.ttl = seconds(10), .ttl_jitter = 0};
    options.early_refresh = early;
    options.clock = clock;
    auto p = Protector::create(std::move(options), repo.repository());
    EXPECT_TRUE(p.has_value()) << p.error().to_string();
    protector = std::move(*p);
  }
  // Waits for the background refresh the last read started.
  void refresh_done() {
    wait_until([&] { return protector->metrics().loads_in_flight == 0; });
  }
  std::shared_ptr<ManualClock> clock = std::make_shared<ManualClock>();
  CountingRepository repo;
  std::unique_ptr<Protector> protector;
};

const EarlyRefreshOptions kEager{.mode = EarlyRefreshMode::kEager, .eager_fraction = 0.8};

TEST(EarlyRefresh, EagerRefreshesOnTheFirstReadPastTheFractionAndNobodyWaits) {
  Fixture f(kEager);
  ASSERT_EQ(f.protector->get("k").value_or(""), "v1");
  f.clock->advance(milliseconds(7'900));  // 79% of the TTL
  EXPECT_EQ(f.protector->get("k").value_or(""), "v1");
  EXPECT_EQ(f.repo.calls(), 1);
  f.clock->advance(milliseconds(200));  // 81%: still fresh, answered at once, refreshed behind
  EXPECT_EQ(f.protector->get("k").value_or(""), "v1");
  f.refresh_done();
  EXPECT_EQ(f.repo.calls(), 2);
  EXPECT_EQ(f.protector->get("k").value_or(""), "v2");
  f.clock->advance(milliseconds(2'000));  // past the first entry's expiry
  EXPECT_EQ(f.protector->get("k").value_or(""), "v2");
  const ProtectionMetrics m = f.protector->metrics();
  EXPECT_EQ(m.early_refreshes, 1u);
  EXPECT_EQ(m.cache_misses, 1u);  // only the first get waited for a load
  EXPECT_EQ(m.cache_hits, m.total_requests - 1);
}

TEST(EarlyRefresh, ReadsDuringARunningRefreshStartNoOther) {
  Fixture f(kEager);
  ASSERT_TRUE(f.protector->get("k"));
  f.clock->advance(milliseconds(8'500));
  for (int i = 0; i < 50; ++i) EXPECT_TRUE(f.protector->get("k"));
  f.refresh_done();
  EXPECT_EQ(f.repo.calls(), 2);
  // Until the new entry's own threshold, no read refreshes again.
  f.clock->advance(milliseconds(7'000));
  for (int i = 0; i < 50; ++i) EXPECT_EQ(f.protector->get("k").value_or(""), "v2");
  EXPECT_EQ(f.repo.calls(), 2);
  EXPECT_EQ(f.protector->metrics().early_refreshes, 1u);
}

TEST(EarlyRefresh, AFailedRefreshLeavesTheFreshEntryInPlace) {
  Fixture f(kEager);
  ASSERT_TRUE(f.protector->get("k"));
  f.repo.fail_from_now();
  f.clock->advance(milliseconds(9'000));
  EXPECT_EQ(f.protector->get("k").value_or(""), "v1");
  f.refresh_done();
  EXPECT_EQ(f.repo.calls(), 2);
  // Still fresh, still there; this read, still in the window, tries again.
  EXPECT_EQ(f.protector->get("k").value_or(""), "v1");
  f.refresh_done();
  const ProtectionMetrics m = f.protector->metrics();
  EXPECT_EQ(m.db_errors, static_cast<std::uint64_t>(f.repo.calls() - 1));  // every refresh failed
  EXPECT_EQ(m.errors, 0u);  // no caller saw a failure
}

TEST(EarlyRefresh, NegativeEntriesAreNotRefreshedEarly) {
  Fixture f(kEager);
  f.repo.answer_not_found();
  ASSERT_FALSE(f.protector->get("missing"));
  f.clock->advance(milliseconds(4'900));  // negative_ttl is 5 s
  EXPECT_FALSE(f.protector->get("missing"));
  EXPECT_EQ(f.repo.calls(), 1);
  EXPECT_EQ(f.protector->metrics().early_refreshes, 0u);
}

TEST(EarlyRefresh, NoneIsTheDefaultAndRefreshesNothing) {
  Fixture f(EarlyRefreshOptions{});
  ASSERT_TRUE(f.protector->get("k"));
  f.clock->advance(milliseconds(9'999));
  EXPECT_EQ(f.protector->get("k").value_or(""), "v1");
  EXPECT_EQ(f.repo.calls(), 1);
  EXPECT_EQ(f.protector->metrics().early_refreshes, 0u);
}

// The load takes ~20 ms of real time (Δ); XFetch reads far from expiry
// never refresh, a read 1 ns before expiry refreshes with probability
// 1 − e^(−1 ns / 20 ms) ≈ 1 − 5·10⁻⁸.
TEST(EarlyRefresh, XFetchRefreshesNearExpiryInProportionToTheLoadTime) {
  Fixture f({.mode = EarlyRefreshMode::kXFetch, .beta = 1.0}, milliseconds(20));
  ASSERT_EQ(f.protector->get("k").value_or(""), "v1");
  f.clock->advance(seconds(5));  // 5 s before expiry: beyond kXFetchHorizon · Δ · β
  for (int i = 0; i < 1000; ++i) EXPECT_EQ(f.protector->get("k").value_or(""), "v1");
  EXPECT_EQ(f.repo.calls(), 1);
  f.clock->advance(seconds(5) - Duration(1));
  EXPECT_EQ(f.protector->get("k").value_or(""), "v1");
  f.refresh_done();
  EXPECT_EQ(f.repo.calls(), 2);
  EXPECT_EQ(f.protector->metrics().early_refreshes, 1u);
  f.clock->advance(Duration(1));  // the first entry's expiry: the refreshed one answers
  EXPECT_EQ(f.protector->get("k").value_or(""), "v2");
  EXPECT_EQ(f.protector->metrics().cache_misses, 1u);
}

}  // namespace
}  // namespace herdguard
