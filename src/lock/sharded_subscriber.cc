// Per-key ready channels over sharded pub/sub (see sharded_subscriber.h).
#include "lock/sharded_subscriber.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <hiredis/hiredis.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <map>
#include <optional>
#include <vector>

#include "core/random.h"
#include "redis/cluster_slot.h"
#include "redis/hiredis_connection.h"
#include "redis/key_layout.h"

namespace herdguard::internal {
namespace {

constexpr auto kRelaxed = std::memory_order_relaxed;
using SteadyClock = std::chrono::steady_clock;
// The longest the thread sleeps in poll(2): lingering channels are let go
// and failed nodes retried at this granularity.
constexpr std::chrono::milliseconds kTick{100};
constexpr std::chrono::milliseconds kBackoffMin{50};
constexpr std::chrono::seconds kBackoffMax{2};

std::string node_name(const RedisUrl& url) {
  return url.transport == RedisUrl::Transport::kUnix ? url.socket_path
                                                     : fmt::format("{}:{}", url.host, url.port);
}

std::string_view text(const redisReply* r) {
  return r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS ||
                 r->type == REDIS_REPLY_ERROR
             ? std::string_view(r->str, r->len)
             : std::string_view();
}

}  // namespace

struct ShardedSubscriber::Impl {
  Impl(ShardedSubscriberOptions o, std::shared_ptr<RedisClient> c, ShardedSubscriberCallbacks cb)
      : options(std::move(o)), client(std::move(c)), callbacks(std::move(cb)) {}

  const ShardedSubscriberOptions options;
  const std::shared_ptr<RedisClient> client;
  const ShardedSubscriberCallbacks callbacks;

  enum class State { kWanted, kSent, kArmed, kLeaving };
  struct Channel {
    State state = State::kWanted;
    std::string node{};  // where it was sent (kSent, kArmed, kLeaving)
    int watchers = 0;
    SteadyClock::time_point idle_since{};  // when watchers last fell to 0
  };
  // Invariants: only the subscriber thread changes `state` and `node`, and
  // erases entries (a channel it let go, or one lost with no watchers);
  // want() inserts kWanted entries and counts watchers. Guarded by mutex.
  mutable std::mutex mutex;
  std::unordered_map<std::string, Channel> channels;
  bool stopping = false;  // guarded by mutex

  int wake_pipe[2] = {-1, -1};  // [1]: want() of a new channel, the destructor
  std::thread thread;

  std::atomic<std::uint64_t> armed_now{0}, subscribes{0}, losses{0}, messages{0};

  // What a node's connection awaits, in order: Redis answers commands in
  // the order they were written, so an error reply belongs to the front.
  enum class Sent { kSubscribe, kUnsubscribe, kPing };
  struct Pending {
    Sent what;
    std::string key;
  };
  // The subscriber thread's own state: no lock.
  struct Node {
    RedisUrl url;
    std::optional<RedisConnection> connection{};
    std::deque<Pending> pending{};
    SteadyClock::time_point last_heard{};
    bool ping_unanswered = false;
    SteadyClock::time_point retry_at{};
    Duration backoff = kBackoffMin;
  };
  std::map<std::string, Node> nodes;

  std::string channel_of(std::string_view key) const { return ready_channel(options.prefix, key); }
  // The key of a channel name; nullopt when it is not one of ours.
  std::optional<std::string> key_of(std::string_view channel) const {
    const std::size_t head = options.prefix.size() + 1;  // prefix and '{'
    if (channel.size() < head + 3 || !channel.starts_with(options.prefix) ||
        channel[options.prefix.size()] != '{' || !channel.ends_with("}:r")) {
      return std::nullopt;
    }
    return std::string(channel.substr(head, channel.size() - head - 3));
  }

  void wake_thread() {
    const char c = 'w';
    (void)!::write(wake_pipe[1], &c, 1);  // non-blocking: a full pipe wakes it already
  }

  // --- the thread ---------------------------------------------------------

  void run() {
    for (;;) {
      std::vector<std::string> to_route;
      std::vector<std::pair<std::string, std::string>> to_leave;  // key, node
      if (!plan(&to_route, &to_leave)) return;
      for (const auto& key : to_route) route(key);
      for (const auto& [key, node] : to_leave) leave(key, node);
      if (!wait_and_read()) return;
      // After reading: a PONG that arrived while routing blocked (a slot map
      // lookup, a connect) is not mistaken for silence.
      heartbeat();
    }
  }

