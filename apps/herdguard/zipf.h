// Key popularity for `herdguard simulate`: key i (0-based) is drawn with
// probability proportional to 1 / (i + 1)^s. s = 0 is uniform; s around 1
// is the classic "a few hot keys, a long tail" of real traffic.
#pragma once

#include <random>
#include <vector>

namespace herdguard::cli {

class ZipfSampler {
 public:
  // REQUIRES: keys >= 1, s >= 0.
  ZipfSampler(int keys, double s);
  // A key index in [0, keys). Thread-safe if each thread has its own rng.
  int sample(std::mt19937_64& rng) const;

 private:
  std::vector<double> cdf_;  // cumulative, normalised to end at 1
};

}  // namespace herdguard::cli
