// A real redis-server for one test: started in a fresh temporary folder on a
// unix socket (and, when asked, on a free loopback TCP port), stopped and
// removed when the object is destroyed — also when the test fails, and also
// when the test process dies (the server gets SIGKILL through
// PR_SET_PDEATHSIG), so no server outlives its test.
//
// Example:
//   auto redis = herdguard::testing::RedisServer::start();   // throws on failure
//   auto client = herdguard::RedisClient::create({.url = redis->url()});
//   redis->stop();  ... redis->start_again();                 // same socket, empty data
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>

namespace herdguard::testing {

class RedisServer {
 public:
  struct Options {
    // When not empty: `requirepass` (the default user's password).
    std::string requirepass{};
    // When not empty: an ACL user `acl_user` with password `acl_password`
    // and all permissions.
    std::string acl_user{};
    std::string acl_password{};
    // Also listen on 127.0.0.1 on a free port (tcp_url()).
    bool tcp = false;
  };

  // Starts a server and waits until it answers PING. Throws std::runtime_error
  // (with redis-server's log) when it cannot be started.
  static std::unique_ptr<RedisServer> start(Options options);
  static std::unique_ptr<RedisServer> start() { return start(Options{}); }
  ~RedisServer();
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  // `unix://<dir>/redis.sock` (with `?db=0`).
  std::string url() const;
  // `redis://127.0.0.1:<port>/0`. REQUIRES: options.tcp.
  std::string tcp_url() const;
  const std::string& socket_path() const { return socket_path_; }
  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  bool running() const { return pid_ > 0; }

  // Stops the server (SIGKILL: as abrupt as a crash) and waits for it to exit.
  // Data is not persisted. Idempotent.
  void stop();
  // SIGSTOP / SIGCONT: the server keeps its connections but stops
  // answering, as an overloaded or hung Redis does.
  void pause();
  void resume();
  // Starts it again on the same socket (and port) with the same options.
  // Throws std::runtime_error when it cannot be started.
  void start_again();

 private:
  explicit RedisServer(Options options);
  void launch();

  Options options_;
  std::string dir_;
  std::string socket_path_;
  int port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace herdguard::testing
