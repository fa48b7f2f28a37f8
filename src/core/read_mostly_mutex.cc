#include "core/read_mostly_mutex.h"

#include <atomic>

namespace herdguard::internal {

std::size_t ReadMostlyMutex::stripe_of_this_thread() noexcept {
  static std::atomic<std::size_t> next{0};
  thread_local const std::size_t index = next.fetch_add(1, std::memory_order_relaxed) % kStripes;
  return index;
}

}  // namespace herdguard::internal
