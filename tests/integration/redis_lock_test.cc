// RedisLockManager against a real redis-server. Two managers with their own
// clients stand for two processes.
#include "herdguard/redis_lock.h"

#include <gtest/gtest.h>

#include <thread>

#include "herdguard/redis_cache.h"
#include "redis_server.h"
#include "test_support.h"

namespace herdguard {
namespace {

using namespace std::chrono_literals;
using testing::eventually;
using testing::RedisServer;

struct Process {
  std::shared_ptr<RedisClient> client;
  std::unique_ptr<RedisLockManager> locks;
};

Process process(const RedisServer& server, RedisLockOptions options = {}) {
  auto client = RedisClient::create({.url = server.url()});
  EXPECT_TRUE(client);
  std::shared_ptr<RedisClient> shared = std::move(*client);
  auto locks = RedisLockManager::create(std::move(options), shared);
  EXPECT_TRUE(locks) << locks.error().to_string();
  return Process{shared, std::move(*locks)};
}

// Loops until `condition` holds or `within` passes; returns whether it held.

// Tries `key` until it is free (the holder released it or its lease ran
// out); nullptr if it stayed taken for 10 s.
std::unique_ptr<LockHold> acquire_when_free(Process& p, std::string_view key) {
  std::unique_ptr<LockHold> hold;
  (void)eventually([&] {
    auto r = p.locks->try_acquire(key, Deadline::after(10s));
    if (r) hold = std::move(*r);
    return hold != nullptr;
  });
  return hold;
}

TEST(RedisLock, IsExclusiveAcrossProcesses) {
  auto server = RedisServer::start();
  Process a = process(*server);
  Process b = process(*server);
  auto held = a.locks->try_acquire("k", Deadline::after(10s));
  ASSERT_TRUE(held) << held.error().to_string();
  auto again = a.locks->try_acquire("k", Deadline::after(10s));
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().kind, ErrorKind::kLockNotAcquired);
  auto other = b.locks->try_acquire("k", Deadline::after(10s));
  ASSERT_FALSE(other);
  EXPECT_EQ(other.error().kind, ErrorKind::kLockNotAcquired);
  EXPECT_EQ(a.locks->stats().contentions, 1u);
  EXPECT_EQ(b.locks->stats().contentions, 1u);
  EXPECT_TRUE(b.locks->try_acquire("another-key", Deadline::after(10s)));
  ASSERT_EQ(*(*held)->release(), true);
  EXPECT_TRUE(b.locks->try_acquire("k", Deadline::after(10s)));
}

TEST(RedisLock, TokensAreRandomHex) {
  auto first = random_token();
  auto second = random_token();
  ASSERT_TRUE(first && second);
  EXPECT_NE(*first, *second);
  ASSERT_EQ(first->size(), 32u);
  EXPECT_EQ(first->find_first_not_of("0123456789abcdef"), std::string::npos);
}

TEST(RedisLock, OnlyTheOwnerReleasesOrExtends) {
  auto server = RedisServer::start();
  Process a = process(*server, {.auto_extend = false});
  auto held = a.locks->try_acquire("k", Deadline::after(10s));
  ASSERT_TRUE(held);
  // Another owner's token in the lock key, as after our lease ran out and
  // someone else took it.
  const std::string lock_key = a.locks->lock_key("k");
  ASSERT_TRUE(a.client->command({"SET", lock_key, "someone-else"}));
  auto extended = (*held)->extend(5s);
  ASSERT_TRUE(extended);
  EXPECT_FALSE(*extended);
  EXPECT_TRUE((*held)->lost());
  auto released = (*held)->release();
  ASSERT_TRUE(released);
  EXPECT_FALSE(*released);
  auto still = a.client->command({"GET", lock_key});
  ASSERT_TRUE(still);
  EXPECT_EQ(still->str, "someone-else");
}

TEST(RedisLock, ALeaseExpires) {
  auto server = RedisServer::start();
  Process a = process(*server, {.lease = 50ms, .auto_extend = false});
  Process b = process(*server);
  auto held = a.locks->try_acquire("k", Deadline::after(10s));
  ASSERT_TRUE(held);
  std::unique_ptr<LockHold> taken = acquire_when_free(b, "k");
  ASSERT_NE(taken, nullptr);
  EXPECT_GT(taken->snapshot().version, (*held)->snapshot().version);
}

TEST(RedisLock, VersionsOnlyGrowAndTheWriteDeadlineIsTheHardDeadline) {
  auto server = RedisServer::start();
  Process a = process(*server);
  std::uint64_t last = 0;
  for (int i = 0; i < 5; ++i) {
    auto held = a.locks->try_acquire("k", Deadline::after(10s));
    ASSERT_TRUE(held);
    EXPECT_GT((*held)->snapshot().version, last);
    last = (*held)->snapshot().version;
    const auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
    EXPECT_LE((*held)->snapshot().write_until_ms, now_ms + 10'000);
    EXPECT_GT((*held)->snapshot().write_until_ms, now_ms + 8'000);
  }
  // The version key lives until the hard deadline, the lock until its lease.
  auto pttl = a.client->command({"PTTL", a.locks->version_key("k")});
  ASSERT_TRUE(pttl);
  EXPECT_GT(pttl->integer, 0);
  EXPECT_LE(pttl->integer, 10'000);
}

TEST(RedisLock, LateWriteFromAnExpiredHolderIsFencedOff) {
  auto server = RedisServer::start();
  Process a = process(*server, {.lease = 50ms, .auto_extend = false});
  Process b = process(*server);
  auto l2 = RedisCache::create({}, a.client, system_clock());
  ASSERT_TRUE(l2);
  const TimePoint now = system_clock()->now();
  auto entry = [&](std::string value) {
    return CacheEntry{.value = std::move(value), .fresh_until = now + 1h, .stale_until = now + 2h};
  };
  auto old_holder = a.locks->try_acquire("k", Deadline::after(10s));
  ASSERT_TRUE(old_holder);
  std::unique_ptr<LockHold> new_holder = acquire_when_free(b, "k");
  ASSERT_NE(new_holder, nullptr);
  auto fresh = (*l2)->write_loaded("k", entry("new"), new_holder->snapshot(), Deadline::after(1s));
  ASSERT_TRUE(fresh);
  EXPECT_EQ(*fresh, WriteOutcome::kWritten);
  auto late =
      (*l2)->write_loaded("k", entry("old"), (*old_holder)->snapshot(), Deadline::after(1s));
  ASSERT_TRUE(late);
  EXPECT_EQ(*late, WriteOutcome::kSuperseded);
  auto stored = (*l2)->get("k");
  ASSERT_TRUE(stored && *stored);
  EXPECT_EQ((*stored)->value, "new");
  auto pttl = a.client->command({"PTTL", (*l2)->redis_key("k")});
  ASSERT_TRUE(pttl);
  EXPECT_GT(pttl->integer, 0);
}

TEST(RedisLock, LockAndVersionLiveInTheirOwnNamespaces) {
  auto server = RedisServer::start();
  Process a = process(*server, {.prefix = "p:"});
  EXPECT_EQ(a.locks->lock_key("k"), "p:{k}:l");
  EXPECT_EQ(a.locks->version_key("k"), "p:{k}:n");
  // Locking the user key "k}:l" or "lock:k" never touches k's lock.
  auto other = a.locks->try_acquire("lock:k", Deadline::after(10s));
  ASSERT_TRUE(other);
  auto mine = a.locks->try_acquire("k", Deadline::after(10s));
  EXPECT_TRUE(mine) << "user key lock:k took k's lock";
}

TEST(RedisLock, AnExpiredDeadlineIsATimeoutNotARedisError) {
  auto server = RedisServer::start();
  Process a = process(*server);
  auto r = a.locks->try_acquire("k", Deadline::after(Duration::zero()));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, ErrorKind::kTimeout);
  EXPECT_EQ(a.locks->stats().errors, 0u);
}

TEST(RedisLock, HeldLockIsExtendedAutomatically) {
  auto server = RedisServer::start();
  // Extended every 100 ms: the lease only lapses if the keeper stalls 200 ms.
  Process a = process(*server, {.lease = 300ms});
  Process b = process(*server);
  auto held = a.locks->try_acquire("k", Deadline::after(1h));
  ASSERT_TRUE(held);
  // More than one lease's worth of extensions while held.
  ASSERT_TRUE(eventually([&] { return a.locks->stats().extensions >= 4; }));
  auto other = b.locks->try_acquire("k", Deadline::after(10s));
  ASSERT_FALSE(other);
  EXPECT_EQ(other.error().kind, ErrorKind::kLockNotAcquired);
  EXPECT_FALSE((*held)->lost());
}

TEST(RedisLock, ExtensionStopsAtTheHardDeadline) {
  auto server = RedisServer::start();
  Process a = process(*server, {.lease = 60ms});
  Process b = process(*server);
  // A hung loader: the hold lives on, but its load deadline is 150 ms away.
  auto held = a.locks->try_acquire("k", Deadline::after(150ms));
  ASSERT_TRUE(held);
  EXPECT_NE(acquire_when_free(b, "k"), nullptr)
      << "the hung holder kept the lock past its hard deadline";
}

TEST(RedisLock, LostLockIsNoticedByTheExtension) {
  auto server = RedisServer::start();
  Process a = process(*server, {.lease = 60ms});
  auto held = a.locks->try_acquire("k", Deadline::after(1h));
  ASSERT_TRUE(held);
  ASSERT_TRUE(a.client->command({"DEL", a.locks->lock_key("k")}));  // as after a Redis restart
  EXPECT_TRUE(eventually([&] { return (*held)->lost(); }));
  EXPECT_GE(a.locks->stats().extension_failures, 1u);
}

TEST(RedisLock, RedisDownIsABackendErrorNotContention) {
  auto server = RedisServer::start();
  Process a = process(*server);
  server->stop();
  auto r = a.locks->try_acquire("k", Deadline::after(10s));
  ASSERT_FALSE(r);
  EXPECT_TRUE(r.error().kind == ErrorKind::kBackend || r.error().kind == ErrorKind::kTimeout)
      << r.error().to_string();
  EXPECT_EQ(a.locks->stats().errors, 1u);
  EXPECT_EQ(a.locks->stats().contentions, 0u);
}

TEST(RedisLock, OptionsAreValidated) {
  auto server = RedisServer::start();
  auto client = RedisClient::create({.url = server->url()});
  ASSERT_TRUE(client);
  std::shared_ptr<RedisClient> shared = std::move(*client);
  EXPECT_FALSE(RedisLockManager::create({.lease = 1ms}, shared));
  EXPECT_FALSE(RedisLockManager::create({.lease = Duration::max()}, shared));
  EXPECT_FALSE(RedisLockManager::create({.prefix = "a{b"}, shared));
  EXPECT_FALSE(RedisLockManager::create({}, nullptr));
}

}  // namespace
}  // namespace herdguard
