#include "core/thread_ordinal.h"

#include <atomic>

namespace herdguard::internal {

std::size_t thread_ordinal() noexcept {
  static std::atomic<std::size_t> next{0};
  thread_local const std::size_t ordinal = next.fetch_add(1, std::memory_order_relaxed);
  return ordinal;
}

}  // namespace herdguard::internal
