// The Protector composes L1, single-flight, the breaker and the repository
// (see include/herdguard/protector.h for the request path).
//
// Invariants:
//  * The repository is called only from a flight's loader (Protector::load),
//    so concurrent misses of one key make at most one repository call
//    (barring a load that outlived load_timeout; see single_flight.h).
//  * The loader stores its result in L1 before returning, and single-flight
//    publishes the result only after that; so any caller that sees the result,
//    or arrives after the flight, also finds the L1 entry.
//  * No lock of the Protector's own is held across the repository call.
#include "herdguard/protector.h"

#include <fmt/format.h>

#include <algorithm>
#include <utility>

#include "core/random.h"
#include "metrics/striped_counter.h"
#include "protector/fleet_coordinator.h"
#include "protector/protector_metrics.h"

namespace herdguard {

struct Protector::Counters {
  internal::StripedCounter total_requests;
  internal::StripedCounter cache_hits;
  internal::StripedCounter cache_misses;
  internal::StripedCounter stale_returns;
  internal::StripedCounter background_refreshes;
  internal::StripedCounter background_refreshes_dropped;
  internal::StripedCounter db_queries;
  internal::StripedCounter db_errors;
  internal::StripedCounter fallbacks;
  internal::StripedCounter load_shed;
  internal::StripedCounter errors;
  internal::StripedCounter not_found;
  internal::StripedCounter l1_hits;
  internal::StripedCounter fallbacks_stale;
  internal::StripedCounter l2_hits;
  internal::StripedCounter l2_misses;
  internal::StripedCounter redis_errors;
};

namespace {

Result<std::string> answer_of(CacheEntry&& entry, std::string_view key) {
  if (entry.negative)
    return make_error(ErrorKind::kNotFound, fmt::format("no value for key '{}'", key));
  return std::move(entry.value);
}

// Errors that the fallback chain must not paper over: the answer is definitive.
bool is_definitive(const Error& error) {
  return error.kind == ErrorKind::kNotFound || error.kind == ErrorKind::kInvalidArgument;
}

}  // namespace

Result<std::unique_ptr<Protector>> Protector::create(ProtectorOptions options,
                                                     std::shared_ptr<Repository> repository) {
  if (auto valid = options.validate(); !valid) return std::unexpected(valid.error());
  if (!repository) return make_error(ErrorKind::kInvalidArgument, "protector: repository is null");
  auto l1 = MemoryCache::create(options.l1, options.clock);
  if (!l1) return std::unexpected(l1.error());
  // The breaker's listener: the user's, then the alert sinks.
  CircuitBreaker::Listener listener = options.breaker_listener;
  if (!options.alert_sinks.empty()) {
    listener = [user = options.breaker_listener, sinks = options.alert_sinks,
                name = options.metrics_name,
                clock = options.clock](BreakerState from, BreakerState to) {
      if (user) user(from, to);
      const AlertEvent event{
          .kind = AlertEvent::Kind::kBreakerStateChange,
          .cache = name,
          .pattern = {},
          .message = fmt::format("circuit breaker {} -> {}", to_string(from), to_string(to)),
          .from = from,
          .to = to,
          .at = clock->now()};
      for (const auto& sink : sinks) sink->send(event);
    };
  }
  auto breaker = CircuitBreaker::create(options.breaker, options.clock, std::move(listener));
  if (!breaker) return std::unexpected(breaker.error());
  auto flights = SingleFlight::create(options.single_flight);
  if (!flights) return std::unexpected(flights.error());
  std::shared_ptr<MetricsRegistry> registry = options.metrics_registry;
  std::string metrics_name = options.metrics_name;
  std::vector<std::string> key_patterns = options.key_patterns;
  std::unique_ptr<Protector> protector(new Protector(std::move(options), std::move(repository),
                                                     std::move(*l1), std::move(*breaker),
                                                     std::move(*flights)));
  if (registry) {
    auto metrics = internal::ProtectorMetrics::create(*registry, metrics_name,
                                                      std::move(key_patterns), protector.get());
    if (!metrics) return std::unexpected(metrics.error());
    protector->prometheus_ = std::move(*metrics);
  }
  return protector;
}

Protector::Protector(ProtectorOptions options, std::shared_ptr<Repository> repository,
                     std::unique_ptr<MemoryCache> l1, std::unique_ptr<CircuitBreaker> breaker,
                     std::unique_ptr<SingleFlight> flights)
    : options_(std::move(options)),
      repository_(std::move(repository)),
      l1_(std::move(l1)),
      breaker_(std::move(breaker)),
      counters_(std::make_unique<Counters>()),
      fleet_(options_.fleet_lock
                 ? std::make_unique<internal::FleetCoordinator>(
                       options_.l2, options_.fleet_lock, options_.notifier, options_.clock,
                       internal::FleetWaitOptions{.retry_interval = options_.fleet_retry_interval,
                                                  .poll_min = options_.fleet_poll_min,
                                                  .poll_max = options_.fleet_poll_max})
                 : nullptr),
      flights_(std::move(flights)) {}

Protector::~Protector() {
  if (prometheus_) prometheus_->detach();
}

Result<void> Protector::check_key(std::string_view key) const {
  if (key.empty()) return make_error(ErrorKind::kInvalidArgument, "key is empty");
  if (key.size() > options_.max_key_bytes)
    return make_error(ErrorKind::kInvalidArgument,
                      fmt::format("key is {} bytes, over max_key_bytes ({})", key.size(),
                                  options_.max_key_bytes));
  return ok();
}

void Protector::alert(AlertEvent::Kind kind, std::string_view key, const std::string& message) {
  if (options_.alert_sinks.empty()) return;
  std::atomic<std::int64_t>& last =
      kind == AlertEvent::Kind::kFallback ? last_fallback_alert_ : last_failure_alert_;
  const TimePoint now = options_.clock->now();
  const std::int64_t now_ns = now.time_since_epoch().count();
  std::int64_t seen = last.load(std::memory_order_relaxed);
  if (now_ns - seen < options_.alert_interval.count()) return;
  // One thread per interval wins the swap and sends.
  if (!last.compare_exchange_strong(seen, now_ns, std::memory_order_relaxed)) return;
  std::string pattern = "other";
  for (const auto& p : options_.key_patterns) {
    if (key.starts_with(p)) {
      pattern = p;
      break;
    }
  }
  const AlertEvent event{.kind = kind,
                         .cache = options_.metrics_name,
                         .pattern = std::move(pattern),
                         .message = message,
                         .from = BreakerState::kClosed,
                         .to = BreakerState::kClosed,
                         .at = now};
  for (const auto& sink : options_.alert_sinks) sink->send(event);
}

Result<std::string> Protector::finish(Result<std::string> result, std::string_view key,
                                      internal::RequestTrace& trace) {
  if (!result) {
    if (result.error().kind == ErrorKind::kNotFound) {
      counters_->not_found.add();
      trace.outcome = internal::Outcome::kNotFound;
    } else {
      counters_->errors.add();
      trace.outcome = internal::Outcome::kError;
      alert(AlertEvent::Kind::kFailure, key, result.error().to_string());
    }
  }
  if (prometheus_) prometheus_->record_request(key, trace);
  return result;
}

std::optional<Result<std::string>> Protector::fresh_answer(std::string_view key, TimePoint now,
                                                           std::optional<CacheEntry>* seen,
                                                           internal::RequestTrace* trace,
                                                           bool include_l2) {
  std::optional<CacheEntry> stale;
  if (options_.l1_enabled) {
    auto got = l1_->get(key, now);
    if (got && *got) {
      if ((*got)->is_fresh(now)) {
        counters_->l1_hits.add();
        if (trace) trace->layer = internal::Layer::kL1;
        return answer_of(std::move(**got), key);
      }
      if (trace) trace->layer = internal::Layer::kL1;
      stale = std::move(*got);
    }
  }
  if (include_l2 && options_.l2) {
    // L1 has nothing fresh: another process may have loaded it already.
    if (std::optional<CacheEntry> entry = l2_entry(key, now)) {
      if (trace) trace->layer = internal::Layer::kL2;
      if (entry->is_fresh(now)) return answer_of(std::move(*entry), key);
      if (!stale || entry->fresh_until > stale->fresh_until) stale = std::move(entry);
    }
  }
  if (seen) *seen = std::move(stale);
  return std::nullopt;
}

std::optional<CacheEntry> Protector::l2_entry(std::string_view key, TimePoint now) {
  auto got = options_.l2->get(key);
  if (!got) {
    counters_->redis_errors.add();
    return std::nullopt;
  }
  if (!*got || !(*got)->is_usable(now)) {
    counters_->l2_misses.add();
    return std::nullopt;
  }
  counters_->l2_hits.add();
  if (options_.l1_enabled) (void)l1_->put(key, **got);
  return std::move(*got);
}

std::optional<CacheEntry> Protector::cached(std::string_view key, TimePoint now) {
  if (options_.l1_enabled) {
    if (auto got = l1_->get(key, now); got && *got) return std::move(*got);
  }
  if (options_.l2) return l2_entry(key, now);
  return std::nullopt;
}

CacheEntry Protector::make_entry(std::string value, Duration ttl, Duration load_duration) const {
  const TimePoint now = options_.clock->now();
  const TimePoint fresh_until =
      now + jittered_ttl(ttl, options_.ttl_jitter, internal::uniform_real(0.0, 1.0));
  return CacheEntry{
      .value = std::move(value),
      .fresh_until = fresh_until,
      .stale_until =
          fresh_until + std::max(options_.stale_while_revalidate, options_.fail_safe_max_staleness),
      .negative = false,
      .load_duration = load_duration,
  };
}

SingleFlight::Loader Protector::loader_for(std::string_view key) {
  // The key is copied: the load may outlive the caller that started it.
  return [this, k = std::string(key)](Deadline load_deadline) { return load(k, load_deadline); };
}

Result<std::string> Protector::load(const std::string& key, Deadline load_deadline) {
  // Re-check: a flight that finished just before this one started may have
  // filled L1 after our caller looked.
  if (options_.l1_enabled) {
    const TimePoint now = options_.clock->now();
    if (auto got = l1_->get(key, now); got && *got && (*got)->is_fresh(now))
      return answer_of(std::move(**got), key);
  }
  auto from_repository = [this, &key](Deadline d) { return load_from_repository(key, d); };
  Result<CacheEntry> entry = make_error(ErrorKind::kInternal, "not loaded");
  if (fleet_) {
    entry = fleet_->load(key, load_deadline, from_repository);  // checks L2 first
  } else if (auto in_l2 = options_.l2 ? l2_entry(key, options_.clock->now()) : std::nullopt;
             in_l2 && in_l2->is_fresh(options_.clock->now())) {
    entry = std::move(*in_l2);  // async callers skipped L2 on their thread
  } else {
    entry = from_repository(load_deadline);
    if (entry && options_.l2) {
      if (auto put = options_.l2->put(key, *entry); !put) counters_->redis_errors.add();
    }
  }
  if (!entry) return std::unexpected(std::move(entry.error()));
  // An L1 put only fails for an entry larger than a shard's budget; the value
  // is still good for this flight's waiters, so it is returned regardless.
  if (options_.l1_enabled) (void)l1_->put(key, *entry);
  return answer_of(std::move(*entry), key);
}

Result<CacheEntry> Protector::load_from_repository(const std::string& key, Deadline load_deadline) {
  if (auto permit = breaker_->try_acquire(); !permit) {
    return make_error(ErrorKind::kCircuitOpen,
                      fmt::format("load of key '{}' refused: {}", key, permit.error().message));
  }
  counters_->db_queries.add();
  const auto start = std::chrono::steady_clock::now();
  Result<std::optional<std::string>> loaded = make_error(ErrorKind::kInternal, "not loaded");
  try {
    loaded = repository_->load(key, load_deadline);
  } catch (const std::exception& e) {
    loaded = make_error(ErrorKind::kBackend, fmt::format("repository threw: {}", e.what()));
  } catch (...) {
    loaded = make_error(ErrorKind::kBackend, "repository threw: unknown exception");
  }
  const Duration elapsed = std::chrono::steady_clock::now() - start;
  if (prometheus_) {
    prometheus_->db_query_duration().observe(std::chrono::duration<double>(elapsed).count());
  }

  if (!loaded && loaded.error().kind != ErrorKind::kNotFound) {
    counters_->db_errors.add();
    breaker_->record(CallOutcome::kFailure, elapsed);
    return std::unexpected(std::move(loaded.error()));
  }
  // "No such key" is an answer, not a failure of the database.
  breaker_->record(CallOutcome::kSuccess, elapsed);

  if (!loaded || !*loaded) {
    const TimePoint now = options_.clock->now();
    return CacheEntry{.value = {},
                      .fresh_until = now + options_.negative_ttl,
                      .stale_until = now + options_.negative_ttl,
                      .negative = true,
                      .load_duration = elapsed};
  }
  if ((*loaded)->size() > options_.max_value_bytes) {
    return make_error(ErrorKind::kInvalidArgument,
                      fmt::format("value of key '{}' is {} bytes, over max_value_bytes ({})", key,
                                  (*loaded)->size(), options_.max_value_bytes));
  }
  return make_entry(std::move(**loaded), options_.ttl, elapsed);
}

Result<std::string> Protector::fall_back(std::string_view key, Error error,
                                         internal::RequestTrace* trace) {
  if (error.kind == ErrorKind::kOverloaded) counters_->load_shed.add();
  const TimePoint now = options_.clock->now();
  if (auto got = cached(key, now); got && !got->negative && got->is_usable(now)) {
    const CacheEntry& entry = *got;
    if (entry.is_fresh(now)) return entry.value;  // another load filled it meanwhile
    if (now < entry.fresh_until + options_.fail_safe_max_staleness) {
      counters_->stale_returns.add();
      counters_->fallbacks.add();
      counters_->fallbacks_stale.add();
      trace->outcome = internal::Outcome::kStale;
      alert(AlertEvent::Kind::kFallback, key, "served a stale value: " + error.to_string());
      return entry.value;
    }
  }
  if (options_.default_value) {
    std::optional<std::string> fallback;
    try {
      fallback = options_.default_value(key);
    } catch (...) {
      // A throwing provider is "no default": the original error is more useful.
    }
    if (fallback) {
      counters_->fallbacks.add();
      trace->outcome = internal::Outcome::kFallback;
      alert(AlertEvent::Kind::kFallback, key, "served the default value: " + error.to_string());
      return std::move(*fallback);
    }
  }
  return std::unexpected(std::move(error));
}

Result<std::string> Protector::get(std::string_view key) {
  return get(key, Deadline::after(options_.request_timeout));
}

Result<std::string> Protector::get(std::string_view key, Deadline deadline) {
  counters_->total_requests.add();
  internal::RequestTrace trace;
  if (auto valid = check_key(key); !valid)
    return finish(std::unexpected(valid.error()), key, trace);
  if (auto fresh = fresh_answer(key, options_.clock->now(), nullptr, &trace)) {
    counters_->cache_hits.add();
    return finish(std::move(*fresh), key, trace);
  }
  counters_->cache_misses.add();
  trace.layer = internal::Layer::kLoad;
  auto result = call_flight(key, deadline);
  if (result || is_definitive(result.error())) return finish(std::move(result), key, trace);
  return finish(fall_back(key, std::move(result.error()), &trace), key, trace);
}

Result<std::string> Protector::call_flight(std::string_view key, Deadline deadline) {
  if (!prometheus_) return flights_->call(key, deadline, loader_for(key));
  const auto start = std::chrono::steady_clock::now();
  auto result = flights_->call(key, deadline, loader_for(key));
  prometheus_->single_flight_wait().observe(
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  return result;
}

void Protector::get_async(std::string_view key, Callback callback) {
  counters_->total_requests.add();
  internal::RequestTrace trace;
  if (auto valid = check_key(key); !valid) {
    return callback(finish(std::unexpected(valid.error()), key, trace));
  }
  if (auto fresh =
          fresh_answer(key, options_.clock->now(), nullptr, &trace, /*include_l2=*/false)) {
    counters_->cache_hits.add();
    return callback(finish(std::move(*fresh), key, trace));
  }
  counters_->cache_misses.add();
  trace.layer = internal::Layer::kLoad;
  // Shared so that the callback survives a refused join, which drops the lambda.
  auto shared_callback = std::make_shared<Callback>(std::move(callback));
  auto joined = flights_->call_async(
      key, loader_for(key),
      [this, k = std::string(key), shared_callback,
       trace](const Result<std::string>& result) mutable {
        if (result || is_definitive(result.error()))
          return (*shared_callback)(finish(result, k, trace));
        (*shared_callback)(finish(fall_back(k, result.error(), &trace), k, trace));
      });
  if (!joined) {
    (*shared_callback)(finish(fall_back(key, std::move(joined.error()), &trace), key, trace));
  }
}

Result<std::string> Protector::get_stale_while_revalidate(std::string_view key) {
  return get_stale_while_revalidate(key, Deadline::after(options_.request_timeout));
}

Result<std::string> Protector::get_stale_while_revalidate(std::string_view key, Deadline deadline) {
  counters_->total_requests.add();
  internal::RequestTrace trace;
  if (auto valid = check_key(key); !valid)
    return finish(std::unexpected(valid.error()), key, trace);
  const TimePoint now = options_.clock->now();
  std::optional<CacheEntry> stale;
  if (auto fresh = fresh_answer(key, now, &stale, &trace)) {
    counters_->cache_hits.add();
    return finish(std::move(*fresh), key, trace);
  }
  if (stale && !stale->negative && now < stale->fresh_until + options_.stale_while_revalidate) {
    counters_->stale_returns.add();
    auto started = flights_->start_if_idle(key, loader_for(key));
    if (!started) {
      counters_->background_refreshes_dropped.add();
    } else if (*started) {
      counters_->background_refreshes.add();
    }
    trace.outcome = internal::Outcome::kStale;
    return finish(std::move(stale->value), key, trace);
  }
  counters_->cache_misses.add();
  trace.layer = internal::Layer::kLoad;
  auto result = call_flight(key, deadline);
  if (result || is_definitive(result.error())) return finish(std::move(result), key, trace);
  return finish(fall_back(key, std::move(result.error()), &trace), key, trace);
}

Result<void> Protector::set(std::string_view key, std::string_view value,
                            std::optional<Duration> ttl) {
  if (auto valid = check_key(key); !valid) return valid;
  if (value.size() > options_.max_value_bytes) {
    return make_error(ErrorKind::kInvalidArgument,
                      fmt::format("value is {} bytes, over max_value_bytes ({})", value.size(),
                                  options_.max_value_bytes));
  }
  const Duration effective_ttl = ttl.value_or(options_.ttl);
  if (effective_ttl <= Duration::zero())
    return make_error(ErrorKind::kInvalidArgument, "ttl must be > 0");
  CacheEntry entry = make_entry(std::string(value), effective_ttl, Duration::zero());
  if (options_.l2) {
    if (auto put = options_.l2->put(key, entry); !put) {
      counters_->redis_errors.add();
      if (options_.l1_enabled) (void)l1_->put(key, std::move(entry));
      return put;
    }
  }
  if (!options_.l1_enabled) return ok();
  return l1_->put(key, std::move(entry));
}

Result<void> Protector::invalidate(std::string_view key) {
  if (auto valid = check_key(key); !valid) return valid;
  auto erased = l1_->erase(key);
  if (options_.l2) {
    if (auto l2_erased = options_.l2->erase(key); !l2_erased) {
      counters_->redis_errors.add();
      return l2_erased;
    }
  }
  return erased;
}

std::optional<CacheEntry> Protector::peek(std::string_view key) {
  auto got = l1_->get(key);
  if (!got) return std::nullopt;
  return std::move(*got);
}

ProtectionMetrics Protector::metrics() const {
  const SingleFlightStats flight = flights_->stats();
  const MemoryCacheStats l1 = l1_->stats();
  const Counters& c = *counters_;
  const internal::FleetStats fleet = fleet_ ? fleet_->stats() : internal::FleetStats{};
  const RedisCacheStats l2 = options_.l2 ? options_.l2->stats() : RedisCacheStats{};
  return ProtectionMetrics{
      .total_requests = c.total_requests.value(),
      .cache_hits = c.cache_hits.value(),
      .l1_hits = c.l1_hits.value(),
      .cache_misses = c.cache_misses.value(),
      .single_flight_hits = flight.shared,
      .lock_acquisitions = flight.loads_started,
      .circuit_breaker_trips = breaker_->trips(),
      .stale_returns = c.stale_returns.value(),
      .background_refreshes = c.background_refreshes.value(),
      .background_refreshes_dropped = c.background_refreshes_dropped.value(),
      .db_queries = c.db_queries.value(),
      .db_errors = c.db_errors.value(),
      .fallbacks = c.fallbacks.value(),
      .fallbacks_stale = c.fallbacks_stale.value(),
      .load_shed = c.load_shed.value(),
      .errors = c.errors.value(),
      .not_found = c.not_found.value(),
      .l2_hits = c.l2_hits.value(),
      .l2_misses = c.l2_misses.value(),
      .l2_corrupt = l2.corrupt,
      .redis_errors = c.redis_errors.value() + fleet.redis_errors,
      .fleet_lock_acquisitions = fleet.lock_acquisitions,
      .fleet_lock_contentions = fleet.lock_contentions,
      .fleet_waited_loads = fleet.waited_loads,
      .fleet_degraded_loads = fleet.degraded_loads,
      .fenced_off_writes = fleet.fenced_off_writes,
      .circuit_breaker_state = breaker_->state(),
      .l1_entries = l1.entries,
      .l1_bytes = l1.bytes,
      .l1_evictions = l1.evictions,
      .loads_in_flight = flights_->in_flight(),
  };
}

}  // namespace herdguard
