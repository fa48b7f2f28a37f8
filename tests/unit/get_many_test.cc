// Protector::get_many: misses loaded in one Repository::load_many call,
// each key still loaded once however many callers ask for it, per-key
// answers, errors and fallbacks, and the caller's deadline.
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "herdguard/protector.h"
#include "test_support.h"

namespace herdguard {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

// A database with a batch call: counts batches and loads per key.
struct BatchDatabase {
  std::mutex mutex;
  std::map<std::string, int> loads_of;   // guarded by mutex
  std::vector<std::size_t> batch_sizes;  // guarded by mutex
  std::atomic<int> single_loads{0};
  std::atomic<bool> failing{false};
  testing::Gate* hold = nullptr;  // when set, a batch waits for it

  std::shared_ptr<Repository> repository() {
    return std::make_shared<CallbackRepository>(
        [this](std::string_view key, Deadline) -> Result<std::optional<std::string>> {
          single_loads.fetch_add(1);
          return std::optional<std::string>("value-of-" + std::string(key));
        },
        [this](std::span<const std::string> keys, Deadline) {
          if (hold) hold->wait();
          std::vector<Result<std::optional<std::string>>> out;
          std::lock_guard lock(mutex);
          batch_sizes.push_back(keys.size());
          for (const std::string& key : keys) {
            ++loads_of[key];
            if (failing) {
              out.emplace_back(make_error(ErrorKind::kBackend, "database down"));
            } else if (key.starts_with("missing")) {
              out.emplace_back(std::optional<std::string>());
            } else {
              out.emplace_back(std::optional<std::string>("value-of-" + key));
            }
          }
          return out;
        });
  }
};

std::unique_ptr<Protector> protector_on(BatchDatabase& db, ProtectorOptions options = {}) {
  auto p = Protector::create(std::move(options), db.repository());
  EXPECT_TRUE(p) << p.error().to_string();
  return std::move(*p);
}

std::vector<std::string> keys_from(int first, int count) {
  std::vector<std::string> keys;
  for (int i = first; i < first + count; ++i) keys.push_back("k" + std::to_string(i));
  return keys;
}

TEST(GetMany, AHundredColdKeysAreOneBatchCall) {
  BatchDatabase db;
  auto p = protector_on(db);
  const std::vector<std::string> keys = keys_from(0, 100);
  const auto answers = p->get_many(keys, Deadline::after(seconds(10)));
  ASSERT_EQ(answers.size(), 100u);
  for (std::size_t i = 0; i < keys.size(); ++i) {
    ASSERT_TRUE(answers[i]) << keys[i] << ": " << answers[i].error().to_string();
    EXPECT_EQ(*answers[i], "value-of-" + keys[i]);
  }
  EXPECT_EQ(db.batch_sizes, std::vector<std::size_t>{100});
  EXPECT_EQ(db.single_loads.load(), 0);
  EXPECT_EQ(p->metrics().db_batches, 1u);
  EXPECT_EQ(p->metrics().db_queries, 100u);
  // Now all in L1: no call at all.
  p->get_many(keys, Deadline::after(seconds(10)));
  EXPECT_EQ(db.batch_sizes.size(), 1u);
}

// A large call goes 256 flights at a time: it never fills the load queue
// by itself (and gets its own keys refused).
TEST(GetMany, ALargeCallLoadsInBatchesOf256Flights) {
  BatchDatabase db;
  auto p = protector_on(db);
  const std::vector<std::string> keys = keys_from(0, 600);
  const auto answers = p->get_many(keys, Deadline::after(seconds(30)));
  for (std::size_t i = 0; i < keys.size(); ++i) {
    ASSERT_TRUE(answers[i]) << keys[i] << ": " << answers[i].error().to_string();
  }
  EXPECT_EQ(db.batch_sizes, (std::vector<std::size_t>{256, 256, 88}));
}

TEST(GetMany, EachPositionGetsItsOwnAnswer) {
  BatchDatabase db;
  auto p = protector_on(db);
  ASSERT_TRUE(p->get("cached"));  // a single load, before
  const std::vector<std::string> keys = {"a", "cached", "missing-1", "", "a", "b"};
  const auto answers = p->get_many(keys, Deadline::after(seconds(10)));
  ASSERT_EQ(answers.size(), keys.size());
  EXPECT_EQ(answers[0].value(), "value-of-a");
  EXPECT_EQ(answers[1].value(), "value-of-cached");
  ASSERT_FALSE(answers[2]);
  EXPECT_EQ(answers[2].error().kind, ErrorKind::kNotFound);
  ASSERT_FALSE(answers[3]);
  EXPECT_EQ(answers[3].error().kind, ErrorKind::kInvalidArgument);
  EXPECT_EQ(answers[4].value(), "value-of-a") << "asked twice, answered twice";
  EXPECT_EQ(answers[5].value(), "value-of-b");
  // One batch of the three misses; "a" once; "cached" from L1.
  ASSERT_EQ(db.batch_sizes, std::vector<std::size_t>{3});
  EXPECT_EQ(db.loads_of["a"], 1);
  EXPECT_EQ(db.loads_of.count("cached"), 0u);
}

// 100 callers at once, each asking for 50 of 200 keys (overlapping windows):
// every key reaches the database once.
TEST(GetMany, ConcurrentCallsOfOverlappingKeysLoadEachKeyOnce) {
  BatchDatabase db;
  auto p = protector_on(db);
  std::atomic<int> wrong{0};
  std::vector<std::thread> callers;
  for (int c = 0; c < 100; ++c) {
    callers.emplace_back([&, c] {
      const std::vector<std::string> keys = keys_from((c * 37) % 150, 50);
      const auto answers = p->get_many(keys, Deadline::after(seconds(30)));
      for (std::size_t i = 0; i < keys.size(); ++i) {
        if (!answers[i] || *answers[i] != "value-of-" + keys[i]) wrong.fetch_add(1);
      }
    });
  }
  for (auto& t : callers) t.join();
  EXPECT_EQ(wrong.load(), 0);
  std::lock_guard lock(db.mutex);
  for (const auto& [key, loads] : db.loads_of) EXPECT_EQ(loads, 1) << key;
  EXPECT_EQ(db.single_loads.load(), 0);
}

TEST(GetMany, AFailedBatchFallsBackPerKey) {
  BatchDatabase db;
  ProtectorOptions options{.ttl = seconds(10), .ttl_jitter = 0};
  auto clock = std::make_shared<ManualClock>();
  options.clock = clock;
  auto p = protector_on(db, options);
  ASSERT_TRUE(p->get("old"));  // will be stale: the fail-safe serves it
  clock->advance(seconds(11));
  db.failing = true;
  const std::vector<std::string> keys = {"old", "new"};
  const auto answers = p->get_many(keys, Deadline::after(seconds(10)));
  EXPECT_EQ(answers[0].value(), "value-of-old");
  ASSERT_FALSE(answers[1]);
  EXPECT_EQ(answers[1].error().kind, ErrorKind::kBackend);
  EXPECT_EQ(p->metrics().stale_returns, 1u);
}

// A failed batch is one failed query for the breaker, not one per key.
TEST(GetMany, AFailedBatchIsOneFailureForTheBreaker) {
  BatchDatabase db;
  db.failing = true;
  auto p = protector_on(db);
  const auto answers = p->get_many(keys_from(0, 20), Deadline::after(seconds(10)));
  for (const auto& a : answers) EXPECT_FALSE(a);
  EXPECT_EQ(p->metrics().circuit_breaker_trips, 0u);
  EXPECT_EQ(p->metrics().circuit_breaker_state, BreakerState::kClosed);
}

// A repository without a batch form: no batch, the keys load in parallel
// (each load here waits until all 10 run at once).
TEST(GetMany, WithoutABatchFormTheKeysLoadInParallel) {
  std::mutex mutex;
  std::condition_variable all_in;
  int running = 0;
  auto p = Protector::create(
      {}, std::make_shared<CallbackRepository>(
              [&](std::string_view key, Deadline) -> Result<std::optional<std::string>> {
                std::unique_lock lock(mutex);
                ++running;
                all_in.notify_all();
                if (!all_in.wait_for(lock, seconds(10), [&] { return running >= 10; }))
                  return make_error(ErrorKind::kTimeout, "loads ran one after another");
                return std::optional<std::string>("value-of-" + std::string(key));
              }));
  ASSERT_TRUE(p);
  const auto answers = (*p)->get_many(keys_from(0, 10), Deadline::after(seconds(20)));
  for (const auto& a : answers) ASSERT_TRUE(a) << a.error().to_string();
  EXPECT_EQ((*p)->metrics().db_batches, 0u);
}

// No caller waits past its deadline, even while the batch is still loading.
TEST(GetMany, TheCallerGetsItsAnswersByItsDeadlineWhileTheBatchHangs) {
  BatchDatabase db;
  testing::Gate gate;
  db.hold = &gate;
  auto p = protector_on(db);
  const auto answers = p->get_many(keys_from(0, 5), Deadline::after(milliseconds(50)));
  for (const auto& a : answers) {
    ASSERT_FALSE(a);
    EXPECT_EQ(a.error().kind, ErrorKind::kTimeout) << a.error().to_string();
  }
  gate.open();  // only now: the call above returned while the batch was held
}

}  // namespace
}  // namespace herdguard