  // Collects the channels to subscribe and to let go; false when stopping.
  bool plan(std::vector<std::string>* to_route,
            std::vector<std::pair<std::string, std::string>>* to_leave) {
    const auto now = SteadyClock::now();
    std::lock_guard lock(mutex);
    if (stopping) return false;
    std::vector<std::pair<SteadyClock::time_point, std::string>> idle;
    for (auto it = channels.begin(); it != channels.end();) {
      Channel& c = it->second;
      if (c.state == State::kWanted && c.watchers == 0) {
        it = channels.erase(it);  // lost while nobody waited: nothing to restore
        continue;
      }
      if (c.state == State::kWanted) to_route->push_back(it->first);
      if (c.state == State::kArmed && c.watchers == 0) idle.emplace_back(c.idle_since, it->first);
      ++it;
    }
    std::sort(idle.begin(), idle.end());
    const std::size_t over = idle.size() > options.max_idle ? idle.size() - options.max_idle : 0;
    for (std::size_t i = 0; i < idle.size(); ++i) {
      if (i >= over && now - idle[i].first < options.linger) break;
      Channel& c = channels[idle[i].second];
      c.state = State::kLeaving;
      to_leave->emplace_back(idle[i].second, c.node);
    }
    return true;
  }

  // Sends the SSUBSCRIBE of `key` to the node owning its channel's slot
  // (the channel's hash tag is the key's keys', whatever braces it holds).
  void route(const std::string& key) {
    auto url =
        client->node_url(channel_of(key), Deadline::after(client->options().command_timeout));
    if (!url) {
      lose({key});
      return;
    }
    subscribe(key, *url);
  }

  void subscribe(const std::string& key, const RedisUrl& url) {
    const std::string name = node_name(url);
    Node* node = connected(name, url);
    if (node == nullptr) {
      lose({key});
      return;
    }
    const std::string channel = channel_of(key);
    if (!send(*node, {"SSUBSCRIBE", channel})) {
      broken(name);
      lose({key});
      return;
    }
    node->pending.push_back({Sent::kSubscribe, key});
    std::lock_guard lock(mutex);
    auto it = channels.find(key);
    if (it != channels.end()) {
      it->second.state = State::kSent;
      it->second.node = name;
    }
  }

  void leave(const std::string& key, const std::string& name) {
    auto it = nodes.find(name);
    if (it == nodes.end() || !it->second.connection) {
      forget(key, name);  // its connection is gone, and the subscription with it
      return;
    }
    if (!send(it->second, {"SUNSUBSCRIBE", channel_of(key)})) {
      broken(name);  // this channel and every other on the node
      return;
    }
    it->second.pending.push_back({Sent::kUnsubscribe, key});
  }

  // The node's connection, opened when needed; null while it is backing off
  // or cannot be reached.
  Node* connected(const std::string& name, const RedisUrl& url) {
    Node& node = nodes.try_emplace(name, Node{.url = url}).first->second;
    if (node.connection) return &node;
    const auto now = SteadyClock::now();
    if (now < node.retry_at) return nullptr;
    const RedisOptions& o = client->options();
    auto opened = RedisConnection::open(url, o.connect_timeout, o.command_timeout,
                                        "redis notifier (sharded)");
    if (!opened) {
      node.retry_at =
          now + std::chrono::duration_cast<Duration>(node.backoff * uniform_real(0.5, 1.0));
      node.backoff = std::min<Duration>(node.backoff * 2, kBackoffMax);
      return nullptr;
    }
    node.connection.emplace(std::move(*opened));
    node.pending.clear();
    node.last_heard = now;
    node.ping_unanswered = false;
    return &node;
  }

  static bool send(Node& node, std::initializer_list<std::string_view> argv) {
    redisContext* c = node.connection->raw();
    std::vector<const char*> args;
    std::vector<std::size_t> lengths;
    for (std::string_view a : argv) {
      args.push_back(a.data());
      lengths.push_back(a.size());
    }
    if (redisAppendCommandArgv(c, static_cast<int>(args.size()), args.data(), lengths.data()) !=
        REDIS_OK) {
      return false;
    }
    int done = 0;
    while (done == 0) {
      if (redisBufferWrite(c, &done) != REDIS_OK) return false;
    }
    return true;
  }

  // PINGs a node that has been quiet for a heartbeat; drops one whose PING
  // went unanswered for another.
  void heartbeat() {
    const auto now = SteadyClock::now();
    std::vector<std::string> dead;
    for (auto& [name, node] : nodes) {
      if (!node.connection || now - node.last_heard < options.heartbeat) continue;
      if (node.ping_unanswered || !send(node, {"PING"})) {
        dead.push_back(name);
        continue;
      }
      node.pending.push_back({Sent::kPing, {}});
      node.ping_unanswered = true;
      node.last_heard = now;
    }
    for (const auto& name : dead) broken(name);
  }

