// herdguard/single_flight.h — one load per key, however many callers miss at once.
//
// Concurrent calls for the same key join one "flight". The caller that starts
// it runs the load on its own thread (as Go's singleflight does), so a miss
// costs no hand-off and no thread is a bottleneck for distinct keys; the
// others wait for its result, each until its own deadline.
//
// Running on the leader's thread must not hold the leader past its deadline,
// nor cut the load short for followers with longer deadlines:
//  * The leader runs the load inline only when its time left covers twice
//    the recent load time (a decaying maximum of measured loads); otherwise
//    it hands the load to an elastic executor and waits like a follower.
//  * An inline load gets the leader's deadline (the earlier of it and
//    load_timeout). If it ends in kTimeout because that deadline passed, the
//    flight is not failed: the load goes on on the executor with the full
//    load_timeout, for the waiters and for the cache, and the leader gets
//    kTimeout. That costs a second load only when the estimate was wrong.
//  * A loader that ignores its deadline can hold an inline leader past it;
//    set inline_loads = false for such loaders (every load is handed off).
//  * call_async() and start_if_idle() never block: their loads are handed off.
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
//  * Waiters are released at load_timeout at the latest: a blocking waiter
//    waits until the earlier of its deadline and the load's, and at the
//    latter completes the flight with kTimeout itself; a watchdog thread
//    does the same for flights with async callbacks or handed-off loads.
//    Timeouts are delivered off the watchdog thread (two delivery threads),
//    so one flight's many async callbacks do not delay other flights'.
//  * A flight has at most `max_waiters_per_key` joins; the excess is refused
//    with kOverloaded instead of queueing without bound. When a load must be
//    handed off and the executor's queue is full, the flight fails with
//    kOverloaded.
//
// Thread safety: every method is safe from any number of threads.
// REQUIRES: no call is in progress when the SingleFlight is destroyed. The
// destructor waits for handed-off loads to return.
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
  // Whether a caller of call() may run the load on its own thread (see the
  // file comment). false: every load is handed off to the executor.
  bool inline_loads = true;
  // Most threads running handed-off loads (async, background, and loads of
  // leaders whose deadline is too short). Threads start on demand and retire
  // after 10 s idle; loads run inline are not counted. REQUIRES: 1..4096.
  std::size_t load_threads = 256;
  // Handed-off loads waiting for a thread; when full, such a flight gets
  // kOverloaded. REQUIRES: >= 1.
  std::size_t load_queue = 1024;

  // Returns kInvalidArgument naming the first bad field.
  Result<void> validate() const;
};

// Counters since creation. Read with relaxed ordering: each value is exact,
// but a snapshot of several is not atomic as a whole.
struct SingleFlightStats {
  std::uint64_t loads_started = 0;     // flights created (one load each)
  std::uint64_t shared = 0;            // joins of a flight another caller started
  std::uint64_t waiters_refused = 0;   // joins refused by max_waiters_per_key
  std::uint64_t loads_refused = 0;     // flights refused because the load queue was full
  std::uint64_t load_timeouts = 0;     // flights that hit load_timeout
  std::uint64_t waiter_timeouts = 0;   // blocking callers whose own deadline passed first
  std::uint64_t inline_loads = 0;      // loads run on the leader's thread
  std::uint64_t handed_off = 0;        // loads run on the executor
  std::uint64_t continued = 0;         // inline loads cut by the leader's deadline, then handed off
  std::uint64_t load_estimate_ns = 0;  // the recent load time that steers inline/hand-off
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
  // Whether a flight of `key` is running now (it may end right after: a
  // hint, for callers that would build a loader only to find one running).
  bool in_flight(std::string_view key) const;

  // Detaches the flight of `key`, if any, from the key: it runs on and
  // delivers its result to the callers that joined it, but later calls start
  // a new flight. For invalidation: a caller that arrives after invalidate(k)
  // must not be handed a load that began before it. Safe from any thread.
  void forget(std::string_view key);
  // forget() of every key with a flight now: for an invalidation that names
  // no keys (Protector::invalidate_tag, clear). O(flights in progress).
  void forget_all();

  // Number of flights in progress.
  std::size_t in_flight() const;
  // Threads the executor has now, and the most it had at once.
  std::size_t load_threads() const;
  std::size_t peak_load_threads() const;
  SingleFlightStats stats() const;

 private:
  struct Flight;
  struct Shard;
  class Watchdog;

  explicit SingleFlight(SingleFlightOptions options);
  enum class JoinMode { kJoin, kStartOnly };
  // Finds or creates the flight for `key` (a created one runs nothing yet).
  // With kStartOnly an existing flight is returned as kJoined without
  // counting a waiter. Errors: kOverloaded.
  using SteadyTime = Deadline::SteadyTime;
  Result<std::pair<std::shared_ptr<Flight>, Role>> join(std::string_view key, JoinMode mode,
                                                        SteadyTime now);
  // Runs the load of a flight this caller started on its own thread.
  Result<std::string> lead_inline(const std::shared_ptr<Flight>& flight, Deadline deadline,
                                  const Loader& loader, SteadyTime start);
  // Runs the load on the executor, with the flight's load deadline. On
  // refusal the flight is completed with the returned kOverloaded.
  Result<void> hand_off(const std::shared_ptr<Flight>& flight, const Loader& loader);
  // Blocks until the flight is done or `deadline`; then its result or kTimeout.
  // Waits for `flight` until `deadline`; at the flight's load deadline
  // (when earlier) completes it with the load timeout itself, as the
  // watchdog would: synchronous waiters need no watchdog.
  Result<std::string> wait_for(const std::shared_ptr<Flight>& flight, std::string_view key,
                               Deadline deadline);
  // The error a flight is completed with at its load deadline.
  Result<std::string> load_timed_out(const Flight& flight) const;
  bool should_run_inline(Deadline deadline, SteadyTime now) const;
  void note_load_time(Duration took);
  // Publishes `result` to the flight's waiters; only the first completion
  // counts. Returns whether this one did.
  enum class Completion { kLoaded, kLoadTimeout };
  bool complete(const std::shared_ptr<Flight>& flight, Result<std::string> result,
                Completion how = Completion::kLoaded);
  Shard& shard_for(std::size_t key_hash) const;

  const SingleFlightOptions options_;
  std::unique_ptr<Shard[]> shards_;

  std::atomic<std::uint64_t> loads_started_{0};
  std::atomic<std::uint64_t> shared_{0};
  std::atomic<std::uint64_t> waiters_refused_{0};
  std::atomic<std::uint64_t> loads_refused_{0};
  std::atomic<std::uint64_t> load_timeouts_{0};
  std::atomic<std::uint64_t> waiter_timeouts_{0};
  std::atomic<std::uint64_t> inline_loads_{0};
  std::atomic<std::uint64_t> handed_off_{0};
  std::atomic<std::uint64_t> continued_{0};
  // A decaying maximum of recent load times, in ns: rises at once to a
  // slower load, falls by 1/8 of the gap per faster one. Relaxed: a stale
  // read only shifts one inline/hand-off choice.
  std::atomic<std::int64_t> load_estimate_ns_{0};

  // Destroyed in reverse order: the executor first (it drains and joins, so no
  // load completes after), then the watchdog.
  std::unique_ptr<Watchdog> watchdog_;
  std::unique_ptr<internal::BoundedExecutor> executor_;
};

}  // namespace herdguard
