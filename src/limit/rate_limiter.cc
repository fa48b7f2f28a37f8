// RateLimiter (include/herdguard/rate_limiter.h): GCRA in one Lua script on
// Redis's clock, the in-process GCRA (limit/gcra.h) when Redis fails.
#include "herdguard/rate_limiter.h"

#include <fmt/format.h>

#include <cmath>

#include "limit/gcra.h"

namespace herdguard {
namespace {

constexpr auto kRelaxed = std::memory_order_relaxed;

// KEYS[1] the client's key; ARGV[1] the emission interval and ARGV[2] the
// tolerance, in microseconds (fractions allowed). Returns {1, 0} when the
// request is admitted, {0, retry_after_us} when not.
//
// The TAT is stored as a decimal string of microseconds since the epoch
// (a double holds them to 0.25 µs). Whatever else the key holds — another
// type, bytes that are not a number, a TAT further ahead than this
// algorithm ever sets (a legitimate one is at most now + tolerance +
// interval) — is taken as no state, and overwritten: data written by
// others never locks a client out or fails the request.
const RedisScript kGcra{R"lua(
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local held = redis.pcall('GET', KEYS[1])
local tat = nil
if type(held) == 'string' then tat = tonumber(held) end
if tat == nil or tat ~= tat or tat < now or tat > now + tolerance + interval then tat = now end
local allowed_from = tat - tolerance
if now < allowed_from then
  return {0, math.ceil(allowed_from - now)}
end
tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.3f', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
return {1, 0}
)lua"};

Result<void> bad(std::string what) {
  return make_error(ErrorKind::kInvalidArgument, "rate limit: " + std::move(what));
}

Duration seconds_to_duration(double seconds) {
  return std::chrono::duration_cast<Duration>(std::chrono::duration<double>(seconds));
}

}  // namespace

Result<void> RateLimitOptions::validate() const {
  if (!(rate > 0 && rate <= 1e9)) return bad(fmt::format("rate must be in (0, 1e9], got {}", rate));
  if (!(burst >= 1 && burst <= 1e9))
    return bad(fmt::format("burst must be in [1, 1e9], got {}", burst));
  // So that the interval and the tolerance stay far inside what the clock's
  // nanoseconds and the script's millisecond expiries hold.
  if (1 / rate > 86400) return bad(fmt::format("rate must be at least 1 a day, got {}/s", rate));
  if ((burst - 1) / rate > 86400)
    return bad(fmt::format("burst / rate must be at most a day ({} / {} is {} s)", burst, rate,
                           (burst - 1) / rate));
  if (prefix.find_first_of("{}") != std::string::npos)
    return bad(fmt::format("prefix may not contain '{{' or '}}', got '{}'", prefix));
  if (max_client_bytes < 1) return bad("max_client_bytes must be >= 1");
  if (max_local_clients < 1) return bad("max_local_clients must be >= 1");
  return ok();
}

struct RateLimiter::Impl {
  Impl(RateLimitOptions o, std::shared_ptr<RedisClient> r, std::shared_ptr<Clock> c)
      : options(std::move(o)),
        redis(std::move(r)),
        clock(std::move(c)),
        interval_arg(fmt::format("{:.6f}", 1e6 / options.rate)),
        tolerance_arg(fmt::format("{:.6f}", (options.burst - 1) * 1e6 / options.rate)),
        local(seconds_to_duration(1 / options.rate),
              seconds_to_duration((options.burst - 1) / options.rate), options.max_local_clients) {}

  const RateLimitOptions options;
  const std::shared_ptr<RedisClient> redis;
  const std::shared_ptr<Clock> clock;
  const std::string interval_arg;  // the script's ARGV, formatted once
  const std::string tolerance_arg;
  internal::LocalGcra local;
  std::atomic<std::uint64_t> allowed{0}, limited{0}, local_decisions{0}, redis_errors{0};

  // The fleet's verdict, or nullopt when Redis failed or answered nonsense.
  std::optional<RateVerdict> ask_redis(std::string_view client, Deadline deadline) {
    const std::string key = fmt::format("{}{{{}}}", options.prefix, client);
    auto reply = redis->eval(kGcra, {key}, {interval_arg, tolerance_arg}, deadline);
    if (!reply || reply->type != RedisReply::Type::kArray || reply->elements.size() != 2 ||
        reply->elements[0].type != RedisReply::Type::kInteger ||
        reply->elements[1].type != RedisReply::Type::kInteger) {
      redis_errors.fetch_add(1, kRelaxed);
      return std::nullopt;
    }
    const bool admitted = reply->elements[0].integer == 1;
    return RateVerdict{.allowed = admitted,
                       .retry_after = admitted
                                          ? Duration::zero()
                                          : std::chrono::microseconds(reply->elements[1].integer),
                       .local = false};
  }
};

Result<std::unique_ptr<RateLimiter>> RateLimiter::create(RateLimitOptions options,
                                                         std::shared_ptr<RedisClient> redis,
                                                         std::shared_ptr<Clock> clock) {
  if (auto valid = options.validate(); !valid) return std::unexpected(valid.error());
  if (!clock) return make_error(ErrorKind::kInvalidArgument, "rate limit: clock is null");
  return std::unique_ptr<RateLimiter>(new RateLimiter(
      std::make_unique<Impl>(std::move(options), std::move(redis), std::move(clock))));
}

RateLimiter::RateLimiter(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
RateLimiter::~RateLimiter() = default;

Result<RateVerdict> RateLimiter::admit(std::string_view client, Deadline deadline) {
  Impl& i = *impl_;
  if (client.empty()) return make_error(ErrorKind::kInvalidArgument, "rate limit: client is empty");
  if (client.size() > i.options.max_client_bytes) {
    return make_error(ErrorKind::kInvalidArgument,
                      fmt::format("rate limit: client id is {} bytes, over max_client_bytes ({})",
                                  client.size(), i.options.max_client_bytes));
  }
  std::optional<RateVerdict> verdict;
  if (i.redis) verdict = i.ask_redis(client, deadline);
  if (!verdict) {
    const internal::GcraDecision d = i.local.decide(client, i.clock->now());
    verdict = RateVerdict{.allowed = d.allowed, .retry_after = d.retry_after, .local = true};
    i.local_decisions.fetch_add(1, kRelaxed);
  }
  (verdict->allowed ? i.allowed : i.limited).fetch_add(1, kRelaxed);
  return *verdict;
}

const RateLimitOptions& RateLimiter::options() const noexcept { return impl_->options; }

RateLimiterStats RateLimiter::stats() const {
  return {.allowed = impl_->allowed.load(kRelaxed),
          .limited = impl_->limited.load(kRelaxed),
          .local_decisions = impl_->local_decisions.load(kRelaxed),
          .redis_errors = impl_->redis_errors.load(kRelaxed)};
}

}  // namespace herdguard
