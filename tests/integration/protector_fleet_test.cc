// The Protector with Redis as L2 and fleet lock, against a real redis-server.
// Several Protectors in one test stand for several processes: they share
// nothing but Redis (each has its own L1, single-flight and breaker). The
// multi-process tests (fleet_multiprocess_test.cc) run the real thing.
#include <gtest/gtest.h>

#include <atomic>
#include <functional>
#include <latch>
#include <optional>
#include <thread>
#include <vector>

#include "herdguard/herdguard.h"
#include "lock/announcement.h"
#include "redis_server.h"
#include "test_support.h"

namespace herdguard {
namespace {

using namespace std::chrono_literals;
using testing::eventually;
using testing::RedisServer;

// A database that counts loads and takes `latency` per load (standing in for
// query time, so that a herd really overlaps with the load).
struct CountingDatabase {
  std::atomic<int> loads{0};
  std::atomic<bool> down{false};
  Duration latency = 50ms;
  // When set, each load first runs it (a test holds the load until the
  // herd is where it wants it).
  std::function<void()> before_load{};

  std::shared_ptr<Repository> repository() {
    return std::make_shared<CallbackRepository>(
        [this](std::string_view key, Deadline) -> Result<std::optional<std::string>> {
          loads.fetch_add(1);
          if (before_load) before_load();
          std::this_thread::sleep_for(latency);
          if (down.load()) return make_error(ErrorKind::kBackend, "database down");
          if (key.starts_with("missing")) return std::optional<std::string>();
          return std::optional<std::string>("value-of-" + std::string(key));
        });
  }
};

struct Node {
  RedisFleet fleet;
  std::unique_ptr<Protector> protector;
};

Node make_node(const RedisServer& server, CountingDatabase& db, const std::string& prefix,
               ProtectorOptions options = {}, bool notifications = true,
               std::shared_ptr<Clock> clock = system_clock()) {
  auto fleet = RedisFleet::connect({.redis = {.url = server.url()},
                                    .prefix = prefix,
                                    .lease = 2s,
                                    .notifications = notifications},
                                   clock);
  EXPECT_TRUE(fleet.has_value()) << fleet.error().to_string();
  fleet->apply_to(options);
  options.clock = clock;
  if (fleet->notifier) {
    EXPECT_TRUE(fleet->notifier->wait_subscribed(Deadline::after(5s)));
  }
  auto protector = Protector::create(std::move(options), db.repository());
  EXPECT_TRUE(protector.has_value()) << protector.error().to_string();
  return Node{std::move(*fleet), std::move(*protector)};
}

// Releases threads_per_node threads on each node at once, all getting `key`.
// Returns the number of correct values.
int herd(std::vector<Node>& nodes, int threads_per_node, const std::string& key,
         std::atomic<int>* errors) {
  std::atomic<int> correct{0};
  std::latch start(static_cast<std::ptrdiff_t>(nodes.size()) * threads_per_node);
  std::vector<std::thread> threads;
  for (auto& node : nodes) {
    for (int i = 0; i < threads_per_node; ++i) {
      threads.emplace_back([&, p = node.protector.get()] {
        start.arrive_and_wait();
        auto r = p->get(key, Deadline::after(10s));
        if (r && *r == "value-of-" + key) {
          correct.fetch_add(1);
        } else if (errors) {
          errors->fetch_add(1);
        }
      });
    }
  }
  for (auto& t : threads) t.join();
  return correct.load();
}

TEST(ProtectorFleet, HerdAcrossFourNodesMakesOneDatabaseLoad) {
  auto server = RedisServer::start();
  CountingDatabase db;
  std::vector<Node> nodes;
  for (int i = 0; i < 4; ++i) nodes.push_back(make_node(*server, db, "herd:"));
  // The load ends only once the three other nodes found the lock taken:
  // otherwise a node scheduled after the load finished (200 threads on 2
  // cores, under a sanitizer) takes the free lock and finds the value under
  // it — one load still, but a second acquisition.
  db.before_load = [&] {
    EXPECT_TRUE(eventually([&] {
      std::uint64_t contentions = 0;
      for (auto& n : nodes) contentions += n.fleet.locks->stats().contentions;
      return contentions >= 3;
    }));
  };
  std::atomic<int> errors{0};
  EXPECT_EQ(herd(nodes, 50, "hot", &errors), 200);
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(db.loads.load(), 1);
  std::uint64_t acquisitions = 0;
  for (auto& n : nodes) acquisitions += n.protector->metrics().fleet_lock_acquisitions;
  EXPECT_EQ(acquisitions, 1u);
}

TEST(ProtectorFleet, WithoutNotificationsWaitersPollAndStillOneLoad) {
  auto server = RedisServer::start();
  CountingDatabase db;
  std::vector<Node> nodes;
  for (int i = 0; i < 3; ++i) nodes.push_back(make_node(*server, db, "poll:", {}, false));
  EXPECT_EQ(herd(nodes, 20, "hot", nullptr), 60);
  EXPECT_EQ(db.loads.load(), 1);
  std::uint64_t contentions = 0, polls = 0;
  for (auto& n : nodes) {
    contentions += n.protector->metrics().fleet_lock_contentions;
    polls += n.protector->metrics().fleet_polls;
  }
  EXPECT_GE(contentions, 1u);
  EXPECT_GE(polls, 1u) << "the losers polled (no pub/sub to wake them)";
}

TEST(ProtectorFleet, AnotherNodeReadsTheValueFromL2) {
  auto server = RedisServer::start();
  CountingDatabase db;
  db.latency = 0ms;
  Node a = make_node(*server, db, "l2:");
  Node b = make_node(*server, db, "l2:");
  ASSERT_EQ(*a.protector->get("k"), "value-of-k");
  ASSERT_EQ(*b.protector->get("k"), "value-of-k");
  EXPECT_EQ(db.loads.load(), 1);
  EXPECT_EQ(b.protector->metrics().l2_hits, 1u);
  // b filled its L1 from L2: the next read does not go to Redis.
  ASSERT_EQ(*b.protector->get("k"), "value-of-k");
  EXPECT_EQ(b.protector->metrics().l2_hits, 1u);
  EXPECT_EQ(b.protector->metrics().cache_hits, 2u);
}

// How many times Redis ran `command` since the last CONFIG RESETSTAT.
long long calls_of(RedisClient& client, const std::string& command) {
  auto info = client.command({"INFO", "commandstats"});
  EXPECT_TRUE(info) << info.error().to_string();
  const std::string needle = "cmdstat_" + command + ":calls=";
  const auto at = info ? info->str.find(needle) : std::string::npos;
  return at == std::string::npos ? 0 : std::stoll(info->str.substr(at + needle.size()));
}

// get_many reads the misses' L2 values in one MGET: another process's 100
// keys are answered with one command, no GET and no load.
TEST(ProtectorFleet, GetManyReadsL2InOneMget) {
  auto server = RedisServer::start();
  CountingDatabase db;
  db.latency = 0ms;
  Node a = make_node(*server, db, "many:");
  Node b = make_node(*server, db, "many:");
  std::vector<std::string> keys;
  for (int i = 0; i < 100; ++i) keys.push_back("k" + std::to_string(i));
  keys.push_back("missing-1");
  for (const auto& r : a.protector->get_many(keys, Deadline::after(10s))) {
    EXPECT_TRUE(r || r.error().kind == ErrorKind::kNotFound) << r.error().to_string();
  }
  ASSERT_EQ(db.loads.load(), 101);
  const auto syncs_before = b.protector->metrics().tag_syncs;
  ASSERT_TRUE(b.fleet.client->command({"CONFIG", "RESETSTAT"}));
  const auto answers = b.protector->get_many(keys, Deadline::after(10s));
  for (int i = 0; i < 100; ++i) EXPECT_EQ(*answers[i], "value-of-k" + std::to_string(i)) << i;
  EXPECT_EQ(answers[100].error().kind, ErrorKind::kNotFound);
  EXPECT_EQ(db.loads.load(), 101);
  EXPECT_EQ(calls_of(*b.fleet.client, "mget"), 1);
  // A sync of the tag versions (tag_versions.h) may fall due: one script,
  // with one GET inside. Nothing else.
  const auto syncs = static_cast<long long>(b.protector->metrics().tag_syncs - syncs_before);
  EXPECT_LE(syncs, 1);
  EXPECT_EQ(calls_of(*b.fleet.client, "get"), syncs);
  EXPECT_EQ(calls_of(*b.fleet.client, "evalsha"), syncs) << "no load, no lock";
  EXPECT_EQ(b.protector->metrics().l2_hits, 101u);
  EXPECT_EQ(b.protector->metrics().cache_misses, 0u) << "L2 answered every key";
  // A key L2 does not have goes on to its flight, which does not read L2
  // again (its one L2 miss is the MGET's).
  const std::uint64_t misses_before = b.protector->metrics().l2_misses;
  ASSERT_TRUE(b.fleet.client->command({"CONFIG", "RESETSTAT"}));
  const std::vector<std::string> cold = {"k0", "cold"};
  const auto mixed = b.protector->get_many(cold, Deadline::after(10s));
  EXPECT_EQ(*mixed[0], "value-of-k0");
  EXPECT_EQ(*mixed[1], "value-of-cold");
  EXPECT_EQ(db.loads.load(), 102);
  EXPECT_EQ(calls_of(*b.fleet.client, "mget"), 1);
  EXPECT_EQ(b.protector->metrics().l2_misses, misses_before + 1);
  EXPECT_EQ(calls_of(*b.fleet.client, "evalsha"), 2) << "the lock's acquire and finish";
}

// GetOptions::skip_l2: the call does not answer from L2; without the fleet
// lock its load reads the database (with the lock, the holder may still take
// a value another process just wrote: documented).
TEST(ProtectorFleet, SkipL2LoadsPastAnotherProcesssValue) {
  auto server = RedisServer::start();
  CountingDatabase db;
  db.latency = 0ms;
  Node a = make_node(*server, db, "skip:");
  // Another process with the L2 alone (no fleet lock).
  ProtectorOptions l2_only;
  l2_only.l2 = a.fleet.l2;
  auto plain = Protector::create(std::move(l2_only), db.repository());
  ASSERT_TRUE(plain) << plain.error().to_string();
  ASSERT_EQ(*a.protector->get("k"), "value-of-k");
  ASSERT_EQ(db.loads.load(), 1);
  EXPECT_EQ(*(*plain)->get("k", GetOptions{.skip_l2 = true}), "value-of-k");
  EXPECT_EQ(db.loads.load(), 2);
  EXPECT_EQ((*plain)->metrics().l2_hits, 0u);
  EXPECT_EQ(*(*plain)->get("k"), "value-of-k") << "L1 was filled by that load";
  EXPECT_EQ(db.loads.load(), 2);
}

TEST(ProtectorFleet, NotFoundIsSharedThroughL2) {
  auto server = RedisServer::start();
  CountingDatabase db;
  db.latency = 0ms;
  Node a = make_node(*server, db, "neg:");
  Node b = make_node(*server, db, "neg:");
  EXPECT_EQ(a.protector->get("missing-1").error().kind, ErrorKind::kNotFound);
  EXPECT_EQ(b.protector->get("missing-1").error().kind, ErrorKind::kNotFound);
  EXPECT_EQ(db.loads.load(), 1);
}

TEST(ProtectorFleet, CorruptValueIsAMissCountedAndRepaired) {
  auto server = RedisServer::start();
  CountingDatabase db;
  db.latency = 0ms;
  Node a = make_node(*server, db, "bad:");
  const std::string redis_key = a.fleet.l2->redis_key("k");
  ASSERT_TRUE(a.fleet.client->command({"SET", redis_key, "written by someone else"}));
  ASSERT_EQ(*a.protector->get("k"), "value-of-k");
  EXPECT_EQ(db.loads.load(), 1);
  EXPECT_GE(a.protector->metrics().l2_corrupt, 1u);
  auto raw = a.fleet.client->command({"GET", redis_key});
  ASSERT_TRUE(raw);
  auto decoded = decode_envelope(raw->str);
  ASSERT_TRUE(decoded) << decoded.error().to_string();
  EXPECT_EQ(decoded->entry.value, "value-of-k");
  EXPECT_GE(decoded->version, 1u);
}

TEST(ProtectorFleet, RedisDownMeansNoCallerErrorsAndL2ComesBack) {
  auto server = RedisServer::start();
  CountingDatabase db;
  db.latency = 0ms;
  ProtectorOptions options;
  options.l1_enabled = false;  // every read goes to L2, so its use is visible
  Node a = make_node(*server, db, "down:", options);
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(a.protector->get("k" + std::to_string(i)));
  const auto before = a.protector->metrics();

  server->stop();
  for (int round = 0; round < 3; ++round) {
    for (int i = 0; i < 20; ++i) {
      auto r = a.protector->get("k" + std::to_string(i));
      ASSERT_TRUE(r) << r.error().to_string();
      EXPECT_EQ(*r, "value-of-k" + std::to_string(i));
    }
  }
  const auto during = a.protector->metrics();
  EXPECT_EQ(during.errors, 0u);
  EXPECT_GT(during.redis_errors, before.redis_errors);
  EXPECT_GT(during.fleet_degraded_loads, 0u);

  server->start_again();  // empty: the next loads refill it
  const Deadline give_up = Deadline::after(20s);
  std::uint64_t hits = during.l2_hits;
  while (hits == during.l2_hits && !give_up.expired()) {
    for (int i = 0; i < 20; ++i) ASSERT_TRUE(a.protector->get("k" + std::to_string(i)));
    hits = a.protector->metrics().l2_hits;
  }
  EXPECT_GT(hits, during.l2_hits) << "L2 was not used again after Redis came back";
}

// Readers run throughout while Redis is killed, restarted, then hung
// (SIGSTOP) and resumed: no reader ever gets an error.
TEST(ProtectorFleet, RedisKilledAndHungDuringConcurrentReadsCausesNoErrors) {
  auto server = RedisServer::start();
  CountingDatabase db;
  db.latency = 1ms;
  ProtectorOptions options{.ttl = 50ms, .request_timeout = 5s};
  options.l1_enabled = false;  // every read goes through Redis
  Node a = make_node(*server, db, "chaos:", options);
  Node b = make_node(*server, db, "chaos:", options);
  std::atomic<bool> stop{false};
  std::atomic<int> errors{0};
  std::atomic<int> reads{0};
  std::vector<std::thread> readers;
  for (Node* node : {&a, &b}) {
    for (int t = 0; t < 3; ++t) {
      readers.emplace_back([&, p = node->protector.get(), t] {
        for (int i = 0; !stop.load(); ++i) {
          const std::string key = "k" + std::to_string((i + t) % 10);
          auto r = p->get(key);
          if (!r || *r != "value-of-" + key) errors.fetch_add(1);
          reads.fetch_add(1);
        }
      });
    }
  }
  auto reads_go_on = [&] {
    const int before = reads.load();
    testing::wait_until([&] { return reads.load() >= before + 200; });
  };
  reads_go_on();
  server->stop();
  reads_go_on();
  server->start_again();
  reads_go_on();
  server->pause();
  reads_go_on();
  server->resume();
  reads_go_on();
  stop = true;
  for (auto& t : readers) t.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_GT(a.protector->metrics().redis_errors + b.protector->metrics().redis_errors, 0u);
  EXPECT_EQ(a.protector->metrics().errors + b.protector->metrics().errors, 0u);
}

TEST(ProtectorFleet, FailSafeServesStaleValueFromL2WhenDatabaseIsDown) {
  auto server = RedisServer::start();
  CountingDatabase db;
  db.latency = 0ms;
  auto clock = std::make_shared<ManualClock>();
  ProtectorOptions options{.ttl = 10s, .ttl_jitter = 0, .fail_safe_max_staleness = 1h};
  Node a = make_node(*server, db, "stale:", options, true, clock);
  Node b = make_node(*server, db, "stale:", options, true, clock);
  ASSERT_EQ(*a.protector->get("k"), "value-of-k");
  clock->advance(20s);  // stale everywhere
  db.down = true;
  auto r = b.protector->get("k");  // b never saw it: the stale value comes from L2
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_EQ(*r, "value-of-k");
  EXPECT_EQ(b.protector->metrics().stale_returns, 1u);
}

TEST(ProtectorFleet, StaleWhileRevalidateRefreshesOnceAcrossNodes) {
  auto server = RedisServer::start();
  CountingDatabase db;
  db.latency = 0ms;
  auto clock = std::make_shared<ManualClock>();
  ProtectorOptions options{.ttl = 10s, .ttl_jitter = 0, .stale_while_revalidate = 1h};
  Node a = make_node(*server, db, "swr:", options, true, clock);
  Node b = make_node(*server, db, "swr:", options, true, clock);
  ASSERT_EQ(*a.protector->get("k"), "value-of-k");
  ASSERT_EQ(*b.protector->get("k"), "value-of-k");
  ASSERT_EQ(db.loads.load(), 1);
  clock->advance(20s);
  db.latency = 200ms;  // the refreshes overlap
  EXPECT_EQ(*a.protector->get_stale_while_revalidate("k"), "value-of-k");
  EXPECT_EQ(*b.protector->get_stale_while_revalidate("k"), "value-of-k");
  // Both started a background refresh; the fleet lock lets one reach the database.
  testing::wait_until([&] {
    return a.protector->metrics().loads_in_flight == 0 &&
           b.protector->metrics().loads_in_flight == 0;
  });
  EXPECT_EQ(db.loads.load(), 2);
  auto fresh = a.fleet.l2->get("k");
  ASSERT_TRUE(fresh && *fresh);
  EXPECT_TRUE((*fresh)->is_fresh(clock->now()));
}

// Early refresh across the fleet: every node reads the hot key past its
// eager threshold and starts a background refresh; the fleet lock lets one
// reach the database, the others take its value (announced, or found newer
// in L2), and after the old entry's expiry every node answers from L1.
TEST(ProtectorFleet, EarlyRefreshLoadsOncePerExpiryAcrossNodes) {
  auto server = RedisServer::start();
  CountingDatabase db;
  db.latency = 0ms;
  auto clock = std::make_shared<ManualClock>();
  ProtectorOptions options{.ttl = 10s, .ttl_jitter = 0};
  options.early_refresh = {.mode = EarlyRefreshMode::kEager, .eager_fraction = 0.8};
  std::vector<Node> nodes;
  for (int i = 0; i < 4; ++i)
    nodes.push_back(make_node(*server, db, "early:", options, true, clock));
  for (auto& n : nodes) ASSERT_EQ(*n.protector->get("k"), "value-of-k");
  ASSERT_EQ(db.loads.load(), 1);
  for (int round = 1; round <= 3; ++round) {
    // 8.5 s after the current entry was loaded: past 80% of its TTL (the
    // previous round ended 1.6 s after its refresh).
    clock->advance(round == 1 ? 8500ms : 6900ms);
    db.latency = 100ms;  // the refreshes overlap
    for (auto& n : nodes) EXPECT_EQ(*n.protector->get("k"), "value-of-k");
    testing::wait_until([&] {
      for (auto& n : nodes) {
        if (n.protector->metrics().loads_in_flight != 0) return false;
      }
      return true;
    });
    EXPECT_EQ(db.loads.load(), 1 + round) << "round " << round;
    clock->advance(1600ms);  // past the old entry's expiry
    for (auto& n : nodes) EXPECT_EQ(*n.protector->get("k"), "value-of-k");
  }
  std::uint64_t waits = 0, early = 0;
  for (auto& n : nodes) {
    waits += n.protector->metrics().cache_misses;
    early += n.protector->metrics().early_refreshes;
  }
  EXPECT_EQ(waits, 1u);  // the first load only: no caller waited after it
  EXPECT_GE(early, 3u);  // at least one node per round started one
  EXPECT_EQ(db.loads.load(), 4);
}

// A stale L1 copy under stale-while-revalidate is answered with no Redis
// I/O on the caller's thread. A load of the key is held in the database, so
// no background refresh starts either: every L2 counter must stay put.
TEST(ProtectorFleet, StaleWhileRevalidateAnswersAStaleL1CopyWithoutTouchingRedis) {
  auto server = RedisServer::start();
  CountingDatabase db;
  db.latency = 0ms;
  testing::Gate gate;
  std::atomic<bool> hold{false};
  std::atomic<int> held{0};  // loads waiting at the gate
  auto clock = std::make_shared<ManualClock>();
  ProtectorOptions options{.ttl = 10s, .ttl_jitter = 0, .stale_while_revalidate = 1h};
  auto fleet = RedisFleet::connect({.redis = {.url = server->url()}, .prefix = "swr-io:"}, clock);
  ASSERT_TRUE(fleet.has_value()) << fleet.error().to_string();
  fleet->apply_to(options);
  options.clock = clock;
  auto inner = db.repository();
  auto gated = std::make_shared<CallbackRepository>(
      [&](std::string_view key, Deadline deadline) -> Result<std::optional<std::string>> {
        if (hold.load()) {
          held.fetch_add(1);
          gate.wait();
        }
        return inner->load(key, deadline);
      });
  auto created = Protector::create(std::move(options), gated);
  ASSERT_TRUE(created.has_value()) << created.error().to_string();
  Protector& protector = **created;

  ASSERT_EQ(*protector.get("k"), "value-of-k");
  clock->advance(20s);  // stale in L1 and L2
  hold = true;
  std::thread loader([&] { EXPECT_EQ(protector.get("k").value_or(""), "value-of-k"); });
  testing::wait_until([&] { return held.load() == 1; });  // in the database: done with Redis
  const ProtectionMetrics before = protector.metrics();

  auto stale = protector.get_stale_while_revalidate("k");
  ASSERT_TRUE(stale.has_value()) << stale.error().to_string();
  EXPECT_EQ(*stale, "value-of-k");
  const ProtectionMetrics after = protector.metrics();
  EXPECT_EQ(after.l2_hits, before.l2_hits);
  EXPECT_EQ(after.l2_misses, before.l2_misses);
  EXPECT_EQ(after.redis_errors, before.redis_errors);
  EXPECT_EQ(after.stale_returns, before.stale_returns + 1);

  gate.open();
  loader.join();
}

// Two processes whose loads wait at a gate (in the database) until the test
// opens it; woken by announcements only, as no retry wake-up (60 s) comes.
struct GatedFleet {
  CountingDatabase db;
  testing::Gate gate;
  std::atomic<int> held{0};  // loads that reached the database
  std::optional<Node> a, b;  // destroyed first: their loads use the members above

