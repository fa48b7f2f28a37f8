// The Protector: the public face of the read path. It owns the parts and
// runs a request through them; the parts themselves (tiered_cache.h,
// repository_loader.h, load_coordinator.h) hold the mechanics, and the data
// of a get flows down through them once:
//
//   get → TieredCache (L1, then L2) → SingleFlight → LoadCoordinator
//       → TieredCache (re-check, versioned write, L1 fill) + RepositoryLoader
//
// Invariants:
//  * The repository is called only from a flight's loader (the coordinator),
//    so concurrent misses of one key make at most one repository call
//    (barring a load that outlived load_timeout; see single_flight.h).
//  * The loader fills L1 before returning, and single-flight publishes the
//    result only after that; so any caller that sees the result, or arrives
//    after the flight, also finds the L1 entry (unless a set/invalidate came
//    in meanwhile, which wins).
//  * set() and invalidate() detach the key's running flight after updating
//    the caches: a get that starts after they returned never joins a load
//    that began before them. A fresh L2 answer does the same: a get that
//    starts after it never gets an older value from a load of this process
//    (monotonic reads, docs/consistency.md).
//  * No lock of the Protector's own is held across Redis or the repository,
//    and the fallback chain never waits on Redis.
#include "herdguard/protector.h"

#include <fmt/format.h>

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <unordered_map>
#include <utility>

#include "core/random.h"
#include "protector/load_batch.h"
#include "protector/load_coordinator.h"
#include "protector/protector_counters.h"
#include "protector/protector_metrics.h"
#include "protector/repository_loader.h"
#include "protector/tag_versions.h"
#include "protector/tiered_cache.h"

namespace herdguard {

// Destroyed in reverse order: flights first (it joins the loads, which use
// everything above it), then the coordinator and its parts.
struct Protector::Parts {
  Parts(ProtectorOptions o, std::shared_ptr<Repository> repository, std::unique_ptr<MemoryCache> l1,
        std::shared_ptr<internal::TagVersions> tag_versions, std::unique_ptr<CircuitBreaker> b,
        std::shared_ptr<ConcurrencyLimiter> limiter)
      : options(std::move(o)),
        tags(std::move(tag_versions)),
        breaker(std::move(b)),
        cache(std::move(l1), options.l1_enabled, options.l1_max_ttl, options.l2, options.l3,
              options.single_flight.load_timeout, options.clock, options.early_refresh, options.ttl,
              tags, options.tag_history, counters),
        loader(std::move(repository), *breaker, std::move(limiter),
               internal::EntryPolicy{.ttl = options.ttl,
                                     .ttl_jitter = options.ttl_jitter,
                                     .stale_while_revalidate = options.stale_while_revalidate,
                                     .fail_safe_max_staleness = options.fail_safe_max_staleness,
                                     .negative_ttl = options.negative_ttl,
                                     .max_value_bytes = options.max_value_bytes,
                                     .max_lifetime = entry_lifetime_cap(options)},
               options.clock, counters),
        coordinator(cache, loader, options.fleet_lock, options.notifier, options.clock,
                    internal::FleetWaitOptions{.retry_interval = options.fleet_retry_interval,
                                               .poll_min = options.fleet_poll_min,
                                               .poll_max = options.fleet_poll_max},
                    counters) {}

  // tag_history − load_timeout − 1 min (ProtectorOptions::tag_history).
  static Duration entry_lifetime_cap(const ProtectorOptions& o) {
    if (o.tag_history == Duration::max()) return Duration::max();  // remembered forever: no cap
    return o.tag_history - o.single_flight.load_timeout - std::chrono::minutes(1);
  }

