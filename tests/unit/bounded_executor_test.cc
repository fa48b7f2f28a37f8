#include "core/bounded_executor.h"

#include <gtest/gtest.h>

#include <atomic>
#include <latch>
#include <system_error>

#include "test_support.h"

namespace herdguard::internal {
namespace {

std::unique_ptr<BoundedExecutor> make(std::size_t threads, std::size_t queue) {
  auto created = BoundedExecutor::create(threads, queue, "test");
  EXPECT_TRUE(created) << created.error().to_string();
  return std::move(*created);
}

TEST(BoundedExecutor, RunsSubmittedTasks) {
  std::atomic<int> ran{0};
  {
    auto executor = make(2, 100);
    for (int i = 0; i < 50; ++i) ASSERT_TRUE(executor->try_submit([&] { ran.fetch_add(1); }));
  }  // the destructor drains the queue
  EXPECT_EQ(ran.load(), 50);
}

TEST(BoundedExecutor, FullQueueRefusesAndCounts) {
  testing::Gate gate;
  std::latch running(1);
  auto executor = make(1, 2);
  ASSERT_TRUE(executor->try_submit([&] {
    running.count_down();
    gate.wait();
  }));
  running.wait();  // the only thread is now busy
  EXPECT_TRUE(executor->try_submit([] {}));
  EXPECT_TRUE(executor->try_submit([] {}));
  EXPECT_FALSE(executor->try_submit([] {}));  // queue of 2 is full
  EXPECT_EQ(executor->rejected(), 1u);
  EXPECT_EQ(executor->queued(), 2u);
  gate.open();
}

TEST(BoundedExecutor, ThrowingTaskDoesNotKillTheWorkerAndIsCounted) {
  std::atomic<int> ran{0};
  std::uint64_t exceptions = 0;
  {
    auto executor = make(1, 10);
    ASSERT_TRUE(executor->try_submit([] { throw std::runtime_error("boom"); }));
    ASSERT_TRUE(executor->try_submit([&] { ran.fetch_add(1); }));
    testing::wait_until([&] { return ran.load() == 1; });
    exceptions = executor->task_exceptions();
  }
  EXPECT_EQ(ran.load(), 1);
  EXPECT_EQ(exceptions, 1u);
}

TEST(BoundedExecutor, ThreadThatFailsToStartIsAnErrorNotATermination) {
  // Regression: the constructor used to call std::terminate (a joinable
  // std::thread destroyed) when the OS refused the third thread.
  int started = 0;
  auto starter = [&](std::function<void()> body) -> std::thread {
    if (++started == 3)
      throw std::system_error(std::make_error_code(std::errc::resource_unavailable_try_again));
    return std::thread(std::move(body));
  };
  auto created = BoundedExecutor::create(4, 10, "test", starter);
  ASSERT_FALSE(created);
  EXPECT_EQ(created.error().kind, ErrorKind::kInternal);
  EXPECT_NE(created.error().message.find("thread 3 of 4"), std::string::npos)
      << created.error().message;
}

TEST(BoundedExecutor, ZeroThreadsIsRefused) {
  auto created = BoundedExecutor::create(0, 10, "test");
  ASSERT_FALSE(created);
  EXPECT_EQ(created.error().kind, ErrorKind::kInvalidArgument);
}

}  // namespace
}  // namespace herdguard::internal
