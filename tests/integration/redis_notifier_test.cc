// RedisNotifier against a real redis-server. Two notifiers with their own
// clients stand for two processes.
#include "herdguard/redis_notifier.h"

#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "redis_server.h"
#include "test_support.h"

namespace herdguard {
namespace {

using namespace std::chrono_literals;
using testing::eventually;
using testing::RedisServer;

struct Process {
  std::shared_ptr<RedisClient> client;
  std::unique_ptr<RedisNotifier> notifier;
};

Process process(const RedisServer& server) {
  auto client = RedisClient::create({.url = server.url(), .reconnect_backoff_min = 10ms});
  EXPECT_TRUE(client);
  std::shared_ptr<RedisClient> shared = std::move(*client);
  auto notifier = RedisNotifier::create(
      {.channel = "test:ready", .invalidation_channel = "test:invalidate"}, shared);
  EXPECT_TRUE(notifier) << notifier.error().to_string();
  EXPECT_TRUE((*notifier)->wait_subscribed(Deadline::after(10s)));
  return Process{shared, std::move(*notifier)};
}

TEST(RedisNotifier, PublishWakesWaitersOfThatKeyInAnotherProcess) {
  auto server = RedisServer::start();
  Process waiting = process(*server);
  Process loading = process(*server);
  auto waiter = waiting.notifier->watch("sku-1");
  auto bystander = waiting.notifier->watch("sku-2");
  ASSERT_TRUE(loading.notifier->publish("sku-1"));
  EXPECT_TRUE(waiter->wait(Deadline::after(10s)));
  EXPECT_FALSE(bystander->wait(Deadline::after(50ms)));
  EXPECT_EQ(loading.notifier->stats().published, 1u);
  EXPECT_GE(waiting.notifier->stats().wakeups, 1u);
}

TEST(RedisNotifier, APublishBetweenWatchAndWaitIsNotLost) {
  auto server = RedisServer::start();
  Process waiting = process(*server);
  Process loading = process(*server);
  auto waiter = waiting.notifier->watch("k");
  ASSERT_TRUE(loading.notifier->publish("k"));
  ASSERT_TRUE(eventually([&] { return waiting.notifier->stats().wakeups >= 1; }));
  // The wake-up arrived before anyone waited: the wait still sees it.
  EXPECT_TRUE(waiter->wait(Deadline::after(10s)));
  // ... and consumed it.
  EXPECT_FALSE(waiter->wait(Deadline::after(10ms)));
}

TEST(RedisNotifier, OnePublishWakesEveryWaiterOfTheKey) {
  auto server = RedisServer::start();
  Process waiting = process(*server);
  Process loading = process(*server);
  constexpr int kWaiters = 20;
  std::atomic<int> woken{0};
  std::vector<std::unique_ptr<Waiter>> waiters;
  for (int i = 0; i < kWaiters; ++i) waiters.push_back(waiting.notifier->watch("hot"));
  std::vector<std::thread> threads;
  for (auto& w : waiters) {
    threads.emplace_back([&, raw = w.get()] {
      if (raw->wait(Deadline::after(10s))) woken.fetch_add(1);
    });
  }
  ASSERT_TRUE(loading.notifier->publish("hot"));
  for (auto& t : threads) t.join();
  EXPECT_EQ(woken.load(), kWaiters);
}

TEST(RedisNotifier, BinaryKeysArriveIntact) {
  auto server = RedisServer::start();
  Process p = process(*server);
  const std::string key("a\0b\xff", 4);
  auto waiter = p.notifier->watch(key);
  auto prefix_only = p.notifier->watch("a");
  ASSERT_TRUE(p.notifier->publish(key));
  EXPECT_TRUE(waiter->wait(Deadline::after(10s)));
  EXPECT_FALSE(prefix_only->wait(Deadline::after(50ms)));
}

TEST(RedisNotifier, ResubscribesAfterARestartAndWakesWaitersThatMayHaveMissedAPublish) {
  auto server = RedisServer::start();
  Process p = process(*server);
  auto waiter = p.notifier->watch("k");
  server->stop();
  ASSERT_TRUE(eventually([&] { return !p.notifier->subscribed(); }));
  EXPECT_FALSE(p.notifier->publish("k"));
  server->start_again();
  ASSERT_TRUE(p.notifier->wait_subscribed(Deadline::after(10s)));
  EXPECT_GE(p.notifier->stats().resubscribes, 2u);
  // Woken by the resubscription: publishes during the gap were lost.
  EXPECT_TRUE(waiter->wait(Deadline::after(10s)));
  // And publishing works again.
  Process other = process(*server);
  ASSERT_TRUE(eventually([&] { return static_cast<bool>(other.notifier->publish("k")); }));
  EXPECT_TRUE(waiter->wait(Deadline::after(10s)));
}

TEST(RedisNotifier, RedisDownAtStartIsNotAnError) {
  auto server = RedisServer::start();
  server->stop();
  auto client = RedisClient::create({.url = server->url()});
  ASSERT_TRUE(client);
  auto notifier = RedisNotifier::create({}, std::shared_ptr<RedisClient>(std::move(*client)));
  ASSERT_TRUE(notifier);
  EXPECT_FALSE((*notifier)->subscribed());
  server->start_again();
  EXPECT_TRUE((*notifier)->wait_subscribed(Deadline::after(10s)));
}

TEST(RedisNotifier, BadArgumentsAreRefused) {
  EXPECT_FALSE(RedisNotifier::create({}, nullptr));
  auto client = RedisClient::create({});
  ASSERT_TRUE(client);
  std::shared_ptr<RedisClient> shared = std::move(*client);
  EXPECT_FALSE(RedisNotifier::create({.channel = ""}, shared));
  EXPECT_FALSE(RedisNotifier::create({.channel = "c", .invalidation_channel = "c"}, shared));
  auto without_backplane = RedisNotifier::create({.channel = "c"}, shared);
  ASSERT_TRUE(without_backplane);
  auto refused = (*without_backplane)->publish_invalidation(1, "k");
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().kind, ErrorKind::kInvalidArgument);
}

// ---------------------------------------------------------------------------
// The L1 backplane's channel (listen, publish_invalidation).

// What a listener heard: (origin, key) pairs and resyncs.
struct Heard {
  std::mutex mutex;
  std::vector<std::pair<std::uint64_t, std::string>> invalidations;
  std::atomic<int> resyncs{0};

