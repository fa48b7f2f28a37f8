// herdguard/metrics_server.h — an embeddable HTTP endpoint for Prometheus:
// GET /metrics serves a MetricsRegistry in the text exposition format, and
// GET /healthz answers "ok" (or 503 with the reason, when a health check
// says so). Built on cpp-httplib; one listener thread plus httplib's pool.
//
// Thread safety: start() and the destructor from one thread; the server
// itself serves from its own threads.
//
// Example:
//   auto registry = std::make_shared<herdguard::MetricsRegistry>();
//   ... ProtectorOptions{.metrics_registry = registry} ...
//   auto server = herdguard::MetricsServer::start({.port = 9464}, registry);
//   if (!server) die(server.error().to_string());     // e.g. the port is taken
//   // curl http://127.0.0.1:9464/metrics
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "herdguard/prometheus.h"
#include "herdguard/result.h"

namespace herdguard {

struct MetricsServerOptions {
  // Address to listen on. Loopback by default: expose it on purpose.
  std::string host = "127.0.0.1";
  // 0 picks a free port (see MetricsServer::port()). REQUIRES: 0..65535.
  int port = 0;
  // /healthz: nullopt means healthy; a string is the reason it is not (503).
  std::function<std::optional<std::string>()> health{};
};

class MetricsServer {
 public:
  // Binds and starts serving. Errors: kInvalidArgument (bad port, null
  // registry), kBackend when the address cannot be bound.
  static Result<std::unique_ptr<MetricsServer>> start(MetricsServerOptions options,
                                                      std::shared_ptr<MetricsRegistry> registry);
  // Stops listening and joins the server thread.
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;

  // The bound port.
  int port() const noexcept;

 private:
  struct Impl;
  explicit MetricsServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace herdguard
