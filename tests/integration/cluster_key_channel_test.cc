// Per-key ready channels on a real Redis Cluster (redis_cluster.h): a
// process receives the announcements of the keys it waits on — on the
// nodes owning their slots — and not the fleet's, where one shared channel
// delivers every announcement to every process; and a subscription follows
// its slot when the slot moves to another primary.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "herdguard/herdguard.h"
#include "redis/cluster_slot.h"
#include "redis_cluster.h"
#include "shared_cluster_suite.h"
#include "test_support.h"

namespace herdguard {
namespace {

using namespace std::chrono_literals;
using internal::cluster_slot;
using testing::eventually;
using testing::RedisCluster;
using Ready = RedisFleetOptions::ReadyChannels;

RedisFleet member(const RedisCluster& cluster, Ready ready) {
  auto fleet = RedisFleet::connect({.redis = {.url = cluster.url(), .command_timeout = 1s},
                                    .prefix = "kc:",
                                    .ready_channels = ready});
  if (!fleet) throw std::runtime_error(fleet.error().to_string());
  if (!fleet->notifier->wait_subscribed(Deadline::after(10s))) {
    throw std::runtime_error("the notifier did not subscribe");
  }
  return std::move(*fleet);
}

CacheEntry entry_of(std::string value) {
  const TimePoint now = system_clock()->now();
  return CacheEntry{.value = std::move(value), .fresh_until = now + 60s, .stale_until = now + 120s};
}

// Process `holder` holds every key; `a` waits on keys [0, 10), `c` on
// [10, 20) (each watches, is armed, and loses its acquire, which marks the
// key); nobody waits on [20, 30). The holder finishes all thirty. Returns
// the announcements each of holder, a and c received.
struct Received {
  std::uint64_t holder = 0, a = 0, c = 0;
  std::uint64_t announced = 0;
};

Received herd_of_thirty(const RedisCluster& cluster, Ready ready, std::string_view stem,
                        std::uint64_t each_hears) {
  RedisFleet holder = member(cluster, ready);
  RedisFleet a = member(cluster, ready);
  RedisFleet c = member(cluster, ready);
  std::vector<std::string> keys;
  for (int i = 0; i < 30; ++i) keys.push_back(fmt::format("{}:{}", stem, i));
  std::vector<std::unique_ptr<LockHold>> holds;
  for (const auto& key : keys) {
    auto hold = holder.locks->try_acquire(key, Deadline::after(10s));
    EXPECT_TRUE(hold) << key;
    if (hold) holds.push_back(std::move(*hold));
  }
  std::vector<std::unique_ptr<Waiter>> waiters;
  for (int i = 0; i < 20; ++i) {
    RedisFleet& waiting = i < 10 ? a : c;
    waiters.push_back(waiting.notifier->watch(keys[i]));
    EXPECT_TRUE(waiters.back()->wait_armed(Deadline::after(10s))) << keys[i];
    EXPECT_FALSE(waiting.locks->try_acquire(keys[i], Deadline::after(10s))) << keys[i];
  }
  const CacheEntry loaded = entry_of("v");
  for (auto& hold : holds) EXPECT_TRUE(hold->finish(&loaded));
  for (auto& waiter : waiters) EXPECT_TRUE(waiter->wait(Deadline::after(10s)));
  // Announcements of a key nobody waited on are not published at all. The
  // others reach each listening process on its own connections: wait until
  // `each_hears` have, then read the counts (a delivery Redis made is on
  // its way by then: every publish is done).
  for (RedisFleet* p : {&a, &c}) {
    EXPECT_TRUE(eventually([&] { return p->notifier->stats().received >= each_hears; }));
  }
  return Received{.holder = holder.notifier->stats().received,
                  .a = a.notifier->stats().received,
                  .c = c.notifier->stats().received,
                  .announced = holder.locks->stats().announcements};
}

class ClusterKeyChannels : public testing::SharedClusterSuite {};

TEST_F(ClusterKeyChannels, AProcessReceivesOnlyTheKeysItWaitsOn) {
  const Received got = herd_of_thirty(*cluster_, Ready::kAuto, "per-key", 10);
  EXPECT_EQ(got.announced, 20u);
  EXPECT_EQ(got.a, 10u);  // its ten keys, spread over the three primaries
  EXPECT_EQ(got.c, 10u);
  EXPECT_EQ(got.holder, 0u);
}

TEST_F(ClusterKeyChannels, OnOneSharedChannelEveryProcessReceivesEveryAnnouncement) {
  const Received got = herd_of_thirty(*cluster_, Ready::kShared, "shared", 20);
  EXPECT_EQ(got.announced, 20u);
  EXPECT_EQ(got.a, 20u);  // ten keys waited on, twenty announcements heard
  EXPECT_EQ(got.c, 20u);
}

TEST(ClusterKeyChannelMigration, ASubscriptionFollowsItsSlotToTheNewOwner) {
  auto cluster = RedisCluster::start();
  RedisFleet waiting = member(*cluster, Ready::kAuto);
  RedisFleet holding = member(*cluster, Ready::kAuto);
  const std::string key = "moving";
  const int slot = cluster_slot(key);
  const int from = cluster->port_for_slot(slot);
  int to = 0;
  for (int port : cluster->primary_ports()) {
    if (port != from) to = port;
  }
  auto waiter = waiting.notifier->watch(key);
  ASSERT_TRUE(waiter->wait_armed(Deadline::after(10s)));

  cluster->migrate_slot(slot, to);
  // Redis drops the subscription of a slot that left: the waiter is told
  // (and its channel is subscribed again on the new owner, maybe already).
  EXPECT_TRUE(waiter->wait(Deadline::after(10s)));
  EXPECT_GE(waiting.notifier->stats().key_channel_losses, 1u);
  waiter.reset();

  // A new waiter is armed on the new owner, and hears the holder there.
  std::unique_ptr<Waiter> again;
  ASSERT_TRUE(eventually([&] {
    again = waiting.notifier->watch(key);
    return again->wait_armed(Deadline::after(1s));
  }));
  auto hold = holding.locks->try_acquire(key, Deadline::after(10s));
  ASSERT_TRUE(hold) << hold.error().to_string();
  EXPECT_FALSE(waiting.locks->try_acquire(key, Deadline::after(10s)));
  const CacheEntry loaded = entry_of("after the move");
  ASSERT_TRUE((*hold)->finish(&loaded));
  ASSERT_TRUE(again->wait(Deadline::after(10s)));
  auto announced = again->announcement();
  ASSERT_NE(announced, nullptr);
  ASSERT_TRUE(announced->envelope.has_value());
  auto decoded = waiting.l2->decode_value(*announced->envelope);
  ASSERT_TRUE(decoded);
  EXPECT_EQ(decoded->entry.value, "after the move");
  EXPECT_EQ(cluster->port_for_slot(slot), to);
}

}  // namespace
}  // namespace herdguard
