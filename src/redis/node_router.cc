#include "redis/node_router.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <vector>

#include "core/random.h"
#include "redis/hiredis_connection.h"

namespace herdguard::internal {
namespace {

constexpr auto kRelaxed = std::memory_order_relaxed;

}  // namespace

NodeRouter::NodeRouter(RedisUrl url, const RedisOptions& options, PoolCounters& counters)
    : cluster_(std::move(url)),
      sentinel_(cluster_.transport == RedisUrl::Transport::kSentinel),
      options_(options),
      counters_(counters) {
  for (auto& owner : owners_) owner.store(nullptr, kRelaxed);
  if (sentinel_) {
    for (const auto& s : cluster_.seeds) {
      sentinels_.push_back(std::make_unique<NodePool>(
          RedisUrl{.transport = RedisUrl::Transport::kTcp, .host = s.host, .port = s.port},
          options_, counters_));
    }
  }
}

NodePool* NodeRouter::pool_for(const std::string& host, int port) {
  const std::string name = fmt::format("{}:{}", host, port);
  std::lock_guard lock(pools_mutex_);
  auto& pool = pools_[name];
  if (!pool) {
    RedisUrl node{.transport = RedisUrl::Transport::kTcp,
                  .host = host,
                  .port = port,
                  .user = cluster_.user,
                  .password = cluster_.password,
                  .db = cluster_.db};
    pool = std::make_unique<NodePool>(std::move(node), options_, counters_);
  }
  return pool.get();
}

NodePool* NodeRouter::owner(std::optional<std::uint16_t> slot) {
  if (slot) return owners_[*slot].load(std::memory_order_acquire);
  // Any primary: walk the slots from a rotating start (coprime stride) so
  // keyless commands (PUBLISH, PING) spread over the primaries.
  const std::uint32_t start = round_robin_.fetch_add(1, kRelaxed) * 5471u;
  for (int i = 0; i < kClusterSlots; i += 1024) {
    if (NodePool* p = owners_[(start + static_cast<std::uint32_t>(i)) % kClusterSlots].load(
            std::memory_order_acquire)) {
      return p;
    }
  }
  return nullptr;
}

Result<void> NodeRouter::ensure_map(std::optional<Deadline> deadline) {
  if (loaded_.load(std::memory_order_acquire)) return ok();
  // Waiting for another thread's first load is bounded like a refresh.
  auto until =
      std::chrono::steady_clock::now() + options_.connect_timeout + options_.command_timeout;
  if (deadline) until = std::min(until, deadline->when());
  {
    std::unique_lock lock(refresh_mutex_);
    while (refreshing_) {
      if (refreshed_.wait_until(lock, until) == std::cv_status::timeout && refreshing_) {
        return make_error(
            ErrorKind::kTimeout,
            fmt::format("redis {}: the slot map is still being loaded", cluster_.redacted()));
      }
    }
    if (loaded_.load(std::memory_order_acquire)) return ok();
    // The first load is not rate-limited beyond the pools' reconnect backoff.
    refreshing_ = true;
    last_refresh_ = std::chrono::steady_clock::now();
  }
  EndRefresh guard{*this};
  return refresh_now(deadline);
}

void NodeRouter::refresh_soon(std::optional<Deadline> deadline) {
  // A caller with no time left could not ask anyone: it must not use up
  // the rate limit (the next caller with time will refresh).
  if (deadline && deadline->expired()) return;
  {
    std::lock_guard lock(refresh_mutex_);
    const auto now = std::chrono::steady_clock::now();
    if (refreshing_ || now - last_refresh_ < kMinRefreshInterval) return;
    refreshing_ = true;
    last_refresh_ = now;
  }
  EndRefresh guard{*this};
  (void)refresh_now(deadline);
}

void NodeRouter::end_refresh() {
  {
    std::lock_guard lock(refresh_mutex_);
    refreshing_ = false;
  }
  refreshed_.notify_all();
}

Result<void> NodeRouter::refresh_now(std::optional<Deadline> deadline) {
  refreshes_.fetch_add(1, kRelaxed);
  last_refresh_ns_.store(std::chrono::steady_clock::now().time_since_epoch().count(), kRelaxed);
  // Bounded whatever the caller's deadline: connect_timeout + command_timeout in all.
  Deadline bound = Deadline::after(options_.command_timeout + options_.connect_timeout);
  if (deadline) bound = Deadline::earliest(bound, *deadline);
  if (sentinel_) return ask_sentinels(bound);
  // The nodes known, from a random one (so processes do not all ask the
  // same node), then the seeds.
  std::vector<NodePool*> candidates;
  {
    std::lock_guard lock(pools_mutex_);
    for (auto& [name, pool] : pools_) candidates.push_back(pool.get());
  }
  if (!candidates.empty()) {
    const auto first = static_cast<std::size_t>(
                           internal::uniform_real(0.0, static_cast<double>(candidates.size()))) %
                       candidates.size();
    std::rotate(candidates.begin(), candidates.begin() + static_cast<std::ptrdiff_t>(first),
                candidates.end());
  }
  for (const auto& seed : cluster_.seeds) {
    NodePool* p = pool_for(seed.host, seed.port);
    if (std::find(candidates.begin(), candidates.end(), p) == candidates.end()) {
      candidates.push_back(p);
    }
  }
  std::string last_error = "no node to ask";
  for (NodePool* pool : candidates) {
    if (bound.expired()) break;
    const std::string_view argv[] = {"CLUSTER", "SLOTS"};
    RunOutcome outcome;
    auto reply = pool->run(argv, bound, outcome);
    if (!reply) {
      last_error = reply.error().message;
      continue;
    }
    auto applied = apply_slots(*reply, *pool);
    if (applied) return applied;
    last_error = applied.error().message;
  }
  return make_error(ErrorKind::kBackend, fmt::format("redis {}: no node gave the slot map: {}",
                                                     cluster_.redacted(), last_error));
}

Result<void> NodeRouter::ask_sentinels(Deadline bound) {
  std::string last_error = "no Sentinel to ask";
  for (const auto& sentinel : sentinels_) {
    if (bound.expired()) break;
    const std::string_view argv[] = {"SENTINEL", "get-master-addr-by-name", cluster_.master_name};
    RunOutcome outcome;
    auto reply = sentinel->run(argv, bound, outcome);
    if (!reply) {
      last_error = reply.error().message;
      continue;
    }
    if (reply->is_nil()) {
      last_error = fmt::format("{} does not know a primary named '{}'", sentinel->where(),
                               cluster_.master_name);
      continue;
    }
    const auto address = sentinel_primary(*reply);
    if (!address) {
      last_error =
          fmt::format("{}: SENTINEL get-master-addr-by-name: not [host, port]", sentinel->where());
      continue;
    }
    point_every_slot_at(pool_for(address->host, address->port));
    return ok();
  }
  return make_error(ErrorKind::kBackend, fmt::format("redis {}: no Sentinel named the primary: {}",
                                                     cluster_.redacted(), last_error));
}

void NodeRouter::point_every_slot_at(NodePool* primary) {
  for (auto& owner : owners_) owner.store(primary, std::memory_order_release);
  loaded_.store(true, std::memory_order_release);
}

Result<void> NodeRouter::apply_slots(const RedisReply& slots, const NodePool& asked) {
  auto bad = [&](std::string_view what) {
    return make_error(ErrorKind::kBackend,
                      fmt::format("{}: CLUSTER SLOTS: {}", asked.where(), what));
  };
  if (slots.type != RedisReply::Type::kArray) return bad("not an array");
  // Parsed whole before anything is applied: a malformed reply changes nothing.
  struct Range {
    long long start, end;
    std::string host;
    int port;
  };
  std::vector<Range> ranges;
  for (const auto& range : slots.elements) {
    if (range.type != RedisReply::Type::kArray || range.elements.size() < 3) {
      return bad("a range is not [start, end, primary, ...]");
    }
    const auto& start = range.elements[0];
    const auto& end = range.elements[1];
    const auto& primary = range.elements[2];
    if (start.type != RedisReply::Type::kInteger || end.type != RedisReply::Type::kInteger ||
        start.integer < 0 || end.integer < start.integer || end.integer >= kClusterSlots) {
      return bad("a range's bounds are not slots");
    }
    if (primary.type != RedisReply::Type::kArray || primary.elements.size() < 2 ||
        (primary.elements[0].type != RedisReply::Type::kString && !primary.elements[0].is_nil()) ||
        primary.elements[1].type != RedisReply::Type::kInteger || primary.elements[1].integer < 1 ||
        primary.elements[1].integer > 65535) {
      return bad("a primary is not [host, port, ...]");
    }
    // An empty or NULL endpoint means "the node you asked, on this port";
    // "?" an endpoint unknown to the node asked: that range stays as it was.
    std::string host = primary.elements[0].str;
    if (host == "?") continue;
    if (host.empty()) host = asked.url().host;
    ranges.push_back({start.integer, end.integer, std::move(host),
                      static_cast<int>(primary.elements[1].integer)});
  }
  if (ranges.empty()) return bad("no slot is assigned (is the cluster created?)");
  // Slots no range names keep their last known owner.
  for (const auto& r : ranges) {
    NodePool* owner = pool_for(r.host, r.port);
    for (long long s = r.start; s <= r.end; ++s) {
      owners_[static_cast<std::size_t>(s)].store(owner, std::memory_order_release);
    }
  }
  loaded_.store(true, std::memory_order_release);
  return ok();
}

Result<RedisUrl> NodeRouter::owner_url(std::uint16_t slot, Deadline deadline) {
  if (auto ready = ensure_map(deadline); !ready) return std::unexpected(ready.error());
  NodePool* pool = owner(slot);
  if (pool == nullptr) {
    refresh_soon(deadline);
    pool = owner(slot);
  }
  if (pool == nullptr) {
    return make_error(ErrorKind::kBackend, fmt::format("redis {}: slot {} has no known primary",
                                                       cluster_.redacted(), slot));
  }
  return pool->url();
}

Result<RedisReply> NodeRouter::run(std::span<const std::string_view> argv,
                                   std::optional<std::uint16_t> slot,
                                   std::optional<Deadline> deadline, const FollowUp* follow_up,
                                   std::optional<Result<RedisReply>>* follow_up_reply) {
  if (auto ready = ensure_map(deadline); !ready) return std::unexpected(ready.error());
  if (sentinel_) {
    // A graceful failover leaves the old primary answering reads: look again
    // now and then even while nothing fails.
    const auto since = std::chrono::steady_clock::now().time_since_epoch().count() -
                       last_refresh_ns_.load(kRelaxed);
    if (since > std::chrono::nanoseconds(kSentinelRecheck).count()) refresh_soon(deadline);
  }
  NodePool* pool = owner(slot);
  if (pool == nullptr) {
    refresh_soon(deadline);
    pool = owner(slot);
    if (pool == nullptr) {
      return make_error(ErrorKind::kBackend,
                        fmt::format("redis {}: slot {} has no known primary", cluster_.redacted(),
                                    slot ? static_cast<int>(*slot) : -1));
    }
  }
  bool asking = false;
  // Set by a MOVED: the map is looked at again once the command is done.
  bool refresh_after = false;
  struct RefreshAfter {
    NodeRouter& router;
    const bool& wanted;
    std::optional<Deadline> deadline;
    ~RefreshAfter() {
      if (wanted) router.refresh_soon(deadline);
    }
  } refresh_at_exit{*this, refresh_after, deadline};
  for (int redirect = 0;; ++redirect) {
    RunOutcome outcome;
    auto reply = pool->run(argv, deadline, outcome, asking, follow_up);
    // As for a standalone server: a reused connection that broke before the
    // command was written whole never ran it; send it once more.
    if (!reply && outcome.failure == SendFailure::kNotSent && outcome.reused) {
      reply = pool->run(argv, deadline, outcome, asking, follow_up);
    }
    if (reply) {
      if (follow_up_reply != nullptr) *follow_up_reply = std::move(outcome.follow_up);
      return reply;
    }
    if (outcome.failure != SendFailure::kErrorReply) {
      // The node may be gone (a failover): look again, for later commands —
      // unless no connection was even borrowed for lack of a free one (a
      // busy pool says nothing about the node).
      if (outcome.borrowed || reply.error().kind != ErrorKind::kTimeout) refresh_after = true;
      return reply;
    }
    if (outcome.error_reply.starts_with("CLUSTERDOWN") ||
        outcome.error_reply.starts_with("READONLY")) {
      // The cluster lost a node, or this "primary" was demoted (a failover).
      refresh_after = true;
      return reply;
    }
    const auto target = parse_redirect(outcome.error_reply);
    if (!target) return reply;  // an ordinary error reply
    if (redirect >= kMaxRedirects) {
      return make_error(ErrorKind::kBackend,
                        fmt::format("{}: more than {} cluster redirects, the last: {}",
                                    pool->where(), kMaxRedirects, outcome.error_reply));
    }
    redirects_.fetch_add(1, kRelaxed);
    NodePool* next = pool_for(target->host.empty() ? pool->url().host : target->host, target->port);
    if (target->moved) {
      owners_[target->slot].store(next, std::memory_order_release);
      // One slot moved is rarely alone (a resharding, a failover): look at
      // the whole map — after this command, which has its owner already.
      refresh_after = true;
    }
    asking = !target->moved;
    pool = next;
  }
}

}  // namespace herdguard::internal
