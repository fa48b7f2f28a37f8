#include "herdguard/memory_cache.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <latch>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace herdguard {
namespace {

using std::chrono::hours;
using std::chrono::milliseconds;
using std::chrono::minutes;
using std::chrono::seconds;

constexpr std::size_t kOverhead = MemoryCache::kEntryOverheadBytes;

std::size_t charge(std::string_view key, std::string_view value) {
  return key.size() + value.size() + kOverhead;
}

CacheEntry entry_at(TimePoint now, std::string value, Duration stale_for = hours(1)) {
  return CacheEntry{.value = std::move(value),
                    .fresh_until = now + std::min<Duration>(stale_for, minutes(1)),
                    .stale_until = now + stale_for};
}

class Harness {
 public:
  explicit Harness(MemoryCacheOptions options) : clock_(std::make_shared<ManualClock>()) {
    auto created = MemoryCache::create(options, clock_);
    EXPECT_TRUE(created.has_value()) << created.error().to_string();
    cache_ = std::move(*created);
  }

  MemoryCache& cache() { return *cache_; }
  ManualClock& clock() { return *clock_; }

  void put(std::string_view key, std::string value, Duration stale_for = hours(1)) {
    auto r = cache_->put(key, entry_at(clock_->now(), std::move(value), stale_for));
    ASSERT_TRUE(r.has_value()) << r.error().to_string();
  }

  // The value under `key`, or nullopt on a miss.
  std::optional<std::string> value_of(std::string_view key) {
    auto got = cache_->get(key);
    EXPECT_TRUE(got.has_value());
    if (!got.has_value() || !got->has_value()) return std::nullopt;
    return (*got)->value;
  }

