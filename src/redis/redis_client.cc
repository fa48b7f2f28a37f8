// RedisClient: one bounded pool of hiredis connections (redis/node_pool.h)
// for a standalone server, or a router over one pool per node for Redis
// Cluster (redis/node_router.h).
//
// What this file adds: the retry of a command that provably never reached
// Redis, the routing of a command by its key, MGET split by slot for a
// cluster, and the EVALSHA → NOSCRIPT → SCRIPT LOAD dance.
#include "herdguard/redis_client.h"

#include <fmt/format.h>
#include <signal.h>

#include <algorithm>
#include <cctype>
#include <map>
#include <mutex>
#include <optional>
#include <vector>

#include "redis/cluster_slot.h"
#include "redis/node_pool.h"
#include "redis/node_router.h"

namespace herdguard {
namespace {

constexpr auto kRelaxed = std::memory_order_relaxed;

// hiredis writes with write(2): a write to a connection Redis has closed
// raises SIGPIPE, whose default action kills the process. Ignore it, unless
// the application installed a handler of its own.
void ignore_sigpipe_once() {
  static const bool done = [] {
    struct sigaction current {};
    if (::sigaction(SIGPIPE, nullptr, &current) == 0 && current.sa_handler == SIG_DFL) {
      struct sigaction ignore {};
      ignore.sa_handler = SIG_IGN;
      ::sigemptyset(&ignore.sa_mask);
      (void)::sigaction(SIGPIPE, &ignore, nullptr);
    }
    return true;
  }();
  (void)done;
}

// Which command names take no key (sent to any node of a cluster). Every
// other command's first key is argv[1], except the EVAL family's (argv[3],
// after the script and numkeys).
bool is_keyless(std::string_view name) {
  static constexpr std::string_view kKeyless[] = {
      "PING",     "ECHO",    "PUBLISH", "SCRIPT", "TIME",    "INFO", "CLUSTER", "DBSIZE",
      "FLUSHALL", "FLUSHDB", "CONFIG",  "CLIENT", "COMMAND", "WAIT", "ASKING",  "READONLY"};
  for (auto k : kKeyless) {
    if (name.size() == k.size() &&
        std::equal(name.begin(), name.end(), k.begin(),
                   [](char a, char b) { return std::toupper(static_cast<unsigned char>(a)) == b; }))
      return true;
  }
  return false;
}

bool names(std::string_view name, std::string_view upper) {
  return name.size() == upper.size() &&
         std::equal(name.begin(), name.end(), upper.begin(), [](char a, char b) {
           return std::toupper(static_cast<unsigned char>(a)) == b;
         });
}

// The slot a command must run in, or nullopt for keyless commands.
std::optional<std::uint16_t> command_slot(std::span<const std::string_view> argv) {
  if (argv.size() < 2 || is_keyless(argv[0])) return std::nullopt;
  if (names(argv[0], "EVAL") || names(argv[0], "EVALSHA") || names(argv[0], "EVAL_RO") ||
      names(argv[0], "EVALSHA_RO") || names(argv[0], "FCALL")) {
    if (argv.size() < 4 || argv[2] == "0") return std::nullopt;
    return internal::cluster_slot(argv[3]);
  }
  return internal::cluster_slot(argv[1]);
}

}  // namespace

struct RedisClient::Impl {
  Impl(RedisOptions o, RedisUrl u)
      : options(std::move(o)), url(std::move(u)), where(fmt::format("redis {}", url.redacted())) {
    if (url.transport == RedisUrl::Transport::kCluster ||
        url.transport == RedisUrl::Transport::kSentinel) {
      cluster = url.transport == RedisUrl::Transport::kCluster;
      router = std::make_unique<internal::NodeRouter>(url, options, counters);
    } else {
      node = std::make_unique<internal::NodePool>(url, options, counters);
    }
  }

  const RedisOptions options;
  const RedisUrl url;
  const std::string where;
  internal::PoolCounters counters;
  // Exactly one of the two: a standalone server's pool, or the router of a
  // cluster or of a primary found through Sentinels.
  std::unique_ptr<internal::NodePool> node;
  std::unique_ptr<internal::NodeRouter> router;
  bool cluster = false;  // keys must be routed by slot

  std::atomic<std::uint64_t> commands{0}, errors{0}, script_loads{0};

  // One command on the standalone server, or routed by its key in a cluster.
  // With `then`, its follow-up runs on the same connection and its reply
  // lands in then->reply.
  struct Then {
    internal::FollowUp follow_up;
    std::optional<Result<RedisReply>> reply{};
  };

