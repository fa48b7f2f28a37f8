#include "protector/repository_loader.h"

#include <fmt/format.h>

#include <algorithm>

#include "core/random.h"
#include "herdguard/protector.h"
#include "protector/load_batch.h"
#include "protector/tag_versions.h"

namespace herdguard::internal {

CacheEntry make_entry(const EntryPolicy& policy, std::string value, Duration ttl, TimePoint now,
                      Duration load_duration, std::optional<Duration> stale_for) {
  const TimePoint cap = add_saturating(now, policy.max_lifetime);
  const TimePoint fresh_until = std::min(
      cap,
      add_saturating(now, jittered_ttl(ttl, policy.ttl_jitter, internal::uniform_real(0.0, 1.0))));
  return CacheEntry{
      .value = std::move(value),
      .fresh_until = fresh_until,
      .stale_until = std::min(
          cap, add_saturating(fresh_until,
                              stale_for.value_or(std::max(policy.stale_while_revalidate,
                                                          policy.fail_safe_max_staleness)))),
      .negative = false,
      .load_duration = load_duration,
  };
}

RepositoryLoader::RepositoryLoader(std::shared_ptr<Repository> repository, CircuitBreaker& breaker,
                                   std::shared_ptr<ConcurrencyLimiter> limiter, EntryPolicy policy,
                                   std::shared_ptr<Clock> clock, ProtectorCounters& counters)
    : repository_(std::move(repository)),
      breaker_(breaker),
      limiter_(std::move(limiter)),
      policy_(policy),
      clock_(std::move(clock)),
      counters_(counters) {}

Result<CacheEntry> RepositoryLoader::load(const std::string& key, Deadline deadline,
                                          LoadPriority priority, const EntryOptions& defaults,
                                          const CacheEntry* previous) {
  if (deadline.expired()) {
    // Whoever waited for this load has given up, or will by the time the
    // database answers: calling it now only adds load to a slow database.
    return make_error(
        ErrorKind::kTimeout,
        fmt::format("load of key '{}': deadline passed before the database call", key));
  }
  // An open breaker refuses before the limiter is asked: a load it refuses
  // must neither wait for a slot nor count as shed.
  if (breaker_.state() == BreakerState::kOpen) {
    return make_error(ErrorKind::kCircuitOpen,
                      fmt::format("load of key '{}' refused: circuit breaker is open", key));
  }
  // In a get_many batch (load_batch.h) the round's one query takes one
  // database slot and one breaker permit, and records one outcome.
  if (BatchMember* member = current_batch_member())
    return load_in_batch(*member, key, deadline, defaults);
  // Then the limiter: it may wait, and a breaker permit must not be held (a
  // half-open breaker admits few) while waiting.
  auto slot = priority == LoadPriority::kForeground
                  ? limiter_->acquire(deadline)
                  : limiter_->acquire(Deadline::after(Duration::zero()));
  if (!slot) {
    slot.error().message = fmt::format("load of key '{}': {}", key, slot.error().message);
    return std::unexpected(std::move(slot.error()));
  }
  if (deadline.expired()) {
    return make_error(
        ErrorKind::kTimeout,
        fmt::format("load of key '{}': deadline passed while waiting for a database slot", key));
  }
  if (auto permit = breaker_.try_acquire(); !permit) {
    return make_error(ErrorKind::kCircuitOpen,
                      fmt::format("load of key '{}' refused: {}", key, permit.error().message));
  }
  counters_.db_queries.add();
  const auto start = std::chrono::steady_clock::now();
  Result<LoadedEntry> loaded = make_error(ErrorKind::kInternal, "not loaded");
  try {
    if (previous) {
      loaded = repository_->reload_entry(key, deadline,
                                         PreviousValue{.value = previous->value,
                                                       .negative = previous->negative,
                                                       .version = previous->version,
                                                       .fresh_until = previous->fresh_until});
    } else {
      loaded = repository_->load_entry(key, deadline);
    }
  } catch (const std::exception& e) {
    loaded = make_error(ErrorKind::kBackend, fmt::format("repository threw: {}", e.what()));
  } catch (...) {
    loaded = make_error(ErrorKind::kBackend, "repository threw: unknown exception");
  }
  const Duration elapsed = std::chrono::steady_clock::now() - start;
  if (observe_) observe_(elapsed);

  if (!loaded && loaded.error().kind != ErrorKind::kNotFound) {
    slot->record(elapsed, loaded.error().kind == ErrorKind::kTimeout ? LoadOutcome::kTimeout
                                                                     : LoadOutcome::kIgnore);
    counters_.db_errors.add();
    breaker_.record(CallOutcome::kFailure, elapsed);
    return std::unexpected(std::move(loaded.error()));
  }
  // "No such key" is an answer, not a failure of the database.
  slot->record(elapsed, LoadOutcome::kSuccess);
  breaker_.record(CallOutcome::kSuccess, elapsed);
  return to_entry(key, std::move(loaded), defaults, elapsed, previous);
}

Result<CacheEntry> RepositoryLoader::load_in_batch(BatchMember& member, const std::string& key,
                                                   Deadline deadline,
                                                   const EntryOptions& defaults) {
  counters_.db_queries.add();
  const auto start = std::chrono::steady_clock::now();
  Result<std::optional<std::string>> loaded = member.arrive(
      key, deadline,
      [this](std::span<const std::string> keys, Deadline d) { return load_batch(keys, d); });
  if (!loaded && loaded.error().kind != ErrorKind::kNotFound) {
    counters_.db_errors.add();
    return std::unexpected(std::move(loaded.error()));
  }
  Result<LoadedEntry> entry = loaded
                                  ? Result<LoadedEntry>(LoadedEntry{.value = std::move(*loaded)})
                                  : Result<LoadedEntry>(std::unexpected(std::move(loaded.error())));
  return to_entry(key, std::move(entry), defaults, std::chrono::steady_clock::now() - start);
}

std::vector<Result<std::optional<std::string>>> RepositoryLoader::load_batch(
    std::span<const std::string> keys, Deadline deadline) {
  using One = Result<std::optional<std::string>>;
  auto every_key = [&](const Error& error) {
    return std::vector<One>(keys.size(), One(std::unexpected(error)));
  };
  counters_.db_batches.add();
  auto slot = limiter_->acquire(deadline);
  if (!slot) return every_key(slot.error());
  if (deadline.expired())
    return every_key({ErrorKind::kTimeout, "batch load: deadline passed before the database call"});
  if (auto permit = breaker_.try_acquire(); !permit)
    return every_key({ErrorKind::kCircuitOpen, "batch load refused: " + permit.error().message});
  const auto start = std::chrono::steady_clock::now();
  std::vector<One> loaded;
  try {
    loaded = repository_->load_many(keys, deadline);
  } catch (const std::exception& e) {
    loaded = every_key({ErrorKind::kBackend, fmt::format("repository threw: {}", e.what())});
  } catch (...) {
    loaded = every_key({ErrorKind::kBackend, "repository threw: unknown exception"});
  }
  if (loaded.size() != keys.size()) {
    loaded = every_key(
        {ErrorKind::kBackend, fmt::format("repository returned {} results for a batch of {} keys",
                                          loaded.size(), keys.size())});
  }
  const Duration elapsed = std::chrono::steady_clock::now() - start;
  if (observe_) observe_(elapsed);
  // One statement, one outcome: it failed when no key got an answer.
  const bool failed = std::none_of(loaded.begin(), loaded.end(), [](const One& r) {
    return r || r.error().kind == ErrorKind::kNotFound;
  });
  const bool timed_out = failed && loaded.front().error().kind == ErrorKind::kTimeout;
  slot->record(elapsed, !failed     ? LoadOutcome::kSuccess
                        : timed_out ? LoadOutcome::kTimeout
                                    : LoadOutcome::kIgnore);
  breaker_.record(failed ? CallOutcome::kFailure : CallOutcome::kSuccess, elapsed);
  return loaded;
}

Result<CacheEntry> RepositoryLoader::to_entry(const std::string& key, Result<LoadedEntry> loaded,
                                              const EntryOptions& defaults, Duration elapsed,
                                              const CacheEntry* previous) {
  const TimePoint now = clock_->now();
  if (loaded && loaded->not_modified) {
    if (!previous) {
      return make_error(ErrorKind::kBackend,
                        fmt::format("repository answered 'not modified' for key '{}' without "
                                    "being given a previous value (load_entry, not reload_entry)",
                                    key));
    }
    counters_.not_modified.add();
    // The previous value is the current one: it is "loaded" again.
    loaded->not_modified = false;
    loaded->value = previous->negative ? std::nullopt : std::optional<std::string>(previous->value);
    if (loaded->options.tags.empty()) loaded->options.tags = previous->tags;
    auto entry = to_entry(key, std::move(loaded), defaults, elapsed, nullptr);
    // In place only when nothing but the lifetime changes (the script
    // checks the rest: the same version's envelope, header and flags).
    if (entry && entry->tags == previous->tags) entry->extends_version = previous->version;
    return entry;
  }
  // The repository's own lifetime first, then the call's, then the Protector's.
  EntryOptions own = loaded ? loaded->options : EntryOptions{};
  if (!own.ttl) own.ttl = defaults.ttl;
  if (!own.stale_for) own.stale_for = defaults.stale_for;
  if (own.tags.empty()) own.tags = defaults.tags;
  if (auto valid = validate_tags(own.tags); !valid) {
    return make_error(ErrorKind::kInvalidArgument,
                      fmt::format("key '{}': {}", key, valid.error().message));
  }
  if ((own.ttl && *own.ttl < Duration::zero()) ||
      (own.stale_for && *own.stale_for < Duration::zero())) {
    return make_error(ErrorKind::kInvalidArgument,
                      fmt::format("repository gave key '{}' a negative ttl or stale_for", key));
  }
  if (!loaded || !loaded->value) {
    const TimePoint until = std::min(add_saturating(now, policy_.max_lifetime),
                                     add_saturating(now, own.ttl.value_or(policy_.negative_ttl)));
    return CacheEntry{.value = {},
                      .fresh_until = until,
                      .stale_until = until,
                      .negative = true,
                      .load_duration = elapsed,
                      .tags = std::move(own.tags)};
  }
  std::string& value = *loaded->value;
  if (value.size() > policy_.max_value_bytes) {
    return make_error(ErrorKind::kInvalidArgument,
                      fmt::format("value of key '{}' is {} bytes, over max_value_bytes ({})", key,
                                  value.size(), policy_.max_value_bytes));
  }
  Duration ttl = policy_.ttl;
  if (own.ttl) {
    ttl = *own.ttl;
  } else if (adaptive_) {
    const AdaptiveTtl::Choice choice = adaptive_->choose(key, value);
    ttl = choice.ttl;
    if (choice.direction > 0) counters_.ttl_lengthened.add();
    if (choice.direction < 0) counters_.ttl_shortened.add();
  }
  CacheEntry entry = make_entry(policy_, std::move(value), ttl, now, elapsed, own.stale_for);
  entry.tags = std::move(own.tags);
  return entry;
}

}  // namespace herdguard::internal
