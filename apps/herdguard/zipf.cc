#include "zipf.h"

#include <algorithm>
#include <cmath>

namespace herdguard::cli {

ZipfSampler::ZipfSampler(int keys, double s) {
  cdf_.reserve(static_cast<std::size_t>(keys));
  double sum = 0;
  for (int i = 0; i < keys; ++i) {
    sum += 1.0 / std::pow(static_cast<double>(i + 1), s);
    cdf_.push_back(sum);
  }
  for (double& c : cdf_) c /= sum;
}

int ZipfSampler::sample(std::mt19937_64& rng) const {
  const double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng);
  const auto it = std::lower_bound(cdf_.begin(), cdf_.end(), u);
  const auto index = static_cast<int>(it - cdf_.begin());
  return std::min(index, static_cast<int>(cdf_.size()) - 1);
}

}  // namespace herdguard::cli