  const ProtectorOptions options;
  internal::ProtectorCounters counters;
  // The tag versions this process knows; also the L1's validity.
  const std::shared_ptr<internal::TagVersions> tags;
  const std::unique_ptr<CircuitBreaker> breaker;
  internal::TieredCache cache;
  internal::RepositoryLoader loader;
  internal::LoadCoordinator coordinator;
  // Set by create() when options.metrics_registry is. The destructor first
  // detaches it from the registry (no scrape reads a dying protector); it is
  // destroyed after flights, so loads still running may record into it.
  std::unique_ptr<internal::ProtectorMetrics> prometheus;
  // Hot-key detection (null when off). A read is sampled when its hit or
  // miss counter's new per-thread count has these low bits all zero
  // (UINT64_MAX when off: never); a hot key's L1 refresh window opens
  // hot_refresh_lead before its expiry.
  // The mask follows the detector's adaptive interval (set after each
  // sampled read); relaxed: a stale mask only samples a little more or less.
  std::unique_ptr<HotKeyDetector> hot_keys;
  std::atomic<std::uint64_t> hot_sample_mask{UINT64_MAX};
  Duration hot_refresh_lead{};
  // Serializes pinning and unpinning (apply_hot_key_changes).
  std::mutex pin_mutex;
  // The L1 backplane (null when off): this protector's id in the messages
  // it publishes (random, so it skips its own), and its registration with
  // the notifier, whose calls run on the notifier's thread. Destroyed first
  // of all (~Protector), so no call comes in while the parts go.
  std::uint64_t backplane_origin = 0;
  std::unique_ptr<InvalidationSubscription> backplane;
  // Last: destroyed first, so no load runs against the members above after.
  std::unique_ptr<SingleFlight> flights;
};

namespace internal {
// A key of a get_many call that L1 did not answer: its position in the
// call, the stale entry seen on the way (for the fallbacks), its trace.
struct GetManyMiss {
  std::size_t at = 0;
  std::optional<CacheEntry> stale;
  RequestTrace trace;
};
}  // namespace internal

namespace {

Result<std::string> answer_of(CacheEntry&& entry, std::string_view key) {
  if (entry.negative)
    return make_error(ErrorKind::kNotFound, fmt::format("no value for key '{}'", key));
  return std::move(entry.value);
}

Result<std::string> fresh_answer(internal::TieredCache::L1Read&& read, std::string_view key) {
  if (read.negative)
    return make_error(ErrorKind::kNotFound, fmt::format("no value for key '{}'", key));
  return std::move(read.value);
}

// Errors that the fallback chain must not paper over: the answer is definitive.
bool is_definitive(const Error& error) {
  return error.kind == ErrorKind::kNotFound || error.kind == ErrorKind::kInvalidArgument;
}

// The later-expiring of two candidates for a stale answer.
void keep_newer(std::optional<CacheEntry>& best, std::optional<CacheEntry> candidate) {
  if (candidate && (!best || candidate->fresh_until > best->fresh_until))
    best = std::move(candidate);
}

}  // namespace

Result<std::unique_ptr<Protector>> Protector::create(ProtectorOptions options,
                                                     std::shared_ptr<Repository> repository) {
  if (auto valid = options.validate(); !valid) return std::unexpected(valid.error());
  if (!repository) return make_error(ErrorKind::kInvalidArgument, "protector: repository is null");
  auto tags = std::make_shared<internal::TagVersions>(options.tag_history);
  auto l1 = MemoryCache::create(options.l1, options.clock, tags);
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
  std::shared_ptr<ConcurrencyLimiter> limiter = options.db_limiter;
  if (!limiter) {
    auto created = ConcurrencyLimiter::create(options.db_limit);
    if (!created) return std::unexpected(created.error());
    limiter = std::move(*created);
  }
  auto parts = std::make_unique<Parts>(std::move(options), std::move(repository), std::move(*l1),
                                       std::move(tags), std::move(*breaker), std::move(limiter));
  parts->flights = std::move(*flights);
  if (parts->options.adaptive_ttl.enabled)
    parts->loader.set_adaptive_ttl(parts->options.adaptive_ttl);
  if (parts->options.hot_keys.enabled) {
    auto detector = HotKeyDetector::create(parts->options.hot_keys, parts->options.clock);
    if (!detector) return std::unexpected(detector.error());
    parts->hot_keys = std::move(*detector);
    parts->hot_sample_mask.store(parts->hot_keys->sample_interval() - 1);
    parts->hot_refresh_lead =
        scale_saturating(parts->options.ttl, 1.0 - parts->options.hot_keys.refresh_fraction);
  }
  std::unique_ptr<Protector> protector(new Protector(std::move(parts)));
  Parts& p = *protector->parts_;
  if (p.options.metrics_registry) {
    auto metrics =
        internal::ProtectorMetrics::create(*p.options.metrics_registry, p.options.metrics_name,
                                           p.options.key_patterns, protector.get());
    if (!metrics) return std::unexpected(metrics.error());
    p.prometheus = std::move(*metrics);
    internal::ProtectorMetrics* prometheus = p.prometheus.get();
    p.loader.set_observer([prometheus](Duration elapsed) {
      prometheus->db_query_duration().observe(std::chrono::duration<double>(elapsed).count());
    });
  }
  if (p.options.notifier && p.options.l1_backplane &&
      p.options.notifier->has_invalidation_channel()) {
    p.backplane_origin = internal::thread_rng()();
    p.backplane = p.options.notifier->listen(
        {.invalidated =
             [parts = &p](std::uint64_t origin, std::string_view key) {
               // Another process's set() or invalidate(). Erasing bumps the
               // key's generation, so no fill that began before this lands;
               // the running load is detached, so no get that starts after
               // this joins a load that may have read the value from before.
               if (origin == parts->backplane_origin) return;  // ours: done when made
               (void)parts->cache.l1().erase(key);
               parts->flights->forget(key);
               parts->counters.backplane_invalidations.add();
             },
         .tag_invalidated =
             [parts = &p](std::uint64_t origin, std::string_view tag, std::uint64_t version) {
               // Another process's invalidate_tag() or clear(): known before
               // any later read here (L1 asks the versions on its next read
               // of each entry), and no get that starts after joins a load
               // that began before.
               if (origin == parts->backplane_origin) return;
               parts->tags->learn(tag, version);
               parts->flights->forget_all();
               parts->counters.backplane_tag_invalidations.add();
             },
         .resync =
             [parts = &p] {
               // The subscription was lost or is back: invalidations
               // published while it was down are not heard, so no L1 copy
               // is answered again before L2 confirms it (a key L2 no
               // longer has is loaded anew). At both ends: at the loss for
               // the copies held then (this process's reads reach L2 again
               // before its subscriber may), at the return for the copies
               // filled during the gap.
               parts->cache.l1().recheck_all(parts->options.clock->now());
               parts->cache.force_tag_sync();
               parts->counters.backplane_resyncs.add();
             }});
  }
  // Learn the fleet's tag versions now rather than on the first request
  // (best effort, briefly: a Redis that is down or hung is synced with later).
  p.cache.sync_tags_if_due(Deadline::after(
      std::min<Duration>(p.options.request_timeout, std::chrono::milliseconds(100))));
  if (p.options.warm_up.keys) {
    Protector* raw = protector.get();
    protector->warm_up_thread_ = std::thread([raw] { raw->run_warm_up(); });
  }
  return protector;
}

void Protector::run_warm_up() {
  Parts& p = *parts_;
  std::vector<std::string> keys;
  try {
    keys = p.options.warm_up.keys();
  } catch (...) {
    p.counters.warm_up_failures.add();  // the list itself could not be had
    return;
  }
  const auto step = std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      std::chrono::duration<double>(1.0 / p.options.warm_up.keys_per_second));
  auto next = std::chrono::steady_clock::now();
  for (const std::string& key : keys) {
    {
      std::unique_lock lock(warm_up_mutex_);
      if (warm_up_stop_.wait_until(lock, next, [&] { return warm_up_stopping_; })) return;
    }
    next += step;
    // A get like any caller's: one load per key across the fleet, and a
    // caller arriving meanwhile joins it.
    Result<std::string> loaded = get(key);
    if (loaded || loaded.error().kind == ErrorKind::kNotFound) {
      p.counters.warmed_keys.add();
    } else {
      p.counters.warm_up_failures.add();
    }
  }
}

Protector::Protector(std::unique_ptr<Parts> parts) : parts_(std::move(parts)) {}

Protector::~Protector() {
  parts_->backplane.reset();  // waits for a backplane call in progress
  if (warm_up_thread_.joinable()) {
    {
      std::lock_guard lock(warm_up_mutex_);
      warm_up_stopping_ = true;
    }
    warm_up_stop_.notify_all();
    warm_up_thread_.join();  // after the key it is loading, if any
  }
  if (parts_->prometheus) parts_->prometheus->detach();
  parts_->flights.reset();  // joins running loads before the parts they use go
}

Result<void> Protector::check_key(std::string_view key) const {
  if (key.empty()) return make_error(ErrorKind::kInvalidArgument, "key is empty");
  if (key.size() > parts_->options.max_key_bytes)
    return make_error(ErrorKind::kInvalidArgument,
                      fmt::format("key is {} bytes, over max_key_bytes ({})", key.size(),
                                  parts_->options.max_key_bytes));
  // Redis Cluster hashes "{}" as no hash tag, so for a key that starts
  // with '}' the keys of its value, lock and version (key_layout.h) would
  // land in different slots, and no script could touch them together.
  if (key.front() == '}' && parts_->options.l2 && parts_->options.l2->on_cluster())
    return make_error(ErrorKind::kInvalidArgument,
                      "a key that starts with '}' cannot be cached in Redis Cluster (it would "
                      "empty the hash tag of its Redis keys)");
  return ok();
}

