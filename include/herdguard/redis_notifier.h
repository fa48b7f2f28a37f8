// herdguard/redis_notifier.h — "the value of key K is ready", across a fleet.
//
// Processes that lost the fleet lock wait for the winner's value. Instead of
// polling Redis, they wait on a `Waiter` that is woken when any process
// publishes K on one pub/sub channel. Each process has one subscriber
// connection (its own thread), shared by all keys: a PUBLISH carries the key,
// and the notifier wakes the local waiters of that key.
//
// An announcement may carry the value itself (LockHold::finish, redis_lock.h,
// sends it when the value is small enough): the waiter then takes it from
// Waiter::announcement() and needs no GET. The message layout (format 2) is
// in src/lock/announcement.h; a message of format 1 (the key alone, what
// publish() and earlier releases send) wakes the waiters without a value.
//
// No lost wake-ups: the subscription is permanent, so a caller that calls
// watch(K) and *then* re-checks the cache either finds the value or is woken
// by the publish that follows its write.
//
// When pub/sub is unavailable (Redis down, connection lost), subscribed() is
// false and callers fall back to polling with jittered backoff; the
// subscriber reconnects with backoff in the background, and wakes every
// waiter when the subscription is (re)established, since publishes may have
// been missed in the gap.
//
// Per-key channels (options.per_key, Redis 7): a key's announcements go to
// its own channel, <prefix>{<key>}:r, by SPUBLISH, and a process subscribes
// (SSUBSCRIBE, sharded pub/sub) only to the channels of the keys it waits
// on, and keeps each for `linger` after its last waiter (at most
// max_idle_channels such). In a Redis Cluster the channel lives on the node
// owning the key's slot, with one subscriber connection per such node: a
// process receives the announcements of the keys it waits on (and of a
// bounded set it waited on recently), not the whole fleet's. Such a
// subscription is not there before the first watch(K): a Waiter is armed()
// once it is confirmed, and a caller that checked the cache before that
// checks it once more after wait_armed() (the load coordinator does: a
// publish between its check and the subscription would go unheard).
//
// The same subscriber carries the L1 backplane when invalidation_channel is
// set: Protector::set() and invalidate() publish the key there, and every
// other process's Protector, listening through listen(), drops its L1 copy.
// A listener is also told each time the subscription is lost or
// (re)established, so it can stop trusting what it cached while
// invalidations could be missed.
//
// Thread safety: all methods are safe from any number of threads. A Waiter
// is used by one thread.
//
// Example:
//   auto notifier = herdguard::RedisNotifier::create({}, redis);
//   auto waiter = (*notifier)->watch("sku-1");        // before re-checking L2
//   if (auto hit = l2.get("sku-1"); hit && *hit) return **hit;
//   waiter->wait(deadline);                            // true: someone published
//   ...
//   (*notifier)->publish("sku-1");                     // the winner, after writing
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "herdguard/clock.h"
#include "herdguard/redis_client.h"
#include "herdguard/result.h"

namespace herdguard {

struct RedisNotifierOptions {
  // The one channel every process of the fleet publishes and subscribes to.
  std::string channel = "herdguard:ready";
  // The L1 backplane's channel (RedisFleet: prefix + "invalidate"); empty:
  // no backplane (publish_invalidation fails, listeners hear only
  // resubscriptions). REQUIRES: differs from `channel`.
  std::string invalidation_channel{};
  // After this long without a message, the subscriber PINGs; a PING not
  // answered within another `heartbeat` means the connection is dead (a
  // half-open TCP connection never reports EOF: a crashed host, a dropped
  // NAT entry): it reconnects, which counts as a gap (listeners resync,
  // waiters look again). REQUIRES: > 0.
  Duration heartbeat = std::chrono::seconds(1);
  // Announcements on per-key channels (see the file comment); the lock
  // manager must announce the same way (RedisLockOptions::announce_per_key).
  // `channel` still carries announcements of processes that publish there.
  bool per_key = false;
  // per_key: the keys' prefix (RedisLockOptions::prefix), how long a
  // channel stays subscribed after its last waiter left, and how many such
  // idle channels are kept at most. REQUIRES: linger >= 0.
  std::string key_prefix = "herdguard:";
  Duration linger = std::chrono::seconds(2);
  std::size_t max_idle_channels = 1024;
};

// What a listener of the backplane is told. Both are called on the
// subscriber thread, one call at a time, listeners in the order they
// registered, and must be quick and must not call
// listen() or destroy an InvalidationSubscription (that would deadlock).
struct InvalidationListener {
  // A process published an invalidation of `key`; `origin` is the id it
  // published with (a listener skips its own).
  std::function<void(std::uint64_t origin, std::string_view key)> invalidated{};
  // A process invalidated `tag` (empty: cleared everything) at `version`.
  std::function<void(std::uint64_t origin, std::string_view tag, std::uint64_t version)>
      tag_invalidated{};
  // The subscription was lost, or (re)established: invalidations published
  // while it was down are never heard. Called at both ends of every gap
  // (and once at the first subscription).
  std::function<void()> resync{};
};

// A holder's announcement that a key's load is over.
struct Announcement {
  // The version the holder loaded under (its lock snapshot); 0 when the
  // message did not say (format 1).
  std::uint64_t version = 0;
  // The value's envelope as stored in L2 (envelope.h); nullopt when the
  // value was not stored (failed, superseded) or too large to announce.
  std::optional<std::string> envelope{};
};

struct RedisNotifierStats {
  std::uint64_t published = 0;                // publish() calls that reached Redis
  std::uint64_t received = 0;                 // messages received on the channel
  std::uint64_t with_value = 0;               // of those, carrying the value
  std::uint64_t wakeups = 0;                  // waiters woken by a message
  std::uint64_t resubscribes = 0;             // subscriptions (re)established
  std::uint64_t errors = 0;                   // publish failures and lost subscriptions
  std::uint64_t invalidations_published = 0;  // publish_invalidation() calls that reached Redis
  std::uint64_t invalidations_received = 0;   // well-formed invalidations heard (tags too)
  std::uint64_t malformed = 0;  // messages on the invalidation channel that were not ours: ignored
  // per_key: channels subscribed now, subscriptions confirmed, and
  // subscriptions lost (node failed, slot moved) or refused while waited on.
  std::uint64_t key_channels = 0;
  std::uint64_t key_subscribes = 0;
  std::uint64_t key_channel_losses = 0;
};

class InvalidationSubscription;

class RedisNotifier;

// Interest in one key. Created by watch(); deregisters on destruction.
class Waiter {
 public:
  ~Waiter();
  Waiter(const Waiter&) = delete;
  Waiter& operator=(const Waiter&) = delete;

