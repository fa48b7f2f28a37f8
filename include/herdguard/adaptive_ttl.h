// herdguard/adaptive_ttl.h — TTLs that follow how often a key's value
// changes: a key whose value is the same on each reload gets a longer TTL
// (up to `max`), a key whose value changed a shorter one (down to `min`).
// So a key that rarely changes, and is read often enough to be reloaded,
// costs fewer loads and fewer waits, and one that changes often is served
// stale for less time.
//
// The Protector (ProtectorOptions::adaptive_ttl) remembers, per key it
// loaded, a 64-bit hash of the value and the TTL it gave it, in a table of
// at most `max_keys` keys (two generations: when the newer one fills, the
// older is dropped, so rarely loaded keys are forgotten first and start
// over at ProtectorOptions::ttl). Jitter applies on top. Negative entries
// keep negative_ttl. Counts: ProtectionMetrics::ttl_lengthened /
// ttl_shortened (Prometheus thundering_herd_adaptive_ttl_changes_total).
//
// Example:
//   options.adaptive_ttl = {.enabled = true, .min = std::chrono::seconds(1),
//                           .max = std::chrono::minutes(10)};
#pragma once

#include <cstddef>

#include "herdguard/clock.h"
#include "herdguard/result.h"

namespace herdguard {

struct AdaptiveTtlOptions {
  bool enabled = false;
  // The range. REQUIRES: 0 < min <= max.
  Duration min = std::chrono::seconds(1);
  Duration max = std::chrono::minutes(10);
  // Factor on an unchanged reload (REQUIRES: >= 1) and on a changed one
  // (REQUIRES: in (0, 1]).
  double grow = 2.0;
  double shrink = 0.5;
  // Keys remembered at most. REQUIRES: >= 2.
  std::size_t max_keys = 100'000;

  // Returns kInvalidArgument naming the first bad field.
  Result<void> validate() const;
};

// The TTL after a reload: `previous` × grow when the value is unchanged,
// × shrink when it changed, clamped to [min, max]. Pure; thread-safe.
Duration next_adaptive_ttl(const AdaptiveTtlOptions& options, Duration previous,
                           bool changed) noexcept;

}  // namespace herdguard
