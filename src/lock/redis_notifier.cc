// Ready notifications over Redis pub/sub (see include/herdguard/redis_notifier.h).
//
// The subscriber thread owns one hiredis connection in subscribe mode. It
// waits with poll(2) on that connection and on a pipe the destructor writes
// to, so shutdown never waits for Redis. hiredis's blocking API cannot wait
// on two descriptors, hence the poll loop around redisBufferRead and
// redisGetReplyFromReader.
#include "herdguard/redis_notifier.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <hiredis/hiredis.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <optional>
#include <span>
#include <thread>
#include <unordered_map>
#include <vector>

#include "core/random.h"
#include "lock/announcement.h"
#include "lock/invalidation_message.h"
#include "lock/sharded_subscriber.h"
#include "redis/hiredis_connection.h"
#include "redis/key_layout.h"

namespace herdguard {
namespace {

constexpr auto kRelaxed = std::memory_order_relaxed;

}  // namespace

struct RedisNotifier::Impl {
  Impl(RedisNotifierOptions o, std::shared_ptr<RedisClient> c)
      : options(std::move(o)), client(std::move(c)) {}

  const RedisNotifierOptions options;
  const std::shared_ptr<RedisClient> client;

  // Guarded by waiters_mutex. Lock order: waiters_mutex, then a Waiter's own
  // mutex (in notify); a Waiter never takes waiters_mutex while holding its own.
  std::mutex waiters_mutex;
  std::unordered_map<std::string, std::vector<Waiter*>> waiters;

  // Guarded by state_mutex; `subscribed` is also readable without it.
  mutable std::mutex state_mutex;
  mutable std::condition_variable state_changed;
  std::atomic<bool> subscribed{false};
  bool stopping = false;

  int wake_pipe[2] = {-1, -1};  // the destructor writes to [1] to stop the thread
  std::thread subscriber;
  // per_key: the keys' own channels. Its callbacks take waiters_mutex (so
  // the lock order is waiters_mutex, then the subscriber's own); destroyed
  // first.
  std::unique_ptr<internal::ShardedSubscriber> sharded;

  std::atomic<std::uint64_t> published{0}, received{0}, with_value{0}, wakeups{0}, resubscribes{0},
      errors{0}, invalidations_published{0}, invalidations_received{0}, malformed{0};

  // Backplane listeners by id, so in registration order. Guarded by
  // listeners_mutex, which is also held while one is called: deregistering
  // waits for a call in progress.
  std::mutex listeners_mutex;
  std::map<std::uint64_t, InvalidationListener> listeners;
  std::uint64_t next_listener_id = 1;  // guarded by listeners_mutex

  void tell_invalidated(std::string_view payload) {
    if (auto tag = internal::decode_tag_invalidation(payload)) {
      invalidations_received.fetch_add(1, kRelaxed);
      std::lock_guard lock(listeners_mutex);
      for (auto& [id, listener] : listeners) {
        if (listener.tag_invalidated) listener.tag_invalidated(tag->origin, tag->tag, tag->version);
      }
      return;
    }
    const std::optional<internal::DecodedInvalidation> decoded =
        internal::decode_invalidation(payload);
    if (!decoded) {
      malformed.fetch_add(1, kRelaxed);
      return;
    }
    invalidations_received.fetch_add(1, kRelaxed);
    std::lock_guard lock(listeners_mutex);
    for (auto& [id, listener] : listeners) {
      if (listener.invalidated) listener.invalidated(decoded->origin, decoded->key);
    }
  }

  void tell_resync() {
    std::lock_guard lock(listeners_mutex);
    for (auto& [id, listener] : listeners) {
      if (listener.resync) listener.resync();
    }
  }

  void wake(const std::string& key, const std::shared_ptr<const Announcement>& announcement) {
    std::lock_guard lock(waiters_mutex);
    auto it = waiters.find(key);
    if (it == waiters.end()) return;
    for (Waiter* w : it->second) {
      w->notify(announcement);
      wakeups.fetch_add(1, kRelaxed);
    }
  }

