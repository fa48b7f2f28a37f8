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
#include "lock/announcement.h"
#include "redis/key_layout.h"

namespace herdguard {
namespace {

constexpr auto kRelaxed = std::memory_order_relaxed;
using SteadyClock = std::chrono::steady_clock;
// How long a finish that starts past its hold's hard deadline may take
// (see LockHold::finish).
constexpr Duration kLateFinishGrace = std::chrono::milliseconds(10);
// After a failed finish, how often the keeper tries to release the lock.
constexpr Duration kReleaseRetry = std::chrono::milliseconds(100);

// KEYS[1] lock, KEYS[2] version, KEYS[3] value, KEYS[4] waiter mark;
// ARGV[1] token, ARGV[2] lease ms, ARGV[3] horizon ms (until the hard
// deadline), ARGV[4] '1' to mark the key as waited for. Returns {0, version
// or '0'} when another owner holds the lock (and marks it), else {1, version,
// now ms, the value's bytes or nil}. Idempotent per token: a lock already
// ours is taken again (see "A lost reply" in redis_lock.h).
const RedisScript kAcquire{std::string(internal::kVersionLua) + R"lua(
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then
  if ARGV[4] == '1' then redis.call('SET', KEYS[4], '1', 'PX', ARGV[2]) end
  local seen = hg_get(KEYS[2])
  if not seen or not tonumber(seen) then seen = '0' end
  return {0, seen}
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local v = hg_bump(KEYS[2])
hg_keep_for(KEYS[2], tonumber(ARGV[3]))
return {1, string.format('%.0f', v), hg_now_ms(), hg_get(KEYS[3])}
)lua"};

// KEYS[1] lock, KEYS[2] version, KEYS[3] value, KEYS[4] waiter mark;
// ARGV[1] token, ARGV[2] snapshot version, ARGV[3] write-until ms, ARGV[4]
// envelope ('' = nothing to write), ARGV[5] expire-at ms, ARGV[6] channel
// ('' = no announcement), ARGV[7] announcement head, ARGV[8] most value
// bytes announced, ARGV[9] the version a "not modified" load extends ('':
// none), ARGV[10] 'PUBLISH' or 'SPUBLISH' (a per-key channel in KEYS' slot). Returns {write,
// released, announced, with value}: write is hg_write_loaded's result (redis/key_layout.h), 3 when
// there was nothing to write. The announcement's layout is in lock/announcement.h.
const RedisScript kFinish{std::string(internal::kVersionLua) +
                          std::string(internal::kWriteLoadedLua) + R"lua(
local write = 3
if ARGV[4] ~= '' then
  write = hg_write_loaded(KEYS[3], KEYS[2], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[9])
end
local released = 0
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  released = 1
end
local announced, with_value = 0, 0
if ARGV[6] ~= '' and redis.call('DEL', KEYS[4]) == 1 then
  announced = 1
  if (write == 1 or write == 2) and #ARGV[4] <= tonumber(ARGV[8]) then
    with_value = 1
    redis.call(ARGV[10], ARGV[6], ARGV[7] .. '\1' .. ARGV[4])
  else
    redis.call(ARGV[10], ARGV[6], ARGV[7] .. '\0')
  end
end
return {write, released, announced, with_value}
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

}  // namespace

Result<void> RedisLockOptions::validate() const {
  auto bad = [](std::string_view what) {
    return make_error(ErrorKind::kInvalidArgument, fmt::format("redis lock: {}", what));
  };
  if (lease < std::chrono::milliseconds(10)) return bad("lease must be >= 10 ms");
  // Refused, not saturated: Redis rejects expiries past its clock's range.
  if (lease > std::chrono::hours(1)) return bad("lease must be <= 1 h");
  if (auto valid = internal::validate_prefix(prefix, "redis lock"); !valid) return valid;
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
      releases{0}, resent_acquires{0}, errors{0}, announcements{0}, announced_values{0},
      late_releases{0};

  // --- the lease keeper ---------------------------------------------------
  std::mutex mutex;
  std::condition_variable changed;
  // Guarded by mutex: live holds, when each is next extended, and an id
  // that tells a hold from a later one at the same address. A hold is in
  // `schedule` from enroll() until unenroll(). The keeper copies what an
  // extension needs (key, token, deadline) and talks to Redis without the
  // mutex, so unenroll() never waits for a round trip (a finishing caller
  // must not wait past its deadline for the keeper); the result is applied
  // only if the same hold (same id) is still scheduled.
  struct Scheduled {
    SteadyClock::time_point due;
    std::uint64_t id;
  };
  std::map<LockHold*, Scheduled> schedule;
  std::uint64_t last_id = 0;
  // Guarded by mutex: locks whose finish failed (Redis unreachable: a
  // primary died, a failover is under way). The lock may have survived on
  // a replica that is now the primary, and would stall every waiter of the
  // fleet until its lease ran out; the keeper tries to release it every
  // kReleaseRetry until then.
  struct PendingRelease {
    std::string key;
    std::string token;
    SteadyClock::time_point next_try;
    SteadyClock::time_point give_up;  // the lease has surely ended
  };
  std::vector<PendingRelease> pending_releases;
  bool stopping = false;
  std::thread keeper;  // started last, in create()

  Duration period() const { return options.lease / 3; }

  void enroll(LockHold* hold) {
    {
      std::lock_guard lock(mutex);
      schedule[hold] = Scheduled{SteadyClock::now() + period(), ++last_id};
    }
    changed.notify_all();
  }

  void unenroll(LockHold* hold) {
    std::lock_guard lock(mutex);
    schedule.erase(hold);
  }

  // PEXPIREs the lock to `lease` if `token` still holds it, within `bound`;
  // counts the outcome. Returns false when the lock is not ours any more.
  Result<bool> extend_lock(const std::string& key, const std::string& token, Duration lease,
                           Deadline bound) {
    const std::string lock_key = internal::lock_key(options.prefix, key);
    auto reply = client->eval(kExtend, {lock_key}, {token, internal::redis_ms(lease)}, bound);
    if (!reply) {
      errors.fetch_add(1, kRelaxed);
      extension_failures.fetch_add(1, kRelaxed);
      return std::unexpected(reply.error());
    }
    if (reply->integer == 1) {
      extensions.fetch_add(1, kRelaxed);
      return true;
    }
    extension_failures.fetch_add(1, kRelaxed);
    return false;
  }

  void release_later(const std::string& key, const std::string& token) {
    {
      std::lock_guard lock(mutex);
      const auto now = SteadyClock::now();
      pending_releases.push_back({key, token, now + kReleaseRetry, now + options.lease});
    }
    changed.notify_all();
  }

  // One try of the earliest pending release. REQUIRES: `lock` holds mutex
  // and that release is due; releases the mutex during the round trip.
  void retry_release(std::unique_lock<std::mutex>& lock,
                     std::vector<PendingRelease>::iterator due) {
    PendingRelease r = std::move(*due);
    pending_releases.erase(due);
    if (SteadyClock::now() >= r.give_up) return;
    lock.unlock();
    const std::string lock_key = internal::lock_key(options.prefix, r.key);
    auto reply = client->eval(kRelease, {lock_key}, {r.token},
                              Deadline::after(std::min(kReleaseRetry, period())));
    lock.lock();
    if (!reply) {
      errors.fetch_add(1, kRelaxed);
      r.next_try = SteadyClock::now() + kReleaseRetry;
      if (r.next_try < r.give_up) pending_releases.push_back(std::move(r));
    } else if (reply->integer == 1) {
      releases.fetch_add(1, kRelaxed);
      late_releases.fetch_add(1, kRelaxed);
    }
  }

  void run_keeper() {
    std::unique_lock lock(mutex);
    while (!stopping) {
      const auto now = SteadyClock::now();
      // Extensions first: a release retry against a hung node must never
      // hold up the live holds' leases.
      auto next = std::min_element(
          schedule.begin(), schedule.end(),
          [](const auto& a, const auto& b) { return a.second.due < b.second.due; });
      const auto release =
          std::min_element(pending_releases.begin(), pending_releases.end(),
                           [](const auto& a, const auto& b) { return a.next_try < b.next_try; });
      const bool extension_due = next != schedule.end() && next->second.due <= now;
      if (!extension_due) {
        if (release != pending_releases.end() && release->next_try <= now) {
          retry_release(lock, release);
          continue;
        }
        // Copies: the map node or vector element may go while we wait
        // (wait_until reads its time point again after waking).
        const bool any_extension = next != schedule.end();
        const bool any_release = release != pending_releases.end();
        if (!any_extension && !any_release) {
          changed.wait(lock);
        } else {
          const SteadyClock::time_point until = !any_release ? next->second.due
                                                : !any_extension
                                                    ? release->next_try
                                                    : std::min(next->second.due, release->next_try);
          changed.wait_until(lock, until);
        }
        continue;
      }
      LockHold* hold = next->first;
      const std::uint64_t id = next->second.id;
      const Deadline hard = hold->hard_deadline_;
      const Duration remaining = hard.remaining();
      if (remaining <= Duration::zero()) {
        // Past the load's own timeout: stop extending, the lease runs out.
        schedule.erase(next);
        continue;
      }
      // Copies: the hold may be finished and destroyed during the round trip.
      const std::string key = hold->key_;
      const std::string token = hold->token_;
      lock.unlock();
      // Within the hard deadline, and at most a period (for short leases,
      // less than command_timeout: the next extension is due by then).
      auto extended = extend_lock(key, token, std::min(options.lease, remaining),
                                  Deadline::earliest(hard, Deadline::after(period())));
      lock.lock();
      auto it = schedule.find(hold);
      if (it == schedule.end() || it->second.id != id) continue;  // finished meanwhile
      if (!extended || !*extended) {
        // Lost, or unknown whether still ours: the fenced write decides.
        // No more extensions, so it expires at worst one lease later.
        hold->lost_.store(true, std::memory_order_release);
        schedule.erase(it);
      } else {
        it->second.due = SteadyClock::now() + period();
      }
    }
  }
};

LockHold::LockHold(RedisLockManager& manager, std::string key, std::string token,
                   VersionSnapshot snapshot, Deadline hard_deadline,
                   std::optional<std::string> value_at_acquire)
    : manager_(manager),
      key_(std::move(key)),
      token_(std::move(token)),
      snapshot_(snapshot),
      hard_deadline_(hard_deadline),
      value_at_acquire_(std::move(value_at_acquire)) {}

LockHold::~LockHold() { (void)release(); }

Result<bool> LockHold::extend(Duration lease) {
  auto& impl = *manager_.impl_;
  const Deadline bound =
      Deadline::earliest(hard_deadline_, Deadline::after(impl.client->options().command_timeout));
  auto extended = impl.extend_lock(key_, token_, lease, bound);
  // Unknown whether it is still ours, or lost: the fenced write decides.
  // Marking it lost stops further extensions, so it expires at worst one
  // lease later.
  if (!extended || !*extended) lost_.store(true, std::memory_order_release);
  return extended;
}

bool LockHold::stop() {
  if (released_.exchange(true, std::memory_order_acq_rel)) return false;
  if (manager_.impl_->options.auto_extend) manager_.impl_->unenroll(this);
  return true;
}

Result<bool> LockHold::release() {
  if (!stop()) return true;
  auto& impl = *manager_.impl_;
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

Result<FinishOutcome> LockHold::finish(const CacheEntry* entry) {
  if (!stop()) {
    return make_error(ErrorKind::kInvalidArgument,
                      fmt::format("lock of key '{}': already finished or released", key_));
  }
  auto& impl = *manager_.impl_;
  const RedisLockOptions& o = impl.options;
  const std::string lock = manager_.lock_key(key_);
  const std::string version = manager_.version_key(key_);
  const std::string value = manager_.value_key(key_);
  const std::string waiters = manager_.waiters_key(key_);
  const std::string expected = std::to_string(snapshot_.version);
  const std::string until = std::to_string(snapshot_.write_until_ms);
  const std::string bytes =
      entry ? encode_envelope({.entry = *entry, .version = snapshot_.version}) : std::string();
  const std::string at = entry ? internal::redis_unix_ms(entry->stale_until) : std::string("0");
  const std::string channel =
      o.announce_per_key ? internal::ready_channel(o.prefix, key_) : o.announce_channel;
  const std::string_view publish = o.announce_per_key ? "SPUBLISH" : "PUBLISH";
  const std::string head =
      o.announces() ? internal::announcement_head(key_, snapshot_.version) : std::string();
  const std::string most = std::to_string(o.announce_value_max_bytes);
  // Past the hard deadline the write is refused by the script anyway, and
  // the lease has run out (it never outlives the hard deadline), but the
  // waiters can still be told at once — if Redis answers within a short
  // grace: the finish may run on a caller's thread (an inline load), and
  // that caller's deadline has passed.
  const Deadline bound =
      hard_deadline_.expired()
          ? Deadline::after(std::min(impl.client->options().command_timeout, kLateFinishGrace))
          : hard_deadline_;
  auto reply =
      impl.client->eval(kFinish, {lock, version, value, waiters},
                        {token_, expected, until, bytes, at, channel, head, most,
                         internal::little_endian(entry ? entry->extends_version : 0), publish},
                        bound);
  if (!reply) {
    impl.errors.fetch_add(1, kRelaxed);
    // The lock may outlive this failure (on a promoted replica, or a
    // Redis that was only slow): the keeper releases it when Redis answers.
    if (o.auto_extend) impl.release_later(key_, token_);
    return std::unexpected(reply.error());
  }
  const bool well_formed =
      reply->type == RedisReply::Type::kArray && reply->elements.size() == 4 &&
      std::all_of(reply->elements.begin(), reply->elements.end(),
                  [](const RedisReply& e) { return e.type == RedisReply::Type::kInteger; });
  if (!well_formed) {
    impl.errors.fetch_add(1, kRelaxed);
    return make_error(ErrorKind::kBackend, "redis lock: unexpected reply to the finish script");
  }
  FinishOutcome out;
  out.write = internal::loaded_write_outcome(reply->elements[0].integer);  // 3: nothing written
  out.released = reply->elements[1].integer == 1;
  out.announced = reply->elements[2].integer == 1;
  if (out.released) impl.releases.fetch_add(1, kRelaxed);
  if (out.announced) impl.announcements.fetch_add(1, kRelaxed);
  if (reply->elements[3].integer == 1) impl.announced_values.fetch_add(1, kRelaxed);
  return out;
}

Result<std::unique_ptr<RedisLockManager>> RedisLockManager::create(
    RedisLockOptions options, std::shared_ptr<RedisClient> client) {
  if (auto valid = options.validate(); !valid) return std::unexpected(valid.error());
  if (!client) return make_error(ErrorKind::kInvalidArgument, "redis lock: client is null");
  auto impl = std::make_unique<Impl>(std::move(options), std::move(client));
  if (impl->options.auto_extend) {
    Impl* raw = impl.get();
    try {
      impl->keeper = std::thread([raw] { raw->run_keeper(); });
    } catch (const std::system_error& e) {
      return make_error(ErrorKind::kInternal,
                        fmt::format("redis lock: cannot start the lease keeper: {}", e.what()));
    }
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
                                                                Deadline hard_deadline,
                                                                std::uint64_t* seen_version) {
  auto deadline_passed = [&] {
    return make_error(ErrorKind::kTimeout,
                      fmt::format("lock of key '{}': the load's deadline passed", key));
  };
  if (hard_deadline.expired()) return deadline_passed();
  auto token = random_token();
  if (!token) return std::unexpected(token.error());
  const std::string lock = lock_key(key);
  const std::string version = version_key(key);
  const std::string value = value_key(key);
  const std::string waiters = waiters_key(key);
  const std::string_view mark = impl_->options.announces() ? "1" : "0";
  auto send = [&] {
    const Duration remaining = hard_deadline.remaining();
    return impl_->client->eval(
        kAcquire, {lock, version, value, waiters},
        {*token, internal::redis_ms(std::min(impl_->options.lease, remaining)),
         internal::redis_ms(remaining), mark},
        hard_deadline);
  };
  auto reply = send();
  if (!reply && !hard_deadline.expired()) {
    // The reply may have been lost after the script ran and took the lock
    // for our token. Sending it again (idempotent per token) either gives us
    // that hold or tells us the lock is someone else's; when Redis is down
    // or hung, the client fails the second send fast (backoff, suspension).
    impl_->resent_acquires.fetch_add(1, kRelaxed);
    reply = send();
  }
  if (!reply) {
    if (hard_deadline.expired()) return deadline_passed();
    impl_->errors.fetch_add(1, kRelaxed);
    return std::unexpected(reply.error());
  }
  using Type = RedisReply::Type;
  const auto& e = reply->elements;
  const bool well_formed = reply->type == Type::kArray && !e.empty() &&
                           e[0].type == Type::kInteger &&
                           ((e[0].integer == 0 && e.size() == 2) ||
                            (e[0].integer == 1 && e.size() == 4 && e[2].type == Type::kInteger &&
                             (e[3].is_nil() || e[3].type == Type::kString)));
  if (!well_formed) {
    impl_->errors.fetch_add(1, kRelaxed);
    return make_error(ErrorKind::kBackend, "redis lock: unexpected reply to the acquire script");
  }
  if (e[0].integer == 0) {
    impl_->contentions.fetch_add(1, kRelaxed);
    if (seen_version) {
      auto seen = internal::parse_version_reply(e[1]);
      *seen_version = seen ? *seen : 0;  // '0': no version key (yet)
    }
    return make_error(ErrorKind::kLockNotAcquired,
                      fmt::format("lock of key '{}' is held by another owner", key));
  }
  auto v = internal::parse_version_reply(reply->elements[1]);
  if (!v) {
    impl_->errors.fetch_add(1, kRelaxed);
    return std::unexpected(v.error());
  }
  const VersionSnapshot snapshot{
      .version = *v,
      .write_until_ms = internal::write_until_ms(reply->elements[2].integer, hard_deadline)};
  impl_->acquisitions.fetch_add(1, kRelaxed);
  std::optional<std::string> current;
  if (!e[3].is_nil()) current = std::move(reply->elements[3].str);
  std::unique_ptr<LockHold> hold(new LockHold(*this, std::string(key), std::move(*token), snapshot,
                                              hard_deadline, std::move(current)));
  if (impl_->options.auto_extend) impl_->enroll(hold.get());
  return hold;
}

std::string RedisLockManager::lock_key(std::string_view key) const {
  return internal::lock_key(impl_->options.prefix, key);
}

std::string RedisLockManager::version_key(std::string_view key) const {
  return internal::version_key(impl_->options.prefix, key);
}

std::string RedisLockManager::value_key(std::string_view key) const {
  return internal::value_key(impl_->options.prefix, key);
}

std::string RedisLockManager::waiters_key(std::string_view key) const {
  return internal::waiters_key(impl_->options.prefix, key);
}

const RedisLockOptions& RedisLockManager::options() const noexcept { return impl_->options; }

RedisLockStats RedisLockManager::stats() const {
  return RedisLockStats{.acquisitions = impl_->acquisitions.load(kRelaxed),
                        .contentions = impl_->contentions.load(kRelaxed),
                        .extensions = impl_->extensions.load(kRelaxed),
                        .extension_failures = impl_->extension_failures.load(kRelaxed),
                        .releases = impl_->releases.load(kRelaxed),
                        .resent_acquires = impl_->resent_acquires.load(kRelaxed),
                        .errors = impl_->errors.load(kRelaxed),
                        .announcements = impl_->announcements.load(kRelaxed),
                        .announced_values = impl_->announced_values.load(kRelaxed),
                        .late_releases = impl_->late_releases.load(kRelaxed)};
}

}  // namespace herdguard
