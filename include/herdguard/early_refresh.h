// herdguard/early_refresh.h — refreshing a hot key before it expires, so no
// caller ever waits for its load.
//
// Without it, a key read all the time expires, and the next caller waits for
// the load (one load per fleet thanks to single-flight and the fleet lock,
// but a wait all the same). With early refresh, a read of a fresh L1 entry
// near its expiry may start a background refresh and still return the fresh
// value at once; by the time the entry would have expired, the new one is in.
//
// Two policies:
//  * kXFetch — probabilistic early expiration (Vattani, Chierichetti,
//    Lowenstein, "Optimal Probabilistic Cache Stampede Prevention", VLDB
//    2015): a read at `now` refreshes when
//        now − Δ·β·ln(u) ≥ fresh_until,   u uniform in (0, 1]
//    with Δ the duration of the load that produced the entry
//    (CacheEntry::load_duration) and β > 0 (larger refreshes earlier). The
//    more often a key is read, the earlier some read draws a refresh; a
//    key nobody reads near its expiry is never refreshed for nothing. Alone,
//    XFetch lets several readers (in several processes) draw a refresh for
//    one expiry (about e^(1/β) at β = 1 on a busy key); here each refresh is
//    a single-flight load behind the fleet lock, and a refresh that finds a
//    newer entry than the one it replaces (in L1, in L2, announced by the
//    holder) takes it instead of loading: one database load per expiry.
//  * kEager — FusionCache's EagerRefreshThreshold: the first read after a
//    fraction `eager_fraction` of the TTL has passed refreshes.
//
// Only reads that find a fresh entry in the last stretch of its life (from
// refresh_window_start() on) pay for the decision; other L1 hits cost
// nothing more than one comparison. Negative entries are not refreshed early.
// Refreshes are background loads: they count against
// ProtectorOptions::max_background_refreshes, never wait for a database slot,
// and a refresh that fails leaves the fresh entry in place (the key then
// expires and loads as it would have).
//
// Example:
//   ProtectorOptions options{.ttl = std::chrono::seconds(60)};
//   options.early_refresh = {.mode = herdguard::EarlyRefreshMode::kXFetch, .beta = 1.0};
#pragma once

#include "herdguard/clock.h"
#include "herdguard/result.h"

namespace herdguard {

enum class EarlyRefreshMode { kNone, kXFetch, kEager };

struct EarlyRefreshOptions {
  EarlyRefreshMode mode = EarlyRefreshMode::kNone;
  // kXFetch: β. REQUIRES: > 0 and finite.
  double beta = 1.0;
  // kEager: the fraction of the TTL after which a read refreshes.
  // REQUIRES: in (0, 1).
  double eager_fraction = 0.8;

  // Returns kInvalidArgument naming the first bad field.
  Result<void> validate() const;
};

// kXFetch considers reads at most this many Δ·β before fresh_until: a read
// earlier than that would refresh with probability below e^-8 (3e-4), and
// skipping the draw keeps every other hit on the fast path.
inline constexpr double kXFetchHorizon = 8.0;

// The instant from which reads of an entry decide about an early refresh:
// kXFetch: fresh_until − kXFetchHorizon·Δ·β (fresh_until itself when Δ is
// zero: an instant load is never refreshed early); kEager: fresh_until −
// (1 − eager_fraction)·ttl, `ttl` being the TTL the entry was given;
// kNone, and negative entries: TimePoint::max() (never). Pure; thread-safe.
TimePoint refresh_window_start(const EarlyRefreshOptions& options, TimePoint fresh_until,
                               Duration load_duration, Duration ttl, bool negative) noexcept;

// XFetch's decision for a read at `now`: now − Δ·β·ln(unit) ≥ fresh_until,
// `unit` uniform in (0, 1] (0 is taken as the smallest positive double).
// Pure; thread-safe.
bool xfetch_due(TimePoint now, TimePoint fresh_until, Duration load_duration, double beta,
                double unit) noexcept;

}  // namespace herdguard
