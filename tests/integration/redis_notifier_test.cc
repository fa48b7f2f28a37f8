// RedisNotifier against a real redis-server. Two notifiers with their own
// clients stand for two processes.
#include "herdguard/redis_notifier.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
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
  auto notifier = RedisNotifier::create({.channel = "test:ready"}, shared);
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
  EXPECT_FALSE(
      RedisNotifier::create({.channel = ""}, std::shared_ptr<RedisClient>(std::move(*client))));
}

}  // namespace
}  // namespace herdguard