  // Waits for replies (or a tick, or a wake-up) and handles them; false
  // when woken to stop.
  bool wait_and_read() {
    std::vector<pollfd> fds{{wake_pipe[0], POLLIN, 0}};
    std::vector<std::string> names;
    for (auto& [name, node] : nodes) {
      if (!node.connection) continue;
      fds.push_back({node.connection->raw()->fd, POLLIN, 0});
      names.push_back(name);
    }
    const auto tick = std::min<Duration>(kTick, options.heartbeat);
    const int n =
        ::poll(fds.data(), fds.size(),
               static_cast<int>(std::max<long long>(
                   1, std::chrono::duration_cast<std::chrono::milliseconds>(tick).count())));
    if (n < 0 && errno == EINTR) return true;
    if (n < 0) return false;
    if ((fds[0].revents & POLLIN) != 0) {
      char drain[64];
      while (::read(wake_pipe[0], drain, sizeof drain) > 0) {
      }
    }
    for (std::size_t i = 1; i < fds.size(); ++i) {
      if (fds[i].revents == 0) continue;
      read_from(names[i - 1]);
    }
    std::lock_guard lock(mutex);
    return !stopping;
  }

  void read_from(const std::string& name) {
    Node& node = nodes.at(name);
    if (!node.connection) return;  // dropped while handling another node's reply
    redisContext* c = node.connection->raw();
    if (redisBufferRead(c) != REDIS_OK) {
      broken(name);
      return;
    }
    node.last_heard = SteadyClock::now();
    node.ping_unanswered = false;
    for (;;) {
      void* raw = nullptr;
      if (redisGetReplyFromReader(c, &raw) != REDIS_OK) {
        broken(name);
        return;
      }
      if (raw == nullptr) return;
      const RedisReplyPtr reply(static_cast<redisReply*>(raw));
      if (!handle(name, reply.get())) {
        broken(name);
        return;
      }
      if (!node.connection) return;
    }
  }

  // One reply or push from `name`; false when it makes no sense (the
  // connection is then dropped).
  bool handle(const std::string& name, const redisReply* r) {
    Node& node = nodes.at(name);
    if (r->type == REDIS_REPLY_ERROR) {
      if (node.pending.empty()) return false;
      const Pending front = std::move(node.pending.front());
      node.pending.pop_front();
      if (front.what == Sent::kSubscribe) refused(front.key, name, text(r));
      if (front.what == Sent::kUnsubscribe) forget(front.key, name);
      return true;
    }
    // A PING answered outside subscribe mode (no channel on this
    // connection any more): a plain +PONG.
    if (r->type == REDIS_REPLY_STATUS && text(r) == "PONG" && !node.pending.empty() &&
        node.pending.front().what == Sent::kPing) {
      node.pending.pop_front();
      return true;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 2) return false;
    const std::string_view kind = text(r->element[0]);
    if (kind == "pong") {
      if (!node.pending.empty() && node.pending.front().what == Sent::kPing) {
        node.pending.pop_front();
      }
      return true;
    }
    if (r->elements != 3) return false;
    const std::optional<std::string> key = key_of(text(r->element[1]));
    if (kind == "smessage") {
      messages.fetch_add(1, kRelaxed);
      callbacks.message(text(r->element[2]));
      return true;
    }
    if (!key) return false;
    if (kind == "ssubscribe") {
      if (!node.pending.empty() && node.pending.front().what == Sent::kSubscribe) {
        node.pending.pop_front();
      }
      armed(*key, name);
      node.backoff = kBackoffMin;
      return true;
    }
    if (kind == "sunsubscribe") {
      if (!node.pending.empty() && node.pending.front().what == Sent::kUnsubscribe &&
          node.pending.front().key == *key) {
        node.pending.pop_front();
        forget(*key, name);
      } else {
        dropped(*key, name);  // Redis let it go: its slot moved
      }
      return true;
    }
    return false;
  }

  void armed(const std::string& key, const std::string& name) {
    {
      std::lock_guard lock(mutex);
      auto it = channels.find(key);
      if (it == channels.end() || it->second.state != State::kSent || it->second.node != name) {
        return;
      }
      it->second.state = State::kArmed;
    }
    armed_now.fetch_add(1, kRelaxed);
    subscribes.fetch_add(1, kRelaxed);
    callbacks.armed(key);
  }

  // SSUBSCRIBE answered by an error from `name`: follow a MOVED, else lose
  // the channel (the next round routes it again).
  void refused(const std::string& key, const std::string& name, std::string_view error) {
    const std::optional<Redirect> target = parse_redirect(error);
    if (target && target->moved) {
      RedisUrl url = client->url();
      url.transport = RedisUrl::Transport::kTcp;
      url.host = target->host.empty() ? nodes.at(name).url.host : target->host;
      url.port = target->port;
      url.seeds.clear();
      subscribe(key, url);
      return;
    }
    lose({key});
  }

