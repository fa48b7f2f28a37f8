// Internal: the per-key ready channels of RedisNotifierOptions::per_key,
// over Redis 7 sharded pub/sub (SSUBSCRIBE / SPUBLISH).
//
// Why: on one shared channel every process receives every key's
// announcement — at 1,000 processes and 10,000 loads a second that is 10
// million deliveries a second, almost all to processes that wait for
// nothing. A key's own channel, <prefix>{<key>}:r (redis/key_layout.h),
// lives in the key's slot: only the primary owning that slot carries it,
// and only the processes subscribed to it receive the holder's SPUBLISH.
//
// Interest: want(key) when a waiter appears, unwant(key) when it leaves. A
// channel is subscribed when first wanted and kept for `linger` after its
// last waiter left (a key waited on once is usually waited on again at its
// next expiry, and a kept channel is armed at once), at most `max_idle`
// such idle channels (the longest idle go first). So a process hears the
// announcements of the keys it waits on plus a bounded set of keys it
// waited on recently.
//
// One thread serves one connection per node that carries a subscribed
// channel, with poll(2) over them and a pipe (want() and the destructor
// write to it), since hiredis's blocking API waits on one descriptor.
//
// A channel's states: kWanted (to subscribe), kSent (SSUBSCRIBE written),
// kArmed (confirmed: every SPUBLISH on it from now on reaches us),
// kLeaving (SUNSUBSCRIBE written). A channel with waiters is *lost* —
// back to kWanted, and `lost(key)` is called so its waiters look again —
// when its node's connection fails, stays silent past a heartbeat's PING,
// refuses the subscription, or when Redis drops it (its slot moved to
// another node: Redis pushes "sunsubscribe"). A MOVED reply to SSUBSCRIBE
// sends the channel on to the node it names.
//
// Thread safety: want(), unwant() and stats() are safe from any thread.
// The callbacks run on the subscriber thread, one at a time, without any
// lock of this class held (they may call want/unwant).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>

#include "herdguard/clock.h"
#include "herdguard/redis_client.h"
#include "herdguard/result.h"

namespace herdguard::internal {

struct ShardedSubscriberOptions {
  std::string prefix;  // the keys' prefix: channels are <prefix>{<key>}:r
  Duration linger = std::chrono::seconds(2);
  std::size_t max_idle = 1024;
  Duration heartbeat = std::chrono::seconds(1);
};

struct ShardedSubscriberCallbacks {
  std::function<void(const std::string& key)> armed;  // its subscription is confirmed
  std::function<void(const std::string& key)> lost;   // not armed any more, or failed
  std::function<void(std::string_view payload)> message;
};

struct ShardedSubscriberStats {
  std::uint64_t armed_now = 0;   // channels subscribed at this moment
  std::uint64_t subscribes = 0;  // subscriptions confirmed
  std::uint64_t losses = 0;      // subscriptions lost or refused while wanted
  std::uint64_t messages = 0;    // announcements received
};

class ShardedSubscriber {
 public:
  // Starts the thread. Errors: kInternal when the wake pipe cannot be made.
  static Result<std::unique_ptr<ShardedSubscriber>> create(ShardedSubscriberOptions options,
                                                           std::shared_ptr<RedisClient> client,
                                                           ShardedSubscriberCallbacks callbacks);
  // Stops the thread: at once, unless it is connecting to a node or
  // looking up the slot map (then within connect_timeout or
  // command_timeout).
  ~ShardedSubscriber();
  ShardedSubscriber(const ShardedSubscriber&) = delete;
  ShardedSubscriber& operator=(const ShardedSubscriber&) = delete;

  // One more waiter of `key`; subscribes its channel when it is not. Returns
  // whether the channel is armed now (else armed() or lost() follows).
  bool want(const std::string& key);
  // One waiter of `key` fewer. REQUIRES: a want(key) before.
  void unwant(const std::string& key);

  ShardedSubscriberStats stats() const;

 private:
  struct Impl;
  explicit ShardedSubscriber(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace herdguard::internal
