#include "herdguard/single_flight.h"

#include <gtest/gtest.h>

#include <atomic>
#include <latch>
#include <string>
#include <thread>
#include <vector>

#include "test_support.h"

namespace herdguard {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using testing::Gate;
using testing::wait_until;

std::unique_ptr<SingleFlight> make_flights(SingleFlightOptions options = {}) {
  auto flights = SingleFlight::create(options);
  EXPECT_TRUE(flights.has_value());
  return std::move(*flights);
}

TEST(SingleFlight, ConcurrentCallersShareOneLoad) {
  auto flights = make_flights();
  Gate gate;
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

TEST(SingleFlight, LeaderTimeoutDoesNotFailFollowers) {
  auto flights = make_flights();
  Gate gate;
  auto loader = [&](Deadline) -> Result<std::string> {
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
  EXPECT_EQ(flights->stats().loads_started, 1u);
  EXPECT_EQ(flights->stats().waiter_timeouts, 1u);
}

TEST(SingleFlight, LoaderExceptionIsDeliveredToEveryWaiter) {
  auto flights = make_flights();
  Gate gate;
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
  auto flights = make_flights({.max_waiters_per_key = 3});
  Gate gate;
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
  auto flights = make_flights({.load_timeout = milliseconds(50)});
  Gate gate;
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

TEST(SingleFlight, AsyncAndBlockingWaitersJoinTheSameFlight) {
  auto flights = make_flights();
  Gate gate;
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
  auto flights = make_flights({.load_timeout = milliseconds(30)});
  Gate gate;
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
  auto flights = make_flights({.load_threads = 1, .load_queue = 1});
  Gate gate;
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
  EXPECT_EQ(flights->stats().loads_refused, 1u);
  gate.open();
  flights.reset();
  EXPECT_EQ(got.size(), 2u);
}

TEST(SingleFlight, StartIfIdleStartsOneLoadPerKey) {
  auto flights = make_flights();
  Gate gate;
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
  auto flights = make_flights({.load_timeout = milliseconds(50), .load_threads = 4});
  Gate loads_hang;
  Gate first_callback_hangs;
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
  auto flights = make_flights();
  Gate first_gate;
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
