// The L2 over Redis (include/herdguard/redis_cache.h). Every write that must
// be ordered against a version is one Lua script; the version helpers are
// shared with the fleet lock (redis/key_layout.h).
#include "herdguard/redis_cache.h"

#include <fmt/format.h>

#include <charconv>

#include "redis/key_layout.h"

namespace herdguard {
namespace {

constexpr auto kRelaxed = std::memory_order_relaxed;

// What set and invalidate share.
// hg_change_version(version_key, tombstone_key or nil): the version of a
//   set/invalidate — bumped when a load may be working under it, else the
//   server clock in microseconds (no key is created: no load holds a
//   snapshot to supersede, and a later one starts above it). With a
//   tombstone, always above it: a clock that stepped back, or two changes
//   in one microsecond, must still leave every earlier record below the new
//   tombstone (the version key, when there is one, is raised alike).
// hg_tombstone(key, version, ms): the tombstone a set/invalidate leaves for
//   the L3 tier (memcached_cache.h) when the caller asks for one: the lowest
//   version a record may have to be promoted. Its number and its lifetime
//   only grow (a process configured with a shorter lifetime never shortens
//   another's).
constexpr std::string_view kChangeLua = R"lua(
local function hg_change_version(key, tombstone)
  local v
  local exists = redis.call('EXISTS', key) == 1
  if exists then
    v = hg_bump(key)
  else
    local t = redis.call('TIME')
    v = tonumber(t[1]) * 1000000 + tonumber(t[2])
  end
  if tombstone then
    local floor = tonumber(hg_get(tombstone))
    if floor and v <= floor then
      v = floor + 1
      if exists then redis.call('SET', key, string.format('%.0f', v), 'KEEPTTL') end
    end
  end
  return v
end
local function hg_tombstone(key, version, ms)
  local old = tonumber(hg_get(key))
  if old and old > version then version = old end
  local left = redis.call('PTTL', key)
  if left > tonumber(ms) then ms = left end
  redis.call('SET', key, string.format('%.0f', version), 'PX', ms)
end
)lua";

// KEYS[1] value, KEYS[2] version[, KEYS[3] tombstone]; ARGV[1] envelope
// bytes, ARGV[2] expire-at ms[, ARGV[3] tombstone ms]. Bumps the version when a load may be working
// under it; otherwise the value's version is the server clock in microseconds (no key is created:
// no load holds a snapshot to invalidate, and a later one starts above it). The version is written
// into the envelope (bytes 23..30, little-endian), so every L2 value carries the version it was
// written under. Returns it.
const RedisScript kSet{std::string(internal::kVersionLua) + std::string(kChangeLua) + R"lua(
local v = hg_change_version(KEYS[2], KEYS[3])
local le = ''
local x = v
for i = 1, 8 do
  le = le .. string.char(x % 256)
  x = math.floor(x / 256)
end
local bytes = string.sub(ARGV[1], 1, 23) .. le .. string.sub(ARGV[1], 32)
redis.call('SET', KEYS[1], bytes, 'PXAT', ARGV[2])
if KEYS[3] then hg_tombstone(KEYS[3], v, ARGV[3]) end
return string.format('%.0f', v)
)lua"};

// KEYS[1] value, KEYS[2] version[, KEYS[3] tombstone]; [ARGV[1] tombstone
// ms]. The tombstone is the bumped version, or the server clock in
// microseconds when no load holds one (every version handed out before is
// below it: versions start from that clock, docs/consistency.md).
const RedisScript kInvalidate{std::string(internal::kVersionLua) + std::string(kChangeLua) +
                              R"lua(
local v = hg_change_version(KEYS[2], KEYS[3])
redis.call('DEL', KEYS[1])
if KEYS[3] then hg_tombstone(KEYS[3], v, ARGV[1]) end
return 1
)lua"};

// KEYS[1] tombstone, KEYS[2] epoch. Returns {tombstone or "0", epoch}; an
// absent (or unreadable) epoch is created from the server clock in
// microseconds, so a Redis that lost its data starts a new one.
const RedisScript kTierGuard{std::string(internal::kVersionLua) + R"lua(
local e = tonumber(hg_get(KEYS[2]))
if not e then
  local t = redis.call('TIME')
  e = tonumber(t[1]) * 1000000 + tonumber(t[2])
  redis.call('SET', KEYS[2], string.format('%.0f', e))
end
local tomb = tonumber(hg_get(KEYS[1])) or 0
return {string.format('%.0f', tomb), string.format('%.0f', e)}
)lua"};

// KEYS[1] tag sequence, KEYS[2] tag versions (sorted set); ARGV[1] tag,
// ARGV[2] keep ms (0: for ever). Returns the tag's new version. A sorted set another
// program replaced with something else is started afresh.
const RedisScript kInvalidateTag{std::string(internal::kVersionLua) + R"lua(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local last = tonumber(hg_get(KEYS[1])) or 0
local v = last + 1
if v < now then v = now end
-- Past 2^53 a double no longer counts by one: refuse rather than repeat a version.
if v <= last or v > 9007199254740991 then
  return redis.error_reply('herdguard: tag sequence out of range (delete the key)')
end
local score = string.format('%.0f', v)
redis.call('SET', KEYS[1], score)
if not pcall(redis.call, 'ZADD', KEYS[2], score, ARGV[1]) then
  redis.call('DEL', KEYS[2])
  redis.call('ZADD', KEYS[2], score, ARGV[1])
end
if tonumber(ARGV[2]) > 0 then
  local horizon = now - tonumber(ARGV[2]) * 1000
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. string.format('%.0f', horizon))
  hg_keep_for(KEYS[2], tonumber(ARGV[2]))
end
return score
)lua"};

