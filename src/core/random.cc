#include "core/random.h"

namespace herdguard::internal {

std::mt19937_64& thread_rng() {
  thread_local std::mt19937_64 rng{[] {
    std::random_device rd;
    return (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
  }()};
  return rng;
}

double uniform_real(double lo, double hi) {
  return std::uniform_real_distribution<double>(lo, hi)(thread_rng());
}

}  // namespace herdguard::internal
