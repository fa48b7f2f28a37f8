// herdguard/protector.h — the thundering-herd protector: a cache-aside read
// path that sends one load per key to the database, however many callers miss.
//
// `Protector::get(key)` goes through these layers:
//   L1 MemoryCache   fresh entry → return it (the hot path: one shard read lock)
//   L2 RedisCache    (optional) fresh entry → fill L1, return it
//   single-flight    callers of one key share one load (single_flight.h)
//   re-check L1      the load first looks again: a flight that just ended may
//                    have filled it
//   fleet lock       (optional, with L2) one process of the fleet loads; the
//                    others wait for its value (redis_lock.h, redis_notifier.h)
//   re-check L2      the lock holder looks again before loading
//   L3 memcached     (optional) a record Redis confirms → promoted to L2
//                    with the load's versioned write (memcached_cache.h)
//   circuit breaker  open → fail fast without calling the repository
//   repository       the database; the value is stored with a jittered TTL
//                    (fenced write to L2, ready notification, then L1);
//                    "no such key" is cached for `negative_ttl`
//   fallback chain   on failure: the stale value (up to fail_safe_max_staleness
//                    past its fresh TTL, from L1 or L2), then `default_value`,
//                    then the error
//
// When Redis fails (down, timing out, restarting), L2 reads count as misses
// and loads run without the fleet lock: callers are served from L1 and the
// repository through in-process single-flight, errors are counted, and the
// fleet path is used again as soon as Redis answers.
//
// Thread safety: every method is safe from any number of threads.
// Memory ordering: a value returned by get() was fully written by the load
// that produced it (see single_flight.h).
//
// Example:
//   auto repo = herdguard::SqliteRepository::open({.path = "products.db"});
//   auto protector = herdguard::Protector::create(
//       {.ttl = std::chrono::minutes(5), .negative_ttl = std::chrono::seconds(10)},
//       std::move(*repo));
//   if (!protector) die(protector.error().to_string());
//   herdguard::Result<std::string> product = (*protector)->get("sku-42");
//   if (!product && product.error().kind == herdguard::ErrorKind::kNotFound) ...
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "herdguard/adaptive_ttl.h"
#include "herdguard/alert_sink.h"
#include "herdguard/cache.h"
#include "herdguard/circuit_breaker.h"
#include "herdguard/clock.h"
#include "herdguard/concurrency_limiter.h"
#include "herdguard/early_refresh.h"
#include "herdguard/hot_keys.h"
#include "herdguard/memcached_cache.h"
#include "herdguard/memory_cache.h"
#include "herdguard/metrics.h"
#include "herdguard/prometheus.h"
#include "herdguard/rate_limiter.h"
#include "herdguard/redis_cache.h"
#include "herdguard/redis_lock.h"
#include "herdguard/redis_notifier.h"
#include "herdguard/repository.h"
#include "herdguard/result.h"
#include "herdguard/single_flight.h"
#include "herdguard/warm_up.h"