// KEYS[1] tag sequence, KEYS[2] tag versions; ARGV[1] after, ARGV[2]
// limit. Returns {sequence, seconds, µs, {tag, version, ...}}.
const RedisScript kTagChanges{std::string(internal::kVersionLua) + R"lua(
local seq = tonumber(hg_get(KEYS[1])) or 0
local t = redis.call('TIME')
local ok, r = pcall(redis.call, 'ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[1], '+inf', 'WITHSCORES',
                    'LIMIT', 0, tonumber(ARGV[2]))
if not ok then r = {} end
return {string.format('%.0f', seq), t[1], t[2], r}
)lua"};

// KEYS[1] version; ARGV[1] horizon ms. Returns {version, now ms}.
const RedisScript kSnapshot{std::string(internal::kVersionLua) + R"lua(
local v = hg_get(KEYS[1])
if not v or not tonumber(v) then v = string.format('%.0f', hg_bump(KEYS[1])) end
hg_keep_for(KEYS[1], tonumber(ARGV[1]))
return {v, hg_now_ms()}
)lua"};

// KEYS[1] value, KEYS[2] version; ARGV[1] version, ARGV[2] write-until ms,
// ARGV[3] bytes, ARGV[4] expire-at ms, ARGV[5] the version a "not modified"
// load extends ('' : none). Returns 1 written, 2 extended, 0 superseded,
// -1 too late.
const RedisScript kWriteLoaded{std::string(internal::kVersionLua) +
                               std::string(internal::kWriteLoadedLua) + R"lua(
return hg_write_loaded(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])
)lua"};

std::vector<std::string_view> views(const std::vector<std::string>& strings) {
  return {strings.begin(), strings.end()};
}

}  // namespace

Result<std::unique_ptr<RedisCache>> RedisCache::create(RedisCacheOptions options,
                                                       std::shared_ptr<RedisClient> client,
                                                       std::shared_ptr<Clock> clock) {
  if (!client) return make_error(ErrorKind::kInvalidArgument, "redis cache: client is null");
  if (!clock) return make_error(ErrorKind::kInvalidArgument, "redis cache: clock is null");
  if (auto valid = internal::validate_prefix(options.prefix, "redis cache"); !valid)
    return std::unexpected(valid.error());
  if (options.wait_replicas < 0 || options.wait_timeout <= Duration::zero() ||
      options.wait_timeout > std::chrono::hours(1)) {
    return make_error(ErrorKind::kInvalidArgument,
                      "redis cache: wait_replicas must be >= 0 and wait_timeout in (0, 1 h]");
  }
  return std::unique_ptr<RedisCache>(
      new RedisCache(std::move(options), std::move(client), std::move(clock)));
}

RedisCache::RedisCache(RedisCacheOptions options, std::shared_ptr<RedisClient> client,
                       std::shared_ptr<Clock> clock)
    : options_(std::move(options)), client_(std::move(client)), clock_(std::move(clock)) {}

