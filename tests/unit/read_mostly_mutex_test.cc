// The L1's striped reader-writer lock (src/core/read_mostly_mutex.h): readers
// on different threads (and so, mostly, different stripes) share it, and a
// writer excludes every one of them.
#include "core/read_mostly_mutex.h"

#include <gtest/gtest.h>

#include <atomic>
#include <latch>
#include <mutex>
#include <shared_mutex>
#include <thread>
#include <vector>

namespace herdguard::internal {
namespace {

constexpr int kReaders = 12;  // more than the stripes: some share one

TEST(ReadMostlyMutex, ReadersHoldItTogether) {
  ReadMostlyMutex m;
  std::latch all_in(kReaders);
  std::vector<std::thread> readers;
  for (int i = 0; i < kReaders; ++i) {
    readers.emplace_back([&] {
      std::shared_lock lock(m);
      all_in.arrive_and_wait();  // would never complete if readers excluded each other
    });
  }
  for (auto& t : readers) t.join();
}

TEST(ReadMostlyMutex, AWriterWaitsForEveryReaderOnEveryStripe) {
  ReadMostlyMutex m;
  std::latch holding(kReaders);
  std::latch release(1);
  std::vector<std::thread> readers;
  for (int i = 0; i < kReaders; ++i) {
    readers.emplace_back([&] {
      std::shared_lock lock(m);
      holding.count_down();
      release.wait();
    });
  }
  holding.wait();
  std::atomic<bool> written{false};
  std::thread writer([&] {
    std::unique_lock lock(m);
    written.store(true);
  });
  EXPECT_FALSE(written.load());  // every reader still holds its stripe
  release.count_down();
  for (auto& t : readers) t.join();
  writer.join();
  EXPECT_TRUE(written.load());
}

TEST(ReadMostlyMutex, ReadersWaitForAWriter) {
  ReadMostlyMutex m;
  std::atomic<int> counter{0};
  std::unique_lock lock(m);
  std::vector<std::thread> readers;
  std::atomic<int> seen_while_written{0};
  for (int i = 0; i < kReaders; ++i) {
    readers.emplace_back([&] {
      std::shared_lock shared(m);
      if (counter.load() == 0) seen_while_written.fetch_add(1);
    });
  }
  counter.store(1);  // written under the exclusive lock
  lock.unlock();
  for (auto& t : readers) t.join();
  EXPECT_EQ(seen_while_written.load(), 0);
}

// Writers and readers from more threads than owned stripes (so readers use
// both the owned and the shared stripes, through both reader interfaces)
// keep a two-word invariant intact.
TEST(ReadMostlyMutex, KeepsAnInvariantUnderConcurrentUse) {
  ReadMostlyMutex m;
  long a = 0, b = 0;  // protected by m: a == b between critical sections
  std::atomic<int> broken{0};
  constexpr int kThreads = static_cast<int>(ReadMostlyMutex::kOwnedStripes) + 6;
  std::latch start(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      start.arrive_and_wait();  // all alive at once: ordinals past the owned stripes
      for (int i = 0; i < 2000; ++i) {
        if ((i + t) % 4 == 0) {
          std::unique_lock lock(m);
          ++a;
          ++b;
        } else if (i % 2 == 0) {
          ReadMostlyMutex::Reader lock(m);
          if (a != b) broken.fetch_add(1);
        } else {
          std::shared_lock lock(m);
          if (a != b) broken.fetch_add(1);
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(broken.load(), 0);
  EXPECT_EQ(a, 500L * kThreads);
}

}  // namespace
}  // namespace herdguard::internal