  // per_key: the key's channel is (no longer) subscribed.
  void arm(const std::string& key, bool armed) {
    std::lock_guard lock(waiters_mutex);
    auto it = waiters.find(key);
    if (it == waiters.end()) return;
    for (Waiter* w : it->second) {
      // A waiter that was armed may have missed an announcement: it looks
      // again. One that was not is only told (wait_armed returns): waking
      // it would make it skip its polling backoff.
      if (w->set_armed(armed) && !armed) w->notify(nullptr);
    }
  }

  void wake_all() {
    std::lock_guard lock(waiters_mutex);
    for (auto& [key, list] : waiters) {
      for (Waiter* w : list) w->notify(nullptr);
    }
  }

  bool should_stop() const {
    std::lock_guard lock(state_mutex);
    return stopping;
  }

  void set_subscribed(bool value) {
    {
      std::lock_guard lock(state_mutex);
      subscribed.store(value, std::memory_order_release);
    }
    state_changed.notify_all();
  }

  // Sleeps for `d` unless the destructor wakes us first.
  void pause(Duration d) {
    pollfd fd{wake_pipe[0], POLLIN, 0};
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
    (void)::poll(&fd, 1, static_cast<int>(std::max<long long>(1, ms)));
  }

  // A connection subscribed to the channel, or nullopt (Redis down, AUTH
  // refused...). SUBSCRIBE's first reply confirms the subscription.
  std::optional<internal::RedisConnection> connect() {
    const RedisOptions& o = client->options();
    auto c = internal::RedisConnection::open(client->url(), o.connect_timeout, o.command_timeout,
                                             "redis notifier");
    if (!c) return std::nullopt;
    internal::SendFailure failure;
    // Both channels in one command: Redis subscribes to both before it
    // replies, so the first confirmation covers them.
    const std::string_view both[] = {"SUBSCRIBE", options.channel, options.invalidation_channel};
    const std::string_view one[] = {"SUBSCRIBE", options.channel};
    const std::span<const std::string_view> argv = options.invalidation_channel.empty()
                                                       ? std::span<const std::string_view>(one)
                                                       : std::span<const std::string_view>(both);
    if (!c->run(argv, o.command_timeout, &failure)) return std::nullopt;
    return std::move(*c);
  }

  // Handles one pushed reply: ["message", channel, announcement or
  // invalidation].
  void dispatch(const redisReply* r) {
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 3) return;
    const redisReply* kind = r->element[0];
    const redisReply* channel = r->element[1];
    const redisReply* payload = r->element[2];
    if (kind->type != REDIS_REPLY_STRING || channel->type != REDIS_REPLY_STRING ||
        payload->type != REDIS_REPLY_STRING)
      return;
    if (std::string_view(kind->str, kind->len) != "message") return;
    if (!options.invalidation_channel.empty() &&
        std::string_view(channel->str, channel->len) == options.invalidation_channel) {
      tell_invalidated(std::string_view(payload->str, payload->len));
      return;
    }
    on_ready(std::string_view(payload->str, payload->len));
  }

  // An announcement, from the shared channel or a key's own.
  void on_ready(std::string_view payload) {
    received.fetch_add(1, kRelaxed);
    const internal::DecodedAnnouncement decoded = internal::decode_announcement(payload);
    std::shared_ptr<const Announcement> announcement;
    if (decoded.version != 0) {
      // One copy of the value, shared by every waiter of the key.
      auto a = std::make_shared<Announcement>();
      a->version = decoded.version;
      if (decoded.value) {
        a->envelope.emplace(*decoded.value);
        with_value.fetch_add(1, kRelaxed);
      }
      announcement = std::move(a);
    }
    wake(std::string(decoded.key), announcement);
  }

