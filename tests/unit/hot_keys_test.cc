// The hot-key detector and its Space-Saving sketch, on a ManualClock.
#include <gtest/gtest.h>
#include <herdguard/hot_keys.h>

#include <string>

#include "hotkeys/space_saving.h"

namespace herdguard {
namespace {

using std::chrono::milliseconds;

TEST(SpaceSaving, CountsExactlyWhileKeysFitAndNeverUndercountsAfter) {
  internal::SpaceSaving sketch(3);
  sketch.add("a", 5);
  sketch.add("b", 2);
  sketch.add("a", 1);
  EXPECT_EQ(sketch.count("a"), 6u);
  EXPECT_EQ(sketch.count("b"), 2u);
  EXPECT_EQ(sketch.floor(), 0u);  // not full: an absent key was never seen
  sketch.add("c", 1);
  EXPECT_EQ(sketch.floor(), 1u);
  // Full: "d" takes over the smallest counter ("c", 1) and inherits it.
  sketch.add("d", 1);
  EXPECT_EQ(sketch.count("c"), 0u);
  EXPECT_EQ(sketch.count("d"), 2u);
  sketch.for_each([](std::string_view key, std::uint64_t count, std::uint64_t error) {
    EXPECT_EQ(error, key == "d" ? 1u : 0u) << key;  // "d" surely read once of its 2
    EXPECT_GE(count, error);
  });
  EXPECT_EQ(sketch.count("a"), 6u);
  sketch.clear();
  EXPECT_EQ(sketch.count("a"), 0u);
  EXPECT_EQ(sketch.floor(), 0u);
}

TEST(SpaceSaving, FindsTheHeavyHitterInALongTailWithFewCounters) {
  internal::SpaceSaving sketch(8);
  for (int i = 0; i < 10'000; ++i) {
    sketch.add("heavy", 1);
    sketch.add("tail:" + std::to_string(i), 1);
  }
  // True count 10,000; the estimate is over it by at most the floor.
  EXPECT_GE(sketch.count("heavy"), 10'000u);
  EXPECT_LE(sketch.count("heavy"), 10'000u + sketch.floor());
}

class HotKeyDetectorTest : public ::testing::Test {
 protected:
  std::shared_ptr<ManualClock> clock = std::make_shared<ManualClock>();

  // Every read recorded (the tests pass their weights themselves); rates
  // only, unless `shares`.
  std::unique_ptr<HotKeyDetector> make(HotKeyOptions options, bool shares = false) {
    options.sample_one_in = 1;
    if (!shares) options.min_share = options.viral_min_share = 0;
    auto created = HotKeyDetector::create(options, clock);
    EXPECT_TRUE(created) << created.error().to_string();
    return std::move(*created);
  }
  // `per_bucket` reads of `key` (recorded one by one: a record's weight is
  // a sampling interval, and a key needs kMinHotKeySamples records) in each
  // of `buckets` buckets of 250 ms, then the clock moves past the bucket.
  static void feed(HotKeyDetector& d, ManualClock& clock, std::string_view key, int per_bucket,
                   int buckets, HotKeyChanges* last = nullptr) {
    for (int b = 0; b < buckets; ++b) {
      for (int i = 0; i < per_bucket; ++i) {
        HotKeyChanges changes = d.record(key, clock.now());
        if (last != nullptr && !changes.empty()) *last = std::move(changes);
      }
      clock.advance(milliseconds(250));
    }
  }
  static void reads(HotKeyDetector& d, ManualClock& clock, std::string_view key, int n) {
    for (int i = 0; i < n; ++i) d.record(key, clock.now());
  }
};

TEST_F(HotKeyDetectorTest, RefusesBadOptionsNamingTheField) {
  auto bad = [&](HotKeyOptions o, std::string_view field) {
    auto created = HotKeyDetector::create(o, clock);
    ASSERT_FALSE(created);
    EXPECT_EQ(created.error().kind, ErrorKind::kInvalidArgument);
    EXPECT_NE(created.error().message.find(field), std::string::npos) << created.error().message;
  };
  bad({.top_k = 0}, "top_k");
  bad({.capacity = 4, .top_k = 8}, "capacity");
  bad({.window = milliseconds(1)}, "window");
  bad({.window = Duration::max()}, "window");
  bad({.min_rate = 0}, "min_rate");
  bad({.viral_growth = 1.0}, "viral_growth");
  bad({.sample_one_in = 3}, "sample_one_in");
  bad({.sample_one_in = 1u << 17}, "sample_one_in");
  bad({.samples_per_window = 10}, "samples_per_window");
  bad({.refresh_fraction = 1.0}, "refresh_fraction");
  EXPECT_FALSE(HotKeyDetector::create({}, nullptr));
}

TEST_F(HotKeyDetectorTest, AKeyReadOverMinRateTurnsHotAndCoolsWhenReadsStop) {
  auto d = make({.min_rate = 1000, .viral_min_rate = 100});
  HotKeyChanges changes;
  // 400 reads per 250 ms = 1,600/s, for two windows.
  feed(*d, *clock, "product:1", 400, 8, &changes);
  feed(*d, *clock, "product:2", 10, 1);  // ends the 8th bucket
  ASSERT_EQ(d->hot_keys().size(), 1u);
  const HotKey hot = d->hot_keys()[0];
  EXPECT_EQ(hot.key, "product:1");
  EXPECT_DOUBLE_EQ(hot.rate, 1600.0);
  EXPECT_FALSE(hot.viral);
  EXPECT_TRUE(d->is_hot("product:1"));
  EXPECT_FALSE(d->is_hot("product:2"));
  // Nothing for two windows: it cools down.
  clock->advance(milliseconds(2100));
  changes = d->advance(clock->now());
  ASSERT_EQ(changes.cooled.size(), 1u);
  EXPECT_EQ(changes.cooled[0], "product:1");
  EXPECT_TRUE(d->hot_keys().empty());
}

TEST_F(HotKeyDetectorTest, AKeyTakingMinShareOfAQuietProcesssReadsIsHotToo) {
  auto d = make({.min_rate = 1e9, .viral_min_rate = 1e9, .min_share = 0.1}, /*shares=*/true);
  for (int b = 0; b < 4; ++b) {
    reads(*d, *clock, "big", 12);   // 12 of 100 reads: 12%
    reads(*d, *clock, "small", 8);  // 8%
    for (int i = 0; i < 80; ++i) d->record("tail:" + std::to_string(i), clock->now());
    clock->advance(milliseconds(250));
  }
  d->advance(clock->now());
  ASSERT_EQ(d->hot_keys().size(), 1u);
  EXPECT_EQ(d->hot_keys()[0].key, "big");
}

TEST_F(HotKeyDetectorTest, AKeyThatGrowsTenfoldIsViralWithinOneBucketOfItsStart) {
  auto d = make({.min_rate = 100'000, .viral_min_rate = 100, .viral_growth = 10});
  // Two quiet windows: 5 reads per bucket (20/s).
  feed(*d, *clock, "key:9999", 5, 8);
  feed(*d, *clock, "other", 1, 1);
  EXPECT_TRUE(d->hot_keys().empty());
  const TimePoint start = clock->now();
  // It goes viral: 500 reads per bucket. One bucket later it is detected.
  HotKeyChanges changes;
  feed(*d, *clock, "key:9999", 500, 1);
  changes = d->advance(clock->now());
  ASSERT_EQ(changes.turned_hot.size(), 1u);
  const HotKey& hot = changes.turned_hot[0];
  EXPECT_EQ(hot.key, "key:9999");
  EXPECT_TRUE(hot.viral);
  EXPECT_LE(hot.detected_at - start, milliseconds(250));
  // Last window: the viral bucket, "other"'s and two quiet ones; the one before: 20/s.
  EXPECT_DOUBLE_EQ(hot.rate, 510.0);
  EXPECT_DOUBLE_EQ(hot.previous_rate, 20.0);
  EXPECT_DOUBLE_EQ(hot.previous_rate_max, 20.0);  // it had its counters: exact
  EXPECT_GE(hot.rate, 10 * hot.previous_rate_max);
}

TEST_F(HotKeyDetectorTest, NothingIsViralBeforeTwoWholeWindowsHavePassed) {
  auto d = make({.min_rate = 100'000, .viral_min_rate = 100, .viral_growth = 10});
  // From nothing to 2,000/s at start: growth unknown, and under min_rate.
  feed(*d, *clock, "warm", 500, 7);
  d->advance(clock->now());
  EXPECT_TRUE(d->hot_keys().empty());
}

TEST_F(HotKeyDetectorTest, KeepsOnlyTheTopKByRateWithMemoryBoundedByTheOptions) {
  auto d = make({.capacity = 16, .top_k = 2, .min_rate = 100});
  for (int b = 0; b < 4; ++b) {
    reads(*d, *clock, "a", 300);
    reads(*d, *clock, "b", 200);
    reads(*d, *clock, "c", 100);
    for (int i = 0; i < 1000; ++i) d->record("tail:" + std::to_string(b * 1000 + i), clock->now());
    clock->advance(milliseconds(250));
  }
  d->advance(clock->now());
  const auto hot = d->hot_keys();
  ASSERT_EQ(hot.size(), 2u);
  EXPECT_EQ(hot[0].key, "a");
  EXPECT_EQ(hot[1].key, "b");
  const std::size_t bytes = d->memory_bytes();
  // 4,000 distinct keys seen; 9 sketches of 16 counters held.
  for (int i = 0; i < 100'000; ++i) d->record("more:" + std::to_string(i), clock->now());
  EXPECT_LE(d->memory_bytes(), bytes + 9 * 16 * 64);
}

TEST_F(HotKeyDetectorTest, ManyKeysReadOnceNeverLookHotHoweverLargeTheirInheritedCounts) {
  auto d = make({.capacity = 16, .top_k = 4, .min_rate = 100, .viral_min_rate = 100});
  // 40,000 distinct keys per second, each read once: every counter ends up
  // far above 100, all of it inherited.
  for (int b = 0; b < 12; ++b) {
    for (int i = 0; i < 10'000; ++i) d->record("k" + std::to_string(b * 10'000 + i), clock->now());
    clock->advance(milliseconds(250));
  }
  d->advance(clock->now());
  EXPECT_TRUE(d->hot_keys().empty());
}

TEST_F(HotKeyDetectorTest, AdaptiveSamplingAimsAtSamplesPerWindowAndNeedsFourSamplesToCallAKeyHot) {
  auto created = HotKeyDetector::create({.min_rate = 100, .samples_per_window = 4096}, clock);
  ASSERT_TRUE(created);
  HotKeyDetector& d = **created;
  EXPECT_EQ(d.sample_interval(), 64u);
  // A quiet bucket: 10 samples of 64 reads. Every read is recorded next.
  for (int i = 0; i < 10; ++i) d.record("k" + std::to_string(i), clock->now(), 64);
  clock->advance(milliseconds(250));
  d.advance(clock->now());
  EXPECT_EQ(d.sample_interval(), 1u);
  // A busy one: 100,000 reads, 1,024 per bucket wanted: one in 128.
  for (int i = 0; i < 100'000; ++i) d.record("busy", clock->now(), 1);
  clock->advance(milliseconds(250));
  d.advance(clock->now());
  EXPECT_EQ(d.sample_interval(), 128u);
  // 3 samples of 128 reads (384/s) are not enough to call a key hot; 4 are.
  for (int i = 0; i < 3; ++i) d.record("few", clock->now(), 128);
  clock->advance(milliseconds(250));
  d.advance(clock->now());
  EXPECT_FALSE(d.is_hot("few"));
  d.record("few", clock->now(), 128);
  clock->advance(milliseconds(250));
  d.advance(clock->now());
  EXPECT_TRUE(d.is_hot("few"));
}

TEST_F(HotKeyDetectorTest, CountsLoadWaitsOfHotKeysOnlyAndKeepsThemAcrossEvaluations) {
  auto d = make({.min_rate = 100});
  feed(*d, *clock, "hot", 100, 4);
  d->advance(clock->now());
  ASSERT_TRUE(d->is_hot("hot"));
  d->record_load_wait("hot");
  d->record_load_wait("hot");
  d->record_load_wait("cold");
  feed(*d, *clock, "hot", 100, 1);
  d->advance(clock->now());
  ASSERT_EQ(d->hot_keys().size(), 1u);
  EXPECT_EQ(d->hot_keys()[0].load_waits, 2u);
}

}  // namespace
}  // namespace herdguard
