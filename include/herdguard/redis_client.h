// herdguard/redis_client.h — a small, binary-safe Redis client over hiredis,
// with a bounded connection pool that survives Redis going away.
//
// Everything herdguard sends to Redis (the L2 cache, the fleet lock, the
// ready notifications) goes through `RedisClient`. It exists, rather than
// hiredis being used directly, to put in one place what every caller needs:
//   * URLs: `redis://[user:password@]host:port[/db]`,
//     `unix:///path/to/redis.sock[?db=N]` and, for Redis Cluster,
//     `redis-cluster://host:port[,host:port...]` and, through Sentinel,
//     `redis-sentinel://host:port[,host:port...]/NAME` (see RedisUrl::parse);
//   * Sentinel: the primary the Sentinels name gets every command; they are
//     asked again after a connection failure, a READONLY error (a demoted
//     primary) and at least once a second, so a failover is followed;
//   * Redis Cluster: each command goes to the primary that owns its key's
//     slot (the first key; for EVALSHA the first of KEYS, and all of a
//     script's keys must share one slot), following MOVED and ASK
//     redirects and reloading the slot map after a resharding or failover;
//     MGET is split by slot; keyless commands (PUBLISH, PING) go to any
//     primary; one bounded pool per node;
//   * connect and command timeouts, so a dead Redis costs a bounded wait;
//   * a bounded pool: at most `pool_size` connections, callers beyond that
//     wait for one (up to the command timeout) instead of opening more;
//   * reconnect with exponential backoff: while Redis is down, commands fail
//     fast with kBackend instead of each paying the connect timeout; after a
//     command timeout (Redis overloaded or stopped) likewise, until the
//     backoff passes, so a hung Redis costs one timeout per backoff period,
//     not one per caller;
//   * AUTH (password or ACL user) and SELECT on every new connection;
//   * commands as argument vectors (binary safe, never formatted strings);
//   * Lua scripts by EVALSHA, loading the script on NOSCRIPT.
// Connecting is lazy: create() succeeds while Redis is down, and the client
// starts working when Redis comes up.
//
// SIGPIPE: a write to a connection Redis has closed raises SIGPIPE, which
// would kill the process. The first create() sets SIGPIPE to SIG_IGN if it
// still has its default action (an application's own handler is left alone).
//
// Thread safety: RedisClient is safe to use from any number of threads.
//
// Example:
//   auto redis = herdguard::RedisClient::create({.url = "redis://127.0.0.1:6379/0"});
//   if (!redis) die(redis.error().to_string());      // a malformed URL
//   auto reply = (*redis)->command({"SET", "k", std::string_view("\0v", 2)});
//   if (!reply) log(reply.error().to_string());       // "backend: redis ...: connection refused"
//   static const herdguard::RedisScript kIncrBy{"return redis.call('INCRBY', KEYS[1], ARGV[1])"};
//   auto n = (*redis)->eval(kIncrBy, {"counter"}, {"5"});   // n->integer == 5
#pragma once

#include <atomic>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "herdguard/clock.h"
#include "herdguard/result.h"

namespace herdguard {

// Where a Redis server (or a Redis Cluster) is and how to log in.
struct RedisUrl {
  enum class Transport { kTcp, kUnix, kCluster, kSentinel };
  struct Node {
    std::string host{};
    int port = 6379;
  };
  Transport transport = Transport::kTcp;
  std::string host{};  // kTcp; kCluster, kSentinel: the first seed's
  int port = 6379;     // kTcp; kCluster, kSentinel: the first seed's; 1..65535
  // kCluster: the nodes first asked for the slot map; kSentinel: the
  // Sentinels asked where the primary is.
  std::vector<Node> seeds{};
  std::string master_name{};  // kSentinel only: the primary's name at the Sentinels
  std::string socket_path{};  // kUnix only, absolute
  std::string user{};         // ACL user; empty means the default user
  std::string password{};     // empty means no AUTH
  int db = 0;                 // SELECTed on connect, >= 0

