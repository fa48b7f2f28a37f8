#include "latency_stats.h"

#include <algorithm>
#include <cmath>

namespace herdguard::cli {
namespace {
double to_ms(std::chrono::nanoseconds d) {
  return std::chrono::duration<double, std::milli>(d).count();
}
}  // namespace

LatencySummary summarize(std::vector<std::chrono::nanoseconds> samples) {
  if (samples.empty()) return {};
  std::sort(samples.begin(), samples.end());
  auto rank = [&](double q) {
    // Nearest rank: the smallest sample with at least q of the samples at or below it.
    auto index = static_cast<std::size_t>(std::ceil(q * static_cast<double>(samples.size())));
    return samples[std::clamp<std::size_t>(index, 1, samples.size()) - 1];
  };
  return {to_ms(rank(0.50)), to_ms(rank(0.99)), to_ms(samples.back())};
}

}  // namespace herdguard::cli
