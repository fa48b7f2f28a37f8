// Internal: an elastic pool of threads, bounded in threads and queue.
//
// Used for loads handed off by their callers, background refreshes and
// timeout deliveries. Threads start on demand, up to max_threads, and those
// beyond min_threads retire after idle_timeout without work; so a burst of
// distinct-key work is not capped at a small fixed pool, and an idle process
// keeps no threads it does not use. Work beyond max_threads waits in a queue
// of queue_capacity; when that is full, try_submit() refuses instead of
// growing without bound.
//
// Thread safety: try_submit() and the statistics are safe from any thread.
// The destructor stops accepting work, runs what is queued, and joins.
//
// Invariants (all under mutex_):
//  * alive_ <= max_threads; at most queue_capacity tasks wait.
//  * idle_ counts the threads blocked waiting for work. A task is queued
//    with a new thread started for it unless idle_ >= the queue's length
//    (some idle thread will take it) or alive_ == max_threads.
//  * a retiring thread records its handle in retired_; the next start or
//    the destructor joins it (a thread cannot join itself).
//  * a task that throws is contained: the exception is swallowed and counted
//    in task_exceptions(); tasks are expected to catch and report their own.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "herdguard/clock.h"
#include "herdguard/result.h"

namespace herdguard::internal {

// Starts one thread; throws std::system_error when the OS refuses (the
// default is std::thread's constructor). Replaceable for tests.
using ThreadStarter = std::function<std::thread(std::function<void()>)>;

struct ExecutorOptions {
  std::string name = "herdguard";
  // Started by create() and never retired. REQUIRES: <= max_threads.
  std::size_t min_threads = 0;
  // Most threads at once. REQUIRES: >= 1.
  std::size_t max_threads = 1;
  // Most tasks waiting for a thread. REQUIRES: >= 1.
  std::size_t queue_capacity = 1;
  // A thread beyond min_threads with no work for this long retires.
  // REQUIRES: > 0.
  Duration idle_timeout = std::chrono::seconds(10);
  ThreadStarter start_thread = {};  // empty: std::thread
};

class BoundedExecutor {
 public:
  // Starts min_threads threads. Errors: kInvalidArgument (a bound out of
  // range); kInternal when one of them cannot be started — those already
  // started are stopped and joined first.
  static Result<std::unique_ptr<BoundedExecutor>> create(ExecutorOptions options);
  // A fixed pool: `threads` threads started at once, none retiring.
  static Result<std::unique_ptr<BoundedExecutor>> create(std::size_t threads,
                                                         std::size_t queue_capacity,
                                                         std::string name,
                                                         ThreadStarter start_thread = {});
  ~BoundedExecutor();
  BoundedExecutor(const BoundedExecutor&) = delete;
  BoundedExecutor& operator=(const BoundedExecutor&) = delete;

  // Queues `task`, starting a thread for it when none is idle and fewer than
  // max_threads run. Returns false, without running it, when the queue is
  // full, the executor is shutting down, or no thread exists and none can be
  // started. Never blocks on running tasks.
  bool try_submit(std::function<void()> task);

  std::uint64_t rejected() const;
  std::uint64_t task_exceptions() const;
  std::size_t queued() const;
  std::size_t threads() const;       // alive now
  std::size_t idle_threads() const;  // alive and waiting for work
  std::size_t peak_threads() const;  // most alive at once since creation

 private:
  using Workers = std::list<std::thread>;

  explicit BoundedExecutor(ExecutorOptions options);
  // Starts one thread. REQUIRES: mutex_ held. Returns false when the OS refused.
  bool start_thread_locked();
  void join_retired_locked();
  void run(Workers::iterator self);
  void stop_and_join();

  const ExecutorOptions options_;
  mutable std::mutex mutex_;
  std::condition_variable work_available_;
  // State below is protected by mutex_.
  std::deque<std::function<void()>> queue_;
  bool stopping_ = false;
  std::size_t alive_ = 0;
  std::size_t idle_ = 0;
  std::size_t peak_ = 0;
  std::uint64_t rejected_ = 0;
  std::uint64_t task_exceptions_ = 0;
  Workers workers_;                         // one handle per thread started, not yet joined
  std::vector<Workers::iterator> retired_;  // handles of threads that returned
};

}  // namespace herdguard::internal
