#include "redis_server.h"

#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <vector>

#include "child_server.h"
#include "loopback_port.h"

namespace herdguard::testing {
namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

bool answers_ping(const std::string& socket_path, const std::string& password) {
  timeval tv{0, 200000};
  redisContext* c = redisConnectUnixWithTimeout(socket_path.c_str(), tv);
  if (c == nullptr) return false;
  bool ok = false;
  if (c->err == 0) {
    std::vector<const char*> argv{"PING"};
    if (!password.empty()) argv = {"AUTH", password.c_str()};
    auto* reply = static_cast<redisReply*>(
        redisCommandArgv(c, static_cast<int>(argv.size()), argv.data(), nullptr));
    // Any reply (even NOAUTH) means the server is up and serving.
    ok = reply != nullptr;
    if (reply) freeReplyObject(reply);
  }
  redisFree(c);
  return ok;
}

}  // namespace

std::unique_ptr<RedisServer> RedisServer::start(Options options) {
  std::unique_ptr<RedisServer> server(new RedisServer(std::move(options)));
  server->launch();
  return server;
}

RedisServer::RedisServer(Options options) : options_(std::move(options)) {
  std::string pattern =
      (std::filesystem::temp_directory_path() / "herdguard-redis-XXXXXX").string();
  std::vector<char> buf(pattern.begin(), pattern.end());
  buf.push_back('\0');
  if (::mkdtemp(buf.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  dir_ = buf.data();
  socket_path_ = dir_ + "/redis.sock";
  if (options_.tcp) port_ = free_loopback_port();
}

RedisServer::~RedisServer() {
  stop();
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

std::string RedisServer::url() const { return "unix://" + socket_path_ + "?db=0"; }

std::string RedisServer::tcp_url() const {
  return "redis://127.0.0.1:" + std::to_string(port_) + "/0";
}

void RedisServer::launch() {
  std::vector<std::string> args = {"redis-server",
                                   "--port",
                                   std::to_string(options_.tcp ? port_ : 0),
                                   "--bind",
                                   "127.0.0.1",
                                   "--unixsocket",
                                   socket_path_,
                                   "--unixsocketperm",
                                   "700",
                                   "--dir",
                                   dir_,
                                   "--save",
                                   "",
                                   "--appendonly",
                                   "no",
                                   "--daemonize",
                                   "no",
                                   "--loglevel",
                                   "warning",
                                   "--logfile",
                                   dir_ + "/redis.log"};
  if (!options_.requirepass.empty()) {
    args.insert(args.end(), {"--requirepass", options_.requirepass});
  }
  if (!options_.acl_user.empty()) {
    args.insert(args.end(), {"--user", options_.acl_user, "on", ">" + options_.acl_password, "~*",
                             "&*", "+@all"});
  }
  pid_ = spawn_child(std::move(args));
  const std::string password = options_.requirepass;
  wait_until_answering(
      pid_, [&] { return answers_ping(socket_path_, password); }, "redis-server",
      std::chrono::seconds(10), std::chrono::milliseconds(10),
      [this] { return read_file(dir_ + "/redis.log"); });
}

void RedisServer::stop() {
  stop_child(pid_);
  std::error_code ignored;
  std::filesystem::remove(socket_path_, ignored);
}

void RedisServer::pause() { pause_child(pid_); }

void RedisServer::resume() { resume_child(pid_); }

void RedisServer::start_again() {
  if (pid_ > 0) return;
  launch();
}

}  // namespace herdguard::testing
