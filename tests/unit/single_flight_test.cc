#include "herdguard/single_flight.h"

#include <gtest/gtest.h>

#include <atomic>
#include <latch>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "test_support.h"

namespace herdguard {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
// Tests declare their gates before the flights: the flights' destructor joins
// abandoned loads that may still be leaving Gate::wait().
using testing::Gate;
using testing::wait_until;

std::unique_ptr<SingleFlight> make_flights(SingleFlightOptions options = {}) {
  auto flights = SingleFlight::create(options);
  EXPECT_TRUE(flights.has_value());
  return std::move(*flights);
}

TEST(SingleFlight, ConcurrentCallersShareOneLoad) {
  Gate gate;
  auto flights = make_flights();
  std::atomic<int> loads{0};
  auto loader = [&](Deadline) -> Result<std::string> {
    loads.fetch_add(1);
    gate.wait();
    return std::string("value");
  };
  constexpr int kCallers = 64;
  std::vector<Result<std::string>> results(kCallers, make_error(ErrorKind::kInternal, "unset"));
  std::vector<std::thread> threads;
  for (int i = 0; i < kCallers; ++i) {
    threads.emplace_back(
        [&, i] { results[i] = flights->call("k", Deadline::after(seconds(30)), loader); });
  }
  wait_until([&] { return flights->stats().shared == kCallers - 1; });
  gate.open();
  for (auto& t : threads) t.join();

  EXPECT_EQ(loads.load(), 1);
  for (const auto& r : results) {
    ASSERT_TRUE(r.has_value()) << r.error().to_string();
    EXPECT_EQ(*r, "value");
  }
  EXPECT_EQ(flights->stats().loads_started, 1u);
  EXPECT_EQ(flights->in_flight(), 0u);
}

// A loader that takes `d` of real time: the slow database a load estimate learns from.
Result<std::string> take(Duration d) {
  const Deadline until = Deadline::after(d);
  while (!until.expired()) std::this_thread::yield();
  return std::string("slow");
}

TEST(SingleFlight, LeaderRunsTheLoadOnItsOwnThread) {
  auto flights = make_flights();
  std::thread::id ran_on;
  auto v = flights->call("k", Deadline::after(seconds(30)), [&](Deadline) -> Result<std::string> {
    ran_on = std::this_thread::get_id();
    return std::string("v");
  });
  ASSERT_TRUE(v);
  EXPECT_EQ(*v, "v");
  EXPECT_EQ(ran_on, std::this_thread::get_id());
  EXPECT_EQ(flights->stats().inline_loads, 1u);
  EXPECT_EQ(flights->stats().handed_off, 0u);
  EXPECT_EQ(flights->load_threads(), 0u) << "no thread is started for an inline load";
}

TEST(SingleFlight, InlineLoadsOffHandsEveryLoadOff) {
  auto flights = make_flights({.inline_loads = false});
  std::thread::id ran_on;
  auto v = flights->call("k", Deadline::after(seconds(30)), [&](Deadline) -> Result<std::string> {
    ran_on = std::this_thread::get_id();
    return std::string("v");
  });
  ASSERT_TRUE(v);
  EXPECT_NE(ran_on, std::this_thread::get_id());
  EXPECT_EQ(flights->stats().handed_off, 1u);
}

// A leader whose deadline is shorter than loads are known to take hands the
// load off: it returns at its deadline, and the load goes on for the others.
TEST(SingleFlight, LeaderTimeoutDoesNotFailFollowers) {
  auto flights = make_flights();
  ASSERT_TRUE(flights->call("warm", Deadline::after(seconds(30)),
                            [](Deadline) { return take(milliseconds(100)); }));
  ASSERT_GE(flights->stats().load_estimate_ns, 100'000'000u);
  Gate gate;
  std::atomic<int> loads{0};
  auto loader = [&](Deadline) -> Result<std::string> {  // ignores its deadline
    loads.fetch_add(1);
    gate.wait();
    return std::string("loaded");
  };
  // The caller that starts the flight gives up first...
  auto leader = flights->call("k", Deadline::after(milliseconds(20)), loader);
  ASSERT_FALSE(leader.has_value());
  EXPECT_EQ(leader.error().kind, ErrorKind::kTimeout);
  EXPECT_EQ(flights->in_flight(), 1u);  // ...but the load goes on.

  Result<std::string> follower = make_error(ErrorKind::kInternal, "unset");
  std::thread t([&] { follower = flights->call("k", Deadline::after(seconds(30)), loader); });
  wait_until([&] { return flights->stats().shared == 1; });
  gate.open();
  t.join();
  ASSERT_TRUE(follower.has_value()) << follower.error().to_string();
  EXPECT_EQ(*follower, "loaded");
  EXPECT_EQ(loads.load(), 1);
  EXPECT_EQ(flights->stats().loads_started, 2u);  // "warm" and "k"
  EXPECT_EQ(flights->stats().handed_off, 1u);
  EXPECT_EQ(flights->stats().waiter_timeouts, 1u);
}

// When the estimate was wrong, an inline load cut by its leader's deadline is
// not failed for the followers: it goes on, on the executor, with the full
// load_timeout (a second call of the loader).
TEST(SingleFlight, InlineLoadCutByTheLeadersDeadlineGoesOnForFollowers) {
  Gate gate;
  auto flights = make_flights();
  std::latch started(1);
  std::vector<Deadline> deadlines;
  std::mutex deadlines_mutex;
  auto loader = [&](Deadline d) -> Result<std::string> {  // honours its deadline
    {
      std::lock_guard lock(deadlines_mutex);
      deadlines.push_back(d);
    }
    started.count_down();
    gate.wait();
    if (d.expired()) return make_error(ErrorKind::kTimeout, "statement timeout");
    return std::string("loaded");
  };
  const Deadline leader_deadline = Deadline::after(milliseconds(50));
  Result<std::string> leader = make_error(ErrorKind::kInternal, "unset");
  std::thread lead([&] { leader = flights->call("k", leader_deadline, loader); });
  started.wait();
  Result<std::string> follower = make_error(ErrorKind::kInternal, "unset");
  std::thread follow([&] { follower = flights->call("k", Deadline::after(seconds(30)), loader); });
  wait_until([&] { return flights->stats().shared == 1; });
  wait_until([&] { return leader_deadline.expired(); });
  gate.open();
  lead.join();
  follow.join();
  ASSERT_FALSE(leader);
  EXPECT_EQ(leader.error().kind, ErrorKind::kTimeout);
  ASSERT_TRUE(follower) << follower.error().to_string();
  EXPECT_EQ(*follower, "loaded");
  ASSERT_EQ(deadlines.size(), 2u);
  EXPECT_EQ(deadlines[0].when(), leader_deadline.when()) << "inline: the leader's deadline";
  EXPECT_GT(deadlines[1].when(), leader_deadline.when()) << "handed off: load_timeout";
  EXPECT_EQ(flights->stats().continued, 1u);
  EXPECT_EQ(flights->stats().loads_started, 1u);
}

// No fixed pool caps misses of distinct keys: each caller loads its own.
TEST(SingleFlight, DistinctKeyMissesAreNotCappedByLoadThreads) {
  auto flights = make_flights({.load_threads = 1, .load_queue = 1});
  constexpr int kKeys = 32;
  std::latch all_loading(kKeys);  // every load waits until all are running at once
  std::atomic<int> ok{0};
  std::vector<std::thread> callers;
  for (int i = 0; i < kKeys; ++i) {
    callers.emplace_back([&, i] {
      auto v = flights->call("k" + std::to_string(i), Deadline::after(seconds(30)),
                             [&](Deadline) -> Result<std::string> {
                               all_loading.arrive_and_wait();
                               return std::string("v");
                             });
      if (v) ok.fetch_add(1);
    });
  }
  for (auto& t : callers) t.join();
  EXPECT_EQ(ok.load(), kKeys);
  EXPECT_EQ(flights->stats().inline_loads, static_cast<std::uint64_t>(kKeys));
}

TEST(SingleFlight, LoaderExceptionIsDeliveredToEveryWaiter) {
  Gate gate;
  auto flights = make_flights();
  auto loader = [&](Deadline) -> Result<std::string> {
    gate.wait();
    throw std::runtime_error("database exploded");
  };
  constexpr int kCallers = 8;
  std::vector<Result<std::string>> results(kCallers, std::string("unset"));
  std::vector<std::thread> threads;
  for (int i = 0; i < kCallers; ++i) {
    threads.emplace_back(
        [&, i] { results[i] = flights->call("k", Deadline::after(seconds(30)), loader); });
  }
  wait_until([&] { return flights->stats().shared == kCallers - 1; });
  gate.open();
  for (auto& t : threads) t.join();
  for (const auto& r : results) {
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().kind, ErrorKind::kBackend);
    EXPECT_NE(r.error().message.find("database exploded"), std::string::npos);
  }
}