 private:
  std::shared_ptr<ManualClock> clock_;
  std::unique_ptr<MemoryCache> cache_;
};

TEST(MemoryCache, RoundTripsBinaryKeysAndValues) {
  Harness h({});
  const TimePoint now = h.clock().now();
  const std::string key("user\0:1", 7);
  const std::string sibling("user\0:2", 7);
  const std::string value("\0bin\0ary\xff", 9);
  CacheEntry e{.value = value,
               .fresh_until = now + minutes(1),
               .stale_until = now + hours(1),
               .negative = false,
               .load_duration = milliseconds(25)};
  ASSERT_TRUE(h.cache().put(key, e).has_value());
  h.put(sibling, "other");

  auto got = h.cache().get(key);
  ASSERT_TRUE(got.has_value());
  ASSERT_TRUE(got->has_value());
  EXPECT_EQ((*got)->value, value);
  EXPECT_EQ((*got)->fresh_until, e.fresh_until);
  EXPECT_EQ((*got)->stale_until, e.stale_until);
  EXPECT_FALSE((*got)->negative);
  EXPECT_EQ((*got)->load_duration, milliseconds(25));
  EXPECT_EQ(h.value_of(sibling), "other");
  // The bytes before the NUL are a different key.
  EXPECT_EQ(h.value_of("user"), std::nullopt);
}

TEST(MemoryCache, RoundTripsNegativeEntries) {
  Harness h({});
  const TimePoint now = h.clock().now();
  ASSERT_TRUE(h.cache()
                  .put("missing", CacheEntry{.fresh_until = now + seconds(5),
                                             .stale_until = now + seconds(5),
                                             .negative = true})
                  .has_value());
  auto got = h.cache().get("missing");
  ASSERT_TRUE(got.has_value());
  ASSERT_TRUE(got->has_value());
  EXPECT_TRUE((*got)->negative);
  EXPECT_EQ((*got)->value, "");
}

TEST(MemoryCache, GetOfAbsentKeyIsAMiss) {
  Harness h({});
  EXPECT_EQ(h.value_of("nothing"), std::nullopt);
  h.put("something", "v");
  EXPECT_EQ(h.value_of("nothing"), std::nullopt);
  EXPECT_EQ(h.cache().stats().entries, 1u);
}

TEST(MemoryCache, PutReplacesValueAndByteAccounting) {
  Harness h({});
  h.put("k", "short");
  EXPECT_EQ(h.cache().stats().bytes, charge("k", "short"));
  h.put("k", "a much longer value");
  EXPECT_EQ(h.value_of("k"), "a much longer value");
  MemoryCacheStats stats = h.cache().stats();
  EXPECT_EQ(stats.entries, 1u);
  EXPECT_EQ(stats.bytes, charge("k", "a much longer value"));
  h.put("k", "");
  EXPECT_EQ(h.cache().stats().bytes, charge("k", ""));
}

TEST(MemoryCache, EvictsWhenEntryBoundReached) {
  Harness h({.max_entries = 3, .shards = 1});
  for (int i = 0; i < 10; ++i) {
    h.put("k" + std::to_string(i), "v");
    EXPECT_LE(h.cache().stats().entries, 3u);
  }
  MemoryCacheStats stats = h.cache().stats();
  EXPECT_EQ(stats.entries, 3u);
  EXPECT_EQ(stats.evictions, 7u);
  EXPECT_EQ(stats.expirations, 0u);
  // Nothing was read, so CLOCK evicts in insertion order.
  for (int i = 0; i < 7; ++i) EXPECT_EQ(h.value_of("k" + std::to_string(i)), std::nullopt);
  for (int i = 7; i < 10; ++i) EXPECT_EQ(h.value_of("k" + std::to_string(i)), "v");
}

TEST(MemoryCache, PinnedEntrySurvivesEvictionsThatWouldTakeIt) {
  Harness h({.max_entries = 3, .shards = 1});
  h.cache().pin("hot", seconds(1));  // before its entry exists: remembered
  h.put("hot", "h");
  for (int i = 0; i < 10; ++i) h.put("k" + std::to_string(i), "v");
  EXPECT_EQ(h.value_of("hot"), "h");  // unread, first in: CLOCK would have taken it first
  EXPECT_EQ(h.cache().stats().entries, 3u);
  EXPECT_TRUE(h.cache().is_pinned("hot"));
  h.cache().unpin("hot");
  EXPECT_FALSE(h.cache().is_pinned("hot"));
  for (int i = 10; i < 13; ++i) h.put("k" + std::to_string(i), "v");
  EXPECT_EQ(h.value_of("hot"), std::nullopt);
}

TEST(MemoryCache, WhenEverythingIsPinnedEvictionStillKeepsTheBound) {
  Harness h({.max_entries = 2, .shards = 1});
  for (int i = 0; i < 4; ++i) h.cache().pin("p" + std::to_string(i), seconds(1));
  for (int i = 0; i < 4; ++i) h.put("p" + std::to_string(i), "v");
  EXPECT_EQ(h.cache().stats().entries, 2u);
  EXPECT_EQ(h.cache().stats().evictions, 2u);
}

TEST(MemoryCache, PinnedEntryReportsRefreshDueItsLeadBeforeExpiry) {
  Harness h({.max_entries = 16, .shards = 1});
  const TimePoint now = h.clock().now();
  ASSERT_TRUE(h.cache().put(
      "k", CacheEntry{
               .value = "v", .fresh_until = now + seconds(10), .stale_until = now + seconds(20)}));
  std::string value;
  bool negative = false;
  const TimePoint late = now + seconds(9);
  EXPECT_EQ(h.cache().get_fresh_value("k", late, value, negative), MemoryCache::Freshness::kFresh);
  h.cache().pin("k", seconds(2));  // applies to the entry already there
  EXPECT_EQ(h.cache().get_fresh_value("k", late, value, negative),
            MemoryCache::Freshness::kRefreshDue);
  EXPECT_EQ((*h.cache().get("k"))->refresh_from, now + seconds(8));
  EXPECT_EQ(h.cache().get_fresh_value("k", now + seconds(7), value, negative),
            MemoryCache::Freshness::kFresh);
  // And to the entries stored later.
  ASSERT_TRUE(h.cache().put(
      "k", CacheEntry{
               .value = "w", .fresh_until = now + seconds(30), .stale_until = now + seconds(40)}));
  EXPECT_EQ((*h.cache().get("k"))->refresh_from, now + seconds(28));
}

TEST(MemoryCache, APinnedEntryOfASlowLoadOpensItsRefreshWindowTwoLoadsBeforeExpiry) {
  EXPECT_EQ(MemoryCache::pinned_lead(seconds(2), milliseconds(50)), seconds(2));
  EXPECT_EQ(MemoryCache::pinned_lead(seconds(2), milliseconds(1500)), seconds(3));
  EXPECT_EQ(MemoryCache::pinned_lead(seconds(2), seconds(5)), seconds(4));  // at most 2 leads
  Harness h({.max_entries = 16, .shards = 1});
  const TimePoint now = h.clock().now();
  h.cache().pin("k", seconds(2));
  ASSERT_TRUE(h.cache().put("k", CacheEntry{.value = "v",
                                            .fresh_until = now + seconds(10),
                                            .stale_until = now + seconds(20),
                                            .load_duration = milliseconds(1500)}));
  EXPECT_EQ((*h.cache().get("k"))->refresh_from, now + seconds(7));
}

TEST(MemoryCache, EvictsWhenByteBoundReached) {
  const std::string value(10, 'v');
  const std::size_t one = charge("k0", value);
  Harness h({.max_entries = 100, .max_bytes = 3 * one, .shards = 1});
  for (int i = 0; i < 10; ++i) {
    h.put("k" + std::to_string(i), value);
    EXPECT_LE(h.cache().stats().bytes, 3 * one);
  }
  EXPECT_EQ(h.cache().stats().entries, 3u);
  EXPECT_EQ(h.cache().stats().bytes, 3 * one);

  // An entry twice the size pushes out two.
  const std::string big(10 + one, 'b');
  h.put("kb", big);
  MemoryCacheStats stats = h.cache().stats();
  EXPECT_EQ(stats.entries, 2u);
  EXPECT_EQ(stats.bytes, 3 * one);
  EXPECT_EQ(stats.evictions, 9u);
  EXPECT_EQ(h.value_of("kb"), big);
  EXPECT_EQ(h.value_of("k9"), value);
}

TEST(MemoryCache, ClockGivesRecentlyReadEntryASecondChance) {
  Harness h({.max_entries = 3, .shards = 1});
  h.put("a", "1");
  h.put("b", "2");
  h.put("c", "3");
  EXPECT_EQ(h.value_of("a"), "1");  // the oldest, but now read

  h.put("d", "4");

  EXPECT_EQ(h.value_of("a"), "1");
  EXPECT_EQ(h.value_of("b"), std::nullopt);  // unread, so evicted instead
  EXPECT_EQ(h.value_of("c"), "3");
  EXPECT_EQ(h.value_of("d"), "4");
  EXPECT_EQ(h.cache().stats().evictions, 1u);
}

TEST(MemoryCache, SecondChanceIsSpentByOneSweep) {
  Harness h({.max_entries = 3, .shards = 1});
  h.put("a", "1");
  h.put("b", "2");
  h.put("c", "3");
  ASSERT_EQ(h.value_of("a"), "1");
  h.put("d", "4");  // the hand clears a's bit and evicts b
  h.put("e", "5");  // evicts c
  EXPECT_EQ(h.cache().stats().evictions, 2u);
  h.put("f", "6");  // a was not read again since the hand passed it, so it goes now
  EXPECT_EQ(h.cache().stats().evictions, 3u);
  EXPECT_EQ(h.value_of("a"), std::nullopt);
  EXPECT_EQ(h.value_of("d"), "4");
  EXPECT_EQ(h.value_of("e"), "5");
  EXPECT_EQ(h.value_of("f"), "6");
}

TEST(MemoryCache, StaleEntryIsReturnedUntilStaleUntil) {
  Harness h({});
  h.put("k", "v", minutes(10));  // fresh for 1 minute, usable for 10
  h.clock().advance(minutes(5));
  auto got = h.cache().get("k");
  ASSERT_TRUE(got.has_value() && got->has_value());
  EXPECT_FALSE((*got)->is_fresh(h.clock().now()));
  EXPECT_EQ((*got)->value, "v");

  h.clock().advance(minutes(5));  // exactly stale_until: no longer usable
  EXPECT_EQ(h.value_of("k"), std::nullopt);
}

TEST(MemoryCache, ExpiredEntryIsNotReturnedAndIsCounted) {
  Harness h({});
  h.put("short", "v", seconds(10));
  h.put("long", "w");
  h.clock().advance(seconds(11));

  EXPECT_EQ(h.value_of("short"), std::nullopt);
  MemoryCacheStats stats = h.cache().stats();
  EXPECT_EQ(stats.entries, 1u);
  EXPECT_EQ(stats.bytes, charge("long", "w"));
  EXPECT_EQ(stats.expirations, 1u);
  EXPECT_EQ(stats.evictions, 0u);

  // Dropped once, counted once.
  EXPECT_EQ(h.value_of("short"), std::nullopt);
  EXPECT_EQ(h.cache().stats().expirations, 1u);
  EXPECT_EQ(h.value_of("long"), "w");
}

TEST(MemoryCache, HandCountsExpiredEntriesItDropsAsExpirations) {
  Harness h({.max_entries = 2, .shards = 1});
  h.put("b", "live");
  h.put("a", "dies", seconds(10));
  ASSERT_EQ(h.value_of("b"), "live");  // so the hand passes over b
  h.clock().advance(seconds(20));

  h.put("c", "new");

  MemoryCacheStats stats = h.cache().stats();
  EXPECT_EQ(stats.entries, 2u);
  EXPECT_EQ(stats.evictions, 0u);
  EXPECT_EQ(stats.expirations, 1u);
  EXPECT_EQ(h.value_of("b"), "live");
  EXPECT_EQ(h.value_of("c"), "new");
}

TEST(MemoryCache, OversizedEntryIsRejectedAndCacheUnchanged) {
  Harness h({.max_entries = 10, .max_bytes = 200, .shards = 1});
  h.put("k", "old");
  h.put("j", "other");
  const MemoryCacheStats before = h.cache().stats();

  const std::string too_big(200 - kOverhead, 'x');  // with the 1-byte key, one byte over
  ASSERT_EQ(charge("k", too_big), 201u);
  auto r = h.cache().put("k", entry_at(h.clock().now(), too_big));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().kind, ErrorKind::kInvalidArgument);
  EXPECT_NE(r.error().message.find("201"), std::string::npos) << r.error().message;

