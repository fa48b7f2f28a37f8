// The simulator's fleet-wide duplicate-load count (apps/herdguard/load_overlap.h):
// loads of a key within half a TTL of each other are duplicates, except a
// refresh ahead of expiry of the value the previous load produced.
#include "load_overlap.h"

#include <gtest/gtest.h>

namespace herdguard::cli {
namespace {

TEST(LoadOverlap, ASecondLoadOfAKeyWithinTheGapIsADuplicate) {
  const DuplicateLoads d = count_duplicate_loads(
      {{.key = "a", .t_s = 1.0}, {.key = "b", .t_s = 1.1}, {.key = "a", .t_s = 1.3}}, 0.5, 3);
  EXPECT_EQ(d.total, 1u);
  ASSERT_EQ(d.pairs.size(), 1u);
  EXPECT_DOUBLE_EQ(d.pairs[0].first, 1.0);
  EXPECT_DOUBLE_EQ(d.pairs[0].second, 1.3);
  EXPECT_EQ(d.by_second[1], 1u);
}

TEST(LoadOverlap, LoadsAnExpiryApartAreNotDuplicates) {
  const DuplicateLoads d = count_duplicate_loads(
      {{.key = "a", .t_s = 0.2}, {.key = "a", .t_s = 1.2}, {.key = "a", .t_s = 2.2}}, 0.5, 3);
  EXPECT_EQ(d.total, 0u);
}

TEST(LoadOverlap, ARefreshAheadOfTheValueTheLastLoadMadeIsNotADuplicate) {
  // A hot key with a TTL jittered short is refreshed 0.45 s after its
  // load (of version 0: a miss), then again (version 7 replaced: newer).
  const DuplicateLoads d = count_duplicate_loads({{.key = "a", .t_s = 1.0},
                                                  {.key = "a", .t_s = 1.45, .refreshed_version = 7},
                                                  {.key = "a", .t_s = 1.9, .refreshed_version = 8}},
                                                 0.5, 3);
  EXPECT_EQ(d.total, 0u);
}

TEST(LoadOverlap, TwoRefreshesOfTheSameValueAreADuplicate) {
  const DuplicateLoads d = count_duplicate_loads({{.key = "a", .t_s = 1.0, .refreshed_version = 7},
                                                  {.key = "a", .t_s = 1.1, .refreshed_version = 7}},
                                                 0.5, 3);
  EXPECT_EQ(d.total, 1u);
}

TEST(LoadOverlap, AMissSoonAfterARefreshIsADuplicate) {
  const DuplicateLoads d = count_duplicate_loads(
      {{.key = "a", .t_s = 1.0, .refreshed_version = 7}, {.key = "a", .t_s = 1.2}}, 0.5, 3);
  EXPECT_EQ(d.total, 1u);
}

TEST(LoadOverlap, DuplicatesInsideTheRedisErrorWindowAreSetApart) {
  const DuplicateLoads d = count_duplicate_loads({{.key = "a", .t_s = 10.1},
                                                  {.key = "a", .t_s = 10.2},
                                                  {.key = "b", .t_s = 20.1},
                                                  {.key = "b", .t_s = 20.2}},
                                                 0.5, 30);
  EXPECT_EQ(d.total, 2u);
  const auto window =
      redis_error_window(std::vector<std::uint64_t>{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 5, 0});
  ASSERT_TRUE(window);
  EXPECT_EQ(window->from, 10);
  EXPECT_EQ(window->to, 12);
  EXPECT_EQ(duplicates_outside(d, window), 1u);
}

}  // namespace
}  // namespace herdguard::cli
