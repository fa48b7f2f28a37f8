// The memcached L3 (memcached_cache.h) against a real memcached and a real
// redis-server, both started by the test: the client alone (records, keys
// memcached cannot take, bytes of others, a dead server), then behind a
// Protector — an L2 miss answered from L3 without the database, and the
// promises of docs/consistency.md: an invalidated value never comes back from
// L3 (also when memcached kept it, also after Redis lost its data), a load
// superseded by an invalidate leaves no record, and memcached dying costs no
// caller an error. Each Protector test runs with and without the fleet lock
// (the two load paths that read L3).
#include <gtest/gtest.h>
#include <libmemcached/memcached.h>

#include <atomic>
#include <chrono>
#include <latch>
#include <thread>
#include <vector>

#include "herdguard/herdguard.h"
#include "memcached_server.h"
#include "redis_server.h"
#include "test_support.h"

namespace herdguard {
namespace {

using namespace std::chrono_literals;
using testing::eventually;
using testing::Gate;
using testing::MemcachedServer;
using testing::RedisServer;

std::shared_ptr<MemcachedCache> make_l3(const MemcachedServer& server,
                                        MemcachedCacheOptions options = {}) {
  options.url = server.url();
  auto l3 = MemcachedCache::create(std::move(options));
  EXPECT_TRUE(l3.has_value()) << l3.error().to_string();
  return std::move(*l3);
}

L3Record record_of(std::string value, std::uint64_t version, std::uint64_t epoch) {
  const TimePoint now = system_clock()->now();
  return L3Record{.envelope = {.entry = {.value = std::move(value),
                                         .fresh_until = now + 60s,
                                         .stale_until = now + 120s},
                               .version = version},
                  .epoch = epoch};
}

// Writes raw bytes under a memcached key, as another program would.
void write_raw(const std::string& url_socket_path, const std::string& key, std::string_view bytes) {
  memcached_st* mc = memcached_create(nullptr);
  ASSERT_EQ(memcached_server_add_unix_socket(mc, url_socket_path.c_str()), MEMCACHED_SUCCESS);
  EXPECT_EQ(memcached_set(mc, key.data(), key.size(), bytes.data(), bytes.size(), 60, 0),
            MEMCACHED_SUCCESS);
  memcached_free(mc);
}

TEST(MemcachedCache, StoresReadsAndErasesRecords) {
  auto server = MemcachedServer::start();
  auto l3 = make_l3(*server);
  const Deadline d = Deadline::after(2s);
  auto none = l3->get("k", d);
  ASSERT_TRUE(none) << none.error().to_string();
  EXPECT_FALSE(*none);
  ASSERT_TRUE(l3->put("k", record_of("v", 7, 99), d));
  auto got = l3->get("k", d);
  ASSERT_TRUE(got && *got);
  EXPECT_EQ((*got)->envelope.entry.value, "v");
  EXPECT_EQ((*got)->envelope.version, 7u);
  EXPECT_EQ((*got)->envelope.entry.version, 7u);
  EXPECT_EQ((*got)->epoch, 99u);
  ASSERT_TRUE(l3->erase("k", d));
  ASSERT_TRUE(l3->erase("k", d)) << "an absent key is not an error";
  EXPECT_FALSE(*l3->get("k", d));
  const MemcachedCacheStats stats = l3->stats();
  EXPECT_EQ(stats.hits, 1u);
  EXPECT_EQ(stats.misses, 2u);
  EXPECT_EQ(stats.writes, 1u);
  EXPECT_EQ(stats.errors, 0u);
}

TEST(MemcachedCache, KeysMemcachedCannotTakeAreHashedAndKeptApart) {
  auto server = MemcachedServer::start();
  auto l3 = make_l3(*server);
  const Deadline d = Deadline::after(2s);
  const std::vector<std::string> keys = {
      "plain", "with space", std::string(300, 'x'), std::string("nul\0byte", 8), "tab\there",
      "h#sh",  "é"};
  for (std::size_t i = 0; i < keys.size(); ++i) {
    ASSERT_TRUE(l3->put(keys[i], record_of("v" + std::to_string(i), i + 1, 1), d)) << i;
  }
  for (std::size_t i = 0; i < keys.size(); ++i) {
    auto got = l3->get(keys[i], d);
    ASSERT_TRUE(got && *got) << i;
    EXPECT_EQ((*got)->envelope.entry.value, "v" + std::to_string(i)) << i;
    const std::string mkey = l3->memcached_key(keys[i]);
    EXPECT_LE(mkey.size(), 250u);
    EXPECT_EQ(mkey.find(' '), std::string::npos);
  }
  EXPECT_EQ(l3->memcached_key("plain"), "herdguard:plain");
  EXPECT_NE(l3->memcached_key("with space").find('#'), std::string::npos);
  EXPECT_NE(l3->memcached_key("h#sh"), "herdguard:h#sh") << "verbatim keys never hold '#'";
}

TEST(MemcachedCache, BytesThatAreNotThisKeysRecordAreACountedMiss) {
  auto server = MemcachedServer::start();
  auto l3 = make_l3(*server);
  const std::string path = server->url().substr(std::string("memcached://").size());
  const Deadline d = Deadline::after(2s);
  write_raw(path, l3->memcached_key("junk"), "not a record");
  // Another key's record under this key's name (a hash collision looks so).
  write_raw(path, l3->memcached_key("mine"), encode_l3_record("theirs", record_of("x", 1, 1)));
  const std::string good = encode_l3_record("cut", record_of("value", 1, 1));
  write_raw(path, l3->memcached_key("cut"), std::string_view(good).substr(0, good.size() - 2));
  for (const char* key : {"junk", "mine", "cut"}) {
    auto got = l3->get(key, d);
    ASSERT_TRUE(got) << got.error().to_string();
    EXPECT_FALSE(*got) << key;
  }
  EXPECT_EQ(l3->stats().corrupt, 3u);
  ASSERT_TRUE(l3->put("junk", record_of("repaired", 1, 1), d));
  EXPECT_EQ((*l3->get("junk", d))->envelope.entry.value, "repaired");
}

TEST(MemcachedCache, RecordsDecodeOnlyForTheirOwnKey) {
  const std::string bytes = encode_l3_record("k", record_of("v", 3, 4));
  auto back = decode_l3_record("k", bytes);
  ASSERT_TRUE(back) << back.error().to_string();
  EXPECT_EQ(back->envelope.entry.value, "v");
  EXPECT_EQ(back->epoch, 4u);
  EXPECT_EQ(decode_l3_record("k2", bytes).error().kind, ErrorKind::kCorrupt);
  for (std::size_t cut = 0; cut < bytes.size(); ++cut) {
    EXPECT_FALSE(decode_l3_record("k", std::string_view(bytes).substr(0, cut))) << cut;
  }
  std::string other_format = bytes;
  other_format[4] = 2;
  EXPECT_FALSE(decode_l3_record("k", other_format));
}

TEST(MemcachedCache, ADeadServerIsAnErrorAtOnceAndTheClientComesBackWithIt) {
  auto server = MemcachedServer::start();
  auto l3 = make_l3(*server);
  ASSERT_TRUE(l3->put("k", record_of("v", 1, 1), Deadline::after(2s)));
  server->stop();
  for (int i = 0; i < 20; ++i) {
    auto got = l3->get("k", Deadline::after(2s));
    ASSERT_FALSE(got);
    EXPECT_TRUE(got.error().kind == ErrorKind::kBackend || got.error().kind == ErrorKind::kTimeout)
        << got.error().to_string();
    EXPECT_FALSE(l3->put("k", record_of("v", 1, 1), Deadline::after(2s)));
  }
  EXPECT_GE(l3->stats().errors, 40u);
  server->start_again();  // empty: the record is gone, the client works again
  EXPECT_TRUE(eventually([&] {
    auto got = l3->get("k", Deadline::after(2s));
    return got && !*got;
  }));
}

TEST(MemcachedCache, AHungServerIsLeftAloneAfterOneTimeout) {
  auto server = MemcachedServer::start();
  auto l3 = make_l3(*server, {.timeout = std::chrono::milliseconds(100)});
  ASSERT_TRUE(l3->put("k", record_of("v", 1, 1), Deadline::after(2s)));
  server->pause();  // connections stay open; nothing answers
  auto first = l3->get("k", Deadline::after(2s));
  ASSERT_FALSE(first);
  EXPECT_EQ(first.error().kind, ErrorKind::kTimeout) << first.error().to_string();
  for (int i = 0; i < 10; ++i) {
    auto skipped = l3->get("k", Deadline::after(2s));
    ASSERT_FALSE(skipped);
    EXPECT_NE(skipped.error().message.find("left alone"), std::string::npos)
        << skipped.error().to_string();
  }
  server->resume();
  EXPECT_TRUE(eventually([&] {
    auto got = l3->get("k", Deadline::after(2s));
    return got && *got && (*got)->envelope.entry.value == "v";
  }));
}

TEST(MemcachedCache, CallersBeyondThePoolWaitForAHandle) {
  auto server = MemcachedServer::start();
  auto l3 = make_l3(*server, {.pool_size = 2});
  ASSERT_TRUE(l3->put("k", record_of("v", 1, 1), Deadline::after(2s)));
  std::atomic<int> answered{0};
  std::vector<std::thread> callers;
  for (int t = 0; t < 16; ++t) {
    callers.emplace_back([&] {
      for (int i = 0; i < 50; ++i) {
        auto got = l3->get("k", Deadline::after(5s));
        if (got && *got) answered.fetch_add(1);
      }
    });
  }
  for (auto& c : callers) c.join();
  EXPECT_EQ(answered.load(), 16 * 50);
  EXPECT_EQ(l3->stats().errors, 0u);
}

TEST(MemcachedCache, OptionsAreValidated) {
  for (const char* url : {"", "redis://x:1", "memcached://", "memcached://host",
                          "memcached://host:0", "memcached://host:70000", "memcached://:11211",
                          "memcached://host:12ab", "memcached://h st:1"}) {
    EXPECT_FALSE(MemcachedCacheOptions{.url = url}.validate()) << url;
  }
  EXPECT_TRUE(MemcachedCacheOptions{.url = "memcached://127.0.0.1:11211"}.validate());
  EXPECT_TRUE(MemcachedCacheOptions{.url = "memcached:///tmp/mc.sock"}.validate());
  EXPECT_FALSE(MemcachedCacheOptions{.prefix = "has space"}.validate());
  EXPECT_FALSE(MemcachedCacheOptions{.prefix = std::string(65, 'p')}.validate());
  EXPECT_FALSE(MemcachedCacheOptions{.timeout = 0s}.validate());
  EXPECT_FALSE(MemcachedCacheOptions{.retry_interval = 10ms}.validate());
  EXPECT_FALSE(MemcachedCacheOptions{.max_lifetime = std::chrono::days(31)}.validate());
  EXPECT_FALSE(MemcachedCacheOptions{.pool_size = 0}.validate());
  EXPECT_FALSE(MemcachedCache::create({}, nullptr));
}

// ---- behind a Protector -------------------------------------------------

struct Database {
  std::atomic<int> version{0};
  std::atomic<int> loads{0};
  std::atomic<bool> hold_next{false};
  Gate gate;
  std::latch read_done{1};

