// Internal: a fixed pool of threads fed by a bounded queue.
//
// Used for loads and background refreshes so that background work is bounded:
// when the queue is full, try_submit() refuses instead of spawning or growing.
//
// Thread safety: try_submit() and stats are safe from any thread. The
// destructor stops accepting work, runs what is queued, and joins.
//
// Invariants:
//  * at most `threads` tasks run at once; at most `queue_capacity` wait.
//  * a task that throws is contained: the exception is swallowed and counted
//    in task_exceptions(); tasks are expected to catch and report their own.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "herdguard/result.h"

namespace herdguard::internal {

class BoundedExecutor {
 public:
  // Starts one thread; throws std::system_error when the OS refuses (the
  // default is std::thread's constructor). Replaceable for tests.
  using ThreadStarter = std::function<std::thread(std::function<void()>)>;

  // Starts `threads` threads. Errors: kInvalidArgument (threads or
  // queue_capacity 0); kInternal when a thread cannot be started — the
  // threads already started are stopped and joined first.
  static Result<std::unique_ptr<BoundedExecutor>> create(std::size_t threads,
                                                         std::size_t queue_capacity,
                                                         std::string name,
                                                         ThreadStarter start_thread = {});
  ~BoundedExecutor();
  BoundedExecutor(const BoundedExecutor&) = delete;
  BoundedExecutor& operator=(const BoundedExecutor&) = delete;

  // Queues `task`. Returns false, without running it, when the queue is full
  // or the executor is shutting down. Never blocks on running tasks.
  bool try_submit(std::function<void()> task);

  std::uint64_t rejected() const;
  std::uint64_t task_exceptions() const;
  std::size_t queued() const;

 private:
  BoundedExecutor(std::size_t queue_capacity, std::string name);
  void run();
  void stop_and_join();

  const std::size_t queue_capacity_;
  const std::string name_;
  mutable std::mutex mutex_;
  std::condition_variable work_available_;
  // State below is protected by mutex_.
  std::deque<std::function<void()>> queue_;
  bool stopping_ = false;
  std::uint64_t rejected_ = 0;
  std::uint64_t task_exceptions_ = 0;

  std::vector<std::thread> threads_;  // started by create(), joined in the destructor
};

}  // namespace herdguard::internal