  Result<RedisReply> dispatch(std::span<const std::string_view> argv,
                              std::optional<Deadline> deadline,
                              std::optional<std::uint16_t> slot_hint = std::nullopt,
                              Then* then = nullptr) {
    const internal::FollowUp* follow_up = then ? &then->follow_up : nullptr;
    if (router) {
      if (cluster && argv.size() > 2 && names(argv[0], "MGET") && !then)
        return cluster_mget(argv, deadline);
      return router->run(argv, slot_hint ? slot_hint : command_slot(argv), deadline, follow_up,
                         then ? &then->reply : nullptr);
    }
    internal::RunOutcome outcome;
    auto reply = node->run(argv, deadline, outcome, false, follow_up);
    // A reused connection that broke before the command was fully written
    // (Redis restarted under it): the command never ran, so sending it again
    // on a fresh connection is safe for any command. After the write, it may
    // have run, and nothing is repeated here (see redis_lock.h for how the
    // lock's acquire copes).
    if (!reply && outcome.failure == internal::SendFailure::kNotSent && outcome.reused) {
      reply = node->run(argv, deadline, outcome, false, follow_up);
    }
    if (then) then->reply = std::move(outcome.follow_up);
    return reply;
  }

  // MGET over a cluster: one MGET per slot (Redis refuses keys of several
  // slots in one command), answers put back in the caller's order.
  Result<RedisReply> cluster_mget(std::span<const std::string_view> argv,
                                  std::optional<Deadline> deadline) {
    std::map<std::uint16_t, std::vector<std::size_t>> by_slot;  // argv indices per slot
    for (std::size_t i = 1; i < argv.size(); ++i)
      by_slot[internal::cluster_slot(argv[i])].push_back(i);
    RedisReply out{.type = RedisReply::Type::kArray};
    out.elements.resize(argv.size() - 1);
    std::vector<std::string_view> part;
    for (const auto& [slot, indices] : by_slot) {
      part.assign({argv[0]});
      for (auto i : indices) part.push_back(argv[i]);
      auto reply = router->run(part, slot, deadline);
      if (!reply) return reply;
      if (reply->type != RedisReply::Type::kArray || reply->elements.size() != indices.size()) {
        return make_error(ErrorKind::kBackend, where + ": MGET answered the wrong shape");
      }
      for (std::size_t j = 0; j < indices.size(); ++j) {
        out.elements[indices[j] - 1] = std::move(reply->elements[j]);
      }
    }
    return out;
  }

  Result<RedisReply> command(std::span<const std::string_view> argv,
                             std::optional<Deadline> deadline,
                             std::optional<std::uint16_t> slot_hint = std::nullopt,
                             Then* then = nullptr) {
    commands.fetch_add(1, kRelaxed);
    auto reply = dispatch(argv, deadline, slot_hint, then);
    if (!reply) errors.fetch_add(1, kRelaxed);
    return reply;
  }

