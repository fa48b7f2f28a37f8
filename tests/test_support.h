// Helpers shared by the unit tests: a gate that holds a loader until the test
// opens it, and a wait for a condition that another thread makes true.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

namespace herdguard::testing {

// Blocks callers of wait() until open() is called. Used instead of sleeps to
// hold a load "in the middle" for exactly as long as a test needs.
class Gate {
 public:
  void open() {
    {
      std::lock_guard lock(mutex_);
      open_ = true;
    }
    opened_.notify_all();
  }
  void wait() {
    std::unique_lock lock(mutex_);
    opened_.wait(lock, [this] { return open_; });
  }

 private:
  std::mutex mutex_;
  std::condition_variable opened_;
  bool open_ = false;
};

// Yields until `condition()` holds. The condition must become true through
// another thread's progress; the test's own timeout bounds a bug.
template <typename Condition>
void wait_until(Condition condition) {
  while (!condition()) std::this_thread::yield();
}

// Yields until `condition()` holds or `within` passes; returns whether it
// held. For conditions a background thread or another process makes true.
template <typename Condition>
bool eventually(Condition condition, std::chrono::nanoseconds within = std::chrono::seconds(10)) {
  const auto give_up = std::chrono::steady_clock::now() + within;
  while (!condition()) {
    if (std::chrono::steady_clock::now() >= give_up) return false;
    std::this_thread::yield();
  }
  return true;
}

}  // namespace herdguard::testing
