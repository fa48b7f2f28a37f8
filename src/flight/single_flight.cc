// Single-flight: coalesces concurrent loads of one key.
//
// Invariants:
//  * shard.flights holds the one unfinished flight for key, if any. A
//    flight is erased from its shard BEFORE its result is published, so a
//    finished flight is never joined.
//  * flight.done goes false -> true once, under flight.mutex; result and
//    callbacks are only read/written under flight.mutex. The first completion
//    (the loader's, or the watchdog's timeout) wins; later ones are dropped.
//  * Every waiter is released by the flight's load deadline at the latest:
//    a synchronous waiter waits until the earlier of its own deadline and
//    the load deadline, and at the latter completes the flight with kTimeout
//    itself; a flight that async callbacks wait for, or whose load was
//    handed off, is registered with the watchdog (once: flight.watched),
//    which completes it at its load deadline unless it finished before. (So
//    joining a running flight on the synchronous path touches no global
//    lock and no other thread.) A leader running the load inline is not a
//    waiter: it returns when its loader does.
//  * No lock is held while a loader or a callback runs.
#include "herdguard/single_flight.h"

#include <fmt/format.h>

#include <condition_variable>
#include <map>
#include <mutex>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "core/bounded_executor.h"
#include "core/string_hash.h"

namespace herdguard {
namespace {
// Flights in progress spread over this many shards; each shard's list is
// scanned on a join, so enough of them keeps the lists short in a cold start.
constexpr std::size_t kShards = 64;

long long to_ms(Duration d) {
  return static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(d).count());
}
}  // namespace

struct SingleFlight::Flight {
  Flight(std::string k, std::size_t h, Deadline d) : key(std::move(k)), hash(h), load_deadline(d) {}

  const std::string key;
  const std::size_t hash;  // of key: finds its shard and entry again
  const Deadline load_deadline;
  // Joins so far, including the starter. Protected by the owning shard's mutex.
  std::size_t joins = 1;
  // Position in the watchdog's schedule. Protected by the watchdog's mutex.
  std::multimap<Deadline::SteadyTime, std::weak_ptr<Flight>>::iterator timer;
  bool timer_armed = false;  // protected by the watchdog's mutex
  // Set once, by whoever first puts the flight under the watchdog.
  std::atomic<bool> watched{false};

  std::mutex mutex;
  std::condition_variable finished;
  // State below is protected by mutex.
  bool done = false;
  // Read only once done is set; an empty value until then, which costs no
  // allocation (an error's message would).
  Result<std::string> result;
  std::vector<Callback> callbacks;
};

// The unfinished flights of one shard, in a flat vector rather than a hash
// map: a shard only holds the loads in progress at this moment (a handful),
// and a node-based map would cost a heap allocation per flight on every miss.
// With it a flight costs one allocation, as in Go's singleflight. Entries
// carry the key's hash, so a scan compares strings only on a hash match.
struct SingleFlight::Shard {
  std::mutex mutex;
  // Protected by mutex. Unordered: erase swaps the last entry in.
  std::vector<std::shared_ptr<Flight>> flights;

  std::shared_ptr<Flight>* find(std::size_t hash, std::string_view key) {
    for (auto& f : flights) {
      if (f->hash == hash && f->key == key) return &f;
    }
    return nullptr;
  }
  void erase(std::shared_ptr<Flight>* entry) {
    if (entry != &flights.back()) *entry = std::move(flights.back());
    flights.pop_back();
  }
};