  Result<RedisReply> eval(const RedisScript& script, std::span<const std::string_view> keys,
                          std::span<const std::string_view> args, std::optional<Deadline> deadline,
                          Then* then = nullptr);
};

Result<std::unique_ptr<RedisClient>> RedisClient::create(RedisOptions options) {
  if (auto valid = options.validate(); !valid) return std::unexpected(valid.error());
  auto url = RedisUrl::parse(options.url);
  if (!url) return std::unexpected(url.error());
  ignore_sigpipe_once();
  return std::unique_ptr<RedisClient>(
      new RedisClient(std::make_unique<Impl>(std::move(options), std::move(*url))));
}

RedisClient::RedisClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
RedisClient::~RedisClient() = default;

Result<RedisReply> RedisClient::command(std::span<const std::string_view> argv) {
  return impl_->command(argv, std::nullopt);
}

Result<RedisReply> RedisClient::command(std::span<const std::string_view> argv, Deadline deadline) {
  return impl_->command(argv, deadline);
}

Result<RedisReply> RedisClient::eval(const RedisScript& script,
                                     std::span<const std::string_view> keys,
                                     std::span<const std::string_view> args) {
  return impl_->eval(script, keys, args, std::nullopt);
}

Result<RedisReply> RedisClient::eval(const RedisScript& script,
                                     std::span<const std::string_view> keys,
                                     std::span<const std::string_view> args, Deadline deadline) {
  return impl_->eval(script, keys, args, deadline);
}

Result<RedisReply> RedisClient::Impl::eval(const RedisScript& script,
                                           std::span<const std::string_view> keys,
                                           std::span<const std::string_view> args,
                                           std::optional<Deadline> deadline, Then* then) {
  // In a cluster every key of a script must be in one slot, and the script
  // must be loaded on the node that owns it.
  std::optional<std::uint16_t> slot;
  if (cluster && !keys.empty()) {
    slot = internal::cluster_slot(keys[0]);
    for (auto k : keys) {
      if (internal::cluster_slot(k) != *slot) {
        return make_error(ErrorKind::kInvalidArgument,
                          fmt::format("{}: a script's keys are in different cluster slots "
                                      "(they must share one hash tag)",
                                      where));
      }
    }
  }
  auto load = [&]() -> Result<std::string> {
    script_loads.fetch_add(1, kRelaxed);
    const std::string_view load_argv[] = {"SCRIPT", "LOAD", script.source()};
    auto loaded = command(load_argv, deadline, slot);
    if (!loaded) return std::unexpected(loaded.error());
    if (loaded->type != RedisReply::Type::kString) {
      return make_error(ErrorKind::kBackend, where + ": SCRIPT LOAD returned no SHA1");
    }
    std::lock_guard lock(script.sha1_mutex_);
    script.sha1_ = loaded->str;
    return loaded->str;
  };
  std::string sha1;
  {
    std::lock_guard lock(script.sha1_mutex_);
    sha1 = script.sha1_;
  }
  if (sha1.empty()) {
    auto loaded = load();
    if (!loaded) return std::unexpected(loaded.error());
    sha1 = std::move(*loaded);
  }
  const std::string numkeys = std::to_string(keys.size());
  std::vector<std::string_view> argv;
  argv.reserve(3 + keys.size() + args.size());
  argv.push_back("EVALSHA");
  argv.push_back(sha1);
  argv.push_back(numkeys);
  argv.insert(argv.end(), keys.begin(), keys.end());
  argv.insert(argv.end(), args.begin(), args.end());
  auto reply = command(argv, deadline, slot, then);
  if (!reply && reply.error().message.find("NOSCRIPT") != std::string::npos) {
    // The server forgot the script (restart, SCRIPT FLUSH): load it again.
    // NOSCRIPT is an error reply: the script did not run.
    if (router) {
      // The node that answered may not be the slot's owner in the map (an
      // ASK during a migration sent it elsewhere): EVAL with the source goes
      // where EVALSHA went, redirects included, and leaves the script cached
      // there.
      script_loads.fetch_add(1, kRelaxed);
      argv[0] = "EVAL";
      argv[1] = script.source();
      return command(argv, deadline, slot, then);
    }
    auto loaded = load();
    if (!loaded) return std::unexpected(loaded.error());
    sha1 = std::move(*loaded);
    argv[1] = sha1;
    reply = command(argv, deadline, slot, then);
  }
  return reply;
}

Result<RedisReplicatedReply> RedisClient::eval_replicated(const RedisScript& script,
                                                          std::span<const std::string_view> keys,
                                                          std::span<const std::string_view> args,
                                                          int replicas, Duration timeout) {
  if (replicas < 1 || timeout <= Duration::zero() || timeout > std::chrono::hours(1)) {
    return make_error(ErrorKind::kInvalidArgument,
                      "eval_replicated: replicas must be >= 1 and timeout in (0, 1 h]");
  }
  const std::string count = std::to_string(replicas);
  const std::string ms = std::to_string(std::max<long long>(
      1, std::chrono::duration_cast<std::chrono::milliseconds>(timeout).count()));
  const std::string_view wait_argv[] = {"WAIT", count, ms};
  // The socket waits for WAIT's own timeout plus a command's round trip.
  Impl::Then then{
      .follow_up = {.argv = wait_argv, .timeout = timeout + impl_->options.command_timeout}};
  auto reply = impl_->eval(script, keys, args, std::nullopt, &then);
  if (!reply) return std::unexpected(reply.error());
  if (!then.reply) {
    return make_error(ErrorKind::kInternal, impl_->where + ": WAIT was not sent");
  }
  if (!*then.reply) return std::unexpected(then.reply->error());
  if ((*then.reply)->type != RedisReply::Type::kInteger) {
    return make_error(ErrorKind::kBackend, impl_->where + ": WAIT answered no count");
  }
  return RedisReplicatedReply{.reply = std::move(*reply), .replicas = (*then.reply)->integer};
}

const RedisUrl& RedisClient::url() const noexcept { return impl_->url; }
const RedisOptions& RedisClient::options() const noexcept { return impl_->options; }

Result<RedisUrl> RedisClient::node_url(std::string_view key, Deadline deadline) {
  if (!impl_->router) return impl_->url;
  return impl_->router->owner_url(internal::cluster_slot(key), deadline);
}

RedisClientStats RedisClient::stats() const {
  return RedisClientStats{.commands = impl_->commands.load(kRelaxed),
                          .errors = impl_->errors.load(kRelaxed),
                          .connects = impl_->counters.connects.load(kRelaxed),
                          .connect_failures = impl_->counters.connect_failures.load(kRelaxed),
                          .pool_timeouts = impl_->counters.pool_timeouts.load(kRelaxed),
                          .script_loads = impl_->script_loads.load(kRelaxed),
                          .redirects = impl_->router ? impl_->router->redirects() : 0,
                          .slot_map_refreshes = impl_->router ? impl_->router->refreshes() : 0};
}

}  // namespace herdguard