TEST(SingleFlight, NonStandardExceptionBecomesBackendError) {
  auto flights = make_flights();
  auto r = flights->call("k", Deadline::after(seconds(30)),
                         [](Deadline) -> Result<std::string> { throw 42; });
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().kind, ErrorKind::kBackend);
  EXPECT_NE(r.error().message.find("unknown exception"), std::string::npos);
}

TEST(SingleFlight, WaiterCapRefusesTheExcessWithOverloaded) {
  Gate gate;
  auto flights = make_flights({.max_waiters_per_key = 3});
  auto loader = [&](Deadline) -> Result<std::string> {
    gate.wait();
    return std::string("v");
  };
  std::vector<std::thread> threads;
  std::atomic<int> successes{0};
  for (int i = 0; i < 3; ++i) {
    threads.emplace_back([&] {
      if (flights->call("k", Deadline::after(seconds(30)), loader)) successes.fetch_add(1);
    });
  }
  wait_until([&] { return flights->stats().shared == 2; });
  auto excess = flights->call("k", Deadline::after(seconds(30)), loader);
  ASSERT_FALSE(excess.has_value());
  EXPECT_EQ(excess.error().kind, ErrorKind::kOverloaded);
  EXPECT_EQ(flights->stats().waiters_refused, 1u);
  gate.open();
  for (auto& t : threads) t.join();
  EXPECT_EQ(successes.load(), 3);
}