// Completes flights whose load deadline passed. One thread, sleeping until
// the earliest deadline, so a hung loader cannot hold its waiters forever.
//
// Timed-out flights are completed on `deliveries_`, not on the watchdog's own
// thread: completing one runs its async callbacks (and their fallbacks), and
// a flight with thousands of async waiters must not delay the timeout of
// every other flight. When the delivery queue is full, the watchdog completes
// the flight itself (late, never lost).
class SingleFlight::Watchdog {
 public:
  Watchdog(SingleFlight& owner, std::unique_ptr<internal::BoundedExecutor> deliveries)
      : owner_(owner), deliveries_(std::move(deliveries)), thread_([this] { run(); }) {}
  ~Watchdog() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    changed_.notify_one();
    thread_.join();
    deliveries_.reset();  // runs the deliveries still queued
  }

  // Puts `flight` under watch; a no-op after the first time.
  void watch(const std::shared_ptr<Flight>& flight) {
    if (flight->watched.exchange(true, std::memory_order_acq_rel)) return;
    bool earliest;
    {
      std::lock_guard lock(mutex_);
      flight->timer = schedule_.emplace(flight->load_deadline.when(), flight);
      flight->timer_armed = true;
      earliest = flight->timer == schedule_.begin();
    }
    if (earliest) changed_.notify_one();
  }

  void disarm(Flight& flight) {
    std::lock_guard lock(mutex_);
    if (flight.timer_armed) {
      schedule_.erase(flight.timer);
      flight.timer_armed = false;
    }
  }

 private:
  void run() {
    std::unique_lock lock(mutex_);
    while (!stopping_) {
      if (schedule_.empty()) {
        changed_.wait(lock);
        continue;
      }
      auto first = schedule_.begin();
      // A copy: wait_until reads its deadline again after re-locking, when
      // disarm() may have erased the node it came from.
      const Deadline::SteadyTime wake_at = first->first;
      if (std::chrono::steady_clock::now() < wake_at) {
        changed_.wait_until(lock, wake_at);
        continue;
      }
      std::shared_ptr<Flight> flight = first->second.lock();
      if (flight) flight->timer_armed = false;
      schedule_.erase(first);
      if (!flight) continue;
      lock.unlock();
      auto deliver = [owner = &owner_, flight] {
        owner->complete(flight, owner->load_timed_out(*flight), Completion::kLoadTimeout);
      };
      if (!deliveries_->try_submit(deliver)) deliver();
      lock.lock();
    }
  }

  SingleFlight& owner_;
  std::mutex mutex_;
  std::condition_variable changed_;
  // Declared before the thread and after mutex_: deliveries still queued at
  // destruction run (in the destructor) while disarm() can still lock mutex_.
  std::unique_ptr<internal::BoundedExecutor> deliveries_;
  // State below is protected by mutex_.
  std::multimap<Deadline::SteadyTime, std::weak_ptr<Flight>> schedule_;
  bool stopping_ = false;
  std::thread thread_;  // last: starts after the members it uses exist
};

Result<void> SingleFlightOptions::validate() const {
  auto bad = [](std::string what) {
    return make_error(ErrorKind::kInvalidArgument, "single flight: " + what);
  };
  if (max_waiters_per_key < 1) return bad("max_waiters_per_key must be >= 1");
  if (load_timeout <= Duration::zero())
    return bad(fmt::format("load_timeout must be > 0, got {} ms", to_ms(load_timeout)));
  if (load_timeout > std::chrono::hours(1))
    return bad(fmt::format("load_timeout must be <= 1 h, got {} ms", to_ms(load_timeout)));
  if (load_threads < 1 || load_threads > 4096)
    return bad(fmt::format("load_threads must be in 1..4096, got {}", load_threads));
  if (load_queue < 1) return bad("load_queue must be >= 1");
  return ok();
}

Result<std::unique_ptr<SingleFlight>> SingleFlight::create(SingleFlightOptions options) {
  if (auto valid = options.validate(); !valid) return std::unexpected(valid.error());
  auto deliveries = internal::BoundedExecutor::create(2, 4096, "herdguard-timeouts");
  if (!deliveries) return std::unexpected(deliveries.error());
  auto executor = internal::BoundedExecutor::create({.name = "herdguard-load",
                                                     .max_threads = options.load_threads,
                                                     .queue_capacity = options.load_queue});
  if (!executor) return std::unexpected(executor.error());
  std::unique_ptr<SingleFlight> flights(new SingleFlight(std::move(options)));
  try {
    flights->watchdog_ = std::make_unique<Watchdog>(*flights, std::move(*deliveries));
  } catch (const std::system_error& e) {
    return make_error(ErrorKind::kInternal,
                      fmt::format("single flight: cannot start the watchdog: {}", e.what()));
  }
  flights->executor_ = std::move(*executor);
  return flights;
}

