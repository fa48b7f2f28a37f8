// RedisClient: hiredis connections (redis/hiredis_connection.h) behind a
// bounded pool.
//
// What this file adds to a connection: pooling, reconnect backoff, the
// suspension after a timeout (a hung Redis costs one timeout per backoff
// period), per-call deadlines, the retry of a command that provably never
// reached Redis, and the EVALSHA → NOSCRIPT → SCRIPT LOAD dance.
#include "herdguard/redis_client.h"

#include <fmt/format.h>
#include <signal.h>

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <vector>

#include "core/random.h"
#include "redis/hiredis_connection.h"

namespace herdguard {
namespace {

constexpr auto kRelaxed = std::memory_order_relaxed;
// How recently a pooled connection must have finished a command to be
// reused without the liveness poll (see borrow()).
constexpr std::chrono::milliseconds kTrustedIdle{10};
using SteadyClock = std::chrono::steady_clock;
using internal::RedisConnection;
using internal::SendFailure;

long long to_ms(Duration d) {
  return static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(d).count());
}

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

}  // namespace

struct RedisClient::Impl {
  Impl(RedisOptions o, RedisUrl u)
      : options(std::move(o)), url(std::move(u)), where(fmt::format("redis {}", url.redacted())) {}

  const RedisOptions options;
  const RedisUrl url;
  const std::string where;

  std::mutex mutex;
  std::condition_variable freed;  // signalled when a connection or a slot frees up
  // Guarded by mutex. Invariant: idle.size() <= open <= options.pool_size;
  // `open` counts idle, borrowed and being-connected connections, so the pool
  // never exceeds pool_size connections to Redis.
  std::vector<RedisConnection> idle;
  std::size_t open = 0;
  // Reconnect backoff, guarded by mutex: no connect is tried before
  // `next_connect`; `backoff` is the next wait after a failure.
  SteadyClock::time_point next_connect{};
  Duration backoff{};
  std::string last_connect_error;
  // A Redis that accepts connections but does not answer (overloaded,
  // stopped) would cost every caller command_timeout. After a full
  // command_timeout, commands fail fast until `suspended_until` (the same
  // backoff schedule); a successful command ends it. Guarded by mutex;
  // `suspended` mirrors "timeout_backoff != 0" so the hot path reads it
  // without the lock.
  SteadyClock::time_point suspended_until{};
  Duration timeout_backoff{};
  std::atomic<bool> suspended{false};

  std::atomic<std::uint64_t> commands{0}, errors{0}, connects{0}, connect_failures{0},
      pool_timeouts{0}, script_loads{0};

  Duration pool_wait() const {
    return options.pool_wait_timeout > Duration::zero() ? options.pool_wait_timeout
                                                        : options.command_timeout;
  }

  // A borrowed connection; returns itself to the pool when destroyed, unless
  // discard() was called (a connection that failed mid-command may hold half
  // a reply: never reused).
  class Lease {
   public:
    Lease(Impl& pool, RedisConnection connection, bool reused)
        : pool_(&pool), connection_(std::move(connection)), reused_(reused) {}
    Lease(Lease&& other) noexcept
        : pool_(std::exchange(other.pool_, nullptr)),
          connection_(std::move(other.connection_)),
          reused_(other.reused_),
          reusable_(other.reusable_) {}
    Lease& operator=(Lease&&) = delete;
    ~Lease() {
      if (pool_ != nullptr) pool_->give_back(std::move(*connection_), reusable_);
    }
    RedisConnection& operator*() { return *connection_; }
    RedisConnection* operator->() { return &*connection_; }
    bool reused() const { return reused_; }
    void discard() { reusable_ = false; }

   private:
    Impl* pool_;
    std::optional<RedisConnection> connection_;
    bool reused_;
    bool reusable_ = true;
  };

