// Single-flight: coalesces concurrent loads of one key.
//
// Invariants:
//  * shard.flights[key] holds the one unfinished flight for key, if any. A
//    flight is erased from its shard BEFORE its result is published, so a
//    finished flight is never joined.
//  * flight.done goes false -> true once, under flight.mutex; result and
//    callbacks are only read/written under flight.mutex. The first completion
//    (the loader's, or the watchdog's timeout) wins; later ones are dropped.
//  * Every flight is registered with the watchdog, which completes it with
//    kTimeout at its load deadline unless it finished before; so every waiter
//    is released by the load deadline at the latest.
//  * No lock is held while a loader or a callback runs.
#include "herdguard/single_flight.h"

#include <fmt/format.h>

#include <condition_variable>
#include <map>
#include <mutex>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/bounded_executor.h"
#include "core/string_hash.h"

namespace herdguard {
namespace {
constexpr std::size_t kShards = 16;

long long to_ms(Duration d) {
  return static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(d).count());
}
}  // namespace

struct SingleFlight::Flight {
  Flight(std::string k, Deadline d) : key(std::move(k)), load_deadline(d) {}

  const std::string key;
  const Deadline load_deadline;
  // Joins so far, including the starter. Protected by the owning shard's mutex.
  std::size_t joins = 1;
  // Position in the watchdog's schedule. Protected by the watchdog's mutex.
  std::multimap<Deadline::SteadyTime, std::weak_ptr<Flight>>::iterator timer;
  bool timer_armed = false;  // protected by the watchdog's mutex

  std::mutex mutex;
  std::condition_variable finished;
  // State below is protected by mutex.
  bool done = false;
  Result<std::string> result = make_error(ErrorKind::kInternal, "flight not finished");
  std::vector<Callback> callbacks;
};

struct SingleFlight::Shard {
  std::mutex mutex;
  // Protected by mutex.
  std::unordered_map<std::string, std::shared_ptr<Flight>, internal::StringHash,
                     internal::StringEqual>
      flights;
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

