// The per-thread numbers (src/core/thread_ordinal.h) and the striped counter
// built on them (src/metrics/striped_counter.h): live threads never share a
// number, numbers are given back at thread exit and reused lowest first, and
// a counter bumped by more threads than it has owned cells loses no count.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <latch>
#include <set>
#include <thread>
#include <vector>

#include "core/thread_ordinal.h"
#include "metrics/striped_counter.h"

namespace herdguard::internal {
namespace {

// The ordinals of `n` threads that are all alive at once.
std::vector<std::size_t> ordinals_of_live_threads(int n) {
  std::vector<std::size_t> ordinals(static_cast<std::size_t>(n));
  std::latch all_have_one(n);
  std::vector<std::thread> threads;
  for (int i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      ordinals[static_cast<std::size_t>(i)] = thread_ordinal();
      EXPECT_EQ(thread_ordinal(), ordinals[static_cast<std::size_t>(i)]);  // stable
      all_have_one.arrive_and_wait();  // nobody exits before all have taken one
    });
  }
  for (auto& t : threads) t.join();
  return ordinals;
}

TEST(ThreadOrdinal, LiveThreadsNeverShareANumber) {
  const std::vector<std::size_t> ordinals = ordinals_of_live_threads(40);
  const std::set<std::size_t> distinct(ordinals.begin(), ordinals.end());
  EXPECT_EQ(distinct.size(), ordinals.size());
  for (std::size_t n : ordinals) EXPECT_LT(n, kRetiredThreadOrdinal);
}

TEST(ThreadOrdinal, NumbersOfExitedThreadsAreReusedSoTheyStayDense) {
  const std::size_t mine = thread_ordinal();
  // Whatever other tests left behind, 20 threads at a time never need
  // numbers beyond the live threads' count (plus this thread's).
  for (int round = 0; round < 5; ++round) {
    const std::vector<std::size_t> ordinals = ordinals_of_live_threads(20);
    for (std::size_t n : ordinals) EXPECT_NE(n, mine);
    EXPECT_LE(*std::max_element(ordinals.begin(), ordinals.end()), std::size_t{20})
        << "round " << round << ": exited threads' numbers were not reused";
  }
}

TEST(StripedCounter, CountsEveryAddFromMoreThreadsThanOwnedCells) {
  StripedCounter counter;
  constexpr int kThreads = static_cast<int>(StripedCounter::kOwnedCells) + 8;
  constexpr int kAdds = 20000;
  std::latch start(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      start.arrive_and_wait();  // all alive together: some use the shared cells
      for (int i = 0; i < kAdds; ++i) counter.add();
      counter.add(5);
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(counter.value(), std::uint64_t{kThreads} * (kAdds + 5));
}

TEST(StripedCounter, ACountSurvivesTheThreadThatMadeItAndTheNextOwnerOfItsCell) {
  StripedCounter counter;
  for (int round = 0; round < 10; ++round) {
    std::thread([&] { counter.add(3); }).join();  // each may reuse the last one's cell
  }
  EXPECT_EQ(counter.value(), 30u);
}

}  // namespace
}  // namespace herdguard::internal
