// The fleet lock over Redis (see include/herdguard/redis_lock.h).
//
// Every compare-and-act step is one Lua script, so no other client can slip
// between the check and the act. The lease keeper is one thread per manager
// that extends the leases of live holds.
#include <fmt/format.h>
#include <sys/random.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>

#include "herdguard/redis_lock.h"

namespace herdguard {
namespace {

constexpr auto kRelaxed = std::memory_order_relaxed;
using SteadyClock = std::chrono::steady_clock;

// KEYS[1] lock, KEYS[2] fence; ARGV[1] token, ARGV[2] lease ms, ARGV[3] fence ttl ms.
// Returns the new fence, or 0 when the lock is held.
const RedisScript kAcquire{R"lua(
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local fence = redis.call('INCR', KEYS[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
  return fence
end
return 0
)lua"};

// KEYS[1] lock; ARGV[1] token, ARGV[2] lease ms.
const RedisScript kExtend{R"lua(
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
)lua"};

// KEYS[1] lock; ARGV[1] token.
const RedisScript kRelease{R"lua(
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
)lua"};

// KEYS[1] value key, KEYS[2] fence; ARGV[1] our fence, ARGV[2] bytes,
// ARGV[3] expiry (Unix ms). Fences are compared as the decimal strings INCR
// stores, so they are exact at any size.
const RedisScript kFencedWrite{R"lua(
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[3])
  return 1
end
return 0
)lua"};

std::string ms_string(Duration d) {
  return std::to_string(
      std::max<long long>(1, std::chrono::duration_cast<std::chrono::milliseconds>(d).count()));
}

}  // namespace

Result<void> RedisLockOptions::validate() const {
  auto bad = [](std::string_view what) {
    return make_error(ErrorKind::kInvalidArgument, fmt::format("redis lock: {}", what));
  };
  if (lease < std::chrono::milliseconds(10)) return bad("lease must be >= 10 ms");
  if (fence_ttl <= lease) return bad("fence_ttl must be longer than lease");
  return ok();
}

Result<std::string> random_token() {
  unsigned char bytes[16];
  std::size_t got = 0;
  while (got < sizeof bytes) {
    const ssize_t n = ::getrandom(bytes + got, sizeof bytes - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      return make_error(ErrorKind::kInternal,
                        fmt::format("getrandom failed: {}", std::strerror(errno)));
    }
    got += static_cast<std::size_t>(n);
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string token;
  token.reserve(32);
  for (unsigned char b : bytes) {
    token.push_back(kHex[b >> 4]);
    token.push_back(kHex[b & 0xf]);
  }
  return token;
}

struct RedisLockManager::Impl {
  Impl(RedisLockOptions o, std::shared_ptr<RedisClient> c)
      : options(std::move(o)), client(std::move(c)) {}

  const RedisLockOptions options;
  const std::shared_ptr<RedisClient> client;

  std::atomic<std::uint64_t> acquisitions{0}, contentions{0}, extensions{0}, extension_failures{0},
      releases{0}, fenced_off_writes{0}, errors{0};

  // --- the lease keeper ---------------------------------------------------
  std::mutex mutex;
  std::condition_variable changed;
  // Guarded by mutex: live holds and when each is next extended. A hold is
  // in `schedule` from registration until unregister(); while the keeper
  // extends one (`extending`), unregister() waits, so the keeper never uses
  // a destroyed hold.
  std::map<LockHold*, SteadyClock::time_point> schedule;
  LockHold* extending = nullptr;
  bool stopping = false;
  std::thread keeper;  // started last, in create()

  Duration period() const { return options.lease / 3; }

  void enroll(LockHold* hold) {
    {
      std::lock_guard lock(mutex);
      schedule[hold] = SteadyClock::now() + period();
    }
    changed.notify_all();
  }

  void unenroll(LockHold* hold) {
    std::unique_lock lock(mutex);
    changed.wait(lock, [&] { return extending != hold; });
    schedule.erase(hold);
  }

  void run_keeper() {
    std::unique_lock lock(mutex);
    while (!stopping) {
      if (schedule.empty()) {
        changed.wait(lock);
        continue;
      }
      auto next =
          std::min_element(schedule.begin(), schedule.end(),
                           [](const auto& a, const auto& b) { return a.second < b.second; });
      const SteadyClock::time_point due = next->second;  // a copy: the node may go
      if (SteadyClock::now() < due) {
        changed.wait_until(lock, due);
        continue;
      }
      LockHold* hold = next->first;
      const Duration remaining = hold->hard_deadline_.remaining();
      if (remaining <= Duration::zero()) {
        // Past the load's own timeout: stop extending, the lease runs out.
        schedule.erase(next);
        continue;
      }
      extending = hold;
      lock.unlock();
      (void)hold->extend(std::min(options.lease, remaining));
      lock.lock();
      extending = nullptr;
      if (auto it = schedule.find(hold); it != schedule.end()) {
        if (hold->lost()) {
          schedule.erase(it);
        } else {
          it->second = SteadyClock::now() + period();
        }
      }
      changed.notify_all();
    }
  }
};

LockHold::LockHold(RedisLockManager& manager, std::string key, std::string token,
                   std::uint64_t fence, Deadline hard_deadline)
    : manager_(manager),
      key_(std::move(key)),
      token_(std::move(token)),
      fence_(fence),
      hard_deadline_(hard_deadline) {}

LockHold::~LockHold() { (void)release(); }

Result<bool> LockHold::fenced_write(std::string_view redis_key, std::string_view bytes,
                                    TimePoint stale_until) {
  auto& impl = *manager_.impl_;
  const auto at_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(stale_until.time_since_epoch()).count();
  const auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  if (at_ms <= now_ms) return true;  // already expired: nothing to keep, nothing to fence
  const std::string fence_key = manager_.fence_key(key_);
  const std::string fence = std::to_string(fence_);
  const std::string at = std::to_string(at_ms);
  auto reply = impl.client->eval(kFencedWrite, {redis_key, fence_key}, {fence, bytes, at});
  if (!reply) {
    impl.errors.fetch_add(1, kRelaxed);
    return std::unexpected(reply.error());
  }
  if (reply->integer == 1) return true;
  impl.fenced_off_writes.fetch_add(1, kRelaxed);
  return false;
}

Result<bool> LockHold::extend(Duration lease) {
  auto& impl = *manager_.impl_;
  const std::string lock_key = manager_.lock_key(key_);
  auto reply = impl.client->eval(kExtend, {lock_key}, {token_, ms_string(lease)});
  if (!reply) {
    impl.errors.fetch_add(1, kRelaxed);
    impl.extension_failures.fetch_add(1, kRelaxed);
    // Unknown whether it is still ours; the fenced write decides. Marking it
    // lost stops further extensions, so it expires at worst one lease later.
    lost_.store(true, std::memory_order_release);
    return std::unexpected(reply.error());
  }
  if (reply->integer == 1) {
    impl.extensions.fetch_add(1, kRelaxed);
    return true;
  }
  impl.extension_failures.fetch_add(1, kRelaxed);
  lost_.store(true, std::memory_order_release);
  return false;
}

Result<bool> LockHold::release() {
  if (released_.exchange(true, std::memory_order_acq_rel)) return true;
  auto& impl = *manager_.impl_;
  if (impl.options.auto_extend) impl.unenroll(this);
  const std::string lock_key = manager_.lock_key(key_);
  auto reply = impl.client->eval(kRelease, {lock_key}, {token_});
  if (!reply) {
    impl.errors.fetch_add(1, kRelaxed);
    return std::unexpected(reply.error());
  }
  if (reply->integer == 1) {
    impl.releases.fetch_add(1, kRelaxed);
    return true;
  }
  return false;
}

Result<std::unique_ptr<RedisLockManager>> RedisLockManager::create(
    RedisLockOptions options, std::shared_ptr<RedisClient> client) {
  if (auto valid = options.validate(); !valid) return std::unexpected(valid.error());
  if (!client) return make_error(ErrorKind::kInvalidArgument, "redis lock: client is null");
  auto impl = std::make_unique<Impl>(std::move(options), std::move(client));
  if (impl->options.auto_extend) {
    Impl* raw = impl.get();
    impl->keeper = std::thread([raw] { raw->run_keeper(); });
  }
  return std::unique_ptr<RedisLockManager>(new RedisLockManager(std::move(impl)));
}

RedisLockManager::RedisLockManager(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

RedisLockManager::~RedisLockManager() {
  {
    std::lock_guard lock(impl_->mutex);
    impl_->stopping = true;
  }
  impl_->changed.notify_all();
  if (impl_->keeper.joinable()) impl_->keeper.join();
}

Result<std::unique_ptr<LockHold>> RedisLockManager::try_acquire(std::string_view key,
                                                                Deadline hard_deadline) {
  const Duration remaining = hard_deadline.remaining();
  if (remaining <= Duration::zero()) {
    return make_error(ErrorKind::kTimeout,
                      fmt::format("lock of key '{}': the deadline passed before acquiring", key));
  }
  auto token = random_token();
  if (!token) return std::unexpected(token.error());
  const std::string lock = lock_key(key);
  const std::string fence = fence_key(key);
  auto reply = impl_->client->eval(kAcquire, {lock, fence},
                                   {*token, ms_string(std::min(impl_->options.lease, remaining)),
                                    ms_string(impl_->options.fence_ttl)});
  if (!reply) {
    impl_->errors.fetch_add(1, kRelaxed);
    return std::unexpected(reply.error());
  }
  if (reply->type != RedisReply::Type::kInteger) {
    impl_->errors.fetch_add(1, kRelaxed);
    return make_error(ErrorKind::kBackend, "redis lock: unexpected reply to the acquire script");
  }
  if (reply->integer == 0) {
    impl_->contentions.fetch_add(1, kRelaxed);
    return make_error(ErrorKind::kLockNotAcquired,
                      fmt::format("lock of key '{}' is held by another owner", key));
  }
  impl_->acquisitions.fetch_add(1, kRelaxed);
  std::unique_ptr<LockHold> hold(new LockHold(*this, std::string(key), std::move(*token),
                                              static_cast<std::uint64_t>(reply->integer),
                                              hard_deadline));
  if (impl_->options.auto_extend) impl_->enroll(hold.get());
  return hold;
}

std::string RedisLockManager::lock_key(std::string_view key) const {
  return impl_->options.prefix + "lock:" + std::string(key);
}

std::string RedisLockManager::fence_key(std::string_view key) const {
  return impl_->options.prefix + "fence:" + std::string(key);
}

const RedisLockOptions& RedisLockManager::options() const noexcept { return impl_->options; }

RedisLockStats RedisLockManager::stats() const {
  return RedisLockStats{.acquisitions = impl_->acquisitions.load(kRelaxed),
                        .contentions = impl_->contentions.load(kRelaxed),
                        .extensions = impl_->extensions.load(kRelaxed),
                        .extension_failures = impl_->extension_failures.load(kRelaxed),
                        .releases = impl_->releases.load(kRelaxed),
                        .fenced_off_writes = impl_->fenced_off_writes.load(kRelaxed),
                        .errors = impl_->errors.load(kRelaxed)};
}

}  // namespace herdguard