  void arm(const std::shared_ptr<Flight>& flight) {
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
      owner_.load_timeouts_.fetch_add(1, std::memory_order_relaxed);
      auto deliver = [owner = &owner_, flight] {
        owner->complete(flight,
                        make_error(ErrorKind::kTimeout,
                                   fmt::format("load of key '{}' exceeded load_timeout {} ms",
                                               flight->key, to_ms(owner->options_.load_timeout))));
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
  if (load_threads < 1 || load_threads > 1024)
    return bad(fmt::format("load_threads must be in 1..1024, got {}", load_threads));
  if (load_queue < 1) return bad("load_queue must be >= 1");
  return ok();
}

Result<std::unique_ptr<SingleFlight>> SingleFlight::create(SingleFlightOptions options) {
  if (auto valid = options.validate(); !valid) return std::unexpected(valid.error());
  auto deliveries = internal::BoundedExecutor::create(2, 4096, "herdguard-timeouts");
  if (!deliveries) return std::unexpected(deliveries.error());
  auto executor =
      internal::BoundedExecutor::create(options.load_threads, options.load_queue, "herdguard-load");
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

SingleFlight::Shard& SingleFlight::shard_for(std::string_view key) const {
  return shards_[internal::StringHash{}(key) % kShards];
}

Result<std::pair<std::shared_ptr<SingleFlight::Flight>, SingleFlight::Role>> SingleFlight::join(
    std::string_view key, const Loader& loader, JoinMode mode) {
  Shard& shard = shard_for(key);
  std::shared_ptr<Flight> flight;
  {
    std::lock_guard lock(shard.mutex);
    if (auto it = shard.flights.find(key); it != shard.flights.end()) {
      Flight& existing = *it->second;
      if (mode == JoinMode::kStartOnly) return std::pair{it->second, Role::kJoined};
      if (existing.joins >= options_.max_waiters_per_key) {
        waiters_refused_.fetch_add(1, std::memory_order_relaxed);
        return make_error(ErrorKind::kOverloaded,
                          fmt::format("key '{}' already has {} waiters (max_waiters_per_key)", key,
                                      existing.joins));
      }
      ++existing.joins;
      shared_.fetch_add(1, std::memory_order_relaxed);
      return std::pair{it->second, Role::kJoined};
    }
    flight = std::make_shared<Flight>(std::string(key), Deadline::after(options_.load_timeout));
    shard.flights.emplace(flight->key, flight);
  }
  loads_started_.fetch_add(1, std::memory_order_relaxed);
  watchdog_->arm(flight);

  bool queued = executor_->try_submit([this, flight, loader] {
    Result<std::string> result = make_error(ErrorKind::kInternal, "loader did not run");
    try {
      result = loader(flight->load_deadline);
    } catch (const std::exception& e) {
      result = make_error(ErrorKind::kBackend, fmt::format("loader threw: {}", e.what()));
    } catch (...) {
      result = make_error(ErrorKind::kBackend, "loader threw: unknown exception");
    }
    complete(flight, std::move(result));
  });
  if (!queued) {
    loads_refused_.fetch_add(1, std::memory_order_relaxed);
    auto refused = make_error(ErrorKind::kOverloaded,
                              fmt::format("load queue full ({} waiting); load of key '{}' refused",
                                          options_.load_queue, key));
    complete(flight, refused);  // releases anyone who joined meanwhile
    return refused;
  }
  return std::pair{std::move(flight), Role::kStarted};
}

void SingleFlight::complete(const std::shared_ptr<Flight>& flight, Result<std::string> result) {
  {
    Shard& shard = shard_for(flight->key);
    std::lock_guard lock(shard.mutex);
    auto it = shard.flights.find(flight->key);
    if (it != shard.flights.end() && it->second == flight) shard.flights.erase(it);
  }
  std::vector<Callback> callbacks;
  {
    std::lock_guard lock(flight->mutex);
    if (flight->done) return;  // the watchdog or the loader got here first
    flight->done = true;
    flight->result = std::move(result);
    callbacks.swap(flight->callbacks);
  }
  flight->finished.notify_all();
  watchdog_->disarm(*flight);
  // Reading result without the lock is safe: done is set and result is never written again.
  for (auto& cb : callbacks) {
    try {
      cb(flight->result);
    } catch (...) {
      // A throwing callback must not deprive the other waiters of the result.
    }
  }
}

Result<std::string> SingleFlight::call(std::string_view key, Deadline deadline,
                                       const Loader& loader) {
  if (deadline.expired()) {
    waiter_timeouts_.fetch_add(1, std::memory_order_relaxed);
    return make_error(ErrorKind::kTimeout,
                      fmt::format("deadline passed before the load of key '{}' started", key));
  }
  auto joined = join(key, loader, JoinMode::kJoin);
  if (!joined) return std::unexpected(std::move(joined.error()));
  Flight& flight = *joined->first;
  std::unique_lock lock(flight.mutex);
  if (!flight.finished.wait_until(lock, deadline.when(), [&] { return flight.done; })) {
    waiter_timeouts_.fetch_add(1, std::memory_order_relaxed);
    return make_error(ErrorKind::kTimeout,
                      fmt::format("deadline passed while waiting for the load of key '{}'", key));
  }
  return flight.result;
}

Result<SingleFlight::Role> SingleFlight::call_async(std::string_view key, const Loader& loader,
                                                    Callback callback) {
  auto joined = join(key, loader, JoinMode::kJoin);
  if (!joined) return std::unexpected(std::move(joined.error()));
  Flight& flight = *joined->first;
  {
    std::lock_guard lock(flight.mutex);
    if (!flight.done) {
      flight.callbacks.push_back(std::move(callback));
      return joined->second;
    }
  }
  // Finished between join and here (a fast load, or a refused queue): deliver inline.
  callback(flight.result);
  return joined->second;
}

void SingleFlight::forget(std::string_view key) {
  Shard& shard = shard_for(key);
  std::lock_guard lock(shard.mutex);
  if (auto it = shard.flights.find(key); it != shard.flights.end()) shard.flights.erase(it);
}

Result<bool> SingleFlight::start_if_idle(std::string_view key, const Loader& loader) {
  auto joined = join(key, loader, JoinMode::kStartOnly);
  if (!joined) return std::unexpected(std::move(joined.error()));
  return joined->second == Role::kStarted;
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
  };
}

}  // namespace herdguard