Result<RedisReply> RedisCache::change(const RedisScript& script,
                                      std::span<const std::string_view> keys,
                                      std::span<const std::string_view> args,
                                      std::optional<Deadline> deadline, std::string_view what) {
  if (options_.wait_replicas == 0) {
    return deadline ? client_->eval(script, keys, args, *deadline)
                    : client_->eval(script, keys, args);
  }
  auto replicated =
      client_->eval_replicated(script, keys, args, options_.wait_replicas, options_.wait_timeout);
  if (!replicated) return std::unexpected(replicated.error());
  if (replicated->replicas < options_.wait_replicas) {
    replica_shortfalls_.fetch_add(1, kRelaxed);
    return make_error(
        ErrorKind::kTimeout,
        fmt::format(
            "redis cache: {} acknowledged by {} of {} replicas within {} ms (it stands on "
            "the primary; a failover now could undo it)",
            what, replicated->replicas, options_.wait_replicas,
            std::chrono::duration_cast<std::chrono::milliseconds>(options_.wait_timeout).count()));
  }
  return std::move(replicated->reply);
}

std::string RedisCache::redis_key(std::string_view key) const {
  return internal::value_key(options_.prefix, key);
}

std::string RedisCache::version_key(std::string_view key) const {
  return internal::version_key(options_.prefix, key);
}

std::string RedisCache::tombstone_key(std::string_view key) const {
  return internal::tombstone_key(options_.prefix, key);
}

std::string RedisCache::epoch_key() const { return options_.prefix + "epoch"; }

std::string RedisCache::tag_sequence_key() const { return options_.prefix + "{hg-tags}seq"; }
std::string RedisCache::tag_versions_key() const { return options_.prefix + "{hg-tags}versions"; }

Result<std::uint64_t> RedisCache::invalidate_tag(std::string_view tag, Duration keep,
                                                 Deadline deadline) {
  const std::string keep_ms = keep == Duration::max() ? "0" : internal::redis_ms(keep);
  const std::string sequence = tag_sequence_key();
  const std::string versions = tag_versions_key();
  const std::string_view keys[] = {sequence, versions};
  const std::string_view args[] = {tag, keep_ms};
  auto reply = change(kInvalidateTag, keys, args, deadline, "the tag invalidation");
  if (!reply) {
    errors_.fetch_add(1, kRelaxed);
    return std::unexpected(reply.error());
  }
  auto version = internal::parse_version_reply(*reply);
  if (!version) errors_.fetch_add(1, kRelaxed);
  return version;
}

namespace {
// A sorted-set score or a decimal from a script: a whole number >= 0.
std::optional<std::uint64_t> parse_whole(const RedisReply& reply) {
  if (reply.type == RedisReply::Type::kInteger) {
    if (reply.integer < 0) return std::nullopt;
    return static_cast<std::uint64_t>(reply.integer);
  }
  if (reply.type != RedisReply::Type::kString) return std::nullopt;
  const std::string& text = reply.str;
  double d = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), d);
  // 2^63: larger (or not finite) is nothing herdguard wrote.
  if (ec != std::errc() || end != text.data() + text.size() || !(d >= 0) || d >= 9.2e18)
    return std::nullopt;
  return static_cast<std::uint64_t>(d);
}
}  // namespace

Result<TagChanges> RedisCache::tag_changes(std::uint64_t after, std::size_t limit,
                                           Deadline deadline) {
  auto reply = client_->eval(kTagChanges, {tag_sequence_key(), tag_versions_key()},
                             {fmt::format("{}", after), fmt::format("{}", limit)}, deadline);
  if (!reply) {
    errors_.fetch_add(1, kRelaxed);
    return std::unexpected(reply.error());
  }
  auto bad = [this] {
    errors_.fetch_add(1, kRelaxed);
    return make_error(ErrorKind::kBackend, "redis cache: unexpected reply to the tag script");
  };
  if (reply->type != RedisReply::Type::kArray || reply->elements.size() != 4 ||
      reply->elements[3].type != RedisReply::Type::kArray ||
      reply->elements[3].elements.size() % 2 != 0) {
    return bad();
  }
  const auto sequence = parse_whole(reply->elements[0]);
  const auto seconds = parse_whole(reply->elements[1]);
  const auto micros = parse_whole(reply->elements[2]);
  if (!sequence || !seconds || !micros) return bad();
  TagChanges out;
  out.sequence = *sequence;
  out.now_us = static_cast<std::int64_t>(*seconds * 1'000'000 + *micros);
  const auto& pairs = reply->elements[3].elements;
  out.changes.reserve(pairs.size() / 2);
  for (std::size_t i = 0; i < pairs.size(); i += 2) {
    // A member another program added with a score herdguard never writes
    // is skipped, not a failed sync: one such member must not keep every
    // process from ever trusting L2 (tiered_cache.h).
    const auto version = parse_whole(pairs[i + 1]);
    if (pairs[i].type != RedisReply::Type::kString || !version) {
      corrupt_.fetch_add(1, kRelaxed);
      continue;
    }
    out.changes.emplace_back(pairs[i].str, *version);
  }
  out.complete = pairs.size() / 2 < limit;
  return out;
}

