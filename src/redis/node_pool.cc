#include "redis/node_pool.h"

#include <fmt/format.h>

#include <algorithm>
#include <utility>

#include "core/random.h"

namespace herdguard::internal {
namespace {

constexpr auto kRelaxed = std::memory_order_relaxed;
// How recently a pooled connection must have finished a command to be
// reused without the liveness poll (see borrow()).
constexpr std::chrono::milliseconds kTrustedIdle{10};

long long to_ms(Duration d) {
  return static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(d).count());
}

}  // namespace

// A borrowed connection; returns itself to the pool when destroyed, unless
// discard() was called (a connection that failed mid-command may hold half
// a reply: never reused).
class NodePool::Lease {
 public:
  Lease(NodePool& pool, RedisConnection connection, bool reused)
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
  NodePool* pool_;
  std::optional<RedisConnection> connection_;
  bool reused_;
  bool reusable_ = true;
};

NodePool::NodePool(RedisUrl url, const RedisOptions& options, PoolCounters& counters)
    : url_(std::move(url)),
      options_(options),
      counters_(counters),
      where_(fmt::format("redis {}", url_.redacted())) {}

Duration NodePool::pool_wait() const {
  return options_.pool_wait_timeout > Duration::zero() ? options_.pool_wait_timeout
                                                       : options_.command_timeout;
}

// A connection for one command, or an error: kBackend while reconnects are
// backing off or the server is suspended, kTimeout when none frees up before
// `until`. An idle connection that the server has closed is dropped here,
// before a command is written to it.
Result<NodePool::Lease> NodePool::borrow(SteadyClock::time_point until) {
  std::unique_lock lock(mutex_);
  for (;;) {
    if (const auto now = SteadyClock::now(); now < suspended_until_) {
      return make_error(ErrorKind::kBackend, fmt::format("{} is timing out, not used for {} ms",
                                                         where_, to_ms(suspended_until_ - now)));
    }
    const auto now = SteadyClock::now();
    while (!idle_.empty()) {
      RedisConnection c = std::move(idle_.back());
      idle_.pop_back();
      // The poll(2) costs a syscall per command (a quarter of a GET's CPU
      // at 8 threads), so a connection back from a command less than
      // kTrustedIdle ago skips it: the server cannot have died and restarted
      // since, and a crash that recent fails in-flight commands anyway.
      if (now - c.idle_since() < kTrustedIdle || c.looks_alive())
        return Lease(*this, std::move(c), true);
      --open_;  // closed by the server while idle: freed when `c` goes out of scope
    }
    if (open_ < options_.pool_size) {
      if (now < next_connect_) {
        return make_error(ErrorKind::kBackend,
                          fmt::format("{} unavailable, retrying in {} ms: {}", where_,
                                      to_ms(next_connect_ - now), last_connect_error_));
      }
      ++open_;
      lock.unlock();
      const Duration connect_within =
          std::min<Duration>(options_.connect_timeout, until - SteadyClock::now());
      auto c = RedisConnection::open(
          url_, std::max<Duration>(connect_within, std::chrono::milliseconds(1)),
          options_.command_timeout, where_);
      lock.lock();
      if (!c) {
        --open_;
        counters_.connect_failures.fetch_add(1, kRelaxed);
        backoff_ = backoff_ == Duration::zero()
                       ? options_.reconnect_backoff_min
                       : std::min<Duration>(backoff_ * 2, options_.reconnect_backoff_max);
        const auto wait =
            std::chrono::duration_cast<Duration>(backoff_ * internal::uniform_real(0.5, 1.0));
        next_connect_ = SteadyClock::now() + wait;
        last_connect_error_ = c.error().message;
        freed_.notify_one();
        return std::unexpected(c.error());
      }
      counters_.connects.fetch_add(1, kRelaxed);
      backoff_ = Duration::zero();
      next_connect_ = {};
      return Lease(*this, std::move(*c), false);
    }
    if (freed_.wait_until(lock, until) == std::cv_status::timeout && idle_.empty() &&
        open_ >= options_.pool_size) {
      counters_.pool_timeouts.fetch_add(1, kRelaxed);
      return make_error(ErrorKind::kTimeout,
                        fmt::format("{}: no free connection in time (pool_size {}, "
                                    "pool_wait_timeout {} ms, or the caller's deadline)",
                                    where_, options_.pool_size, to_ms(pool_wait())));
    }
  }
}