namespace herdguard {
namespace internal {
class BatchMember;  // load_batch.h
struct RequestTrace;
struct GetManyMiss;
enum class LoadPriority;  // repository_loader.h; its zero value is kForeground
}  // namespace internal

struct ProtectorOptions {
  // How long a loaded value is fresh, before jitter. REQUIRES: > 0.
  Duration ttl = std::chrono::seconds(60);
  // Each TTL is multiplied by a factor drawn uniformly from
  // [1 - ttl_jitter, 1 + ttl_jitter], so keys written together do not all
  // expire together. REQUIRES: 0 <= ttl_jitter < 1.
  double ttl_jitter = 0.2;
  // get_stale_while_revalidate() serves a value this long past its fresh TTL
  // while one background refresh runs. REQUIRES: >= 0.
  Duration stale_while_revalidate = std::chrono::seconds(30);
  // Background refreshes running at once in this protector; a refresh
  // beyond it is dropped (the caller has its stale answer; a later one
  // starts it). Bounds what refreshes take from the database and its
  // connection pool, so that callers' loads never queue behind hundreds of
  // them. REQUIRES: >= 1.
  std::size_t max_background_refreshes = 16;
  // Refreshing fresh entries before they expire, on reads near their end
  // (early_refresh.h): XFetch, eager, or none (the default). Counts against
  // max_background_refreshes.
  EarlyRefreshOptions early_refresh{};
  // Hot-key ("viral") detection (hot_keys.h), on by default: sampled reads
  // (a few thousand a second at most, adaptive) are counted into a
  // fixed-memory sketch. A key
  // that turns hot is pinned in L1 (not evicted), refreshed in the
  // background on a read after hot_keys.refresh_fraction of `ttl` (so it
  // never expires in front of a caller; counts against
  // max_background_refreshes), exported as thundering_herd_hot_keys, and
  // sent to the alert sinks; it is unpinned when it cools down.
  HotKeyOptions hot_keys{};
  // Adaptive TTL (adaptive_ttl.h), off by default: each load's TTL grows
  // while the key's value stays the same and shrinks when it changes,
  // within [adaptive_ttl.min, adaptive_ttl.max], starting from `ttl`.
  AdaptiveTtlOptions adaptive_ttl{};
  // Keys to load when the protector starts, at a bounded rate, on a thread
  // of its own (warm_up.h); none by default.
  WarmUpOptions warm_up{};
  // When loads fail, a value this long past its fresh TTL is still served
  // (fail-safe). Entries are kept until fresh TTL + max(this,
  // stale_while_revalidate). REQUIRES: >= 0.
  Duration fail_safe_max_staleness = std::chrono::hours(1);
  // The soft load timeout (FusionCache's factory soft timeout): a caller
  // that holds a stale value it may fall back on (within
  // fail_safe_max_staleness) waits at most this long for the load, then gets
  // that value; the load goes on in the background, bounded by the hard
  // timeout — single_flight.load_timeout — and fills the cache. Such a
  // caller never runs the load on its own thread (it would have to wait for
  // it). A caller without a stale value waits until its deadline, as
  // without a soft timeout. Duration::max() (the default): none.
  // REQUIRES: > 0.
  Duration soft_load_timeout = Duration::max();
  // How long "the repository has no such key" is remembered. REQUIRES: > 0.
  Duration negative_ttl = std::chrono::seconds(5);
  // The deadline of get(key) without an explicit deadline. REQUIRES: > 0.
  Duration request_timeout = std::chrono::seconds(2);
  // Keys are 1..max_key_bytes bytes, any bytes — except that with an l2 on
  // Redis Cluster a key may not start with '}' (it would empty the hash
  // tag that keeps its Redis keys in one slot): kInvalidArgument.
  // REQUIRES: >= 1.
  std::size_t max_key_bytes = 1024;
  // Values (set or loaded) are at most this many bytes. REQUIRES: >= 1,
  // and with an L2 <= kMaxEnvelopeValueBytes (Redis strings end at 512 MiB).
  std::size_t max_value_bytes = 1u << 20;
  // Last resort of the fallback chain, after the stale value. Called on a
  // failed load; std::nullopt means "no default", and the error is returned.
  // Exceptions it throws are caught and treated as "no default".
  std::function<std::optional<std::string>(std::string_view key)> default_value{};

