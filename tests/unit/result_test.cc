#include "herdguard/result.h"

#include <gtest/gtest.h>

namespace herdguard {
namespace {

Result<int> parse_positive(int x) {
  if (x <= 0) return make_error(ErrorKind::kInvalidArgument, "x must be positive");
  return x;
}

TEST(Result, CarriesValueOrError) {
  auto good = parse_positive(3);
  ASSERT_TRUE(good.has_value());
  EXPECT_EQ(*good, 3);
  auto bad = parse_positive(-1);
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().kind, ErrorKind::kInvalidArgument);
  EXPECT_EQ(bad.error().to_string(), "invalid_argument: x must be positive");
}

TEST(Result, VoidResultSignalsSuccess) {
  Result<void> r = ok();
  EXPECT_TRUE(r.has_value());
  Result<void> e = make_error(ErrorKind::kTimeout, "late");
  EXPECT_FALSE(e.has_value());
}

TEST(Result, EveryKindHasAStableName) {
  EXPECT_EQ(to_string(ErrorKind::kNotFound), "not_found");
  EXPECT_EQ(to_string(ErrorKind::kTimeout), "timeout");
  EXPECT_EQ(to_string(ErrorKind::kCircuitOpen), "circuit_open");
  EXPECT_EQ(to_string(ErrorKind::kOverloaded), "overloaded");
  EXPECT_EQ(to_string(ErrorKind::kLockNotAcquired), "lock_not_acquired");
  EXPECT_EQ(to_string(ErrorKind::kBackend), "backend");
  EXPECT_EQ(to_string(ErrorKind::kInvalidArgument), "invalid_argument");
  EXPECT_EQ(to_string(ErrorKind::kCorrupt), "corrupt");
  EXPECT_EQ(to_string(ErrorKind::kInternal), "internal");
}

}  // namespace
}  // namespace herdguard
