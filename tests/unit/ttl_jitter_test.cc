#include <gtest/gtest.h>

#include <array>
#include <random>

#include "herdguard/protector.h"

namespace herdguard {
namespace {

using std::chrono::seconds;

TEST(TtlJitter, StaysWithinBounds) {
  const Duration ttl = seconds(100);
  EXPECT_EQ(jittered_ttl(ttl, 0.2, 0.0), seconds(80));
  EXPECT_EQ(jittered_ttl(ttl, 0.2, 0.5), seconds(100));
  EXPECT_LT(jittered_ttl(ttl, 0.2, 0.999999), seconds(120));
  EXPECT_EQ(jittered_ttl(ttl, 0.0, 0.9), ttl);
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  for (int i = 0; i < 10'000; ++i) {
    Duration d = jittered_ttl(ttl, 0.2, unit(rng));
    ASSERT_GE(d, seconds(80));
    ASSERT_LE(d, seconds(120));
  }
}

TEST(TtlJitter, NeverReturnsZero) {
  EXPECT_GT(jittered_ttl(Duration(1), 0.9, 0.0), Duration::zero());
}

// Keys stored together by the Protector expire spread over the whole window,
// not bunched: every tenth of [0.8, 1.2] x ttl gets a fair share.
TEST(TtlJitter, ProtectorSpreadsExpiriesUniformly) {
  auto clock = std::make_shared<ManualClock>();
  auto repo = std::make_shared<CallbackRepository>(
      [](std::string_view, Deadline) { return Result<std::optional<std::string>>(std::nullopt); });
  auto p = Protector::create({.ttl = seconds(100), .ttl_jitter = 0.2, .clock = clock}, repo);
  ASSERT_TRUE(p.has_value());
  constexpr int kKeys = 2000;
  std::array<int, 10> bins{};
  const TimePoint now = clock->now();
  for (int i = 0; i < kKeys; ++i) {
    const std::string key = "key" + std::to_string(i);
    ASSERT_TRUE((*p)->set(key, "v"));
    auto entry = (*p)->peek(key);
    ASSERT_TRUE(entry.has_value());
    const double factor = std::chrono::duration<double>(entry->fresh_until - now).count() / 100.0;
    ASSERT_GE(factor, 0.8);
    ASSERT_LE(factor, 1.2);
    bins[std::min(9, static_cast<int>((factor - 0.8) / 0.04))]++;
  }
  // Uniform would put 200 in each bin; 120 is far below any plausible draw.
  for (int count : bins) EXPECT_GT(count, 120);
}

}  // namespace
}  // namespace herdguard
