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
// Finishing in one round trip: LockHold::finish() stores the loaded value
// under the hold's snapshot (as RedisCache::write_loaded would), releases
// the lock and — when `announce_channel` is set and a process of the fleet
// found the lock held meanwhile — announces on that channel, with the value
// itself when it was stored and is at most `announce_value_max_bytes`, so
// the waiters need no GET. A try_acquire that finds the lock held leaves
// that "somebody waits" mark (a key that expires after a lease), so loads
// nobody waited for publish nothing. The acquire also returns the value L2
// holds at that moment: the holder's re-check costs no round trip.
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
//     auto done = (*hold)->finish(&entry);   // write, release, announce: one round trip
//   }
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
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
  // The pub/sub channel LockHold::finish announces on (the RedisNotifier's);
  // empty (and announce_per_key false): holders announce nothing and
  // try_acquire marks no waiter.
  std::string announce_channel{};
  // Announce on the key's own channel, `<prefix>{<key>}:r`, with SPUBLISH
  // (Redis 7 sharded pub/sub: the channel lives in the key's slot, so only
  // the processes subscribed to that key hear it) instead of
  // announce_channel. Must match the RedisNotifier's per_key option.
  bool announce_per_key = false;
  // The largest envelope an announcement carries; a larger value is
  // announced without it (its waiters read L2). With one shared channel
  // every process of the fleet receives every announcement, so this bounds
  // the fan-out's bytes.
  std::size_t announce_value_max_bytes = 16 * 1024;

  // Whether holders announce (a channel is set, or announce_per_key).
  bool announces() const noexcept { return announce_per_key || !announce_channel.empty(); }

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
  std::uint64_t announcements = 0;       // finishes that announced (a process waited)
  std::uint64_t announced_values = 0;    // of those, with the value in the message
  std::uint64_t late_releases = 0;       // locks the keeper released after their finish failed
};

// What LockHold::finish did, all in one script.
struct FinishOutcome {
  // The value's write, as RedisCache::write_loaded reports it; nullopt when
  // no value was given.
  std::optional<WriteOutcome> write{};
  bool released = false;   // the lock was still ours and is deleted
  bool announced = false;  // a waiter had marked the key: announced
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
  // otherwise), within the hard deadline and command_timeout. Returns false
  // when the lock is no longer ours.
  // Errors: kBackend/kTimeout.
  Result<bool> extend(Duration lease);
  // Stops the automatic extension and deletes the lock if still ours.
  // Idempotent (later calls return true without a round trip). Returns false
  // when it was not ours any more. Errors: kBackend/kTimeout.
  Result<bool> release();
  // The load is over: in one script, stores `entry` (when non-null; it is
  // encoded with the snapshot's version, REQUIRES: usable, i.e. not past
  // stale_until) under the snapshot, releases the lock and announces (see
  // the file comment). Also for a failed load (entry null), so that waiters
  // try at once. Bounded by the hard deadline while it has not passed, else
  // by 10 ms (the write is then refused as too late and the lease has run
  // out, but waiters are told at once if Redis answers within that grace;
  // a caller past its deadline is never held longer). After it, release()
  // is a no-op. When it fails (Redis unreachable or slow), the lock may
  // still be there — on a replica promoted after a failover, say — so with
  // auto_extend the lease keeper tries to release it every 100 ms until its
  // lease would have ended (late_releases): waiters elsewhere in the fleet
  // are not stalled for a whole lease once Redis answers again.
  // Errors: kBackend/kTimeout (then nothing is known about what it did);
  // kInvalidArgument when finish or release already ran.
  Result<FinishOutcome> finish(const CacheEntry* entry);
  // The value key's bytes when this hold was acquired (nullopt: none), so
  // the holder can re-check L2 without a round trip.
  const std::optional<std::string>& value_at_acquire() const noexcept { return value_at_acquire_; }

 private:
  friend class RedisLockManager;
  LockHold(RedisLockManager& manager, std::string key, std::string token, VersionSnapshot snapshot,
           Deadline hard_deadline, std::optional<std::string> value_at_acquire);
  // Marks the hold released and stops its extension; false if it already was.
  bool stop();
  RedisLockManager& manager_;
  const std::string key_;
  const std::string token_;
  const VersionSnapshot snapshot_;
  const Deadline hard_deadline_;
  const std::optional<std::string> value_at_acquire_;
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
  // Errors: kLockNotAcquired when another holder has it — then, with an
  // announce_channel, the key is marked as waited for, and `*seen_version`
  // (when non-null) is set to the key's version at that moment: an
  // announcement of a version below it was published before this call;
  // kTimeout when `hard_deadline` passed (before or during the call);
  // kBackend/kTimeout from Redis; kInternal if the OS CSPRNG fails.
  Result<std::unique_ptr<LockHold>> try_acquire(std::string_view key, Deadline hard_deadline,
                                                std::uint64_t* seen_version = nullptr);

  // The Redis keys of `key`'s lock, version, value and waiter mark.
  std::string lock_key(std::string_view key) const;
  std::string version_key(std::string_view key) const;
  std::string value_key(std::string_view key) const;
  std::string waiters_key(std::string_view key) const;
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
