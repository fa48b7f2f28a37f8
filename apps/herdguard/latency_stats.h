// Latency percentiles of a finished run (nearest-rank, over all samples).
#pragma once

#include <chrono>
#include <vector>

namespace herdguard::cli {

struct LatencySummary {
  double p50_ms = 0;
  double p99_ms = 0;
  double max_ms = 0;
};

// REQUIRES: nothing; an empty sample gives zeros.
LatencySummary summarize(std::vector<std::chrono::nanoseconds> samples);

}  // namespace herdguard::cli