  // Reads pushed messages until the connection breaks or we are stopped.
  // Returns false when stopped.
  bool listen(redisContext* c) {
    // Replies already buffered with the SUBSCRIBE confirmation.
    if (!drain(c)) return true;
    const int heartbeat_ms = static_cast<int>(std::max<long long>(
        1, std::chrono::duration_cast<std::chrono::milliseconds>(options.heartbeat).count()));
    bool ping_unanswered = false;
    for (;;) {
      pollfd fds[2] = {{c->fd, POLLIN, 0}, {wake_pipe[0], POLLIN, 0}};
      const int n = ::poll(fds, 2, heartbeat_ms);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 || (fds[1].revents & POLLIN) != 0) return false;
      if (n == 0) {
        // Quiet for a heartbeat: a PING (in subscribe mode Redis answers
        // ["pong", ""]); still quiet a heartbeat later: dead.
        if (ping_unanswered) return true;
        if (!send_ping(c)) return true;
        ping_unanswered = true;
        continue;
      }
      if (fds[0].revents == 0) continue;
      if (redisBufferRead(c) != REDIS_OK) return true;  // EOF or error: reconnect
      ping_unanswered = false;  // anything heard proves the connection alive
      if (!drain(c)) return true;
    }
  }

  static bool send_ping(redisContext* c) {
    if (redisAppendCommand(c, "PING") != REDIS_OK) return false;
    int done = 0;
    while (done == 0) {
      if (redisBufferWrite(c, &done) != REDIS_OK) return false;
    }
    return true;
  }

  // Dispatches every complete reply in hiredis's buffer; false on a protocol error.
  bool drain(redisContext* c) {
    for (;;) {
      void* raw = nullptr;
      if (redisGetReplyFromReader(c, &raw) != REDIS_OK) return false;
      if (raw == nullptr) return true;
      const internal::RedisReplyPtr reply(static_cast<redisReply*>(raw));
      dispatch(reply.get());
    }
  }

  void run() {
    Duration backoff = std::chrono::milliseconds(50);
    while (!should_stop()) {
      std::optional<internal::RedisConnection> c = connect();
      if (!c) {
        errors.fetch_add(1, kRelaxed);
        pause(std::chrono::duration_cast<Duration>(backoff * internal::uniform_real(0.5, 1.0)));
        backoff = std::min<Duration>(backoff * 2, std::chrono::seconds(2));
        continue;
      }
      backoff = std::chrono::milliseconds(50);
      resubscribes.fetch_add(1, kRelaxed);
      // Publishes may have been missed while we were not subscribed: every
      // waiter looks again. Before announcing the subscription, so that a
      // waiter registered after wait_subscribed() returns is not woken by it.
      wake_all();
      // Likewise invalidations: a listener revalidates what it cached. Any
      // invalidation published from here on is heard (it is read after).
      tell_resync();
      set_subscribed(true);
      const bool broken = listen(c->raw());
      set_subscribed(false);
      // From here until the next subscription, invalidations go unheard.
      if (broken) tell_resync();
      c.reset();
      if (!broken) break;
      errors.fetch_add(1, kRelaxed);
    }
  }
};

Waiter::Waiter(RedisNotifier& owner, std::string key, bool per_key)
    : owner_(owner), key_(std::move(key)), per_key_(per_key) {}

Waiter::~Waiter() { owner_.remove(this); }

void Waiter::notify(const std::shared_ptr<const Announcement>& announcement) {
  {
    std::lock_guard lock(mutex_);
    notified_ = true;
    if (announcement) announcement_ = announcement;
  }
  cv_.notify_one();
}

bool Waiter::set_armed(bool armed) {
  bool was;
  {
    std::lock_guard lock(mutex_);
    was = armed_;
    armed_ = armed;
    failed_ = !armed;  // wait_armed waits again once a lost channel is back
  }
  cv_.notify_one();
  return was;
}

bool Waiter::armed() const {
  if (!per_key_) return owner_.subscribed();
  std::lock_guard lock(mutex_);
  return armed_;
}

bool Waiter::wait_armed(Deadline deadline) {
  if (!per_key_) return owner_.subscribed();
  std::unique_lock lock(mutex_);
  cv_.wait_until(lock, deadline.when(), [this] { return armed_ || failed_ || notified_; });
  return armed_;
}

std::shared_ptr<const Announcement> Waiter::announcement() const {
  std::lock_guard lock(mutex_);
  return announcement_;
}

bool Waiter::wait(Deadline deadline) {
  std::unique_lock lock(mutex_);
  cv_.wait_until(lock, deadline.when(), [this] { return notified_; });
  const bool was_notified = notified_;
  notified_ = false;
  return was_notified;
}

