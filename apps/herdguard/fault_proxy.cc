#include "fault_proxy.h"

#include <fmt/format.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "herdguard/memcached_cache.h"

namespace herdguard::cli {
namespace {

int connect_upstream(const RedisUrl& u) {
  if (u.transport == RedisUrl::Transport::kUnix) {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, u.socket_path.c_str(), sizeof(addr.sun_path) - 1);
    if (fd >= 0 && ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) return fd;
    if (fd >= 0) ::close(fd);
    return -1;
  }
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (::getaddrinfo(u.host.c_str(), std::to_string(u.port).c_str(), &hints, &found) != 0) return -1;
  int fd = -1;
  for (addrinfo* a = found; a != nullptr && fd < 0; a = a->ai_next) {
    fd = ::socket(a->ai_family, a->ai_socktype, a->ai_protocol);
    if (fd >= 0 && ::connect(fd, a->ai_addr, a->ai_addrlen) != 0) {
      ::close(fd);
      fd = -1;
    }
  }
  ::freeaddrinfo(found);
  return fd;
}

// Copies what is readable from `from` to `to`; false when either side closed.
bool relay(int from, int to) {
  char buf[16384];
  const ssize_t n = ::read(from, buf, sizeof buf);
  if (n <= 0) return false;
  ssize_t done = 0;
  while (done < n) {
    const ssize_t w = ::write(to, buf + done, static_cast<std::size_t>(n - done));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    done += w;
  }
  return true;
}

[[noreturn]] void run(int listen_fd, const RedisUrl& upstream, const std::vector<Fault>& faults,
                      int go_fd, Fault::Kind down_kind) {
  struct Pair {
    int client;
    int server;
  };
  std::vector<Pair> pairs;
  bool started = false;
  auto t0 = std::chrono::steady_clock::now();
  auto down = [&] {
    if (!started) return false;
    const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (const Fault& f : faults) {
      if (f.kind == down_kind && f.active(t)) return true;
    }
    return false;
  };
  for (;;) {
    std::vector<pollfd> fds;
    fds.push_back({listen_fd, POLLIN, 0});
    fds.push_back({started ? -1 : go_fd, POLLIN, 0});
    for (const Pair& p : pairs) {
      fds.push_back({p.client, POLLIN, 0});
      fds.push_back({p.server, POLLIN, 0});
    }
    // Wake at least every 20 ms to notice a fault window opening.
    const int n = ::poll(fds.data(), fds.size(), 20);
    if (n < 0 && errno != EINTR) ::_exit(1);
    if (!started && (fds[1].revents & (POLLIN | POLLHUP)) != 0) {
      char c;
      if (::read(go_fd, &c, 1) <= 0) {
        started = true;
        t0 = std::chrono::steady_clock::now();
      }
    }
    const bool is_down = down();
    std::vector<Pair> alive;
    for (std::size_t i = 0; i < pairs.size(); ++i) {
      const Pair& p = pairs[i];
      bool open = !is_down;
      const short client_events = n > 0 ? fds[2 + 2 * i].revents : 0;
      const short server_events = n > 0 ? fds[3 + 2 * i].revents : 0;
      if (open && client_events != 0) open = relay(p.client, p.server);
      if (open && server_events != 0) open = relay(p.server, p.client);
      if (open) {
        alive.push_back(p);
      } else {
        ::close(p.client);
        ::close(p.server);
      }
    }
    pairs.swap(alive);
    if ((fds[0].revents & POLLIN) != 0) {
      const int client = ::accept(listen_fd, nullptr, nullptr);
      if (client >= 0) {
        const int server = is_down ? -1 : connect_upstream(upstream);
        if (server < 0) {
          ::close(client);  // refused, as a dead Redis would
        } else {
          pairs.push_back({client, server});
        }
      }
    }
  }
}

}  // namespace

Result<RedisUrl> memcached_upstream(const std::string& url) {
  auto address = parse_memcached_url(url);
  if (!address) return std::unexpected(address.error());
  RedisUrl out;
  if (address->unix_socket) {
    out.transport = RedisUrl::Transport::kUnix;
    out.socket_path = address->socket_path;
  } else {
    out.host = address->host;
    out.port = address->port;
  }
  return out;
}

Result<FaultProxy> start_fault_proxy(const RedisUrl& upstream, const std::string& listen_path,
                                     std::vector<Fault> faults, int go_fd,
                                     std::vector<int> close_in_child, Fault::Kind down_kind) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (listen_path.size() >= sizeof(addr.sun_path)) {
    return make_error(ErrorKind::kBackend, "fault proxy: socket path too long");
  }
  std::strncpy(addr.sun_path, listen_path.c_str(), sizeof(addr.sun_path) - 1);
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::listen(fd, 256) != 0) {
    const std::string why = std::strerror(errno);
    if (fd >= 0) ::close(fd);
    return make_error(ErrorKind::kBackend,
                      fmt::format("fault proxy: cannot listen on {}: {}", listen_path, why));
  }
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(fd);
    return make_error(ErrorKind::kBackend, "fault proxy: fork failed");
  }
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(0);
    for (int other : close_in_child) ::close(other);
    run(fd, upstream, faults, go_fd, down_kind);
  }
  ::close(fd);
  auto encode = [](const std::string& s) {
    std::string out;
    for (unsigned char c : s) {
      if (std::isalnum(c) || c == '-' || c == '_' || c == '.') {
        out.push_back(static_cast<char>(c));
      } else {
        out += fmt::format("%{:02X}", c);
      }
    }
    return out;
  };
  if (down_kind == Fault::Kind::kL3Down)
    return FaultProxy{pid, listen_path, "memcached://" + listen_path};
  std::string url = "unix://" + listen_path + "?db=" + std::to_string(upstream.db);
  if (!upstream.user.empty()) url += "&user=" + encode(upstream.user);
  if (!upstream.password.empty()) url += "&password=" + encode(upstream.password);
  return FaultProxy{pid, listen_path, std::move(url)};
}

}  // namespace herdguard::cli
