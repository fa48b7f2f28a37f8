#include "core/bounded_executor.h"

#include <utility>

namespace herdguard::internal {

BoundedExecutor::BoundedExecutor(std::size_t threads, std::size_t queue_capacity, std::string name)
    : queue_capacity_(queue_capacity), name_(std::move(name)) {
  threads_.reserve(threads);
  for (std::size_t i = 0; i < threads; ++i) threads_.emplace_back([this] { run(); });
}

BoundedExecutor::~BoundedExecutor() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  work_available_.notify_all();
  for (auto& t : threads_) t.join();
}

bool BoundedExecutor::try_submit(std::function<void()> task) {
  {
    std::lock_guard lock(mutex_);
    if (stopping_ || queue_.size() >= queue_capacity_) {
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
      // Tasks report their own errors; this only keeps a bug from killing the process.
    }
  }
}

}  // namespace herdguard::internal
