// A reply lost after the acquire script ran: the connection breaks after
// Redis executed EVALSHA but before its answer reached us. The script may
// have taken the lock, so the lock manager must not treat the error as
// "not acquired" (it would wait a whole lease on its own orphaned lock): it
// sends the script once more with the same token, and the script, idempotent
// per token, answers "yours". A loopback proxy between the client and a real
// redis-server drops exactly that reply.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "herdguard/redis_client.h"
#include "herdguard/redis_lock.h"
#include "redis_server.h"

namespace herdguard {
namespace {

using namespace std::chrono_literals;
using testing::RedisServer;

// Forwards 127.0.0.1:port() to Redis's TCP port. Once armed, the first
// request containing EVALSHA is forwarded, and Redis's reply to it is
// dropped: both sides of that connection are closed instead.
class ReplyDroppingProxy {
 public:
  explicit ReplyDroppingProxy(int redis_port) : redis_port_(redis_port) {
    listener_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr = loopback(0);
    socklen_t len = sizeof(addr);
    if (listener_ < 0 || ::bind(listener_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
        ::listen(listener_, 16) != 0 ||
        ::getsockname(listener_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      throw std::runtime_error(std::string("proxy: cannot listen: ") + std::strerror(errno));
    }
    port_ = ntohs(addr.sin_port);
    acceptor_ = std::thread([this] { accept_loop(); });
  }

  ~ReplyDroppingProxy() {
    stopping_ = true;
    ::shutdown(listener_, SHUT_RDWR);
    ::close(listener_);
    acceptor_.join();
    {
      std::lock_guard lock(mutex_);
      for (int fd : fds_) ::shutdown(fd, SHUT_RDWR);
    }
    for (auto& t : pumps_) t.join();
    for (int fd : fds_) ::close(fd);
  }

  int port() const { return port_; }
  void arm() { armed_ = true; }
  int dropped() const { return dropped_.load(); }

 private:
  static sockaddr_in loopback(int port) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<unsigned short>(port));
    return addr;
  }

  void accept_loop() {
    while (!stopping_) {
      const int client = ::accept(listener_, nullptr, nullptr);
      if (client < 0) return;
      const int server = ::socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in addr = loopback(redis_port_);
      if (server < 0 || ::connect(server, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
        ::close(client);
        if (server >= 0) ::close(server);
        continue;
      }
      auto drop_reply = std::make_shared<std::atomic<bool>>(false);
      std::lock_guard lock(mutex_);
      fds_.push_back(client);
      fds_.push_back(server);
      pumps_.emplace_back([this, client, server, drop_reply] {
        pump(client, server, [&](std::string_view chunk) {
          if (chunk.find("EVALSHA") != std::string_view::npos ||
              chunk.find("evalsha") != std::string_view::npos) {
            bool expected = true;
            if (armed_.compare_exchange_strong(expected, false)) *drop_reply = true;
          }
          return true;
        });
      });
      pumps_.emplace_back([this, client, server, drop_reply] {
        pump(server, client, [&](std::string_view) {
          if (!drop_reply->load()) return true;
          dropped_.fetch_add(1);
          return false;  // Redis ran the command; its answer never arrives
        });
      });
    }
  }

  // Copies from -> to while `forward(chunk)` says so; then breaks both sides.
  template <typename Forward>
  void pump(int from, int to, Forward forward) {
    char buffer[16384];
    for (;;) {
      const ssize_t n = ::recv(from, buffer, sizeof(buffer), 0);
      if (n <= 0) break;
      const std::string_view chunk(buffer, static_cast<std::size_t>(n));
      if (!forward(chunk)) break;
      if (::send(to, buffer, static_cast<std::size_t>(n), MSG_NOSIGNAL) != n) break;
    }
    ::shutdown(from, SHUT_RDWR);
    ::shutdown(to, SHUT_RDWR);
  }

  const int redis_port_;
  int listener_ = -1;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> armed_{false};
  std::atomic<int> dropped_{0};
  std::thread acceptor_;
  std::mutex mutex_;
  std::vector<int> fds_;            // protected by mutex_
  std::vector<std::thread> pumps_;  // protected by mutex_; joined in the destructor
};

TEST(LostReply, AcquireWhoseReplyIsLostIsResentAndGetsTheLock) {
  auto server = RedisServer::start({.tcp = true});
  ReplyDroppingProxy proxy(server->port());
  auto client = RedisClient::create(
      {.url = "redis://127.0.0.1:" + std::to_string(proxy.port()) + "/0", .command_timeout = 2s});
  ASSERT_TRUE(client) << client.error().to_string();
  std::shared_ptr<RedisClient> shared = std::move(*client);
  auto locks = RedisLockManager::create({.lease = 30s}, shared);
  ASSERT_TRUE(locks) << locks.error().to_string();

  // Warm up: the script is loaded in Redis (so the armed EVALSHA runs rather
  // than answering NOSCRIPT) and the connection is pooled.
  {
    auto warm = (*locks)->try_acquire("warm", Deadline::after(5s));
    ASSERT_TRUE(warm) << warm.error().to_string();
    ASSERT_TRUE((*warm)->release());
  }

  proxy.arm();
  auto hold = (*locks)->try_acquire("k", Deadline::after(10s));
  ASSERT_TRUE(hold) << "the lock our own lost acquire took is ours: " << hold.error().to_string();
  EXPECT_EQ(proxy.dropped(), 1) << "the reply was dropped after Redis ran the script";
  EXPECT_EQ((*locks)->stats().resent_acquires, 1u);

  // Exactly one holder: our token is the lock's value.
  auto direct = RedisClient::create({.url = server->tcp_url()});
  ASSERT_TRUE(direct);
  auto value = (*direct)->command({"GET", (*locks)->lock_key("k")});
  ASSERT_TRUE(value) << value.error().to_string();
  EXPECT_EQ(value->str, (*hold)->token());
  // And it is released at once, not after the 30 s lease.
  ASSERT_TRUE((*hold)->release());
  auto after = (*direct)->command({"EXISTS", (*locks)->lock_key("k")});
  ASSERT_TRUE(after);
  EXPECT_EQ(after->integer, 0);
}

}  // namespace
}  // namespace herdguard
