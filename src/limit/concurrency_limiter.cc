// The limiter: one mutex over a handful of numbers, and a condition variable
// for loads waiting for a slot. Loads are milliseconds long, so a mutex per
// acquire and release (tens of ns) is not worth a lock-free design.
//
// The adaptive step follows Gradient2 (Netflix concurrency-limits, Apache
// 2.0; the algorithm as its documentation describes it, not its code):
//   average  ← exponential average of latencies (a plain mean for the first
//              10, so that one early outlier does not set it)
//   if average > 2 × latency: average ← 0.95 × average   (recover quickly
//              after a long spell of high latency)
//   if in_flight < limit / 2: keep the limit             (app-limited)
//   gradient ← clamp(tolerance × average / latency, 0.5, 1)
//   limit    ← (1 − smoothing) × limit + smoothing × (gradient × limit + sqrt(limit))
//   limit    ← clamp(limit, min_limit, max_limit)
#include "herdguard/concurrency_limiter.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <utility>

namespace herdguard {
namespace {

constexpr std::size_t kMaxLimit = 100'000;
constexpr std::uint64_t kWarmupSamples = 10;

std::unexpected<Error> bad_option(std::string what) {
  return make_error(ErrorKind::kInvalidArgument, fmt::format("concurrency limit: {}", what));
}

}  // namespace

Result<void> ConcurrencyLimitOptions::validate() const {
  if (limit < 1 || limit > kMaxLimit)
    return bad_option(fmt::format("limit must be in 1..{}, got {}", kMaxLimit, limit));
  if (mode == LimitMode::kAdaptive) {
    if (min_limit < 1 || min_limit > limit)
      return bad_option(
          fmt::format("min_limit must be in 1..limit ({}), got {}", limit, min_limit));
    if (max_limit < limit || max_limit > kMaxLimit)
      return bad_option(
          fmt::format("max_limit must be in limit ({})..{}, got {}", limit, kMaxLimit, max_limit));
  }
  if (!(tolerance >= 1.0))
    return bad_option(fmt::format("tolerance must be >= 1, got {}", tolerance));
  if (!(smoothing > 0.0 && smoothing <= 1.0))
    return bad_option(fmt::format("smoothing must be in (0, 1], got {}", smoothing));
  if (long_window < 1) return bad_option("long_window must be >= 1, got 0");
  if (max_wait < Duration::zero())
    return bad_option(fmt::format("max_wait must be >= 0, got {} ns", max_wait.count()));
  if (max_waiting < 1) return bad_option("max_waiting must be >= 1, got 0");
  return ok();
}

Result<std::shared_ptr<ConcurrencyLimiter>> ConcurrencyLimiter::create(
    ConcurrencyLimitOptions options) {
  if (auto valid = options.validate(); !valid) return std::unexpected(valid.error());
  return std::shared_ptr<ConcurrencyLimiter>(new ConcurrencyLimiter(options));
}

ConcurrencyLimiter::ConcurrencyLimiter(ConcurrencyLimitOptions options)
    : options_(options), limit_(static_cast<double>(options.limit)) {}

bool ConcurrencyLimiter::has_free_slot() const {
  return options_.mode == LimitMode::kOff || static_cast<double>(in_flight_) + 1 <= limit_;
}

void ConcurrencyLimiter::grant_free_slots() {
  while (!waiting_.empty() && has_free_slot()) {
    Waiting* oldest = waiting_.front();
    waiting_.pop_front();
    oldest->granted = true;
    ++in_flight_;
    oldest->granted_cv.notify_one();
  }
}

Result<ConcurrencyLimiter::Permit> ConcurrencyLimiter::acquire(Deadline deadline) {
  std::unique_lock lock(mutex_);
  // A newcomer never takes a slot ahead of loads already waiting for one
  // (else a stream of non-waiting acquirers, like background refreshes, or
  // a load that just released its slot and came back, could starve them).
  if (has_free_slot() && waiting_.empty()) {
    ++in_flight_;
    ++admitted_;
    return Permit(this);
  }
  const Deadline until = Deadline::earliest(deadline, Deadline::after(options_.max_wait));
  // Shed at once what would not get a slot in time anyway: the expected
  // wait is a load's time per limit's worth of loads queued ahead.
  const Duration expected = expected_wait();
  const char* why = nullptr;
  if (waiting_.size() >= options_.max_waiting) {
    why = "too many loads waiting";
  } else if (until.remaining() == Duration::zero()) {
    why = "no time to wait";
  } else if (expected > until.remaining()) {
    why = "the expected wait is longer than the time left";
  } else {
    Waiting me;
    const auto place = waiting_.insert(waiting_.end(), &me);
    // Granted means the slot is already ours (counted by the releaser).
    if (!me.granted_cv.wait_until(lock, until.when(), [&] { return me.granted; })) {
      waiting_.erase(place);
      why = "no slot freed before max_wait or the caller's deadline";
    }
  }
  if (why != nullptr) {
    ++shed_;
    Error error{ErrorKind::kOverloaded,
                fmt::format("database load shed: {} ({} loads in flight at the limit of {})", why,
                            in_flight_, static_cast<std::size_t>(limit_))};
    error.retry_after = std::max(expected_wait(), Duration(std::chrono::milliseconds(1)));
    return std::unexpected(std::move(error));
  }
  ++admitted_;
  return Permit(this);
}

std::optional<ConcurrencyLimiter::Permit> ConcurrencyLimiter::try_acquire() {
  std::lock_guard lock(mutex_);
  if (!has_free_slot() || !waiting_.empty()) return std::nullopt;
  ++in_flight_;
  ++admitted_;
  return Permit(this);
}

void ConcurrencyLimiter::release(Duration latency, LoadOutcome outcome) noexcept {
  std::lock_guard lock(mutex_);
  if (outcome != LoadOutcome::kIgnore) {
    const double latency_ns = static_cast<double>(std::max(latency, Duration(1)).count());
    learn_latency(latency_ns);
    if (options_.mode == LimitMode::kAdaptive) adapt(latency_ns);
  }
  --in_flight_;
  // A grown limit may free several slots at once.
  grant_free_slots();
}

void ConcurrencyLimiter::learn_latency(double latency_ns) {
  ++samples_;
  if (samples_ <= kWarmupSamples) {
    average_ns_ += (latency_ns - average_ns_) / static_cast<double>(samples_);
  } else {
    const double weight = 2.0 / (static_cast<double>(options_.long_window) + 1.0);
    average_ns_ += weight * (latency_ns - average_ns_);
  }
  if (average_ns_ > 2.0 * latency_ns) average_ns_ *= 0.95;
}

void ConcurrencyLimiter::adapt(double latency_ns) {
  // in_flight_ still counts the load being recorded: it was in flight.
  if (static_cast<double>(in_flight_) < limit_ / 2.0) return;
  const double gradient = std::clamp(options_.tolerance * average_ns_ / latency_ns, 0.5, 1.0);
  const double target = gradient * limit_ + std::sqrt(limit_);
  limit_ = (1.0 - options_.smoothing) * limit_ + options_.smoothing * target;
  limit_ = std::clamp(limit_, static_cast<double>(options_.min_limit),
                      static_cast<double>(options_.max_limit));
}

Duration ConcurrencyLimiter::expected_wait() const {
  const double rounds = std::ceil(static_cast<double>(waiting_.size() + 1) / std::max(limit_, 1.0));
  return Duration(static_cast<Duration::rep>(std::min(average_ns_ * rounds, 3600e9)));
}

ConcurrencyLimiterStats ConcurrencyLimiter::stats() const {
  std::lock_guard lock(mutex_);
  return ConcurrencyLimiterStats{
      .limit = options_.mode == LimitMode::kOff ? 0 : static_cast<std::size_t>(limit_),
      .in_flight = in_flight_,
      .waiting = waiting_.size(),
      .admitted = admitted_,
      .shed = shed_,
      .average_latency = Duration(static_cast<Duration::rep>(average_ns_))};
}

ConcurrencyLimiter::Permit::Permit(Permit&& other) noexcept
    : owner_(std::exchange(other.owner_, nullptr)) {}

ConcurrencyLimiter::Permit& ConcurrencyLimiter::Permit::operator=(Permit&& other) noexcept {
  if (this != &other) {
    if (owner_ != nullptr) owner_->release(Duration::zero(), LoadOutcome::kIgnore);
    owner_ = std::exchange(other.owner_, nullptr);
  }
  return *this;
}

ConcurrencyLimiter::Permit::~Permit() {
  if (owner_ != nullptr) owner_->release(Duration::zero(), LoadOutcome::kIgnore);
}

void ConcurrencyLimiter::Permit::record(Duration latency, LoadOutcome outcome) noexcept {
  if (owner_ == nullptr) return;
  std::exchange(owner_, nullptr)->release(latency, outcome);
}

}  // namespace herdguard
