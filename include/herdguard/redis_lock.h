// herdguard/redis_lock.h — the fleet lock: one process in a fleet loads a key.
//
// `RedisLockManager::try_acquire(key)` runs, in one Lua script,
//   SET <lock key> <token> PX <lease>   when the lock is free (or already ours),
//   and bumps the key's version          (its fencing number and snapshot)
// The token is 16 bytes from the OS CSPRNG (getrandom), hex encoded, so no
// other holder can guess it. Release and extension are compare-and-act Lua
// scripts: only the token's owner can delete or extend the lock.
//
// Versions are fences: the version the acquire returns (LockHold::snapshot)
// is the load's version snapshot for RedisCache::write_loaded (redis_cache.h).
// Because every acquisition bumps the version, a holder whose lease ran out
// cannot overwrite what a later holder wrote, and because set/invalidate bump
// it too, no holder overwrites them. The version key is kept until the
// hold's hard deadline, and the write script refuses writes after it.
//
// Leases and hung loaders: while a `LockHold` lives, a background thread
// extends its lease every lease/3 — but never past the hold's hard deadline
// (the load's own timeout), so a hung loader cannot hold a key forever: at
// most lease past that deadline, the lock expires and another process takes
// over. An extension that fails (the lock expired and someone else took it,
// Redis restarted and lost it) marks the hold lost and is counted.
//
// A lost reply: when the connection fails after the acquire script was sent,
// it may have run and taken the lock. The script is idempotent per token
// (acquiring a lock we already hold succeeds again), so try_acquire sends it
// once more with the same token, instead of leaving an orphaned lock that
// would block the key for a lease.
//
// Thread safety: RedisLockManager is safe from any number of threads. A
// LockHold is used by one thread at a time (the loader that acquired it);
// the manager's extension thread only touches its atomic state.
//
// Example:
//   auto locks = herdguard::RedisLockManager::create({.lease = std::chrono::seconds(5)}, redis);
//   auto hold = (*locks)->try_acquire("sku-1", load_deadline);
//   if (!hold && hold.error().kind == herdguard::ErrorKind::kLockNotAcquired) wait_for_ready();
//   else if (hold) {
//     auto entry = load_from_database("sku-1");
//     auto outcome = l2.write_loaded("sku-1", entry, (*hold)->snapshot(), load_deadline);
//     (void)(*hold)->release();
//   }
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "herdguard/clock.h"
#include "herdguard/redis_cache.h"
#include "herdguard/redis_client.h"
#include "herdguard/result.h"

namespace herdguard {

struct RedisLockOptions {
  // The prefix of the lock and version keys (layout: docs/upgrade.md). Must
  // be the RedisCache's prefix: the acquire bumps the version the cache's
  // writes compare. REQUIRES: no '{' or '}', <= 256 bytes.
  std::string prefix = "herdguard:";
  // How long a lock lives without an extension. REQUIRES: 10 ms..1 h.
  Duration lease = std::chrono::seconds(5);
  // Extend held leases automatically (every lease/3, up to the hard deadline).
  bool auto_extend = true;

  Result<void> validate() const;
};

struct RedisLockStats {
  std::uint64_t acquisitions = 0;        // try_acquire that got the lock
  std::uint64_t contentions = 0;         // try_acquire that found it held (kLockNotAcquired)
  std::uint64_t extensions = 0;          // successful lease extensions
  std::uint64_t extension_failures = 0;  // extensions that found the lock lost or failed
  std::uint64_t releases = 0;            // releases that deleted our lock
  std::uint64_t resent_acquires = 0;     // acquires sent again after a lost reply
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
  // The key's version as this acquisition set it (the fencing number), and
  // until when (Redis's clock) a write under it is accepted: the hold's
  // hard deadline.
  const VersionSnapshot& snapshot() const noexcept { return snapshot_; }
  // True once an extension found the lock gone or failed: the holder should
  // assume another process may be loading too. Its writes are fenced anyway.
  bool lost() const noexcept { return lost_.load(std::memory_order_acquire); }

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
  LockHold(RedisLockManager& manager, std::string key, std::string token, VersionSnapshot snapshot,
           Deadline hard_deadline);
  RedisLockManager& manager_;
  const std::string key_;
  const std::string token_;
  const VersionSnapshot snapshot_;
  const Deadline hard_deadline_;
  std::atomic<bool> lost_{false};
  std::atomic<bool> released_{false};
};

class RedisLockManager {
 public:
  // Errors: kInvalidArgument (options, null client), kInternal when the
  // extension thread cannot start.
  static Result<std::unique_ptr<RedisLockManager>> create(RedisLockOptions options,
                                                          std::shared_ptr<RedisClient> client);
  // REQUIRES: every LockHold it returned has been destroyed.
  ~RedisLockManager();

  // Tries once to take the lock of `key` (one round trip; two when the first
  // reply was lost). With auto_extend, the lease is extended while the hold
  // lives, but not past `hard_deadline`. Every Redis wait ends by
  // `hard_deadline`.
  // Errors: kLockNotAcquired when another holder has it; kTimeout when
  // `hard_deadline` passed (before or during the call); kBackend/kTimeout
  // from Redis; kInternal if the OS CSPRNG fails.
  Result<std::unique_ptr<LockHold>> try_acquire(std::string_view key, Deadline hard_deadline);

  // The Redis keys of `key`'s lock and version.
  std::string lock_key(std::string_view key) const;
  std::string version_key(std::string_view key) const;
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
