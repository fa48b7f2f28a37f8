#include "herdguard/redis_fleet.h"

namespace herdguard {

Result<RedisFleet> RedisFleet::connect(RedisFleetOptions options, std::shared_ptr<Clock> clock) {
  auto client = RedisClient::create(options.redis);
  if (!client) return std::unexpected(client.error());
  std::shared_ptr<RedisClient> shared_client = std::move(*client);
  auto l2 = RedisCache::create({.prefix = options.prefix,
                                .wait_replicas = options.wait_replicas,
                                .wait_timeout = options.wait_timeout},
                               shared_client, clock);
  if (!l2) return std::unexpected(l2.error());
  const std::string channel = options.prefix + "ready";
  using Ready = RedisFleetOptions::ReadyChannels;
  const bool per_key =
      options.notifications && (options.ready_channels == Ready::kPerKey ||
                                (options.ready_channels == Ready::kAuto &&
                                 shared_client->url().transport == RedisUrl::Transport::kCluster));
  auto locks = RedisLockManager::create(
      {.prefix = options.prefix,
       .lease = options.lease,
       .announce_channel = options.notifications && !per_key ? channel : std::string(),
       .announce_per_key = per_key},
      shared_client);
  if (!locks) return std::unexpected(locks.error());
  std::shared_ptr<RedisNotifier> notifier;
  if (options.notifications) {
    auto created = RedisNotifier::create({.channel = channel,
                                          .invalidation_channel = options.prefix + "invalidate",
                                          .per_key = per_key,
                                          .key_prefix = options.prefix},
                                         shared_client);
    if (!created) return std::unexpected(created.error());
    notifier = std::move(*created);
  }
  return RedisFleet{.client = std::move(shared_client),
                    .l2 = std::move(*l2),
                    .locks = std::move(*locks),
                    .notifier = std::move(notifier)};
}

void RedisFleet::apply_to(ProtectorOptions& options) const {
  options.l2 = l2;
  options.fleet_lock = locks;
  options.notifier = notifier;
}

}  // namespace herdguard