Result<std::unique_ptr<RedisNotifier>> RedisNotifier::create(RedisNotifierOptions options,
                                                             std::shared_ptr<RedisClient> client) {
  if (!client) return make_error(ErrorKind::kInvalidArgument, "redis notifier: client is null");
  if (options.channel.empty()) {
    return make_error(ErrorKind::kInvalidArgument, "redis notifier: channel is empty");
  }
  if (options.heartbeat <= Duration::zero()) {
    return make_error(ErrorKind::kInvalidArgument, "redis notifier: heartbeat must be > 0");
  }
  if (options.invalidation_channel == options.channel) {
    return make_error(ErrorKind::kInvalidArgument,
                      "redis notifier: invalidation_channel must differ from channel");
  }
  if (options.per_key) {
    if (auto valid = internal::validate_prefix(options.key_prefix, "redis notifier"); !valid) {
      return std::unexpected(valid.error());
    }
    if (options.linger < Duration::zero() || options.linger > std::chrono::hours(1)) {
      return make_error(ErrorKind::kInvalidArgument, "redis notifier: linger must be in [0, 1 h]");
    }
  }
  auto impl = std::make_unique<Impl>(std::move(options), std::move(client));
  if (::pipe2(impl->wake_pipe, O_CLOEXEC) != 0) {
    return make_error(ErrorKind::kInternal,
                      fmt::format("redis notifier: pipe failed: {}", std::strerror(errno)));
  }
  Impl* raw = impl.get();
  if (impl->options.per_key) {
    auto sharded = internal::ShardedSubscriber::create(
        {.prefix = impl->options.key_prefix,
         .linger = impl->options.linger,
         .max_idle = impl->options.max_idle_channels,
         .heartbeat = impl->options.heartbeat},
        impl->client,
        {.armed = [raw](const std::string& key) { raw->arm(key, true); },
         .lost = [raw](const std::string& key) { raw->arm(key, false); },
         .message = [raw](std::string_view payload) { raw->on_ready(payload); }});
    if (!sharded) {
      ::close(impl->wake_pipe[0]);
      ::close(impl->wake_pipe[1]);
      return std::unexpected(sharded.error());
    }
    impl->sharded = std::move(*sharded);
  }
  impl->subscriber = std::thread([raw] { raw->run(); });
  return std::unique_ptr<RedisNotifier>(new RedisNotifier(std::move(impl)));
}