  // A connection for one command, or an error: kBackend while reconnects are
  // backing off or Redis is suspended, kTimeout when none frees up before
  // `until`. An idle connection that Redis has closed is dropped here, before
  // a command is written to it.
  Result<Lease> borrow(SteadyClock::time_point until) {
    std::unique_lock lock(mutex);
    for (;;) {
      if (const auto now = SteadyClock::now(); now < suspended_until) {
        return make_error(ErrorKind::kBackend, fmt::format("{} is timing out, not used for {} ms",
                                                           where, to_ms(suspended_until - now)));
      }
      const auto now = SteadyClock::now();
      while (!idle.empty()) {
        RedisConnection c = std::move(idle.back());
        idle.pop_back();
        // The poll(2) costs a syscall per command (a quarter of a GET's CPU
        // at 8 threads), so a connection back from a command less than
        // kTrustedIdle ago skips it: Redis cannot have died and restarted
        // since, and a crash that recent fails in-flight commands anyway.
        if (now - c.idle_since() < kTrustedIdle || c.looks_alive())
          return Lease(*this, std::move(c), true);
        --open;  // closed by Redis while idle: freed when `c` goes out of scope
      }
      if (open < options.pool_size) {
        const auto now = SteadyClock::now();
        if (now < next_connect) {
          return make_error(ErrorKind::kBackend,
                            fmt::format("{} unavailable, retrying in {} ms: {}", where,
                                        to_ms(next_connect - now), last_connect_error));
        }
        ++open;
        lock.unlock();
        const Duration connect_within =
            std::min<Duration>(options.connect_timeout, until - SteadyClock::now());
        auto c = RedisConnection::open(
            url, std::max<Duration>(connect_within, std::chrono::milliseconds(1)),
            options.command_timeout, where);
        lock.lock();
        if (!c) {
          --open;
          connect_failures.fetch_add(1, kRelaxed);
          backoff = backoff == Duration::zero()
                        ? options.reconnect_backoff_min
                        : std::min<Duration>(backoff * 2, options.reconnect_backoff_max);
          const auto wait =
              std::chrono::duration_cast<Duration>(backoff * internal::uniform_real(0.5, 1.0));
          next_connect = SteadyClock::now() + wait;
          last_connect_error = c.error().message;
          freed.notify_one();
          return std::unexpected(c.error());
        }
        connects.fetch_add(1, kRelaxed);
        backoff = Duration::zero();
        next_connect = {};
        return Lease(*this, std::move(*c), false);
      }
      if (freed.wait_until(lock, until) == std::cv_status::timeout && idle.empty() &&
          open >= options.pool_size) {
        pool_timeouts.fetch_add(1, kRelaxed);
        return make_error(ErrorKind::kTimeout,
                          fmt::format("{}: no free connection in time (pool_size {}, "
                                      "pool_wait_timeout {} ms, or the caller's deadline)",
                                      where, options.pool_size, to_ms(pool_wait())));
      }
    }
  }

  void give_back(RedisConnection c, bool reusable) {
    {
      std::lock_guard lock(mutex);
      if (reusable) {
        c.mark_idle(SteadyClock::now());
        idle.push_back(std::move(c));
      } else {
        --open;
      }
    }
    freed.notify_one();
    // A discarded connection is freed here, outside the lock.
  }

