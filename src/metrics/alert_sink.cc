#include "herdguard/alert_sink.h"

#include <fmt/chrono.h>
#include <fmt/format.h>
#include <httplib.h>
#include <spdlog/spdlog.h>

#include <charconv>
#include <nlohmann/json.hpp>

namespace herdguard {

std::string_view to_string(AlertEvent::Kind kind) noexcept {
  switch (kind) {
    case AlertEvent::Kind::kBreakerStateChange:
      return "breaker_state_change";
    case AlertEvent::Kind::kFallback:
      return "fallback";
    case AlertEvent::Kind::kFailure:
      return "failure";
    case AlertEvent::Kind::kHotKey:
      return "hot_key";
  }
  return "unknown";
}

std::string to_json(const AlertEvent& e) {
  nlohmann::json j = {
      {"kind", to_string(e.kind)},
      {"cache", e.cache},
      {"pattern", e.pattern},
      {"message", e.message},
      {"time_unix_ms",
       std::chrono::duration_cast<std::chrono::milliseconds>(e.at.time_since_epoch()).count()}};
  if (e.kind == AlertEvent::Kind::kBreakerStateChange) {
    j["from"] = std::string(to_string(e.from));
    j["to"] = std::string(to_string(e.to));
  }
  if (e.kind == AlertEvent::Kind::kHotKey) j["key"] = e.key;
  // Replace invalid UTF-8 (messages may quote bytes from errors) instead of throwing.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

void LogAlertSink::send(const AlertEvent& e) noexcept {
  try {
    const auto level =
        e.kind == AlertEvent::Kind::kBreakerStateChange && e.to == BreakerState::kOpen
            ? spdlog::level::err
            : spdlog::level::warn;
    if (e.kind == AlertEvent::Kind::kBreakerStateChange) {
      spdlog::log(level, "herdguard[{}]: circuit breaker {} -> {}", e.cache, to_string(e.from),
                  to_string(e.to));
    } else if (e.kind == AlertEvent::Kind::kHotKey) {
      spdlog::log(level, "herdguard[{}]: hot key '{}': {}", e.cache, e.key, e.message);
    } else {
      spdlog::log(level, "herdguard[{}]: {} for pattern {}: {}", e.cache, to_string(e.kind),
                  e.pattern, e.message);
    }
  } catch (...) {
    // Logging must never fail a request.
  }
}

Result<std::shared_ptr<WebhookAlertSink>> WebhookAlertSink::create(
    WebhookAlertSinkOptions options) {
  auto bad = [](std::string what) {
    return make_error(ErrorKind::kInvalidArgument, fmt::format("webhook sink: {}", what));
  };
  const std::string_view url = options.url;
  constexpr std::string_view kScheme = "http://";
  if (!url.starts_with(kScheme)) return bad("url must start with http:// (https is not supported)");
  std::string_view rest = url.substr(kScheme.size());
  const auto slash = rest.find('/');
  const std::string_view hostport = rest.substr(0, slash);
  const std::string path = slash == std::string_view::npos ? "/" : std::string(rest.substr(slash));
  std::string_view host = hostport;
  int port = 80;
  if (const auto colon = hostport.rfind(':'); colon != std::string_view::npos) {
    host = hostport.substr(0, colon);
    const std::string_view p = hostport.substr(colon + 1);
    auto [end, ec] = std::from_chars(p.data(), p.data() + p.size(), port);
    if (ec != std::errc() || end != p.data() + p.size() || port < 1 || port > 65535) {
      return bad(fmt::format("port '{}' is not a number in 1..65535", p));
    }
  }
  if (host.empty()) return bad("host is empty");
  if (options.queue_capacity < 1) return bad("queue_capacity must be >= 1");
  if (options.timeout <= Duration::zero()) return bad("timeout must be > 0");
  return std::shared_ptr<WebhookAlertSink>(
      new WebhookAlertSink(std::move(options), std::string(host), port, path));
}

WebhookAlertSink::WebhookAlertSink(WebhookAlertSinkOptions options, std::string host, int port,
                                   std::string path)
    : options_(std::move(options)),
      host_(std::move(host)),
      port_(port),
      path_(std::move(path)),
      thread_([this] { run(); }) {}

WebhookAlertSink::~WebhookAlertSink() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_one();
  thread_.join();
}

void WebhookAlertSink::send(const AlertEvent& event) noexcept {
  try {
    std::string body = to_json(event);
    {
      std::lock_guard lock(mutex_);
      if (queue_.size() >= options_.queue_capacity) {
        dropped_.fetch_add(1, std::memory_order_relaxed);
        return;
      }
      queue_.push_back(std::move(body));
    }
    wake_.notify_one();
  } catch (...) {
    dropped_.fetch_add(1, std::memory_order_relaxed);
  }
}

void WebhookAlertSink::run() {
  httplib::Client client(host_, port_);
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(options_.timeout).count();
  client.set_connection_timeout(us / 1'000'000, us % 1'000'000);
  client.set_read_timeout(us / 1'000'000, us % 1'000'000);
  client.set_write_timeout(us / 1'000'000, us % 1'000'000);
  std::unique_lock lock(mutex_);
  for (;;) {
    wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
    if (stopping_) return;
    std::string body = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    auto response = client.Post(path_, body, "application/json");
    if (response && response->status >= 200 && response->status < 300) {
      delivered_.fetch_add(1, std::memory_order_relaxed);
    } else {
      failed_.fetch_add(1, std::memory_order_relaxed);
    }
    lock.lock();
  }
}

}  // namespace herdguard
