// RedisCache (the L2) against a real redis-server.
#include "herdguard/redis_cache.h"

#include <gtest/gtest.h>

#include <thread>

#include "redis_server.h"

namespace herdguard {
namespace {

using namespace std::chrono_literals;
using testing::RedisServer;

struct Fixture {
  std::unique_ptr<RedisServer> server = RedisServer::start();
  std::shared_ptr<RedisClient> client = [this] {
    auto c = RedisClient::create({.url = server->url(), .reconnect_backoff_min = 10ms});
    EXPECT_TRUE(c);
    return std::shared_ptr<RedisClient>(std::move(*c));
  }();
  std::shared_ptr<ManualClock> clock = std::make_shared<ManualClock>();

  std::unique_ptr<RedisCache> cache(std::string prefix = "t:") {
    auto c = RedisCache::create({.prefix = std::move(prefix)}, client, clock);
    EXPECT_TRUE(c) << c.error().to_string();
    return std::move(*c);
  }
  CacheEntry entry(std::string value) const {
    const TimePoint now = clock->now();
    return CacheEntry{.value = std::move(value),
                      .fresh_until = now + 10s,
                      .stale_until = now + 60s,
                      .negative = false,
                      .load_duration = 5ms};
  }
};

TEST(RedisCache, RoundTripsBinaryKeysAndValues) {
  Fixture f;
  auto l2 = f.cache();
  const std::string key("k\0\xff", 3);
  const std::string value("v\0\r\n", 4);
  ASSERT_TRUE(l2->put(key, f.entry(value)));
  auto got = l2->get(key);
  ASSERT_TRUE(got) << got.error().to_string();
  ASSERT_TRUE(*got);
  EXPECT_EQ((*got)->value, value);
  EXPECT_EQ((*got)->fresh_until, f.entry("").fresh_until);
  EXPECT_EQ((*got)->load_duration, 5ms);
  EXPECT_EQ(l2->stats().hits, 1u);
  auto miss = l2->get("absent");
  ASSERT_TRUE(miss);
  EXPECT_FALSE(*miss);
  EXPECT_EQ(l2->stats().misses, 1u);
}

TEST(RedisCache, PrefixesIsolateCaches) {
  Fixture f;
  auto shop = f.cache("shop:");
  auto blog = f.cache("blog:");
  ASSERT_TRUE(shop->put("k", f.entry("shop value")));
  auto other = blog->get("k");
  ASSERT_TRUE(other);
  EXPECT_FALSE(*other);
  EXPECT_EQ(shop->redis_key("k"), "shop:{k}:v");
}

TEST(RedisCache, RedisExpiryIsTheStaleUntilTime) {
  Fixture f;
  f.clock->set(system_clock()->now());  // PXAT is absolute wall time
  auto l2 = f.cache();
  ASSERT_TRUE(l2->put("k", f.entry("v")));
  auto pttl = f.client->command({"PTTL", l2->redis_key("k")});
  ASSERT_TRUE(pttl);
  EXPECT_GT(pttl->integer, 0);
  EXPECT_LE(pttl->integer, 60'000);
}

TEST(RedisCache, EntriesPastStaleUntilAreMissesAndExpiredPutsAreSkipped) {
  Fixture f;
  auto l2 = f.cache();
  ASSERT_TRUE(l2->put("k", f.entry("v")));
  f.clock->advance(61s);
  auto got = l2->get("k");
  ASSERT_TRUE(got);
  EXPECT_FALSE(*got);
  ASSERT_TRUE(l2->put("late", CacheEntry{.value = "v",
                                         .fresh_until = f.clock->now() - 2s,
                                         .stale_until = f.clock->now() - 1s}));
  auto exists = f.client->command({"EXISTS", l2->redis_key("late")});
  ASSERT_TRUE(exists);
  EXPECT_EQ(exists->integer, 0);
}

TEST(RedisCache, CorruptBytesAreAMissCountedAndRepairedByThePut) {
  Fixture f;
  auto l2 = f.cache();
  const std::string valid = encode_envelope({.entry = f.entry("good"), .version = 1});
  std::string future = valid;
  future[3] = static_cast<char>(kEnvelopeVersion + 1);
  const std::string plants[] = {"plain text from another program", valid.substr(0, 20), future};
  int n = 0;
  for (const std::string& planted : plants) {
    ASSERT_TRUE(f.client->command({"SET", l2->redis_key("k"), planted}));
    auto got = l2->get("k");
    ASSERT_TRUE(got) << "corrupt data must read as a miss, not an error";
    EXPECT_FALSE(*got);
    EXPECT_EQ(l2->stats().corrupt, static_cast<std::uint64_t>(++n));
  }
  ASSERT_TRUE(f.client->command({"RPUSH", l2->redis_key("list"), "x"}));  // the wrong Redis type
  auto wrong_type = l2->get("list");
  ASSERT_TRUE(wrong_type) << wrong_type.error().to_string();
  EXPECT_FALSE(*wrong_type);
  EXPECT_EQ(l2->stats().corrupt, 4u);
  EXPECT_EQ(l2->stats().errors, 0u);
  ASSERT_TRUE(l2->put("k", f.entry("repaired")));
  auto got = l2->get("k");
  ASSERT_TRUE(got && *got);
  EXPECT_EQ((*got)->value, "repaired");
}

TEST(RedisCache, EnvelopeCarriesTheVersion) {
  Fixture f;
  auto l2 = f.cache();
  ASSERT_TRUE(f.client->command(
      {"SET", l2->redis_key("k"), encode_envelope({.entry = f.entry("v"), .version = 9})}));
  auto got = l2->get_envelope("k", Deadline::after(1s));
  ASSERT_TRUE(got && *got);
  EXPECT_EQ((*got)->version, 9u);
}

TEST(RedisCache, KeyLayoutKeepsValuesAndVersionsApart) {
  Fixture f;
  auto l2 = f.cache("shop:");
  EXPECT_EQ(l2->redis_key("k"), "shop:{k}:v");
  EXPECT_EQ(l2->version_key("k"), "shop:{k}:n");
  // No user key maps onto another key's version.
  EXPECT_NE(l2->redis_key("k}:n"), l2->version_key("k"));
  EXPECT_FALSE(RedisCache::create({.prefix = "bad{"}, f.client, f.clock));
  EXPECT_FALSE(RedisCache::create({.prefix = "bad}"}, f.client, f.clock));
}

TEST(RedisCache, WaitingForReplicasThatDoNotExistFailsNamingTheShortfall) {
  Fixture f;
  EXPECT_FALSE(RedisCache::create({.wait_replicas = -1}, f.client, f.clock));
  EXPECT_FALSE(RedisCache::create({.wait_replicas = 1, .wait_timeout = Duration::zero()}, f.client,
                                  f.clock));
  // A standalone server has no replica: WAIT 1 returns 0 after its timeout.
  auto waiting = RedisCache::create(
      {.prefix = "w:", .wait_replicas = 1, .wait_timeout = std::chrono::milliseconds(20)}, f.client,
      f.clock);
  ASSERT_TRUE(waiting);
  auto erased = (*waiting)->erase("k");
  ASSERT_FALSE(erased);
  EXPECT_EQ(erased.error().kind, ErrorKind::kTimeout);
  EXPECT_NE(erased.error().message.find("0 of 1 replicas"), std::string::npos)
      << erased.error().message;
  EXPECT_EQ((*waiting)->stats().replica_shortfalls, 1u);
}

TEST(RedisCache, LoadThatSnapshotBeforeAnInvalidateCannotWrite) {
  Fixture f;
  auto l2 = f.cache();
  const Deadline deadline = Deadline::after(5s);
  auto snap = l2->snapshot("k", deadline);  // the load begins: v0 read from the database
  ASSERT_TRUE(snap) << snap.error().to_string();
  ASSERT_TRUE(l2->erase("k"));  // the row changes; the app invalidates
  auto written = l2->write_loaded("k", f.entry("v0"), *snap, deadline);
  ASSERT_TRUE(written) << written.error().to_string();
  EXPECT_EQ(*written, WriteOutcome::kSuperseded);
  auto got = l2->get("k");
  ASSERT_TRUE(got);
  EXPECT_FALSE(*got) << "the late write resurrected " << (*got)->value;
  EXPECT_EQ(l2->stats().superseded, 1u);
}

TEST(RedisCache, LoadThatSnapshotBeforeASetCannotOverwriteIt) {
  Fixture f;
  auto l2 = f.cache();
  const Deadline deadline = Deadline::after(5s);
  auto snap = l2->snapshot("k", deadline);
  ASSERT_TRUE(snap);
  ASSERT_TRUE(l2->put("k", f.entry("new")));
  auto written = l2->write_loaded("k", f.entry("old"), *snap, deadline);
  ASSERT_TRUE(written);
  EXPECT_EQ(*written, WriteOutcome::kSuperseded);
  auto got = l2->get("k");
  ASSERT_TRUE(got && *got);
  EXPECT_EQ((*got)->value, "new");
}

TEST(RedisCache, UnchangedVersionWritesAndConcurrentSnapshotsAllMayWrite) {
  Fixture f;
  auto l2 = f.cache();
  const Deadline deadline = Deadline::after(5s);
  auto a = l2->snapshot("k", deadline);
  auto b = l2->snapshot("k", deadline);
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->version, b->version);  // a snapshot does not move the version
  EXPECT_EQ(l2->write_loaded("k", f.entry("a"), *a, deadline).value(), WriteOutcome::kWritten);
  EXPECT_EQ(l2->write_loaded("k", f.entry("b"), *b, deadline).value(), WriteOutcome::kWritten);
  auto got = l2->get_envelope("k", deadline);
  ASSERT_TRUE(got && *got);
  EXPECT_EQ((*got)->entry.value, "b");
  EXPECT_EQ((*got)->version, a->version);
}

TEST(RedisCache, WriteAfterTheLoadsDeadlineIsRefusedInsideTheScript) {
  Fixture f;
  auto l2 = f.cache();
  auto snap = l2->snapshot("k", Deadline::after(5s));
  ASSERT_TRUE(snap);
  VersionSnapshot expired = *snap;
  expired.write_until_ms = 1;  // Redis's clock is long past 1970
  auto written = l2->write_loaded("k", f.entry("late"), expired, Deadline::after(1s));
  ASSERT_TRUE(written);
  EXPECT_EQ(*written, WriteOutcome::kTooLate);
  EXPECT_EQ(l2->stats().too_late, 1u);
  auto got = l2->get("k");
  ASSERT_TRUE(got);
  EXPECT_FALSE(*got);
}

TEST(RedisCache, VersionKeysLiveOnlyUntilTheirLoadsDeadline) {
  Fixture f;
  auto l2 = f.cache();
  // set/invalidate of keys no load is working on create no bookkeeping.
  ASSERT_TRUE(l2->put("a", f.entry("v")));
  ASSERT_TRUE(l2->erase("b"));
  EXPECT_EQ(f.client->command({"EXISTS", l2->version_key("a"), l2->version_key("b")})->integer, 0);
  // A snapshot keeps the version key until its deadline, no longer.
  ASSERT_TRUE(l2->snapshot("c", Deadline::after(800ms)));
  auto ttl = f.client->command({"PTTL", l2->version_key("c")});
  ASSERT_TRUE(ttl);
  EXPECT_GT(ttl->integer, 0);
  EXPECT_LE(ttl->integer, 800);
  // An invalidate bumps it without extending it.
  ASSERT_TRUE(l2->erase("c"));
  auto after = f.client->command({"PTTL", l2->version_key("c")});
  EXPECT_GT(after->integer, 0);
  EXPECT_LE(after->integer, 800);
}

TEST(RedisCache, VersionsAreNotReusedAfterRedisLosesThem) {
  Fixture f;
  auto l2 = f.cache();
  auto before = l2->snapshot("k", Deadline::after(5s));
  ASSERT_TRUE(before);
  ASSERT_TRUE(f.client->command({"FLUSHALL"}));  // as a restart without persistence
  auto after = l2->snapshot("k", Deadline::after(5s));
  ASSERT_TRUE(after);
  EXPECT_NE(after->version, before->version);
  EXPECT_EQ(l2->write_loaded("k", f.entry("old"), *before, Deadline::after(1s)).value(),
            WriteOutcome::kSuperseded);
}

TEST(RedisCache, GarbageInAVersionKeyIsRepairedNotFatal) {
  Fixture f;
  auto l2 = f.cache();
  ASSERT_TRUE(f.client->command({"SET", l2->version_key("k"), "not a number"}));
  auto snap = l2->snapshot("k", Deadline::after(5s));
  ASSERT_TRUE(snap) << snap.error().to_string();
  EXPECT_EQ(l2->write_loaded("k", f.entry("v"), *snap, Deadline::after(1s)).value(),
            WriteOutcome::kWritten);
  ASSERT_TRUE(f.client->command({"DEL", l2->version_key("k")}));
  ASSERT_TRUE(f.client->command({"RPUSH", l2->version_key("k"), "x"}));  // wrong type
  ASSERT_TRUE(l2->erase("k")) << "a wrong-typed version key must not block invalidation";
  auto again = l2->snapshot("k", Deadline::after(5s));
  ASSERT_TRUE(again) << again.error().to_string();
}

TEST(RedisCache, EraseRemoves) {
  Fixture f;
  auto l2 = f.cache();
  ASSERT_TRUE(l2->put("k", f.entry("v")));
  ASSERT_TRUE(l2->erase("k"));
  ASSERT_TRUE(l2->erase("never-there"));
  auto got = l2->get("k");
  ASSERT_TRUE(got);
  EXPECT_FALSE(*got);
}

TEST(RedisCache, RedisDownIsAnErrorAndRecoveryNeedsNoRestart) {
  Fixture f;
  auto l2 = f.cache();
  f.server->stop();
  auto got = l2->get("k");
  ASSERT_FALSE(got);
  EXPECT_TRUE(got.error().kind == ErrorKind::kBackend || got.error().kind == ErrorKind::kTimeout);
  EXPECT_FALSE(l2->put("k", f.entry("v")));
  EXPECT_EQ(l2->stats().errors, 2u);
  f.server->start_again();
  const Deadline give_up = Deadline::after(10s);
  Result<void> put = make_error(ErrorKind::kInternal, "not tried");
  while (!(put = l2->put("k", f.entry("v"))) && !give_up.expired()) std::this_thread::yield();
  ASSERT_TRUE(put) << put.error().to_string();
  auto back = l2->get("k");
  ASSERT_TRUE(back && *back);
  EXPECT_EQ((*back)->value, "v");
}

TEST(RedisCache, NullArgumentsAreRefused) {
  Fixture f;
  EXPECT_FALSE(RedisCache::create({}, nullptr, f.clock));
  EXPECT_FALSE(RedisCache::create({}, f.client, nullptr));
}

}  // namespace
}  // namespace herdguard

