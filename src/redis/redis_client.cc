// RedisClient: hiredis's blocking API behind a bounded pool.
//
// hiredis gives one connection (redisContext) that one thread may use at a
// time, with connect and I/O timeouts. What it does not do, and this file
// does: pooling, reconnect backoff, AUTH/SELECT on connect, reply
// translation into Result, and the EVALSHA → NOSCRIPT → SCRIPT LOAD dance.
#include "herdguard/redis_client.h"

#include <fmt/format.h>
#include <hiredis/hiredis.h>
#include <signal.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <mutex>
#include <vector>

#include "core/random.h"

namespace herdguard {
namespace {

constexpr auto kRelaxed = std::memory_order_relaxed;
using SteadyClock = std::chrono::steady_clock;

timeval to_timeval(Duration d) {
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(d).count();
  return timeval{static_cast<time_t>(us / 1'000'000), static_cast<suseconds_t>(us % 1'000'000)};
}

long long to_ms(Duration d) {
  return static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(d).count());
}

RedisReply translate(const redisReply* r) {
  RedisReply out;
  switch (r->type) {
    case REDIS_REPLY_STRING:
      out.type = RedisReply::Type::kString;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_STATUS:
      out.type = RedisReply::Type::kStatus;
      out.str.assign(r->str, r->len);
      break;
    case REDIS_REPLY_INTEGER:
      out.type = RedisReply::Type::kInteger;
      out.integer = r->integer;
      break;
    case REDIS_REPLY_ARRAY:
      out.type = RedisReply::Type::kArray;
      out.elements.reserve(r->elements);
      for (std::size_t i = 0; i < r->elements; ++i)
        out.elements.push_back(translate(r->element[i]));
      break;
    default:  // REDIS_REPLY_NIL (errors are handled before translation)
      out.type = RedisReply::Type::kNil;
      break;
  }
  return out;
}

// How a command failed on a connection, to decide what to do with it.
enum class Failure { kNone, kErrorReply, kTimeout, kBroken };

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
  Impl(RedisOptions o, RedisUrl u) : options(std::move(o)), url(std::move(u)) {}
  ~Impl() {
    for (redisContext* c : idle) redisFree(c);
  }

  const RedisOptions options;
  const RedisUrl url;

  std::mutex mutex;
  std::condition_variable freed;  // signalled when a connection or a slot frees up
  // Guarded by mutex. Invariant: idle.size() <= open <= options.pool_size;
  // `open` counts idle, borrowed and being-connected connections, so the pool
  // never exceeds pool_size connections to Redis.
  std::vector<redisContext*> idle;
  std::size_t open = 0;
  // Reconnect backoff, guarded by mutex: no connect is tried before
  // `next_connect`; `backoff` is the next wait after a failure.
  SteadyClock::time_point next_connect{};
  Duration backoff{};
  std::string last_connect_error;
  // A Redis that accepts connections but does not answer (overloaded,
  // stopped) would cost every caller command_timeout. After a timeout,
  // commands fail fast until `suspended_until` (the same backoff schedule);
  // a successful command ends it. Guarded by mutex; `suspended` mirrors
  // "timeout_backoff != 0" so the hot path reads it without the lock.
  SteadyClock::time_point suspended_until{};
  Duration timeout_backoff{};
  std::atomic<bool> suspended{false};

  std::atomic<std::uint64_t> commands{0}, errors{0}, connects{0}, connect_failures{0},
      pool_timeouts{0}, script_loads{0};

  Duration pool_wait() const {
    return options.pool_wait_timeout > Duration::zero() ? options.pool_wait_timeout
                                                        : options.command_timeout;
  }

  std::string where() const { return fmt::format("redis {}", url.redacted()); }

