// A real memcached for one test, as redis_server.h does for Redis: started in a
// fresh temporary folder on a unix socket (or, when asked, on a free loopback
// TCP port), stopped and removed when the object is destroyed — also when the
// test fails or the test process dies (PR_SET_PDEATHSIG).
//
// Example:
//   auto memcached = herdguard::testing::MemcachedServer::start();   // throws on failure
//   auto l3 = herdguard::MemcachedCache::create({.url = memcached->url()});
//   memcached->stop();  ... memcached->start_again();                 // same address, empty
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>

namespace herdguard::testing {

class MemcachedServer {
 public:
  struct Options {
    // Listen on 127.0.0.1 on a free port instead of a unix socket.
    bool tcp = false;
  };

  // Starts a server and waits until it answers `version`. Throws
  // std::runtime_error when it cannot be started.
  static std::unique_ptr<MemcachedServer> start(Options options);
  static std::unique_ptr<MemcachedServer> start() { return start(Options{}); }
  ~MemcachedServer();
  MemcachedServer(const MemcachedServer&) = delete;
  MemcachedServer& operator=(const MemcachedServer&) = delete;

  // `memcached:///<dir>/memcached.sock`, or `memcached://127.0.0.1:<port>` with tcp.
  std::string url() const;
  int port() const { return port_; }
  pid_t pid() const { return pid_; }

  // SIGKILL, and waits for it to exit: the data is gone. Idempotent.
  void stop();
  // SIGSTOP (returning once it has stopped) / SIGCONT: it keeps its
  // connections and stops answering, as a hung server does.
  void pause();
  void resume();
  // Starts it again on the same address, empty. Throws std::runtime_error.
  void start_again();

 private:
  explicit MemcachedServer(Options options);
  void launch();
  bool answers() const;

  Options options_;
  std::string dir_;
  std::string socket_path_;
  int port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace herdguard::testing
