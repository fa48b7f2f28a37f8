// herdguard/redis_lock.h — the fleet lock: one process in a fleet loads a key.
//
// `RedisLockManager::try_acquire(key)` runs, in one Lua script,
//   SET <prefix>lock:<key> <token> NX PX <lease>   and, when that succeeded,
//   INCR <prefix>fence:<key>                       (the fencing number)
// The token is 16 bytes from the OS CSPRNG (getrandom), hex encoded, so no
// other holder can guess it. Release and extension are compare-and-act Lua
// scripts: only the token's owner can delete or extend the lock.
//
// Leases and hung loaders: while a `LockHold` lives, a background thread
// extends its lease every lease/3 — but never past the hold's hard deadline
// (the load's own timeout), so a hung loader cannot hold a key forever: at
// most lease past that deadline, the lock expires and another process takes
// over. An extension that fails (the lock expired and someone else took it,
// Redis restarted and lost it) marks the hold lost and is counted.
//
// Fencing: every acquisition of a key gets a number that only grows (the
// fence key keeps it, with a long expiry refreshed on each acquisition).
// LockHold::fenced_write stores a value only while the hold's fence is still
// the key's latest, in the same Lua script as the check, so a holder whose
// lease ran out cannot overwrite what a later holder wrote.
//
// Thread safety: RedisLockManager is safe from any number of threads. A
// LockHold is used by one thread at a time (the loader that acquired it);
// the manager's extension thread only touches its atomic state.
//
// Example:
//   auto locks = herdguard::RedisLockManager::create({.lease = std::chrono::seconds(5)}, redis);
//   auto hold = (*locks)->try_acquire("sku-1",
//   herdguard::Deadline::after(std::chrono::seconds(10))); if (!hold && hold.error().kind ==
//   herdguard::ErrorKind::kLockNotAcquired) wait_for_ready(); else if (hold) {
//     auto written = (*hold)->fenced_write("shop:sku-1", bytes, stale_until);  // false: fenced off
//     (void)(*hold)->release();
//   }
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "herdguard/clock.h"
#include "herdguard/redis_client.h"
#include "herdguard/result.h"

namespace herdguard {

struct RedisLockOptions {
  // Lock keys are prefix + "lock:" + key, fence keys prefix + "fence:" + key.
  std::string prefix = "herdguard:v1:";
  // How long a lock lives without an extension. REQUIRES: >= 10 ms.
  Duration lease = std::chrono::seconds(5);
  // Extend held leases automatically (every lease/3, up to the hard deadline).
  bool auto_extend = true;
  // Expiry of fence keys, refreshed on each acquisition; must outlive any
  // holder. REQUIRES: > lease.
  Duration fence_ttl = std::chrono::hours(24);

  Result<void> validate() const;
};

struct RedisLockStats {
  std::uint64_t acquisitions = 0;        // try_acquire that got the lock
  std::uint64_t contentions = 0;         // try_acquire that found it held (kLockNotAcquired)
  std::uint64_t extensions = 0;          // successful lease extensions
  std::uint64_t extension_failures = 0;  // extensions that found the lock lost or failed
  std::uint64_t releases = 0;            // releases that deleted our lock
  std::uint64_t fenced_off_writes = 0;   // fenced_write refused: a later holder exists
  std::uint64_t errors = 0;              // Redis errors in any lock operation
};

class RedisLockManager;

// A held lock. Destroying it stops extension and releases it (best effort).
class LockHold {
 public:
  ~LockHold();
  LockHold(const LockHold&) = delete;
  LockHold& operator=(const LockHold&) = delete;

  const std::string& key() const noexcept { return key_; }
  const std::string& token() const noexcept { return token_; }
  std::uint64_t fence() const noexcept { return fence_; }
  // True once an extension found the lock gone or failed: the holder should
  // assume another process may be loading too. Its writes are fenced anyway.
  bool lost() const noexcept { return lost_.load(std::memory_order_acquire); }

  // SET redis_key bytes PXAT stale_until, only if this hold's fence is still
  // the latest for its key. Returns true when written, false when fenced off
  // (counted). Errors: kBackend/kTimeout from Redis.
  Result<bool> fenced_write(std::string_view redis_key, std::string_view bytes,
                            TimePoint stale_until);
  // Extends the lease to `lease` from now if still ours (marks the hold lost
  // otherwise). Returns false when the lock is no longer ours.
  // Errors: kBackend/kTimeout.
  Result<bool> extend(Duration lease);
  // Stops the automatic extension and deletes the lock if still ours.
  // Idempotent (later calls return true without a round trip). Returns false
  // when it was not ours any more. Errors: kBackend/kTimeout.
  Result<bool> release();

 private:
  friend class RedisLockManager;
  LockHold(RedisLockManager& manager, std::string key, std::string token, std::uint64_t fence,
           Deadline hard_deadline);
  RedisLockManager& manager_;
  const std::string key_;
  const std::string token_;
  const std::uint64_t fence_;
  const Deadline hard_deadline_;
  std::atomic<bool> lost_{false};
  std::atomic<bool> released_{false};
};

class RedisLockManager {
 public:
  // Errors: kInvalidArgument (options, null client). Starts the extension thread.
  static Result<std::unique_ptr<RedisLockManager>> create(RedisLockOptions options,
                                                          std::shared_ptr<RedisClient> client);
  // REQUIRES: every LockHold it returned has been destroyed.
  ~RedisLockManager();

  // Tries once to take the lock of `key`. With auto_extend, the lease is
  // extended while the hold lives, but not past `hard_deadline`.
  // Errors: kLockNotAcquired when another holder has it; kBackend/kTimeout
  // from Redis; kInternal if the OS CSPRNG fails.
  Result<std::unique_ptr<LockHold>> try_acquire(std::string_view key, Deadline hard_deadline);

  std::string lock_key(std::string_view key) const;
  std::string fence_key(std::string_view key) const;
  const RedisLockOptions& options() const noexcept;
  RedisLockStats stats() const;

 private:
  friend class LockHold;
  struct Impl;
  explicit RedisLockManager(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// 16 bytes from the OS CSPRNG, as 32 hex digits. Errors: kInternal.
Result<std::string> random_token();

}  // namespace herdguard