  // Blocks until notified (since watch() or the last wait that returned
  // true) or until `deadline`. Returns true when notified. Consumes the
  // notification.
  bool wait(Deadline deadline);
  // The latest announcement of the key that carried a version (format 2)
  // since watch(), or null. Not consumed by wait().
  std::shared_ptr<const Announcement> announcement() const;
  // Whether an announcement of the key published from now on wakes this
  // waiter: the notifier is subscribed (one channel), or the key's channel
  // is (per_key).
  bool armed() const;
  // Blocks until armed(), a notification, or `deadline`; returns armed().
  // Returns at once with one channel, and when the key's subscription
  // failed (its node is down: poll instead). Consumes nothing.
  bool wait_armed(Deadline deadline);

 private:
  friend class RedisNotifier;
  Waiter(RedisNotifier& owner, std::string key, bool per_key);
  void notify(const std::shared_ptr<const Announcement>& announcement);
  // Returns whether it was armed before.
  bool set_armed(bool armed);
  RedisNotifier& owner_;
  const std::string key_;
  const bool per_key_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  bool notified_ = false;                             // guarded by mutex_
  bool armed_ = false;                                // per_key; guarded by mutex_
  bool failed_ = false;                               // per_key; guarded by mutex_
  std::shared_ptr<const Announcement> announcement_;  // guarded by mutex_
};

// A listener's registration. Destroying it deregisters the listener, after
// waiting for a call of it in progress (so what it uses may go after).
// REQUIRES: destroyed before its notifier, and not from the listener itself.
class InvalidationSubscription {
 public:
  ~InvalidationSubscription();
  InvalidationSubscription(const InvalidationSubscription&) = delete;
  InvalidationSubscription& operator=(const InvalidationSubscription&) = delete;

 private:
  friend class RedisNotifier;
  InvalidationSubscription(RedisNotifier& owner, std::uint64_t id) : owner_(owner), id_(id) {}
  RedisNotifier& owner_;
  const std::uint64_t id_;
};

class RedisNotifier {
 public:
  // Errors: kInvalidArgument (null client, empty channel). Starts the
  // subscriber thread, which connects with `client`'s URL and timeouts; a
  // Redis that is down is not an error here (subscribed() stays false).
  static Result<std::unique_ptr<RedisNotifier>> create(RedisNotifierOptions options,
                                                       std::shared_ptr<RedisClient> client);
  // Stops the subscriber thread. REQUIRES: no Waiter outlives the notifier.
  ~RedisNotifier();

  // Registers interest in `key`; call before re-checking the cache.
  std::unique_ptr<Waiter> watch(std::string_view key);
  // PUBLISH channel key. Errors: kBackend/kTimeout (counted).
  Result<void> publish(std::string_view key);
  // PUBLISH invalidation_channel, naming `key` and `origin`. Errors:
  // kInvalidArgument (no invalidation_channel, empty key); kBackend/kTimeout
  // (counted in errors).
  Result<void> publish_invalidation(std::uint64_t origin, std::string_view key);
  // Registers `listener` until the returned subscription is destroyed. When
  // the notifier is not subscribed yet, resync() is called once it is.
  std::unique_ptr<InvalidationSubscription> listen(InvalidationListener listener);
  // PUBLISH invalidation_channel: `tag` (empty: clear) invalidated at
  // `version`, by `origin`. Errors: as publish_invalidation (kInvalidArgument
  // also for version 0).
  Result<void> publish_tag_invalidation(std::uint64_t origin, std::string_view tag,
                                        std::uint64_t version);
  // Whether options.invalidation_channel is set (the backplane is possible).
  bool has_invalidation_channel() const noexcept;

  // Whether the subscription is currently established.
  bool subscribed() const noexcept;
  // Blocks until subscribed() or `deadline`; true when subscribed. For
  // start-up and tests.
  bool wait_subscribed(Deadline deadline) const;

  RedisNotifierStats stats() const;

 private:
  friend class Waiter;
  friend class InvalidationSubscription;
  struct Impl;
  explicit RedisNotifier(std::unique_ptr<Impl> impl);
  void remove(Waiter* waiter);
  void remove_listener(std::uint64_t id);
  std::unique_ptr<Impl> impl_;
};

}  // namespace herdguard
