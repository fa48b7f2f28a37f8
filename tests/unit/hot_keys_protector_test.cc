// The Protector's hot keys (ProtectorOptions::hot_keys), on a ManualClock: a
// key read often turns hot, is pinned in L1, refreshed in the background
// before it expires (no caller waits for its load again), reported to the
// alert sinks and in metrics, and unpinned when it cools down.
#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "herdguard/protector.h"
#include "test_support.h"

namespace herdguard {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::wait_until;

class HotKeyAlerts final : public AlertSink {
 public:
  void send(const AlertEvent& event) noexcept override {
    std::lock_guard lock(mutex_);
    if (event.kind == AlertEvent::Kind::kHotKey) keys_.push_back(event.key);
  }
  std::vector<std::string> keys() {
    std::lock_guard lock(mutex_);
    return keys_;
  }

 private:
  std::mutex mutex_;
  std::vector<std::string> keys_;
};

struct HotFixture {
  explicit HotFixture(MemoryCacheOptions l1 = {}, double refresh_fraction = 0.8) {
    ProtectorOptions options{.ttl = seconds(10), .ttl_jitter = 0};
    // Every read sampled; 100 reads/s make a key hot.
    options.hot_keys = {.min_rate = 100,
                        .viral_min_rate = 100,
                        .sample_one_in = 1,
                        .refresh_fraction = refresh_fraction};
    options.l1 = l1;
    options.clock = clock;
    options.alert_sinks = {alerts};
    auto p = Protector::create(
        std::move(options),
        std::make_shared<CallbackRepository>(
            [this](std::string_view key, Deadline) -> Result<std::optional<std::string>> {
              const int n = calls.fetch_add(1) + 1;
              return std::optional<std::string>(std::string(key) + "#" + std::to_string(n));
            }));
    EXPECT_TRUE(p.has_value()) << p.error().to_string();
    protector = std::move(*p);
  }
  // 50 reads of `key` per 250 ms bucket (200/s) for `buckets` buckets.
  void read_often(std::string_view key, int buckets) {
    for (int b = 0; b < buckets; ++b) {
      for (int i = 0; i < 50; ++i) ASSERT_TRUE(protector->get(key));
      clock->advance(milliseconds(250));
    }
  }
  void refreshes_done() {
    wait_until([&] { return protector->metrics().loads_in_flight == 0; });
  }

