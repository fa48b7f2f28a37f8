// Tags and clear() (Protector::invalidate_tag, protector/tag_versions.h) in
// one process without Redis: an entry carries tags (the repository's, the
// call's, set()'s) and a stamp; invalidate_tag refuses every entry with the
// tag whose load began before it, clear() every entry. A ManualClock drives
// expiry; loads that must overlap an invalidation are held on a latch.
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "herdguard/envelope.h"
#include "herdguard/protector.h"
#include "protector/tag_versions.h"

namespace herdguard {
namespace {

using namespace std::chrono_literals;

// A database whose rows are tagged by key: "user:*" → {"users"},
// "user:1" also {"user:1"}, "post:*" → {"posts"}, anything else untagged.
// Each load returns "<key>@<n>" with n the load's number, so a reload shows.
struct TaggedRows {
  std::atomic<int> loads{0};
  std::atomic<bool> down{false};
  // When armed, the next load of `held_key` waits until released (after
  // saying it began).
  std::mutex mutex;
  std::condition_variable changed;
  std::string held_key;
  bool began = false;
  bool released = true;

  std::shared_ptr<Repository> repository() {
    return CallbackRepository::with_entries(
        [this](std::string_view key, Deadline) -> Result<LoadedEntry> {
          const int n = loads.fetch_add(1) + 1;
          {
            std::unique_lock lock(mutex);
            if (key == held_key && !began) {  // the first load of it only
              began = true;
              changed.notify_all();
              changed.wait(lock, [this] { return released; });
            }
          }
          if (down.load()) return make_error(ErrorKind::kBackend, "database down");
          LoadedEntry out{.value = std::string(key) + "@" + std::to_string(n)};
          if (key.starts_with("user:")) out.options.tags = {"users"};
          if (key == "user:1") out.options.tags.push_back("user:1");
          if (key.starts_with("post:")) out.options.tags = {"posts"};
          if (key == "bad-tag") out.options.tags = {""};
          return out;
        });
  }
  void hold(std::string key) {
    std::lock_guard lock(mutex);
    held_key = std::move(key);
    began = false;
    released = false;
  }
  void wait_began() {
    std::unique_lock lock(mutex);
    changed.wait(lock, [this] { return began; });
  }
  void release() {
    std::lock_guard lock(mutex);
    released = true;
    held_key.clear();
    changed.notify_all();
  }
};

struct Fixture {
  std::shared_ptr<ManualClock> clock = std::make_shared<ManualClock>();
  TaggedRows rows;
  std::unique_ptr<Protector> protector;