TEST(SingleFlight, LoadTimeoutReleasesAllWaiters) {
  // Handed off, a hung load holds nobody past load_timeout.
  Gate gate;
  auto flights = make_flights({.load_timeout = milliseconds(50), .inline_loads = false});
  auto loader = [&](Deadline) -> Result<std::string> {
    gate.wait();  // hangs past the load timeout
    return std::string("too late");
  };
  std::vector<Result<std::string>> results(4, std::string("unset"));
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back(
        [&, i] { results[i] = flights->call("k", Deadline::after(seconds(60)), loader); });
  }
  for (auto& t : threads) t.join();  // returns because of load_timeout, not the 60 s deadline
  for (const auto& r : results) {
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().kind, ErrorKind::kTimeout);
    EXPECT_NE(r.error().message.find("load_timeout"), std::string::npos) << r.error().message;
  }
  EXPECT_EQ(flights->stats().load_timeouts, 1u);
  EXPECT_EQ(flights->in_flight(), 0u);
  gate.open();  // let the abandoned load return before the flights are destroyed
}

TEST(SingleFlight, LoadTimeoutReleasesTheFollowersOfAHungInlineLoad) {
  // Inline, a loader that ignores its deadline holds its own leader (the
  // documented limit), but never the followers: they go at load_timeout.
  Gate gate;
  auto flights = make_flights({.load_timeout = seconds(1)});
  std::latch loading(1);
  auto loader = [&](Deadline) -> Result<std::string> {
    loading.count_down();
    gate.wait();
    return std::string("too late");
  };
  Result<std::string> leader = std::string("unset");
  std::thread lead([&] { leader = flights->call("k", Deadline::after(seconds(60)), loader); });
  loading.wait();
  std::vector<Result<std::string>> results(3, std::string("unset"));
  std::vector<std::thread> followers;
  // They join within the 1 s load_timeout; one that came later would start
  // a load of its own, which answers at once (and fails the test, not hangs).
  auto late_start = [](Deadline) -> Result<std::string> { return std::string("late start"); };
  for (int i = 0; i < 3; ++i) {
    followers.emplace_back(
        [&, i] { results[i] = flights->call("k", Deadline::after(seconds(60)), late_start); });
  }
  for (auto& t : followers) t.join();
  for (const auto& r : results) {
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().kind, ErrorKind::kTimeout);
  }
  EXPECT_EQ(flights->in_flight(), 0u);
  gate.open();
  lead.join();
  ASSERT_FALSE(leader.has_value()) << "the flight's result, like its followers'";
  EXPECT_EQ(leader.error().kind, ErrorKind::kTimeout);
  EXPECT_EQ(flights->stats().load_timeouts, 1u);
}

