// herdguard/clock.h — injectable time, and deadlines.
//
// Two kinds of time are used, on purpose:
//  * `Clock` gives wall-clock `TimePoint`s for everything that expires or is
//    compared across processes: fresh-until / stale-until of cached entries,
//    breaker windows and open timeouts. It is injected, so tests drive it with
//    `ManualClock` and never sleep.
//  * `Deadline` bounds how long a caller blocks. It is always measured on the
//    monotonic steady clock, because it feeds condition-variable waits, and a
//    wait must end in real time whatever a test clock says.
//
// Thread safety: every Clock implementation here is safe to call from any
// number of threads. Deadline is a value type.
//
// Example:
//   auto clock = std::make_shared<herdguard::ManualClock>();
//   herdguard::CircuitBreaker breaker(options, clock);
//   clock->advance(std::chrono::seconds(30));   // the open timeout passes, no sleep
//
//   auto deadline = herdguard::Deadline::after(std::chrono::milliseconds(200));
//   if (deadline.expired()) ...
#pragma once

#include <time.h>

#include <atomic>
#include <chrono>
#include <memory>

namespace herdguard {

using Duration = std::chrono::nanoseconds;
using TimePoint = std::chrono::time_point<std::chrono::system_clock, Duration>;

// Source of wall-clock time for expiry and breaker logic.
class Clock {
 public:
  virtual ~Clock() = default;
  // The current time. Never blocks.
  virtual TimePoint now() const noexcept = 0;
  // A cheaper reading for hot paths: never later than now(), and earlier by
  // at most coarse_lag(). A hot path uses it only to tell that an instant is
  // more than coarse_lag() away, and reads now() when it is closer, so its
  // decisions are the ones now() would give. The default is now() itself,
  // lag zero (test clocks stay exact).
  virtual TimePoint coarse_now() const noexcept { return now(); }
  virtual Duration coarse_lag() const noexcept { return Duration::zero(); }
};

// The real clock (std::chrono::system_clock). coarse_now() is Linux's
// CLOCK_REALTIME_COARSE, the time of the last timer tick (~7 ns against
// ~25 ns for a precise read on a VM); coarse_lag() is two of its ticks
// (clock_getres), so a tick running late does not make it lie.
class SystemClock final : public Clock {
 public:
  SystemClock() noexcept;
  TimePoint now() const noexcept override;
  // Inline so that a caller holding a SystemClock (the L1 hit path) reads
  // the coarse clock without a virtual call.
  TimePoint coarse_now() const noexcept override {
    timespec t{};
    if (coarse_lag_ == Duration::zero() || clock_gettime(CLOCK_REALTIME_COARSE, &t) != 0)
      return now();
    return TimePoint(std::chrono::seconds(t.tv_sec) + std::chrono::nanoseconds(t.tv_nsec));
  }
  Duration coarse_lag() const noexcept override { return coarse_lag_; }

 private:
  Duration coarse_lag_;
};

// A clock that moves only when told to. Starts at a fixed, arbitrary instant
// (2030-01-01T00:00:00Z) so tests are reproducible.
class ManualClock final : public Clock {
 public:
  ManualClock();
  explicit ManualClock(TimePoint start);
  TimePoint now() const noexcept override;
  // Moves time forward by `d`. REQUIRES: d >= 0.
  void advance(Duration d) noexcept;
  void set(TimePoint t) noexcept;

 private:
  std::atomic<Duration::rep> now_ns_;  // nanoseconds since the epoch
};

// The shared real clock, the default wherever a clock is optional.
std::shared_ptr<Clock> system_clock();

// Saturating time arithmetic. Every sum of an instant and a duration in
// herdguard goes through these, so an option of Duration::max() ("keep
// forever") means "until TimePoint::max()" instead of signed overflow, which
// is undefined behaviour and in practice wraps into the past (caching off).
// Pure; thread-safe.
//
// Example:
//   TimePoint fresh_until = herdguard::add_saturating(now, options.ttl);   // never wraps
//   Duration lease = herdguard::scale_saturating(ttl, 1.2);                // clamps at max()

// a + b, clamped to [Duration::min(), Duration::max()]. (Inline: the L1 hit
// path adds one.)
inline Duration add_saturating(Duration a, Duration b) noexcept {
  Duration::rep sum;
  if (!__builtin_add_overflow(a.count(), b.count(), &sum)) return Duration(sum);
  return b.count() > 0 ? Duration::max() : Duration::min();
}
// t + d, clamped to [TimePoint::min(), TimePoint::max()].
inline TimePoint add_saturating(TimePoint t, Duration d) noexcept {
  return TimePoint(add_saturating(t.time_since_epoch(), d));
}
// d * factor rounded to the nearest tick, clamped to [Duration::min(),
// Duration::max()]; a NaN factor gives zero. Computed in double: exact up to
// 2^53 ns (104 days), within a few ns beyond (jitter does not need more).
Duration scale_saturating(Duration d, double factor) noexcept;

// A point on the monotonic clock past which a caller stops waiting.
// There is deliberately no "infinite" deadline: an unbounded wait is what
// turns a slow database into an outage.
class Deadline {
 public:
  using SteadyTime = std::chrono::steady_clock::time_point;

  // A deadline `timeout` from now. A negative or zero timeout is already
  // expired; a timeout past the steady clock's range (Duration::max())
  // saturates at its end instead of overflowing.
  static Deadline after(Duration timeout) noexcept;
  static Deadline at(SteadyTime when) noexcept { return Deadline(when); }

  SteadyTime when() const noexcept { return when_; }
  bool expired() const noexcept { return std::chrono::steady_clock::now() >= when_; }
  // Time left, never negative.
  Duration remaining() const noexcept;
  // The earlier of the two deadlines.
  static Deadline earliest(Deadline a, Deadline b) noexcept { return a.when_ < b.when_ ? a : b; }

 private:
  explicit Deadline(SteadyTime when) noexcept : when_(when) {}
  SteadyTime when_;
};

}  // namespace herdguard
