#include "metrics/striped_counter.h"

namespace herdguard::internal {

std::uint64_t StripedCounter::value() const noexcept {
  std::uint64_t sum = 0;
  for (const Cell& c : cells_) sum += c.value.load(std::memory_order_relaxed);
  return sum;
}

}  // namespace herdguard::internal
