// A real PostgreSQL cluster for one test: initdb in a fresh temporary folder
// (as the `postgres` user when the tests run as root: initdb refuses root),
// started on a free loopback port and a unix socket in that folder, with a
// database `herdguard`; stopped and removed when the object is destroyed,
// also when the test fails.
//
// Example:
//   auto pg = herdguard::testing::PostgresServer::start();    // throws on failure
//   pg->exec("CREATE TABLE kv (key text primary key, value text)");
//   auto repo = herdguard::PostgresRepository::open({.urls = {pg->url()}});
#pragma once

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

namespace herdguard::testing {

class PostgresServer {
 public:
  // Throws std::runtime_error (with the server's log) when it cannot start.
  static std::unique_ptr<PostgresServer> start();
  ~PostgresServer();
  PostgresServer(const PostgresServer&) = delete;
  PostgresServer& operator=(const PostgresServer&) = delete;

  // postgresql://postgres@127.0.0.1:<port>/herdguard
  std::string url() const;
  // The same database through the unix socket (percent-encoded directory).
  std::string socket_url() const;
  // The folder holding the unix socket (?host=<dir>&port=<port>).
  const std::string& socket_dir() const { return dir_; }
  int port() const { return port_; }

  // Runs SQL on the herdguard database. Throws on error.
  void exec(const std::string& sql) const;

  // Immediate shutdown (SIGQUIT), as a crash would; waits for it. Idempotent.
  void stop();
  // Starts it again on the same data, port and socket. Throws on failure.
  void start_again();

 private:
  PostgresServer();
  void launch();
  void run_as_postgres(const std::vector<std::string>& argv, bool wait);

  std::string dir_;
  std::string bin_;
  int port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace herdguard::testing