  // Our SUNSUBSCRIBE on `name` was answered (or its connection is gone):
  // the channel is gone, unless a waiter came back meanwhile. Nothing to do
  // when the channel has moved on since (lost, and subscribed elsewhere).
  void forget(const std::string& key, const std::string& name) {
    {
      std::lock_guard lock(mutex);
      auto it = channels.find(key);
      if (it == channels.end() || it->second.node != name || it->second.state != State::kLeaving) {
        return;
      }
      armed_now.fetch_sub(1, kRelaxed);
      if (it->second.watchers == 0) {
        channels.erase(it);
        return;
      }
      it->second.state = State::kWanted;
      it->second.node.clear();
    }
    wake_thread();  // a waiter came back: subscribe again
  }

  // Redis unsubscribed us from a channel on `name`.
  void dropped(const std::string& key, const std::string& name) {
    {
      std::lock_guard lock(mutex);
      auto it = channels.find(key);
      if (it == channels.end() || it->second.node != name) return;
    }
    lose({key});
  }

  // The channels become kWanted again; those with waiters are told.
  void lose(const std::vector<std::string>& keys) {
    std::vector<std::string> told;
    {
      std::lock_guard lock(mutex);
      for (const auto& key : keys) {
        auto it = channels.find(key);
        if (it == channels.end()) continue;
        Channel& c = it->second;
        if (c.state == State::kArmed || c.state == State::kLeaving) {
          armed_now.fetch_sub(1, kRelaxed);
        }
        if (c.watchers == 0) {
          channels.erase(it);
          continue;
        }
        c.state = State::kWanted;
        c.node.clear();
        told.push_back(key);
      }
    }
    for (const auto& key : told) {
      losses.fetch_add(1, kRelaxed);
      callbacks.lost(key);
    }
  }

  // The node's connection failed: every channel on it is lost.
  void broken(const std::string& name) {
    Node& node = nodes.at(name);
    node.connection.reset();
    node.pending.clear();
    node.retry_at = SteadyClock::now() +
                    std::chrono::duration_cast<Duration>(node.backoff * uniform_real(0.5, 1.0));
    node.backoff = std::min<Duration>(node.backoff * 2, kBackoffMax);
    std::vector<std::string> on_it;
    {
      std::lock_guard lock(mutex);
      for (const auto& [key, c] : channels) {
        if (c.node == name && c.state != State::kWanted) on_it.push_back(key);
      }
    }
    lose(on_it);
  }
};

Result<std::unique_ptr<ShardedSubscriber>> ShardedSubscriber::create(
    ShardedSubscriberOptions options, std::shared_ptr<RedisClient> client,
    ShardedSubscriberCallbacks callbacks) {
  auto impl = std::make_unique<Impl>(std::move(options), std::move(client), std::move(callbacks));
  if (::pipe2(impl->wake_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
    return make_error(ErrorKind::kInternal,
                      fmt::format("redis notifier: pipe failed: {}", std::strerror(errno)));
  }
  Impl* raw = impl.get();
  impl->thread = std::thread([raw] { raw->run(); });
  return std::unique_ptr<ShardedSubscriber>(new ShardedSubscriber(std::move(impl)));
}

ShardedSubscriber::ShardedSubscriber(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

ShardedSubscriber::~ShardedSubscriber() {
  {
    std::lock_guard lock(impl_->mutex);
    impl_->stopping = true;
  }
  impl_->wake_thread();
  impl_->thread.join();
  ::close(impl_->wake_pipe[0]);
  ::close(impl_->wake_pipe[1]);
}

bool ShardedSubscriber::want(const std::string& key) {
  bool fresh = false;
  bool armed = false;
  {
    std::lock_guard lock(impl_->mutex);
    auto [it, inserted] = impl_->channels.try_emplace(key);
    Impl::Channel& c = it->second;
    ++c.watchers;
    // A new channel, or one lost while nobody waited: the thread routes it
    // now rather than at its next tick. A channel being let go is
    // subscribed again once its SUNSUBSCRIBE is answered (forget).
    fresh = inserted || (c.watchers == 1 && c.state == Impl::State::kWanted);
    armed = c.state == Impl::State::kArmed;
  }
  if (fresh) impl_->wake_thread();
  return armed;
}

void ShardedSubscriber::unwant(const std::string& key) {
  std::lock_guard lock(impl_->mutex);
  auto it = impl_->channels.find(key);
  if (it == impl_->channels.end() || it->second.watchers == 0) return;
  if (--it->second.watchers == 0) it->second.idle_since = SteadyClock::now();
}

ShardedSubscriberStats ShardedSubscriber::stats() const {
  return ShardedSubscriberStats{.armed_now = impl_->armed_now.load(kRelaxed),
                                .subscribes = impl_->subscribes.load(kRelaxed),
                                .losses = impl_->losses.load(kRelaxed),
                                .messages = impl_->messages.load(kRelaxed)};
}

}  // namespace herdguard::internal