  explicit Fixture(Duration fail_safe = 1h) {
    ProtectorOptions options;
    options.ttl = 60s;
    options.ttl_jitter = 0;
    options.stale_while_revalidate = Duration::zero();
    options.fail_safe_max_staleness = fail_safe;
    options.clock = clock;
    auto created = Protector::create(std::move(options), rows.repository());
    EXPECT_TRUE(created.has_value()) << created.error().to_string();
    protector = std::move(*created);
  }
  std::string get(std::string_view key) {
    auto got = protector->get(key);
    return got ? *got : "error: " + got.error().to_string();
  }
};

TEST(Tags, InvalidateTagRefusesEveryEntryCarryingItAndNoOther) {
  Fixture f;
  EXPECT_EQ(f.get("user:1"), "user:1@1");
  EXPECT_EQ(f.get("user:2"), "user:2@2");
  EXPECT_EQ(f.get("post:1"), "post:1@3");
  EXPECT_EQ(f.get("plain"), "plain@4");
  ASSERT_TRUE(f.protector->invalidate_tag("users"));
  EXPECT_EQ(f.get("user:1"), "user:1@5");
  EXPECT_EQ(f.get("user:2"), "user:2@6");
  EXPECT_EQ(f.get("post:1"), "post:1@3") << "another tag";
  EXPECT_EQ(f.get("plain"), "plain@4") << "untagged";
  EXPECT_EQ(f.get("user:1"), "user:1@5") << "the reloaded entry stands";
  ASSERT_TRUE(f.protector->invalidate_tag("user:1"));
  EXPECT_EQ(f.get("user:1"), "user:1@7") << "any one of its tags";
  EXPECT_EQ(f.get("user:2"), "user:2@6");
  const ProtectionMetrics m = f.protector->metrics();
  EXPECT_EQ(m.tag_invalidations, 2u);
  EXPECT_EQ(m.clears, 0u);
  EXPECT_EQ(m.tag_rejections, 3u) << "each refused entry once (dropped, then replaced)";
  EXPECT_EQ(m.tags_known, 2u);
}

TEST(Tags, ClearRefusesEveryEntryStoredBefore) {
  Fixture f;
  EXPECT_EQ(f.get("user:1"), "user:1@1");
  EXPECT_EQ(f.get("plain"), "plain@2");
  ASSERT_TRUE(f.protector->set("written", "w1"));
  ASSERT_TRUE(f.protector->clear());
  EXPECT_EQ(f.get("user:1"), "user:1@3");
  EXPECT_EQ(f.get("plain"), "plain@4");
  EXPECT_EQ(f.get("written"), "written@5") << "a set value too";
  EXPECT_EQ(f.get("plain"), "plain@4");
  EXPECT_EQ(f.protector->metrics().clears, 1u);
}

TEST(Tags, SetTakesTagsAndAnInvalidatedTagDropsTheSetValue) {
  Fixture f;
  ASSERT_TRUE(f.protector->set("k", "mine", EntryOptions{.tags = {"group"}}));
  EXPECT_EQ(f.get("k"), "mine");
  ASSERT_TRUE(f.protector->invalidate_tag("other"));
  EXPECT_EQ(f.get("k"), "mine");
  ASSERT_TRUE(f.protector->invalidate_tag("group"));
  EXPECT_EQ(f.get("k"), "k@1");
  ASSERT_TRUE(f.protector->set("k2", "again", EntryOptions{.tags = {"group"}}));
  EXPECT_EQ(f.get("k2"), "again") << "set after the invalidation: it stands";
}

TEST(Tags, TheCallsTagsApplyWhenTheRepositoryGivesNone) {
  Fixture f;
  EXPECT_EQ(*f.protector->get("plain", GetOptions{.entry = {.tags = {"call"}}}), "plain@1");
  EXPECT_EQ(*f.protector->get("post:9", GetOptions{.entry = {.tags = {"call"}}}), "post:9@2");
  ASSERT_TRUE(f.protector->invalidate_tag("call"));
  EXPECT_EQ(f.get("plain"), "plain@3") << "it carried the call's tag";
  EXPECT_EQ(f.get("post:9"), "post:9@2") << "the repository's tags replaced the call's";
}

TEST(Tags, AnInvalidatedEntryIsNotAStaleFallback) {
  Fixture f;
  EXPECT_EQ(f.get("user:1"), "user:1@1");
  f.clock->advance(61s);  // stale, within fail-safe
  f.rows.down = true;
  EXPECT_EQ(f.get("user:1"), "user:1@1") << "fail-safe serves the stale value";
  ASSERT_TRUE(f.protector->invalidate_tag("users"));
  auto got = f.protector->get("user:1");
  ASSERT_FALSE(got) << "as after invalidate(): nothing to fall back on";
  EXPECT_EQ(got.error().kind, ErrorKind::kBackend);
}

// The contract: a load that began before invalidate_tag returned gives its
// value to the callers that joined it, but never stands as valid after, and
// no get that starts after the invalidation joins it.
TEST(Tags, ALoadThatBeganBeforeTheInvalidationIsNeitherJoinedNorKept) {
  Fixture f;
  f.rows.hold("user:1");
  std::string early;
  std::thread first([&] { early = f.get("user:1"); });
  f.rows.wait_began();
  ASSERT_TRUE(f.protector->invalidate_tag("users"));
  // Started after the invalidation returned: a load of its own, not the held one.
  std::string late;
  std::thread second([&] { late = f.get("user:1"); });
  // The second caller's load is a second database call: wait for it by the
  // count (it is not held: only the first load was).
  while (f.rows.loads.load() < 2) std::this_thread::yield();
  second.join();
  f.rows.release();
  first.join();
  EXPECT_EQ(early, "user:1@1") << "its callers asked before the invalidation";
  EXPECT_EQ(late, "user:1@2");
  EXPECT_EQ(f.get("user:1"), "user:1@2") << "the early load's value was not kept";
  EXPECT_EQ(f.rows.loads.load(), 2);
}

TEST(Tags, BadTagsAreClearErrors) {
  Fixture f;
  EXPECT_EQ(f.protector->invalidate_tag("").error().kind, ErrorKind::kInvalidArgument);
  EXPECT_EQ(f.protector->invalidate_tag(std::string(kMaxTagBytes + 1, 't')).error().kind,
            ErrorKind::kInvalidArgument);
  EXPECT_TRUE(f.protector->invalidate_tag(std::string(kMaxTagBytes, 't')));
  std::vector<std::string> many(kMaxEntryTags + 1, "t");
  EXPECT_EQ(f.protector->set("k", "v", EntryOptions{.tags = many}).error().kind,
            ErrorKind::kInvalidArgument);
  EXPECT_EQ(f.protector->set("k", "v", EntryOptions{.tags = {""}}).error().kind,
            ErrorKind::kInvalidArgument);
  EXPECT_EQ(f.protector->get("k", GetOptions{.entry = {.tags = {""}}}).error().kind,
            ErrorKind::kInvalidArgument);
  auto bad = f.protector->get("bad-tag");
  ASSERT_FALSE(bad) << "a repository's bad tag fails its load";
  EXPECT_EQ(bad.error().kind, ErrorKind::kInvalidArgument);
  EXPECT_FALSE(f.protector->peek("bad-tag")) << "and nothing is cached";
}

TEST(Tags, OptionsRefuseATagHistoryShorterThanALoad) {
  ProtectorOptions options;
  options.tag_history = 1min;
  auto created = Protector::create(std::move(options), TaggedRows{}.repository());
  ASSERT_FALSE(created);
  EXPECT_EQ(created.error().kind, ErrorKind::kInvalidArgument);
}

TEST(Tags, ABoundedTagHistoryCapsEveryEntrysLifetime) {
  auto clock = std::make_shared<ManualClock>();
  TaggedRows rows;
  ProtectorOptions options;
  options.ttl = 48h;
  options.ttl_jitter = 0;
  options.fail_safe_max_staleness = 48h;
  options.tag_history = 1h;
  options.single_flight.load_timeout = 5s;
  options.clock = clock;
  auto protector = std::move(*Protector::create(std::move(options), rows.repository()));
  const TimePoint start = clock->now();
  ASSERT_TRUE(protector->get("user:1"));
  auto entry = protector->peek("user:1");
  ASSERT_TRUE(entry);
  EXPECT_EQ(entry->stale_until, start + 1h - 5s - 1min);
  EXPECT_LE(entry->fresh_until, entry->stale_until);
}

}  // namespace
}  // namespace herdguard