  const MemoryCacheStats after = h.cache().stats();
  EXPECT_EQ(after.entries, before.entries);
  EXPECT_EQ(after.bytes, before.bytes);
  EXPECT_EQ(after.evictions, before.evictions);
  EXPECT_EQ(h.value_of("k"), "old");
  EXPECT_EQ(h.value_of("j"), "other");

  // Exactly the budget fits, alone.
  const std::string just_fits(200 - kOverhead - 1, 'x');
  h.put("k", just_fits);
  EXPECT_EQ(h.value_of("k"), just_fits);
  EXPECT_EQ(h.cache().stats().bytes, 200u);
  EXPECT_EQ(h.cache().stats().entries, 1u);
}

TEST(MemoryCache, ReplacementThatGrowsEvictsOthersButNeverItself) {
  const std::size_t one = charge("a", "1234567890");
  Harness h({.max_entries = 10, .max_bytes = 3 * one, .shards = 1});
  h.put("a", "1234567890");
  h.put("b", "1234567890");
  h.put("c", "1234567890");

  // "a" is first under the hand, yet it is the entry being replaced.
  const std::string bigger(10 + one, 'x');
  h.put("a", bigger);

  EXPECT_EQ(h.value_of("a"), bigger);
  MemoryCacheStats stats = h.cache().stats();
  EXPECT_EQ(stats.entries, 2u);
  EXPECT_EQ(stats.bytes, 3 * one);
  EXPECT_EQ(stats.evictions, 1u);
  EXPECT_EQ(h.value_of("b"), std::nullopt);
  EXPECT_EQ(h.value_of("c"), "1234567890");

  // Growing to the whole budget leaves it alone.
  const std::string whole(3 * one - kOverhead - 1, 'y');
  h.put("a", whole);
  EXPECT_EQ(h.value_of("a"), whole);
  EXPECT_EQ(h.cache().stats().entries, 1u);
}