  GatedFleet(const RedisServer& server, const std::string& prefix) {
    db.latency = 0ms;
    auto gated = std::make_shared<CallbackRepository>(
        [this, inner = db.repository()](std::string_view key,
                                        Deadline deadline) -> Result<std::optional<std::string>> {
          held.fetch_add(1);
          gate.wait();
          return inner->load(key, deadline);
        });
    a.emplace(node(server, prefix, gated));
    b.emplace(node(server, prefix, gated));
  }

  static Node node(const RedisServer& server, const std::string& prefix,
                   std::shared_ptr<Repository> repository) {
    ProtectorOptions options{.fleet_retry_interval = 60s};
    auto fleet = RedisFleet::connect({.redis = {.url = server.url()}, .prefix = prefix});
    EXPECT_TRUE(fleet.has_value()) << fleet.error().to_string();
    fleet->apply_to(options);
    EXPECT_TRUE(fleet->notifier->wait_subscribed(Deadline::after(5s)));
    auto protector = Protector::create(std::move(options), std::move(repository));
    EXPECT_TRUE(protector.has_value()) << protector.error().to_string();
    return Node{std::move(*fleet), std::move(*protector)};
  }
};

// Redis round trips per load: the caller's look is each process's only GET
// — the holder's re-check comes with its acquire, and the waiter takes the
// value from the announcement.
TEST(ProtectorFleet, ALoadCostsEachProcessOneL2Read) {
  auto server = RedisServer::start();
  GatedFleet f(*server, "gets:");
  Node& a = *f.a;
  Node& b = *f.b;
  std::thread leader([&] { EXPECT_EQ(a.protector->get("k").value_or(""), "value-of-k"); });
  testing::wait_until([&] { return f.held.load() == 1; });  // a holds the lock, in the database
  std::thread waiter([&] { EXPECT_EQ(b.protector->get("k").value_or(""), "value-of-k"); });
  testing::wait_until([&] { return b.protector->metrics().fleet_lock_contentions >= 1; });
  f.gate.open();
  leader.join();
  waiter.join();
  EXPECT_EQ(f.held.load(), 1);  // one database load for both
  const auto gets = [](const Node& n) {
    const RedisCacheStats s = n.fleet.l2->stats();
    return s.hits + s.misses;
  };
  EXPECT_EQ(gets(a), 1u);
  EXPECT_EQ(gets(b), 1u);
  EXPECT_EQ(a.fleet.locks->stats().announced_values, 1u);
  EXPECT_EQ(b.fleet.notifier->stats().with_value, 1u);
}

// A waiter answers an announced value only when it was published after its
// own failed acquire (its version at least the one that acquire saw): an
// older message may predate an invalidate its caller already knows of.
TEST(ProtectorFleet, AnAnnouncementOlderThanTheWaitersAcquireIsNotAnswered) {
  auto server = RedisServer::start();
  GatedFleet f(*server, "old:");
  Node& a = *f.a;
  Node& b = *f.b;
  std::thread leader([&] { EXPECT_EQ(a.protector->get("k").value_or(""), "value-of-k"); });
  testing::wait_until([&] { return f.held.load() == 1; });
  std::string got;
  std::atomic<bool> answered{false};
  std::thread waiter([&] {
    got = b.protector->get("k").value_or("");
    answered.store(true);
  });
  testing::wait_until([&] { return b.protector->metrics().fleet_lock_contentions >= 1; });
  // A message as a holder of an earlier version would have sent it.
  const TimePoint now = system_clock()->now();
  const std::string forged =
      internal::announcement_head("k", 1) + '\1' +
      encode_envelope(
          {.entry = {.value = "forged", .fresh_until = now + 60s, .stale_until = now + 60s},
           .version = 1});
  EXPECT_TRUE(b.fleet.client->command({"PUBLISH", "old:ready", forged}));
  // Woken, it looked again and went back to waiting.
  EXPECT_TRUE(testing::eventually(
      [&] { return answered.load() || b.protector->metrics().fleet_lock_contentions >= 2; }));
  EXPECT_FALSE(answered.load()) << got;
  EXPECT_EQ(b.fleet.notifier->stats().with_value, 1u);
  f.gate.open();
  leader.join();
  waiter.join();
  EXPECT_EQ(got, "value-of-k");
  EXPECT_EQ(f.held.load(), 1);
}

}  // namespace
}  // namespace herdguard
