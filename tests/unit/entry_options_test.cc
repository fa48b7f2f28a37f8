// Per-entry lifetimes (EntryOptions, repository.h): a repository that knows
// an entry's TTL or how long it may be served stale says so through
// load_entry (CallbackRepository::with_entries), and set() takes the same
// options. A ManualClock drives every expiry.
#include <gtest/gtest.h>

#include <atomic>

#include "herdguard/protector.h"

namespace herdguard {
namespace {

using namespace std::chrono_literals;

struct Rows {
  std::atomic<int> loads{0};
  std::atomic<bool> down{false};
  // key → the lifetime the "row" carries.
  std::shared_ptr<Repository> repository() {
    return CallbackRepository::with_entries(
        [this](std::string_view key, Deadline) -> Result<LoadedEntry> {
          loads.fetch_add(1);
          if (down.load()) return make_error(ErrorKind::kBackend, "database down");
          const std::string value = "v" + std::to_string(loads.load());
          if (key == "short") return LoadedEntry{.value = value, .options = {.ttl = 10s}};
          if (key == "uncached") return LoadedEntry{.value = value, .options = {.ttl = 0s}};
          if (key == "no-stale")
            return LoadedEntry{.value = value, .options = {.ttl = 10s, .stale_for = 0s}};
          if (key == "gone") return LoadedEntry{.value = std::nullopt, .options = {.ttl = 30s}};
          if (key == "bad") return LoadedEntry{.value = value, .options = {.ttl = -1s}};
          return LoadedEntry{.value = value};
        });
  }
};

struct Fixture {
  std::shared_ptr<ManualClock> clock = std::make_shared<ManualClock>();
  Rows rows;
  std::unique_ptr<Protector> protector;

  Fixture() {
    ProtectorOptions options;
    options.ttl = 60s;
    options.ttl_jitter = 0;
    options.negative_ttl = 5s;
    options.stale_while_revalidate = Duration::zero();
    options.fail_safe_max_staleness = 1h;
    options.clock = clock;
    auto created = Protector::create(std::move(options), rows.repository());
    EXPECT_TRUE(created.has_value()) << created.error().to_string();
    protector = std::move(*created);
  }
};

TEST(EntryOptions, TheRepositorysTtlReplacesTheProtectors) {
  Fixture f;
  EXPECT_EQ(*f.protector->get("short"), "v1");
  EXPECT_EQ(*f.protector->get("plain"), "v2");
  f.clock->advance(11s);
  EXPECT_EQ(*f.protector->get("short"), "v3") << "its own 10 s had passed";
  EXPECT_EQ(*f.protector->get("plain"), "v2") << "the Protector's 60 s had not";
  EXPECT_EQ(f.rows.loads.load(), 3);
}

TEST(EntryOptions, ANotFoundKeepsItsOwnTtl) {
  Fixture f;
  EXPECT_EQ(f.protector->get("gone").error().kind, ErrorKind::kNotFound);
  f.clock->advance(20s);  // past negative_ttl (5 s), within its own 30 s
  EXPECT_EQ(f.protector->get("gone").error().kind, ErrorKind::kNotFound);
  EXPECT_EQ(f.rows.loads.load(), 1);
  f.clock->advance(11s);
  EXPECT_EQ(f.protector->get("gone").error().kind, ErrorKind::kNotFound);
  EXPECT_EQ(f.rows.loads.load(), 2);
}

TEST(EntryOptions, AZeroTtlAnswersTheLoadAndCachesNothingFresh) {
  Fixture f;
  EXPECT_EQ(*f.protector->get("uncached"), "v1");
  f.clock->advance(1ns);  // a TTL is never below a nanosecond (jittered_ttl)
  EXPECT_EQ(*f.protector->get("uncached"), "v2");
  EXPECT_EQ(f.rows.loads.load(), 2);
}

TEST(EntryOptions, StaleForBoundsTheFailSafe) {
  Fixture f;
  EXPECT_EQ(*f.protector->get("no-stale"), "v1");
  EXPECT_EQ(*f.protector->get("plain"), "v2");
  f.clock->advance(61s);
  f.rows.down = true;
  // The Protector's fail-safe (1 h) would answer both; "no-stale" said 0.
  auto no_stale = f.protector->get("no-stale");
  ASSERT_FALSE(no_stale);
  EXPECT_EQ(no_stale.error().kind, ErrorKind::kBackend);
  EXPECT_EQ(*f.protector->get("plain"), "v2");
}

TEST(EntryOptions, ANegativeTtlIsAnErrorAndNothingIsCached) {
  Fixture f;
  auto bad = f.protector->get("bad");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().kind, ErrorKind::kInvalidArgument) << bad.error().to_string();
  EXPECT_FALSE(f.protector->get("bad"));
  EXPECT_EQ(f.rows.loads.load(), 2);
}

TEST(EntryOptions, SetTakesTheSameOptions) {
  Fixture f;
  ASSERT_TRUE(f.protector->set("k", "written", EntryOptions{.ttl = 5s, .stale_for = 0s}));
  EXPECT_EQ(*f.protector->get("k"), "written");
  f.clock->advance(6s);
  f.rows.down = true;
  EXPECT_FALSE(f.protector->get("k")) << "no stale copy to fall back on: stale_for was 0";
  f.rows.down = false;
  ASSERT_TRUE(f.protector->set("k2", "kept", EntryOptions{.ttl = 5s}));
  f.clock->advance(6s);
  f.rows.down = true;
  EXPECT_EQ(*f.protector->get("k2"), "kept") << "the Protector's fail-safe window";
  EXPECT_EQ(f.protector->set("k", "v", EntryOptions{.stale_for = -1s}).error().kind,
            ErrorKind::kInvalidArgument);
  EXPECT_EQ(f.protector->set("k", "v", EntryOptions{.ttl = 0s}).error().kind,
            ErrorKind::kInvalidArgument);
}

TEST(EntryOptions, ARepositoryWithoutLoadEntryKeepsWorking) {
  // The default load_entry adapts load().
  struct Plain final : Repository {
    Result<std::optional<std::string>> load(std::string_view key, Deadline) override {
      return std::optional<std::string>("plain-" + std::string(key));
    }
  };
  Plain plain;
  auto loaded = plain.load_entry("k", Deadline::after(1s));
  ASSERT_TRUE(loaded);
  EXPECT_EQ(loaded->value, "plain-k");
  EXPECT_FALSE(loaded->options.ttl);
  // with_entries answers load() too (get_many's key-by-key batches use it).
  Rows rows;
  auto repository = rows.repository();
  EXPECT_EQ(*repository->load("short", Deadline::after(1s)), "v1");
}

}  // namespace
}  // namespace herdguard
