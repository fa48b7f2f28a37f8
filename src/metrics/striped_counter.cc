#include "metrics/striped_counter.h"

#include "core/thread_ordinal.h"

namespace herdguard::internal {

std::uint64_t StripedCounter::value() const noexcept {
  std::uint64_t sum = 0;
  for (const Cell& c : cells_) sum += c.value.load(std::memory_order_relaxed);
  return sum;
}

std::size_t StripedCounter::stripe_index() noexcept {
  // Up to kStripes threads never share a cell.
  return thread_ordinal() % kStripes;
}

}  // namespace herdguard::internal
