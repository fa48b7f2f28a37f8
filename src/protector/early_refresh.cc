#include "herdguard/early_refresh.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace herdguard {

Result<void> EarlyRefreshOptions::validate() const {
  if (!(beta > 0.0) || !std::isfinite(beta))
    return make_error(ErrorKind::kInvalidArgument,
                      fmt::format("early_refresh: beta must be > 0 and finite, got {}", beta));
  if (!(eager_fraction > 0.0 && eager_fraction < 1.0))
    return make_error(
        ErrorKind::kInvalidArgument,
        fmt::format("early_refresh: eager_fraction must be in (0, 1), got {}", eager_fraction));
  return ok();
}

TimePoint refresh_window_start(const EarlyRefreshOptions& options, TimePoint fresh_until,
                               Duration load_duration, Duration ttl, bool negative) noexcept {
  if (negative || fresh_until == TimePoint::max()) return TimePoint::max();
  switch (options.mode) {
    case EarlyRefreshMode::kNone:
      return TimePoint::max();
    case EarlyRefreshMode::kXFetch: {
      const Duration delta = std::max(load_duration, Duration::zero());
      return add_saturating(fresh_until, -scale_saturating(delta, kXFetchHorizon * options.beta));
    }
    case EarlyRefreshMode::kEager:
      return add_saturating(fresh_until, -scale_saturating(ttl, 1.0 - options.eager_fraction));
  }
  return TimePoint::max();
}

bool xfetch_due(TimePoint now, TimePoint fresh_until, Duration load_duration, double beta,
                double unit) noexcept {
  if (now >= fresh_until) return true;
  if (load_duration <= Duration::zero()) return false;
  unit = std::clamp(unit, std::numeric_limits<double>::min(), 1.0);
  // now + Δ·β·(−ln u) ≥ fresh_until, in doubles: the gap is below a TTL, far
  // inside the range where they are exact enough.
  const double gap = std::chrono::duration<double>(fresh_until - now).count();
  const double reach =
      std::chrono::duration<double>(load_duration).count() * beta * -std::log(unit);
  return reach >= gap;
}

}  // namespace herdguard