  // The fleet: Redis as shared L2 cache, lock and notifier (see RedisFleet in
  // redis_fleet.h for building all three from one URL). All optional; the
  // fleet lock REQUIRES l2. Without a notifier, waiters poll.
  std::shared_ptr<RedisCache> l2{};
  std::shared_ptr<RedisLockManager> fleet_lock{};
  std::shared_ptr<RedisNotifier> notifier{};
  // The L3 tier (memcached_cache.h), read when L2 misses, just before the
  // database, and written with every loaded or set value. REQUIRES: l2 (Redis
  // tells which records may be promoted). Every process sharing the prefix
  // must configure it (their set/invalidate leave the tombstones it needs).
  std::shared_ptr<MemcachedCache> l3{};
  // While another process holds the fleet lock, a waiter tries the lock again
  // at least this often (to take over from a holder that died).
  // REQUIRES: > 0.
  Duration fleet_retry_interval = std::chrono::milliseconds(250);
  // Polling backoff of fleet waiters when pub/sub is unavailable.
  // REQUIRES: 0 < fleet_poll_min <= fleet_poll_max.
  Duration fleet_poll_min = std::chrono::milliseconds(5);
  Duration fleet_poll_max = std::chrono::milliseconds(100);
  // Whether to keep the in-process L1 at all (off: every read goes to L2).
  bool l1_enabled = true;
  // With an L2: an L1 copy is answered as fresh for at most this long after
  // it was filled, then read again from L2. It bounds how long a set() or
  // invalidate() made by *another* process goes unseen here (this process's
  // own are seen at once; docs/consistency.md). Costs one L2 GET per hot key
  // per l1_max_ttl per process. Duration::max() saturates (no bound).
  // Ignored without an L2. REQUIRES: > 0.
  Duration l1_max_ttl = std::chrono::seconds(1);
  // The L1 backplane, with a notifier that has an invalidation_channel
  // (RedisFleet's has; without one, this is off): set() and invalidate() announce the key, and
  // every other process drops its L1 copy as soon as it hears (milliseconds, instead of up to
  // l1_max_ttl). When the subscription is lost, and again when it is back, every L1 copy is
  // rechecked against L2 before it is answered again, since announcements made while it was down go
  // unheard (while Redis is unreachable a copy still fresh by its TTL is answered, as without the
  // backplane: docs/consistency.md).
  bool l1_backplane = true;
  // How long a tag invalidation (invalidate_tag, clear) is remembered, in
  // Redis and in each process. Duration::max() (the default): for ever —
  // one small entry per tag ever invalidated, in Redis and in every
  // process; set a bound when tags are many (one per user, say). Then no
  // entry outlives it: a stored entry's stale_until is capped at
  // tag_history − load_timeout − 1 min after it was loaded or set, so every
  // entry an invalidation refused has expired before the invalidation is
  // forgotten. REQUIRES: >= load_timeout + 2 min.
  Duration tag_history = Duration::max();

  // Prometheus series (prometheus.h), labelled cache=metrics_name; one name
  // per registry. Keys are counted by pattern: the first of key_patterns
  // (prefixes) a key starts with, else "other" — never by the raw key.
  std::shared_ptr<MetricsRegistry> metrics_registry{};
  std::string metrics_name = "default";
  std::vector<std::string> key_patterns{};
  // Told of breaker state changes, fallbacks and outright failures
  // (alert_sink.h). Fallback and failure alerts: at most one per kind per
  // alert_interval. REQUIRES: alert_interval >= 0.
  std::vector<std::shared_ptr<AlertSink>> alert_sinks{};
  Duration alert_interval = std::chrono::seconds(1);

  MemoryCacheOptions l1{};
  SingleFlightOptions single_flight{};
  CircuitBreakerOptions breaker{};
  // The limit on this protector's concurrent database loads
  // (concurrency_limiter.h). Off by default: measured, kAdaptive fails a few
  // requests in 100,000 that would have been answered when the machine is
  // CPU-starved, and it learns no limit when the database is saturated
  // from the start (docs/guide.md); set kFixed to the database's known
  // capacity, or kAdaptive where latency is a good signal. A load beyond it waits at
  // most db_limit.max_wait (within its deadline), else is shed: the caller
  // gets its stale value if one exists, else kOverloaded with a retry_after.
  ConcurrencyLimitOptions db_limit{};
  // A limiter shared with other protectors that load from the same database
  // (one limit per server, not per protector); when set, db_limit is unused.
  std::shared_ptr<ConcurrencyLimiter> db_limiter{};
  // The per-client rate limit of get_for() (rate_limiter.h); none: get_for
  // admits everything.
  std::shared_ptr<RateLimiter> rate_limiter{};
  // Told of every breaker state change (on the thread that caused it).
  CircuitBreaker::Listener breaker_listener{};
  // Source of wall-clock time for TTLs and the breaker. REQUIRES: non-null.
  std::shared_ptr<Clock> clock = system_clock();