TEST(SingleFlight, AsyncAndBlockingWaitersJoinTheSameFlight) {
  Gate gate;
  auto flights = make_flights();
  std::atomic<int> loads{0};
  auto loader = [&](Deadline) -> Result<std::string> {
    loads.fetch_add(1);
    gate.wait();
    return std::string("shared");
  };
  std::latch async_done(2);
  std::string async_values[2];
  for (int i = 0; i < 2; ++i) {
    auto role = flights->call_async("k", loader, [&, i](const Result<std::string>& r) {
      async_values[i] = r ? *r : r.error().to_string();
      async_done.count_down();
    });
    ASSERT_TRUE(role.has_value());
    EXPECT_EQ(*role, i == 0 ? SingleFlight::Role::kStarted : SingleFlight::Role::kJoined);
  }
  Result<std::string> blocking = make_error(ErrorKind::kInternal, "unset");
  std::thread t([&] { blocking = flights->call("k", Deadline::after(seconds(30)), loader); });
  wait_until([&] { return flights->stats().shared == 2; });
  gate.open();
  t.join();
  async_done.wait();
  EXPECT_EQ(loads.load(), 1);
  ASSERT_TRUE(blocking.has_value());
  EXPECT_EQ(*blocking, "shared");
  EXPECT_EQ(async_values[0], "shared");
  EXPECT_EQ(async_values[1], "shared");
}

TEST(SingleFlight, AsyncCallbackGetsTimeoutExactlyOnce) {
  Gate gate;
  auto flights = make_flights({.load_timeout = milliseconds(30)});
  std::atomic<int> calls{0};
  std::latch called(1);
  auto role = flights->call_async(
      "k",
      [&](Deadline) -> Result<std::string> {
        gate.wait();
        return std::string("late");
      },
      [&](const Result<std::string>& r) {
        EXPECT_FALSE(r.has_value());
        if (calls.fetch_add(1) == 0) called.count_down();
      });
  ASSERT_TRUE(role.has_value());
  called.wait();
  gate.open();
  // Destroying the flights joins the load thread, so the late result has been
  // delivered (to nobody) by the time we count.
  flights.reset();
  EXPECT_EQ(calls.load(), 1);
}

TEST(SingleFlight, FinishedFlightIsNeverJoined) {
  auto flights = make_flights();
  int loads = 0;
  auto loader = [&](Deadline) -> Result<std::string> { return std::to_string(++loads); };
  auto first = flights->call("k", Deadline::after(seconds(30)), loader);
  EXPECT_EQ(flights->in_flight(), 0u);
  auto second = flights->call("k", Deadline::after(seconds(30)), loader);
  ASSERT_TRUE(first && second);
  EXPECT_EQ(*first, "1");
  EXPECT_EQ(*second, "2");  // a new load, not the finished flight's result
  EXPECT_EQ(flights->stats().shared, 0u);
}

TEST(SingleFlight, FullLoadQueueRefusesNewFlights) {
  Gate gate;
  auto flights = make_flights({.inline_loads = false, .load_threads = 1, .load_queue = 1});
  std::latch running(1);
  auto blocking_loader = [&](Deadline) -> Result<std::string> {
    running.count_down();
    gate.wait();
    return std::string("a");
  };
  auto quick_loader = [](Deadline) -> Result<std::string> { return std::string("b"); };
  std::vector<std::string> got;
  std::mutex got_mutex;
  auto record = [&](const Result<std::string>& r) {
    std::lock_guard lock(got_mutex);
    got.push_back(r ? *r : r.error().to_string());
  };
  ASSERT_TRUE(flights->call_async("a", blocking_loader, record));
  running.wait();                                               // the only thread is busy
  ASSERT_TRUE(flights->call_async("b", quick_loader, record));  // fills the queue
  auto refused = flights->call("c", Deadline::after(seconds(30)), quick_loader);
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().kind, ErrorKind::kOverloaded);
  auto refused_async = flights->call_async("d", quick_loader, [](const Result<std::string>&) {
    ADD_FAILURE() << "a refused call_async never calls its callback";
  });
  ASSERT_FALSE(refused_async);
  EXPECT_EQ(refused_async.error().kind, ErrorKind::kOverloaded);
  EXPECT_FALSE(flights->start_if_idle("e", quick_loader));
  EXPECT_EQ(flights->stats().loads_refused, 3u);
  gate.open();
  flights.reset();
  EXPECT_EQ(got.size(), 2u);
}

