// Tags and clear() across a fleet, against a real redis-server: several
// Protectors stand for several processes (each its own RedisFleet, L1,
// single-flight and subscriber; they share nothing but Redis). The race
// test (race_test.cc, "tags") checks the contract under faults; these check
// each promise on its own.
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>

#include "herdguard/herdguard.h"
#include "redis_server.h"

namespace herdguard {
namespace {

using namespace std::chrono_literals;
using testing::RedisServer;

// Rows with a version each: a load returns "<key>#<version>", so a reload
// after an update shows. "user:*" rows carry the tag "users", "post:*"
// "posts". One load can be held on a latch (hold()).
struct Rows {
  std::mutex mutex;
  std::condition_variable changed;
  std::map<std::string, int> versions;  // guarded by mutex
  std::atomic<int> loads{0};
  std::string held;  // guarded by mutex: the next load of this key waits
  bool holding = false, began = false;

  void update(const std::string& key) {
    std::lock_guard lock(mutex);
    ++versions[key];
  }
  std::string current(const std::string& key) {
    std::lock_guard lock(mutex);
    return key + "#" + std::to_string(versions[key]);
  }
  void hold(std::string key) {
    std::lock_guard lock(mutex);
    held = std::move(key);
    holding = true;
    began = false;
  }
  void wait_began() {
    std::unique_lock lock(mutex);
    changed.wait(lock, [this] { return began; });
  }
  void release() {
    std::lock_guard lock(mutex);
    holding = false;
    changed.notify_all();
  }

