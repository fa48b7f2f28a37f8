// RedisClient and the Protector against a real Redis Cluster
// (redis_cluster.h): commands reach the primary that owns their slot, MGET
// spans slots, scripts stay in one slot, MOVED and ASK are followed while a
// slot migrates, a failover is followed, and a herd across several
// protectors still makes one database load.
#include "redis_cluster.h"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <atomic>
#include <latch>
#include <set>
#include <thread>
#include <vector>

#include "herdguard/herdguard.h"
#include "redis/cluster_slot.h"
#include "shared_cluster_suite.h"
#include "simulated_processes.h"
#include "test_support.h"

namespace herdguard {
namespace {

using namespace std::chrono_literals;
using internal::cluster_slot;
using testing::eventually;
using testing::RedisCluster;
using testing::SimulatedProcesses;
using testing::SlowCountingDatabase;

std::shared_ptr<RedisClient> connect(const std::string& url) {
  auto client = RedisClient::create({.url = url, .command_timeout = 1s});
  if (!client) throw std::runtime_error(client.error().to_string());
  return std::shared_ptr<RedisClient>(std::move(*client));
}

std::string node_url(int port) { return fmt::format("redis://127.0.0.1:{}/0", port); }

// The first "<stem>:N" whose slot `port` owns.
std::string key_owned_by(const RedisCluster& cluster, int port, std::string_view stem) {
  for (int i = 0;; ++i) {
    std::string key = fmt::format("{}:{}", stem, i);
    if (cluster.port_for_slot(cluster_slot(key)) == port) return key;
  }
}

// One cluster for the tests that leave its layout alone.
class ClusterClient : public testing::SharedClusterSuite {};

TEST_F(ClusterClient, EachKeyIsStoredOnThePrimaryThatOwnsItsSlot) {
  auto client = connect(cluster_->url());
  for (int i = 0; i < 300; ++i) {
    const std::string key = fmt::format("spread:{}", i);
    ASSERT_TRUE(client->command({"SET", key, "v" + std::to_string(i)})) << key;
  }
  // Each key is where the cluster says it belongs: asked directly, its
  // owner has it (another node would answer MOVED).
  std::map<int, int> per_node;
  for (int i = 0; i < 300; ++i) {
    const std::string key = fmt::format("spread:{}", i);
    const int owner = cluster_->port_for_slot(cluster_slot(key));
    auto direct = connect(node_url(owner))->command({"GET", key});
    ASSERT_TRUE(direct) << key << ": " << direct.error().to_string();
    EXPECT_EQ(direct->str, "v" + std::to_string(i));
    ++per_node[owner];
  }
  EXPECT_EQ(per_node.size(), 3u);  // 300 keys reach every primary
  const auto stats = client->stats();
  EXPECT_EQ(stats.redirects, 0u);  // routed by the slot map, not by redirects
  EXPECT_EQ(stats.slot_map_refreshes, 1u);
  EXPECT_EQ(stats.errors, 0u);
}

TEST_F(ClusterClient, MgetAcrossSlotsAnswersInTheCallersOrder) {
  auto client = connect(cluster_->url());
  std::vector<std::string> keys;
  for (int i = 0; i < 50; ++i) {
    keys.push_back(fmt::format("mget:{}", i));
    ASSERT_TRUE(client->command({"SET", keys.back(), "m" + std::to_string(i)}));
  }
  keys.insert(keys.begin() + 7, "mget:absent");
  std::vector<std::string_view> argv{"MGET"};
  argv.insert(argv.end(), keys.begin(), keys.end());
  auto reply = client->command(argv);
  ASSERT_TRUE(reply) << reply.error().to_string();
  ASSERT_EQ(reply->elements.size(), keys.size());
  for (std::size_t i = 0; i < keys.size(); ++i) {
    if (keys[i] == "mget:absent") {
      EXPECT_TRUE(reply->elements[i].is_nil());
    } else {
      EXPECT_EQ(reply->elements[i].str, "m" + keys[i].substr(5)) << keys[i];
    }
  }
}

TEST_F(ClusterClient, AScriptRunsOnItsSlotsOwnerAndRefusesKeysOfSeveralSlots) {
  auto client = connect(cluster_->url());
  static const RedisScript kPair{
      "redis.call('SET', KEYS[1], ARGV[1]); redis.call('SET', KEYS[2], ARGV[1]); "
      "return redis.call('GET', KEYS[2])"};
  auto same = client->eval(kPair, {"{user:7}a", "{user:7}b"}, {"x"});
  ASSERT_TRUE(same) << same.error().to_string();
  EXPECT_EQ(same->str, "x");
  // Every primary learns the script the first time it runs there (NOSCRIPT → SCRIPT LOAD).
  for (int i = 0; i < 30; ++i) {
    const std::string tag = fmt::format("{{t{}}}", i);
    ASSERT_TRUE(client->eval(kPair, {tag + "a", tag + "b"}, {"y"})) << tag;
  }
  auto across = client->eval(kPair, {"a", "b"}, {"x"});
  ASSERT_FALSE(across);
  EXPECT_EQ(across.error().kind, ErrorKind::kInvalidArgument);
  EXPECT_NE(across.error().message.find("different cluster slots"), std::string::npos);
}

TEST_F(ClusterClient, UnreachableSeedsAreABackendErrorNotAHang) {
  // No node answers: every seed refuses the connection.
  auto client = connect("redis-cluster://127.0.0.1:1,127.0.0.1:2");
  auto reply = client->command({"GET", "k"});
  ASSERT_FALSE(reply);
  EXPECT_EQ(reply.error().kind, ErrorKind::kBackend);
  EXPECT_NE(reply.error().message.find("slot map"), std::string::npos) << reply.error().message;
}

TEST(ClusterMigration, MovedAndAskAreFollowedWhileASlotMigrates) {
  auto cluster = RedisCluster::start();
  auto client = connect(cluster->url());
  const auto primaries = cluster->primary_ports();
  const std::string old_key = key_owned_by(*cluster, primaries[0], "migrating");
  const auto slot = cluster_slot(old_key);
  ASSERT_TRUE(client->command({"SET", old_key, "before"}));

  // Half way: the source still has old_key; a key it does not have is
  // answered with ASK (the target may have it): ASKING + the command there.
  cluster->begin_migration(slot, primaries[1]);
  const std::string new_key = "{" + std::string(internal::cluster_hash_tag(old_key)) + "}new";
  ASSERT_EQ(cluster_slot(new_key), slot);
  auto set_new = client->command({"SET", new_key, "written-during"});
  ASSERT_TRUE(set_new) << set_new.error().to_string();
  // A script sent with ASKING to a target that lacks it (NOSCRIPT there,
  // while the map still names the source) runs all the same.
  ASSERT_TRUE(connect(node_url(primaries[1]))->command({"SCRIPT", "FLUSH"}));
  static const RedisScript kSetAndGet{
      "redis.call('SET', KEYS[1], ARGV[1]); return redis.call('GET', KEYS[1])"};
  const std::string scripted_key = "{" + std::string(internal::cluster_hash_tag(old_key)) + "}s";
  auto scripted = client->eval(kSetAndGet, {scripted_key}, {"by-script"});
  ASSERT_TRUE(scripted) << scripted.error().to_string();
  EXPECT_EQ(scripted->str, "by-script");
  auto old_value = client->command({"GET", old_key});
  ASSERT_TRUE(old_value) << old_value.error().to_string();
  EXPECT_EQ(old_value->str, "before");
  const auto asks = client->stats().redirects;
  EXPECT_GE(asks, 1u);
  // The new key lives on the target (only reachable there with ASKING).
  auto asking = connect(node_url(primaries[0]))->command({"GET", new_key});
  ASSERT_FALSE(asking);
  EXPECT_NE(asking.error().message.find("ASK"), std::string::npos) << asking.error().message;

  // Done: the slot belongs to the target, the source answers MOVED once and
  // the client's map follows.
  cluster->move_keys(slot);
  cluster->finish_migration(slot);
  auto after = client->command({"GET", old_key});
  ASSERT_TRUE(after) << after.error().to_string();
  EXPECT_EQ(after->str, "before");
  auto written = client->command({"GET", new_key});
  ASSERT_TRUE(written) << written.error().to_string();
  EXPECT_EQ(written->str, "written-during");
  const auto redirects = client->stats().redirects;
  EXPECT_GT(redirects, asks);  // the MOVED
  ASSERT_TRUE(client->command({"GET", old_key}));
  EXPECT_EQ(client->stats().redirects, redirects);  // the map knows the new owner
  EXPECT_EQ(client->stats().errors, 1u);  // the NOSCRIPT, answered by the EVAL that followed
}

TEST(ClusterFailover, AKilledPrimarysReplicaIsFoundAfterTheFailover) {
  auto cluster = RedisCluster::start({.replicas_per_primary = 1});
  auto client = connect(cluster->url());
  const int victim = cluster->primary_ports()[0];
  const std::string key = key_owned_by(*cluster, victim, "failover");
  ASSERT_TRUE(client->command({"SET", key, "v1"}));
  cluster->kill(victim);
  cluster->wait_for_failover(victim, 15s);
  // The first command still goes to the dead primary and fails; it makes
  // the client ask for the slot map again, so the next one reaches the
  // promoted replica.
  const auto refreshes = client->stats().slot_map_refreshes;
  auto first = client->command({"SET", key, "v2"});
  if (!first) {
    EXPECT_EQ(first.error().kind, ErrorKind::kBackend) << first.error().to_string();
    EXPECT_GT(client->stats().slot_map_refreshes, refreshes);
    auto second = client->command({"SET", key, "v2"});
    ASSERT_TRUE(second) << second.error().to_string();
  }
  auto value = client->command({"GET", key});
  ASSERT_TRUE(value) << value.error().to_string();
  EXPECT_EQ(value->str, "v2");
  EXPECT_NE(cluster->port_for_slot(cluster_slot(key)), victim);
}

// A holder whose primary dies before it finishes: the lock was replicated
// and survives on the promoted replica, where it would stall every waiter
// of the fleet until its lease ran out. The keeper releases it once the
// cluster answers again.
TEST(ClusterFailover, ALockWhoseFinishFailedIsReleasedOnThePromotedReplica) {
  auto cluster = RedisCluster::start({.replicas_per_primary = 1});
  auto client = connect(cluster->url());
  auto locks = RedisLockManager::create({.prefix = "lk:", .lease = 30s}, client);
  ASSERT_TRUE(locks) << locks.error().to_string();
  const int victim = cluster->primary_ports()[0];
  const std::string key = key_owned_by(*cluster, victim, "locked");
  const std::string lock_key = (*locks)->lock_key(key);
  auto hold = (*locks)->try_acquire(key, Deadline::after(60s));
  ASSERT_TRUE(hold) << hold.error().to_string();
  // The replica has the lock before its primary dies.
  const int replica = [&] {
    for (int port : cluster->ports()) {
      if (port == victim) continue;
      auto direct = connect(node_url(port));
      auto role = direct->command({"ROLE"});
      if (role && role->elements.size() > 2 && role->elements[0].str == "slave" &&
          role->elements[2].integer == victim)
        return port;
    }
    return -1;
  }();
  ASSERT_GT(replica, 0);
  ASSERT_TRUE(eventually([&] {
    auto direct = connect(node_url(replica));
    (void)direct->command({"READONLY"});
    auto held = direct->command({"GET", lock_key});
    return held && held->str == (*hold)->token();
  }));

  cluster->kill(victim);
  auto finished = (*hold)->finish(nullptr);
  EXPECT_FALSE(finished);  // the primary is gone
  cluster->wait_for_failover(victim, 15s);
  // Well inside the 30 s lease, the keeper has released the lock on the new
  // primary (it counts the release once the reply is back, just after the
  // lock is gone: both are awaited).
  ASSERT_TRUE(eventually(
      [&] {
        auto held = client->command({"GET", lock_key});
        return held && held->is_nil() && (*locks)->stats().late_releases == 1;
      },
      10s))
      << "late_releases " << (*locks)->stats().late_releases;
  hold->reset();
}

TEST_F(ClusterClient, AHerdAcrossFourProtectorsMakesOneDatabaseLoadPerKey) {
  SlowCountingDatabase db;
  auto processes = SimulatedProcesses::start(cluster_->url(), 4, "herd:", db.repository());
  auto& protectors = processes.protectors;
  // Three keys, on three different primaries.
  const auto primaries = cluster_->primary_ports();
  std::vector<std::string> keys;
  for (int port : primaries) keys.push_back(key_owned_by(*cluster_, port, "herd"));
  std::atomic<int> correct{0};
  std::latch start(static_cast<std::ptrdiff_t>(protectors.size() * keys.size() * 25));
  std::vector<std::thread> threads;
  for (auto& protector : protectors) {
    for (const auto& key : keys) {
      for (int i = 0; i < 25; ++i) {
        threads.emplace_back([&, p = protector.get(), key] {
          start.arrive_and_wait();
          auto r = p->get(key, Deadline::after(10s));
          if (r && *r == "value-of-" + key) correct.fetch_add(1);
        });
      }
    }
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(correct.load(), static_cast<int>(threads.size()));
  EXPECT_EQ(db.loads.load(), static_cast<int>(keys.size()));  // one per key, fleet-wide
  // The values sit in L2 on their owners: a fifth reader loads nothing.
  for (const auto& key : keys) {
    auto r = protectors[0]->get(key);
    ASSERT_TRUE(r);
  }
  EXPECT_EQ(db.loads.load(), static_cast<int>(keys.size()));
  auto refused = protectors[0]->get("}starts-with-a-brace");
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().kind, ErrorKind::kInvalidArgument);
}

// Slots move between primaries while four protectors read: every read is
// answered, and each key is still loaded once for the whole fleet (its
// value is found in L2 through MOVED and ASK, wherever it is).
TEST(ClusterMigration, AReshardingDuringReadsCostsNoErrorsAndNoExtraLoads) {
  auto cluster = RedisCluster::start();
  SlowCountingDatabase db;
  // Without L1: every read goes to Redis, through the migration.
  auto processes =
      SimulatedProcesses::start(cluster->url(), 4, "reshard:", db.repository(), /*l1=*/false);
  auto& fleets = processes.fleets;
  auto& protectors = processes.protectors;
  // 40 keys, all owned by the first primary; their slots move to the second.
  const auto primaries = cluster->primary_ports();
  std::vector<std::string> keys;
  std::set<int> slots;
  for (int i = 0; keys.size() < 40; ++i) {
    std::string key = fmt::format("moving:{}", i);
    const int slot = cluster_slot(fleets[0].l2->redis_key(key));
    if (cluster->port_for_slot(slot) != primaries[0]) continue;
    keys.push_back(key);
    slots.insert(slot);
  }
  for (const auto& key : keys) ASSERT_TRUE(protectors[0]->get(key)) << key;
  ASSERT_EQ(db.loads.load(), 40);

  std::atomic<bool> done{false};
  std::atomic<int> answered{0}, failed{0};
  std::vector<std::thread> readers;
  for (auto& protector : protectors) {
    readers.emplace_back([&, p = protector.get()] {
      for (std::size_t n = 0; !done.load(); ++n) {
        const auto& key = keys[n % keys.size()];
        auto r = p->get(key, Deadline::after(5s));
        (r && *r == "value-of-" + key ? answered : failed).fetch_add(1);
      }
    });
  }
  for (int slot : slots) cluster->migrate_slot(slot, primaries[1]);
  done.store(true);
  for (auto& t : readers) t.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_GT(answered.load(), 0);
  EXPECT_EQ(db.loads.load(), 40);  // nothing was loaded again
  std::uint64_t redirects = 0;
  for (const auto& fleet : fleets) redirects += fleet.client->stats().redirects;
  EXPECT_GT(redirects, 0u);
  for (const auto& key : keys) {
    EXPECT_EQ(cluster->port_for_slot(cluster_slot(fleets[0].l2->redis_key(key))), primaries[1]);
  }
}

}  // namespace
}  // namespace herdguard