SingleFlight::SingleFlight(SingleFlightOptions options)
    : options_(std::move(options)), shards_(std::make_unique<Shard[]>(kShards)) {}

SingleFlight::~SingleFlight() {
  executor_.reset();  // runs queued loads and joins: nothing completes after this
  watchdog_.reset();
}

SingleFlight::Shard& SingleFlight::shard_for(std::size_t hash) const {
  return shards_[hash % kShards];
}

Result<std::pair<std::shared_ptr<SingleFlight::Flight>, SingleFlight::Role>> SingleFlight::join(
    std::string_view key, JoinMode mode, SteadyTime now) {
  const std::size_t hash = internal::StringHash{}(key);
  Shard& shard = shard_for(hash);
  std::shared_ptr<Flight> flight;
  {
    std::lock_guard lock(shard.mutex);
    if (std::shared_ptr<Flight>* found = shard.find(hash, key)) {
      Flight& existing = **found;
      if (mode == JoinMode::kStartOnly) return std::pair{*found, Role::kJoined};
      if (existing.joins >= options_.max_waiters_per_key) {
        waiters_refused_.fetch_add(1, std::memory_order_relaxed);
        return make_error(ErrorKind::kOverloaded,
                          fmt::format("key '{}' already has {} waiters (max_waiters_per_key)", key,
                                      existing.joins));
      }
      ++existing.joins;
      flight = *found;
    } else {
      // No overflow: load_timeout <= 1 h.
      flight = std::make_shared<Flight>(std::string(key), hash,
                                        Deadline::at(now + options_.load_timeout));
      shard.flights.push_back(flight);
      loads_started_.fetch_add(1, std::memory_order_relaxed);
      return std::pair{std::move(flight), Role::kStarted};
    }
  }
  shared_.fetch_add(1, std::memory_order_relaxed);
  return std::pair{std::move(flight), Role::kJoined};
}

bool SingleFlight::should_run_inline(Deadline deadline, SteadyTime now) const {
  if (!options_.inline_loads) return false;
  const std::int64_t estimate = load_estimate_ns_.load(std::memory_order_relaxed);
  // Twice the estimate: a load near its recent maximum still fits.
  return deadline.when() - now >= std::chrono::nanoseconds(estimate) * 2;
}

void SingleFlight::note_load_time(Duration took) {
  const std::int64_t sample = std::chrono::duration_cast<std::chrono::nanoseconds>(took).count();
  const std::int64_t old = load_estimate_ns_.load(std::memory_order_relaxed);
  const std::int64_t next = sample >= old ? sample : old - (old - sample) / 8;
  if (next != old) load_estimate_ns_.store(next, std::memory_order_relaxed);
}

namespace {
// Runs `loader`, turning exceptions into kBackend errors.
Result<std::string> run_loader(const SingleFlight::Loader& loader, Deadline deadline) {
  try {
    return loader(deadline);
  } catch (const std::exception& e) {
    return make_error(ErrorKind::kBackend, fmt::format("loader threw: {}", e.what()));
  } catch (...) {
    return make_error(ErrorKind::kBackend, "loader threw: unknown exception");
  }
}
}  // namespace

Result<void> SingleFlight::hand_off(const std::shared_ptr<Flight>& flight, const Loader& loader) {
  watchdog_->watch(flight);
  const bool queued = executor_->try_submit([this, flight, loader] {
    const auto start = std::chrono::steady_clock::now();
    Result<std::string> result = run_loader(loader, flight->load_deadline);
    note_load_time(std::chrono::steady_clock::now() - start);
    complete(flight, std::move(result));
  });
  if (queued) {
    handed_off_.fetch_add(1, std::memory_order_relaxed);
    return ok();
  }
  loads_refused_.fetch_add(1, std::memory_order_relaxed);
  auto refused = make_error(ErrorKind::kOverloaded,
                            fmt::format("load queue full ({} waiting); load of key '{}' refused",
                                        options_.load_queue, flight->key));
  complete(flight, refused);  // releases anyone who joined meanwhile
  return std::unexpected(std::move(refused.error()));
}

