// RedisClient and the Protector behind Redis Sentinel (redis_sentinel.h):
// commands reach the primary the Sentinels name, a failover after a kill
// and a graceful one are followed, and a herd across several protectors
// makes one database load.
#include "redis_sentinel.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <atomic>
#include <latch>
#include <thread>
#include <vector>

#include "herdguard/herdguard.h"
#include "simulated_processes.h"

namespace herdguard {
namespace {

using namespace std::chrono_literals;
using testing::RedisSentinelGroup;
using testing::SimulatedProcesses;
using testing::SlowCountingDatabase;

std::shared_ptr<RedisClient> connect(const std::string& url) {
  auto client = RedisClient::create({.url = url, .command_timeout = 1s});
  if (!client) throw std::runtime_error(client.error().to_string());
  return std::shared_ptr<RedisClient>(std::move(*client));
}

std::string value_on(const std::string& node_url, const std::string& key) {
  auto reply = connect(node_url)->command({"GET", key});
  return reply && !reply->is_nil() ? reply->str : std::string("<none>");
}

TEST(Sentinel, CommandsReachThePrimaryTheSentinelsName) {
  auto group = RedisSentinelGroup::start();
  auto client = connect(group->url());
  ASSERT_TRUE(client->command({"SET", "k", "v"}));
  EXPECT_EQ(value_on(group->primary_url(), "k"), "v");
  auto pong = client->command({"PING"});
  ASSERT_TRUE(pong) << pong.error().to_string();
  EXPECT_EQ(client->stats().errors, 0u);
  EXPECT_GE(client->stats().slot_map_refreshes, 1u);  // the Sentinels were asked

  auto unknown = connect(
      fmt::format("redis-sentinel://127.0.0.1:{}/no-such-primary", group->sentinel_ports()[0]));
  auto refused = unknown->command({"GET", "k"});
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().kind, ErrorKind::kBackend);
  EXPECT_NE(refused.error().message.find("no-such-primary"), std::string::npos)
      << refused.error().message;
}

TEST(Sentinel, AKilledPrimaryIsReplacedByThePromotedReplica) {
  auto group = RedisSentinelGroup::start();
  auto client = connect(group->url());
  ASSERT_TRUE(client->command({"SET", "k", "v1"}));
  const int old_primary = group->primary_port();
  group->kill(old_primary);
  group->wait_for_failover(old_primary, 30s);
  // The first command may still go to the dead primary; its failure makes
  // the client ask the Sentinels again.
  auto first = client->command({"SET", "k", "v2"});
  if (!first) {
    EXPECT_EQ(first.error().kind, ErrorKind::kBackend) << first.error().to_string();
    ASSERT_TRUE(client->command({"SET", "k", "v2"}));
  }
  EXPECT_NE(group->primary_port(), old_primary);
  EXPECT_EQ(value_on(group->primary_url(), "k"), "v2");
}

TEST(Sentinel, AGracefulFailoverIsFollowedWithinTheRecheck) {
  auto group = RedisSentinelGroup::start();
  auto client = connect(group->url());
  ASSERT_TRUE(client->command({"SET", "k", "before"}));
  const int old_primary = group->primary_port();
  // The old primary keeps answering (even writes) for about 10 s after the
  // switch: no error tells the client. The switch takes over a second, more
  // than the client's recheck interval, so its next command asks the
  // Sentinels again and goes to the new primary.
  group->failover();
  ASSERT_NE(group->primary_port(), old_primary);
  auto set = client->command({"SET", "k", "after"});
  ASSERT_TRUE(set) << set.error().to_string();
  EXPECT_EQ(value_on(group->primary_url(), "k"), "after");
}

TEST(Sentinel, AHerdAcrossFourProtectorsMakesOneDatabaseLoad) {
  auto group = RedisSentinelGroup::start();
  SlowCountingDatabase db;
  auto processes = SimulatedProcesses::start(group->url(), 4, "herd:", db.repository());
  auto& protectors = processes.protectors;
  std::atomic<int> correct{0};
  std::latch start(static_cast<std::ptrdiff_t>(protectors.size() * 50));
  std::vector<std::thread> threads;
  for (auto& protector : protectors) {
    for (int i = 0; i < 50; ++i) {
      threads.emplace_back([&, p = protector.get()] {
        start.arrive_and_wait();
        auto r = p->get("hot", Deadline::after(10s));
        if (r && *r == "value-of-hot") correct.fetch_add(1);
      });
    }
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(correct.load(), 200);
  EXPECT_EQ(db.loads.load(), 1);
}

// wait_replicas: a set and an invalidate return once the replica has them
// (WAIT on the same connection); with the replica paused they fail with
// kTimeout naming the shortfall, while the change stands on the primary.
TEST(Sentinel, ChangesWaitForTheReplicaWhenAsked) {
  auto group = RedisSentinelGroup::start();
  auto client = connect(group->url());
  auto cache = RedisCache::create({.prefix = "w:", .wait_replicas = 1, .wait_timeout = 200ms},
                                  client, system_clock());
  ASSERT_TRUE(cache) << cache.error().to_string();
  const TimePoint now = system_clock()->now();
  const CacheEntry entry{.value = "v1", .fresh_until = now + 60s, .stale_until = now + 60s};
  auto set = (*cache)->set("k", entry);
  ASSERT_TRUE(set) << set.error().to_string();
  int replica = -1;
  for (int port : group->data_ports()) {
    if (port != group->primary_port()) replica = port;
  }
  ASSERT_GT(replica, 0);
  // The replica already has it: WAIT returned after its acknowledgement.
  auto on_replica = connect(fmt::format("redis://127.0.0.1:{}/0", replica));
  auto copy = on_replica->command({"GET", (*cache)->redis_key("k")});
  ASSERT_TRUE(copy) << copy.error().to_string();
  EXPECT_FALSE(copy->is_nil());

  group->pause(replica);
  auto unconfirmed = (*cache)->erase("k");
  group->resume(replica);
  ASSERT_FALSE(unconfirmed);
  EXPECT_EQ(unconfirmed.error().kind, ErrorKind::kTimeout);
  EXPECT_NE(unconfirmed.error().message.find("0 of 1 replicas"), std::string::npos)
      << unconfirmed.error().message;
  EXPECT_EQ((*cache)->stats().replica_shortfalls, 1u);
  auto gone = (*cache)->get("k");  // the invalidation stands on the primary
  ASSERT_TRUE(gone) << gone.error().to_string();
  EXPECT_FALSE(gone->has_value());
}

}  // namespace
}  // namespace herdguard
