#include "herdguard/metrics_server.h"

#include <fmt/format.h>
#include <httplib.h>
#include <sys/socket.h>

#include <thread>

namespace herdguard {

struct MetricsServer::Impl {
  httplib::Server server;
  std::shared_ptr<MetricsRegistry> registry;
  MetricsServerOptions options;
  int port = 0;
  std::thread thread;
};

Result<std::unique_ptr<MetricsServer>> MetricsServer::start(
    MetricsServerOptions options, std::shared_ptr<MetricsRegistry> registry) {
  if (!registry) return make_error(ErrorKind::kInvalidArgument, "metrics server: registry is null");
  if (options.port < 0 || options.port > 65535) {
    return make_error(ErrorKind::kInvalidArgument,
                      fmt::format("metrics server: port {} is not in 0..65535", options.port));
  }
  auto impl = std::make_unique<Impl>();
  impl->registry = std::move(registry);
  impl->options = std::move(options);
  Impl* raw = impl.get();
  impl->server.Get("/metrics", [raw](const httplib::Request&, httplib::Response& res) {
    res.set_content(raw->registry->render(), "text/plain; version=0.0.4; charset=utf-8");
  });
  impl->server.Get("/healthz", [raw](const httplib::Request&, httplib::Response& res) {
    std::optional<std::string> problem;
    if (raw->options.health) problem = raw->options.health();
    if (problem) {
      res.status = 503;
      res.set_content(*problem + "\n", "text/plain");
    } else {
      res.set_content("ok\n", "text/plain");
    }
  });
  // SO_REUSEADDR only: httplib's default also sets SO_REUSEPORT, which would
  // let a second server silently share a port that is already taken.
  impl->server.set_socket_options([](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  const std::string& host = impl->options.host;
  if (impl->options.port == 0) {
    impl->port = impl->server.bind_to_any_port(host.c_str());
  } else {
    impl->port =
        impl->server.bind_to_port(host.c_str(), impl->options.port) ? impl->options.port : -1;
  }
  if (impl->port <= 0) {
    return make_error(ErrorKind::kBackend, fmt::format("metrics server: cannot listen on {}:{}",
                                                       host, impl->options.port));
  }
  impl->thread = std::thread([raw] { raw->server.listen_after_bind(); });
  // stop() only stops a server that is running: wait for the listener so
  // that a server destroyed right away does not leave it listening forever.
  while (!impl->server.is_running()) std::this_thread::yield();
  return std::unique_ptr<MetricsServer>(new MetricsServer(std::move(impl)));
}

MetricsServer::MetricsServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

MetricsServer::~MetricsServer() {
  impl_->server.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
}

int MetricsServer::port() const noexcept { return impl_->port; }

}  // namespace herdguard