Result<std::string> SingleFlight::lead_inline(const std::shared_ptr<Flight>& flight,
                                              Deadline deadline, const Loader& loader,
                                              SteadyTime start) {
  inline_loads_.fetch_add(1, std::memory_order_relaxed);
  Result<std::string> result =
      run_loader(loader, Deadline::earliest(deadline, flight->load_deadline));
  const auto end = std::chrono::steady_clock::now();
  note_load_time(end - start);
  if (!result && result.error().kind == ErrorKind::kTimeout && end >= deadline.when() &&
      end < flight->load_deadline.when()) {
    // Cut short by this caller's deadline, not by load_timeout: the load goes
    // on for the flight's other waiters and for the cache.
    continued_.fetch_add(1, std::memory_order_relaxed);
    waiter_timeouts_.fetch_add(1, std::memory_order_relaxed);
    if (!hand_off(flight, loader)) return result;
    return make_error(
        ErrorKind::kTimeout,
        fmt::format("deadline passed while loading key '{}'; the load goes on", flight->key));
  }
  if (complete(flight, std::move(result))) return flight->result;  // done: never written again
  // The watchdog completed it first (the load ran past load_timeout).
  std::lock_guard lock(flight->mutex);
  return flight->result;
}

bool SingleFlight::complete(const std::shared_ptr<Flight>& flight, Result<std::string> result,
                            Completion how) {
  {
    Shard& shard = shard_for(flight->hash);
    std::lock_guard lock(shard.mutex);
    std::shared_ptr<Flight>* found = shard.find(flight->hash, flight->key);
    if (found && *found == flight) shard.erase(found);
  }
  std::vector<Callback> callbacks;
  {
    std::lock_guard lock(flight->mutex);
    if (flight->done) return false;  // the watchdog or the loader got here first
    flight->done = true;
    flight->result = std::move(result);
    callbacks.swap(flight->callbacks);
  }
  // Counted before the callbacks run: they may take long.
  if (how == Completion::kLoadTimeout) load_timeouts_.fetch_add(1, std::memory_order_relaxed);
  flight->finished.notify_all();
  if (flight->watched.load(std::memory_order_acquire)) watchdog_->disarm(*flight);
  // Reading result without the lock is safe: done is set and result is never written again.
  for (auto& cb : callbacks) {
    try {
      cb(flight->result);
    } catch (...) {
      // A throwing callback must not deprive the other waiters of the result.
    }
  }
  return true;
}

Result<std::string> SingleFlight::load_timed_out(const Flight& flight) const {
  return make_error(ErrorKind::kTimeout, fmt::format("load of key '{}' exceeded load_timeout {} ms",
                                                     flight.key, to_ms(options_.load_timeout)));
}

Result<std::string> SingleFlight::wait_for(const std::shared_ptr<Flight>& flight,
                                           std::string_view key, Deadline deadline) {
  {
    std::unique_lock lock(flight->mutex);
    const Deadline until = Deadline::earliest(deadline, flight->load_deadline);
    if (flight->finished.wait_until(lock, until.when(), [&] { return flight->done; }))
      return flight->result;
  }
  if (flight->load_deadline.expired()) {
    // The load ran past load_timeout: end the flight for everyone, as the
    // watchdog does (whoever completes it first wins; the others no-op).
    complete(flight, load_timed_out(*flight), Completion::kLoadTimeout);
    std::lock_guard lock(flight->mutex);
    return flight->result;
  }
  waiter_timeouts_.fetch_add(1, std::memory_order_relaxed);
  return make_error(ErrorKind::kTimeout,
                    fmt::format("deadline passed while waiting for the load of key '{}'", key));
}

Result<std::string> SingleFlight::call(std::string_view key, Deadline deadline,
                                       const Loader& loader) {
  // One clock read serves the checks, the flight's deadline and the load's
  // start time: the uncontended call is the hot path of every miss.
  const SteadyTime now = std::chrono::steady_clock::now();
  if (now >= deadline.when()) {
    waiter_timeouts_.fetch_add(1, std::memory_order_relaxed);
    return make_error(ErrorKind::kTimeout,
                      fmt::format("deadline passed before the load of key '{}' started", key));
  }
  auto joined = join(key, JoinMode::kJoin, now);
  if (!joined) return std::unexpected(std::move(joined.error()));
  const std::shared_ptr<Flight>& flight = joined->first;
  if (joined->second == Role::kStarted) {
    if (should_run_inline(deadline, now)) return lead_inline(flight, deadline, loader, now);
    if (auto handed = hand_off(flight, loader); !handed) return std::unexpected(handed.error());
  }
  return wait_for(flight, key, deadline);
}