TEST(MemoryCache, EraseRemovesOnlyThatKey) {
  Harness h({});
  h.put("a", "1");
  h.put("b", "2");
  ASSERT_TRUE(h.cache().erase("a").has_value());
  EXPECT_EQ(h.value_of("a"), std::nullopt);
  EXPECT_EQ(h.value_of("b"), "2");
  MemoryCacheStats stats = h.cache().stats();
  EXPECT_EQ(stats.entries, 1u);
  EXPECT_EQ(stats.bytes, charge("b", "2"));
  EXPECT_EQ(stats.evictions, 0u);
}

TEST(MemoryCache, EraseOfAbsentKeyIsNotAnError) {
  Harness h({});
  EXPECT_TRUE(h.cache().erase("never").has_value());
  h.put("a", "1");
  ASSERT_TRUE(h.cache().erase("a").has_value());
  EXPECT_TRUE(h.cache().erase("a").has_value());
  EXPECT_EQ(h.cache().stats().entries, 0u);
}

TEST(MemoryCache, EraseThenEvictionKeepsTheRingWhole) {
  Harness h({.max_entries = 3, .shards = 1});
  h.put("a", "1");
  h.put("b", "2");
  h.put("c", "3");
  ASSERT_TRUE(h.cache().erase("a").has_value());  // the entry under the hand
  h.put("d", "4");                                // fits without eviction
  h.put("e", "5");                                // evicts b, now the oldest
  EXPECT_EQ(h.value_of("b"), std::nullopt);
  EXPECT_EQ(h.value_of("c"), "3");
  EXPECT_EQ(h.value_of("d"), "4");
  EXPECT_EQ(h.value_of("e"), "5");
  EXPECT_EQ(h.cache().stats().evictions, 1u);
}

TEST(MemoryCache, ClearRemovesEverything) {
  Harness h({.max_entries = 64, .shards = 4});
  for (int i = 0; i < 100; ++i) h.put("k" + std::to_string(i), "v");
  h.cache().clear();
  MemoryCacheStats stats = h.cache().stats();
  EXPECT_EQ(stats.entries, 0u);
  EXPECT_EQ(stats.bytes, 0u);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(h.value_of("k" + std::to_string(i)), std::nullopt);

  // Still usable, evictions included.
  for (int i = 0; i < 100; ++i) h.put("n" + std::to_string(i), "w");
  EXPECT_LE(h.cache().stats().entries, 64u);
  EXPECT_EQ(h.value_of("n99"), "w");
}

TEST(MemoryCache, EntryBoundIsSplitEvenlyAcrossShards) {
  // 10 / 4 shards = 2 per shard, rounded down: the cache holds 8, never 10.
  Harness h({.max_entries = 10, .shards = 4});
  for (int i = 0; i < 1000; ++i) h.put("k" + std::to_string(i), "v");
  EXPECT_EQ(h.cache().stats().entries, 8u);
}

TEST(MemoryCache, ByteBoundIsSplitEvenlyAcrossShards) {
  Harness h({.max_entries = 100, .max_bytes = 1000, .shards = 4});  // 250 per shard
  const std::string fits(250 - kOverhead - 1, 'x');
  h.put("k", fits);
  EXPECT_EQ(h.value_of("k"), fits);
  auto r = h.cache().put("k", entry_at(h.clock().now(), fits + "x"));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().kind, ErrorKind::kInvalidArgument);
  for (int i = 0; i < 1000; ++i) h.put("k" + std::to_string(i), "v");
  EXPECT_LE(h.cache().stats().bytes, 1000u);
}

