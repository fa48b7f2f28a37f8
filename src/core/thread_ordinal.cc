#include "core/thread_ordinal.h"

#include <functional>
#include <mutex>
#include <queue>
#include <vector>

namespace herdguard::internal {
namespace {

// The numbers handed out, lowest free first. Intentionally leaked: threads
// may exit (and give their number back) during static destruction.
class OrdinalPool {
 public:
  std::size_t take() {
    std::lock_guard lock(mutex_);
    if (free_.empty()) return next_++;
    const std::size_t n = free_.top();
    free_.pop();
    return n;
  }
  void give_back(std::size_t n) {
    std::lock_guard lock(mutex_);
    free_.push(n);
  }

 private:
  std::mutex mutex_;
  // Guarded by mutex_: numbers below next_ that no live thread holds.
  std::priority_queue<std::size_t, std::vector<std::size_t>, std::greater<>> free_;
  std::size_t next_ = 0;  // guarded by mutex_
};

OrdinalPool& pool() {
  static OrdinalPool* const p = new OrdinalPool();
  return *p;
}

// Gives the thread's number back when the thread exits. The pool's mutex
// orders this thread's last writes to its stripes before the next owner's.
struct OrdinalReturn {
  ~OrdinalReturn() {
    const std::size_t n = this_thread_ordinal;
    this_thread_ordinal = kRetiredThreadOrdinal;
    if (n < kRetiredThreadOrdinal) pool().give_back(n);
  }
};

}  // namespace

std::size_t acquire_thread_ordinal() noexcept {
  // A thread that already gave its number back keeps the retired one.
  static thread_local OrdinalReturn give_back_at_exit;
  const std::size_t n = pool().take();
  // More live threads than kRetiredThreadOrdinal would share numbers;
  // such a thread is treated as retired instead (shared stripes only).
  this_thread_ordinal = n < kRetiredThreadOrdinal ? n : kRetiredThreadOrdinal;
  return this_thread_ordinal;
}

}  // namespace herdguard::internal