  // Parses `redis://[user:password@]host[:port][/db]` (also `[user@]`,
  // `:password@`, IPv6 hosts in brackets) and
  // `unix:///abs/path.sock[?db=N][&password=P][&user=U]` and
  // `redis-cluster://[user:password@]host[:port][,host[:port]...]` (seed
  // nodes of a Redis Cluster, at most 64; database 0 only) and
  // `redis-sentinel://[user:password@]host[:port][,host[:port]...]/NAME[/db]`
  // (Sentinels, port 26379 by default, watching the primary NAME; user and
  // password are the data nodes'). User and password may be percent-encoded. Errors:
  // kInvalidArgument naming what is wrong (scheme, port, db, empty host, relative socket path,
  // ...). Pure; thread-safe.
  static Result<RedisUrl> parse(std::string_view url);

  // The URL with the password replaced by "***", for logs and errors.
  std::string redacted() const;
};

struct RedisOptions {
  // See RedisUrl::parse. REQUIRES: parses.
  std::string url = "redis://127.0.0.1:6379/0";
  // Every duration below is refused past 1 h (validate() names the field).
  // Bound on establishing a connection (TCP connect / unix connect + AUTH +
  // SELECT). REQUIRES: > 0.
  Duration connect_timeout = std::chrono::milliseconds(250);
  // Bound on one command's round trip. REQUIRES: > 0.
  Duration command_timeout = std::chrono::milliseconds(250);
  // How long a caller waits for a free pooled connection when all
  // pool_size are busy; zero means command_timeout. REQUIRES: >= 0.
  Duration pool_wait_timeout = Duration::zero();
  // Most connections open at once. REQUIRES: >= 1.
  std::size_t pool_size = 8;
  // After a failed connect, new connects are not tried for a backoff that
  // starts here and doubles (with jitter) up to reconnect_backoff_max;
  // commands fail fast meanwhile. A success resets it. REQUIRES: 0 <= min <= max.
  Duration reconnect_backoff_min = std::chrono::milliseconds(50);
  Duration reconnect_backoff_max = std::chrono::seconds(2);

  // Returns kInvalidArgument naming the first bad field (including the URL).
  Result<void> validate() const;
};

// One reply. Error replies are not RedisReply values: they become errors.
struct RedisReply {
  enum class Type { kNil, kString, kStatus, kInteger, kArray };
  Type type = Type::kNil;
  std::string str{};                   // kString (bulk, binary-safe) and kStatus
  long long integer = 0;               // kInteger
  std::vector<RedisReply> elements{};  // kArray

  bool is_nil() const noexcept { return type == Type::kNil; }
};

// A script's reply, and how many replicas had acknowledged its writes when
// WAIT returned (RedisClient::eval_replicated).
struct RedisReplicatedReply {
  RedisReply reply;
  long long replicas = 0;
};

// A Lua script. Its SHA1 is learned from the server (SCRIPT LOAD) on first
// use and remembered, so later calls are one EVALSHA round trip. No SHA1 is
// computed here: that would need a crypto library for one digest.
// Declare scripts as long-lived constants; safe to share between threads.
class RedisScript {
 public:
  explicit RedisScript(std::string source) : source_(std::move(source)) {}
  const std::string& source() const noexcept { return source_; }

 private:
  friend class RedisClient;
  std::string source_;
  // The SHA1 reported by SCRIPT LOAD, empty until then. Guarded by sha1_mutex_.
  mutable std::mutex sha1_mutex_;
  mutable std::string sha1_;
};

struct RedisClientStats {
  std::uint64_t commands = 0;          // commands attempted
  std::uint64_t errors = 0;            // commands that returned an error (any cause)
  std::uint64_t connects = 0;          // connections established
  std::uint64_t connect_failures = 0;  // connection attempts that failed
  std::uint64_t pool_timeouts = 0;     // callers that found no free connection in time
  std::uint64_t script_loads = 0;      // NOSCRIPT → SCRIPT LOAD fallbacks
  std::uint64_t redirects = 0;         // Redis Cluster MOVED and ASK redirects followed
  std::uint64_t slot_map_refreshes =
      0;  // Cluster: CLUSTER SLOTS asked; Sentinel: primary looked up
};

class RedisClient {
 public:
  // Errors: kInvalidArgument from options.validate(). Does not connect.
  static Result<std::unique_ptr<RedisClient>> create(RedisOptions options);
  ~RedisClient();
  RedisClient(const RedisClient&) = delete;
  RedisClient& operator=(const RedisClient&) = delete;

