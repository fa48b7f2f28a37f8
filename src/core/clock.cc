#include "herdguard/clock.h"

#include <time.h>

#include <algorithm>
#include <cmath>

namespace herdguard {
namespace {
// 2030-01-01T00:00:00Z: far from the epoch, so subtracting durations in tests never underflows.
constexpr std::chrono::seconds kManualClockStart{1893456000};
}  // namespace

SystemClock::SystemClock() noexcept : coarse_lag_(Duration::zero()) {
  timespec resolution{};
  // Without a coarse clock (clock_getres fails), coarse_now() is now().
  if (clock_getres(CLOCK_REALTIME_COARSE, &resolution) == 0)
    coarse_lag_ = 2 * (std::chrono::seconds(resolution.tv_sec) +
                       std::chrono::nanoseconds(resolution.tv_nsec));
}

TimePoint SystemClock::now() const noexcept {
  return std::chrono::time_point_cast<Duration>(std::chrono::system_clock::now());
}

ManualClock::ManualClock() : ManualClock(TimePoint(kManualClockStart)) {}

ManualClock::ManualClock(TimePoint start) : now_ns_(start.time_since_epoch().count()) {}

TimePoint ManualClock::now() const noexcept {
  return TimePoint(Duration(now_ns_.load(std::memory_order_acquire)));
}

void ManualClock::advance(Duration d) noexcept {
  now_ns_.fetch_add(std::max(d, Duration::zero()).count(), std::memory_order_acq_rel);
}

void ManualClock::set(TimePoint t) noexcept {
  now_ns_.store(t.time_since_epoch().count(), std::memory_order_release);
}

std::shared_ptr<Clock> system_clock() {
  static const std::shared_ptr<Clock> clock = std::make_shared<SystemClock>();
  return clock;
}

Duration scale_saturating(Duration d, double factor) noexcept {
  const double scaled = std::round(static_cast<double>(d.count()) * factor);
  if (scaled != scaled) return Duration::zero();  // NaN
  // 2^63 is exactly representable; anything at or beyond it overflows a rep.
  constexpr double kLimit = 9223372036854775808.0;
  if (scaled >= kLimit) return Duration::max();
  if (scaled <= -kLimit) return Duration::min();
  return Duration(static_cast<Duration::rep>(scaled));
}

Deadline Deadline::after(Duration timeout) noexcept {
  using Steady = std::chrono::steady_clock;
  const Steady::time_point now = Steady::now();
  if (timeout <= Duration::zero()) return Deadline(now);
  const auto step = std::chrono::duration_cast<Steady::duration>(timeout);
  if (step > Steady::time_point::max() - now) return Deadline(Steady::time_point::max());
  return Deadline(now + step);
}

Duration Deadline::remaining() const noexcept {
  auto left = when_ - std::chrono::steady_clock::now();
  return left > Duration::zero() ? std::chrono::duration_cast<Duration>(left) : Duration::zero();
}

}  // namespace herdguard