  // Opens, authenticates and selects. Called without the mutex.
  Result<redisContext*> connect() {
    const timeval tv = to_timeval(options.connect_timeout);
    redisContext* c = url.transport == RedisUrl::Transport::kUnix
                          ? redisConnectUnixWithTimeout(url.socket_path.c_str(), tv)
                          : redisConnectWithTimeout(url.host.c_str(), url.port, tv);
    if (c == nullptr) return make_error(ErrorKind::kBackend, where() + ": out of memory");
    if (c->err != 0) {
      std::string message = fmt::format("{}: connect failed: {}", where(), c->errstr);
      redisFree(c);
      return make_error(ErrorKind::kBackend, std::move(message));
    }
    const timeval command_tv = to_timeval(options.command_timeout);
    redisSetTimeout(c, command_tv);
    auto setup = [&](std::vector<std::string_view> argv, std::string_view what) -> Result<void> {
      std::vector<const char*> ptrs;
      std::vector<std::size_t> lens;
      for (auto a : argv) {
        ptrs.push_back(a.data());
        lens.push_back(a.size());
      }
      auto* r = static_cast<redisReply*>(
          redisCommandArgv(c, static_cast<int>(argv.size()), ptrs.data(), lens.data()));
      if (r == nullptr) {
        return make_error(ErrorKind::kBackend, fmt::format("{}: {} failed: {}", where(), what,
                                                           c->errstr[0] ? c->errstr : "no reply"));
      }
      std::string error = r->type == REDIS_REPLY_ERROR ? std::string(r->str, r->len) : "";
      freeReplyObject(r);
      if (!error.empty()) {
        return make_error(ErrorKind::kBackend,
                          fmt::format("{}: {} failed: {}", where(), what, error));
      }
      return ok();
    };
    Result<void> ready = ok();
    if (!url.password.empty()) {
      ready = url.user.empty() ? setup({"AUTH", url.password}, "authentication")
                               : setup({"AUTH", url.user, url.password}, "authentication");
    }
    if (ready && url.db != 0) {
      const std::string db = std::to_string(url.db);
      ready = setup({"SELECT", db}, "SELECT " + db);
    }
    if (!ready) {
      redisFree(c);
      return std::unexpected(ready.error());
    }
    return c;
  }

  // A connection for one command, or an error: kBackend while reconnects are
  // backing off, kTimeout when none frees up before `deadline`.
  // `*reused` tells whether it came from the idle list.
  Result<redisContext*> borrow(SteadyClock::time_point deadline, bool* reused) {
    std::unique_lock lock(mutex);
    for (;;) {
      if (const auto now = SteadyClock::now(); now < suspended_until) {
        return make_error(ErrorKind::kBackend, fmt::format("{} is timing out, not used for {} ms",
                                                           where(), to_ms(suspended_until - now)));
      }
      if (!idle.empty()) {
        redisContext* c = idle.back();
        idle.pop_back();
        *reused = true;
        return c;
      }
      if (open < options.pool_size) {
        const auto now = SteadyClock::now();
        if (now < next_connect) {
          return make_error(ErrorKind::kBackend,
                            fmt::format("{} unavailable, retrying in {} ms: {}", where(),
                                        to_ms(next_connect - now), last_connect_error));
        }
        ++open;
        lock.unlock();
        auto c = connect();
        lock.lock();
        if (!c) {
          --open;
          connect_failures.fetch_add(1, kRelaxed);
          backoff = backoff == Duration::zero()
                        ? options.reconnect_backoff_min
                        : std::min<Duration>(backoff * 2, options.reconnect_backoff_max);
          const auto wait =
              std::chrono::duration_cast<Duration>(backoff * internal::uniform_real(0.5, 1.0));
          next_connect =
              SteadyClock::now() + std::chrono::duration_cast<SteadyClock::duration>(wait);
          last_connect_error = c.error().message;
          freed.notify_one();
          return std::unexpected(c.error());
        }
        connects.fetch_add(1, kRelaxed);
        backoff = Duration::zero();
        next_connect = {};
        *reused = false;
        return *c;
      }
      if (freed.wait_until(lock, deadline) == std::cv_status::timeout && idle.empty() &&
          open >= options.pool_size) {
        pool_timeouts.fetch_add(1, kRelaxed);
        return make_error(ErrorKind::kTimeout,
                          fmt::format("{}: no free connection within {} ms (pool_size {})", where(),
                                      to_ms(pool_wait()), options.pool_size));
      }
    }
  }

  // Returns a connection to the pool, or closes it when it is not reusable.
  void give_back(redisContext* c, bool reusable) {
    {
      std::lock_guard lock(mutex);
      if (reusable) {
        idle.push_back(c);
        c = nullptr;
      } else {
        --open;
      }
    }
    freed.notify_one();
    if (c != nullptr) redisFree(c);
  }