  // Returns kInvalidArgument naming the first bad field, including those of
  // the nested l1 / single_flight / breaker options.
  //
  // Duration::max() ("forever") is accepted and saturates for ttl,
  // stale_while_revalidate, fail_safe_max_staleness, negative_ttl,
  // request_timeout, fleet_retry_interval, fleet_poll_min/max, l1_max_ttl,
  // alert_interval and the breaker's durations: instants are computed with
  // add_saturating (clock.h), so "forever" means TimePoint::max(), and Redis
  // expiries are clamped to what Redis accepts. It is refused for
  // single_flight.load_timeout (at most 1 h: Redis keeps a load's lock and
  // version key until its deadline), for hot_keys.window (at most 1 h) and
  // for the Redis client's and lock's durations (their own validate()).
  // adaptive_ttl.max accepts it (the TTL saturates).
  Result<void> validate() const;
};

// A TTL scaled by a factor uniform in [1 - jitter, 1 + jitter]: `unit` is a
// uniform random number in [0, 1). Pure; exposed for tests and for callers
// that set TTLs elsewhere. REQUIRES: 0 <= jitter < 1, 0 <= unit < 1.
Duration jittered_ttl(Duration ttl, double jitter, double unit) noexcept;

// One get's own choices, over the ProtectorOptions (Protector::get(key,
// GetOptions)). What a load stores is shared by every caller of the key's
// flight: `entry` applies only when this call's load is the one that runs.
struct GetOptions {
  // nullopt: request_timeout from the call.
  std::optional<Deadline> deadline{};
  // As get_stale_while_revalidate.
  bool stale_while_revalidate = false;
  // This call's fail-safe window (options.fail_safe_max_staleness): how
  // long past its freshness a stale value may answer a failed load; zero:
  // none. It cannot extend an entry past the time it is kept (stale_until).
  std::optional<Duration> fail_safe_max_staleness{};
  // Not answered from this process's L1 (nor its stale copy); a load this
  // call starts does not answer from L1 either. L1 is still filled.
  bool skip_l1 = false;
  // Not answered from L2 before the load: the load coordinates through
  // Redis as always (the fleet lock's holder may still take a value another
  // process has just written there).
  bool skip_l2 = false;
  // The stored value's lifetime when the repository gives none (repository.h).
  EntryOptions entry{};
};

class Protector {
 public:
  using Callback = std::function<void(const Result<std::string>&)>;

  // Errors: kInvalidArgument from options.validate() or a null repository.
  static Result<std::unique_ptr<Protector>> create(ProtectorOptions options,
                                                   std::shared_ptr<Repository> repository);
  ~Protector();
  Protector(const Protector&) = delete;
  Protector& operator=(const Protector&) = delete;

  // Returns the value for `key`: from L1 when fresh, otherwise from the one
  // shared load (see file comment). Blocks until the value or `deadline`.
  // Errors: kNotFound (the repository has no such key; cached negatively);
  // kInvalidArgument (empty or oversized key, oversized loaded value);
  // kTimeout, kCircuitOpen, kBackend, kOverloaded when the load failed and the
  // fallback chain had nothing to serve.
  Result<std::string> get(std::string_view key, Deadline deadline);
  // get() with a deadline of options.request_timeout from now.
  Result<std::string> get(std::string_view key);

  // Like get(), but never blocks: `callback` receives the result exactly once,
  // inline on an L1 hit or an immediate error, else on a load thread when the
  // shared load finishes (at the latest after single_flight.load_timeout).
  void get_async(std::string_view key, Callback callback);

  // get() of several keys at once, one result per key in the order of
  // `keys` (a key given twice is read once and answered twice). Fresh L1
  // copies answer at once; every other key joins its single-flight flight
  // as get() would (L2, the fleet lock, another process's load), and the
  // keys whose loads reach the database are loaded in one
  // Repository::load_many call per 256 keys (e.g. one SQL statement; a key
  // whose flight waits on another process does not hold the others back).
  // Per-key errors, fallbacks and not_found as for get(); a key not
  // answered by `deadline` gets its fallback or kTimeout, and no key waits
  // past it. Thread-safe.
  std::vector<Result<std::string>> get_many(std::span<const std::string> keys, Deadline deadline);

