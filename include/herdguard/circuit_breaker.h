// herdguard/circuit_breaker.h — stop calling a failing backend.
//
// States:
//   closed    calls flow; failures are counted.
//   open      calls are refused at once with kCircuitOpen; the backend is not
//             called at all. After `open_timeout` the breaker goes half-open.
//   half-open up to `half_open_probes` calls are let through as probes; when
//             that many probes succeed the breaker closes, and when one fails
//             it opens again for another `open_timeout`.
// The breaker opens from closed when either
//   * `consecutive_failures` calls fail in a row, or
//   * over the rolling `window`, at least `minimum_calls` calls were made and
//     the share of failures is >= `failure_rate`.
// A call that succeeds but takes longer than `slow_call_threshold` counts as a
// failure: a database that answers in 10 s is as good as down.
//
// Thread safety: all methods are safe from any number of threads. The
// listener is called without the breaker's lock held, once per transition.
//
// Example:
//   herdguard::CircuitBreaker breaker({.consecutive_failures = 5}, herdguard::system_clock());
//   if (auto permit = breaker.try_acquire(); !permit) return permit.error();  // circuit_open
//   auto start = std::chrono::steady_clock::now();
//   auto r = db.query();
//   breaker.record(r ? herdguard::CallOutcome::kSuccess : herdguard::CallOutcome::kFailure,
//                  std::chrono::steady_clock::now() - start);
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string_view>
#include <vector>

#include "herdguard/clock.h"
#include "herdguard/result.h"

namespace herdguard {

enum class BreakerState { kClosed = 0, kOpen = 1, kHalfOpen = 2 };
std::string_view to_string(BreakerState state) noexcept;

enum class CallOutcome { kSuccess, kFailure };

struct CircuitBreakerOptions {
  // Opens after this many failures in a row. REQUIRES: >= 1.
  std::uint32_t consecutive_failures = 5;
  // Opens when failures / calls over the window reaches this. REQUIRES: (0, 1].
  double failure_rate = 0.5;
  // The rate rule applies only with at least this many calls in the window. REQUIRES: >= 1.
  std::uint32_t minimum_calls = 20;
  // Length of the rolling window, split into `window_buckets` buckets that
  // expire one at a time. REQUIRES: window > 0, window_buckets in 1..1000.
  Duration window = std::chrono::seconds(10);
  std::uint32_t window_buckets = 10;
  // Successful calls slower than this count as failures. REQUIRES: > 0.
  Duration slow_call_threshold = std::chrono::seconds(2);
  // How long the breaker stays open before probing. REQUIRES: > 0.
  Duration open_timeout = std::chrono::seconds(5);
  // Probe calls allowed in half-open; all must succeed to close. REQUIRES: >= 1.
  std::uint32_t half_open_probes = 1;

  // Returns kInvalidArgument naming the first bad field.
  Result<void> validate() const;
};

class CircuitBreaker {
 public:
  using Listener = std::function<void(BreakerState from, BreakerState to)>;

  // REQUIRES: options.validate() succeeds (checked: invalid options abort in
  // debug builds; use create() to get an error instead), clock != nullptr.
  CircuitBreaker(CircuitBreakerOptions options, std::shared_ptr<Clock> clock,
                 Listener listener = {});

  // Validating factory. Errors: kInvalidArgument from options.validate().
  static Result<std::unique_ptr<CircuitBreaker>> create(CircuitBreakerOptions options,
                                                        std::shared_ptr<Clock> clock,
                                                        Listener listener = {});

  // Asks permission for one call. On success the caller MUST make the call and
  // then call record() exactly once. Errors: kCircuitOpen when open, or when
  // half-open and all probe slots are taken. Never blocks.
  Result<void> try_acquire();

  // Reports the outcome of a call permitted by try_acquire(). `elapsed` is how
  // long the call took; a success slower than slow_call_threshold is a failure.
  void record(CallOutcome outcome, Duration elapsed);

  // The current state (open turns into half-open lazily, when the open
  // timeout has passed at the time of this call).
  BreakerState state();
  // How many times the breaker went to open (from closed or half-open).
  std::uint64_t trips() const;

 private:
  struct Bucket {
    std::int64_t start_tick = -1;  // window bucket index this slot currently holds
    std::uint32_t calls = 0;
    std::uint32_t failures = 0;
  };
  struct Transition {
    BreakerState from;
    BreakerState to;
  };

  // All below: REQUIRES mutex_ held.
  void maybe_half_open_locked(TimePoint now, std::vector<Transition>& out);
  void transition_locked(BreakerState to, TimePoint now, std::vector<Transition>& out);
  void add_to_window_locked(TimePoint now, bool failure);
  void window_totals_locked(TimePoint now, std::uint32_t& calls, std::uint32_t& failures) const;
  void notify(const std::vector<Transition>& transitions) const;

  const CircuitBreakerOptions options_;
  const std::shared_ptr<Clock> clock_;
  const Listener listener_;

  mutable std::mutex mutex_;
  // State below is protected by mutex_.
  BreakerState state_ = BreakerState::kClosed;
  TimePoint opened_at_{};                   // valid while open
  std::uint32_t consecutive_failures_ = 0;  // in closed state
  std::uint32_t probes_in_flight_ = 0;      // in half-open state
  std::uint32_t probe_successes_ = 0;       // in half-open state
  std::vector<Bucket> buckets_;             // ring of window_buckets, indexed by tick % size
  std::uint64_t trips_ = 0;
};

}  // namespace herdguard