void Protector::alert(AlertEvent::Kind kind, std::string_view key, const std::string& message) {
  const ProtectorOptions& options = parts_->options;
  if (options.alert_sinks.empty()) return;
  std::atomic<std::int64_t>& last =
      kind == AlertEvent::Kind::kFallback ? last_fallback_alert_ : last_failure_alert_;
  const TimePoint now = options.clock->now();
  const std::int64_t now_ns = now.time_since_epoch().count();
  std::int64_t seen = last.load(std::memory_order_relaxed);
  // INT64_MIN: none sent yet (so an interval of Duration::max() still lets
  // the first one through).
  if (seen != INT64_MIN &&
      add_saturating(Duration(seen), options.alert_interval) > Duration(now_ns))
    return;
  // One thread per interval wins the swap and sends.
  if (!last.compare_exchange_strong(seen, now_ns, std::memory_order_relaxed)) return;
  std::string pattern = "other";
  for (const auto& p : options.key_patterns) {
    if (key.starts_with(p)) {
      pattern = p;
      break;
    }
  }
  const AlertEvent event{.kind = kind,
                         .cache = options.metrics_name,
                         .pattern = std::move(pattern),
                         .message = message,
                         .from = BreakerState::kClosed,
                         .to = BreakerState::kClosed,
                         .at = now};
  for (const auto& sink : options.alert_sinks) sink->send(event);
}

Result<std::string> Protector::finish(Result<std::string> result, std::string_view key,
                                      internal::RequestTrace& trace) {
  internal::ProtectorCounters& c = parts_->counters;
  if (!result) {
    if (result.error().kind == ErrorKind::kNotFound) {
      c.not_found.add();
      trace.outcome = internal::Outcome::kNotFound;
    } else {
      c.errors.add();
      trace.outcome = internal::Outcome::kError;
      alert(AlertEvent::Kind::kFailure, key, result.error().to_string());
    }
  }
  if (parts_->prometheus) parts_->prometheus->record_request(key, trace);
  return result;
}

SingleFlight::Loader Protector::loader_for(std::string_view key, internal::LoadPriority priority,
                                           bool l2_just_read, TimePoint fresh_at_least_until,
                                           std::shared_ptr<internal::BatchMember> batch,
                                           const GetOptions* call) {
  // The key is copied: the load may outlive the caller that started it.
  return [parts = parts_.get(), k = std::string(key),
          request = internal::LoadRequest{.priority = priority,
                                          .l2_just_read = l2_just_read,
                                          .fresh_at_least_until = fresh_at_least_until,
                                          .skip_l1 = call && call->skip_l1,
                                          .entry = call ? call->entry : EntryOptions{}},
          batch = std::move(batch)](Deadline load_deadline) {
    // The batch's member is in scope for this load only (load_batch.h).
    const internal::BatchScope scope(batch.get());
    Result<CacheEntry> entry = parts->coordinator.load(k, load_deadline, request);
    if (!entry) return Result<std::string>(std::unexpected(std::move(entry.error())));
    return answer_of(std::move(*entry), k);
  };
}

Result<std::string> Protector::fall_back(std::string_view key, Error error,
                                         std::optional<CacheEntry> seen,
                                         internal::RequestTrace* trace, const GetOptions* call) {
  Parts& p = *parts_;
  if (error.kind == ErrorKind::kOverloaded) p.counters.load_shed.add();
  const TimePoint now = p.options.clock->now();
  // L1 may hold something newer than what the caller saw (a load finished
  // meanwhile, or the loader kept a stale copy); L2 is not asked again:
  // the caller already did, and the fallback must not wait on Redis.
  if (!call || !call->skip_l1) keep_newer(seen, p.cache.l1_get(key, now));
  if (seen && !seen->negative && seen->is_usable(now)) {
    if (seen->is_fresh(now)) return std::move(seen->value);  // filled meanwhile
    if (now < add_saturating(seen->fresh_until, fail_safe_window(call))) {
      p.counters.stale_returns.add();
      p.counters.fallbacks.add();
      p.counters.fallbacks_stale.add();
      trace->outcome = internal::Outcome::kStale;
      alert(AlertEvent::Kind::kFallback, key, "served a stale value: " + error.to_string());
      return std::move(seen->value);
    }
  }
  if (p.options.default_value) {
    std::optional<std::string> fallback;
    try {
      fallback = p.options.default_value(key);
    } catch (...) {
      // A throwing provider is "no default": the original error is more useful.
    }
    if (fallback) {
      p.counters.fallbacks.add();
      trace->outcome = internal::Outcome::kFallback;
      alert(AlertEvent::Kind::kFallback, key, "served the default value: " + error.to_string());
      return std::move(*fallback);
    }
  }
  return std::unexpected(std::move(error));
}

Duration Protector::fail_safe_window(const GetOptions* call) const {
  return call && call->fail_safe_max_staleness ? *call->fail_safe_max_staleness
                                               : parts_->options.fail_safe_max_staleness;
}

bool Protector::holds_fallback(const std::optional<CacheEntry>& entry, TimePoint now,
                               const GetOptions* call) const {
  return entry && !entry->negative && entry->is_usable(now) &&
         now < add_saturating(entry->fresh_until, fail_safe_window(call));
}

std::optional<Result<std::string>> Protector::load_within_soft_timeout(std::string_view key,
                                                                       Deadline deadline,
                                                                       bool l2_just_read,
                                                                       const GetOptions* call) {
  // Shared with the callback, which may run after this caller has gone.
  struct Outcome {
    std::mutex mutex;
    std::condition_variable done;
    std::optional<Result<std::string>> result;  // guarded by mutex
  };
  auto outcome = std::make_shared<Outcome>();
  auto joined =
      parts_->flights->call_async(key,
                                  loader_for(key, internal::LoadPriority::kForeground, l2_just_read,
                                             TimePoint::min(), nullptr, call),
                                  [outcome](const Result<std::string>& r) {
                                    {
                                      std::lock_guard lock(outcome->mutex);
                                      outcome->result = r;
                                    }
                                    outcome->done.notify_all();
                                  });
  if (!joined) return Result<std::string>(std::unexpected(std::move(joined.error())));
  const Deadline soft =
      Deadline::earliest(deadline, Deadline::after(parts_->options.soft_load_timeout));
  std::unique_lock lock(outcome->mutex);
  if (outcome->done.wait_until(lock, soft.when(), [&] { return outcome->result.has_value(); })) {
    return std::move(outcome->result);
  }
  return std::nullopt;
}

bool Protector::within_revalidate_window(const std::optional<CacheEntry>& entry,
                                         TimePoint now) const {
  return entry && !entry->negative &&
         now < add_saturating(entry->fresh_until, parts_->options.stale_while_revalidate);
}

Result<std::string> Protector::serve_stale_and_refresh(std::string_view key, CacheEntry stale,
                                                       TimePoint now,
                                                       internal::RequestTrace& trace) {
  Parts& p = *parts_;
  // Still fresh by its TTL (only its L1 recheck time passed): a hit whose
  // recheck runs in the background.
  if (stale.is_fresh(now)) {
    p.counters.l1_hits.add();
  } else {
    p.counters.stale_returns.add();
    trace.outcome = internal::Outcome::kStale;
  }
  if (start_background_refresh(key, TimePoint::min())) p.counters.background_refreshes.add();
  return std::move(stale.value);
}