TEST(MemoryCache, ShardCountIsRoundedUpToAPowerOfTwo) {
  // 3 shards become 4: 250 bytes and 1 entry per shard, not 333 and 1.
  Harness h({.max_entries = 4, .max_bytes = 1000, .shards = 3});
  auto r = h.cache().put("k", entry_at(h.clock().now(), std::string(251 - kOverhead - 1, 'x')));
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().kind, ErrorKind::kInvalidArgument);
  for (int i = 0; i < 1000; ++i) h.put("k" + std::to_string(i), "v");
  EXPECT_EQ(h.cache().stats().entries, 4u);
}

Error validate_error(MemoryCacheOptions options) {
  auto r = options.validate();
  EXPECT_FALSE(r.has_value());
  if (r.has_value()) return {};
  EXPECT_EQ(r.error().kind, ErrorKind::kInvalidArgument);
  return r.error();
}

TEST(MemoryCacheOptions, DefaultsAndEdgesAreValid) {
  EXPECT_TRUE(MemoryCacheOptions{}.validate().has_value());
  EXPECT_TRUE(
      (MemoryCacheOptions{.max_entries = 1, .max_bytes = 1, .shards = 1}.validate()).has_value());
  EXPECT_TRUE((MemoryCacheOptions{.max_entries = 1024, .shards = 1024}.validate()).has_value());
}

TEST(MemoryCacheOptions, RejectsZeroShards) {
  EXPECT_EQ(validate_error({.shards = 0}).message,
            "memory cache: shards must be in 1..1024, got 0");
}

TEST(MemoryCacheOptions, RejectsMoreThan1024Shards) {
  EXPECT_EQ(validate_error({.max_entries = 1 << 20, .shards = 1025}).message,
            "memory cache: shards must be in 1..1024, got 1025");
}

TEST(MemoryCacheOptions, RejectsMaxEntriesBelowShards) {
  EXPECT_EQ(validate_error({.max_entries = 3}).message,
            "memory cache: max_entries must be >= shards (16), got 3");
}

TEST(MemoryCacheOptions, ComparesMaxEntriesWithRoundedShardCount) {
  EXPECT_EQ(validate_error({.max_entries = 3, .shards = 3}).message,
            "memory cache: max_entries must be >= shards (4, 3 rounded up to a power of two), "
            "got 3");
}

TEST(MemoryCacheOptions, RejectsZeroMaxBytes) {
  EXPECT_EQ(validate_error({.max_bytes = 0}).message, "memory cache: max_bytes must be > 0, got 0");
}

TEST(MemoryCache, CreateReturnsTheValidationError) {
  auto created = MemoryCache::create({.max_bytes = 0}, std::make_shared<ManualClock>());
  ASSERT_FALSE(created.has_value());
  EXPECT_EQ(created.error().kind, ErrorKind::kInvalidArgument);
  EXPECT_EQ(created.error().message, "memory cache: max_bytes must be > 0, got 0");
}

TEST(MemoryCache, CreateRejectsNullClock) {
  auto created = MemoryCache::create({}, nullptr);
  ASSERT_FALSE(created.has_value());
  EXPECT_EQ(created.error().kind, ErrorKind::kInvalidArgument);
}