  // Runs one command on one borrowed connection.
  Result<RedisReply> run(std::span<const std::string_view> argv, Failure* failure) {
    bool reused = false;
    auto borrowed =
        borrow(SteadyClock::now() + std::chrono::duration_cast<SteadyClock::duration>(pool_wait()),
               &reused);
    if (!borrowed) {
      *failure = Failure::kNone;
      return std::unexpected(borrowed.error());
    }
    redisContext* c = *borrowed;
    std::vector<const char*> ptrs;
    std::vector<std::size_t> lens;
    ptrs.reserve(argv.size());
    lens.reserve(argv.size());
    for (auto a : argv) {
      ptrs.push_back(a.data());
      lens.push_back(a.size());
    }
    errno = 0;
    auto* r = static_cast<redisReply*>(
        redisCommandArgv(c, static_cast<int>(argv.size()), ptrs.data(), lens.data()));
    const int saved_errno = errno;
    const std::string_view name = argv.empty() ? std::string_view("?") : argv[0];
    if (r == nullptr) {
      const bool timed_out =
          c->err == REDIS_ERR_IO && (saved_errno == EAGAIN || saved_errno == EWOULDBLOCK);
      std::string message = timed_out ? fmt::format("{}: {} timed out after {} ms", where(), name,
                                                    to_ms(options.command_timeout))
                                      : fmt::format("{}: {} failed: {}", where(), name,
                                                    c->errstr[0] ? c->errstr : "connection lost");
      // A connection that failed mid-command may hold half a reply: never reuse it.
      give_back(c, false);
      // Broken on a connection that sat idle: Redis restarted or dropped it
      // before we wrote, so the command was not run and can be retried.
      *failure = timed_out ? Failure::kTimeout : (reused ? Failure::kBroken : Failure::kNone);
      if (timed_out) suspend();
      return make_error(timed_out ? ErrorKind::kTimeout : ErrorKind::kBackend, std::move(message));
    }
    if (r->type == REDIS_REPLY_ERROR) {
      std::string message =
          fmt::format("{}: {}: {}", where(), name, std::string_view(r->str, r->len));
      freeReplyObject(r);
      give_back(c, true);
      *failure = Failure::kErrorReply;
      return make_error(ErrorKind::kBackend, std::move(message));
    }
    RedisReply reply = translate(r);
    freeReplyObject(r);
    give_back(c, true);
    *failure = Failure::kNone;
    if (suspended.load(std::memory_order_relaxed)) resume();
    return reply;
  }

  void suspend() {
    std::lock_guard lock(mutex);
    timeout_backoff = timeout_backoff == Duration::zero()
                          ? options.reconnect_backoff_min
                          : std::min<Duration>(timeout_backoff * 2, options.reconnect_backoff_max);
    const auto wait =
        std::chrono::duration_cast<Duration>(timeout_backoff * internal::uniform_real(0.5, 1.0));
    suspended_until = SteadyClock::now() + std::chrono::duration_cast<SteadyClock::duration>(wait);
    suspended.store(true, std::memory_order_relaxed);
  }

  void resume() {
    std::lock_guard lock(mutex);
    timeout_backoff = Duration::zero();
    suspended_until = {};
    suspended.store(false, std::memory_order_relaxed);
  }
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
  impl_->commands.fetch_add(1, kRelaxed);
  Failure failure = Failure::kNone;
  auto reply = impl_->run(argv, &failure);
  if (!reply && failure == Failure::kBroken) reply = impl_->run(argv, &failure);  // once
  if (!reply) impl_->errors.fetch_add(1, kRelaxed);
  return reply;
}

Result<RedisReply> RedisClient::eval(const RedisScript& script,
                                     std::span<const std::string_view> keys,
                                     std::span<const std::string_view> args) {
  auto load = [&]() -> Result<std::string> {
    impl_->script_loads.fetch_add(1, kRelaxed);
    auto loaded = command({"SCRIPT", "LOAD", script.source()});
    if (!loaded) return std::unexpected(loaded.error());
    if (loaded->type != RedisReply::Type::kString) {
      return make_error(ErrorKind::kBackend, impl_->where() + ": SCRIPT LOAD returned no SHA1");
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
  auto reply = command(argv);
  if (!reply && reply.error().message.find("NOSCRIPT") != std::string::npos) {
    // The server forgot the script (restart, SCRIPT FLUSH): load it again.
    auto loaded = load();
    if (!loaded) return std::unexpected(loaded.error());
    sha1 = std::move(*loaded);
    argv[1] = sha1;
    reply = command(argv);
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
