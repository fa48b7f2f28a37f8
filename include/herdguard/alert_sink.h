// herdguard/alert_sink.h — alert hooks: the Protector tells pluggable sinks
// when its circuit breaker changes state, when a fallback answers a request,
// and when a request fails outright. Sinks must not block the caller:
// `LogAlertSink` logs through spdlog; `WebhookAlertSink` queues events
// (bounded; a full queue drops and counts) and POSTs them as JSON from its
// own thread, so a slow or dead receiver never slows requests.
//
// The Protector rate-limits fallback and failure alerts to one per kind per
// `alert_interval`; breaker changes are always sent, and so is each key that
// turns hot (at most HotKeyOptions::top_k at a time). Events carry the key's
// pattern (see ProtectorOptions::key_patterns), never the raw key — except
// kHotKey, whose subject is the key itself (in `key`).
//
// Thread safety: send() may be called from any thread.
//
// Example:
//   auto hook = herdguard::WebhookAlertSink::create(
//       {.url = "http://alerts.internal:8080/herdguard"});
//   options.alert_sinks = {std::make_shared<herdguard::LogAlertSink>(), std::move(*hook)};
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "herdguard/circuit_breaker.h"
#include "herdguard/clock.h"
#include "herdguard/result.h"

namespace herdguard {

struct AlertEvent {
  enum class Kind { kBreakerStateChange, kFallback, kFailure, kHotKey };
  Kind kind = Kind::kFailure;
  std::string cache{};                        // ProtectorOptions::metrics_name
  std::string pattern{};                      // the key's pattern, or "other"
  std::string message{};                      // what happened, e.g. the error that was answered
  std::string key{};                          // kHotKey only: the key that turned hot
  BreakerState from = BreakerState::kClosed;  // kBreakerStateChange only
  BreakerState to = BreakerState::kClosed;
  TimePoint at{};
};

// "breaker_state_change", "fallback", "failure", "hot_key".
std::string_view to_string(AlertEvent::Kind kind) noexcept;
// The event as one JSON object (what the webhook POSTs).
std::string to_json(const AlertEvent& event);

class AlertSink {
 public:
  virtual ~AlertSink() = default;
  // Takes the event; must return quickly and not throw.
  virtual void send(const AlertEvent& event) noexcept = 0;
};

// Logs each event through spdlog (warning; breaker opening: error).
class LogAlertSink final : public AlertSink {
 public:
  void send(const AlertEvent& event) noexcept override;
};

struct WebhookAlertSinkOptions {
  // http://host[:port]/path. REQUIRES: http scheme (https needs TLS, not built in).
  std::string url{};
  // Events waiting to be posted; beyond that they are dropped and counted.
  std::size_t queue_capacity = 1000;
  // Bound on connecting to and posting to the receiver.
  Duration timeout = std::chrono::seconds(2);
};

class WebhookAlertSink final : public AlertSink {
 public:
  // Errors: kInvalidArgument naming what is wrong with the URL or options.
  static Result<std::shared_ptr<WebhookAlertSink>> create(WebhookAlertSinkOptions options);
  // Stops the sender thread; events still queued are dropped.
  ~WebhookAlertSink() override;

  void send(const AlertEvent& event) noexcept override;

  std::uint64_t delivered() const noexcept { return delivered_.load(std::memory_order_relaxed); }
  std::uint64_t failed() const noexcept { return failed_.load(std::memory_order_relaxed); }
  std::uint64_t dropped() const noexcept { return dropped_.load(std::memory_order_relaxed); }

 private:
  WebhookAlertSink(WebhookAlertSinkOptions options, std::string host, int port, std::string path);
  void run();

  const WebhookAlertSinkOptions options_;
  const std::string host_;
  const int port_;
  const std::string path_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::string> queue_;  // JSON bodies; guarded by mutex_
  bool stopping_ = false;          // guarded by mutex_
  std::atomic<std::uint64_t> delivered_{0}, failed_{0}, dropped_{0};
  std::thread thread_;  // last: started once the members above exist
};

}  // namespace herdguard
