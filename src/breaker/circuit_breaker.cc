// Circuit breaker: closed -> open -> half-open -> closed | open.
//
// Invariants (all under mutex_):
//  * now_ (breaker time) never decreases: it advances by the clock's forward
//    steps only, so every "how long since" below is >= 0 and a clock that
//    jumps back neither crashes nor keeps the breaker open until it catches up.
//  * permits_in_flight_ counts permits granted since the latest transition
//    (state_since_) and not yet recorded. Every transition moves them to
//    stale_permits_; only current permits can move the state. No permit is
//    granted while open, so in open every outcome is stale.
//  * In half-open, permits_in_flight_ + probe_successes_ <= half_open_probes:
//    each half-open period grants at most half_open_probes probes in all.
//  * The window holds only outcomes recorded in the current closed period: it
//    is cleared on entering closed, and written only in closed.
//  * A window slot is counted only if it is non-empty and its tick is within
//    the latest window_buckets ticks; a slot is reset before it is reused for
//    a newer tick. So a failure stops counting window_buckets ticks after the
//    tick it was recorded in (the window spans between window - bucket width
//    and window).
//  * Transitions are queued in pending_ under mutex_ and handed to the
//    listener, in order, by one thread at a time (notifying_), with mutex_
//    released around each call.
#include "herdguard/circuit_breaker.h"

#include <fmt/format.h>

#include <algorithm>
#include <cassert>
#include <limits>
#include <string>
#include <utility>

