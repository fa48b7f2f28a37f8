#include <algorithm>
#include <cmath>

#include "herdguard/protector.h"

namespace herdguard {

Duration jittered_ttl(Duration ttl, double jitter, double unit) noexcept {
  jitter = std::clamp(jitter, 0.0, 0.999);
  unit = std::clamp(unit, 0.0, 1.0);
  const double factor = 1.0 - jitter + 2.0 * jitter * unit;
  const double scaled = static_cast<double>(ttl.count()) * factor;
  // Never below one nanosecond: a zero TTL would make a value expire as it is stored.
  return Duration(std::max<Duration::rep>(1, static_cast<Duration::rep>(std::llround(scaled))));
}

}  // namespace herdguard