bool Protector::start_background_refresh(std::string_view key, TimePoint fresh_at_least_until,
                                         bool hot) {
  Parts& p = *parts_;
  // The common case under a hot key: its refresh already runs. Known
  // before anything is allocated for another one.
  if (p.flights->in_flight(key)) return false;
  // A refresh that finished between the caller's L1 read and the check
  // above (it stores its entry before its flight ends) left a newer entry:
  // nothing is due. Its loader would skip the database anyway, but the
  // refresh would be counted and queued for nothing.
  if (fresh_at_least_until != TimePoint::min()) {
    const std::optional<CacheEntry> present = p.cache.l1_get(key, p.options.clock->now());
    if (present && present->fresh_until > fresh_at_least_until) return false;
  }
  // A unit of refreshes_running_, given back when the last copy of the
  // refresh's loader is destroyed (it ran, or was never started).
  const std::size_t running = refreshes_running_->fetch_add(1, std::memory_order_relaxed);
  std::shared_ptr<void> unit(refreshes_running_.get(), [count = refreshes_running_](void*) {
    count->fetch_sub(1, std::memory_order_relaxed);
  });
  if (running >= p.options.max_background_refreshes && !hot) {
    p.counters.background_refreshes_dropped.add();
    return false;
  }
  auto started = p.flights->start_if_idle(
      key, [unit, load = loader_for(key, internal::LoadPriority::kBackground, false,
                                    fresh_at_least_until)](Deadline d) { return load(d); });
  if (!started) {
    p.counters.background_refreshes_dropped.add();
    return false;
  }
  return *started;
}

void Protector::consider_early_refresh(std::string_view key,
                                       const MemoryCache::RefreshTiming& timing) {
  Parts& p = *parts_;
  const EarlyRefreshOptions& policy = p.options.early_refresh;
  const TimePoint now = p.options.clock->now();
  bool due = false;
  if (policy.mode == EarlyRefreshMode::kXFetch) {
    // 1 - [0, 1) is XFetch's (0, 1].
    due = xfetch_due(now, timing.fresh_until, timing.load_duration, policy.beta,
                     1.0 - internal::uniform_real(0.0, 1.0));
  } else if (policy.mode == EarlyRefreshMode::kEager) {
    // The coarse clock may have run ahead of the threshold: the precise one decides.
    due = now >= refresh_window_start(policy, timing.fresh_until, timing.load_duration,
                                      p.options.ttl, /*negative=*/false);
  }
  // A hot key refreshes on any read in its pinned lead (hot_refresh_lead,
  // longer for slow loads: MemoryCache::pinned_lead; its L1 copy is pinned
  // with it, which is how this read got here).
  // No shard lookup while nothing is hot (most refresh-window reads).
  const bool hot = p.hot_keys && p.hot_keys->hot_count() > 0 && p.cache.l1().is_pinned(key);
  if (!due && hot &&
      now >= add_saturating(timing.fresh_until,
                            -MemoryCache::pinned_lead(p.hot_refresh_lead, timing.load_duration))) {
    due = true;
  }
  // Only an entry newer than this one (fresh past its fresh_until) saves
  // the refresh its database load.
  if (due && start_background_refresh(key, timing.fresh_until, hot))
    p.counters.early_refreshes.add();
}

void Protector::sample_hot_key(std::string_view key) {
  Parts& p = *parts_;
  // Weighed by the mask this read was sampled with.
  const std::uint64_t interval = p.hot_sample_mask.load(std::memory_order_relaxed) + 1;
  std::optional<HotKeyChanges> changes =
      p.hot_keys->try_record(key, p.options.clock->coarse_now(), interval);
  if (!changes) return;
  follow_sample_interval();
  if (!changes->empty()) apply_hot_key_changes(*changes);
  if (changes->evaluated) warm_hot_keys();
}

void Protector::warm_hot_keys() {
  Parts& p = *parts_;
  const TimePoint now = p.options.clock->now();
  const Duration until_next_evaluation =
      p.options.hot_keys.window / static_cast<Duration::rep>(kHotKeyBucketsPerWindow);
  for (const HotKey& hot : p.hot_keys->hot_keys()) {
    std::optional<CacheEntry> entry = p.cache.l1_get(hot.key, now);
    if (!entry || entry->negative || !entry->is_fresh(now)) continue;  // a read loads it
    // The safety net under the read-triggered refresh (from fresh_until −
    // hot_refresh_lead on): due only when the entry would expire before
    // the next evaluation, with two loads' time to spare. A key read all
    // the time is refreshed by a read first, at its refresh window's start.
    const Duration margin =
        add_saturating(until_next_evaluation, scale_saturating(entry->load_duration, 2.0));
    if (now < add_saturating(entry->fresh_until, -margin)) continue;
    if (start_background_refresh(hot.key, entry->fresh_until, /*hot=*/true))
      p.counters.early_refreshes.add();
  }
}

void Protector::follow_sample_interval() {
  Parts& p = *parts_;
  // A bucket may have ended (in this record or in any other call that
  // rolled the detector): the interval may have changed.
  const std::uint64_t mask = p.hot_keys->sample_interval() - 1;
  if (p.hot_sample_mask.load(std::memory_order_relaxed) != mask)
    p.hot_sample_mask.store(mask, std::memory_order_relaxed);
}

void Protector::apply_hot_key_changes(const HotKeyChanges& changes) {
  Parts& p = *parts_;
  {
    // Two evaluations' changes may be applied by two threads in either
    // order (an older "turned hot" after a newer "cooled"): pins follow the
    // detector's present hot set instead, one thread at a time, so a key
    // is never left pinned after it cooled.
    std::lock_guard lock(p.pin_mutex);
    for (const HotKey& hot : changes.turned_hot) {
      if (p.hot_keys->is_hot(hot.key)) p.cache.l1().pin(hot.key, p.hot_refresh_lead);
    }
    for (const std::string& key : changes.cooled) {
      if (!p.hot_keys->is_hot(key)) p.cache.l1().unpin(key);
    }
  }
  for (const HotKey& hot : changes.turned_hot) {
    p.counters.hot_keys_detected.add();
    if (p.options.alert_sinks.empty()) continue;
    const AlertEvent event{
        .kind = AlertEvent::Kind::kHotKey,
        .cache = p.options.metrics_name,
        .pattern = {},
        .message = fmt::format("{} at {:.0f} reads/s in this process (window before: {:.0f}/s)",
                               hot.viral ? "viral" : "hot", hot.rate, hot.previous_rate),
        .key = hot.key,
        .from = BreakerState::kClosed,
        .to = BreakerState::kClosed,
        .at = hot.detected_at};
    for (const auto& sink : p.options.alert_sinks) sink->send(event);
  }
}

