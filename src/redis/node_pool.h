// Internal: a bounded pool of hiredis connections to ONE Redis server.
//
// RedisClient (redis_client.h) uses one NodePool for a standalone Redis and
// one per node for Redis Cluster (redis/node_router.h). What a pool adds
// to a connection: at most pool_size connections, reconnect backoff while
// the server is down, the suspension after a full command_timeout (a hung
// server costs one timeout per backoff period, not one per caller), and
// per-call deadlines.
//
// Thread safety: every member function is safe from any number of threads.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "herdguard/clock.h"
#include "herdguard/redis_client.h"
#include "herdguard/result.h"
#include "redis/hiredis_connection.h"

namespace herdguard::internal {

// Counters a client's pools share (RedisClientStats).
struct PoolCounters {
  std::atomic<std::uint64_t> connects{0}, connect_failures{0}, pool_timeouts{0};
};

// How one NodePool::run ended, beyond its Result.
struct RunOutcome {
  SendFailure failure = SendFailure::kNotSent;
  bool borrowed = false;    // a connection was had (else: backing off, or none free in time)
  bool reused = false;      // the connection had served an earlier command
  std::string error_reply;  // Redis's error text when failure == kErrorReply
  // The reply of FollowUp::argv, when one was given and the command succeeded.
  std::optional<Result<RedisReply>> follow_up{};
};

// A second command sent on the same connection right after a successful
// one (WAIT counts the replicas that acknowledged the connection's writes),
// waiting for its reply up to `timeout`.
struct FollowUp {
  std::span<const std::string_view> argv{};
  Duration timeout{};
};

class NodePool {
 public:
  // `url` names one server (kTcp or kUnix). `options` and `counters` must
  // outlive the pool.
  NodePool(RedisUrl url, const RedisOptions& options, PoolCounters& counters);
  NodePool(const NodePool&) = delete;
  NodePool& operator=(const NodePool&) = delete;

  // Sends `argv` on one pooled connection and reads its reply, within
  // `deadline` when given (see RedisClient::command). With `asking`, an
  // ASKING is sent first on the same connection (a Cluster ASK redirect).
  // Errors: kBackend (error reply, connection failure, backing off after a
  // failed connect or a timeout), kTimeout. Never retries.
  // With `follow_up`, that command is sent next on the same connection
  // after a successful reply; its reply lands in outcome.follow_up.
  Result<RedisReply> run(std::span<const std::string_view> argv, std::optional<Deadline> deadline,
                         RunOutcome& outcome, bool asking = false,
                         const FollowUp* follow_up = nullptr);

  // "redis <redacted url>", the prefix of every error message.
  const std::string& where() const noexcept { return where_; }
  const RedisUrl& url() const noexcept { return url_; }

 private:
  using SteadyClock = std::chrono::steady_clock;
  class Lease;

  Duration pool_wait() const;
  Result<Lease> borrow(SteadyClock::time_point until);
  void give_back(RedisConnection c, bool reusable);
  void suspend();
  void resume();

  const RedisUrl url_;
  const RedisOptions& options_;
  PoolCounters& counters_;
  const std::string where_;

  std::mutex mutex_;
  std::condition_variable freed_;  // signalled when a connection or a slot frees up
  // Guarded by mutex_. Invariant: idle_.size() <= open_ <= options_.pool_size;
  // `open_` counts idle, borrowed and being-connected connections, so the
  // pool never exceeds pool_size connections to the server.
  std::vector<RedisConnection> idle_;
  std::size_t open_ = 0;
  // Reconnect backoff, guarded by mutex_: no connect is tried before
  // `next_connect_`; `backoff_` is the next wait after a failure.
  SteadyClock::time_point next_connect_{};
  Duration backoff_{};
  std::string last_connect_error_;
  // A server that accepts connections but does not answer (overloaded,
  // stopped) would cost every caller command_timeout. After a full
  // command_timeout, commands fail fast until `suspended_until_` (the same
  // backoff schedule); a successful command ends it. Guarded by mutex_;
  // `suspended_` mirrors "timeout_backoff_ != 0" so the hot path reads it
  // without the lock.
  SteadyClock::time_point suspended_until_{};
  Duration timeout_backoff_{};
  std::atomic<bool> suspended_{false};
};

}  // namespace herdguard::internal
