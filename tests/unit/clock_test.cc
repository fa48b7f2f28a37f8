#include "herdguard/clock.h"

#include <gtest/gtest.h>

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

TEST(Deadline, EarliestPicksTheSooner) {
  auto soon = Deadline::after(seconds(1));
  auto late = Deadline::after(hours(1));
  EXPECT_EQ(Deadline::earliest(soon, late).when(), soon.when());
  EXPECT_EQ(Deadline::earliest(late, soon).when(), soon.when());
}

}  // namespace
}  // namespace herdguard
