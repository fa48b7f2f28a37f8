// The L2 over Redis (include/herdguard/redis_cache.h). Every write that must
// be ordered against a version is one Lua script; the version helpers are
// shared with the fleet lock (redis/key_layout.h).
#include "herdguard/redis_cache.h"

#include <fmt/format.h>

#include "redis/key_layout.h"

namespace herdguard {
namespace {

constexpr auto kRelaxed = std::memory_order_relaxed;

// KEYS[1] value, KEYS[2] version; ARGV[1] envelope bytes, ARGV[2] expire-at
// ms. Bumps the version when a load may be working under it; otherwise the
// value's version is the server clock in microseconds (no key is created: no
// load holds a snapshot to invalidate, and a later one starts above it). The
// version is written into the envelope (bytes 23..30, little-endian), so
// every L2 value carries the version it was written under. Returns it.
const RedisScript kSet{std::string(internal::kVersionLua) + R"lua(
local v
if redis.call('EXISTS', KEYS[2]) == 1 then
  v = hg_bump(KEYS[2])
else
  local t = redis.call('TIME')
  v = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local le = ''
local x = v
for i = 1, 8 do
  le = le .. string.char(x % 256)
  x = math.floor(x / 256)
end
local bytes = string.sub(ARGV[1], 1, 23) .. le .. string.sub(ARGV[1], 32)
redis.call('SET', KEYS[1], bytes, 'PXAT', ARGV[2])
return string.format('%.0f', v)
)lua"};

// KEYS[1] value, KEYS[2] version.
const RedisScript kInvalidate{std::string(internal::kVersionLua) + R"lua(
if redis.call('EXISTS', KEYS[2]) == 1 then hg_bump(KEYS[2]) end
redis.call('DEL', KEYS[1])
return 1
)lua"};

// KEYS[1] version; ARGV[1] horizon ms. Returns {version, now ms}.
const RedisScript kSnapshot{std::string(internal::kVersionLua) + R"lua(
local v = hg_get(KEYS[1])
if not v or not tonumber(v) then v = string.format('%.0f', hg_bump(KEYS[1])) end
hg_keep_for(KEYS[1], tonumber(ARGV[1]))
return {v, hg_now_ms()}
)lua"};

// KEYS[1] value, KEYS[2] version; ARGV[1] version, ARGV[2] write-until ms,
// ARGV[3] bytes, ARGV[4] expire-at ms. Returns 1 written, 0 superseded,
// -1 too late.
const RedisScript kWriteLoaded{std::string(internal::kVersionLua) +
                               std::string(internal::kWriteLoadedLua) + R"lua(
return hg_write_loaded(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
)lua"};

}  // namespace

Result<std::unique_ptr<RedisCache>> RedisCache::create(RedisCacheOptions options,
                                                       std::shared_ptr<RedisClient> client,
                                                       std::shared_ptr<Clock> clock) {
  if (!client) return make_error(ErrorKind::kInvalidArgument, "redis cache: client is null");
  if (!clock) return make_error(ErrorKind::kInvalidArgument, "redis cache: clock is null");
  if (auto valid = internal::validate_prefix(options.prefix, "redis cache"); !valid)
    return std::unexpected(valid.error());
  return std::unique_ptr<RedisCache>(
      new RedisCache(std::move(options), std::move(client), std::move(clock)));
}

RedisCache::RedisCache(RedisCacheOptions options, std::shared_ptr<RedisClient> client,
                       std::shared_ptr<Clock> clock)
    : options_(std::move(options)), client_(std::move(client)), clock_(std::move(clock)) {}

std::string RedisCache::redis_key(std::string_view key) const {
  return internal::value_key(options_.prefix, key);
}

std::string RedisCache::version_key(std::string_view key) const {
  return internal::version_key(options_.prefix, key);
}

Result<std::optional<Envelope>> RedisCache::decode_reply(Result<RedisReply> reply) {
  if (!reply && reply.error().message.find("WRONGTYPE") != std::string::npos) {
    // Another program stored a list, hash... under our prefix: corrupt, and
    // the next write (SET) replaces it.
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
  std::optional<Envelope> decoded = decode_value(reply->str);
  (decoded ? hits_ : misses_).fetch_add(1, kRelaxed);
  return decoded;
}

std::optional<Envelope> RedisCache::decode_value(std::string_view bytes) {
  auto decoded = decode_envelope(bytes);
  if (!decoded) {
    corrupt_.fetch_add(1, kRelaxed);
    return std::nullopt;
  }
  if (!decoded->entry.is_usable(clock_->now())) return std::nullopt;
  decoded->entry.version = decoded->version;
  return std::optional<Envelope>(std::move(*decoded));
}

Result<std::optional<Envelope>> RedisCache::get_envelope(std::string_view key, Deadline deadline) {
  const std::string k = redis_key(key);
  return decode_reply(client_->command({"GET", k}, deadline));
}

Result<std::optional<CacheEntry>> RedisCache::get(std::string_view key) {
  const std::string k = redis_key(key);
  auto got = decode_reply(client_->command({"GET", k}));
  if (!got) return std::unexpected(got.error());
  if (!*got) return std::optional<CacheEntry>();
  return std::optional<CacheEntry>(std::move((*got)->entry));
}

Result<void> RedisCache::put(std::string_view key, CacheEntry entry) {
  auto stored = set(key, std::move(entry));
  if (!stored) return std::unexpected(stored.error());
  return ok();
}

Result<std::uint64_t> RedisCache::set(std::string_view key, CacheEntry entry) {
  const std::string value = redis_key(key);
  const std::string version = version_key(key);
  if (!entry.is_usable(clock_->now())) {
    auto reply = client_->eval(kInvalidate, {value, version}, {});  // nothing to keep
    if (!reply) {
      errors_.fetch_add(1, kRelaxed);
      return std::unexpected(reply.error());
    }
    return std::uint64_t{0};
  }
  const std::string at = internal::redis_unix_ms(entry.stale_until);
  const std::string bytes = encode_envelope({.entry = std::move(entry), .version = 0});
  auto reply = client_->eval(kSet, {value, version}, {bytes, at});
  if (!reply) {
    errors_.fetch_add(1, kRelaxed);
    return std::unexpected(reply.error());
  }
  auto v = internal::parse_version_reply(*reply);
  if (!v) {
    errors_.fetch_add(1, kRelaxed);
    return std::unexpected(v.error());
  }
  return *v;
}

Result<void> RedisCache::erase(std::string_view key) {
  const std::string value = redis_key(key);
  const std::string version = version_key(key);
  auto reply = client_->eval(kInvalidate, {value, version}, {});
  if (!reply) {
    errors_.fetch_add(1, kRelaxed);
    return std::unexpected(reply.error());
  }
  return ok();
}

Result<VersionSnapshot> RedisCache::snapshot(std::string_view key, Deadline hard_deadline) {
  const std::string version = version_key(key);
  const std::string horizon = internal::redis_ms(hard_deadline.remaining());
  auto reply = client_->eval(kSnapshot, {version}, {horizon}, hard_deadline);
  if (!reply) {
    errors_.fetch_add(1, kRelaxed);
    return std::unexpected(reply.error());
  }
  if (reply->type != RedisReply::Type::kArray || reply->elements.size() != 2 ||
      reply->elements[1].type != RedisReply::Type::kInteger) {
    errors_.fetch_add(1, kRelaxed);
    return make_error(ErrorKind::kBackend, "redis cache: unexpected reply to the snapshot script");
  }
  auto v = internal::parse_version_reply(reply->elements[0]);
  if (!v) {
    errors_.fetch_add(1, kRelaxed);
    return std::unexpected(v.error());
  }
  return VersionSnapshot{
      .version = *v,
      .write_until_ms = internal::write_until_ms(reply->elements[1].integer, hard_deadline)};
}

Result<WriteOutcome> RedisCache::write_loaded(std::string_view key, const CacheEntry& entry,
                                              const VersionSnapshot& snapshot, Deadline deadline) {
  if (!entry.is_usable(clock_->now())) return WriteOutcome::kWritten;  // nothing to keep
  const std::string value = redis_key(key);
  const std::string version = version_key(key);
  const std::string expected = std::to_string(snapshot.version);
  const std::string until = std::to_string(snapshot.write_until_ms);
  const std::string at = internal::redis_unix_ms(entry.stale_until);
  const std::string bytes = encode_envelope({.entry = entry, .version = snapshot.version});
  auto reply =
      client_->eval(kWriteLoaded, {value, version}, {expected, until, bytes, at}, deadline);
  if (!reply) {
    errors_.fetch_add(1, kRelaxed);
    return std::unexpected(reply.error());
  }
  const std::optional<WriteOutcome> outcome = reply->type == RedisReply::Type::kInteger
                                                  ? internal::loaded_write_outcome(reply->integer)
                                                  : std::nullopt;
  if (!outcome) {
    errors_.fetch_add(1, kRelaxed);
    return make_error(ErrorKind::kBackend, "redis cache: unexpected reply to the write script");
  }
  if (*outcome == WriteOutcome::kSuperseded) superseded_.fetch_add(1, kRelaxed);
  if (*outcome == WriteOutcome::kTooLate) too_late_.fetch_add(1, kRelaxed);
  return *outcome;
}

RedisCacheStats RedisCache::stats() const {
  return RedisCacheStats{.hits = hits_.load(kRelaxed),
                         .misses = misses_.load(kRelaxed),
                         .corrupt = corrupt_.load(kRelaxed),
                         .errors = errors_.load(kRelaxed),
                         .superseded = superseded_.load(kRelaxed),
                         .too_late = too_late_.load(kRelaxed)};
}

}  // namespace herdguard