// Readers, writers and an eraser on few shards with a tight bound, so puts
// evict while reads run. Values are derived from keys, so a read that returns
// another key's value, or a torn one, shows up.
TEST(MemoryCache, ConcurrentReadersAndWritersKeepBoundsAndValues) {
  constexpr std::size_t kMaxEntries = 64;
  constexpr std::size_t kMaxBytes = 64 * 90;  // binds as often as the entry bound
  constexpr int kKeys = 256;
  constexpr int kOpsPerThread = 20'000;
  Harness h({.max_entries = kMaxEntries, .max_bytes = kMaxBytes, .shards = 4});
  auto key_of = [](int i) { return "key:" + std::to_string(i); };
  auto expected_value = [](const std::string& key) {
    return std::string(key.size() % 7 * 5, '#') + key;  // lengths vary, so bytes churn
  };
  for (int i = 0; i < kKeys; i += 4) h.put(key_of(i), expected_value(key_of(i)));

  MemoryCache& cache = h.cache();
  const TimePoint now = h.clock().now();
  std::atomic<int> wrong_values{0};
  std::atomic<int> hits{0};
  std::atomic<int> failures{0};
  std::atomic<int> bound_violations{0};
  std::latch start(6);
  std::vector<std::thread> threads;
  for (int w = 0; w < 2; ++w) {
    threads.emplace_back([&, w] {
      start.arrive_and_wait();
      for (int n = 0; n < kOpsPerThread; ++n) {
        const std::string key = key_of((n * 7 + w * 13) % kKeys);
        if (!cache.put(key, entry_at(now, expected_value(key)))) failures.fetch_add(1);
      }
    });
  }
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      start.arrive_and_wait();
      for (int n = 0; n < kOpsPerThread; ++n) {
        const std::string key = key_of((n * 3 + r * 101) % kKeys);
        auto got = cache.get(key);
        if (!got) {
          failures.fetch_add(1);
        } else if (got->has_value()) {
          hits.fetch_add(1);
          if ((*got)->value != expected_value(key)) wrong_values.fetch_add(1);
        }
      }
    });
  }
  threads.emplace_back([&] {
    start.arrive_and_wait();
    for (int n = 0; n < kOpsPerThread / 10; ++n) {
      if (!cache.erase(key_of(n * 11 % kKeys))) failures.fetch_add(1);
    }
  });
  threads.emplace_back([&] {
    start.arrive_and_wait();
    for (int n = 0; n < kOpsPerThread / 10; ++n) {
      const MemoryCacheStats stats = cache.stats();
      if (stats.entries > kMaxEntries || stats.bytes > kMaxBytes) bound_violations.fetch_add(1);
    }
  });
  for (auto& t : threads) t.join();

  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(wrong_values.load(), 0);
  EXPECT_EQ(bound_violations.load(), 0);
  EXPECT_GT(hits.load(), 0);

  // At rest, the accounting matches exactly what a full scan finds.
  const MemoryCacheStats stats = cache.stats();
  EXPECT_LE(stats.entries, kMaxEntries);
  EXPECT_LE(stats.bytes, kMaxBytes);
  std::size_t found = 0;
  std::size_t found_bytes = 0;
  for (int i = 0; i < kKeys; ++i) {
    const std::string key = key_of(i);
    if (auto v = h.value_of(key)) {
      EXPECT_EQ(*v, expected_value(key));
      ++found;
      found_bytes += charge(key, *v);
    }
  }
  EXPECT_EQ(found, stats.entries);
  EXPECT_EQ(found_bytes, stats.bytes);
}

// ---------------------------------------------------------------------------
// Generation tickets: put_if_unchanged() refuses a fill once a put or erase of
// the key came in after its ticket was taken.

TEST(MemoryCache, FillWithACurrentTicketIsStored) {
  Harness h({});
  const MemoryCache::Ticket ticket = h.cache().ticket("k");
  auto stored = h.cache().put_if_unchanged("k", entry_at(h.clock().now(), "filled"), ticket);
  ASSERT_TRUE(stored.has_value()) << stored.error().to_string();
  EXPECT_TRUE(*stored);
  EXPECT_EQ(h.value_of("k"), "filled");
}

TEST(MemoryCache, FillWithATicketTakenAfterAPutIsStored) {
  Harness h({});
  h.put("k", "old");
  const MemoryCache::Ticket ticket = h.cache().ticket("k");
  auto stored = h.cache().put_if_unchanged("k", entry_at(h.clock().now(), "filled"), ticket);
  ASSERT_TRUE(stored.has_value());
  EXPECT_TRUE(*stored);
  EXPECT_EQ(h.value_of("k"), "filled");
}

// Regression: a fill that read its value before a put landed could overwrite
// the newer value in L1.
TEST(MemoryCache, SlowFillCannotOverwriteANewerPut) {
  Harness h({});
  const MemoryCache::Ticket ticket = h.cache().ticket("k");  // the fill starts reading
  h.put("k", "newer");                                       // a set lands meanwhile
  auto stored = h.cache().put_if_unchanged("k", entry_at(h.clock().now(), "older"), ticket);
  ASSERT_TRUE(stored.has_value());
  EXPECT_FALSE(*stored);
  EXPECT_EQ(h.value_of("k"), "newer");
}

TEST(MemoryCache, SlowFillCannotOverwriteANewerPutOfAnExistingKey) {
  Harness h({});
  h.put("k", "first");
  const MemoryCache::Ticket ticket = h.cache().ticket("k");
  h.put("k", "second");
  auto stored = h.cache().put_if_unchanged("k", entry_at(h.clock().now(), "stale"), ticket);
  ASSERT_TRUE(stored.has_value());
  EXPECT_FALSE(*stored);
  EXPECT_EQ(h.value_of("k"), "second");
}

TEST(MemoryCache, SlowFillCannotResurrectAnErasedKey) {
  Harness h({});
  h.put("k", "old");
  const MemoryCache::Ticket ticket = h.cache().ticket("k");
  ASSERT_TRUE(h.cache().erase("k").has_value());  // an invalidate lands meanwhile
  auto stored = h.cache().put_if_unchanged("k", entry_at(h.clock().now(), "old"), ticket);
  ASSERT_TRUE(stored.has_value());
  EXPECT_FALSE(*stored);
  EXPECT_EQ(h.value_of("k"), std::nullopt);
  EXPECT_EQ(h.cache().stats().entries, 0u);
}