  std::shared_ptr<Repository> repository() {
    return std::make_shared<CallbackRepository>(
        [this](std::string_view, Deadline) -> Result<std::optional<std::string>> {
          loads.fetch_add(1);
          const std::string value = "v" + std::to_string(version.load());
          if (hold_next.exchange(false)) {
            read_done.count_down();
            gate.wait();
          }
          return std::optional<std::string>(value);
        });
  }
};

struct Node {
  RedisFleet fleet;
  std::shared_ptr<MemcachedCache> l3;
  std::unique_ptr<Protector> protector;
};

class L3Tier : public ::testing::TestWithParam<bool> {
 protected:
  bool fleet_lock() const { return GetParam(); }

  // A process of the fleet: its own Redis connections and L3 client. No L1,
  // so every get reads L2 (and, on a miss, L3).
  Node node(Database& db) {
    auto fleet = RedisFleet::connect({.redis = {.url = redis_->url()}, .prefix = "t:"});
    EXPECT_TRUE(fleet.has_value()) << fleet.error().to_string();
    ProtectorOptions options;
    options.ttl = 60s;
    options.ttl_jitter = 0;
    options.l1_enabled = false;
    fleet->apply_to(options);
    if (!fleet_lock()) {
      options.fleet_lock = nullptr;
      options.notifier = nullptr;
    }
    auto l3 = make_l3(*memcached_);
    options.l3 = l3;
    auto protector = Protector::create(std::move(options), db.repository());
    EXPECT_TRUE(protector.has_value()) << protector.error().to_string();
    return Node{std::move(*fleet), std::move(l3), std::move(*protector)};
  }

