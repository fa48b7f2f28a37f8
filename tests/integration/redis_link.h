// What the multi-node Redis fixtures (redis_cluster.h, redis_sentinel.h)
// share to drive their nodes: a plain hiredis connection to a loopback port
// with short timeouts (so a hung node cannot hang a test), INFO parsing,
// polling a converging state, and the text helpers of their diagnostics.
//
// Not thread-safe: a Link is used by one thread.
//
// Example:
//   herdguard::testing::link::Link node(port, password);
//   auto info = node.run({"INFO", "replication"});
//   if (info.ok()) role = info_field(info.text(), "role");
#pragma once

#include <hiredis/hiredis.h>

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace herdguard::testing::link {

inline constexpr auto kConnectTimeout = std::chrono::seconds(1);
inline constexpr auto kCommandTimeout = std::chrono::seconds(5);
inline constexpr auto kPoll = std::chrono::milliseconds(50);

std::string read_file(const std::string& path);
// The last `count` lines of `text`.
std::string last_lines(const std::string& text, int count);
// "127.0.0.1:<port>".
std::string endpoint(int port);
// The userinfo of a URL: everything but the unreserved characters escaped.
std::string percent_encode(std::string_view s);
timeval to_timeval(std::chrono::milliseconds d);

struct ReplyDeleter {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

// A reply's string (status, bulk, error); empty for others or null.
std::string text_of(const redisReply* r);

// A node's answer to one command: its reply, or why there is none.
struct Answer {
  Reply reply;
  std::string error;  // not empty when there is no reply or it is an error reply

  bool ok() const { return error.empty(); }
  std::string text() const { return text_of(reply.get()); }
};

// One connection to 127.0.0.1:`port`, authenticated when `password` is set.
// When the node does not answer (or refuses AUTH), every run() fails with
// the reason; after an I/O error the connection is not used again.
class Link {
 public:
  Link(int port, const std::string& password,
       std::chrono::milliseconds command_timeout = kCommandTimeout);
  Answer run(const std::vector<std::string>& args);

 private:
  struct ContextDeleter {
    void operator()(redisContext* c) const { redisFree(c); }
  };
  int port_;
  std::unique_ptr<redisContext, ContextDeleter> context_;
  std::string error_;
};

// `name:value` from INFO or CLUSTER INFO; empty when absent.
std::string info_field(std::string_view info, std::string_view name);

// Calls `pending` every kPoll until it returns nullopt (nodes converge by
// gossip and periodic INFO: there is no notification to wait on). After
// `within`, throws std::runtime_error: "<fixture>: <what> within N ms (last:
// <pending's reason>)" and `diagnostics()`.
void poll_until(const std::function<std::optional<std::string>()>& pending,
                std::chrono::milliseconds within, const std::string& fixture,
                const std::string& what, const std::function<std::string()>& diagnostics);

}  // namespace herdguard::testing::link
