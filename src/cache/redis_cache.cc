#include "herdguard/redis_cache.h"

#include <fmt/format.h>

namespace herdguard {
namespace {

constexpr auto kRelaxed = std::memory_order_relaxed;

std::string unix_ms(TimePoint t) {
  return std::to_string(
      std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count());
}

}  // namespace

Result<std::unique_ptr<RedisCache>> RedisCache::create(RedisCacheOptions options,
                                                       std::shared_ptr<RedisClient> client,
                                                       std::shared_ptr<Clock> clock) {
  if (!client) return make_error(ErrorKind::kInvalidArgument, "redis cache: client is null");
  if (!clock) return make_error(ErrorKind::kInvalidArgument, "redis cache: clock is null");
  return std::unique_ptr<RedisCache>(
      new RedisCache(std::move(options), std::move(client), std::move(clock)));
}

RedisCache::RedisCache(RedisCacheOptions options, std::shared_ptr<RedisClient> client,
                       std::shared_ptr<Clock> clock)
    : options_(std::move(options)), client_(std::move(client)), clock_(std::move(clock)) {}

std::string RedisCache::redis_key(std::string_view key) const {
  std::string out;
  out.reserve(options_.prefix.size() + key.size());
  out.append(options_.prefix);
  out.append(key);
  return out;
}

Result<std::optional<Envelope>> RedisCache::get_envelope(std::string_view key) {
  const std::string k = redis_key(key);
  auto reply = client_->command({"GET", k});
  if (!reply && reply.error().message.find("WRONGTYPE") != std::string::npos) {
    // Another program stored a list, hash... under our prefix: corrupt, and
    // the next put (SET) replaces it.
    corrupt_.fetch_add(1, kRelaxed);
    misses_.fetch_add(1, kRelaxed);
    return std::optional<Envelope>();
  }
  if (!reply) {
    errors_.fetch_add(1, kRelaxed);
    return std::unexpected(reply.error());
  }
  if (reply->is_nil()) {
    misses_.fetch_add(1, kRelaxed);
    return std::optional<Envelope>();
  }
  if (reply->type != RedisReply::Type::kString) {
    corrupt_.fetch_add(1, kRelaxed);
    misses_.fetch_add(1, kRelaxed);
    return std::optional<Envelope>();
  }
  auto decoded = decode_envelope(reply->str);
  if (!decoded) {
    corrupt_.fetch_add(1, kRelaxed);
    misses_.fetch_add(1, kRelaxed);
    return std::optional<Envelope>();
  }
  if (!decoded->entry.is_usable(clock_->now())) {
    misses_.fetch_add(1, kRelaxed);
    return std::optional<Envelope>();
  }
  hits_.fetch_add(1, kRelaxed);
  return std::optional<Envelope>(std::move(*decoded));
}

Result<std::optional<CacheEntry>> RedisCache::get(std::string_view key) {
  auto got = get_envelope(key);
  if (!got) return std::unexpected(got.error());
  if (!*got) return std::optional<CacheEntry>();
  return std::optional<CacheEntry>(std::move((*got)->entry));
}

Result<void> RedisCache::put(std::string_view key, CacheEntry entry) {
  if (!entry.is_usable(clock_->now())) return ok();  // already expired: nothing to keep
  // Redis forgets the key exactly at stale_until (PXAT: absolute Unix ms).
  const std::string at = unix_ms(entry.stale_until);
  const std::string bytes = encode_envelope({.entry = std::move(entry), .fence = 0});
  auto reply = client_->command({"SET", redis_key(key), bytes, "PXAT", at});
  if (!reply) {
    errors_.fetch_add(1, kRelaxed);
    return std::unexpected(reply.error());
  }
  return ok();
}

Result<void> RedisCache::erase(std::string_view key) {
  auto reply = client_->command({"DEL", redis_key(key)});
  if (!reply) {
    errors_.fetch_add(1, kRelaxed);
    return std::unexpected(reply.error());
  }
  return ok();
}

RedisCacheStats RedisCache::stats() const {
  return RedisCacheStats{.hits = hits_.load(kRelaxed),
                         .misses = misses_.load(kRelaxed),
                         .corrupt = corrupt_.load(kRelaxed),
                         .errors = errors_.load(kRelaxed)};
}

}  // namespace herdguard
