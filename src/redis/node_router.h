// Internal: sends each command to the node that must run it — in a Redis
// Cluster, the primary that owns its slot; behind Sentinels, the primary
// they name.
//
// Written on top of hiredis because Debian has no C or C++ Redis Cluster or
// Sentinel client (hiredis 0.14 has neither; hiredis-cluster is not
// packaged).
//
// Behind Sentinels (a kSentinel URL) every slot points at the one primary:
// `SENTINEL get-master-addr-by-name` is asked of the Sentinels in turn
// (without AUTH) when the first command needs it, after a connection
// failure or a READONLY error (a demoted primary), and at least every
// kSentinelRecheck while commands flow (a demoted primary still answers
// reads, so an error alone would not reveal a graceful failover).
//
// In a Cluster:
//   * the slot map: `CLUSTER SLOTS` asked from a known node (or a seed),
//     when the first command needs it, and again after a redirect, a
//     CLUSTERDOWN or a connection failure — one refresh at a time, at most
//     one per kMinRefreshInterval; the map is a table of 16,384 pointers,
//     so routing a command costs one relaxed atomic load;
//   * one bounded NodePool per node (redis/node_pool.h), created when the
//     node first appears and kept for the router's life (a cluster has few
//     nodes; a node that left keeps its idle connections until they fail);
//   * `MOVED slot host:port`: the slot is pointed at that node at once, a
//     refresh is asked for, and the command is sent there; `ASK slot
//     host:port` (a slot being migrated): ASKING and the command on one
//     connection to that node, the map unchanged; at most kMaxRedirects;
//   * reads and writes go to primaries (replicas are not read: herdguard's
//     versioned writes and reads must see one history).
//
// Thread safety: every member function is safe from any number of threads.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "herdguard/clock.h"
#include "herdguard/redis_client.h"
#include "herdguard/result.h"
#include "redis/cluster_slot.h"
#include "redis/node_pool.h"

namespace herdguard::internal {

class NodeRouter {
 public:
  static constexpr int kMaxRedirects = 5;
  static constexpr std::chrono::milliseconds kMinRefreshInterval{100};
  static constexpr std::chrono::milliseconds kSentinelRecheck{1000};

  // `url` is a kCluster URL (its seeds, user and password) or a kSentinel
  // one (the Sentinels, the primary's name, its user, password and db).
  // `options` and `counters` must outlive the router. Does not connect.
  NodeRouter(RedisUrl url, const RedisOptions& options, PoolCounters& counters);
  NodeRouter(const NodeRouter&) = delete;
  NodeRouter& operator=(const NodeRouter&) = delete;

  // Runs `argv` on the primary owning `slot` (any primary when nullopt),
  // following redirects; the retry rules are RedisClient::command's. The
  // first call loads the slot map (callers arriving meanwhile wait for it,
  // within their deadline). Errors: as RedisClient::command, plus kBackend
  // when no node answers for the slot map or after kMaxRedirects redirects.
  // With `follow_up`, that command follows on the same connection (see
  // NodePool::run) and its reply lands in `*follow_up_reply`.
  Result<RedisReply> run(std::span<const std::string_view> argv, std::optional<std::uint16_t> slot,
                         std::optional<Deadline> deadline, const FollowUp* follow_up = nullptr,
                         std::optional<Result<RedisReply>>* follow_up_reply = nullptr);

  // The URL of the primary owning `slot` (its host and port, the cluster's
  // user, password and db), loading the map first when it never was: for a
  // dedicated connection to that node (the sharded subscriber). Errors:
  // kBackend when no node answers or the slot has no known primary;
  // kTimeout when `deadline` passes first.
  Result<RedisUrl> owner_url(std::uint16_t slot, Deadline deadline);

  std::uint64_t redirects() const noexcept { return redirects_.load(std::memory_order_relaxed); }
  std::uint64_t refreshes() const noexcept { return refreshes_.load(std::memory_order_relaxed); }

 private:
  NodePool* pool_for(const std::string& host, int port);
  NodePool* owner(std::optional<std::uint16_t> slot);
  // Loads the map when it never was, waiting for a refresh another thread runs.
  Result<void> ensure_map(std::optional<Deadline> deadline);
  // A refresh unless one runs or ran less than kMinRefreshInterval ago.
  void refresh_soon(std::optional<Deadline> deadline);
  // Asks the known nodes, then the seeds, for CLUSTER SLOTS and applies the
  // first answer. REQUIRES: this thread set refreshing_.
  Result<void> refresh_now(std::optional<Deadline> deadline);
  void end_refresh();
  // Clears refreshing_ however refresh_now() ends (an exception included).
  struct EndRefresh {
    NodeRouter& router;
    ~EndRefresh() { router.end_refresh(); }
  };
  Result<void> apply_slots(const RedisReply& slots, const NodePool& asked);
  Result<void> ask_sentinels(Deadline bound);
  void point_every_slot_at(NodePool* primary);

  const RedisUrl cluster_;
  const bool sentinel_;
  // kSentinel: one pool per Sentinel, without AUTH (the URL's password is
  // the data nodes').
  std::vector<std::unique_ptr<NodePool>> sentinels_;
  const RedisOptions& options_;
  PoolCounters& counters_;

  // Every node seen, by "host:port". Guarded by pools_mutex_. Pools are
  // never removed, so the raw pointers in owners_ stay valid for the
  // router's life.
  std::mutex pools_mutex_;
  std::map<std::string, std::unique_ptr<NodePool>> pools_;
  // The primary of each slot, or null while unknown. Written by refreshes
  // and MOVED redirects, read without a lock: a reader may see the map half
  // updated during a refresh, which costs at most a MOVED redirect.
  std::array<std::atomic<NodePool*>, kClusterSlots> owners_{};
  std::atomic<bool> loaded_{false};  // a refresh has filled owners_ once
  std::atomic<std::uint32_t> round_robin_{0};

  // One refresh at a time: the thread that sets `refreshing_` runs it
  // (without the mutex: it does I/O), then clears it and notifies
  // `refreshed_`. `last_refresh_` rate-limits refresh_soon(). Both guarded
  // by refresh_mutex_. (Not a std::timed_mutex: gcc 12's ThreadSanitizer
  // does not see its try_lock_until.)
  std::mutex refresh_mutex_;
  std::condition_variable refreshed_;
  bool refreshing_ = false;
  std::chrono::steady_clock::time_point last_refresh_{};
  // kSentinel: when the primary was last asked for (steady ns), read by
  // every command without the mutex.
  std::atomic<std::int64_t> last_refresh_ns_{0};

  std::atomic<std::uint64_t> redirects_{0}, refreshes_{0};
};

}  // namespace herdguard::internal
