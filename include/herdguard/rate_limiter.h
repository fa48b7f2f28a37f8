// herdguard/rate_limiter.h — a request rate limit per client, fleet-wide.
//
// Each client (an id the caller passes: a tenant, an API key, a user) may
// make `rate` requests a second across the whole fleet, and up to `burst` at
// once after being idle. The decision is GCRA (the generic cell rate
// algorithm, as redis-cell implements it) in one Lua script: one round trip,
// one Redis key per active client holding its "theoretical arrival time",
// Redis's own clock (so the processes' clocks need not agree). Written by
// hand because no Debian library does GCRA over Redis (redis-cell is a Redis
// module, not packaged).
//
// When Redis is unreachable or answers an error, the same algorithm runs in
// the process (a local table of at most max_local_clients clients): the limit
// then holds per process, so a fleet of N processes admits up to N × rate
// for a client until Redis is back. A request is never failed because the
// limiter's Redis failed.
//
// Protector::get_for(client, key) applies it in front of a read: over the
// limit, the caller gets its key's L1 copy (fresh or stale) when there is
// one, else kRateLimited with retry_after.
//
// Thread safety: admit() and stats() are safe from any number of threads.
//
// Example:
//   auto limiter = herdguard::RateLimiter::create({.rate = 50, .burst = 10}, fleet->client);
//   auto verdict = (*limiter)->admit("tenant-42", herdguard::Deadline::after(50ms));
//   if (verdict && !verdict->allowed) return TooManyRequests(verdict->retry_after);
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "herdguard/clock.h"
#include "herdguard/redis_client.h"
#include "herdguard/result.h"

namespace herdguard {

struct RateLimitOptions {
  // Requests a second per client, fleet-wide. REQUIRES: in [1/86400, 1e9]
  // (at least one a day).
  double rate = 100;
  // Requests a client may make at once after being idle (GCRA's tolerance
  // is (burst − 1) / rate). REQUIRES: in [1, 1e9], and (burst − 1) / rate at
  // most a day.
  double burst = 1;
  // Prefix of the Redis keys: <prefix>{client}. REQUIRES: no '{' or '}'.
  std::string prefix = "herdguard:rl:";
  // Longest client id. REQUIRES: >= 1.
  std::size_t max_client_bytes = 256;
  // Clients remembered by the local fallback (idle ones are forgotten
  // first: a client idle longer than its tolerance needs no state).
  // REQUIRES: >= 1.
  std::size_t max_local_clients = 100'000;

  // kInvalidArgument naming the first bad field.
  Result<void> validate() const;
};

struct RateVerdict {
  bool allowed = false;
  // Not allowed: how long until a request of this client would be.
  Duration retry_after{};
  // Decided by the process alone (Redis unreachable or no Redis).
  bool local = false;
};

struct RateLimiterStats {
  std::uint64_t allowed = 0;
  std::uint64_t limited = 0;
  std::uint64_t local_decisions = 0;  // of both, decided in the process
  std::uint64_t redis_errors = 0;     // script calls that failed (then decided locally)
};

class RateLimiter {
 public:
  // `redis` may be null: the limit is then per process. Errors:
  // kInvalidArgument from options.validate() or a null clock.
  static Result<std::unique_ptr<RateLimiter>> create(RateLimitOptions options,
                                                     std::shared_ptr<RedisClient> redis,
                                                     std::shared_ptr<Clock> clock = system_clock());
  ~RateLimiter();

  // Counts one request of `client` and says whether it is admitted. Redis
  // is asked within `deadline` (and its command_timeout); on any Redis
  // failure the process decides. Errors: kInvalidArgument for an empty
  // client id or one longer than max_client_bytes.
  Result<RateVerdict> admit(std::string_view client, Deadline deadline);

  const RateLimitOptions& options() const noexcept;
  RateLimiterStats stats() const;

 private:
  struct Impl;
  explicit RateLimiter(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace herdguard