std::vector<HotKey> Protector::hot_keys() {
  Parts& p = *parts_;
  if (!p.hot_keys) return {};
  HotKeyChanges changes = p.hot_keys->advance(p.options.clock->now());
  follow_sample_interval();
  if (!changes.empty()) apply_hot_key_changes(changes);
  if (changes.evaluated) warm_hot_keys();
  return p.hot_keys->hot_keys();
}

// The L1 hit path, kept small (everything else is in read_past_l1): a key
// check, one coarse clock read, one shard lookup, the value copy into the
// result itself, one counter. Inlined into get() and its siblings: a call
// level is a measurable share of a ~60 ns hit.
[[gnu::always_inline]] inline Result<std::string> Protector::read(std::string_view key,
                                                                  std::optional<Deadline> given,
                                                                  bool serve_stale) {
  Parts& p = *parts_;
  MemoryCache::Freshness peeked = MemoryCache::Freshness::kAbsent;
  Result<std::string> result{std::in_place};
  bool negative = false;
  if (!key.empty() && key.size() <= p.options.max_key_bytes) [[likely]] {
    peeked = p.cache.l1_peek(key, *result, negative);
    if (peeked == MemoryCache::Freshness::kFresh) {
      if ((p.counters.l1_fast_hits.add() & p.hot_sample_mask.load(std::memory_order_relaxed)) == 0)
          [[unlikely]]
        sample_hot_key(key);
      if (!p.prometheus && !negative) [[likely]]
        return result;
    }
  }
  return read_past_l1(key, given, serve_stale, peeked, std::move(*result), negative);
}

// Without an explicit deadline, request_timeout's is computed only when the
// read goes past L1: an L1 hit reads the clock once.
Result<std::string> Protector::get(std::string_view key) {
  return read(key, std::nullopt, /*serve_stale=*/false);
}

Result<std::string> Protector::get(std::string_view key, Deadline deadline) {
  return read(key, deadline, /*serve_stale=*/false);
}

Result<std::string> Protector::get_stale_while_revalidate(std::string_view key) {
  return read(key, std::nullopt, /*serve_stale=*/true);
}

Result<std::string> Protector::get_stale_while_revalidate(std::string_view key, Deadline deadline) {
  return read(key, deadline, /*serve_stale=*/true);
}

Result<std::string> Protector::get_for(std::string_view client, std::string_view key,
                                       Deadline deadline, bool* rate_limited) {
  Parts& p = *parts_;
  if (rate_limited) *rate_limited = false;
  if (!p.options.rate_limiter) return get(key, deadline);
  // A bad key spends none of the client's allowance.
  if (auto valid = check_key(key); !valid) return std::unexpected(valid.error());
  Result<RateVerdict> verdict = p.options.rate_limiter->admit(client, deadline);
  if (!verdict) return std::unexpected(std::move(verdict.error()));
  if (verdict->allowed) return get(key, deadline);
  if (rate_limited) *rate_limited = true;
  p.counters.rate_limited.add();
  // Over the limit: what this process already holds, and nothing more.
  const TimePoint now = p.options.clock->now();
  std::optional<CacheEntry> held = p.cache.l1_get(key, now);
  if (held && !held->negative &&
      (held->is_fresh(now) ||
       now < add_saturating(held->fresh_until, p.options.fail_safe_max_staleness))) {
    p.counters.rate_limited_stale.add();
    return std::move(held->value);
  }
  Error error{ErrorKind::kRateLimited,
              fmt::format("client '{}' is over its rate limit ({}/s)", client,
                          p.options.rate_limiter->options().rate),
              verdict->retry_after};
  return std::unexpected(std::move(error));
}

std::optional<Result<std::string>> Protector::answer_from_l2(
    std::string_view key, Result<std::optional<Envelope>> shared, MemoryCache::Ticket ticket,
    TimePoint now, std::optional<CacheEntry>& stale, internal::RequestTrace& trace) {
  Parts& p = *parts_;
  if (!shared) {
    // Redis is unreachable and L1's copy is past its recheck time but
    // still fresh: degrade to it rather than load (docs/consistency.md).
    if (!stale || !stale->is_fresh(now)) return std::nullopt;
    p.counters.l1_hits.add();
    return finish(answer_of(std::move(*stale), key), key, trace);
  }
  if (!*shared) return std::nullopt;
  CacheEntry& entry = (*shared)->entry;
  trace.layer = internal::Layer::kL2;
  const bool fresh = entry.is_fresh(now);
  // Monotonic reads: a load of this key in this process that began
  // before this read may still be running and return an older value
  // (another process wrote this one meanwhile, and its writes fenced
  // that load off, which only goes round once). Detached here, before
  // the answer reaches anyone (also through L1), so a get that starts
  // after this one returned never joins that load.
  if (fresh) p.flights->forget(key);
  p.cache.fill_l1(key, entry, ticket, now);
  if (!fresh) {
    keep_newer(stale, std::move(entry));
    return std::nullopt;
  }
  p.counters.l2_answers.add();
  // An L2 answer near its expiry may refresh early too (an L1 copy
  // rechecked against L2 every l1_max_ttl meets its window here).
  if (now >= refresh_window_start(p.options.early_refresh, entry.fresh_until, entry.load_duration,
                                  p.options.ttl, entry.negative)) {
    consider_early_refresh(
        key, {.fresh_until = entry.fresh_until, .load_duration = entry.load_duration});
  }
  return finish(answer_of(std::move(entry), key), key, trace);
}

