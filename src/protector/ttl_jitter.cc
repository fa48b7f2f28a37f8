#include <algorithm>
#include <cmath>

#include "herdguard/protector.h"

namespace herdguard {

Duration jittered_ttl(Duration ttl, double jitter, double unit) noexcept {
  jitter = std::clamp(jitter, 0.0, 0.999);
  unit = std::clamp(unit, 0.0, 1.0);
  const double factor = 1.0 - jitter + 2.0 * jitter * unit;
  // Saturates: a TTL of Duration::max() ("keep forever") jittered upwards
  // stays Duration::max() instead of overflowing into the past.
  const Duration scaled = scale_saturating(ttl, factor);
  // Never below one nanosecond: a zero TTL would make a value expire as it is stored.
  return std::max(scaled, Duration(1));
}

}  // namespace herdguard