Result<SingleFlight::Role> SingleFlight::call_async(std::string_view key, const Loader& loader,
                                                    Callback callback) {
  auto joined = join(key, JoinMode::kJoin, std::chrono::steady_clock::now());
  if (!joined) return std::unexpected(std::move(joined.error()));
  Flight& flight = *joined->first;
  if (joined->second == Role::kStarted) {
    // Refused: the flight is completed with kOverloaded (for anyone who
    // joined meanwhile); this callback is never called.
    if (auto handed = hand_off(joined->first, loader); !handed)
      return std::unexpected(handed.error());
  }
  bool registered = false;
  {
    std::lock_guard lock(flight.mutex);
    if (!flight.done) {
      flight.callbacks.push_back(std::move(callback));
      registered = true;
    }
  }
  if (registered) {
    // Registered: the watchdog releases it by the load deadline (a no-op
    // for a handed-off flight, already watched).
    watchdog_->watch(joined->first);
    return joined->second;
  }
  // Finished between join and here (a fast load): deliver inline.
  callback(flight.result);
  return joined->second;
}

bool SingleFlight::in_flight(std::string_view key) const {
  const std::size_t hash = internal::StringHash{}(key);
  Shard& shard = shard_for(hash);
  std::lock_guard lock(shard.mutex);
  return shard.find(hash, key) != nullptr;
}

void SingleFlight::forget(std::string_view key) {
  const std::size_t hash = internal::StringHash{}(key);
  Shard& shard = shard_for(hash);
  std::lock_guard lock(shard.mutex);
  if (std::shared_ptr<Flight>* found = shard.find(hash, key)) shard.erase(found);
}

void SingleFlight::forget_all() {
  for (std::size_t i = 0; i < kShards; ++i) {
    std::lock_guard lock(shards_[i].mutex);
    shards_[i].flights.clear();  // each completes by identity (it finds itself gone)
  }
}

Result<bool> SingleFlight::start_if_idle(std::string_view key, const Loader& loader) {
  auto joined = join(key, JoinMode::kStartOnly, std::chrono::steady_clock::now());
  if (!joined) return std::unexpected(std::move(joined.error()));
  if (joined->second != Role::kStarted) return false;
  if (auto handed = hand_off(joined->first, loader); !handed)
    return std::unexpected(handed.error());
  return true;
}

std::size_t SingleFlight::in_flight() const {
  std::size_t n = 0;
  for (std::size_t i = 0; i < kShards; ++i) {
    std::lock_guard lock(shards_[i].mutex);
    n += shards_[i].flights.size();
  }
  return n;
}

SingleFlightStats SingleFlight::stats() const {
  return {
      .loads_started = loads_started_.load(std::memory_order_relaxed),
      .shared = shared_.load(std::memory_order_relaxed),
      .waiters_refused = waiters_refused_.load(std::memory_order_relaxed),
      .loads_refused = loads_refused_.load(std::memory_order_relaxed),
      .load_timeouts = load_timeouts_.load(std::memory_order_relaxed),
      .waiter_timeouts = waiter_timeouts_.load(std::memory_order_relaxed),
      .inline_loads = inline_loads_.load(std::memory_order_relaxed),
      .handed_off = handed_off_.load(std::memory_order_relaxed),
      .continued = continued_.load(std::memory_order_relaxed),
      .load_estimate_ns =
          static_cast<std::uint64_t>(load_estimate_ns_.load(std::memory_order_relaxed)),
  };
}

std::size_t SingleFlight::load_threads() const { return executor_->threads(); }
std::size_t SingleFlight::peak_load_threads() const { return executor_->peak_threads(); }

}  // namespace herdguard
