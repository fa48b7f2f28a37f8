// A TCP port the kernel just handed out on 127.0.0.1, released for a server
// the test is about to start. Another process could take it in between; the
// server then fails to start, loudly, rather than a test talking to a
// stranger.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

namespace herdguard::testing {

// Binds `wanted` (0: any free port) on loopback, closes it again and returns
// the port, or 0 when it could not be bound.
inline int free_loopback_port(int wanted = 0) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<unsigned short>(wanted));
  socklen_t len = sizeof(addr);
  int port = 0;
  if (fd >= 0 && ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  if (fd >= 0) ::close(fd);
  return port;
}

}  // namespace herdguard::testing
