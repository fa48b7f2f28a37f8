// herdguard/concurrency_limiter.h — a limit on concurrent database loads
// that finds itself.
//
// Single-flight makes one load per key; a cold start or a burst of distinct
// keys can still send thousands of loads at a database that answers ten at a
// time, and a saturated database answers everyone late. The limiter admits
// `limit` loads at once. A load beyond the limit waits for a slot, at most
// `max_wait` and never past its caller's deadline, and is then shed with
// kOverloaded and a retry-after (the Protector answers a stale value instead
// when it has one). A load that would wait longer than that (a load's
// average latency per limit's worth of loads queued ahead) is shed at once,
// so under saturation callers get their fallback quickly.
//
// Modes:
//  * kAdaptive moves the limit as Netflix concurrency-limits'
//    Gradient2 does: it keeps a long-term average of load latency and, on
//    each load, compares the load's latency with it. While latency stays
//    within `tolerance` times the average the limit grows (by about
//    sqrt(limit), smoothed); when it rises beyond, the limit shrinks in
//    proportion (at most halving per step, smoothed). The limit does not grow
//    while fewer than half of it are in use (nothing was learned about a
//    higher one). Bounded by [min_limit, max_limit].
//  * kFixed admits exactly `limit`.
//  * kOff admits everything (and still counts loads in flight).
// Hand-written: no Debian package offers an adaptive concurrency limiter.
//
// Thread safety: all methods are safe from any number of threads. A Permit is
// owned by one thread at a time.
//
// Example:
//   auto limiter = herdguard::ConcurrencyLimiter::create({.mode =
//   herdguard::LimitMode::kAdaptive}); auto permit = (*limiter)->acquire(deadline); if (!permit)
//   return permit.error();              // kOverloaded, retry_after set auto row = db.query(key);
//   permit->record(elapsed, herdguard::LoadOutcome::kSuccess);
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <optional>

#include "herdguard/clock.h"
#include "herdguard/result.h"

namespace herdguard {

enum class LimitMode { kOff, kFixed, kAdaptive };

struct ConcurrencyLimitOptions {
  // Off by default (see ProtectorOptions::db_limit for why).
  LimitMode mode = LimitMode::kOff;
  // kFixed: the limit. kAdaptive: the starting limit. REQUIRES: 1..100000.
  std::size_t limit = 20;
  // kAdaptive's bounds. REQUIRES: 1 <= min_limit <= limit <= max_limit <= 100000.
  std::size_t min_limit = 4;
  std::size_t max_limit = 1000;
  // kAdaptive: latency up to tolerance × the long-term average is not taken
  // as queueing in the database. REQUIRES: >= 1.
  double tolerance = 1.5;
  // kAdaptive: the weight of each new limit against the previous one.
  // REQUIRES: (0, 1].
  double smoothing = 0.2;
  // kAdaptive: the long-term average spans about this many loads. REQUIRES: >= 1.
  std::size_t long_window = 600;
  // How long a load beyond the limit waits for a slot before it is shed
  // (never past its caller's deadline). A load whose expected wait (see
  // ConcurrencyLimiter) is longer than that is shed at once. The default
  // waits as long as the caller's deadline allows, so the limiter fails no
  // load that would have had its answer in time; a shorter max_wait trades
  // such loads for quicker fallbacks. Zero sheds every load beyond the limit
  // at once. Duration::max() saturates. REQUIRES: >= 0.
  Duration max_wait = Duration::max();
  // Loads that may wait at once; more are shed at once. REQUIRES: >= 1.
  std::size_t max_waiting = 10'000;

