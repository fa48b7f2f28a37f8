#include "core/bounded_executor.h"

#include <gtest/gtest.h>

#include <atomic>
#include <latch>

#include "test_support.h"

namespace herdguard::internal {
namespace {

TEST(BoundedExecutor, RunsSubmittedTasks) {
  std::atomic<int> ran{0};
  {
    BoundedExecutor executor(2, 100, "test");
    for (int i = 0; i < 50; ++i) ASSERT_TRUE(executor.try_submit([&] { ran.fetch_add(1); }));
  }  // the destructor drains the queue
  EXPECT_EQ(ran.load(), 50);
}

TEST(BoundedExecutor, FullQueueRefusesAndCounts) {
  testing::Gate gate;
  std::latch running(1);
  BoundedExecutor executor(1, 2, "test");
  ASSERT_TRUE(executor.try_submit([&] {
    running.count_down();
    gate.wait();
  }));
  running.wait();  // the only thread is now busy
  EXPECT_TRUE(executor.try_submit([] {}));
  EXPECT_TRUE(executor.try_submit([] {}));
  EXPECT_FALSE(executor.try_submit([] {}));  // queue of 2 is full
  EXPECT_EQ(executor.rejected(), 1u);
  EXPECT_EQ(executor.queued(), 2u);
  gate.open();
}

TEST(BoundedExecutor, ThrowingTaskDoesNotKillTheWorker) {
  std::atomic<int> ran{0};
  {
    BoundedExecutor executor(1, 10, "test");
    ASSERT_TRUE(executor.try_submit([] { throw std::runtime_error("boom"); }));
    ASSERT_TRUE(executor.try_submit([&] { ran.fetch_add(1); }));
  }
  EXPECT_EQ(ran.load(), 1);
}

}  // namespace
}  // namespace herdguard::internal