RedisNotifier::RedisNotifier(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

RedisNotifier::~RedisNotifier() {
  impl_->sharded.reset();  // its callbacks use the waiters
  {
    std::lock_guard lock(impl_->state_mutex);
    impl_->stopping = true;
  }
  const char stop = 's';
  (void)!::write(impl_->wake_pipe[1], &stop, 1);
  impl_->subscriber.join();
  ::close(impl_->wake_pipe[0]);
  ::close(impl_->wake_pipe[1]);
}

std::unique_ptr<Waiter> RedisNotifier::watch(std::string_view key) {
  std::unique_ptr<Waiter> waiter(new Waiter(*this, std::string(key), impl_->sharded != nullptr));
  std::lock_guard lock(impl_->waiters_mutex);
  impl_->waiters[waiter->key_].push_back(waiter.get());
  // Under waiters_mutex: an arm() of this key runs before or after, never
  // between the want and the registration.
  if (impl_->sharded && impl_->sharded->want(waiter->key_)) waiter->set_armed(true);
  return waiter;
}

void RedisNotifier::remove(Waiter* waiter) {
  std::lock_guard lock(impl_->waiters_mutex);
  auto it = impl_->waiters.find(waiter->key_);
  if (it == impl_->waiters.end()) return;
  auto& list = it->second;
  list.erase(std::remove(list.begin(), list.end(), waiter), list.end());
  if (list.empty()) impl_->waiters.erase(it);
  if (impl_->sharded) impl_->sharded->unwant(waiter->key_);
}

Result<void> RedisNotifier::publish(std::string_view key) {
  auto reply = impl_->client->command({"PUBLISH", impl_->options.channel, key});
  if (!reply) {
    impl_->errors.fetch_add(1, kRelaxed);
    return std::unexpected(reply.error());
  }
  impl_->published.fetch_add(1, kRelaxed);
  return ok();
}

Result<void> RedisNotifier::publish_invalidation(std::uint64_t origin, std::string_view key) {
  if (impl_->options.invalidation_channel.empty()) {
    return make_error(ErrorKind::kInvalidArgument,
                      "redis notifier: no invalidation_channel configured");
  }
  if (key.empty()) return make_error(ErrorKind::kInvalidArgument, "redis notifier: key is empty");
  const std::string message = internal::encode_invalidation(origin, key);
  auto reply = impl_->client->command({"PUBLISH", impl_->options.invalidation_channel, message});
  if (!reply) {
    impl_->errors.fetch_add(1, kRelaxed);
    return std::unexpected(reply.error());
  }
  impl_->invalidations_published.fetch_add(1, kRelaxed);
  return ok();
}

Result<void> RedisNotifier::publish_tag_invalidation(std::uint64_t origin, std::string_view tag,
                                                     std::uint64_t version) {
  if (impl_->options.invalidation_channel.empty()) {
    return make_error(ErrorKind::kInvalidArgument,
                      "redis notifier: no invalidation_channel configured");
  }
  if (version == 0) return make_error(ErrorKind::kInvalidArgument, "redis notifier: version 0");
  const std::string message = internal::encode_tag_invalidation(origin, version, tag);
  auto reply = impl_->client->command({"PUBLISH", impl_->options.invalidation_channel, message});
  if (!reply) {
    impl_->errors.fetch_add(1, kRelaxed);
    return std::unexpected(reply.error());
  }
  impl_->invalidations_published.fetch_add(1, kRelaxed);
  return ok();
}

std::unique_ptr<InvalidationSubscription> RedisNotifier::listen(InvalidationListener listener) {
  std::lock_guard lock(impl_->listeners_mutex);
  const std::uint64_t id = impl_->next_listener_id++;
  impl_->listeners.emplace(id, std::move(listener));
  // Not subscribed yet: the subscriber thread calls tell_resync()
  // when it is, which takes listeners_mutex after this registration.
  return std::unique_ptr<InvalidationSubscription>(new InvalidationSubscription(*this, id));
}

void RedisNotifier::remove_listener(std::uint64_t id) {
  std::lock_guard lock(impl_->listeners_mutex);
  impl_->listeners.erase(id);
}

InvalidationSubscription::~InvalidationSubscription() { owner_.remove_listener(id_); }

bool RedisNotifier::has_invalidation_channel() const noexcept {
  return !impl_->options.invalidation_channel.empty();
}

bool RedisNotifier::subscribed() const noexcept {
  return impl_->subscribed.load(std::memory_order_acquire);
}

bool RedisNotifier::wait_subscribed(Deadline deadline) const {
  std::unique_lock lock(impl_->state_mutex);
  return impl_->state_changed.wait_until(
      lock, deadline.when(), [this] { return impl_->subscribed.load(std::memory_order_acquire); });
}

RedisNotifierStats RedisNotifier::stats() const {
  const internal::ShardedSubscriberStats sharded =
      impl_->sharded ? impl_->sharded->stats() : internal::ShardedSubscriberStats{};
  return RedisNotifierStats{
      .published = impl_->published.load(kRelaxed),
      .received = impl_->received.load(kRelaxed),
      .with_value = impl_->with_value.load(kRelaxed),
      .wakeups = impl_->wakeups.load(kRelaxed),
      .resubscribes = impl_->resubscribes.load(kRelaxed),
      .errors = impl_->errors.load(kRelaxed),
      .invalidations_published = impl_->invalidations_published.load(kRelaxed),
      .invalidations_received = impl_->invalidations_received.load(kRelaxed),
      .malformed = impl_->malformed.load(kRelaxed),
      .key_channels = sharded.armed_now,
      .key_subscribes = sharded.subscribes,
      .key_channel_losses = sharded.losses};
}

}  // namespace herdguard