void NodePool::give_back(RedisConnection c, bool reusable) {
  {
    std::lock_guard lock(mutex_);
    if (reusable) {
      c.mark_idle(SteadyClock::now());
      idle_.push_back(std::move(c));
    } else {
      --open_;
    }
  }
  freed_.notify_one();
  // A discarded connection is freed here, outside the lock.
}

Result<RedisReply> NodePool::run(std::span<const std::string_view> argv,
                                 std::optional<Deadline> deadline, RunOutcome& outcome, bool asking,
                                 const FollowUp* follow_up) {
  outcome = RunOutcome{};
  const std::string_view name = argv.empty() ? std::string_view("?") : argv[0];
  auto not_sent = [&] {
    return make_error(ErrorKind::kTimeout,
                      fmt::format("{}: {} not sent: the caller's deadline passed", where_, name));
  };
  auto pool_until = SteadyClock::now() + pool_wait();
  Duration timeout = options_.command_timeout;
  if (deadline) {
    if (deadline->expired()) return not_sent();
    pool_until = std::min(pool_until, deadline->when());
  }
  auto lease = borrow(pool_until);
  if (!lease) return std::unexpected(lease.error());
  outcome.borrowed = true;
  outcome.reused = lease->reused();
  if (deadline) {
    timeout = std::min(timeout, deadline->remaining());
    if (timeout <= Duration::zero()) return not_sent();
  }
  Result<RedisReply> reply = RedisReply{};
  if (asking) {
    const std::string_view asking_argv[] = {"ASKING"};
    reply = (**lease).run(asking_argv, timeout, &outcome.failure, &outcome.error_reply);
    // ASKING failed: the command itself was never sent (a timeout stays a
    // timeout, so that a hung node still suspends the pool).
    if (!reply && outcome.failure != SendFailure::kErrorReply &&
        outcome.failure != SendFailure::kTimeout)
      outcome.failure = SendFailure::kNotSent;
  }
  if (reply && asking && deadline) {
    // The ASKING round trip came out of the caller's time.
    timeout = std::min(options_.command_timeout, deadline->remaining());
    if (timeout <= Duration::zero()) return not_sent();
  }
  if (reply) reply = (**lease).run(argv, timeout, &outcome.failure, &outcome.error_reply);
  if (reply && follow_up != nullptr) {
    SendFailure then_failure = SendFailure::kNone;
    outcome.follow_up = (**lease).run(follow_up->argv, follow_up->timeout, &then_failure);
    if (then_failure == SendFailure::kNotSent || then_failure == SendFailure::kTimeout ||
        then_failure == SendFailure::kLost) {
      lease->discard();
    }
  }
  const SendFailure failure = outcome.failure;
  if (failure == SendFailure::kNotSent || failure == SendFailure::kTimeout ||
      failure == SendFailure::kLost) {
    lease->discard();
  }
  // Only a full command_timeout is evidence that the server hangs; a
  // caller's short deadline running out is not.
  if (failure == SendFailure::kTimeout && timeout >= options_.command_timeout) suspend();
  if (reply && suspended_.load(std::memory_order_relaxed)) resume();
  return reply;
}

void NodePool::suspend() {
  std::lock_guard lock(mutex_);
  timeout_backoff_ = timeout_backoff_ == Duration::zero()
                         ? options_.reconnect_backoff_min
                         : std::min<Duration>(timeout_backoff_ * 2, options_.reconnect_backoff_max);
  const auto wait =
      std::chrono::duration_cast<Duration>(timeout_backoff_ * internal::uniform_real(0.5, 1.0));
  suspended_until_ = SteadyClock::now() + wait;
  suspended_.store(true, std::memory_order_relaxed);
}

void NodePool::resume() {
  std::lock_guard lock(mutex_);
  timeout_backoff_ = Duration::zero();
  suspended_until_ = {};
  suspended_.store(false, std::memory_order_relaxed);
}

}  // namespace herdguard::internal