  // Returns kInvalidArgument naming the first bad field.
  Result<void> validate() const;
};

// How a load ended, for the limiter's latency estimate.
enum class LoadOutcome {
  kSuccess,  // an answer (a value or "no such key"): its latency is a sample
  kTimeout,  // it ran out of time: its latency (a lower bound) is a sample
  kIgnore,   // it failed for another reason: no sample
};

struct ConcurrencyLimiterStats {
  std::size_t limit = 0;      // the current limit (kOff: 0, meaning none)
  std::size_t in_flight = 0;  // loads holding a permit
  std::size_t waiting = 0;    // loads waiting for a slot
  std::uint64_t admitted = 0;
  std::uint64_t shed = 0;      // loads refused with kOverloaded
  Duration average_latency{};  // the long-term average (zero before any sample)
};

class ConcurrencyLimiter {
 public:
  // A slot held by one load: record() its outcome, or let it go (no sample).
  class Permit {
   public:
    Permit(Permit&& other) noexcept;
    Permit& operator=(Permit&& other) noexcept;
    Permit(const Permit&) = delete;
    Permit& operator=(const Permit&) = delete;
    ~Permit();
    // Frees the slot and feeds `latency` to the estimate (see LoadOutcome).
    // Only the first call of record() on a permit counts.
    void record(Duration latency, LoadOutcome outcome) noexcept;

   private:
    friend class ConcurrencyLimiter;
    explicit Permit(ConcurrencyLimiter* owner) noexcept : owner_(owner) {}
    ConcurrencyLimiter* owner_;  // null once released
  };

  // Errors: kInvalidArgument from options.validate().
  static Result<std::shared_ptr<ConcurrencyLimiter>> create(ConcurrencyLimitOptions options);

  // A slot for one load, waiting for one while the limit is reached (until
  // max_wait or `deadline`, whichever is first). Waiting loads get slots in
  // the order they came: a freed slot is handed to the oldest, never taken
  // by a load that arrives meanwhile. Errors: kOverloaded (with
  // Error::retry_after) when no slot came in time or max_waiting loads
  // already wait. REQUIRES: the limiter outlives the permit.
  Result<Permit> acquire(Deadline deadline);

  // A slot if one is free now, else nullopt (not counted as shed): for
  // callers that would rather go elsewhere than wait (a repository routing
  // among servers).
  std::optional<Permit> try_acquire();

  ConcurrencyLimiterStats stats() const;
  const ConcurrencyLimitOptions& options() const noexcept { return options_; }

 private:
  explicit ConcurrencyLimiter(ConcurrencyLimitOptions options);
  void release(Duration latency, LoadOutcome outcome) noexcept;
  // Feeds the long-term latency average (every mode). REQUIRES: mutex_ held.
  void learn_latency(double latency_ns);
  // Gradient2's step for one sample. REQUIRES: mutex_ held, kAdaptive.
  void adapt(double latency_ns);
  // About how long a load arriving now waits for a slot: one average
  // latency per limit's worth of loads ahead (zero before any sample). Also
  // the retry-after of a shed. REQUIRES: mutex_ held.
  Duration expected_wait() const;

  // A load waiting for a slot, on its own stack; queued in `waiting_`.
  struct Waiting {
    std::condition_variable granted_cv;
    bool granted = false;  // protected by mutex_: the slot is already counted in in_flight_
  };
  // Hands free slots to the oldest waiting loads. REQUIRES: mutex_ held.
  void grant_free_slots();
  bool has_free_slot() const;  // REQUIRES: mutex_ held.

  const ConcurrencyLimitOptions options_;
  mutable std::mutex mutex_;
  // Protected by mutex_. Invariant: in_flight_ <= floor(limit_) except just
  // after the limit shrank (no slot is taken back; new loads wait until
  // enough have finished). Slots go first come, first served: while
  // `waiting_` is not empty no newcomer takes a slot, and a freed slot is
  // counted for the front waiter before it is woken (handed over, so a
  // load arriving between the release and that wake-up cannot take it).
  double limit_;
  std::size_t in_flight_ = 0;
  std::list<Waiting*> waiting_;
  std::uint64_t admitted_ = 0;
  std::uint64_t shed_ = 0;
  double average_ns_ = 0;  // long-term latency average (0: no sample yet)
  std::uint64_t samples_ = 0;
};

}  // namespace herdguard