  // Sends one command (argv[0] is the command name) and returns its reply.
  // For a cluster, to the owner of argv[1]'s slot (see the file comment);
  // multi-key commands other than MGET must keep their keys in one slot.
  // Errors: kBackend for a Redis error reply (message carries Redis's text,
  // e.g. "WRONGTYPE ..."), a failed connection, or a closed connection;
  // kTimeout when the command exceeded command_timeout or no pooled
  // connection freed up within pool_wait_timeout (a timed-out connection is
  // discarded, never reused
  // half-read). A connection that hit an I/O error or timeout is closed, and
  // the next command opens a new one (subject to the reconnect backoff).
  Result<RedisReply> command(std::span<const std::string_view> argv);
  Result<RedisReply> command(std::initializer_list<std::string_view> argv) {
    return command(std::span<const std::string_view>(argv.begin(), argv.size()));
  }
  // command() bounded by the caller's `deadline` as well: the pool wait ends
  // at the earlier of pool_wait_timeout and `deadline`, the round trip at the
  // earlier of command_timeout and `deadline`. A deadline already passed
  // returns kTimeout without sending. A caller's deadline running out does
  // not suspend the client (only a full command_timeout does).
  Result<RedisReply> command(std::span<const std::string_view> argv, Deadline deadline);
  Result<RedisReply> command(std::initializer_list<std::string_view> argv, Deadline deadline) {
    return command(std::span<const std::string_view>(argv.begin(), argv.size()), deadline);
  }

  // Runs `script` by EVALSHA with `keys` and `args`; on NOSCRIPT loads it
  // (SCRIPT LOAD) and retries once. Errors as command(), and, for a
  // cluster, kInvalidArgument when `keys` are not all in one slot.
  //
  // Retries: a command is sent again (once, on a fresh connection) only when
  // it provably never reached Redis whole — the pooled connection had been
  // closed before or while it was written. When the connection fails after
  // the write (reply lost, timeout), the command may have run and the error
  // is returned: make scripts that must not run twice idempotent, as the
  // fleet lock's acquire script is (per token).
  Result<RedisReply> eval(const RedisScript& script, std::span<const std::string_view> keys,
                          std::span<const std::string_view> args);
  Result<RedisReply> eval(const RedisScript& script, std::initializer_list<std::string_view> keys,
                          std::initializer_list<std::string_view> args) {
    return eval(script, std::span<const std::string_view>(keys.begin(), keys.size()),
                std::span<const std::string_view>(args.begin(), args.size()));
  }
  // eval() bounded by `deadline` as command(argv, deadline) is.
  Result<RedisReply> eval(const RedisScript& script, std::span<const std::string_view> keys,
                          std::span<const std::string_view> args, Deadline deadline);
  Result<RedisReply> eval(const RedisScript& script, std::initializer_list<std::string_view> keys,
                          std::initializer_list<std::string_view> args, Deadline deadline) {
    return eval(script, std::span<const std::string_view>(keys.begin(), keys.size()),
                std::span<const std::string_view>(args.begin(), args.size()), deadline);
  }

  // eval(), then `WAIT replicas timeout` on the same connection (WAIT
  // counts the replicas that acknowledged that connection's writes): for
  // a write that should survive a failover to an asynchronous replica.
  // Returns the script's reply and the replicas that acknowledged it, which
  // may be fewer than asked when `timeout` passed first (the write stands
  // on the primary either way). Errors: as eval(); kInvalidArgument for
  // replicas < 1 or a timeout outside (0, 1 h]. Not bounded by a caller's
  // deadline: it may take command_timeout plus `timeout`.
  Result<RedisReplicatedReply> eval_replicated(const RedisScript& script,
                                               std::span<const std::string_view> keys,
                                               std::span<const std::string_view> args, int replicas,
                                               Duration timeout);

  // The parsed URL (for components that open their own dedicated
  // connection, like the pub/sub subscriber) and the options.
  const RedisUrl& url() const noexcept;
  const RedisOptions& options() const noexcept;

  // The URL of the server that owns `key`: in a Redis Cluster the primary
  // of its slot (with this client's user and password), behind Sentinels
  // the primary they name, otherwise url() itself. For a dedicated
  // connection to that server, like the sharded subscriber's
  // (redis_notifier.h). May load the slot map or ask the Sentinels.
  // Errors: kBackend when no node answers or the slot has no known
  // primary; kTimeout when `deadline` passes first. Thread-safe.
  Result<RedisUrl> node_url(std::string_view key, Deadline deadline);

  RedisClientStats stats() const;

 private:
  struct Impl;
  explicit RedisClient(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace herdguard
