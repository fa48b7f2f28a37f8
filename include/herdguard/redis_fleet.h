// herdguard/redis_fleet.h — everything a Protector needs to coordinate a fleet
// through one Redis, built from one URL.
//
// A RedisFleet holds the client (connection pool), the L2 cache, the fleet
// lock manager and the ready notifier, sharing one key prefix. Connecting is
// lazy: connect() succeeds while Redis is down (the Protector then degrades to
// in-process protection until Redis answers).
//
// Thread safety: the members are safe from any number of threads.
//
// Example:
//   auto fleet = herdguard::RedisFleet::connect({.redis = {.url = "redis://10.0.0.5:6379/0"},
//                                                .prefix = "shop:"});
//   if (!fleet) die(fleet.error().to_string());      // e.g. a malformed URL
//   herdguard::ProtectorOptions options{.ttl = std::chrono::minutes(5)};
//   fleet->apply_to(options);
//   auto protector = herdguard::Protector::create(std::move(options), repository);
#pragma once

#include <memory>
#include <string>

#include "herdguard/protector.h"
#include "herdguard/redis_cache.h"
#include "herdguard/redis_client.h"
#include "herdguard/redis_lock.h"
#include "herdguard/redis_notifier.h"

namespace herdguard {

struct RedisFleetOptions {
  RedisOptions redis{};
  // Prefix of every key herdguard writes (values, locks, versions; layout
  // in docs/upgrade.md) and of the notification channel. Processes share a
  // cache when they share a prefix. REQUIRES: no '{' or '}'.
  std::string prefix = "herdguard:";
  // Lease of the fleet lock (extended automatically while a load runs).
  Duration lease = std::chrono::seconds(5);
  // Waiters are woken by pub/sub; false makes them poll (for comparison).
  bool notifications = true;
  // Where a key's "ready" announcements go (redis_notifier.h): kShared, one
  // channel every process hears; kPerKey, the key's own sharded channel
  // (Redis >= 7), heard only by processes waiting for that key; kAuto,
  // kPerKey on a Redis Cluster and kShared otherwise. Every process of a
  // fleet must choose alike: a process on the other kind of channel is not
  // heard, and its waiters fall back to retry_interval.
  enum class ReadyChannels { kAuto, kShared, kPerKey };
  ReadyChannels ready_channels = ReadyChannels::kAuto;
  // RedisCacheOptions::wait_replicas / wait_timeout: set, invalidate and
  // tag invalidations wait for this many replicas (0: they do not).
  int wait_replicas = 0;
  Duration wait_timeout = std::chrono::milliseconds(100);
};

struct RedisFleet {
  std::shared_ptr<RedisClient> client;
  std::shared_ptr<RedisCache> l2;
  std::shared_ptr<RedisLockManager> locks;
  std::shared_ptr<RedisNotifier> notifier;  // null when notifications == false

  // Errors: kInvalidArgument for a bad URL or option. Does not fail when
  // Redis is down.
  static Result<RedisFleet> connect(RedisFleetOptions options,
                                    std::shared_ptr<Clock> clock = system_clock());

  // Sets options.l2, fleet_lock and notifier.
  void apply_to(ProtectorOptions& options) const;
};

}  // namespace herdguard
