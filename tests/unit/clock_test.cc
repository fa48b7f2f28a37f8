#include "herdguard/clock.h"

#include <gtest/gtest.h>

#include <limits>

namespace herdguard {
namespace {

using std::chrono::hours;
using std::chrono::seconds;

TEST(ManualClock, MovesOnlyWhenTold) {
  ManualClock clock;
  const TimePoint start = clock.now();
  EXPECT_EQ(clock.now(), start);
  clock.advance(seconds(5));
  EXPECT_EQ(clock.now() - start, seconds(5));
  clock.advance(-seconds(10));  // ignored: time does not run backwards by advance()
  EXPECT_EQ(clock.now() - start, seconds(5));
  clock.set(start);
  EXPECT_EQ(clock.now(), start);
}

TEST(SystemClock, FollowsWallTime) {
  auto a = system_clock()->now();
  auto b = std::chrono::system_clock::now();
  EXPECT_LT(std::chrono::abs(b - a), hours(1));
}

TEST(Deadline, ZeroOrNegativeTimeoutIsAlreadyExpired) {
  EXPECT_TRUE(Deadline::after(Duration::zero()).expired());
  EXPECT_TRUE(Deadline::after(-seconds(1)).expired());
  EXPECT_EQ(Deadline::after(-seconds(1)).remaining(), Duration::zero());
}

TEST(Deadline, FutureDeadlineHasTimeLeft) {
  auto d = Deadline::after(hours(1));
  EXPECT_FALSE(d.expired());
  EXPECT_GT(d.remaining(), std::chrono::minutes(59));
  EXPECT_LE(d.remaining(), hours(1));
}

TEST(Deadline, HugeTimeoutSaturatesInsteadOfOverflowing) {
  auto d = Deadline::after(Duration::max());
  EXPECT_FALSE(d.expired());
  EXPECT_GT(d.remaining(), hours(24));
}

TEST(Deadline, MaxTimeoutIsNotExpiredAndLeavesCenturies) {
  auto d = Deadline::after(Duration::max());
  EXPECT_FALSE(d.expired());
  EXPECT_GT(d.remaining(), hours(24 * 365 * 100));
  EXPECT_GT(d.when(), std::chrono::steady_clock::now() + hours(24 * 365 * 100));
  // Still ordered against ordinary deadlines.
  auto soon = Deadline::after(seconds(1));
  EXPECT_EQ(Deadline::earliest(d, soon).when(), soon.when());
}

TEST(Deadline, MinTimeoutIsExpired) {
  auto d = Deadline::after(Duration::min());
  EXPECT_TRUE(d.expired());
  EXPECT_EQ(d.remaining(), Duration::zero());
}

TEST(Deadline, EarliestPicksTheSooner) {
  auto soon = Deadline::after(seconds(1));
  auto late = Deadline::after(hours(1));
  EXPECT_EQ(Deadline::earliest(soon, late).when(), soon.when());
  EXPECT_EQ(Deadline::earliest(late, soon).when(), soon.when());
}

constexpr Duration kMax = Duration::max();
constexpr Duration kMin = Duration::min();
constexpr Duration kNs{1};
// 2030-01-01T00:00:00Z, ManualClock's start.
const TimePoint k2030{seconds(1893456000)};

TEST(AddSaturating, InstantPlusDurationInRangeIsExact) {
  EXPECT_EQ(add_saturating(k2030, seconds(5)), k2030 + seconds(5));
  EXPECT_EQ(add_saturating(k2030, -seconds(5)), k2030 - seconds(5));
  EXPECT_EQ(add_saturating(k2030, Duration::zero()), k2030);
  EXPECT_EQ(add_saturating(TimePoint(), -seconds(1)), TimePoint() - seconds(1));
  // The last representable instants are reached exactly, not clamped early.
  EXPECT_EQ(add_saturating(TimePoint::max() - kNs, kNs), TimePoint::max());
  EXPECT_EQ(add_saturating(TimePoint::min() + kNs, -kNs), TimePoint::min());
}

TEST(AddSaturating, InstantPlusMaxIsTheEndOfTime) {
  EXPECT_EQ(add_saturating(k2030, kMax), TimePoint::max());
  EXPECT_EQ(add_saturating(TimePoint::max(), kNs), TimePoint::max());
  EXPECT_EQ(add_saturating(TimePoint::max(), kMax), TimePoint::max());
  // Past the end by one tick from any positive instant.
  EXPECT_EQ(add_saturating(TimePoint(kNs), kMax), TimePoint::max());
}

TEST(AddSaturating, InstantMinusTooMuchIsTheStartOfTime) {
  EXPECT_EQ(add_saturating(TimePoint::min(), -kNs), TimePoint::min());
  EXPECT_EQ(add_saturating(TimePoint::min(), kMin), TimePoint::min());
  EXPECT_EQ(add_saturating(TimePoint() - seconds(1), kMin), TimePoint::min());
  // From a positive instant, Duration::min() does not reach the start: exact.
  EXPECT_EQ(add_saturating(k2030, kMin), k2030 + kMin);
  EXPECT_EQ(add_saturating(TimePoint::max(), kMin), TimePoint(-kNs));
}

TEST(AddSaturating, DurationSumInRangeIsExact) {
  EXPECT_EQ(add_saturating(seconds(3), seconds(4)), seconds(7));
  EXPECT_EQ(add_saturating(seconds(3), -seconds(4)), -seconds(1));
  EXPECT_EQ(add_saturating(Duration::zero(), Duration::zero()), Duration::zero());
  EXPECT_EQ(add_saturating(kMax, -kNs), kMax - kNs);
  EXPECT_EQ(add_saturating(kMax - kNs, kNs), kMax);
  EXPECT_EQ(add_saturating(kMin + kNs, -kNs), kMin);
  // Opposite signs never overflow.
  EXPECT_EQ(add_saturating(kMax, kMin), -kNs);
  EXPECT_EQ(add_saturating(kMin, kMax), -kNs);
}

TEST(AddSaturating, DurationSumClampsAtBothEnds) {
  EXPECT_EQ(add_saturating(kMax, kNs), kMax);
  EXPECT_EQ(add_saturating(kNs, kMax), kMax);
  EXPECT_EQ(add_saturating(kMax, kMax), kMax);
  EXPECT_EQ(add_saturating(kMin, -kNs), kMin);
  EXPECT_EQ(add_saturating(-kNs, kMin), kMin);
  EXPECT_EQ(add_saturating(kMin, kMin), kMin);
}

TEST(ScaleSaturating, ExactProductsInRange) {
  EXPECT_EQ(scale_saturating(seconds(10), 1.5), seconds(15));
  EXPECT_EQ(scale_saturating(seconds(10), 1.0), seconds(10));
  EXPECT_EQ(scale_saturating(seconds(10), 0.0), Duration::zero());
  EXPECT_EQ(scale_saturating(seconds(10), -0.5), -seconds(5));
  EXPECT_EQ(scale_saturating(-seconds(10), 0.5), -seconds(5));
  EXPECT_EQ(scale_saturating(Duration::zero(), 1e300), Duration::zero());
  // Ticks up to 2^53 survive a factor of 1 exactly.
  const Duration two_pow_53{Duration::rep{1} << 53};
  EXPECT_EQ(scale_saturating(two_pow_53, 1.0), two_pow_53);
  EXPECT_EQ(scale_saturating(two_pow_53 - kNs, 1.0), two_pow_53 - kNs);
  // Half of max() is 2^62 - 0.5 ticks, which rounds (either way a tie goes) to 2^62.
  EXPECT_EQ(scale_saturating(kMax, 0.5), Duration(Duration::rep{1} << 62));
}

TEST(ScaleSaturating, RoundsToTheNearestTick) {
  EXPECT_EQ(scale_saturating(Duration(10), 0.26), Duration(3));    // 2.6
  EXPECT_EQ(scale_saturating(Duration(10), 0.24), Duration(2));    // 2.4
  EXPECT_EQ(scale_saturating(Duration(-10), 0.26), Duration(-3));  // -2.6
  EXPECT_EQ(scale_saturating(Duration(-10), 0.24), Duration(-2));  // -2.4
  EXPECT_EQ(scale_saturating(Duration(1), 0.4), Duration::zero());
  EXPECT_EQ(scale_saturating(Duration(1), 0.6), Duration(1));
  // Ties: 3.5 goes to 4 whether ties round away from zero or to even.
  EXPECT_EQ(scale_saturating(Duration(7), 0.5), Duration(4));
  EXPECT_EQ(scale_saturating(Duration(-7), 0.5), Duration(-4));
}

TEST(ScaleSaturating, ClampsAtMaxAndMin) {
  EXPECT_EQ(scale_saturating(kMax, 1.0), kMax);
  EXPECT_EQ(scale_saturating(kMax, 1.2), kMax);
  EXPECT_EQ(scale_saturating(kMax, 2.0), kMax);
  EXPECT_EQ(scale_saturating(kMin, 1.0), kMin);
  EXPECT_EQ(scale_saturating(kMin, 2.0), kMin);
  EXPECT_EQ(scale_saturating(kMin, -1.0), kMax);  // -min() is past max()
  EXPECT_EQ(scale_saturating(kMax, -2.0), kMin);
  EXPECT_EQ(scale_saturating(kNs, 1e300), kMax);
  EXPECT_EQ(scale_saturating(-kNs, 1e300), kMin);
  EXPECT_EQ(scale_saturating(seconds(1), std::numeric_limits<double>::infinity()), kMax);
  EXPECT_EQ(scale_saturating(seconds(1), -std::numeric_limits<double>::infinity()), kMin);
  // -max() is min() + 1 tick: in range, so at most a tick from min(), never positive.
  EXPECT_LE(scale_saturating(kMax, -1.0), kMin + kNs);
}

TEST(ScaleSaturating, NanFactorGivesZero) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  EXPECT_EQ(scale_saturating(seconds(10), nan), Duration::zero());
  EXPECT_EQ(scale_saturating(kMax, nan), Duration::zero());
  EXPECT_EQ(scale_saturating(kMin, nan), Duration::zero());
  EXPECT_EQ(scale_saturating(Duration::zero(), nan), Duration::zero());
}

// Read in this order, the two bounds hold whatever the scheduler does in
// between: coarse_now() is never ahead of a later now(), and never more
// than coarse_lag() behind an earlier one.
TEST(SystemClock, CoarseNowLagsNowByAtMostCoarseLag) {
  SystemClock clock;
  EXPECT_GT(clock.coarse_lag(), Duration::zero());  // Linux has CLOCK_REALTIME_COARSE
  for (int i = 0; i < 10'000; ++i) {
    const TimePoint before = clock.now();
    const TimePoint coarse = clock.coarse_now();
    const TimePoint after = clock.now();
    ASSERT_LE(coarse, after);
    ASSERT_GE(coarse + clock.coarse_lag(), before);
  }
}

TEST(ManualClock, CoarseNowIsExact) {
  ManualClock clock;
  clock.advance(std::chrono::milliseconds(3));
  EXPECT_EQ(clock.coarse_now(), clock.now());
  EXPECT_EQ(clock.coarse_lag(), Duration::zero());
}

}  // namespace
}  // namespace herdguard