  std::shared_ptr<Repository> repository() {
    return CallbackRepository::with_entries([this](std::string_view key,
                                                   Deadline) -> Result<LoadedEntry> {
      loads.fetch_add(1);
      std::unique_lock lock(mutex);
      const std::string value = std::string(key) + "#" + std::to_string(versions[std::string(key)]);
      if (holding && key == held && !began) {
        began = true;
        changed.notify_all();
        changed.wait(lock, [this] { return !holding; });
      }
      LoadedEntry out{.value = value};
      if (key.starts_with("user:")) out.options.tags = {"users"};
      if (key.starts_with("post:")) out.options.tags = {"posts"};
      return out;
    });
  }
};

struct Node {
  RedisFleet fleet;
  std::unique_ptr<Protector> protector;
  std::string get(const std::string& key) {
    auto got = protector->get(key, Deadline::after(5s));
    return got ? *got : "error: " + got.error().to_string();
  }
};

Node make_node(const RedisServer& server, Rows& rows, ProtectorOptions options = {}) {
  auto fleet = RedisFleet::connect({.redis = {.url = server.url()}, .prefix = "tags:"});
  EXPECT_TRUE(fleet.has_value()) << fleet.error().to_string();
  fleet->apply_to(options);
  if (fleet->notifier) {
    EXPECT_TRUE(fleet->notifier->wait_subscribed(Deadline::after(5s)));
  }
  options.ttl = 1h;  // nothing expires during a test: every reload is an invalidation's
  auto protector = Protector::create(std::move(options), rows.repository());
  EXPECT_TRUE(protector.has_value()) << protector.error().to_string();
  return Node{std::move(*fleet), std::move(*protector)};
}

// Waits (bounded) until `node` heard `n` tag invalidations on the backplane.
bool heard(Node& node, std::uint64_t n) {
  const auto until = std::chrono::steady_clock::now() + 5s;
  while (node.protector->metrics().backplane_tag_invalidations < n) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

TEST(TagsFleet, ATagInvalidatedOnOneProcessIsHonouredByEveryOtherThroughTheBackplane) {
  auto server = RedisServer::start();
  Rows rows;
  std::vector<Node> nodes;
  for (int i = 0; i < 3; ++i) nodes.push_back(make_node(*server, rows));
  for (auto& n : nodes) {
    EXPECT_EQ(n.get("user:1"), "user:1#0");
    EXPECT_EQ(n.get("user:2"), "user:2#0");
    EXPECT_EQ(n.get("post:1"), "post:1#0");
  }
  const int loads_before = rows.loads.load();
  rows.update("user:1");
  rows.update("user:2");
  rows.update("post:1");  // changed, but its tag is not invalidated: stays cached
  ASSERT_TRUE(nodes[0].protector->invalidate_tag("users"));
  EXPECT_EQ(nodes[0].get("user:1"), "user:1#1") << "at once in the process that called it";
  for (std::size_t i = 1; i < nodes.size(); ++i) {
    ASSERT_TRUE(heard(nodes[i], 1)) << i;
    EXPECT_EQ(nodes[i].get("user:1"), "user:1#1") << i;
    EXPECT_EQ(nodes[i].get("user:2"), "user:2#1") << i;
    EXPECT_EQ(nodes[i].get("post:1"), "post:1#0") << i;
  }
  // One load per invalidated key for the fleet: the others take it from L2
  // (the new entries stand: loaded after the invalidation).
  EXPECT_EQ(rows.loads.load() - loads_before, 2);
}

// Without the backplane, the sync of the known versions bounds it: within
// l1_max_ttl × 1.5 (the L1 copy's life plus the sync interval).
TEST(TagsFleet, WithoutTheBackplaneAnotherProcessHonoursItWithinTheSyncBound) {
  auto server = RedisServer::start();
  Rows rows;
  ProtectorOptions quiet;
  quiet.l1_backplane = false;
  quiet.l1_max_ttl = 100ms;
  Node a = make_node(*server, rows, quiet);
  Node b = make_node(*server, rows, quiet);
  EXPECT_EQ(a.get("user:1"), "user:1#0");
  EXPECT_EQ(b.get("user:1"), "user:1#0");
  rows.update("user:1");
  ASSERT_TRUE(a.protector->invalidate_tag("users"));
  const std::uint64_t syncs = b.protector->metrics().tag_syncs;
  std::this_thread::sleep_for(150ms + 20ms);  // past the bound, not a retry
  EXPECT_EQ(b.get("user:1"), "user:1#1");
  EXPECT_GT(b.protector->metrics().tag_syncs, syncs) << "it learned by a sync";
  EXPECT_EQ(b.protector->metrics().backplane_tag_invalidations, 0u);
}

// A load that began before invalidate_tag returned (in another process)
// writes its value to L2, but the value stands nowhere.
TEST(TagsFleet, ALoadThatBeganBeforeAnotherProcesssInvalidationStandsNowhere) {
  auto server = RedisServer::start();
  Rows rows;
  Node a = make_node(*server, rows);
  Node b = make_node(*server, rows);
  rows.hold("user:1");
  std::string early;
  std::thread loading([&] { early = a.get("user:1"); });
  rows.wait_began();
  rows.update("user:1");
  ASSERT_TRUE(b.protector->invalidate_tag("users"));
  ASSERT_TRUE(heard(a, 1));
  rows.release();
  loading.join();
  EXPECT_EQ(early, "user:1#0") << "its caller asked before";
  EXPECT_EQ(a.get("user:1"), "user:1#1") << "not kept in the loader's L1";
  EXPECT_EQ(b.get("user:1"), "user:1#1") << "not taken from L2 by another";
  Node c = make_node(*server, rows);  // a process started after: learns by its first sync
  EXPECT_EQ(c.get("user:1"), "user:1#1");
}

TEST(TagsFleet, ClearEmptiesTheCacheForTheWholeFleetAndForProcessesStartedLater) {
  auto server = RedisServer::start();
  Rows rows;
  Node a = make_node(*server, rows);
  Node b = make_node(*server, rows);
  for (const char* key : {"user:1", "post:1", "plain"}) {
    EXPECT_EQ(a.get(key), std::string(key) + "#0");
    EXPECT_EQ(b.get(key), std::string(key) + "#0");
  }
  for (const char* key : {"user:1", "post:1", "plain"}) rows.update(key);
  ASSERT_TRUE(a.protector->clear());
  ASSERT_TRUE(heard(b, 1));
  Node c = make_node(*server, rows);
  for (const char* key : {"user:1", "post:1", "plain"}) {
    EXPECT_EQ(a.get(key), std::string(key) + "#1") << key;
    EXPECT_EQ(b.get(key), std::string(key) + "#1") << key;
    EXPECT_EQ(c.get(key), std::string(key) + "#1") << key;
  }
  EXPECT_EQ(a.protector->metrics().clears, 1u);
  // The L2 entries from before were refused (counted by the first reader,
  // `a`, which reloaded them), not deleted one by one.
  EXPECT_GE(a.protector->metrics().tag_rejections, 3u);
}

// Bytes another program put into the tag versions (a score herdguard never
// writes, another type of key) neither fail a sync nor make a process stop
// trusting L2.
TEST(TagsFleet, ForeignMembersInTheTagVersionsAreSkipped) {
  auto server = RedisServer::start();
  Rows rows;
  Node a = make_node(*server, rows);
  EXPECT_EQ(a.get("post:1"), "post:1#0");
  ASSERT_TRUE(a.protector->invalidate_tag("other"));
  const std::string versions = a.fleet.l2->tag_versions_key();
  ASSERT_TRUE(a.fleet.client->command({"ZADD", versions, "1e19", "bogus"}));
  ASSERT_TRUE(a.fleet.client->command({"ZADD", versions, "-5", "negative"}));
  Node b = make_node(*server, rows);
  const int loads = rows.loads.load();
  EXPECT_EQ(b.get("post:1"), "post:1#0");
  EXPECT_EQ(rows.loads.load(), loads) << "b trusts L2: its sync completed";
  EXPECT_EQ(b.protector->metrics().tag_sync_errors, 0u);
  // The bogus member sorts last: a later invalidation is still learned.
  rows.update("post:1");
  ASSERT_TRUE(a.protector->invalidate_tag("posts"));
  ASSERT_TRUE(heard(b, 1));
  EXPECT_EQ(b.get("post:1"), "post:1#1");
}

// What invalidate_tag sends Redis: the same handful of commands whether
// ten or ten thousand entries carry the tag.
TEST(TagsFleet, AnInvalidationCostsTheSameRedisCommandsWhateverTheTaggedEntries) {
  auto server = RedisServer::start();
  Rows rows;
  Node a = make_node(*server, rows);
  auto client = a.fleet.client;
  ASSERT_TRUE(a.protector->invalidate_tag("warm-up"));  // loads the script (once per server)
  auto commands_for = [&](const std::string& tag, int entries) {
    for (int i = 0; i < entries; ++i) {
      EXPECT_TRUE(
          a.protector->set("k" + std::to_string(i) + tag, "v", EntryOptions{.tags = {tag}}));
    }
    EXPECT_TRUE(client->command({"CONFIG", "RESETSTAT"}));
    EXPECT_TRUE(a.protector->invalidate_tag(tag));
    auto info = client->command({"INFO", "commandstats"});
    EXPECT_TRUE(info);
    // Every command's calls (those run inside the script too), but INFO's.
    std::map<std::string, long long> calls;
    std::size_t at = 0;
    while ((at = info->str.find("cmdstat_", at)) != std::string::npos) {
      const std::size_t colon = info->str.find(':', at);
      const std::size_t eq = info->str.find("calls=", colon);
      const std::string name = info->str.substr(at + 8, colon - at - 8);
      if (name != "info" && !name.starts_with("config"))
        calls[name] = std::stoll(info->str.substr(eq + 6));
      at = colon;
    }
    return calls;
  };
  const auto few = commands_for("few", 10);
  const auto many = commands_for("many", 10'000);
  EXPECT_EQ(few, many);
  EXPECT_EQ(many.at("evalsha"), 1) << "one script";
  EXPECT_EQ(many.at("publish"), 1) << "one backplane message";
  EXPECT_EQ(many.count("del") + many.count("unlink") + many.count("scan") + many.count("keys"), 0u);
}

// "Not modified" against Redis: the reload is given the stale value, the
// repository finds it unchanged, and L2 extends the entry in place — the
// value is not SET again (with the fleet lock: the lock's own SET is the
// only one) — and another process then reads it fresh without a load.
TEST(NotModifiedFleet, AnUnchangedRowExtendsTheL2EntryWithoutWritingIt) {
  auto server = RedisServer::start();
  std::atomic<int> loads{0}, unchanged{0};
  std::atomic<bool> changed{false};
  auto repository = CallbackRepository::with_reloads(
      [&](std::string_view, Deadline, const PreviousValue* previous) -> Result<LoadedEntry> {
        loads.fetch_add(1);
        const std::string row = changed ? "row-v2" : "row-v1";
        if (previous && previous->value == row) {
          unchanged.fetch_add(1);
          return LoadedEntry{.not_modified = true};
        }
        return LoadedEntry{.value = row};
      });
  auto node = [&] {
    auto fleet = RedisFleet::connect({.redis = {.url = server->url()}, .prefix = "nm:"});
    EXPECT_TRUE(fleet.has_value());
    ProtectorOptions options;
    options.ttl = 150ms;
    options.ttl_jitter = 0;
    options.fail_safe_max_staleness = 1h;  // L2 keeps the entry past its freshness
    fleet->apply_to(options);
    auto protector = Protector::create(std::move(options), repository);
    EXPECT_TRUE(protector.has_value());
    return Node{std::move(*fleet), std::move(*protector)};
  };
  Node a = node();
  Node b = node();
  auto client = a.fleet.client;
  const std::string value_key = a.fleet.l2->redis_key("k");
  auto calls = [&](const std::string& command) -> long long {
    auto info = client->command({"INFO", "commandstats"});
    const std::string needle = "cmdstat_" + command + ":calls=";
    const auto at = info ? info->str.find(needle) : std::string::npos;
    return at == std::string::npos ? 0 : std::stoll(info->str.substr(at + needle.size()));
  };
  EXPECT_EQ(a.get("k"), "row-v1");
  const auto before = client->command({"GET", value_key});
  ASSERT_TRUE(before && !before->is_nil());
  std::this_thread::sleep_for(200ms);  // past the 150 ms TTL
  ASSERT_TRUE(client->command({"CONFIG", "RESETSTAT"}));
  EXPECT_EQ(a.get("k"), "row-v1");
  EXPECT_EQ(unchanged.load(), 1);
  EXPECT_EQ(calls("setrange"), 1) << "the moving fields, in place";
  EXPECT_EQ(calls("set"), 1) << "the fleet lock's SET only: the value was not written";
  EXPECT_EQ(a.protector->metrics().l2_extended, 1u);
  const auto after = client->command({"GET", value_key});
  ASSERT_TRUE(after && !after->is_nil());
  ASSERT_EQ(after->str.size(), before->str.size());
  const std::size_t header = static_cast<unsigned char>(before->str[5]) |
                             (static_cast<unsigned char>(before->str[6]) << 8);
  EXPECT_EQ(after->str.substr(header), before->str.substr(header))
      << "the value's bytes are untouched";
  EXPECT_EQ(after->str.substr(0, 7), before->str.substr(0, 7));
  auto extended = decode_envelope(after->str);
  ASSERT_TRUE(extended);
  EXPECT_GT(extended->entry.fresh_until, system_clock()->now()) << "fresh again";
  const int loads_then = loads.load();
  EXPECT_EQ(b.get("k"), "row-v1");
  EXPECT_EQ(loads.load(), loads_then) << "another process reads the extended entry, fresh";
  // A changed row is written as usual.
  changed = true;
  std::this_thread::sleep_for(200ms);
  ASSERT_TRUE(client->command({"CONFIG", "RESETSTAT"}));
  EXPECT_EQ(a.get("k"), "row-v2");
  EXPECT_EQ(calls("setrange"), 0);
  EXPECT_EQ(calls("set"), 2) << "the lock's and the value's";
}

// The same in place extension without the fleet lock (a version snapshot):
// only the envelope of the version the repository confirmed is extended;
// any other (or none) is written whole.
TEST(NotModifiedFleet, WriteLoadedExtendsOnlyTheVersionItWasGiven) {
  auto server = RedisServer::start();
  auto fleet = RedisFleet::connect({.redis = {.url = server->url()}, .prefix = "wl:"});
  ASSERT_TRUE(fleet.has_value());
  RedisCache& l2 = *fleet->l2;
  const TimePoint now = system_clock()->now();
  CacheEntry entry{.value = "same", .fresh_until = now + 1min, .stale_until = now + 1h};
  auto first = l2.snapshot("k", Deadline::after(5s));
  ASSERT_TRUE(first);
  ASSERT_EQ(*l2.write_loaded("k", entry, *first, Deadline::after(5s)), WriteOutcome::kWritten);
  auto stored = l2.get_envelope("k", Deadline::after(5s));
  ASSERT_TRUE(stored && *stored);
  CacheEntry longer = entry;
  longer.fresh_until = now + 2min;
  longer.extends_version = (*stored)->version + 1;  // not what L2 holds
  auto again = l2.snapshot("k", Deadline::after(5s));
  ASSERT_TRUE(again);
  EXPECT_EQ(*l2.write_loaded("k", longer, *again, Deadline::after(5s)), WriteOutcome::kWritten);
  stored = l2.get_envelope("k", Deadline::after(5s));
  ASSERT_TRUE(stored && *stored);
  longer.fresh_until = now + 3min;
  longer.extends_version = (*stored)->version;
  EXPECT_EQ(*l2.write_loaded("k", longer, *again, Deadline::after(5s)), WriteOutcome::kExtended);
  stored = l2.get_envelope("k", Deadline::after(5s));
  ASSERT_TRUE(stored && *stored);
  EXPECT_EQ((*stored)->entry.value, "same");
  EXPECT_EQ((*stored)->entry.fresh_until, now + 3min);
  EXPECT_EQ((*stored)->version, again->version);
  // Two loads under one snapshot may write different values with the same
  // version: a "not modified" of one must not extend the other's value.
  CacheEntry other = entry;
  other.value = "othr";  // same length: only the value's bytes differ
  ASSERT_EQ(*l2.write_loaded("k", other, *again, Deadline::after(5s)), WriteOutcome::kWritten);
  longer.extends_version = again->version;
  EXPECT_EQ(*l2.write_loaded("k", longer, *again, Deadline::after(5s)), WriteOutcome::kWritten)
      << "written whole: what L2 holds is not the confirmed value";
  stored = l2.get_envelope("k", Deadline::after(5s));
  ASSERT_TRUE(stored && *stored);
  EXPECT_EQ((*stored)->entry.value, "same");
  ASSERT_TRUE(l2.erase("k"));  // an invalidate moves the version: the snapshot is superseded
  EXPECT_EQ(*l2.write_loaded("k", longer, *again, Deadline::after(5s)), WriteOutcome::kSuperseded);
}

}  // namespace
}  // namespace herdguard
