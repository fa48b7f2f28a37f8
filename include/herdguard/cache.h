// herdguard/cache.h — the cache interface and the entry it stores.
//
// A `Cache` maps byte-string keys to `CacheEntry`s: the value plus the two
// instants that drive herd protection. Until `fresh_until` the value is served
// as is. Between `fresh_until` and `stale_until` it is stale: served by
// stale-while-revalidate and by the fail-safe fallback while a reload runs or
// when the database is down. After `stale_until` the cache forgets it.
//
// Implementations: `MemoryCache` (the bounded in-process L1, memory_cache.h);
// the Redis L2 follows the same interface.
//
// Thread safety: every implementation is safe to call from any number of
// threads concurrently.
//
// Example:
//   CacheEntry e{.value = "v", .fresh_until = now + 60s, .stale_until = now + 1h};
//   if (auto r = cache.put("k", std::move(e)); !r) log(r.error().to_string());
//   auto got = cache.get("k");   // Result<std::optional<CacheEntry>>
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "herdguard/clock.h"
#include "herdguard/result.h"

namespace herdguard {

struct CacheEntry {
  // The cached bytes. Empty for a negative entry.
  std::string value{};
  // Served as fresh strictly before this instant.
  TimePoint fresh_until{};
  // Kept (and usable as a stale fallback) strictly before this instant.
  // REQUIRES: stale_until >= fresh_until.
  TimePoint stale_until{};
  // True when the entry remembers that the repository had no such key
  // (negative caching), so a herd on a missing key does not reach the database.
  bool negative = false;
  // How long the load that produced this entry took (probabilistic early refresh uses it).
  Duration load_duration{};
  // In-process copies only (never stored in Redis): the Protector serves an
  // L1 copy as fresh only before this instant, then reads the shared L2
  // again, which bounds how long another process's invalidate can go unseen
  // (ProtectorOptions::l1_max_ttl, docs/consistency.md).
  TimePoint recheck_at = TimePoint::max();
  // In-process copies only: from this instant on, a read of the fresh entry
  // decides whether to refresh it early (early_refresh.h); max(): never.
  TimePoint refresh_from = TimePoint::max();
  // The key's version in L2 when this value was written there (redis_cache.h;
  // 0 when unknown: no L2, or a degraded load). Versions only grow, so an L1
  // fill never replaces an entry of a higher version (memory_cache.h).
  std::uint64_t version = 0;

  bool is_fresh(TimePoint now) const noexcept { return now < fresh_until; }
  // Fresh and not due for its L1 recheck: an in-process copy that may be
  // answered as fresh without asking L2.
  bool is_fresh_in_l1(TimePoint now) const noexcept { return is_fresh(now) && now < recheck_at; }
  bool is_usable(TimePoint now) const noexcept { return now < stale_until; }
};

class Cache {
 public:
  virtual ~Cache() = default;

  // Returns the entry for `key`, or std::nullopt when there is none or it is
  // past its stale_until. Errors: kBackend when a remote cache fails.
  // Never blocks longer than the implementation's configured command timeout.
  virtual Result<std::optional<CacheEntry>> get(std::string_view key) = 0;

  // Stores `entry` under `key`, replacing any previous entry.
  // Errors: kInvalidArgument when the entry can never fit the cache's bounds;
  // kBackend when a remote cache fails.
  virtual Result<void> put(std::string_view key, CacheEntry entry) = 0;

  // Removes `key` if present. Absent keys are not an error.
  virtual Result<void> erase(std::string_view key) = 0;
};

}  // namespace herdguard
