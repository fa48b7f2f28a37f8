// "Not modified" (Repository::reload_entry, LoadedEntry::not_modified): a
// reload that is given the previous value and finds the row unchanged keeps
// that value with a new lifetime. Without Redis here (the L2 extension in
// place is tested against a real Redis in tags_fleet_test.cc); a
// ManualClock drives expiry.
#include <gtest/gtest.h>

#include <atomic>
#include <mutex>

#include "herdguard/protector.h"

namespace herdguard {
namespace {

using namespace std::chrono_literals;

struct Row {
  std::mutex mutex;
  std::string value = "v1";  // guarded by mutex
  std::atomic<int> loads{0}, reloads{0}, unchanged{0};
  std::atomic<bool> always_not_modified{false};
  std::shared_ptr<Repository> repository() {
    return CallbackRepository::with_reloads(
        [this](std::string_view, Deadline, const PreviousValue* previous) -> Result<LoadedEntry> {
          std::lock_guard lock(mutex);
          (previous ? reloads : loads).fetch_add(1);
          if (always_not_modified.load() || (previous && previous->value == value)) {
            unchanged.fetch_add(1);
            return LoadedEntry{.not_modified = true};
          }
          return LoadedEntry{.value = value};
        });
  }
};

struct Fixture {
  std::shared_ptr<ManualClock> clock = std::make_shared<ManualClock>();
  Row row;
  std::unique_ptr<Protector> protector;
  Fixture() {
    ProtectorOptions options;
    options.ttl = 10s;
    options.ttl_jitter = 0;
    options.stale_while_revalidate = Duration::zero();
    options.fail_safe_max_staleness = 1h;
    options.clock = clock;
    protector = std::move(*Protector::create(std::move(options), row.repository()));
  }
};

TEST(NotModified, AnUnchangedRowKeepsThePreviousValueWithANewLifetime) {
  Fixture f;
  EXPECT_EQ(*f.protector->get("k"), "v1");
  EXPECT_EQ(f.row.loads.load(), 1);
  f.clock->advance(11s);
  EXPECT_EQ(*f.protector->get("k"), "v1");
  EXPECT_EQ(f.row.reloads.load(), 1) << "given the stale value";
  EXPECT_EQ(f.row.unchanged.load(), 1);
  auto entry = f.protector->peek("k");
  ASSERT_TRUE(entry);
  EXPECT_EQ(entry->fresh_until, f.clock->now() + 10s) << "fresh for a whole TTL again";
  f.clock->advance(9s);
  EXPECT_EQ(*f.protector->get("k"), "v1");
  EXPECT_EQ(f.row.reloads.load(), 1) << "still fresh: no reload";
  EXPECT_EQ(f.protector->metrics().not_modified, 1u);
  EXPECT_EQ(f.protector->metrics().l2_extended, 0u) << "no L2 here";
}

TEST(NotModified, AChangedRowIsLoadedAsUsual) {
  Fixture f;
  EXPECT_EQ(*f.protector->get("k"), "v1");
  {
    std::lock_guard lock(f.row.mutex);
    f.row.value = "v2";
  }
  f.clock->advance(11s);
  EXPECT_EQ(*f.protector->get("k"), "v2");
  EXPECT_EQ(f.row.unchanged.load(), 0);
  EXPECT_EQ(f.protector->metrics().not_modified, 0u);
}

TEST(NotModified, NotModifiedToAPlainLoadIsAClearError) {
  Fixture f;
  f.row.always_not_modified = true;
  auto got = f.protector->get("k");
  ASSERT_FALSE(got) << "nothing was given to be unchanged";
  EXPECT_EQ(got.error().kind, ErrorKind::kBackend);
  EXPECT_NE(got.error().message.find("not modified"), std::string::npos) << got.error().message;
  EXPECT_FALSE(f.protector->peek("k"));
}

// A repository without reloads (load_entry only) is unaffected: the default
// reload_entry is load_entry.
TEST(NotModified, ARepositoryWithoutReloadsIsAskedAsBefore) {
  auto clock = std::make_shared<ManualClock>();
  std::atomic<int> loads{0};
  ProtectorOptions options;
  options.ttl = 10s;
  options.ttl_jitter = 0;
  options.clock = clock;
  auto protector = std::move(*Protector::create(
      std::move(options),
      CallbackRepository::with_entries([&](std::string_view, Deadline) -> Result<LoadedEntry> {
        return LoadedEntry{.value = "v" + std::to_string(loads.fetch_add(1) + 1)};
      })));
  EXPECT_EQ(*protector->get("k"), "v1");
  clock->advance(11s);
  EXPECT_EQ(*protector->get("k"), "v2");
}

}  // namespace
}  // namespace herdguard