  // Runs one command on one borrowed connection, within `deadline` when given.
  Result<RedisReply> run(std::span<const std::string_view> argv, std::optional<Deadline> deadline,
                         SendFailure* failure, bool* reused) {
    *failure = SendFailure::kNotSent;
    *reused = false;
    const std::string_view name = argv.empty() ? std::string_view("?") : argv[0];
    auto pool_until = SteadyClock::now() + pool_wait();
    Duration timeout = options.command_timeout;
    if (deadline) {
      if (deadline->expired()) {
        return make_error(
            ErrorKind::kTimeout,
            fmt::format("{}: {} not sent: the caller's deadline passed", where, name));
      }
      pool_until = std::min(pool_until, deadline->when());
    }
    auto lease = borrow(pool_until);
    if (!lease) return std::unexpected(lease.error());
    *reused = lease->reused();
    if (deadline) {
      timeout = std::min(timeout, deadline->remaining());
      if (timeout <= Duration::zero()) {
        return make_error(
            ErrorKind::kTimeout,
            fmt::format("{}: {} not sent: the caller's deadline passed", where, name));
      }
    }
    auto reply = (**lease).run(argv, timeout, failure);
    if (*failure == SendFailure::kNotSent || *failure == SendFailure::kTimeout ||
        *failure == SendFailure::kLost) {
      lease->discard();
    }
    // Only a full command_timeout is evidence that Redis hangs; a caller's
    // short deadline running out is not.
    if (*failure == SendFailure::kTimeout && timeout >= options.command_timeout) suspend();
    if (reply && suspended.load(std::memory_order_relaxed)) resume();
    return reply;
  }

  void suspend() {
    std::lock_guard lock(mutex);
    timeout_backoff = timeout_backoff == Duration::zero()
                          ? options.reconnect_backoff_min
                          : std::min<Duration>(timeout_backoff * 2, options.reconnect_backoff_max);
    const auto wait =
        std::chrono::duration_cast<Duration>(timeout_backoff * internal::uniform_real(0.5, 1.0));
    suspended_until = SteadyClock::now() + wait;
    suspended.store(true, std::memory_order_relaxed);
  }

  void resume() {
    std::lock_guard lock(mutex);
    timeout_backoff = Duration::zero();
    suspended_until = {};
    suspended.store(false, std::memory_order_relaxed);
  }

  Result<RedisReply> command(std::span<const std::string_view> argv,
                             std::optional<Deadline> deadline) {
    commands.fetch_add(1, kRelaxed);
    SendFailure failure;
    bool reused;
    auto reply = run(argv, deadline, &failure, &reused);
    // A reused connection that broke before the command was fully written
    // (Redis restarted under it): the command never ran, so sending it again
    // on a fresh connection is safe for any command. After the write, it may
    // have run, and nothing is repeated here (see redis_lock.h for how the
    // lock's acquire copes).
    if (!reply && failure == SendFailure::kNotSent && reused) {
      reply = run(argv, deadline, &failure, &reused);
    }
    if (!reply) errors.fetch_add(1, kRelaxed);
    return reply;
  }

  Result<RedisReply> eval(const RedisScript& script, std::span<const std::string_view> keys,
                          std::span<const std::string_view> args, std::optional<Deadline> deadline);
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
                                           std::optional<Deadline> deadline) {
  auto load = [&]() -> Result<std::string> {
    script_loads.fetch_add(1, kRelaxed);
    const std::string_view load_argv[] = {"SCRIPT", "LOAD", script.source()};
    auto loaded = command(load_argv, deadline);
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
  auto reply = command(argv, deadline);
  if (!reply && reply.error().message.find("NOSCRIPT") != std::string::npos) {
    // The server forgot the script (restart, SCRIPT FLUSH): load it again.
    // NOSCRIPT is an error reply: the script did not run.
    auto loaded = load();
    if (!loaded) return std::unexpected(loaded.error());
    sha1 = std::move(*loaded);
    argv[1] = sha1;
    reply = command(argv, deadline);
  }
  return reply;
}

const RedisUrl& RedisClient::url() const noexcept { return impl_->url; }
const RedisOptions& RedisClient::options() const noexcept { return impl_->options; }

RedisClientStats RedisClient::stats() const {
  return RedisClientStats{.commands = impl_->commands.load(kRelaxed),
                          .errors = impl_->errors.load(kRelaxed),
                          .connects = impl_->connects.load(kRelaxed),
                          .connect_failures = impl_->connect_failures.load(kRelaxed),
                          .pool_timeouts = impl_->pool_timeouts.load(kRelaxed),
                          .script_loads = impl_->script_loads.load(kRelaxed)};
}

}  // namespace herdguard