TEST(SingleFlight, StartIfIdleStartsOneLoadPerKey) {
  Gate gate;
  auto flights = make_flights();
  std::atomic<int> loads{0};
  auto loader = [&](Deadline) -> Result<std::string> {
    loads.fetch_add(1);
    gate.wait();
    return std::string("v");
  };
  auto first = flights->start_if_idle("k", loader);
  ASSERT_TRUE(first.has_value());
  EXPECT_TRUE(*first);
  for (int i = 0; i < 100; ++i) {
    auto again = flights->start_if_idle("k", loader);
    ASSERT_TRUE(again.has_value());
    EXPECT_FALSE(*again);
  }
  gate.open();
  flights.reset();
  EXPECT_EQ(loads.load(), 1);
}

TEST(SingleFlight, ExpiredDeadlineReturnsTimeoutWithoutLoading) {
  auto flights = make_flights();
  bool called = false;
  auto r =
      flights->call("k", Deadline::after(Duration::zero()), [&](Deadline) -> Result<std::string> {
        called = true;
        return std::string("v");
      });
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().kind, ErrorKind::kTimeout);
  EXPECT_FALSE(called);
}

TEST(SingleFlight, SlowTimeoutCallbacksOfOneFlightDoNotDelayAnothersTimeout) {
  // Regression: timed-out flights used to run all their async callbacks on
  // the one watchdog thread, so a flight with slow (or many) callbacks held
  // back every other flight's timeout.
  Gate loads_hang;
  Gate first_callback_hangs;
  auto flights = make_flights({.load_timeout = milliseconds(50), .load_threads = 4});
  auto hanging = [&](Deadline) -> Result<std::string> {
    loads_hang.wait();
    return std::string("late");
  };
  std::atomic<int> slow_delivered{0};
  ASSERT_TRUE(flights->call_async("slow", hanging, [&](const Result<std::string>&) {
    first_callback_hangs.wait();  // holds this flight's delivery
    slow_delivered.fetch_add(1);
  }));
  // Start the second flight only once the first one's delivery is stuck.
  wait_until([&] { return flights->stats().load_timeouts >= 1; });
  std::atomic<bool> other_delivered{false};
  Result<std::string> other = make_error(ErrorKind::kInternal, "unset");
  ASSERT_TRUE(flights->call_async("other", hanging, [&](const Result<std::string>& r) {
    other = r;
    other_delivered = true;
  }));
  wait_until([&] { return other_delivered.load(); });  // the test's timeout bounds a bug
  EXPECT_EQ(other.error().kind, ErrorKind::kTimeout);
  EXPECT_EQ(slow_delivered.load(), 0);
  first_callback_hangs.open();
  loads_hang.open();
  wait_until([&] { return slow_delivered.load() == 1; });
}

TEST(SingleFlight, ForgetDetachesTheFlightFromItsKey) {
  Gate first_gate;
  auto flights = make_flights();
  std::atomic<int> loads{0};
  auto loader = [&](Deadline) -> Result<std::string> {
    const int n = loads.fetch_add(1);
    if (n == 0) first_gate.wait();
    return std::string("load-") + std::to_string(n);
  };
  Result<std::string> first = make_error(ErrorKind::kInternal, "unset");
  std::thread t([&] { first = flights->call("k", Deadline::after(seconds(10)), loader); });
  wait_until([&] { return loads.load() == 1; });
  flights->forget("k");
  // A later caller starts a new flight instead of joining the detached one.
  EXPECT_EQ(*flights->call("k", Deadline::after(seconds(10)), loader), "load-1");
  first_gate.open();
  t.join();
  EXPECT_EQ(*first, "load-0");  // the detached flight still delivered to its caller
  flights->forget("absent");    // no flight: nothing happens
}

TEST(SingleFlight, ValidateNamesTheBadField) {
  auto r = SingleFlight::create({.load_timeout = Duration::zero()});
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().kind, ErrorKind::kInvalidArgument);
  EXPECT_NE(r.error().message.find("load_timeout"), std::string::npos);
  EXPECT_FALSE(SingleFlight::create({.max_waiters_per_key = 0}).has_value());
  EXPECT_FALSE(SingleFlight::create({.load_threads = 0}).has_value());
  EXPECT_FALSE(SingleFlight::create({.load_queue = 0}).has_value());
}

}  // namespace
}  // namespace herdguard