namespace herdguard {
namespace {

// L3 tombstones (memcached_cache.h): a change always moves the tombstone
// above the previous one — also when Redis's clock is behind it (stepped
// back, or two changes in one microsecond) — and never shortens its life.
TEST(RedisCacheTombstones, AChangeAlwaysMovesTheTombstoneUpAndNeverShortensIt) {
  Fixture f;
  auto cache = f.cache();
  auto first = cache->set("k", f.entry("v1"), 60s);
  ASSERT_TRUE(first) << first.error().to_string();
  auto guard = cache->tier_guard("k", Deadline::after(2s));
  ASSERT_TRUE(guard) << guard.error().to_string();
  EXPECT_EQ(guard->min_version, *first) << "a set's own record is promotable";
  // As if Redis's clock had stepped back: the tombstone is far ahead of it.
  const std::uint64_t ahead = *first + 1'000'000'000'000ULL;
  ASSERT_TRUE(
      f.client->command({"SET", cache->tombstone_key("k"), std::to_string(ahead), "PX", "60000"}));
  ASSERT_TRUE(cache->invalidate("k", 60s));
  EXPECT_EQ(cache->tier_guard("k", Deadline::after(2s))->min_version, ahead + 1);
  auto second = cache->set("k", f.entry("v2"), 60s);
  ASSERT_TRUE(second);
  EXPECT_EQ(*second, ahead + 2) << "the value's version is above every earlier record";
  EXPECT_EQ(cache->tier_guard("k", Deadline::after(2s))->min_version, ahead + 2);
  // A process with a shorter lifetime does not shorten the tombstone.
  ASSERT_TRUE(cache->invalidate("k", 1s));
  auto left = f.client->command({"PTTL", cache->tombstone_key("k")});
  ASSERT_TRUE(left);
  EXPECT_GT(left->integer, 30'000);
  // Without a tombstone asked for, none is written.
  ASSERT_TRUE(cache->invalidate("other", Duration::zero()));
  EXPECT_EQ(cache->tier_guard("other", Deadline::after(2s))->min_version, 0u);
}

}  // namespace
}  // namespace herdguard