  std::shared_ptr<ManualClock> clock = std::make_shared<ManualClock>();
  std::shared_ptr<HotKeyAlerts> alerts = std::make_shared<HotKeyAlerts>();
  std::atomic<int> calls{0};
  std::unique_ptr<Protector> protector;
};

TEST(ProtectorHotKeys, AHotKeyIsReportedAndRefreshedBeforeEveryExpirySoNobodyWaitsAgain) {
  HotFixture f;
  f.read_often("product:7", 5);  // one window and a bucket
  const std::vector<HotKey> hot = f.protector->hot_keys();
  ASSERT_EQ(hot.size(), 1u);
  EXPECT_EQ(hot[0].key, "product:7");
  EXPECT_DOUBLE_EQ(hot[0].rate, 200.0);
  EXPECT_EQ(f.alerts->keys(), std::vector<std::string>{"product:7"});
  EXPECT_EQ(f.protector->metrics().hot_keys, 1u);
  EXPECT_EQ(f.protector->metrics().hot_keys_detected, 1u);
  // Reads go on for three TTLs: each entry is refreshed after 80% of its
  // TTL, in the background; only the very first read waited for a load.
  for (int b = 0; b < 120; ++b) {
    f.read_often("product:7", 1);
    f.refreshes_done();
  }
  const ProtectionMetrics m = f.protector->metrics();
  EXPECT_EQ(m.cache_misses, 1u);
  EXPECT_EQ(m.early_refreshes, 3u);  // at 8, 16 and 24 s: 30 s of reads
  EXPECT_EQ(f.calls.load(), 4);
  EXPECT_EQ(f.protector->get("product:7").value_or(""), "product:7#4");
  EXPECT_EQ(f.protector->hot_keys().at(0).load_waits, 0u);
  EXPECT_EQ(m.hot_keys_detected, 1u);  // it stayed hot throughout
}

// Predictive warming: the evaluation that ends a bucket refreshes a hot key
// that would expire before the next one, when no read has: here its refresh
// window is the last 100 ms of its 10 s, and it is read in bursts at the
// start of each 250 ms bucket, so no read lands in the window.
TEST(ProtectorHotKeys, AHotKeyIsRefreshedAtTheEvaluationBeforeItExpiresWithoutAReadInItsWindow) {
  HotFixture f({}, /*refresh_fraction=*/0.99);
  f.read_often("product:7", 39);  // bursts at 0, 0.25 .. 9.5 s; its entry is fresh until 10 s
  EXPECT_EQ(f.calls.load(), 1);
  // The burst at 9.75 s ends a bucket first: 9.75 >= 10 - 0.25, refreshed.
  f.read_often("product:7", 1);
  f.refreshes_done();
  EXPECT_EQ(f.calls.load(), 2);
  EXPECT_EQ(f.protector->metrics().early_refreshes, 1u);
  f.read_often("product:7", 2);  // 10 and 10.25 s: past the first entry's expiry
  EXPECT_EQ(f.protector->get("product:7").value_or(""), "product:7#2");
  EXPECT_EQ(f.protector->metrics().cache_misses, 1u);
}

TEST(ProtectorHotKeys, AHotKeyStaysInL1WhileColdKeysAreEvictedAndLeavesWhenItCools) {
  HotFixture f({.max_entries = 4, .shards = 1});
  f.read_often("hot", 5);
  ASSERT_EQ(f.protector->hot_keys().size(), 1u);
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(f.protector->get("cold:" + std::to_string(i)));
  EXPECT_TRUE(f.protector->peek("hot").has_value());
  // Two quiet windows: it cools down, is unpinned, and evicted like any other.
  f.clock->advance(seconds(2));
  EXPECT_TRUE(f.protector->hot_keys().empty());
  for (int i = 20; i < 40; ++i) ASSERT_TRUE(f.protector->get("cold:" + std::to_string(i)));
  EXPECT_FALSE(f.protector->peek("hot").has_value());
}

// Readers on several threads sample into the detector (try_record), pin and
// refresh while the main thread moves time and evaluates: the hot key is
// found, and (under TSan) nothing races.
TEST(ProtectorHotKeys, ConcurrentReadersAndEvaluationsAgreeOnTheHotKey) {
  HotFixture f;
  std::atomic<bool> stop{false};
  std::vector<std::thread> readers;
  for (int t = 0; t < 4; ++t) {
    readers.emplace_back([&, t] {
      for (int i = 0; !stop.load(); ++i) {
        EXPECT_TRUE(f.protector->get(i % 2 == 0 ? std::string("hot")
                                                : "cold:" + std::to_string(t * 1000 + i % 1000)));
      }
    });
  }
  // Each bucket gets at least 2,000 reads of its own: the readers may have
  // run far ahead of the main thread in one bucket and stalled in the next.
  for (int b = 0; b < 12; ++b) {
    const std::uint64_t before = f.protector->metrics().total_requests;
    wait_until([&] { return f.protector->metrics().total_requests > before + 2000; });
    f.clock->advance(milliseconds(250));
    (void)f.protector->hot_keys();
  }
  stop = true;
  for (auto& r : readers) r.join();
  const std::vector<HotKey> hot = f.protector->hot_keys();
  ASSERT_FALSE(hot.empty());
  EXPECT_EQ(hot[0].key, "hot");
}

TEST(ProtectorHotKeys, ACallerWaitingForAHotKeysLoadIsCounted) {
  HotFixture f;
  f.read_often("k", 5);
  ASSERT_EQ(f.protector->hot_keys().size(), 1u);
  ASSERT_TRUE(f.protector->invalidate("k"));  // the next read must load
  ASSERT_TRUE(f.protector->get("k"));
  EXPECT_EQ(f.protector->hot_keys().at(0).load_waits, 1u);
}

// Adaptive sampling: a quiet protector comes down to every read, whichever
// call ended the bucket (here hot_keys(), not a read), and weighs each read
// by the interval it was sampled with.
TEST(ProtectorHotKeys, TheReadPathFollowsTheAdaptiveSamplingIntervalAndWeighsReadsByIt) {
  auto clock = std::make_shared<ManualClock>();
  ProtectorOptions options{.ttl = seconds(10)};
  options.clock = clock;
  options.hot_keys = {.min_rate = 100};  // adaptive sampling (the default), from 1 in 64
  auto p = Protector::create(
      options, std::make_shared<CallbackRepository>([](std::string_view, Deadline) {
        return Result<std::optional<std::string>>(std::optional<std::string>("v"));
      }));
  ASSERT_TRUE(p) << p.error().to_string();
  Protector& protector = **p;
  // A miss, then 64 hits: the 64th is sampled, and the detector starts.
  for (int i = 0; i < 65; ++i) ASSERT_TRUE(protector.get("a"));
  clock->advance(milliseconds(300));
  EXPECT_TRUE(protector.hot_keys().empty());  // ends the quiet first bucket: 1 in 1 from now on
  for (int b = 0; b < 5; ++b) {
    for (int i = 0; i < 100; ++i) ASSERT_TRUE(protector.get("a"));
    clock->advance(milliseconds(250));
  }
  const std::vector<HotKey> hot = protector.hot_keys();
  ASSERT_EQ(hot.size(), 1u);
  EXPECT_DOUBLE_EQ(hot[0].rate, 400.0);  // every read of the last window, counted once
}

TEST(ProtectorHotKeys, DetectionCanBeTurnedOffAndBadOptionsAreRefused) {
  ProtectorOptions options;
  options.hot_keys.enabled = false;
  options.hot_keys.top_k = 0;  // ignored when off
  auto repo = std::make_shared<CallbackRepository>([](std::string_view, Deadline) {
    return Result<std::optional<std::string>>(std::optional<std::string>("v"));
  });
  auto off = Protector::create(options, repo);
  ASSERT_TRUE(off) << off.error().to_string();
  for (int i = 0; i < 1000; ++i) ASSERT_TRUE((*off)->get("k"));
  EXPECT_TRUE((*off)->hot_keys().empty());
  options.hot_keys.enabled = true;
  auto bad = Protector::create(options, repo);
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message.find("top_k"), std::string::npos) << bad.error().message;
}

}  // namespace
}  // namespace herdguard