  InvalidationListener listener() {
    return {.invalidated =
                [this](std::uint64_t origin, std::string_view key) {
                  std::lock_guard lock(mutex);
                  invalidations.emplace_back(origin, std::string(key));
                },
            .resync = [this] { resyncs.fetch_add(1); }};
  }
  std::size_t count() {
    std::lock_guard lock(mutex);
    return invalidations.size();
  }
  std::vector<std::pair<std::uint64_t, std::string>> all() {
    std::lock_guard lock(mutex);
    return invalidations;
  }
};

TEST(RedisNotifier, AnInvalidationReachesTheListenersOfEveryProcessWithItsOrigin) {
  auto server = RedisServer::start();
  Process a = process(*server);
  Process b = process(*server);
  Heard heard_a, heard_b;
  auto sub_a = a.notifier->listen(heard_a.listener());
  auto sub_b = b.notifier->listen(heard_b.listener());
  const std::string key("sku\0-\xff", 6);
  ASSERT_TRUE(a.notifier->publish_invalidation(42, key));
  ASSERT_TRUE(eventually([&] { return heard_a.count() == 1 && heard_b.count() == 1; }));
  using Pair = std::pair<std::uint64_t, std::string>;
  EXPECT_EQ(heard_b.all(), std::vector<Pair>{Pair(42, key)});
  EXPECT_EQ(heard_a.all(), std::vector<Pair>{Pair(42, key)}) << "its own too: the origin tells";
  EXPECT_EQ(a.notifier->stats().invalidations_published, 1u);
  EXPECT_EQ(b.notifier->stats().invalidations_received, 1u);
  // Not a ready announcement: no waiter of the key is woken.
  auto waiter = b.notifier->watch(key);
  ASSERT_TRUE(a.notifier->publish_invalidation(42, key));
  ASSERT_TRUE(eventually([&] { return heard_b.count() == 2; }));
  EXPECT_FALSE(waiter->wait(Deadline::after(20ms)));
}

TEST(RedisNotifier, BytesOthersPublishOnTheInvalidationChannelAreCountedAndIgnored) {
  auto server = RedisServer::start();
  Process p = process(*server);
  Heard heard;
  auto subscription = p.notifier->listen(heard.listener());
  const std::string junk[] = {"k", "", std::string("\0hgI123", 7)};  // the last: origin cut short
  for (const std::string& bytes : junk) {
    ASSERT_TRUE(p.client->command({"PUBLISH", "test:invalidate", bytes}));
  }
  ASSERT_TRUE(p.notifier->publish_invalidation(7, "after"));  // heard after the junk (one channel)
  ASSERT_TRUE(eventually([&] { return heard.count() == 1; }));
  EXPECT_EQ(heard.all().at(0).second, "after");
  EXPECT_EQ(p.notifier->stats().malformed, 3u);
  EXPECT_EQ(p.notifier->stats().invalidations_received, 1u);
}

TEST(RedisNotifier, AListenerIsToldAtBothEndsOfAGapInTheSubscription) {
  auto server = RedisServer::start();
  Process p = process(*server);
  Heard heard;
  auto subscription = p.notifier->listen(heard.listener());
  EXPECT_EQ(heard.resyncs.load(), 0) << "subscribed before it listened: no gap to tell of";
  Process admin = process(*server);
  ASSERT_TRUE(admin.client->command({"CLIENT", "KILL", "TYPE", "pubsub"}));
  // Lost (1), back (2); the second only once subscribed again.
  ASSERT_TRUE(eventually([&] { return heard.resyncs.load() >= 2 && p.notifier->subscribed(); }));
  EXPECT_GE(p.notifier->stats().resubscribes, 2u);
  ASSERT_TRUE(admin.notifier->wait_subscribed(Deadline::after(10s)));
  ASSERT_TRUE(admin.notifier->publish_invalidation(1, "k"));
  EXPECT_TRUE(eventually([&] { return heard.count() == 1; })) << "hears again after the gap";
}

// A subscription that stops answering (here: Redis paused, as a half-open
// connection would look) is found dead by the heartbeat and re-established:
// a gap, told to the listeners. An idle but healthy one is kept.
TEST(RedisNotifier, TheHeartbeatFindsADeadSubscriptionAndKeepsALiveOne) {
  auto server = RedisServer::start();
  auto client = RedisClient::create({.url = server->url(), .reconnect_backoff_min = 10ms});
  ASSERT_TRUE(client);
  std::shared_ptr<RedisClient> shared = std::move(*client);
  auto notifier = RedisNotifier::create(
      {.channel = "hb:ready", .invalidation_channel = "hb:invalidate", .heartbeat = 200ms}, shared);
  ASSERT_TRUE(notifier);
  ASSERT_TRUE((*notifier)->wait_subscribed(Deadline::after(10s)));
  Heard heard;
  auto subscription = (*notifier)->listen(heard.listener());
  // Idle for many heartbeats: every PING is answered, no reconnect.
  const std::uint64_t before = (*notifier)->stats().resubscribes;
  std::this_thread::sleep_for(1s);  // the idle time under test (5 heartbeats), not a wait
  EXPECT_EQ((*notifier)->stats().resubscribes, before);
  EXPECT_EQ(heard.resyncs.load(), 0);
  // Redis stops answering for 1.5 s: dead after two heartbeats, then back.
  ASSERT_TRUE(shared->command({"CLIENT", "PAUSE", "1500", "ALL"}));
  ASSERT_TRUE(eventually([&] {
    return heard.resyncs.load() >= 2 && (*notifier)->subscribed() &&
           (*notifier)->stats().resubscribes > before;
  }));
}

TEST(RedisNotifier, ADestroyedSubscriptionHearsNothingMore) {
  auto server = RedisServer::start();
  Process p = process(*server);
  Heard gone, staying;
  auto first = p.notifier->listen(gone.listener());
  auto second = p.notifier->listen(staying.listener());
  ASSERT_TRUE(p.notifier->publish_invalidation(1, "one"));
  ASSERT_TRUE(eventually([&] { return gone.count() == 1 && staying.count() == 1; }));
  first.reset();
  ASSERT_TRUE(p.notifier->publish_invalidation(1, "two"));
  ASSERT_TRUE(eventually([&] { return staying.count() == 2; }));
  EXPECT_EQ(gone.count(), 1u);
}

}  // namespace
}  // namespace herdguard
