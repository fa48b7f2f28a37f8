#include "core/bounded_executor.h"

#include <fmt/format.h>

#include <algorithm>
#include <system_error>
#include <utility>

namespace herdguard::internal {

Result<std::unique_ptr<BoundedExecutor>> BoundedExecutor::create(ExecutorOptions options) {
  if (options.max_threads == 0 || options.queue_capacity == 0 ||
      options.min_threads > options.max_threads || options.idle_timeout <= Duration::zero()) {
    return make_error(ErrorKind::kInvalidArgument,
                      fmt::format("{}: need 1 <= max_threads, min_threads <= max_threads, "
                                  "queue capacity >= 1 and idle_timeout > 0",
                                  options.name));
  }
  if (!options.start_thread) {
    options.start_thread = [](std::function<void()> body) { return std::thread(std::move(body)); };
  }
  std::unique_ptr<BoundedExecutor> executor(new BoundedExecutor(std::move(options)));
  std::lock_guard lock(executor->mutex_);
  const ExecutorOptions& o = executor->options_;
  for (std::size_t i = 0; i < o.min_threads; ++i) {
    if (!executor->start_thread_locked()) {
      // The destructor stops and joins the threads that did start.
      return make_error(ErrorKind::kInternal, fmt::format("{}: could not start thread {} of {}",
                                                          o.name, i + 1, o.min_threads));
    }
  }
  return executor;
}

Result<std::unique_ptr<BoundedExecutor>> BoundedExecutor::create(std::size_t threads,
                                                                 std::size_t queue_capacity,
                                                                 std::string name,
                                                                 ThreadStarter start_thread) {
  return create(ExecutorOptions{.name = std::move(name),
                                .min_threads = threads,
                                .max_threads = threads,
                                .queue_capacity = queue_capacity,
                                .start_thread = std::move(start_thread)});
}

BoundedExecutor::BoundedExecutor(ExecutorOptions options) : options_(std::move(options)) {}

BoundedExecutor::~BoundedExecutor() { stop_and_join(); }

bool BoundedExecutor::start_thread_locked() {
  join_retired_locked();
  auto self = workers_.emplace(workers_.end());
  try {
    // Assigned under mutex_; the new thread reads its handle only under
    // mutex_ too (when it retires), so it never sees it half-written.
    *self = options_.start_thread([this, self] { run(self); });
  } catch (const std::system_error&) {
    workers_.erase(self);
    return false;
  }
  ++alive_;
  peak_ = std::max(peak_, alive_);
  return true;
}

void BoundedExecutor::join_retired_locked() {
  // A retired thread only has to return from run() (it no longer needs
  // mutex_), so these joins are short.
  for (auto it : retired_) {
    if (it->joinable()) it->join();
    workers_.erase(it);
  }
  retired_.clear();
}

void BoundedExecutor::stop_and_join() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  work_available_.notify_all();
  // No thread is started once stopping_ is set, so workers_ no longer grows;
  // retiring threads only append to retired_, which is not read from here on.
  for (auto& t : workers_) {
    if (t.joinable()) t.join();
  }
}

bool BoundedExecutor::try_submit(std::function<void()> task) {
  {
    std::lock_guard lock(mutex_);
    if (stopping_ || queue_.size() >= options_.queue_capacity) {
      ++rejected_;
      return false;
    }
    queue_.push_back(std::move(task));
    if (idle_ < queue_.size() && alive_ < options_.max_threads) {
      if (!start_thread_locked() && alive_ == 0) {
        // Nobody would ever run it.
        queue_.pop_back();
        ++rejected_;
        return false;
      }
    }
  }
  work_available_.notify_one();
  return true;
}

std::uint64_t BoundedExecutor::rejected() const {
  std::lock_guard lock(mutex_);
  return rejected_;
}

std::uint64_t BoundedExecutor::task_exceptions() const {
  std::lock_guard lock(mutex_);
  return task_exceptions_;
}

std::size_t BoundedExecutor::queued() const {
  std::lock_guard lock(mutex_);
  return queue_.size();
}

std::size_t BoundedExecutor::threads() const {
  std::lock_guard lock(mutex_);
  return alive_;
}

std::size_t BoundedExecutor::idle_threads() const {
  std::lock_guard lock(mutex_);
  return idle_;
}

std::size_t BoundedExecutor::peak_threads() const {
  std::lock_guard lock(mutex_);
  return peak_;
}

void BoundedExecutor::run(Workers::iterator self) {
  std::unique_lock lock(mutex_);
  for (;;) {
    while (queue_.empty() && !stopping_) {
      ++idle_;
      const bool woken = work_available_.wait_for(lock, options_.idle_timeout,
                                                  [this] { return stopping_ || !queue_.empty(); });
      --idle_;
      if (!woken && alive_ > options_.min_threads) {
        --alive_;
        retired_.push_back(self);
        return;
      }
    }
    // Drain the queue even when stopping: queued work has promised waiters.
    if (queue_.empty()) {
      --alive_;
      return;
    }
    std::function<void()> task = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    bool threw = false;
    try {
      task();
    } catch (...) {
      // Tasks report their own errors; this only keeps a bug from killing
      // the process, and counts it so that it is not silent.
      threw = true;
    }
    task = nullptr;  // its captures go before the lock is taken again
    lock.lock();
    if (threw) ++task_exceptions_;
  }
}

}  // namespace herdguard::internal