TEST(MemoryCache, EraseOfAnAbsentKeyStillRefusesAnOlderFill) {
  Harness h({});
  const MemoryCache::Ticket ticket = h.cache().ticket("k");
  ASSERT_TRUE(h.cache().erase("k").has_value());
  auto stored = h.cache().put_if_unchanged("k", entry_at(h.clock().now(), "v"), ticket);
  ASSERT_TRUE(stored.has_value());
  EXPECT_FALSE(*stored);
  EXPECT_EQ(h.value_of("k"), std::nullopt);
}

TEST(MemoryCache, FillDoesNotBumpTheGeneration) {
  Harness h({});
  const MemoryCache::Ticket ticket = h.cache().ticket("k");
  auto first = h.cache().put_if_unchanged("k", entry_at(h.clock().now(), "one"), ticket);
  auto second = h.cache().put_if_unchanged("k", entry_at(h.clock().now(), "two"), ticket);
  ASSERT_TRUE(first.has_value());
  ASSERT_TRUE(second.has_value());
  EXPECT_TRUE(*first);
  EXPECT_TRUE(*second);
  EXPECT_EQ(h.value_of("k"), "two");
  EXPECT_EQ(h.cache().ticket("k").generation, ticket.generation);
}

TEST(MemoryCache, PutAndEraseBumpTheGeneration) {
  Harness h({});
  const MemoryCache::Ticket before = h.cache().ticket("k");
  h.put("k", "v");
  const MemoryCache::Ticket after_put = h.cache().ticket("k");
  EXPECT_NE(after_put.generation, before.generation);
  ASSERT_TRUE(h.cache().erase("k").has_value());
  EXPECT_NE(h.cache().ticket("k").generation, after_put.generation);
}

TEST(MemoryCache, ClearInvalidatesOutstandingTickets) {
  Harness h({.max_entries = 64, .shards = 4});
  std::vector<MemoryCache::Ticket> tickets;
  for (int i = 0; i < 32; ++i) {
    const std::string key = "k" + std::to_string(i);
    if (i % 2 == 0) h.put(key, "v");  // half present, half absent
    tickets.push_back(h.cache().ticket(key));
  }
  h.cache().clear();
  for (int i = 0; i < 32; ++i) {
    const std::string key = "k" + std::to_string(i);
    auto stored = h.cache().put_if_unchanged(key, entry_at(h.clock().now(), "old"), tickets[i]);
    ASSERT_TRUE(stored.has_value());
    EXPECT_FALSE(*stored) << key;
    EXPECT_EQ(h.value_of(key), std::nullopt) << key;
  }
  // A ticket taken after the clear is current again.
  auto fresh =
      h.cache().put_if_unchanged("k0", entry_at(h.clock().now(), "new"), h.cache().ticket("k0"));
  ASSERT_TRUE(fresh.has_value());
  EXPECT_TRUE(*fresh);
  EXPECT_EQ(h.value_of("k0"), "new");
}

// The backplane's gap (ProtectorOptions::l1_backplane): every entry kept,
// none answered as fresh without a recheck, and no fill that began before lands.
TEST(MemoryCache, RecheckAllMakesEveryEntryDueAndRefusesOlderFills) {
  Harness h({.max_entries = 64, .shards = 4});
  for (int i = 0; i < 16; ++i) h.put("k" + std::to_string(i), "v");
  const MemoryCache::Ticket before = h.cache().ticket("absent");
  const TimePoint now = h.clock().now();
  h.cache().recheck_all(now);
  EXPECT_EQ(h.cache().stats().entries, 16u);
  for (int i = 0; i < 16; ++i) {
    const std::string key = "k" + std::to_string(i);
    std::string value;
    bool negative = false;
    EXPECT_EQ(h.cache().get_fresh_value(key, now, value, negative),
              MemoryCache::Freshness::kNotFresh)
        << key;
    auto entry = h.cache().get(key, now);
    ASSERT_TRUE(entry.has_value() && entry->has_value()) << key;
    EXPECT_TRUE((*entry)->is_fresh(now)) << "kept: fresh by its TTL, only due for a recheck";
    EXPECT_FALSE((*entry)->is_fresh_in_l1(now));
  }
  auto stored = h.cache().put_if_unchanged("absent", entry_at(now, "old"), before);
  ASSERT_TRUE(stored.has_value());
  EXPECT_FALSE(*stored);
  // An entry stored after it is answered as fresh again.
  h.put("k0", "confirmed");
  std::string value;
  bool negative = false;
  EXPECT_EQ(h.cache().get_fresh_value("k0", now, value, negative), MemoryCache::Freshness::kFresh);
  EXPECT_EQ(value, "confirmed");
}

TEST(MemoryCache, RejectedOversizedPutStillRefusesAnOlderFill) {
  Harness h({.max_entries = 10, .max_bytes = 200, .shards = 1});
  h.put("k", "old");
  const MemoryCache::Ticket ticket = h.cache().ticket("k");
  auto too_big = h.cache().put("k", entry_at(h.clock().now(), std::string(200, 'x')));
  ASSERT_FALSE(too_big.has_value());
  auto stored = h.cache().put_if_unchanged("k", entry_at(h.clock().now(), "fill"), ticket);
  ASSERT_TRUE(stored.has_value());
  EXPECT_FALSE(*stored);
  EXPECT_EQ(h.value_of("k"), "old");
}

