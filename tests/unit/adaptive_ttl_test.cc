// Adaptive TTL (include/herdguard/adaptive_ttl.h): the pure rule, and the
// Protector giving each reload of a key a TTL that follows whether its value
// changed, on a ManualClock.
#include "herdguard/adaptive_ttl.h"

#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <mutex>

#include "herdguard/protector.h"
#include "protector/adaptive_ttl.h"

namespace herdguard {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

const AdaptiveTtlOptions kOneToEight{.enabled = true, .min = seconds(1), .max = seconds(8)};

TEST(AdaptiveTtl, GrowsWhenUnchangedShrinksWhenChangedWithinTheRange) {
  EXPECT_EQ(next_adaptive_ttl(kOneToEight, seconds(2), false), seconds(4));
  EXPECT_EQ(next_adaptive_ttl(kOneToEight, seconds(2), true), seconds(1));
  EXPECT_EQ(next_adaptive_ttl(kOneToEight, seconds(6), false), seconds(8));
  EXPECT_EQ(next_adaptive_ttl(kOneToEight, milliseconds(1500), true), seconds(1));
  EXPECT_EQ(next_adaptive_ttl(kOneToEight, Duration::max(), false), seconds(8));
}

TEST(AdaptiveTtl, RefusesBadOptionsNamingTheField) {
  auto refused = [](AdaptiveTtlOptions o, std::string_view field) {
    auto r = o.validate();
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message.find(field), std::string::npos) << r.error().message;
  };
  refused({.min = Duration::zero()}, "min");
  refused({.min = seconds(2), .max = seconds(1)}, "max");
  refused({.grow = 0.5}, "grow");
  refused({.shrink = 0}, "shrink");
  refused({.shrink = 1.5}, "shrink");
  refused({.max_keys = 1}, "max_keys");
  EXPECT_TRUE(AdaptiveTtlOptions{}.validate());
}

TEST(AdaptiveTtl, RemembersAtMostMaxKeysForgettingTheLeastRecentlyLoadedFirst) {
  internal::AdaptiveTtl memory(
      {.enabled = true, .min = seconds(1), .max = seconds(64), .max_keys = 2}, seconds(1));
  EXPECT_EQ(memory.choose("a", "x").ttl, seconds(1));
  EXPECT_EQ(memory.choose("a", "x").ttl, seconds(2));
  EXPECT_EQ(memory.choose("b", "x").ttl, seconds(1));  // "a" moves to the older generation
  EXPECT_EQ(memory.choose("a", "x").ttl, seconds(4));  // still remembered there
  EXPECT_EQ(memory.choose("c", "x").ttl, seconds(1));  // "b" is now two generations old
  EXPECT_EQ(memory.choose("b", "x").ttl, seconds(1));  // forgotten: starts over
  EXPECT_EQ(memory.choose("b", "x").direction, 1);
}

// A repository whose value per key the test sets.
class Values {
 public:
  void set(const std::string& key, const std::string& value) {
    std::lock_guard lock(mutex_);
    values_[key] = value;
  }
  std::shared_ptr<Repository> repository() {
    return std::make_shared<CallbackRepository>(
        [this](std::string_view key, Deadline) -> Result<std::optional<std::string>> {
          std::lock_guard lock(mutex_);
          auto it = values_.find(std::string(key));
          if (it == values_.end()) return std::optional<std::string>();
          return std::optional<std::string>(it->second);
        });
  }

 private:
  std::mutex mutex_;
  std::map<std::string, std::string> values_;
};

TEST(AdaptiveTtl, AProtectorLengthensTheTtlOfAnUnchangedKeyAndShortensItOnAChange) {
  auto clock = std::make_shared<ManualClock>();
  Values values;
  values.set("k", "v1");
  ProtectorOptions options{.ttl = seconds(1), .ttl_jitter = 0};
  options.clock = clock;
  options.adaptive_ttl = kOneToEight;
  options.hot_keys.enabled = false;
  auto p = Protector::create(options, values.repository());
  ASSERT_TRUE(p) << p.error().to_string();
  Protector& protector = **p;
  auto ttl_of_next_load = [&] {
    EXPECT_TRUE(protector.get("k"));
    const TimePoint loaded = clock->now();
    const Duration ttl = protector.peek("k")->fresh_until - loaded;
    clock->advance(ttl);  // expired: the next get reloads
    return ttl;
  };
  EXPECT_EQ(ttl_of_next_load(), seconds(1));  // first load: ProtectorOptions::ttl
  EXPECT_EQ(ttl_of_next_load(), seconds(2));
  EXPECT_EQ(ttl_of_next_load(), seconds(4));
  EXPECT_EQ(ttl_of_next_load(), seconds(8));
  EXPECT_EQ(ttl_of_next_load(), seconds(8));  // at max
  values.set("k", "v2");
  EXPECT_EQ(ttl_of_next_load(), seconds(4));
  EXPECT_EQ(ttl_of_next_load(), seconds(8));  // v2 again: longer again
  EXPECT_EQ(protector.get("k").value_or(""), "v2");
  const ProtectionMetrics m = protector.metrics();
  EXPECT_EQ(m.ttl_lengthened, 4u);
  EXPECT_EQ(m.ttl_shortened, 1u);
  EXPECT_EQ(m.db_queries, 8u);
}

TEST(AdaptiveTtl, IsOffByDefaultAndBadOptionsAreRefusedByTheProtector) {
  ProtectorOptions options;
  EXPECT_FALSE(options.adaptive_ttl.enabled);
  options.adaptive_ttl = {.enabled = true, .min = seconds(5), .max = seconds(1)};
  Values values;
  auto p = Protector::create(options, values.repository());
  ASSERT_FALSE(p);
  EXPECT_NE(p.error().message.find("adaptive_ttl"), std::string::npos) << p.error().message;
}

}  // namespace
}  // namespace herdguard
