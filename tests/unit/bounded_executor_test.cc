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

std::unique_ptr<BoundedExecutor> make_elastic(std::size_t max_threads, std::size_t queue,
                                              Duration idle_timeout) {
  auto created = BoundedExecutor::create(ExecutorOptions{.name = "elastic",
                                                         .max_threads = max_threads,
                                                         .queue_capacity = queue,
                                                         .idle_timeout = idle_timeout});
  EXPECT_TRUE(created) << created.error().to_string();
  return std::move(*created);
}

TEST(BoundedExecutor, ElasticStartsThreadsOnDemandUpToItsMaximum) {
  testing::Gate gate;
  std::atomic<int> running{0};
  std::atomic<int> ran{0};
  auto executor = make_elastic(4, 100, std::chrono::seconds(60));
  EXPECT_EQ(executor->threads(), 0u) << "no thread before there is work";
  auto task = [&] {
    running.fetch_add(1);
    gate.wait();
    ran.fetch_add(1);
  };
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(executor->try_submit(task));
  testing::wait_until([&] { return running.load() == 4; });  // four at once
  EXPECT_EQ(executor->threads(), 4u);
  ASSERT_TRUE(executor->try_submit(task));
  EXPECT_EQ(executor->queued(), 1u) << "the fifth waits: max_threads is 4";
  EXPECT_EQ(executor->threads(), 4u);
  gate.open();
  testing::wait_until([&] { return ran.load() == 5; });
  EXPECT_EQ(executor->peak_threads(), 4u);
}

TEST(BoundedExecutor, IdleThreadsRetireAndNewWorkStartsThemAgain) {
  std::atomic<int> ran{0};
  auto executor = make_elastic(2, 10, std::chrono::milliseconds(20));
  ASSERT_TRUE(executor->try_submit([&] { ran.fetch_add(1); }));
  testing::wait_until([&] { return ran.load() == 1; });
  testing::wait_until([&] { return executor->threads() == 0; });  // retired after 20 ms idle
  ASSERT_TRUE(executor->try_submit([&] { ran.fetch_add(1); }));
  testing::wait_until([&] { return ran.load() == 2; });
  EXPECT_EQ(executor->peak_threads(), 1u);
}

TEST(BoundedExecutor, AnIdleThreadTakesNewWorkInsteadOfANewThread) {
  std::atomic<int> ran{0};
  auto executor = make_elastic(8, 100, std::chrono::seconds(60));
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(executor->try_submit([&] { ran.fetch_add(1); }));
    testing::wait_until([&] { return ran.load() == i + 1 && executor->idle_threads() == 1; });
  }
  EXPECT_EQ(executor->peak_threads(), 1u) << "one task at a time needs one thread";
}

TEST(BoundedExecutor, FixedPoolStartsItsThreadsAtOnce) {
  auto executor = make(3, 10);
  EXPECT_EQ(executor->threads(), 3u);
}

TEST(BoundedExecutor, ElasticThreadThatFailsToStartRefusesTheTask) {
  auto created = BoundedExecutor::create(ExecutorOptions{
      .name = "refusing",
      .max_threads = 2,
      .queue_capacity = 10,
      .start_thread = [](std::function<void()>) -> std::thread {
        throw std::system_error(std::make_error_code(std::errc::resource_unavailable_try_again));
      }});
  ASSERT_TRUE(created);
  EXPECT_FALSE((*created)->try_submit([] {})) << "nobody could ever run it";
  EXPECT_EQ((*created)->rejected(), 1u);
  EXPECT_EQ((*created)->queued(), 0u);
}

}  // namespace
}  // namespace herdguard::internal
