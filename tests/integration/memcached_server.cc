#include "memcached_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <vector>

#include "child_server.h"
#include "loopback_port.h"

namespace herdguard::testing {

std::unique_ptr<MemcachedServer> MemcachedServer::start(Options options) {
  std::unique_ptr<MemcachedServer> server(new MemcachedServer(options));
  server->launch();
  return server;
}

MemcachedServer::MemcachedServer(Options options) : options_(options) {
  std::string pattern =
      (std::filesystem::temp_directory_path() / "herdguard-memcached-XXXXXX").string();
  std::vector<char> buf(pattern.begin(), pattern.end());
  buf.push_back('\0');
  if (::mkdtemp(buf.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  dir_ = buf.data();
  socket_path_ = dir_ + "/memcached.sock";
  if (options_.tcp) port_ = free_loopback_port();
}

MemcachedServer::~MemcachedServer() {
  stop();
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

std::string MemcachedServer::url() const {
  if (options_.tcp) return "memcached://127.0.0.1:" + std::to_string(port_);
  return "memcached://" + socket_path_;
}

bool MemcachedServer::answers() const {
  int fd = -1;
  if (options_.tcp) {
    fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<unsigned short>(port_));
    if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      if (fd >= 0) ::close(fd);
      return false;
    }
  } else {
    fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, socket_path_.c_str(), sizeof(addr.sun_path) - 1);
    if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      if (fd >= 0) ::close(fd);
      return false;
    }
  }
  timeval tv{0, 200000};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  const char request[] = "version\r\n";
  char reply[64] = {};
  const bool ok = ::write(fd, request, sizeof(request) - 1) == ssize_t(sizeof(request) - 1) &&
                  ::read(fd, reply, sizeof(reply) - 1) > 0 &&
                  std::strncmp(reply, "VERSION", 7) == 0;
  ::close(fd);
  return ok;
}

void MemcachedServer::launch() {
  std::vector<std::string> args = {"memcached", "-m", "64", "-U", "0"};
  if (options_.tcp) {
    args.insert(args.end(), {"-l", "127.0.0.1", "-p", std::to_string(port_)});
  } else {
    args.insert(args.end(), {"-s", socket_path_, "-a", "0700"});
  }
  // memcached refuses to run as root without naming the user to run as.
  if (::geteuid() == 0) args.insert(args.end(), {"-u", "root"});
  pid_ = spawn_child(std::move(args));
  wait_until_answering(
      pid_, [this] { return answers(); }, "memcached", std::chrono::seconds(10),
      std::chrono::milliseconds(10),
      [] { return std::string("is it installed? (scripts/bootstrap)"); });
}

void MemcachedServer::stop() {
  stop_child(pid_);
  std::error_code ignored;
  std::filesystem::remove(socket_path_, ignored);
}

void MemcachedServer::pause() { pause_child(pid_); }

void MemcachedServer::resume() { resume_child(pid_); }

void MemcachedServer::start_again() {
  if (pid_ > 0) return;
  launch();
}

}  // namespace herdguard::testing
