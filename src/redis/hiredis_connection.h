// Internal: the one boundary between herdguard and hiredis.
//
// Everything that talks to Redis — the pooled RedisClient and the notifier's
// subscriber — opens, uses and frees hiredis contexts here, so ownership
// (RAII over redisFree / freeReplyObject), login (AUTH, SELECT), timeouts and
// the translation of hiredis failures into `Error` exist once.
//
// A command is sent in two phases so that a failure says whether Redis can
// have run it: a failure while writing means the command never arrived whole
// (Redis runs only complete commands, and the connection is then closed), so
// it is safe to send again; a failure while reading the reply means it may
// have run, and only the caller knows whether that is safe to repeat.
//
// Thread safety: a RedisConnection is used by one thread at a time.
#pragma once

#include <hiredis/hiredis.h>

#include <chrono>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "herdguard/clock.h"
#include "herdguard/redis_client.h"
#include "herdguard/result.h"

namespace herdguard::internal {

struct RedisContextDeleter {
  void operator()(redisContext* c) const noexcept { redisFree(c); }
};
using RedisContextPtr = std::unique_ptr<redisContext, RedisContextDeleter>;

struct RedisReplyDeleter {
  void operator()(redisReply* r) const noexcept { freeReplyObject(r); }
};
using RedisReplyPtr = std::unique_ptr<redisReply, RedisReplyDeleter>;

// How a command ended on a connection.
enum class SendFailure {
  kNone,        // a reply (possibly an error reply: see Result)
  kErrorReply,  // Redis answered with an error; the connection is fine
  kNotSent,     // failed before the whole command was written: Redis did not run it
  kTimeout,     // no reply within the timeout: it may have run
  kLost,        // the connection broke while reading: it may have run
};

// The primary's address in a reply to SENTINEL get-master-addr-by-name:
// [host, port] with a non-empty host and a port in 1..65535; nullopt for
// anything else (nil: the Sentinel knows no such primary).
std::optional<RedisUrl::Node> sentinel_primary(const RedisReply& reply);

// Copies a hiredis reply (recursively) into a RedisReply. Error replies are
// not translated here: run() turns them into errors.
RedisReply to_reply(const redisReply& r);

class RedisConnection {
 public:
  // Connects within `connect_timeout`, sets `command_timeout` on the socket,
  // then AUTH (when the URL has a password) and SELECT (db != 0).
  // Errors: kBackend naming `where` and the failure (never the password).
  static Result<RedisConnection> open(const RedisUrl& url, Duration connect_timeout,
                                      Duration command_timeout, std::string_view where);

  // Sends `argv` and reads one reply, waiting at most `timeout` for each of
  // the two phases (clamped to >= 1 ms: a zero socket timeout means "block
  // forever" to the kernel). `*failure` says how it ended (see SendFailure);
  // after kNotSent, kTimeout or kLost the connection must be discarded.
  // After kErrorReply, `*error_reply` (when given) holds Redis's error text
  // (e.g. "MOVED 3999 127.0.0.1:6381").
  // Errors: kBackend (error reply, broken connection), kTimeout.
  Result<RedisReply> run(std::span<const std::string_view> argv, Duration timeout,
                         SendFailure* failure, std::string* error_reply = nullptr);

  // True when an idle connection shows no sign of having been closed by
  // Redis (nothing readable, no hang-up). One poll(2) with zero timeout.
  bool looks_alive() const;
  // When the connection last went back to its pool (for looks_alive's
  // amortisation there).
  std::chrono::steady_clock::time_point idle_since() const noexcept { return idle_since_; }
  void mark_idle(std::chrono::steady_clock::time_point now) noexcept { idle_since_ = now; }

  // The context, for the subscriber's own read loop.
  redisContext* raw() const noexcept { return context_.get(); }

 private:
  RedisConnection(RedisContextPtr context, std::string where, Duration timeout)
      : context_(std::move(context)), where_(std::move(where)), timeout_(timeout) {}
  void set_timeout(Duration timeout);

  RedisContextPtr context_;
  std::string where_;
  Duration timeout_;  // the socket timeout currently set
  std::chrono::steady_clock::time_point idle_since_{};
};

}  // namespace herdguard::internal