Result<std::string> Protector::read_past_l1(std::string_view key, std::optional<Deadline> given,
                                            bool serve_stale, MemoryCache::Freshness peeked,
                                            std::string&& value, bool negative,
                                            const GetOptions* call) {
  Parts& p = *parts_;
  internal::RequestTrace trace;
  if (key.empty() || key.size() > p.options.max_key_bytes) [[unlikely]] {
    p.counters.requests_past_l1.add();
    return finish(std::unexpected(check_key(key).error()), key, trace);
  }
  if (key.front() == '}') [[unlikely]] {
    if (auto valid = check_key(key); !valid) {
      p.counters.requests_past_l1.add();
      return finish(std::unexpected(valid.error()), key, trace);
    }
  }
  internal::TieredCache::L1Read l1 = p.cache.l1_settle(key, peeked, std::move(value), negative);
  if (l1.fresh) {
    // Counted (and sampled) in l1_fast_hits already when the peek found it fresh.
    if (peeked != MemoryCache::Freshness::kFresh &&
        (p.counters.l1_fast_hits.add() & p.hot_sample_mask.load(std::memory_order_relaxed)) == 0) {
      sample_hot_key(key);
    }
    if (l1.refresh_due) consider_early_refresh(key, l1.timing);
    trace.layer = internal::Layer::kL1;
    return finish(fresh_answer(std::move(l1), key), key, trace);
  }
  if ((p.counters.requests_past_l1.add() & p.hot_sample_mask.load(std::memory_order_relaxed)) == 0)
    sample_hot_key(key);
  std::optional<CacheEntry>& stale = l1.entry;
  if (stale) trace.layer = internal::Layer::kL1;
  const TimePoint now = p.options.clock->now();
  // A stale L1 copy under stale-while-revalidate is answered at once, with
  // no I/O on this thread: whether another process refreshed the key is the
  // background refresh's business (it reads L2 before the database).
  if (serve_stale && within_revalidate_window(stale, now))
    return finish(serve_stale_and_refresh(key, std::move(*stale), now, trace), key, trace);
  const Deadline deadline = given ? *given : Deadline::after(p.options.request_timeout);
  // L2: another process may have loaded it already. The ticket comes first,
  // so a set/invalidate of this process racing with the read wins.
  if (p.cache.has_l2() && (!call || !call->skip_l2)) {
    const MemoryCache::Ticket ticket = p.cache.ticket(key);
    if (auto answered =
            answer_from_l2(key, p.cache.l2_get(key, now, deadline), ticket, now, stale, trace))
      return std::move(*answered);
  }
  if (serve_stale && within_revalidate_window(stale, now))
    return finish(serve_stale_and_refresh(key, std::move(*stale), now, trace), key, trace);

  p.counters.cache_misses.add();
  if (p.hot_keys) p.hot_keys->record_load_wait(key);
  trace.layer = internal::Layer::kLoad;
  Result<std::string> result = make_error(ErrorKind::kInternal, "not loaded");
  // L2 was read just above (when there is one): the load need not look again.
  const bool l2_just_read = p.cache.has_l2();
  if (holds_fallback(stale, now, call) && p.options.soft_load_timeout < deadline.remaining()) {
    std::optional<Result<std::string>> loaded =
        load_within_soft_timeout(key, deadline, l2_just_read, call);
    if (!loaded) {
      p.counters.soft_timeouts.add();
      p.counters.stale_returns.add();
      trace.outcome = internal::Outcome::kStale;
      return finish(std::move(stale->value), key, trace);
    }
    result = std::move(*loaded);
  } else if (!p.prometheus) {
    result = p.flights->call(key, deadline,
                             loader_for(key, internal::LoadPriority::kForeground, l2_just_read,
                                        TimePoint::min(), nullptr, call));
  } else {
    const auto start = std::chrono::steady_clock::now();
    result = p.flights->call(key, deadline,
                             loader_for(key, internal::LoadPriority::kForeground, l2_just_read,
                                        TimePoint::min(), nullptr, call));
    p.prometheus->single_flight_wait().observe(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  if (result || is_definitive(result.error())) return finish(std::move(result), key, trace);
  return finish(fall_back(key, std::move(result.error()), std::move(stale), &trace, call), key,
                trace);
}

Result<std::string> Protector::get(std::string_view key, const GetOptions& options) {
  const auto negative = [](const std::optional<Duration>& d) { return d && *d < Duration::zero(); };
  if (negative(options.fail_safe_max_staleness) || negative(options.entry.ttl) ||
      negative(options.entry.stale_for)) {
    return make_error(ErrorKind::kInvalidArgument,
                      "get: fail_safe_max_staleness, entry.ttl and entry.stale_for must be >= 0");
  }
  if (auto valid = internal::validate_tags(options.entry.tags); !valid)
    return make_error(ErrorKind::kInvalidArgument, "get: entry." + valid.error().message);
  const bool plain = !options.skip_l1 && !options.skip_l2 && !options.fail_safe_max_staleness &&
                     !options.entry.ttl && !options.entry.stale_for && options.entry.tags.empty();
  if (plain) return read(key, options.deadline, options.stale_while_revalidate);
  Parts& p = *parts_;
  MemoryCache::Freshness peeked = MemoryCache::Freshness::kAbsent;
  std::string value;
  bool is_negative = false;
  if (!options.skip_l1 && !key.empty() && key.size() <= p.options.max_key_bytes)
    peeked = p.cache.l1_peek(key, value, is_negative);
  if (peeked == MemoryCache::Freshness::kFresh) p.counters.l1_fast_hits.add();
  return read_past_l1(key, options.deadline, options.stale_while_revalidate, peeked,
                      std::move(value), is_negative, &options);
}

bool Protector::read_many_from_l2(std::span<const std::string> keys,
                                  std::vector<internal::GetManyMiss>& misses,
                                  std::vector<Result<std::string>>& answers, Deadline deadline) {
  Parts& p = *parts_;
  if (!p.cache.has_l2() || misses.empty()) return false;
  // One MGET per kMgetKeys, so that one call never builds an unbounded
  // command (or reply) for Redis.
  constexpr std::size_t kMgetKeys = 1000;
  bool all_read = true;
  std::vector<internal::GetManyMiss> still;
  for (std::size_t from = 0; from < misses.size(); from += kMgetKeys) {
    const std::size_t to = std::min(misses.size(), from + kMgetKeys);
    std::vector<std::string> wanted;
    std::vector<MemoryCache::Ticket> tickets;  // before the read, as get's
    for (std::size_t m = from; m < to; ++m) {
      wanted.push_back(keys[misses[m].at]);
      tickets.push_back(p.cache.ticket(keys[misses[m].at]));
    }
    const TimePoint now = p.options.clock->now();
    auto shared = p.cache.l2_get_many(wanted, now, deadline);
    for (std::size_t m = from; m < to; ++m) {
      internal::GetManyMiss& miss = misses[m];
      const std::string& key = wanted[m - from];
      Result<std::optional<Envelope>> one =
          shared ? Result<std::optional<Envelope>>(std::move((*shared)[m - from]))
                 : Result<std::optional<Envelope>>(std::unexpected(shared.error()));
      if (auto answered =
              answer_from_l2(key, std::move(one), tickets[m - from], now, miss.stale, miss.trace)) {
        answers[miss.at] = std::move(*answered);
      } else {
        still.push_back(std::move(miss));
      }
    }
    if (!shared) all_read = false;
  }
  misses = std::move(still);
  return all_read;
}

std::vector<Result<std::string>> Protector::get_many(std::span<const std::string> keys,
                                                     Deadline deadline) {
  Parts& p = *parts_;
  std::vector<Result<std::string>> answers(
      keys.size(), Result<std::string>(make_error(ErrorKind::kInternal, "not answered")));
  // Each distinct key once; `first[i]` is the position that answers keys[i].
  std::unordered_map<std::string_view, std::size_t> first_of;
  std::vector<std::size_t> first(keys.size());
  // What each missing key's flight answered, shared with the callbacks
  // (which may run after this call returned, at their load's end).
  struct Pending {
    std::mutex mutex;
    std::condition_variable done;
    std::size_t outstanding = 0;                                  // guarded by mutex
    std::unordered_map<std::size_t, Result<std::string>> loaded;  // guarded by mutex
  };
  auto pending = std::make_shared<Pending>();
  using Miss = internal::GetManyMiss;
  std::vector<Miss> misses;
  for (std::size_t i = 0; i < keys.size(); ++i) {
    auto [it, inserted] = first_of.try_emplace(keys[i], i);
    first[i] = it->second;
    if (!inserted) continue;
    const std::string& key = keys[i];
    p.counters.requests_past_l1.add();
    internal::RequestTrace trace;
    if (auto valid = check_key(key); !valid) {
      answers[i] = finish(std::unexpected(valid.error()), key, trace);
      continue;
    }
    internal::TieredCache::L1Read l1 = p.cache.l1_read(key);
    if (l1.fresh) {
      p.counters.l1_hits.add();
      trace.layer = internal::Layer::kL1;
      if (l1.refresh_due) consider_early_refresh(key, l1.timing);
      answers[i] = finish(fresh_answer(std::move(l1), key), key, trace);
      continue;
    }
    misses.push_back({.at = i, .stale = std::move(l1.entry), .trace = trace});
  }
  // L2: the misses' fresh values in one MGET; the flights of the rest then
  // skip their own L2 read.
  const bool l2_read = read_many_from_l2(keys, misses, answers, deadline);
  p.counters.cache_misses.add(misses.size());
  for (internal::GetManyMiss& miss : misses) miss.trace.layer = internal::Layer::kLoad;
  // The misses: one flight each, their database loads in one batch — at
  // most kFlightsPerBatch flights at a time, so a large call does not fill
  // the load queue (and get refused) by itself.
  constexpr std::size_t kFlightsPerBatch = 256;
  for (std::size_t from = 0; from < misses.size(); from += kFlightsPerBatch) {
    const std::size_t to = std::min(misses.size(), from + kFlightsPerBatch);
    // A repository without a batch form: no batch, the loads run in parallel.
    auto batch = p.loader.loads_in_batches() ? std::make_shared<internal::LoadBatch>() : nullptr;
    {
      std::lock_guard lock(pending->mutex);
      pending->outstanding = to - from;
    }
    for (std::size_t m = from; m < to; ++m) {
      const std::string& key = keys[misses[m].at];
      auto callback = [pending, at = misses[m].at](const Result<std::string>& result) {
        {
          std::lock_guard lock(pending->mutex);
          pending->loaded.insert_or_assign(at, result);
          --pending->outstanding;
        }
        pending->done.notify_all();
      };
      auto started = p.flights->call_async(
          key,
          loader_for(key, internal::LoadPriority::kForeground, l2_read, TimePoint::min(),
                     batch ? std::make_shared<internal::BatchMember>(batch) : nullptr),
          callback);
      if (!started) callback(std::unexpected(std::move(started.error())));  // refused: not called
    }
    // Every member exists now (a loader that joined another flight was
    // dropped, and its member left with it).
    if (batch) batch->seal(to - from);
    std::unique_lock lock(pending->mutex);
    if (!pending->done.wait_until(lock, deadline.when(), [&] { return pending->outstanding == 0; }))
      break;  // the deadline passed: the keys not answered fall back below
  }
  std::unique_lock lock(pending->mutex);
  std::unordered_map<std::size_t, Result<std::string>> loaded = std::move(pending->loaded);
  lock.unlock();
  for (Miss& miss : misses) {
    const std::string& key = keys[miss.at];
    auto it = loaded.find(miss.at);

    Result<std::string> result =
        it != loaded.end()
            ? std::move(it->second)
            : Result<std::string>(
                  make_error(ErrorKind::kTimeout,
                             fmt::format("get_many: key '{}' not loaded by the deadline", key)));
    if (result || is_definitive(result.error())) {
      answers[miss.at] = finish(std::move(result), key, miss.trace);
    } else {
      answers[miss.at] =
          finish(fall_back(key, std::move(result.error()), std::move(miss.stale), &miss.trace), key,
                 miss.trace);
    }
  }
  for (std::size_t i = 0; i < keys.size(); ++i) {
    if (first[i] != i) answers[i] = answers[first[i]];
  }
  return answers;
}

void Protector::get_async(std::string_view key, Callback callback) {
  Parts& p = *parts_;
  p.counters.requests_past_l1.add();
  internal::RequestTrace trace;
  if (auto valid = check_key(key); !valid) {
    return callback(finish(std::unexpected(valid.error()), key, trace));
  }
  // L1 only: an L2 read would block this thread; the load reads L2 instead.
  internal::TieredCache::L1Read l1 = p.cache.l1_read(key);
  if (l1.fresh) {
    trace.layer = internal::Layer::kL1;
    p.counters.l1_hits.add();
    if (l1.refresh_due) consider_early_refresh(key, l1.timing);
    return callback(finish(fresh_answer(std::move(l1), key), key, trace));
  }
  std::optional<CacheEntry>& stale = l1.entry;
  p.counters.cache_misses.add();
  trace.layer = internal::Layer::kLoad;
  // Shared so that the callback survives a refused join, which drops the lambda.
  auto shared_callback = std::make_shared<Callback>(std::move(callback));
  auto joined = p.flights->call_async(
      key, loader_for(key),
      [this, k = std::string(key), shared_callback, stale,
       trace](const Result<std::string>& result) mutable {
        if (result || is_definitive(result.error()))
          return (*shared_callback)(finish(result, k, trace));
        (*shared_callback)(finish(fall_back(k, result.error(), stale, &trace), k, trace));
      });
  if (!joined) {
    (*shared_callback)(
        finish(fall_back(key, std::move(joined.error()), std::move(stale), &trace), key, trace));
  }
}

Result<void> Protector::set(std::string_view key, std::string_view value,
                            std::optional<Duration> ttl) {
  return set(key, value, EntryOptions{.ttl = ttl});
}

Result<void> Protector::set(std::string_view key, std::string_view value,
                            const EntryOptions& options) {
  Parts& p = *parts_;
  if (auto valid = check_key(key); !valid) return valid;
  if (value.size() > p.options.max_value_bytes) {
    return make_error(ErrorKind::kInvalidArgument,
                      fmt::format("value is {} bytes, over max_value_bytes ({})", value.size(),
                                  p.options.max_value_bytes));
  }
  const Duration effective_ttl = options.ttl.value_or(p.options.ttl);
  if (effective_ttl <= Duration::zero())
    return make_error(ErrorKind::kInvalidArgument, "ttl must be > 0");
  if (options.stale_for && *options.stale_for < Duration::zero())
    return make_error(ErrorKind::kInvalidArgument, "stale_for must be >= 0");
  if (auto valid = internal::validate_tags(options.tags); !valid) return valid;
  // Stamped before anything else: an invalidate_tag that returns after this
  // point refuses the value (it may have been read before that change).
  const std::uint64_t stamp = p.cache.tag_stamp(Deadline::after(p.options.request_timeout));
  CacheEntry entry =
      internal::make_entry(p.loader.policy(), std::string(value), effective_ttl,
                           p.options.clock->now(), Duration::zero(), options.stale_for);
  entry.tags = options.tags;
  entry.tag_stamp = stamp;
  auto stored = p.cache.set(key, std::move(entry));
  p.flights->forget(key);
  if (stored) announce_to_fleet(key);
  return stored;
}

Result<void> Protector::invalidate(std::string_view key) {
  Parts& p = *parts_;
  if (auto valid = check_key(key); !valid) return valid;
  auto erased = p.cache.invalidate(key);
  p.flights->forget(key);
  if (erased) announce_to_fleet(key);
  return erased;
}

Result<void> Protector::invalidate_tag(std::string_view tag) {
  if (auto valid = internal::validate_tag(tag); !valid) return valid;
  return invalidate_tag_version(tag);
}

Result<void> Protector::clear() { return invalidate_tag_version({}); }

Result<void> Protector::invalidate_tag_version(std::string_view tag) {
  Parts& p = *parts_;
  auto version = p.cache.invalidate_tag(tag, Deadline::after(p.options.request_timeout));
  if (!version) return std::unexpected(version.error());
  // Known here already (L1 refuses what it hits); loads that began before
  // are detached, whatever their key: their tags are not known until they
  // return.
  p.flights->forget_all();
  (tag.empty() ? p.counters.clears : p.counters.tag_invalidations).add();
  if (p.backplane) {
    if (p.options.notifier->publish_tag_invalidation(p.backplane_origin, tag, *version)) {
      p.counters.backplane_published.add();
    } else {
      p.counters.backplane_publish_failures.add();  // others sync within l1_max_ttl / 2
    }
  }
  return ok();
}

void Protector::announce_to_fleet(std::string_view key) {
  Parts& p = *parts_;
  if (!p.backplane) return;
  // A failed announcement fails nothing: L2 has the change, and the other
  // processes' L1 copies are rechecked within l1_max_ttl regardless.
  if (p.options.notifier->publish_invalidation(p.backplane_origin, key)) {
    p.counters.backplane_published.add();
  } else {
    p.counters.backplane_publish_failures.add();
  }
}

std::optional<CacheEntry> Protector::peek(std::string_view key) {
  auto got = parts_->cache.l1().get(key);
  if (!got) return std::nullopt;
  return std::move(*got);
}

ProtectionMetrics Protector::metrics() const {
  const Parts& p = *parts_;
  const SingleFlightStats flight = p.flights->stats();
  const MemoryCacheStats l1 = p.cache.l1().stats();
  const ConcurrencyLimiterStats limit = p.loader.limiter().stats();
  const internal::ProtectorCounters& c = p.counters;
  const RedisCacheStats l2 = p.cache.l2() ? p.cache.l2()->stats() : RedisCacheStats{};
  // Read while requests run, these are values the counters had during the
  // call (exact once they are quiet). The L1 hits are read before the total's
  // part, which every request bumps before it can count an L1 hit later on
  // its path: total_requests is never below l1_hits.
  const std::uint64_t l1_fast = c.l1_fast_hits.value();
  const std::uint64_t l1_hits = l1_fast + c.l1_hits.value();
  return ProtectionMetrics{
      .total_requests = c.requests_past_l1.value() + l1_fast,
      .cache_hits = l1_hits + c.l2_answers.value(),
      .l1_hits = l1_hits,
      .cache_misses = c.cache_misses.value(),
      .single_flight_hits = flight.shared,
      .single_flight_leads = flight.loads_started,
      .circuit_breaker_trips = p.breaker->trips(),
      .stale_returns = c.stale_returns.value(),
      .background_refreshes = c.background_refreshes.value(),
      .background_refreshes_dropped = c.background_refreshes_dropped.value(),
      .early_refreshes = c.early_refreshes.value(),
      .soft_timeouts = c.soft_timeouts.value(),
      .hot_keys = p.hot_keys ? p.hot_keys->hot_count() : 0,
      .hot_keys_detected = c.hot_keys_detected.value(),
      .ttl_lengthened = c.ttl_lengthened.value(),
      .ttl_shortened = c.ttl_shortened.value(),
      .warmed_keys = c.warmed_keys.value(),
      .warm_up_failures = c.warm_up_failures.value(),
      .db_queries = c.db_queries.value(),
      .db_errors = c.db_errors.value(),
      .db_batches = c.db_batches.value(),
      .fallbacks = c.fallbacks.value(),
      .fallbacks_stale = c.fallbacks_stale.value(),
      .load_shed = c.load_shed.value(),
      .errors = c.errors.value(),
      .not_found = c.not_found.value(),
      .l2_hits = c.l2_hits.value(),
      .l2_misses = c.l2_misses.value(),
      .l2_corrupt = l2.corrupt,
      .l3_hits = c.l3_hits.value(),
      .l3_misses = c.l3_misses.value(),
      .l3_rejected = c.l3_rejected.value(),
      .l3_errors = c.l3_errors.value(),
      .l3_corrupt = p.options.l3 ? p.options.l3->stats().corrupt : 0,
      .redis_errors = c.redis_errors.value(),
      .fleet_lock_acquisitions = c.fleet_lock_acquisitions.value(),
      .fleet_lock_contentions = c.fleet_lock_contentions.value(),
      .fleet_waited_loads = c.fleet_waited_loads.value(),
      .fleet_degraded_loads = c.fleet_degraded_loads.value(),
      .fenced_off_writes = c.refused_writes.value(),
      .fleet_polls = c.fleet_polls.value(),
      .refused_l1_fills = c.refused_l1_fills.value(),
      .backplane_published = c.backplane_published.value(),
      .backplane_publish_failures = c.backplane_publish_failures.value(),
      .backplane_invalidations = c.backplane_invalidations.value(),
      .backplane_resyncs = c.backplane_resyncs.value(),
      .not_modified = c.not_modified.value(),
      .l2_extended = c.l2_extended.value(),
      .tag_invalidations = c.tag_invalidations.value(),
      .clears = c.clears.value(),
      .backplane_tag_invalidations = c.backplane_tag_invalidations.value(),
      .tag_rejections = c.tag_rejections.value() + l1.refused,
      .tag_syncs = c.tag_syncs.value(),
      .tag_sync_errors = c.tag_sync_errors.value(),
      .tags_known = p.tags->size(),
      .rate_limited = c.rate_limited.value(),
      .rate_limited_stale = c.rate_limited_stale.value(),
      .circuit_breaker_state = p.breaker->state(),
      .l1_entries = l1.entries,
      .l1_bytes = l1.bytes,
      .l1_evictions = l1.evictions,
      .loads_in_flight = p.flights->in_flight(),
      .db_limit = limit.limit,
      .db_in_flight = limit.in_flight,
      .db_waiting = limit.waiting,
      .db_shed = limit.shed,
      .inline_loads = flight.inline_loads,
      .handed_off_loads = flight.handed_off,
      .continued_loads = flight.continued,
      .load_threads = p.flights->load_threads(),
  };
}

}  // namespace herdguard
