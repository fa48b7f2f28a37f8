#include "core/bounded_executor.h"

#include <fmt/format.h>

#include <system_error>
#include <utility>

namespace herdguard::internal {

Result<std::unique_ptr<BoundedExecutor>> BoundedExecutor::create(std::size_t threads,
                                                                 std::size_t queue_capacity,
                                                                 std::string name,
                                                                 ThreadStarter start_thread) {
  if (threads == 0 || queue_capacity == 0) {
    return make_error(ErrorKind::kInvalidArgument,
                      fmt::format("{}: threads and queue capacity must be >= 1", name));
  }
  if (!start_thread) start_thread = [](std::function<void()> body) { return std::thread(body); };
  std::unique_ptr<BoundedExecutor> executor(new BoundedExecutor(queue_capacity, name));
  executor->threads_.reserve(threads);
  for (std::size_t i = 0; i < threads; ++i) {
    try {
      BoundedExecutor* raw = executor.get();
      executor->threads_.push_back(start_thread([raw] { raw->run(); }));
    } catch (const std::system_error& e) {
      // The destructor stops and joins the threads that did start.
      return make_error(ErrorKind::kInternal, fmt::format("{}: could not start thread {} of {}: {}",
                                                          name, i + 1, threads, e.what()));
    }
  }
  return executor;
}

BoundedExecutor::BoundedExecutor(std::size_t queue_capacity, std::string name)
    : queue_capacity_(queue_capacity), name_(std::move(name)) {}

BoundedExecutor::~BoundedExecutor() { stop_and_join(); }

void BoundedExecutor::stop_and_join() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  work_available_.notify_all();
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
}

bool BoundedExecutor::try_submit(std::function<void()> task) {
  {
    std::lock_guard lock(mutex_);
    if (stopping_ || threads_.empty() || queue_.size() >= queue_capacity_) {
      ++rejected_;
      return false;
    }
    queue_.push_back(std::move(task));
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

void BoundedExecutor::run() {
  for (;;) {
    std::function<void()> task;
    {
      std::unique_lock lock(mutex_);
      work_available_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      // Drain the queue even when stopping: queued work has promised waiters.
      if (queue_.empty()) return;
      task = std::move(queue_.front());
      queue_.pop_front();
    }
    try {
      task();
    } catch (...) {
      // Tasks report their own errors; this only keeps a bug from killing
      // the process, and counts it so that it is not silent.
      std::lock_guard lock(mutex_);
      ++task_exceptions_;
    }
  }
}

}  // namespace herdguard::internal