  // Returns a fresh value like get(); when the value is stale but less than
  // stale_while_revalidate past its TTL, returns it at once and starts one
  // background refresh for the key (deduplicated; dropped and counted when
  // the load queue is full). Otherwise behaves as get().
  Result<std::string> get_stale_while_revalidate(std::string_view key, Deadline deadline);
  Result<std::string> get_stale_while_revalidate(std::string_view key);
  // get() with this call's own choices (GetOptions). Errors: as get(), and
  // kInvalidArgument for a negative fail_safe_max_staleness or entry option.
  Result<std::string> get(std::string_view key, const GetOptions& options);

  // get() on behalf of `client`, admitted by options.rate_limiter first
  // (fleet-wide GCRA, per process while Redis is unreachable). Over the
  // limit: the key's L1 copy when there is one (fresh, or stale within
  // fail_safe_max_staleness), with no further I/O; else kRateLimited with
  // retry_after. `*rate_limited` (when given) says whether the client was
  // over the limit. Errors: as get(); kInvalidArgument for a bad client id.
  Result<std::string> get_for(std::string_view client, std::string_view key, Deadline deadline,
                              bool* rate_limited = nullptr);

  // Stores `value` with `ttl` (options.ttl when not given), jittered, in L2
  // then L1, and bumps the key's version so that no load already running can
  // overwrite it. Errors: kInvalidArgument (bad key, value over
  // max_value_bytes, ttl <= 0); kBackend/kTimeout when L2 failed: then L1
  // forgets the key instead of keeping a value the fleet may never see, and
  // the set may still land in L2 later (a paused Redis runs it on resuming).
  Result<void> set(std::string_view key, std::string_view value,
                   std::optional<Duration> ttl = std::nullopt);
  // set() with the entry's own lifetime (repository.h): its ttl (> 0), how
  // long it stays usable as a stale value after, and its tags. Errors: as
  // set(), and kInvalidArgument for a negative stale_for or bad tags.
  Result<void> set(std::string_view key, std::string_view value, const EntryOptions& options);

  // Forgets `key` in L1 and L2, so the next get loads it. Errors:
  // kInvalidArgument; kBackend/kTimeout when L2 could not be updated (L1 is
  // cleared regardless).
  //
  // Consistency (docs/consistency.md): once set() or invalidate() returned
  // successfully, no load that began before it can overwrite what it did, in
  // L2 or in this process's L1; a get() of this process that starts after it
  // never joins such a load; other processes see it within l1_max_ttl. One
  // that returned an error promises nothing (it may still land later).
  Result<void> invalidate(std::string_view key);

  // Invalidates every entry carrying `tag` (EntryOptions::tags) in L1, L2
  // and L3 for the whole fleet, without listing them: one Redis script
  // gives the tag a new version, and an entry whose load began before it
  // (whose tag stamp is lower) is refused wherever it is read, from then on
  // (passive: the cost does not depend on how many entries carry the tag).
  // Consistency as invalidate(): once it returned successfully, no load of
  // a tagged key that began before it is answered by a get() of this
  // process that starts after it (running loads are detached — all of them:
  // O(loads in flight)), and no entry it loaded stands as valid anywhere;
  // other processes see it within milliseconds through the backplane, and
  // within l1_max_ttl × 1.5 regardless (their known versions are synced with
  // Redis every l1_max_ttl / 2 while they read L2). Without an L2 it acts on
  // this process alone. Errors: kInvalidArgument (empty tag, over
  // kMaxTagBytes); kBackend/kTimeout from Redis (then nothing changed, here
  // or in the fleet; retry). Thread-safe.
  Result<void> invalidate_tag(std::string_view tag);
  // Logically empties the cache for the whole fleet in O(1): every entry
  // stored before (L1, L2, L3) is refused from then on, as if every entry
  // carried one tag and it was invalidated. Consistency and errors as
  // invalidate_tag. Thread-safe.
  Result<void> clear();

