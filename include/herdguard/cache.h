// herdguard/cache.h — the cache interface.
//
// A `Cache` maps byte-string keys to `CacheEntry`s (cache_entry.h: the value
// plus the instants that drive herd protection).
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

#include <optional>
#include <string_view>

#include "herdguard/cache_entry.h"
#include "herdguard/result.h"

namespace herdguard {

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