Result<TierGuard> RedisCache::tier_guard(std::string_view key, Deadline deadline) {
  auto reply = client_->eval(kTierGuard, {tombstone_key(key), epoch_key()}, {}, deadline);
  if (!reply) {
    errors_.fetch_add(1, kRelaxed);
    return std::unexpected(reply.error());
  }
  if (reply->type != RedisReply::Type::kArray || reply->elements.size() != 2) {
    errors_.fetch_add(1, kRelaxed);
    return make_error(ErrorKind::kBackend, "redis cache: unexpected reply to the tier script");
  }
  auto tombstone = internal::parse_count_reply(reply->elements[0]);
  auto epoch = internal::parse_version_reply(reply->elements[1]);
  if (!tombstone || !epoch) {
    errors_.fetch_add(1, kRelaxed);
    return make_error(ErrorKind::kBackend, "redis cache: unexpected numbers from the tier script");
  }
  return TierGuard{.min_version = *tombstone, .epoch = *epoch};
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

Result<std::vector<std::optional<Envelope>>> RedisCache::get_envelopes(
    std::span<const std::string> keys, Deadline deadline) {
  std::vector<std::string> redis_keys;
  redis_keys.reserve(keys.size());
  for (const std::string& key : keys) redis_keys.push_back(redis_key(key));
  std::vector<std::string_view> argv;
  argv.reserve(keys.size() + 1);
  argv.push_back("MGET");
  argv.insert(argv.end(), redis_keys.begin(), redis_keys.end());
  auto reply = client_->command(argv, deadline);
  if (!reply) {
    errors_.fetch_add(1, kRelaxed);
    return std::unexpected(reply.error());
  }
  if (reply->type != RedisReply::Type::kArray || reply->elements.size() != keys.size()) {
    errors_.fetch_add(1, kRelaxed);
    return make_error(ErrorKind::kBackend, "redis cache: unexpected reply to MGET");
  }
  std::vector<std::optional<Envelope>> out;
  out.reserve(keys.size());
  for (RedisReply& element : reply->elements) {
    // MGET answers nil for a key of another type: a miss here, replaced by
    // the next write as GET's WRONGTYPE is.
    if (element.type != RedisReply::Type::kString) {
      misses_.fetch_add(1, kRelaxed);
      out.emplace_back();
      continue;
    }
    std::optional<Envelope> decoded = decode_value(element.str);
    (decoded ? hits_ : misses_).fetch_add(1, kRelaxed);
    out.push_back(std::move(decoded));
  }
  return out;
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
  return set(key, std::move(entry), Duration::zero());
}

Result<std::uint64_t> RedisCache::set(std::string_view key, CacheEntry entry,
                                      Duration tombstone_for) {
  if (!entry.is_usable(clock_->now())) {
    auto erased = invalidate(key, tombstone_for);  // nothing to keep
    if (!erased) return std::unexpected(erased.error());
    return std::uint64_t{0};
  }
  std::vector<std::string> keys{redis_key(key), version_key(key)};
  const std::string at = internal::redis_unix_ms(entry.stale_until);
  std::vector<std::string> args{encode_envelope({.entry = std::move(entry), .version = 0}), at};
  if (tombstone_for > Duration::zero()) {
    keys.push_back(tombstone_key(key));
    args.push_back(internal::redis_ms(tombstone_for));
  }
  const auto key_views = views(keys);
  const auto arg_views = views(args);
  auto reply = change(kSet, key_views, arg_views, std::nullopt, "the set");
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

Result<void> RedisCache::erase(std::string_view key) { return invalidate(key, Duration::zero()); }

Result<void> RedisCache::invalidate(std::string_view key, Duration tombstone_for) {
  std::vector<std::string> keys{redis_key(key), version_key(key)};
  std::vector<std::string> args;
  if (tombstone_for > Duration::zero()) {
    keys.push_back(tombstone_key(key));
    args.push_back(internal::redis_ms(tombstone_for));
  }
  const auto key_views = views(keys);
  const auto arg_views = views(args);
  auto reply = change(kInvalidate, key_views, arg_views, std::nullopt, "the invalidation");
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
  const std::string previous = internal::little_endian(entry.extends_version);
  auto reply = client_->eval(kWriteLoaded, {value, version}, {expected, until, bytes, at, previous},
                             deadline);
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
                         .too_late = too_late_.load(kRelaxed),
                         .replica_shortfalls = replica_shortfalls_.load(kRelaxed)};
}

}  // namespace herdguard