  // L2 loses the value (evicted), as it does when Redis is short of memory.
  void evict_from_l2(const Node& n, const std::string& key) {
    auto deleted = n.fleet.client->command({"DEL", n.fleet.l2->redis_key(key)});
    ASSERT_TRUE(deleted) << deleted.error().to_string();
    ASSERT_EQ(deleted->integer, 1);
  }

  std::unique_ptr<RedisServer> redis_ = RedisServer::start();
  std::unique_ptr<MemcachedServer> memcached_ = MemcachedServer::start();
};

TEST_P(L3Tier, AnL2MissIsAnsweredFromL3WithoutTheDatabase) {
  Database db;
  Node a = node(db);
  EXPECT_EQ(*a.protector->get("k"), "v0");
  EXPECT_EQ(db.loads.load(), 1);
  auto record = a.l3->get("k", Deadline::after(2s));
  ASSERT_TRUE(record && *record) << "the load wrote no L3 record";
  EXPECT_EQ((*record)->envelope.entry.value, "v0");
  evict_from_l2(a, "k");
  Node b = node(db);  // another process, as cold as can be
  EXPECT_EQ(*b.protector->get("k"), "v0");
  EXPECT_EQ(db.loads.load(), 1) << "L3 had the value";
  EXPECT_EQ(b.protector->metrics().l3_hits, 1u);
  // Promoted: L2 has it again, and the next read does not touch L3.
  const ProtectionMetrics before = a.protector->metrics();
  EXPECT_EQ(before.l3_misses, 1u) << "the first load looked in L3";
  EXPECT_EQ(*a.protector->get("k"), "v0");
  const ProtectionMetrics after = a.protector->metrics();
  EXPECT_EQ(after.l3_hits + after.l3_misses, before.l3_hits + before.l3_misses);
  EXPECT_EQ(after.l2_hits, before.l2_hits + 1);
  EXPECT_EQ(db.loads.load(), 1);
}

TEST_P(L3Tier, AnInvalidatedValueNeverComesBackFromL3EvenWhenMemcachedKeptIt) {
  Database db;
  Node a = node(db);
  EXPECT_EQ(*a.protector->get("k"), "v0");
  auto old = a.l3->get("k", Deadline::after(2s));
  ASSERT_TRUE(old && *old);
  db.version = 1;
  ASSERT_TRUE(a.protector->invalidate("k"));
  EXPECT_FALSE(*a.l3->get("k", Deadline::after(2s))) << "invalidate deletes the L3 record";
  // The delete failed (memcached was unreachable from that process): the old
  // record is still there.
  ASSERT_TRUE(a.l3->put("k", **old, Deadline::after(2s)));
  Node b = node(db);
  EXPECT_EQ(*b.protector->get("k"), "v1");
  EXPECT_EQ(b.protector->metrics().l3_rejected, 1u);
  EXPECT_EQ(db.loads.load(), 2);
  // The refused record was replaced by the new value's.
  auto now_there = a.l3->get("k", Deadline::after(2s));
  ASSERT_TRUE(now_there && *now_there);
  EXPECT_EQ((*now_there)->envelope.entry.value, "v1");
}

TEST_P(L3Tier, ASetIsServedFromL3AfterL2LosesIt) {
  Database db;
  Node a = node(db);
  EXPECT_EQ(*a.protector->get("k"), "v0");
  ASSERT_TRUE(a.protector->set("k", "written"));
  evict_from_l2(a, "k");
  Node b = node(db);
  EXPECT_EQ(*b.protector->get("k"), "written");
  EXPECT_EQ(db.loads.load(), 1);
  EXPECT_EQ(b.protector->metrics().l3_hits, 1u);
}

TEST_P(L3Tier, ARedisThatLostItsDataRefusesEveryOlderRecord) {
  Database db;
  Node a = node(db);
  EXPECT_EQ(*a.protector->get("k"), "v0");
  ASSERT_TRUE(*a.l3->get("k", Deadline::after(2s)));
  // Redis restarts empty: an invalidate made before the restart (its
  // tombstone) may be lost with it, so no record from before is trusted.
  redis_->stop();
  redis_->start_again();
  db.version = 1;
  Node b = node(db);
  EXPECT_TRUE(eventually([&] {
    auto r = b.protector->get("k");
    return r && *r == "v1";
  }));
  EXPECT_EQ(b.protector->metrics().l3_hits, 0u);
  EXPECT_GE(b.protector->metrics().l3_rejected, 1u);
}

TEST_P(L3Tier, ALoadSupersededByAnInvalidateLeavesNoRecord) {
  Database db;
  Node a = node(db);
  Node b = node(db);
  db.hold_next = true;
  std::thread slow([&] { EXPECT_EQ(*a.protector->get("k", Deadline::after(30s)), "v1"); });
  db.read_done.wait();  // A read v0 and is still loading
  db.version = 1;
  ASSERT_TRUE(b.protector->invalidate("k"));
  db.gate.open();
  slow.join();  // A's v0 was refused; it loaded again (v1)
  auto record = a.l3->get("k", Deadline::after(2s));
  ASSERT_TRUE(record && *record);
  EXPECT_EQ((*record)->envelope.entry.value, "v1") << "the superseded v0 reached L3";
}

TEST_P(L3Tier, MemcachedKilledMidRunCostsNoCallerAnError) {
  Database db;
  Node a = node(db);
  std::atomic<bool> stop{false};
  std::atomic<int> errors{0}, answers{0};
  std::vector<std::thread> callers;
  for (int t = 0; t < 4; ++t) {
    callers.emplace_back([&, t] {
      for (int i = 0; !stop.load(); ++i) {
        const std::string key = "k" + std::to_string((t * 7 + i) % 50);
        if (i % 10 == 0) (void)a.protector->invalidate(key);
        auto r = a.protector->get(key, Deadline::after(2s));
        (r ? answers : errors).fetch_add(1);
      }
    });
  }
  EXPECT_TRUE(eventually([&] { return answers.load() > 200; }));
  memcached_->stop();
  const int at_kill = answers.load();
  EXPECT_TRUE(eventually([&] { return answers.load() > at_kill + 200; }));
  memcached_->start_again();
  const int at_restart = answers.load();
  EXPECT_TRUE(eventually([&] { return answers.load() > at_restart + 200; }));
  stop = true;
  for (auto& c : callers) c.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_GT(a.protector->metrics().l3_errors, 0u) << "memcached was down: errors were counted";
}

INSTANTIATE_TEST_SUITE_P(LoadPaths, L3Tier, ::testing::Values(true, false),
                         [](const auto& info) { return info.param ? "FleetLock" : "Snapshot"; });

TEST(L3TierOptions, AnL3NeedsTheRedisL2) {
  auto memcached = MemcachedServer::start();
  ProtectorOptions options;
  options.l3 = make_l3(*memcached);
  Database db;
  auto protector = Protector::create(std::move(options), db.repository());
  ASSERT_FALSE(protector);
  EXPECT_EQ(protector.error().kind, ErrorKind::kInvalidArgument);
}

}  // namespace
}  // namespace herdguard
