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
  // Choices the contract above leaves open (details and invariants in
  // src/breaker/circuit_breaker.cc):
  //  * Invalid options given to the constructor assert in debug builds; in
  //    release builds each invalid field is replaced by its default from
  //    CircuitBreakerOptions{} (valid fields are kept), and a null clock by
  //    system_clock(). create() reports both as kInvalidArgument instead.
  //  * record() carries no permit, so outcomes are matched to permits by
  //    count. Permits granted before the latest transition are "stale": their
  //    outcomes are ignored, so a call let through while closed that reports
  //    after the breaker opened never moves the state. When both stale and
  //    current permits are outstanding, an outcome whose `elapsed` is longer
  //    than the current state has lasted must have started before it, so it
  //    is taken as stale. A record() with no outstanding permit is ignored.
  //  * A probe that never reports is a caller bug. It is not allowed to wedge
  //    the breaker in half-open: once every outstanding probe was granted more
  //    than slow_call_threshold ago, each of them could only end as a (slow)
  //    failure, so the breaker re-opens as that failure would have made it.
  //  * Time is the injected clock's forward movement only: a backward step
  //    counts as no time (nothing crashes, nothing waits for the clock to
  //    catch up).
  //  * The listener is never called concurrently and sees transitions in the
  //    order they happened. A transition made while another thread is
  //    delivering notifications is delivered by that thread, so the call that
  //    caused it may return first. Exceptions from the listener are swallowed.
  struct Bucket {
    std::int64_t tick = 0;  // which bucket of time (floor(now / bucket width)) the slot holds
    std::uint64_t calls = 0;
    std::uint64_t failures = 0;
  };
  struct WindowTotals {
    std::uint64_t calls = 0;
    std::uint64_t failures = 0;
  };
  struct Transition {
    BreakerState from;
    BreakerState to;
  };

  // All below: REQUIRES mutex_ held.
  TimePoint advance_time_locked();
  void apply_timeouts_locked(TimePoint now);
  void transition_locked(BreakerState to, TimePoint now);
  void record_closed_locked(bool failure, TimePoint now);
  void record_probe_locked(bool failure, TimePoint now);
  std::int64_t tick_of(TimePoint now) const;
  void add_to_window_locked(TimePoint now, bool failure);
  WindowTotals window_totals_locked(TimePoint now) const;
  void clear_window_locked();
  // REQUIRES: `lock` holds mutex_. Delivers queued transitions (see above);
  // the lock is released around each listener call.
  void notify_locked(std::unique_lock<std::mutex>& lock);

  const CircuitBreakerOptions options_;
  const std::shared_ptr<Clock> clock_;
  const Listener listener_;
  const Duration bucket_width_;  // options_.window / window_buckets, at least 1 ns

  mutable std::mutex mutex_;
  // State below is protected by mutex_.
  BreakerState state_ = BreakerState::kClosed;
  // Breaker time: starts at the clock's first reading and moves only forward.
  TimePoint now_;
  TimePoint last_clock_reading_;
  TimePoint state_since_;                // breaker time of the latest transition (or construction)
  std::uint64_t permits_in_flight_ = 0;  // granted in the current state, not yet recorded
  std::uint64_t stale_permits_ = 0;      // granted before the latest transition, not yet recorded
  std::uint32_t consecutive_failures_ = 0;  // in closed state
  std::uint64_t probe_successes_ = 0;       // in half-open state
  TimePoint last_probe_granted_at_;         // in half-open state, when permits_in_flight_ > 0
  // Ring of window_buckets slots; the bucket for tick t lives in slot t % size.
  // A slot counts toward the window only while it is non-empty and its tick is
  // one of the latest window_buckets ticks; a slot holding an older tick is
  // reset when reused.
  // Breaker time never runs backwards, so no slot holds a tick in the future.
  std::vector<Bucket> buckets_;
  std::uint64_t trips_ = 0;
  std::vector<Transition> pending_;  // transitions not yet given to the listener
  bool notifying_ = false;           // a thread is delivering pending_
};

}  // namespace herdguard
