#include "herdguard/clock.h"

#include <algorithm>

namespace herdguard {
namespace {
// 2030-01-01T00:00:00Z: far from the epoch, so subtracting durations in tests never underflows.
constexpr std::chrono::seconds kManualClockStart{1893456000};
}  // namespace

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

Deadline Deadline::after(Duration timeout) noexcept {
  auto now = std::chrono::steady_clock::now();
  if (timeout <= Duration::zero()) return Deadline(now);
  // Saturate instead of overflowing for absurdly large timeouts.
  if (timeout > std::chrono::hours(24 * 365 * 100)) timeout = std::chrono::hours(24 * 365 * 100);
  return Deadline(now + std::chrono::duration_cast<std::chrono::steady_clock::duration>(timeout));
}

Duration Deadline::remaining() const noexcept {
  auto left = when_ - std::chrono::steady_clock::now();
  return left > Duration::zero() ? std::chrono::duration_cast<Duration>(left) : Duration::zero();
}

}  // namespace herdguard
