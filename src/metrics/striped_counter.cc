#include "metrics/striped_counter.h"

namespace herdguard::internal {

std::uint64_t StripedCounter::value() const noexcept {
  std::uint64_t sum = 0;
  for (const Cell& c : cells_) sum += c.value.load(std::memory_order_relaxed);
  return sum;
}

std::size_t StripedCounter::stripe_index() noexcept {
  // Threads get consecutive stripes in the order they first count, so up to
  // kStripes threads never share a cell.
  static std::atomic<std::size_t> next{0};
  thread_local const std::size_t index = next.fetch_add(1, std::memory_order_relaxed) % kStripes;
  return index;
}

}  // namespace herdguard::internal
