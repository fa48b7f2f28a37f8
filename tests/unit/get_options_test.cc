// Per-call options (GetOptions): skip L1, this call's fail-safe window, the
// stored entry's lifetime, stale-while-revalidate — each against the
// Protector's own options, with a ManualClock. skip_l2 needs Redis: in
// integration/protector_fleet_test.cc.
#include <gtest/gtest.h>

#include <atomic>

#include "herdguard/protector.h"

namespace herdguard {
namespace {

using namespace std::chrono_literals;

struct Fixture {
  std::shared_ptr<ManualClock> clock = std::make_shared<ManualClock>();
  std::atomic<int> loads{0};
  std::atomic<bool> down{false};
  std::unique_ptr<Protector> protector;

  Fixture() {
    ProtectorOptions options;
    options.ttl = 60s;
    options.ttl_jitter = 0;
    options.stale_while_revalidate = 30s;
    options.fail_safe_max_staleness = 1h;
    options.clock = clock;
    auto created = Protector::create(
        std::move(options),
        std::make_shared<CallbackRepository>(
            [this](std::string_view, Deadline) -> Result<std::optional<std::string>> {
              const int n = loads.fetch_add(1) + 1;
              if (down.load()) return make_error(ErrorKind::kBackend, "database down");
              return std::optional<std::string>("v" + std::to_string(n));
            }));
    EXPECT_TRUE(created.has_value()) << created.error().to_string();
    protector = std::move(*created);
  }
};

TEST(GetOptions, SkipL1LoadsPastAFreshCopyAndRefillsIt) {
  Fixture f;
  EXPECT_EQ(*f.protector->get("k"), "v1");
  EXPECT_EQ(*f.protector->get("k", GetOptions{.skip_l1 = true}), "v2");
  EXPECT_EQ(f.loads.load(), 2);
  EXPECT_EQ(*f.protector->get("k"), "v2") << "the skipping load still filled L1";
  EXPECT_EQ(f.loads.load(), 2);
}

TEST(GetOptions, SkipL1HasNoStaleCopyToFallBackOn) {
  Fixture f;
  EXPECT_EQ(*f.protector->get("k"), "v1");
  f.clock->advance(61s);
  f.down = true;
  EXPECT_EQ(*f.protector->get("k"), "v1") << "the Protector's fail-safe";
  auto skipped = f.protector->get("k", GetOptions{.skip_l1 = true});
  ASSERT_FALSE(skipped);
  EXPECT_EQ(skipped.error().kind, ErrorKind::kBackend);
}

TEST(GetOptions, ThisCallsFailSafeWindow) {
  Fixture f;
  EXPECT_EQ(*f.protector->get("k"), "v1");
  f.clock->advance(2min);
  f.down = true;
  auto none = f.protector->get("k", GetOptions{.fail_safe_max_staleness = 0s});
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().kind, ErrorKind::kBackend);
  auto narrow = f.protector->get("k", GetOptions{.fail_safe_max_staleness = 1min});
  EXPECT_FALSE(narrow) << "61 s past its TTL is outside a 1 min window";
  EXPECT_EQ(*f.protector->get("k", GetOptions{.fail_safe_max_staleness = 5min}), "v1");
  EXPECT_EQ(*f.protector->get("k"), "v1");
}

TEST(GetOptions, TheStoredEntrysLifetime) {
  Fixture f;
  EXPECT_EQ(*f.protector->get("short", GetOptions{.entry = {.ttl = 5s}}), "v1");
  EXPECT_EQ(*f.protector->get("long"), "v2");
  f.clock->advance(6s);
  EXPECT_EQ(*f.protector->get("short"), "v3") << "its 5 s had passed";
  EXPECT_EQ(*f.protector->get("long"), "v2");
  // stale_for 0: nothing to serve stale once it expires.
  EXPECT_EQ(*f.protector->get("brief", GetOptions{.entry = {.ttl = 5s, .stale_for = 0s}}), "v4");
  f.clock->advance(6s);
  f.down = true;
  EXPECT_FALSE(f.protector->get("brief"));
}

TEST(GetOptions, StaleWhileRevalidateAsAnOption) {
  Fixture f;
  EXPECT_EQ(*f.protector->get("k"), "v1");
  f.clock->advance(61s);
  EXPECT_EQ(*f.protector->get("k", GetOptions{.stale_while_revalidate = true}), "v1")
      << "the stale copy at once; a refresh in the background";
}

TEST(GetOptions, NegativeDurationsAreRefused) {
  Fixture f;
  EXPECT_EQ(f.protector->get("k", GetOptions{.fail_safe_max_staleness = -1s}).error().kind,
            ErrorKind::kInvalidArgument);
  EXPECT_EQ(f.protector->get("k", GetOptions{.entry = {.ttl = -1s}}).error().kind,
            ErrorKind::kInvalidArgument);
  EXPECT_EQ(f.protector->get("k", GetOptions{.entry = {.stale_for = -1s}}).error().kind,
            ErrorKind::kInvalidArgument);
  EXPECT_EQ(f.loads.load(), 0);
}

TEST(GetOptions, TheDeadlineIsTheCallers) {
  Fixture f;
  auto late = f.protector->get("k", GetOptions{.deadline = Deadline::after(Duration::zero())});
  ASSERT_FALSE(late);
  EXPECT_EQ(late.error().kind, ErrorKind::kTimeout) << late.error().to_string();
  EXPECT_EQ(f.loads.load(), 0) << "no database call after the deadline";
}

}  // namespace
}  // namespace herdguard
