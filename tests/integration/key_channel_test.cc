// Per-key ready channels (RedisNotifierOptions::per_key, sharded pub/sub)
// against a real redis-server: a process hears only the keys it waits on,
// a channel lingers after its last waiter and then goes, at most
// max_idle_channels idle ones are kept, a restart loses the subscription
// and tells the waiters, the holder's finish announces on the key's
// channel, and a fleet herd still makes one load. The same against a
// Redis Cluster is in redis_cluster_test.cc.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <atomic>
#include <latch>
#include <string>
#include <thread>
#include <vector>

#include "herdguard/herdguard.h"
#include "redis_server.h"
#include "test_support.h"

namespace herdguard {
namespace {

using namespace std::chrono_literals;
using testing::eventually;
using testing::RedisServer;

constexpr std::string_view kPrefix = "kc:";

struct Process {
  std::shared_ptr<RedisClient> client;
  std::unique_ptr<RedisNotifier> notifier;
};

Process process(const RedisServer& server, RedisNotifierOptions options = {}) {
  auto client = RedisClient::create({.url = server.url(), .reconnect_backoff_min = 10ms});
  EXPECT_TRUE(client);
  std::shared_ptr<RedisClient> shared = std::move(*client);
  options.channel = "kc:ready";
  options.per_key = true;
  options.key_prefix = std::string(kPrefix);
  auto notifier = RedisNotifier::create(std::move(options), shared);
  EXPECT_TRUE(notifier) << notifier.error().to_string();
  EXPECT_TRUE((*notifier)->wait_subscribed(Deadline::after(10s)));
  return Process{shared, std::move(*notifier)};
}

// SPUBLISH of a format-1 announcement (the key alone) on `key`'s channel;
// returns how many subscribers Redis delivered it to.
long long announce(Process& p, const std::string& key) {
  const std::string channel = fmt::format("{}{{{}}}:r", kPrefix, key);
  auto reply = p.client->command({"SPUBLISH", channel, key});
  EXPECT_TRUE(reply) << reply.error().to_string();
  return reply ? reply->integer : -1;
}

TEST(KeyChannels, AWaiterIsArmedAndOnlyTheKeysItWaitsOnAreDelivered) {
  auto server = RedisServer::start();
  Process waiting = process(*server);
  Process other = process(*server);
  auto waiter = waiting.notifier->watch("k1");
  ASSERT_TRUE(waiter->wait_armed(Deadline::after(10s)));
  EXPECT_TRUE(waiter->armed());
  EXPECT_EQ(waiting.notifier->stats().key_channels, 1u);

  EXPECT_EQ(announce(other, "k2"), 0);  // nobody subscribed to k2: not delivered at all
  EXPECT_EQ(announce(other, "k1"), 1);
  EXPECT_TRUE(waiter->wait(Deadline::after(10s)));
  EXPECT_EQ(waiting.notifier->stats().received, 1u);
  EXPECT_EQ(other.notifier->stats().received, 0u);
  EXPECT_EQ(waiting.notifier->stats().key_subscribes, 1u);
}

TEST(KeyChannels, TheHoldersFinishAnnouncesTheValueOnTheKeysChannel) {
  auto server = RedisServer::start();
  Process a = process(*server);
  Process b = process(*server);
  auto locks_a = RedisLockManager::create(
      {.prefix = std::string(kPrefix), .announce_per_key = true}, a.client);
  auto locks_b = RedisLockManager::create(
      {.prefix = std::string(kPrefix), .announce_per_key = true}, b.client);
  ASSERT_TRUE(locks_a && locks_b);
  auto held = (*locks_a)->try_acquire("k", Deadline::after(10s));
  ASSERT_TRUE(held);
  auto waiter = b.notifier->watch("k");
  ASSERT_TRUE(waiter->wait_armed(Deadline::after(10s)));
  EXPECT_FALSE((*locks_b)->try_acquire("k", Deadline::after(10s)));  // marks the key

  const TimePoint now = system_clock()->now();
  const CacheEntry loaded{.value = "v1", .fresh_until = now + 60s, .stale_until = now + 120s};
  auto done = (*held)->finish(&loaded);
  ASSERT_TRUE(done) << done.error().to_string();
  EXPECT_TRUE(done->announced);
  ASSERT_TRUE(waiter->wait(Deadline::after(10s)));
  auto announced = waiter->announcement();
  ASSERT_NE(announced, nullptr);
  EXPECT_EQ(announced->version, (*held)->snapshot().version);
  ASSERT_TRUE(announced->envelope.has_value());
  EXPECT_EQ(b.notifier->stats().with_value, 1u);
  // Nothing went to the shared channel: `a`, subscribed to it, heard nothing.
  EXPECT_EQ(a.notifier->stats().received, 0u);
}

TEST(KeyChannels, AChannelLingersAfterItsLastWaiterThenIsLetGo) {
  auto server = RedisServer::start();
  Process waiting = process(*server, {.linger = 300ms});
  Process other = process(*server);
  {
    auto waiter = waiting.notifier->watch("k");
    ASSERT_TRUE(waiter->wait_armed(Deadline::after(10s)));
  }
  // Kept: the next waiter of the key is armed at once, without a round trip.
  {
    auto again = waiting.notifier->watch("k");
    EXPECT_TRUE(again->armed());
  }
  ASSERT_TRUE(eventually([&] { return waiting.notifier->stats().key_channels == 0; }));
  EXPECT_EQ(announce(other, "k"), 0);
  EXPECT_EQ(waiting.notifier->stats().key_subscribes, 1u);
}

TEST(KeyChannels, AtMostMaxIdleChannelsAreKept) {
  auto server = RedisServer::start();
  Process waiting = process(*server, {.linger = 1h, .max_idle_channels = 2});
  Process other = process(*server);
  for (int i = 0; i < 5; ++i) {
    auto waiter = waiting.notifier->watch(fmt::format("k{}", i));
    ASSERT_TRUE(waiter->wait_armed(Deadline::after(10s)));
  }
  ASSERT_TRUE(eventually([&] { return waiting.notifier->stats().key_channels == 2; }));
  // The two idle the shortest (the last two waited on) are the ones kept.
  int delivered = 0;
  for (int i = 0; i < 5; ++i) delivered += static_cast<int>(announce(other, fmt::format("k{}", i)));
  EXPECT_EQ(delivered, 2);
  EXPECT_EQ(announce(other, "k4"), 1);
  EXPECT_EQ(announce(other, "k3"), 1);
}

long long connections_received(Process& p) {
  auto info = p.client->command({"INFO", "stats"});
  const std::string_view needle = "total_connections_received:";
  if (!info) return -1;
  const std::size_t at = info->str.find(needle);
  return at == std::string::npos ? -1 : std::stoll(info->str.substr(at + needle.size()));
}

// Whether a client connection out of every (sharded) subscription has just
// run PING: the sharded subscriber's heartbeat on a node it keeps.
bool an_idle_connection_pinged(Process& p) {
  auto list = p.client->command({"CLIENT", "LIST"});
  if (!list) return false;
  std::size_t begin = 0;
  while (begin < list->str.size()) {
    std::size_t end = list->str.find('\n', begin);
    if (end == std::string::npos) end = list->str.size();
    const std::string_view line(list->str.data() + begin, end - begin);
    if (line.find(" sub=0 ") != std::string_view::npos &&
        line.find(" ssub=0 ") != std::string_view::npos &&
        line.find(" cmd=ping ") != std::string_view::npos) {
      return true;
    }
    begin = end + 1;
  }
  return false;
}

// Once its last channel is let go, a node's connection is out of subscribe
// mode: Redis answers the heartbeat's PING with a plain +PONG, which must
// keep the connection (the next waiter of the node uses it again).
TEST(KeyChannels, AConnectionWithNoChannelLeftSurvivesItsHeartbeats) {
  auto server = RedisServer::start();
  Process waiting = process(*server, {.heartbeat = 50ms, .linger = 0ms});
  {
    auto waiter = waiting.notifier->watch("k");
    ASSERT_TRUE(waiter->wait_armed(Deadline::after(10s)));
  }
  ASSERT_TRUE(eventually([&] { return waiting.notifier->stats().key_channels == 0; }));
  const long long connections = connections_received(waiting);
  ASSERT_TRUE(eventually([&] { return an_idle_connection_pinged(waiting); }));
  auto again = waiting.notifier->watch("k");
  ASSERT_TRUE(again->wait_armed(Deadline::after(10s)));
  // On the same connection: none was opened since, and nothing was lost.
  EXPECT_EQ(connections_received(waiting), connections);
  EXPECT_EQ(waiting.notifier->stats().key_channel_losses, 0u);
}

TEST(KeyChannels, ARestartLosesTheSubscriptionAndWakesItsWaiters) {
  auto server = RedisServer::start();
  Process waiting = process(*server, {.heartbeat = 200ms});
  auto waiter = waiting.notifier->watch("k");
  ASSERT_TRUE(waiter->wait_armed(Deadline::after(10s)));
  server->stop();
  // Woken: an announcement may go unheard from now on.
  EXPECT_TRUE(waiter->wait(Deadline::after(10s)));
  EXPECT_FALSE(waiter->armed());
  EXPECT_GE(waiting.notifier->stats().key_channel_losses, 1u);
  server->start_again();
  // A waiter of the key is armed again once Redis is back.
  std::unique_ptr<Waiter> next;
  ASSERT_TRUE(eventually([&] {
    next = waiting.notifier->watch("k");
    return next->wait_armed(Deadline::after(1s));
  }));
  Process other = process(*server);
  EXPECT_EQ(announce(other, "k"), 1);
  EXPECT_TRUE(next->wait(Deadline::after(10s)));
}

TEST(KeyChannels, BadOptionsAreRefused) {
  auto server = RedisServer::start();
  auto client = RedisClient::create({.url = server->url()});
  ASSERT_TRUE(client);
  std::shared_ptr<RedisClient> shared = std::move(*client);
  auto braced = RedisNotifier::create({.per_key = true, .key_prefix = "a{b"}, shared);
  ASSERT_FALSE(braced);
  EXPECT_EQ(braced.error().kind, ErrorKind::kInvalidArgument);
  auto negative = RedisNotifier::create({.per_key = true, .linger = -1ms}, shared);
  ASSERT_FALSE(negative);
  EXPECT_EQ(negative.error().kind, ErrorKind::kInvalidArgument);
}

// Four processes of a fleet on per-key channels, 25 callers each, one key:
// one load, and each process hears its announcement once.
TEST(KeyChannels, AFleetHerdOnPerKeyChannelsMakesOneLoad) {
  auto server = RedisServer::start();
  constexpr int kProcesses = 4;
  struct Member {
    RedisFleet fleet;
    std::unique_ptr<Protector> protector;
  };
  std::vector<Member> members;
  std::atomic<int> loads{0};
  // The load is held until every process has subscribed the key's channel
  // (each watches before its acquire) and the three others have found the
  // lock held (which marks the key as waited for, so the finish announces):
  // the announcement reaches all four.
  auto all_subscribed = [&] {
    int contended = 0;
    for (auto& m : members) {
      if (m.fleet.notifier->stats().key_channels < 1) return false;
      if (m.protector->metrics().fleet_lock_contentions > 0) ++contended;
    }
    return contended == kProcesses - 1;
  };
  auto repository = std::make_shared<CallbackRepository>(
      [&](std::string_view key, Deadline) -> Result<std::optional<std::string>> {
        loads.fetch_add(1);
        EXPECT_TRUE(eventually(all_subscribed));
        return std::optional<std::string>("value of " + std::string(key));
      });
  for (int i = 0; i < kProcesses; ++i) {
    auto fleet = RedisFleet::connect({.redis = {.url = server->url()},
                                      .prefix = "herd:",
                                      .ready_channels = RedisFleetOptions::ReadyChannels::kPerKey});
    ASSERT_TRUE(fleet) << fleet.error().to_string();
    ASSERT_TRUE(fleet->notifier->wait_subscribed(Deadline::after(10s)));
    ProtectorOptions options;
    fleet->apply_to(options);
    auto protector = Protector::create(std::move(options), repository);
    ASSERT_TRUE(protector) << protector.error().to_string();
    members.push_back(Member{std::move(*fleet), std::move(*protector)});
  }
  std::latch go(kProcesses * 25);
  std::atomic<int> wrong{0};
  std::vector<std::thread> callers;
  for (auto& m : members) {
    for (int c = 0; c < 25; ++c) {
      callers.emplace_back([&, p = m.protector.get()] {
        go.arrive_and_wait();
        auto got = p->get("hot");
        if (!got || *got != "value of hot") wrong.fetch_add(1);
      });
    }
  }
  for (auto& t : callers) t.join();
  EXPECT_EQ(loads.load(), 1);
  EXPECT_EQ(wrong.load(), 0);
  for (auto& m : members) {
    // The one announcement, delivered once to every process (the holder's
    // own channel too); nothing on the shared channel.
    EXPECT_TRUE(eventually([&] { return m.fleet.notifier->stats().received == 1; }));
  }
}

}  // namespace
}  // namespace herdguard