TEST(MemoryCache, OversizedFillIsAnErrorAndStoresNothing) {
  Harness h({.max_entries = 10, .max_bytes = 200, .shards = 1});
  const MemoryCache::Ticket ticket = h.cache().ticket("k");
  auto stored =
      h.cache().put_if_unchanged("k", entry_at(h.clock().now(), std::string(200, 'x')), ticket);
  ASSERT_FALSE(stored.has_value());
  EXPECT_EQ(stored.error().kind, ErrorKind::kInvalidArgument);
  EXPECT_EQ(h.value_of("k"), std::nullopt);
  // A failed fill does not bump: the ticket is still good.
  auto small = h.cache().put_if_unchanged("k", entry_at(h.clock().now(), "ok"), ticket);
  ASSERT_TRUE(small.has_value());
  EXPECT_TRUE(*small);
}

// A writer puts versions 1..N of one key, publishing each to a "database"
// first; fillers follow the ticket protocol (ticket, then read the database,
// then fill). Some fills are held until the writer has put something newer:
// those must be refused. At no time may the cache hold a version older than
// the newest put that has returned, and at the end it holds version N. The
// writer does not run ahead: before each new version it waits until a filler
// has read the current one, so fills really race with puts.
TEST(MemoryCache, ConcurrentSlowFillsNeverReplaceANewerPut) {
  constexpr int kFillers = 3;
  constexpr std::uint64_t kVersions = 5'000;
  constexpr int kMaxFillsPerFiller = 20'000;
  Harness h({.max_entries = 1024, .shards = 4});
  MemoryCache& cache = h.cache();
  const TimePoint now = h.clock().now();
  const std::string key = "hot";

  std::atomic<std::uint64_t> database{0};  // the source of truth
  std::atomic<std::uint64_t> last_put{0};  // newest version whose put() returned
  std::atomic<bool> writer_done{false};
  std::atomic<std::uint64_t> newest_read{0};  // newest version a filler read
  std::atomic<int> fillers_finished{0};
  std::atomic<int> stale_fills_stored{0};
  std::atomic<int> held_fills{0};
  std::atomic<int> older_than_last_put{0};
  std::atomic<int> failures{0};
  auto version_of = [&](std::string_view k) -> std::optional<std::uint64_t> {
    auto got = cache.get(k);
    if (!got) {
      failures.fetch_add(1);
      return std::nullopt;
    }
    if (!got->has_value()) return std::nullopt;
    return std::stoull((*got)->value);
  };

  std::latch start(kFillers + 1);
  std::vector<std::thread> threads;
  threads.emplace_back([&] {
    start.arrive_and_wait();
    for (std::uint64_t v = 1; v <= kVersions; ++v) {
      database.store(v);
      if (!cache.put(key, entry_at(now, std::to_string(v)))) failures.fetch_add(1);
      last_put.store(v);
      while (newest_read.load() < v && fillers_finished.load() < kFillers) {
        std::this_thread::yield();
      }
    }
    writer_done.store(true);
  });
  for (int f = 0; f < kFillers; ++f) {
    threads.emplace_back([&, f] {
      std::mt19937 random(1234 + f);
      start.arrive_and_wait();
      for (int n = 0; n < kMaxFillsPerFiller && !writer_done.load(); ++n) {
        const MemoryCache::Ticket ticket = cache.ticket(key);
        const std::uint64_t read = database.load();
        for (std::uint64_t seen = newest_read.load();
             seen < read && !newest_read.compare_exchange_weak(seen, read);) {
        }
        const bool hold = random() % 2 == 0;
        if (hold) {
          // A slow load: it ends only after a newer version was put (or the
          // writer finished with no newer one to come).
          while (last_put.load() <= read && !writer_done.load()) std::this_thread::yield();
        }
        const bool newer_put = last_put.load() > read;
        auto stored = cache.put_if_unchanged(key, entry_at(now, std::to_string(read)), ticket);
        if (!stored) {
          failures.fetch_add(1);
          continue;
        }
        if (newer_put) held_fills.fetch_add(1);
        if (newer_put && *stored) stale_fills_stored.fetch_add(1);
        // Readers never see a version older than the newest completed put.
        const std::uint64_t floor = last_put.load();
        if (auto seen = version_of(key); seen && *seen < floor) older_than_last_put.fetch_add(1);
      }
      fillers_finished.fetch_add(1);
    });
  }
  for (auto& t : threads) t.join();

  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(stale_fills_stored.load(), 0);
  EXPECT_EQ(older_than_last_put.load(), 0);
  EXPECT_EQ(version_of(key), kVersions);
  // The race was really run: some fills were outdated by a put before they landed.
  EXPECT_GT(held_fills.load(), 0);
}

}  // namespace
}  // namespace herdguard
