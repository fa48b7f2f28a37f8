// Internal: one call to the repository, as the read path needs it — within
// the concurrency limit, behind the circuit breaker, inside the exception boundary, never after the
// load's deadline, and turned into the entry to cache (jittered TTL, negative entry for "no such
// key", saturating time arithmetic).
//
// Thread safety: safe from any number of threads (the repository must be).
#pragma once

#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "herdguard/cache.h"
#include "herdguard/circuit_breaker.h"
#include "herdguard/concurrency_limiter.h"
#include "herdguard/repository.h"
#include "protector/adaptive_ttl.h"
#include "protector/protector_counters.h"

namespace herdguard::internal {

class BatchMember;  // load_batch.h

struct EntryPolicy {
  Duration ttl{};
  double ttl_jitter = 0;
  Duration stale_while_revalidate{};
  Duration fail_safe_max_staleness{};
  Duration negative_ttl{};
  std::size_t max_value_bytes = 0;
  // No entry is kept longer than this after it was made (tag_history −
  // load_timeout − 1 min: ProtectorOptions::tag_history).
  Duration max_lifetime = Duration::max();
};

// The entry for a value loaded or set now: fresh for `ttl` jittered, kept
// for max(stale_while_revalidate, fail_safe_max_staleness) after that.
// Saturates at TimePoint::max() ("keep forever"), then is capped at
// policy.max_lifetime after `now`.
// `stale_for` (when given) replaces that max: the entry's own (EntryOptions).
CacheEntry make_entry(const EntryPolicy& policy, std::string value, Duration ttl, TimePoint now,
                      Duration load_duration, std::optional<Duration> stale_for = std::nullopt);

// Whose load it is: a caller waits for a foreground load; a background
// refresh (stale-while-revalidate) is optional and never waits for a
// database slot, so it cannot delay a caller's load behind it.
enum class LoadPriority { kForeground, kBackground };

class RepositoryLoader {
 public:
  // Observes each repository call's duration (Prometheus); may be empty.
  using DurationObserver = std::function<void(Duration)>;

  // REQUIRES: limiter non-null.
  RepositoryLoader(std::shared_ptr<Repository> repository, CircuitBreaker& breaker,
                   std::shared_ptr<ConcurrencyLimiter> limiter, EntryPolicy policy,
                   std::shared_ptr<Clock> clock, ProtectorCounters& counters);

  void set_observer(DurationObserver observer) { observe_ = std::move(observer); }
  // Loaded values get adaptive TTLs (adaptive_ttl.h) from now on.
  // REQUIRES: options.validate(); called before any load.
  void set_adaptive_ttl(const AdaptiveTtlOptions& options) {
    adaptive_ = std::make_unique<AdaptiveTtl>(options, policy_.ttl);
  }
  const EntryPolicy& policy() const noexcept { return policy_; }
  // Whether the repository loads batches in one call (get_many batches then).
  bool loads_in_batches() const noexcept { return repository_->loads_in_batches(); }
  const ConcurrencyLimiter& limiter() const noexcept { return *limiter_; }

  // The entry to cache for `key` (negative for "no such key"). Errors:
  // kTimeout when `deadline` passed before the call (the repository is not
  // called); kOverloaded (with retry_after) when the concurrency limiter
  // shed it; kCircuitOpen; the repository's error (kBackend for a throw);
  // kInvalidArgument for a value over max_value_bytes.
  // A background load gets a database slot only if one is free now (else
  // kOverloaded at once). `defaults`: the entry's lifetime when the
  // repository gives none (a get's per-call options), before the Protector's.
  // `previous` (may be null): the entry the load would replace; the
  // repository is then asked with reload_entry, and a "not modified" answer
  // keeps its value with a new lifetime (extends_version set when L2 may
  // extend it in place: its version is known and the tags are the same).
  Result<CacheEntry> load(const std::string& key, Deadline deadline,
                          LoadPriority priority = LoadPriority::kForeground,
                          const EntryOptions& defaults = {}, const CacheEntry* previous = nullptr);

 private:
  // A get_many batch member's load: its key's share of the round's one
  // load_batch() call.
  Result<CacheEntry> load_in_batch(BatchMember& member, const std::string& key, Deadline deadline,
                                   const EntryOptions& defaults);
  // The round leader's query (load_batch.h): one database slot, one breaker
  // permit and outcome (failed when no key got an answer), one exception
  // boundary, for all `keys`.
  std::vector<Result<std::optional<std::string>>> load_batch(std::span<const std::string> keys,
                                                             Deadline deadline);
  // The entry to cache for a repository answer that is not an error.
  Result<CacheEntry> to_entry(const std::string& key, Result<LoadedEntry> loaded,
                              const EntryOptions& defaults, Duration elapsed,
                              const CacheEntry* previous = nullptr);

  const std::shared_ptr<Repository> repository_;
  CircuitBreaker& breaker_;
  const std::shared_ptr<ConcurrencyLimiter> limiter_;
  const EntryPolicy policy_;
  const std::shared_ptr<Clock> clock_;
  ProtectorCounters& counters_;
  DurationObserver observe_;
  std::unique_ptr<AdaptiveTtl> adaptive_;  // null: policy_.ttl for every value
};

}  // namespace herdguard::internal