  // The L1 entry for `key`, without counting a request or loading. For
  // inspection and tests.
  std::optional<CacheEntry> peek(std::string_view key);

  // The keys hot in this process now, by rate (at most hot_keys.top_k;
  // empty when detection is off). Also ends the detector's buckets that
  // time has passed, so a quiet process's hot keys cool down.
  std::vector<HotKey> hot_keys();

  // A snapshot of counters and gauges (see metrics.h). Cheap; lock-free
  // except for reading the breaker state and L1 sizes.
  ProtectionMetrics metrics() const;

 private:
  struct Parts;  // the read path's internals (protector.cc)
  // invalidate_tag and clear (the empty tag), once the tag is valid.
  Result<void> invalidate_tag_version(std::string_view tag);
  explicit Protector(std::unique_ptr<Parts> parts);

  Result<void> check_key(std::string_view key) const;
  // Sends a fallback or failure alert, unless one of that kind went out
  // less than alert_interval ago.
  void alert(AlertEvent::Kind kind, std::string_view key, const std::string& message);
  // Publishes `key` on the L1 backplane (after a successful set/invalidate).
  void announce_to_fleet(std::string_view key);
  // get_many's L2 step: one MGET for `misses`; the fresh ones are answered
  // (and leave `misses`), the stale ones kept as fallbacks. Returns whether
  // L2 was read (false: no L2, nothing missing, or Redis failed).
  bool read_many_from_l2(std::span<const std::string> keys,
                         std::vector<internal::GetManyMiss>& misses,
                         std::vector<Result<std::string>>& answers, Deadline deadline);
  // The blocking read: L1, L2, then the shared load. With `serve_stale`, a
  // stale entry within stale_while_revalidate is answered at once and
  // refreshed in the background.
  // `deadline`: the caller's, or none for request_timeout from the first
  // step past L1.
  Result<std::string> read(std::string_view key, std::optional<Deadline> deadline,
                           bool serve_stale);
  // read() past its fast path (a fresh, positive L1 hit without Prometheus):
  // `peeked` is what the coarse L1 look found (a fresh entry's value in
  // `value`), kAbsent for an invalid key.
  // What an L2 read of `key` (`shared`, made after `ticket`) means for a
  // request holding `stale`: its answer (a fresh L2 entry, filled into L1;
  // or, Redis unreachable, a fresh L1 copy), else nullopt with `stale` the
  // newer of the two. Shared by get and get_many.
  std::optional<Result<std::string>> answer_from_l2(std::string_view key,
                                                    Result<std::optional<Envelope>> shared,
                                                    MemoryCache::Ticket ticket, TimePoint now,
                                                    std::optional<CacheEntry>& stale,
                                                    internal::RequestTrace& trace);
  // `call`: a get's own options (null: none).
  Result<std::string> read_past_l1(std::string_view key, std::optional<Deadline> deadline,
                                   bool serve_stale, MemoryCache::Freshness peeked,
                                   std::string&& value, bool negative,
                                   const GetOptions* call = nullptr);
  // Whether `entry` is a stale value the fallback chain may answer at `now`
  // (within the fail-safe window past its TTL: `call`'s, else the options').
  bool holds_fallback(const std::optional<CacheEntry>& entry, TimePoint now,
                      const GetOptions* call = nullptr) const;
  Duration fail_safe_window(const GetOptions* call) const;
  // Whether `entry` may be answered by get_stale_while_revalidate at `now`.
  bool within_revalidate_window(const std::optional<CacheEntry>& entry, TimePoint now) const;
  // The load of `key` for a caller holding `stale` under a soft timeout:
  // joins (or hands off) the flight and waits until the soft timeout or
  // `deadline`; nullopt when the soft timeout came first (the caller then
  // answers `stale`), else the flight's result.
  std::optional<Result<std::string>> load_within_soft_timeout(std::string_view key,
                                                              Deadline deadline, bool l2_just_read,
                                                              const GetOptions* call = nullptr);
  // Answers `stale` and starts one background refresh of `key` (unless one
  // runs; dropped and counted when the executor is full).
  Result<std::string> serve_stale_and_refresh(std::string_view key, CacheEntry stale, TimePoint now,
                                              internal::RequestTrace& trace);
  // The fallback chain for a failed load: a stale entry (the one the caller
  // saw, or a newer one in L1) within fail_safe_max_staleness, then
  // default_value, then the error. Never waits on Redis.
  Result<std::string> fall_back(std::string_view key, Error error, std::optional<CacheEntry> seen,
                                internal::RequestTrace* trace, const GetOptions* call = nullptr);
  // Counts the request's outcome (and records it in Prometheus).
  Result<std::string> finish(Result<std::string> result, std::string_view key,
                             internal::RequestTrace& trace);
  // `l2_just_read`: the caller has just found no fresh entry in L2
  // (load_coordinator.h: the load skips its first L2 look).
  // `fresh_at_least_until`: an entry found on the way answers only if fresh
  // then (an early refresh: only a newer entry than the one it replaces).
  // `batch`: the get_many batch the load belongs to (load_batch.h), or null.
  SingleFlight::Loader loader_for(std::string_view key,
                                  internal::LoadPriority priority = internal::LoadPriority{},
                                  bool l2_just_read = false,
                                  TimePoint fresh_at_least_until = TimePoint::min(),
                                  std::shared_ptr<internal::BatchMember> batch = nullptr,
                                  const GetOptions* call = nullptr);
  // Starts one background load of `key` unless one runs or
  // max_background_refreshes run already (then counted as dropped).
  // `fresh_at_least_until` as for loader_for. Returns whether it started.
  // `hot`: a hot key's refresh, not held to max_background_refreshes (at
  // most hot_keys.top_k of them run: one per hot key).
  bool start_background_refresh(std::string_view key, TimePoint fresh_at_least_until,
                                bool hot = false);
  // A read found `key` fresh in the last stretch of its life (`timing`):
  // starts an early refresh when the policy says so (early_refresh.h).
  void consider_early_refresh(std::string_view key, const MemoryCache::RefreshTiming& timing);
  // One sampled read of `key` into the hot-key detector (cold: one read in
  // the detector's sample_interval() gets here), acting on what it changed.
  [[gnu::cold, gnu::noinline]] void sample_hot_key(std::string_view key);
  // Predictive warming, at each hot-key evaluation: refreshes every hot key
  // whose L1 entry would expire before the next one (reads have not).
  void warm_hot_keys();
  // Sets the hit path's sampling mask to the detector's present interval.
  void follow_sample_interval();
  // Pins and alerts on keys that turned hot; unpins the ones that cooled.
  void apply_hot_key_changes(const HotKeyChanges& changes);

  // The warm-up thread's body: loads options.warm_up's keys at its rate
  // until done or told to stop.
  void run_warm_up();

  const std::unique_ptr<Parts> parts_;
  // The warm-up (warm_up.h): told to stop by the destructor, then joined.
  std::mutex warm_up_mutex_;
  std::condition_variable warm_up_stop_;
  bool warm_up_stopping_ = false;  // guarded by warm_up_mutex_
  std::thread warm_up_thread_;
  // When the last fallback / failure alert went out (ns since the clock's
  // epoch; INT64_MIN: never); compare-and-swapped so that one thread per
  // interval sends.
  std::atomic<std::int64_t> last_fallback_alert_{INT64_MIN};
  std::atomic<std::int64_t> last_failure_alert_{INT64_MIN};
  // Background refreshes started and not yet finished (each refresh's
  // loader holds one unit until it is destroyed).
  std::shared_ptr<std::atomic<std::size_t>> refreshes_running_ =
      std::make_shared<std::atomic<std::size_t>>(0);
};

// The name used in the design documents.
using ThunderingHerdProtector = Protector;

}  // namespace herdguard
