// LockHold::finish and what try_acquire brings (redis_lock.h) against a real
// redis-server: the holder's write, release and announcement in one script,
// the waiter mark, the value carried by the acquire and by the announcement.
// Managers with their own clients stand for processes.
#include <gtest/gtest.h>

#include <thread>

#include "herdguard/envelope.h"
#include "herdguard/redis_cache.h"
#include "herdguard/redis_lock.h"
#include "herdguard/redis_notifier.h"
#include "redis_server.h"
#include "test_support.h"

namespace herdguard {
namespace {

using namespace std::chrono_literals;
using testing::eventually;
using testing::RedisServer;

constexpr std::string_view kChannel = "fin:ready";

struct Process {
  std::shared_ptr<RedisClient> client;
  std::shared_ptr<RedisCache> l2;
  std::unique_ptr<RedisLockManager> locks;
  std::unique_ptr<RedisNotifier> notifier;
};

Process process(const RedisServer& server, RedisLockOptions options = {}) {
  options.prefix = "fin:";
  auto client = RedisClient::create({.url = server.url()});
  EXPECT_TRUE(client);
  std::shared_ptr<RedisClient> shared = std::move(*client);
  auto l2 = RedisCache::create({.prefix = "fin:"}, shared, system_clock());
  EXPECT_TRUE(l2);
  auto locks = RedisLockManager::create(std::move(options), shared);
  EXPECT_TRUE(locks) << locks.error().to_string();
  auto notifier = RedisNotifier::create({.channel = std::string(kChannel)}, shared);
  EXPECT_TRUE(notifier);
  EXPECT_TRUE((*notifier)->wait_subscribed(Deadline::after(10s)));
  return Process{shared, std::move(*l2), std::move(*locks), std::move(*notifier)};
}

RedisLockOptions announcing() { return {.announce_channel = std::string(kChannel)}; }

CacheEntry entry_of(std::string value) {
  const TimePoint now = system_clock()->now();
  return CacheEntry{.value = std::move(value), .fresh_until = now + 60s, .stale_until = now + 120s};
}

bool exists(Process& p, const std::string& redis_key) {
  auto r = p.client->command({"EXISTS", redis_key});
  return r && r->integer == 1;
}

// Messages arrive in the order Redis published them: once a marker published
// after `finish` has arrived, whatever finish published has too.
void wait_for_marker(Process& publisher, Process& listener, std::uint64_t received_before) {
  ASSERT_TRUE(publisher.notifier->publish("marker"));
  ASSERT_TRUE(eventually([&] { return listener.notifier->stats().received > received_before; }));
}

// `a` holds "k" and `b` lost its acquire (marking the key) while watching it.
struct Contended {
  std::unique_ptr<LockHold> hold;
  std::unique_ptr<Waiter> waiter;
};

Contended contended(Process& a, Process& b) {
  auto held = a.locks->try_acquire("k", Deadline::after(10s));
  EXPECT_TRUE(held);
  auto waiter = b.notifier->watch("k");
  EXPECT_FALSE(b.locks->try_acquire("k", Deadline::after(10s)));
  return Contended{held ? std::move(*held) : nullptr, std::move(waiter)};
}

TEST(LockFinish, TheAcquireBringsWhatL2Holds) {
  auto server = RedisServer::start();
  Process a = process(*server);
  auto empty = a.locks->try_acquire("k", Deadline::after(10s));
  ASSERT_TRUE(empty);
  EXPECT_FALSE((*empty)->value_at_acquire().has_value());
  ASSERT_TRUE((*empty)->release());

  ASSERT_TRUE(a.l2->set("k", entry_of("v1")));
  auto acquired = a.locks->try_acquire("k", Deadline::after(10s));
  ASSERT_TRUE(acquired);
  std::unique_ptr<LockHold>& held = *acquired;
  ASSERT_TRUE(held->value_at_acquire().has_value());
  auto decoded = a.l2->decode_value(*held->value_at_acquire());
  ASSERT_TRUE(decoded.has_value());
  EXPECT_EQ(decoded->entry.value, "v1");
}

TEST(LockFinish, ALostAcquireMarksTheKeyAndTellsItsVersion) {
  auto server = RedisServer::start();
  Process a = process(*server, announcing());
  Process b = process(*server, announcing());
  auto acquired = a.locks->try_acquire("k", Deadline::after(10s));
  ASSERT_TRUE(acquired);
  std::unique_ptr<LockHold>& held = *acquired;
  std::uint64_t seen = 0;
  auto lost = b.locks->try_acquire("k", Deadline::after(10s), &seen);
  ASSERT_FALSE(lost);
  EXPECT_EQ(lost.error().kind, ErrorKind::kLockNotAcquired);
  EXPECT_EQ(seen, held->snapshot().version);
  EXPECT_TRUE(exists(b, b.locks->waiters_key("k")));
  auto pttl = b.client->command({"PTTL", b.locks->waiters_key("k")});
  ASSERT_TRUE(pttl);
  EXPECT_GT(pttl->integer, 0);  // the mark expires: a dead waiter leaves nothing behind
  EXPECT_LE(pttl->integer, 5000);
}

TEST(LockFinish, WithoutAnAnnounceChannelNothingIsMarked) {
  auto server = RedisServer::start();
  Process a = process(*server);
  Process b = process(*server);
  auto acquired = a.locks->try_acquire("k", Deadline::after(10s));
  ASSERT_TRUE(acquired);
  std::unique_ptr<LockHold>& held = *acquired;
  ASSERT_FALSE(b.locks->try_acquire("k", Deadline::after(10s)));
  EXPECT_FALSE(exists(b, b.locks->waiters_key("k")));
  const auto received = b.notifier->stats().received;
  auto done = held->finish(nullptr);
  ASSERT_TRUE(done) << done.error().to_string();
  EXPECT_TRUE(done->released);
  EXPECT_FALSE(done->announced);
  wait_for_marker(a, b, received);
  EXPECT_EQ(b.notifier->stats().received, received + 1);  // the marker alone
}

TEST(LockFinish, WritesReleasesAndAnnouncesTheValueToAWaiter) {
  auto server = RedisServer::start();
  Process a = process(*server, announcing());
  Process b = process(*server, announcing());
  auto [held, waiter] = contended(a, b);
  ASSERT_NE(held, nullptr);

  const CacheEntry loaded = entry_of("v1");
  auto done = held->finish(&loaded);
  ASSERT_TRUE(done) << done.error().to_string();
  EXPECT_EQ(done->write, WriteOutcome::kWritten);
  EXPECT_TRUE(done->released);
  EXPECT_TRUE(done->announced);
  EXPECT_FALSE(exists(a, a.locks->lock_key("k")));
  EXPECT_FALSE(exists(a, a.locks->waiters_key("k")));  // taken by the announcement

  ASSERT_TRUE(waiter->wait(Deadline::after(10s)));
  auto announced = waiter->announcement();
  ASSERT_NE(announced, nullptr);
  EXPECT_EQ(announced->version, held->snapshot().version);
  ASSERT_TRUE(announced->envelope.has_value());
  auto decoded = b.l2->decode_value(*announced->envelope);
  ASSERT_TRUE(decoded.has_value());
  EXPECT_EQ(decoded->entry.value, "v1");
  EXPECT_EQ(decoded->version, held->snapshot().version);
  // The same bytes are in L2.
  auto stored = b.l2->get_envelope("k", Deadline::after(10s));
  ASSERT_TRUE(stored && *stored);
  EXPECT_EQ((*stored)->entry.value, "v1");
  EXPECT_EQ(a.locks->stats().announced_values, 1u);
  EXPECT_EQ(b.notifier->stats().with_value, 1u);
  // Finished is finished.
  EXPECT_EQ(held->finish(&loaded).error().kind, ErrorKind::kInvalidArgument);
  EXPECT_TRUE(held->release());
}

TEST(LockFinish, NobodyWaitedNothingIsPublished) {
  auto server = RedisServer::start();
  Process a = process(*server, announcing());
  Process b = process(*server, announcing());
  const auto received = b.notifier->stats().received;
  auto acquired = a.locks->try_acquire("k", Deadline::after(10s));
  ASSERT_TRUE(acquired);
  std::unique_ptr<LockHold>& held = *acquired;
  const CacheEntry loaded = entry_of("v1");
  auto done = held->finish(&loaded);
  ASSERT_TRUE(done);
  EXPECT_EQ(done->write, WriteOutcome::kWritten);
  EXPECT_FALSE(done->announced);
  wait_for_marker(a, b, received);
  EXPECT_EQ(b.notifier->stats().received, received + 1);
}

TEST(LockFinish, ASupersededValueIsNeitherStoredNorAnnounced) {
  auto server = RedisServer::start();
  Process a = process(*server, announcing());
  Process b = process(*server, announcing());
  auto [held, waiter] = contended(a, b);
  ASSERT_NE(held, nullptr);
  ASSERT_TRUE(b.l2->erase("k"));  // an invalidate while a loads

  const CacheEntry loaded = entry_of("old");
  auto done = held->finish(&loaded);
  ASSERT_TRUE(done);
  EXPECT_EQ(done->write, WriteOutcome::kSuperseded);
  EXPECT_TRUE(done->released);
  EXPECT_TRUE(done->announced);  // the waiter must still learn the lock is free
  ASSERT_TRUE(waiter->wait(Deadline::after(10s)));
  auto announced = waiter->announcement();
  ASSERT_NE(announced, nullptr);
  EXPECT_FALSE(announced->envelope.has_value());
  auto stored = b.l2->get_envelope("k", Deadline::after(10s));
  ASSERT_TRUE(stored);
  EXPECT_FALSE(stored->has_value());
}

TEST(LockFinish, AFailedLoadReleasesAndAnnouncesWithoutAValue) {
  auto server = RedisServer::start();
  Process a = process(*server, announcing());
  Process b = process(*server, announcing());
  auto [held, waiter] = contended(a, b);
  ASSERT_NE(held, nullptr);
  auto done = held->finish(nullptr);
  ASSERT_TRUE(done);
  EXPECT_FALSE(done->write.has_value());
  EXPECT_TRUE(done->released);
  EXPECT_TRUE(done->announced);
  ASSERT_TRUE(waiter->wait(Deadline::after(10s)));
  ASSERT_NE(waiter->announcement(), nullptr);
  EXPECT_FALSE(waiter->announcement()->envelope.has_value());
  EXPECT_TRUE(b.locks->try_acquire("k", Deadline::after(10s)));  // free at once
}

TEST(LockFinish, AValueOverTheCapIsStoredButAnnouncedWithoutIt) {
  auto server = RedisServer::start();
  RedisLockOptions small = announcing();
  small.announce_value_max_bytes = 64;
  Process a = process(*server, small);
  Process b = process(*server, announcing());
  auto [held, waiter] = contended(a, b);
  ASSERT_NE(held, nullptr);
  const CacheEntry loaded = entry_of(std::string(100, 'x'));
  auto done = held->finish(&loaded);
  ASSERT_TRUE(done);
  EXPECT_EQ(done->write, WriteOutcome::kWritten);
  EXPECT_TRUE(done->announced);
  ASSERT_TRUE(waiter->wait(Deadline::after(10s)));
  ASSERT_NE(waiter->announcement(), nullptr);
  EXPECT_FALSE(waiter->announcement()->envelope.has_value());
  auto stored = b.l2->get_envelope("k", Deadline::after(10s));
  ASSERT_TRUE(stored && *stored);
  EXPECT_EQ((*stored)->entry.value, std::string(100, 'x'));
}

TEST(LockFinish, PastTheHardDeadlineTheWriteIsTooLateButTheLockIsReleased) {
  auto server = RedisServer::start();
  Process a = process(*server, announcing());
  const Deadline hard = Deadline::after(100ms);
  auto acquired = a.locks->try_acquire("k", hard);
  ASSERT_TRUE(acquired);
  std::unique_ptr<LockHold>& held = *acquired;
  ASSERT_TRUE(eventually([&] { return hard.expired(); }));
  const CacheEntry loaded = entry_of("late");
  auto done = held->finish(&loaded);
  ASSERT_TRUE(done) << done.error().to_string();
  EXPECT_EQ(done->write, WriteOutcome::kTooLate);
  auto stored = a.l2->get_envelope("k", Deadline::after(10s));
  ASSERT_TRUE(stored);
  EXPECT_FALSE(stored->has_value());
  EXPECT_FALSE(exists(a, a.locks->lock_key("k")));
}

TEST(LockFinish, AHolderThatLostTheLockDoesNotReleaseTheNextOne) {
  auto server = RedisServer::start();
  RedisLockOptions short_lease = announcing();
  short_lease.lease = 50ms;
  short_lease.auto_extend = false;
  Process a = process(*server, short_lease);
  Process b = process(*server, announcing());
  auto old_holder = a.locks->try_acquire("k", Deadline::after(10s));
  ASSERT_TRUE(old_holder);
  std::unique_ptr<LockHold> next;
  ASSERT_TRUE(eventually([&] {
    auto r = b.locks->try_acquire("k", Deadline::after(10s));
    if (r) next = std::move(*r);
    return next != nullptr;
  }));
  const CacheEntry loaded = entry_of("old");
  auto done = (*old_holder)->finish(&loaded);
  ASSERT_TRUE(done);
  EXPECT_EQ(done->write, WriteOutcome::kSuperseded);  // b's acquire moved the version
  EXPECT_FALSE(done->released);
  EXPECT_TRUE(exists(b, b.locks->lock_key("k")));
}

}  // namespace
}  // namespace herdguard
