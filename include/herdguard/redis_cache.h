// herdguard/redis_cache.h — the shared L2 cache in Redis.
//
// Each entry is stored as an envelope (envelope.h) under `prefix + key`, with
// the Redis key's expiry at the entry's stale_until (SET ... PXAT), so Redis
// forgets an entry exactly when herdguard would. A get is one GET.
//
// Bytes under the prefix that do not decode (written by another program,
// truncated, another format version) are a miss, counted in
// stats().corrupt; the next load overwrites them.
//
// Writes by a lock holder go through RedisLockManager::fenced_write
// (redis_lock.h) instead of put(), so a holder whose lease ran out cannot
// overwrite a newer value; encode_for_write() gives it the bytes.
//
// Thread safety: safe from any number of threads (RedisClient is).
//
// Example:
//   auto redis = std::shared_ptr(std::move(*herdguard::RedisClient::create({.url = url})));
//   auto l2 = herdguard::RedisCache::create({.prefix = "shop:"}, redis, herdguard::system_clock());
//   (*l2)->put("sku-1", entry);
//   auto got = (*l2)->get("sku-1");   // Result<std::optional<CacheEntry>>
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "herdguard/cache.h"
#include "herdguard/envelope.h"
#include "herdguard/redis_client.h"

namespace herdguard {

struct RedisCacheOptions {
  // Prepended to every key. Other programs must not write under it.
  std::string prefix = "herdguard:v1:";
};

struct RedisCacheStats {
  std::uint64_t hits = 0;     // gets that returned an entry
  std::uint64_t misses = 0;   // gets that found nothing (or an expired / corrupt entry)
  std::uint64_t corrupt = 0;  // gets that found bytes that do not decode
  std::uint64_t errors = 0;   // Redis errors (get, put, erase)
};

class RedisCache final : public Cache {
 public:
  // Errors: kInvalidArgument for a null client or clock.
  static Result<std::unique_ptr<RedisCache>> create(RedisCacheOptions options,
                                                    std::shared_ptr<RedisClient> client,
                                                    std::shared_ptr<Clock> clock);

  // One GET. Returns nullopt for no entry, an entry past stale_until, or
  // bytes that do not decode (counted as corrupt). Errors: kBackend/kTimeout
  // from Redis.
  Result<std::optional<CacheEntry>> get(std::string_view key) override;
  // Like get, with the fence the entry was written with.
  Result<std::optional<Envelope>> get_envelope(std::string_view key);
  // SET prefix+key envelope PXAT stale_until (fence 0). An entry already past
  // stale_until is not written. Errors: kBackend/kTimeout.
  Result<void> put(std::string_view key, CacheEntry entry) override;
  Result<void> erase(std::string_view key) override;

  // The Redis key for `key` (prefix + key).
  std::string redis_key(std::string_view key) const;
  RedisCacheStats stats() const;

 private:
  RedisCache(RedisCacheOptions options, std::shared_ptr<RedisClient> client,
             std::shared_ptr<Clock> clock);
  const RedisCacheOptions options_;
  const std::shared_ptr<RedisClient> client_;
  const std::shared_ptr<Clock> clock_;
  std::atomic<std::uint64_t> hits_{0}, misses_{0}, corrupt_{0}, errors_{0};
};

}  // namespace herdguard
