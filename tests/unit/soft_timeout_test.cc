// The soft load timeout (ProtectorOptions::soft_load_timeout): a caller that
// holds a stale value gets it once the soft timeout passes, while the load
// goes on in the background, on another thread, and fills the cache; a
// caller without one waits for its deadline as before.
#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <thread>

#include "herdguard/protector.h"
#include "test_support.h"

namespace herdguard {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::Gate;
using testing::wait_until;

// Answers "v<n>" on its n-th call; loads after the first wait at the gate
// once the test holds them. Records the thread of the last load.
class GatedRepository {
 public:
  int calls() const { return calls_.load(); }
  void hold_loads_at(Gate* gate) { gate_.store(gate); }
  std::thread::id last_thread() {
    std::lock_guard lock(mutex_);
    return last_thread_;
  }
  std::shared_ptr<Repository> repository() {
    return std::make_shared<CallbackRepository>(
        [this](std::string_view, Deadline) -> Result<std::optional<std::string>> {
          const int n = calls_.fetch_add(1) + 1;
          {
            std::lock_guard lock(mutex_);
            last_thread_ = std::this_thread::get_id();
          }
          if (Gate* gate = gate_.load()) gate->wait();
          return std::optional<std::string>("v" + std::to_string(n));
        });
  }

 private:
  std::atomic<int> calls_{0};
  std::atomic<Gate*> gate_{nullptr};
  std::mutex mutex_;
  std::thread::id last_thread_;  // guarded by mutex_
};

struct Fixture {
  explicit Fixture(Duration soft) {
    ProtectorOptions options{.ttl = seconds(10), .ttl_jitter = 0};
    options.soft_load_timeout = soft;
    options.clock = clock;
    auto p = Protector::create(std::move(options), repo.repository());
    EXPECT_TRUE(p.has_value()) << p.error().to_string();
    protector = std::move(*p);
  }
  std::shared_ptr<ManualClock> clock = std::make_shared<ManualClock>();
  GatedRepository repo;
  std::unique_ptr<Protector> protector;
};

TEST(SoftLoadTimeout, AStaleValueIsAnsweredAtTheSoftTimeoutAndTheLoadStillFillsTheCache) {
  Fixture f(milliseconds(50));
  ASSERT_EQ(f.protector->get("k").value_or(""), "v1");
  f.clock->advance(seconds(11));  // stale, within fail_safe_max_staleness
  Gate gate;
  f.repo.hold_loads_at(&gate);
  // The load is held in the database: the caller gets its stale value at
  // the soft timeout, well before its own deadline.
  EXPECT_EQ(f.protector->get("k", Deadline::after(seconds(30))).value_or(""), "v1");
  EXPECT_NE(f.repo.last_thread(), std::this_thread::get_id());  // never loaded inline
  ProtectionMetrics m = f.protector->metrics();
  EXPECT_EQ(m.soft_timeouts, 1u);
  EXPECT_EQ(m.stale_returns, 1u);
  EXPECT_EQ(m.errors, 0u);
  EXPECT_EQ(m.loads_in_flight, 1u);  // the load goes on
  gate.open();
  wait_until([&] { return f.protector->metrics().loads_in_flight == 0; });
  EXPECT_EQ(f.protector->get("k").value_or(""), "v2");  // and it filled the cache
  EXPECT_EQ(f.repo.calls(), 2);
}

TEST(SoftLoadTimeout, ALoadFasterThanTheSoftTimeoutAnswersItsValue) {
  Fixture f(seconds(20));
  ASSERT_TRUE(f.protector->get("k"));
  f.clock->advance(seconds(11));
  EXPECT_EQ(f.protector->get("k", Deadline::after(seconds(30))).value_or(""), "v2");
  EXPECT_EQ(f.protector->metrics().soft_timeouts, 0u);
  EXPECT_EQ(f.protector->metrics().stale_returns, 0u);
}

// Holds the load at the gate for 20 ms past the 1 ms soft timeout, checking
// that the caller has not returned meanwhile, then lets it finish. (The
// caller is the flight's leader and may run the load on its own thread.)
std::string get_while_the_load_is_held(Fixture& f, const std::string& key) {
  Gate gate;
  f.repo.hold_loads_at(&gate);
  const int before = f.repo.calls();
  std::atomic<bool> returned{false};
  std::thread holder([&] {
    wait_until([&] { return f.repo.calls() == before + 1; });
    std::this_thread::sleep_for(milliseconds(20));  // 20 soft timeouts long
    EXPECT_FALSE(returned.load()) << "answered before the load finished";
    gate.open();
  });
  auto r = f.protector->get(key, Deadline::after(seconds(30)));
  returned.store(true);
  holder.join();
  f.repo.hold_loads_at(nullptr);
  return r.value_or("error: " + (r ? std::string() : r.error().to_string()));
}

TEST(SoftLoadTimeout, ACallerWithoutAStaleValueWaitsForTheLoad) {
  Fixture f(milliseconds(1));
  EXPECT_EQ(get_while_the_load_is_held(f, "new"), "v1");
  EXPECT_EQ(f.protector->metrics().soft_timeouts, 0u);
}

TEST(SoftLoadTimeout, AValueTooStaleForTheFallbackIsNotAnswered) {
  Fixture f(milliseconds(1));
  ASSERT_TRUE(f.protector->get("k"));
  f.clock->advance(std::chrono::hours(2));  // past fail_safe_max_staleness (1 h)
  EXPECT_EQ(get_while_the_load_is_held(f, "k"), "v2");
  EXPECT_EQ(f.protector->metrics().soft_timeouts, 0u);
}

TEST(SoftLoadTimeout, MustBePositive) {
  ProtectorOptions options;
  options.soft_load_timeout = Duration::zero();
  auto p = Protector::create(
      options, std::make_shared<CallbackRepository>([](std::string_view, Deadline) {
        return Result<std::optional<std::string>>(std::optional<std::string>("v"));
      }));
  ASSERT_FALSE(p);
  EXPECT_NE(p.error().message.find("soft_load_timeout"), std::string::npos);
}

}  // namespace
}  // namespace herdguard
