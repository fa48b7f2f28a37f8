// herdguard/single_flight.h — one load per key, however many callers miss at once.
//
// Concurrent calls for the same key join one "flight": the first caller starts
// the load on a bounded pool of load threads, and every caller (the first
// included) waits for its result. Because the load never runs on a caller's
// thread, each caller can stop waiting at its own deadline while the load
// goes on for the others, bounded by its own `load_timeout`.
//
// Guarantees:
//  * At most one load per key runs through a SingleFlight at a time, except
//    after a load timed out: the timed-out load may still be running when the
//    next caller starts a new one (its result is then delivered to nobody).
//  * Memory ordering: everything the loader did before returning (a write to
//    a cache, say) happens-before the return of every blocking waiter and the
//    invocation of every async callback that receives that result.
//  * A flight leaves the key's slot before its waiters are woken, so a caller
//    that arrives after a flight finished starts a new flight (it never sees a
//    finished one). Callers that check a cache first therefore see the loaded
//    value; herdguard's Protector also re-checks the cache inside the load.
//  * An exception thrown by the loader becomes a kBackend error delivered to
//    every waiter.
//  * Timeouts are delivered off the watchdog thread (two delivery threads),
//    so one flight's many async callbacks do not delay other flights'.
//  * A flight has at most `max_waiters_per_key` joins; the excess is refused
//    with kOverloaded instead of queueing without bound. When the load pool's
//    queue is full, a new flight fails with kOverloaded.
//
// Thread safety: every method is safe from any number of threads.
// REQUIRES: no call is in progress when the SingleFlight is destroyed. The
// destructor waits for running loads to return.
//
// Example:
//   auto flights = herdguard::SingleFlight::create({.load_timeout = std::chrono::seconds(2)});
//   herdguard::Result<std::string> v = (*flights)->call(
//       "product:42", herdguard::Deadline::after(std::chrono::milliseconds(300)),
//       [&](herdguard::Deadline load_deadline) { return db.load("product:42", load_deadline); });
//
//   (*flights)->call_async("product:42", loader,
//                          [](const herdguard::Result<std::string>& r) { reply(r); });
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "herdguard/clock.h"
#include "herdguard/result.h"

namespace herdguard {

namespace internal {
class BoundedExecutor;
}

struct SingleFlightOptions {
  // Joins allowed per flight; the excess gets kOverloaded. REQUIRES: >= 1.
  std::size_t max_waiters_per_key = 10'000;
  // A load still running after this is abandoned: its waiters get kTimeout.
  // REQUIRES: 0 < load_timeout <= 1 h. Refused beyond an hour, not
  // saturated: Redis keeps a load's lock and version key until its deadline.
  Duration load_timeout = std::chrono::seconds(5);
  // Threads running loads, i.e. the most concurrent loads (of distinct keys).
  // REQUIRES: 1..1024.
  std::size_t load_threads = 8;
  // Loads waiting for a thread; when full, new flights get kOverloaded.
  // REQUIRES: >= 1.
  std::size_t load_queue = 1024;

  // Returns kInvalidArgument naming the first bad field.
  Result<void> validate() const;
};

// Counters since creation. Read with relaxed ordering: each value is exact,
// but a snapshot of several is not atomic as a whole.
struct SingleFlightStats {
  std::uint64_t loads_started = 0;    // flights created (one load each)
  std::uint64_t shared = 0;           // joins of a flight another caller started
  std::uint64_t waiters_refused = 0;  // joins refused by max_waiters_per_key
  std::uint64_t loads_refused = 0;    // flights refused because the load queue was full
  std::uint64_t load_timeouts = 0;    // flights that hit load_timeout
  std::uint64_t waiter_timeouts = 0;  // blocking callers whose own deadline passed first
};

class SingleFlight {
 public:
  // Produces the value for the key. `load_deadline` is when the flight will be
  // abandoned; pass it on to the database as a statement timeout.
  // May throw: exceptions become kBackend errors.
  using Loader = std::function<Result<std::string>(Deadline load_deadline)>;
  // Receives a flight's result. Called on a load thread (or the watchdog
  // thread for a timeout, or inline when the flight already finished); keep it
  // short and do not block in it.
  using Callback = std::function<void(const Result<std::string>&)>;

  enum class Role { kStarted, kJoined };

  // Errors: kInvalidArgument from options.validate(); kInternal when the
  // OS refuses to start a thread.
  static Result<std::unique_ptr<SingleFlight>> create(SingleFlightOptions options);
  ~SingleFlight();
  SingleFlight(const SingleFlight&) = delete;
  SingleFlight& operator=(const SingleFlight&) = delete;

  // Joins the flight for `key`, starting it with `loader` when none is
  // running, and blocks until its result or `deadline`, whichever is first.
  // Returns the loader's result (shared by all waiters), or kTimeout when
  // `deadline` passed first (the flight goes on for the others) or the load
  // exceeded load_timeout, or kOverloaded (see class comment).
  // Blocks for at most until `deadline`.
  Result<std::string> call(std::string_view key, Deadline deadline, const Loader& loader);

  // Like call(), but returns at once and delivers the result to `callback`
  // (exactly once, at the latest when the load times out). Returns whether
  // this call started the flight or joined one. Errors: kOverloaded, in which
  // case `callback` is never called.
  Result<Role> call_async(std::string_view key, const Loader& loader, Callback callback);

  // Starts a flight for `key` with `loader` unless one is already running,
  // and returns at once; nobody waits for the result (the loader is expected
  // to store it, e.g. in a cache). For background refreshes: however often it
  // is called, one load per key runs at a time. Returns true when this call
  // started a flight. Errors: kOverloaded when the load queue is full.
  Result<bool> start_if_idle(std::string_view key, const Loader& loader);

  // Detaches the flight of `key`, if any, from the key: it runs on and
  // delivers its result to the callers that joined it, but later calls start
  // a new flight. For invalidation: a caller that arrives after invalidate(k)
  // must not be handed a load that began before it. Safe from any thread.
  void forget(std::string_view key);

  // Number of flights in progress.
  std::size_t in_flight() const;
  SingleFlightStats stats() const;

 private:
  struct Flight;
  struct Shard;
  class Watchdog;

  explicit SingleFlight(SingleFlightOptions options);
  enum class JoinMode { kJoin, kStartOnly };
  // Finds or creates the flight for `key`. With kStartOnly an existing flight
  // is returned as kJoined without counting a waiter. Errors: kOverloaded.
  Result<std::pair<std::shared_ptr<Flight>, Role>> join(std::string_view key, const Loader& loader,
                                                        JoinMode mode);
  // Publishes `result` to the flight's waiters; only the first completion counts.
  void complete(const std::shared_ptr<Flight>& flight, Result<std::string> result);
  Shard& shard_for(std::string_view key) const;

  const SingleFlightOptions options_;
  std::unique_ptr<Shard[]> shards_;

  std::atomic<std::uint64_t> loads_started_{0};
  std::atomic<std::uint64_t> shared_{0};
  std::atomic<std::uint64_t> waiters_refused_{0};
  std::atomic<std::uint64_t> loads_refused_{0};
  std::atomic<std::uint64_t> load_timeouts_{0};
  std::atomic<std::uint64_t> waiter_timeouts_{0};

  // Destroyed in reverse order: the executor first (it drains and joins, so no
  // load completes after), then the watchdog.
  std::unique_ptr<Watchdog> watchdog_;
  std::unique_ptr<internal::BoundedExecutor> executor_;
};

}  // namespace herdguard