namespace herdguard {
namespace {

std::unexpected<Error> bad(std::string_view what) {
  return make_error(ErrorKind::kInvalidArgument, fmt::format("circuit breaker: {}", what));
}

// "250 ms", or "1500 ns" when the duration is not a whole number of ms.
std::string format_duration(Duration d) {
  if (d % std::chrono::milliseconds(1) == Duration::zero()) {
    return fmt::format("{} ms", std::chrono::duration_cast<std::chrono::milliseconds>(d).count());
  }
  return fmt::format("{} ns", d.count());
}

constexpr std::uint32_t kMaxWindowBuckets = 1000;

// Release builds run with invalid options rather than crash: each invalid field
// falls back to its default. Defaults rather than the nearest valid value, since
// the nearest value is often hostile (a 0 slow_call_threshold clamped to 1 ns
// would count every call as a failure).
CircuitBreakerOptions checked(CircuitBreakerOptions options) {
  [[maybe_unused]] const Result<void> valid = options.validate();
  assert(valid.has_value() &&
         "CircuitBreaker: invalid options; use CircuitBreaker::create() to get an error");
  const CircuitBreakerOptions defaults;
  if (options.consecutive_failures < 1)
    options.consecutive_failures = defaults.consecutive_failures;
  if (!(options.failure_rate > 0.0 && options.failure_rate <= 1.0)) {
    options.failure_rate = defaults.failure_rate;
  }
  if (options.minimum_calls < 1) options.minimum_calls = defaults.minimum_calls;
  if (options.window <= Duration::zero()) options.window = defaults.window;
  if (options.window_buckets < 1 || options.window_buckets > kMaxWindowBuckets) {
    options.window_buckets = defaults.window_buckets;
  }
  if (options.slow_call_threshold <= Duration::zero()) {
    options.slow_call_threshold = defaults.slow_call_threshold;
  }
  if (options.open_timeout <= Duration::zero()) options.open_timeout = defaults.open_timeout;
  if (options.half_open_probes < 1) options.half_open_probes = defaults.half_open_probes;
  return options;
}

std::shared_ptr<Clock> checked(std::shared_ptr<Clock> clock) {
  assert(clock != nullptr && "CircuitBreaker: clock must not be null");
  return clock ? std::move(clock) : system_clock();
}

// Floor division: ticks stay ordered for times before the epoch too.
std::int64_t floor_div(std::int64_t a, std::int64_t b) {
  const std::int64_t q = a / b;
  return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

}  // namespace

std::string_view to_string(BreakerState state) noexcept {
  switch (state) {
    case BreakerState::kClosed:
      return "closed";
    case BreakerState::kOpen:
      return "open";
    case BreakerState::kHalfOpen:
      return "half_open";
  }
  return "unknown";
}

Result<void> CircuitBreakerOptions::validate() const {
  if (consecutive_failures < 1) {
    return bad(fmt::format("consecutive_failures must be >= 1, got {}", consecutive_failures));
  }
  if (!(failure_rate > 0.0 && failure_rate <= 1.0)) {  // written so that NaN fails
    return bad(fmt::format("failure_rate must be in (0, 1], got {}", failure_rate));
  }
  if (minimum_calls < 1)
    return bad(fmt::format("minimum_calls must be >= 1, got {}", minimum_calls));
  if (window <= Duration::zero()) {
    return bad(fmt::format("window must be > 0, got {}", format_duration(window)));
  }
  if (window_buckets < 1 || window_buckets > kMaxWindowBuckets) {
    return bad(
        fmt::format("window_buckets must be in 1..{}, got {}", kMaxWindowBuckets, window_buckets));
  }
  if (slow_call_threshold <= Duration::zero()) {
    return bad(fmt::format("slow_call_threshold must be > 0, got {}",
                           format_duration(slow_call_threshold)));
  }
  if (open_timeout <= Duration::zero()) {
    return bad(fmt::format("open_timeout must be > 0, got {}", format_duration(open_timeout)));
  }
  if (half_open_probes < 1) {
    return bad(fmt::format("half_open_probes must be >= 1, got {}", half_open_probes));
  }
  return ok();
}

CircuitBreaker::CircuitBreaker(CircuitBreakerOptions options, std::shared_ptr<Clock> clock,
                               Listener listener)
    : options_(checked(std::move(options))),
      clock_(checked(std::move(clock))),
      listener_(std::move(listener)),
      bucket_width_(std::max(options_.window / options_.window_buckets, Duration(1))),
      now_(clock_->now()),
      last_clock_reading_(now_),
      state_since_(now_),
      buckets_(options_.window_buckets) {}

Result<std::unique_ptr<CircuitBreaker>> CircuitBreaker::create(CircuitBreakerOptions options,
                                                               std::shared_ptr<Clock> clock,
                                                               Listener listener) {
  if (auto valid = options.validate(); !valid) return std::unexpected(std::move(valid.error()));
  if (!clock) return bad("clock must not be null");
  return std::make_unique<CircuitBreaker>(std::move(options), std::move(clock),
                                          std::move(listener));
}

Result<void> CircuitBreaker::try_acquire() {
  std::unique_lock lock(mutex_);
  const TimePoint now = advance_time_locked();
  apply_timeouts_locked(now);

  Result<void> permit = ok();
  switch (state_) {
    case BreakerState::kClosed:
      ++permits_in_flight_;
      break;
    case BreakerState::kOpen: {
      const Duration left = options_.open_timeout - (now - state_since_);
      permit = make_error(ErrorKind::kCircuitOpen,
                          fmt::format("circuit breaker is open; probing again in {} ms",
                                      std::chrono::ceil<std::chrono::milliseconds>(left).count()));
      break;
    }
    case BreakerState::kHalfOpen:
      if (permits_in_flight_ + probe_successes_ < options_.half_open_probes) {
        ++permits_in_flight_;
        last_probe_granted_at_ = now;
      } else {
        permit = make_error(ErrorKind::kCircuitOpen,
                            fmt::format("circuit breaker is half-open and all {} probe calls "
                                        "are taken",
                                        options_.half_open_probes));
      }
      break;
  }
  notify_locked(lock);
  return permit;
}

void CircuitBreaker::record(CallOutcome outcome, Duration elapsed) {
  std::unique_lock lock(mutex_);
  const TimePoint now = advance_time_locked();

  // Match the outcome to a permit before applying timeouts: an outcome that
  // arrives is better evidence than a timeout standing in for a lost one.
  bool current = false;
  if (permits_in_flight_ > 0 && stale_permits_ > 0) {
    // A call that started before the current state began cannot be current.
    current = elapsed <= now - state_since_;
  } else {
    current = permits_in_flight_ > 0;
  }
  if (current) {
    --permits_in_flight_;
    const bool failure = outcome == CallOutcome::kFailure || elapsed > options_.slow_call_threshold;
    if (state_ == BreakerState::kClosed) {
      record_closed_locked(failure, now);
    } else if (state_ == BreakerState::kHalfOpen) {
      record_probe_locked(failure, now);
    }
  } else if (stale_permits_ > 0) {
    --stale_permits_;  // a call from before the latest transition: ignored
  }
  // else: no permit outstanding (a record() without try_acquire()): ignored.

  apply_timeouts_locked(now);
  notify_locked(lock);
}

BreakerState CircuitBreaker::state() {
  std::unique_lock lock(mutex_);
  apply_timeouts_locked(advance_time_locked());
  const BreakerState current = state_;
  notify_locked(lock);
  return current;
}

std::uint64_t CircuitBreaker::trips() const {
  std::lock_guard lock(mutex_);
  return trips_;
}

TimePoint CircuitBreaker::advance_time_locked() {
  const TimePoint reading = clock_->now();
  if (reading > last_clock_reading_) {
    // Saturating: a test clock may be set anywhere.
    Duration::rep step = 0;
    if (__builtin_sub_overflow(reading.time_since_epoch().count(),
                               last_clock_reading_.time_since_epoch().count(), &step)) {
      step = std::numeric_limits<Duration::rep>::max();
    }
    Duration::rep next = 0;
    if (__builtin_add_overflow(now_.time_since_epoch().count(), step, &next)) {
      next = std::numeric_limits<Duration::rep>::max();
    }
    now_ = TimePoint(Duration(next));
  }
  last_clock_reading_ = reading;
  return now_;
}

void CircuitBreaker::apply_timeouts_locked(TimePoint now) {
  if (state_ == BreakerState::kOpen && now - state_since_ >= options_.open_timeout) {
    transition_locked(BreakerState::kHalfOpen, now);
  }
  // Every outstanding probe is older than the newest one; once even that one
  // has run past slow_call_threshold, none can end as a success.
  if (state_ == BreakerState::kHalfOpen && permits_in_flight_ > 0 &&
      now - last_probe_granted_at_ > options_.slow_call_threshold) {
    transition_locked(BreakerState::kOpen, now);
  }
}

void CircuitBreaker::transition_locked(BreakerState to, TimePoint now) {
  const BreakerState from = state_;
  state_ = to;
  state_since_ = now;
  stale_permits_ += permits_in_flight_;
  permits_in_flight_ = 0;
  switch (to) {
    case BreakerState::kOpen:
      ++trips_;
      break;
    case BreakerState::kHalfOpen:
      probe_successes_ = 0;
      break;
    case BreakerState::kClosed:
      consecutive_failures_ = 0;
      clear_window_locked();
      break;
  }
  if (listener_) pending_.push_back({from, to});
}

void CircuitBreaker::record_closed_locked(bool failure, TimePoint now) {
  add_to_window_locked(now, failure);
  consecutive_failures_ = failure ? consecutive_failures_ + 1 : 0;
  if (consecutive_failures_ >= options_.consecutive_failures) {
    transition_locked(BreakerState::kOpen, now);
    return;
  }
  // Checked after every call, successes included: the call that brings the
  // window up to minimum_calls may be the one that makes the rule hold.
  const WindowTotals totals = window_totals_locked(now);
  if (totals.calls >= options_.minimum_calls &&
      static_cast<double>(totals.failures) / static_cast<double>(totals.calls) >=
          options_.failure_rate) {
    transition_locked(BreakerState::kOpen, now);
  }
}

void CircuitBreaker::record_probe_locked(bool failure, TimePoint now) {
  if (failure) {
    transition_locked(BreakerState::kOpen, now);
  } else if (++probe_successes_ >= options_.half_open_probes) {
    transition_locked(BreakerState::kClosed, now);
  }
}

std::int64_t CircuitBreaker::tick_of(TimePoint now) const {
  return floor_div(now.time_since_epoch().count(), bucket_width_.count());
}

void CircuitBreaker::add_to_window_locked(TimePoint now, bool failure) {
  const std::int64_t tick = tick_of(now);
  const auto size = static_cast<std::int64_t>(buckets_.size());
  Bucket& bucket = buckets_[static_cast<std::size_t>(((tick % size) + size) % size)];
  if (bucket.tick != tick) bucket = Bucket{.tick = tick};  // stale: from an older turn of the ring
  ++bucket.calls;
  if (failure) ++bucket.failures;
}

CircuitBreaker::WindowTotals CircuitBreaker::window_totals_locked(TimePoint now) const {
  const std::int64_t tick = tick_of(now);
  WindowTotals totals;
  for (const Bucket& bucket : buckets_) {
    // bucket.tick <= tick because breaker time never runs backwards; the
    // difference is taken unsigned so that extreme ticks cannot overflow it.
    const std::uint64_t age =
        static_cast<std::uint64_t>(tick) - static_cast<std::uint64_t>(bucket.tick);
    if (bucket.calls > 0 && bucket.tick <= tick && age < buckets_.size()) {
      totals.calls += bucket.calls;
      totals.failures += bucket.failures;
    }
  }
  return totals;
}

void CircuitBreaker::clear_window_locked() {
  std::fill(buckets_.begin(), buckets_.end(), Bucket{});
}

void CircuitBreaker::notify_locked(std::unique_lock<std::mutex>& lock) {
  if (notifying_ || pending_.empty()) return;  // the notifying thread will deliver ours
  notifying_ = true;
  while (!pending_.empty()) {
    std::vector<Transition> batch;
    batch.swap(pending_);
    lock.unlock();
    for (const Transition& t : batch) {
      try {
        listener_(t.from, t.to);
      } catch (...) {
        // The listener is the user's code; its failure must not break the
        // breaker or the call that happened to trigger the transition.
      }
    }
    lock.lock();
  }
  notifying_ = false;
}

}  // namespace herdguard