namespace herdguard::internal {
namespace {

// TagVersions on its own (protector/tag_versions.h).
TEST(TagVersionsUnit, AVersionThatCannotBeOneIsIgnored) {
  TagVersions tags(Duration::max());
  const auto now_us =
      static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                     std::chrono::system_clock::now().time_since_epoch())
                                     .count());
  EXPECT_FALSE(tags.learn("t", 0));
  EXPECT_FALSE(tags.learn("t", UINT64_MAX)) << "a forged message must not freeze every stamp";
  EXPECT_EQ(tags.stamp(), 0u);
  EXPECT_TRUE(tags.learn("t", now_us));
  EXPECT_EQ(tags.stamp(), now_us);
  // From a sync: judged by Redis's clock.
  const std::vector<std::pair<std::string, std::uint64_t>> changes = {{"a", now_us + 5},
                                                                      {"b", UINT64_MAX / 2}};
  tags.learn_synced(changes, UINT64_MAX / 2, true, static_cast<std::int64_t>(now_us));
  EXPECT_EQ(tags.stamp(), now_us + 5);
  EXPECT_EQ(tags.synced_through(), now_us + 5) << "an implausible sequence is not trusted";
  EXPECT_EQ(tags.size(), 2u) << "t and a; b ignored";
}

TEST(TagVersionsUnit, AnEntryStandsUntilOneOfItsTagsOrClearIsInvalidatedAfterItsStamp) {
  TagVersions tags(Duration::max());
  CacheEntry e;
  e.tags = {"x", "y"};
  e.tag_stamp = 100;
  EXPECT_TRUE(tags.valid(e));
  const std::uint64_t epoch = tags.epoch();
  ASSERT_TRUE(tags.learn("y", 100));
  EXPECT_TRUE(tags.valid(e)) << "at its stamp: the load began after";
  EXPECT_NE(tags.epoch(), epoch);
  ASSERT_TRUE(tags.learn("z", 101));
  EXPECT_TRUE(tags.valid(e)) << "a tag it does not carry";
  ASSERT_TRUE(tags.learn("x", 101));
  EXPECT_FALSE(tags.valid(e));
  CacheEntry untagged;
  untagged.tag_stamp = 150;
  EXPECT_TRUE(tags.valid(untagged));
  ASSERT_TRUE(tags.learn("", 151));  // clear()
  EXPECT_FALSE(tags.valid(untagged));
  untagged.tag_stamp = tags.stamp();
  EXPECT_TRUE(tags.valid(untagged)) << "stamped after the clear";
}

TEST(TagVersionsUnit, AnIncompleteSyncKnowsOnlyUpToWhatItRead) {
  TagVersions tags(Duration::max());
  const std::int64_t now_us = 2'000'000'000'000'000;
  const std::vector<std::pair<std::string, std::uint64_t>> page = {{"a", 10}, {"b", 20}};
  tags.learn_synced(page, 99, false, now_us);
  EXPECT_EQ(tags.synced_through(), 20u) << "the next page starts after 20";
  const std::vector<std::pair<std::string, std::uint64_t>> rest = {{"c", 30}};
  tags.learn_synced(rest, 99, true, now_us);
  EXPECT_EQ(tags.synced_through(), 99u) << "complete: up to the sequence";
  EXPECT_EQ(tags.stamp(), 99u);
}

}  // namespace
}  // namespace herdguard::internal
