#include "redis/hiredis_connection.h"

#include <fmt/format.h>
#include <poll.h>

#include <cerrno>
#include <charconv>
#include <vector>

namespace herdguard::internal {
namespace {

timeval to_timeval(Duration d) {
  const auto us =
      std::max<long long>(1000, std::chrono::duration_cast<std::chrono::microseconds>(d).count());
  return timeval{static_cast<time_t>(us / 1'000'000), static_cast<suseconds_t>(us % 1'000'000)};
}

long long to_ms(Duration d) {
  return static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(d).count());
}

bool is_timeout(const redisContext& c, int saved_errno) {
  return c.err == REDIS_ERR_IO && (saved_errno == EAGAIN || saved_errno == EWOULDBLOCK);
}

std::string context_error(const redisContext& c) {
  return c.errstr[0] != '\0' ? std::string(c.errstr) : std::string("connection lost");
}

}  // namespace

std::optional<RedisUrl::Node> sentinel_primary(const RedisReply& reply) {
  if (reply.type != RedisReply::Type::kArray || reply.elements.size() != 2 ||
      reply.elements[0].type != RedisReply::Type::kString || reply.elements[0].str.empty() ||
      reply.elements[1].type != RedisReply::Type::kString) {
    return std::nullopt;
  }
  const std::string& port = reply.elements[1].str;
  RedisUrl::Node node{.host = reply.elements[0].str, .port = 0};
  const auto parsed = std::from_chars(port.data(), port.data() + port.size(), node.port);
  if (parsed.ec != std::errc() || parsed.ptr != port.data() + port.size() || node.port < 1 ||
      node.port > 65535) {
    return std::nullopt;
  }
  return node;
}

RedisReply to_reply(const redisReply& r) {
  RedisReply out;
  switch (r.type) {
    case REDIS_REPLY_STRING:
      out.type = RedisReply::Type::kString;
      out.str.assign(r.str, r.len);
      break;
    case REDIS_REPLY_STATUS:
      out.type = RedisReply::Type::kStatus;
      out.str.assign(r.str, r.len);
      break;
    case REDIS_REPLY_INTEGER:
      out.type = RedisReply::Type::kInteger;
      out.integer = r.integer;
      break;
    case REDIS_REPLY_ARRAY:
      out.type = RedisReply::Type::kArray;
      out.elements.reserve(r.elements);
      for (std::size_t i = 0; i < r.elements; ++i) out.elements.push_back(to_reply(*r.element[i]));
      break;
    default:  // REDIS_REPLY_NIL (errors are handled by run())
      out.type = RedisReply::Type::kNil;
      break;
  }
  return out;
}

Result<RedisConnection> RedisConnection::open(const RedisUrl& url, Duration connect_timeout,
                                              Duration command_timeout, std::string_view where) {
  if (url.transport == RedisUrl::Transport::kCluster) {
    // Any node of a cluster will do (the subscriber's classic pub/sub hears
    // every node's PUBLISH): the seeds in turn, the first that logs in.
    Result<RedisConnection> last =
        make_error(ErrorKind::kBackend, fmt::format("{}: no seed node", where));
    for (const auto& seed : url.seeds) {
      RedisUrl node = url;
      node.transport = RedisUrl::Transport::kTcp;
      node.host = seed.host;
      node.port = seed.port;
      node.seeds.clear();
      last = open(node, connect_timeout, command_timeout, where);
      if (last) return last;
    }
    return last;
  }
  if (url.transport == RedisUrl::Transport::kSentinel) {
    // The primary the Sentinels name (each asked in turn, without AUTH).
    std::string last_error = "no Sentinel";
    for (const auto& seed : url.seeds) {
      RedisUrl sentinel{
          .transport = RedisUrl::Transport::kTcp, .host = seed.host, .port = seed.port};
      auto asked = open(sentinel, connect_timeout, command_timeout, where);
      if (!asked) {
        last_error = asked.error().message;
        continue;
      }
      SendFailure failure = SendFailure::kNone;
      const std::string_view argv[] = {"SENTINEL", "get-master-addr-by-name", url.master_name};
      auto reply = asked->run(argv, command_timeout, &failure);
      if (!reply) {
        last_error = reply.error().message;
        continue;
      }
      const auto address = sentinel_primary(*reply);
      if (!address) {
        last_error = "no valid address of a primary named " + url.master_name;
        continue;
      }
      RedisUrl primary = url;
      primary.transport = RedisUrl::Transport::kTcp;
      primary.host = address->host;
      primary.port = address->port;
      primary.seeds.clear();
      return open(primary, connect_timeout, command_timeout, where);
    }
    return make_error(ErrorKind::kBackend,
                      fmt::format("{}: no Sentinel named the primary: {}", where, last_error));
  }
  const timeval tv = to_timeval(connect_timeout);
  RedisContextPtr context(url.transport == RedisUrl::Transport::kUnix
                              ? redisConnectUnixWithTimeout(url.socket_path.c_str(), tv)
                              : redisConnectWithTimeout(url.host.c_str(), url.port, tv));
  if (!context) return make_error(ErrorKind::kBackend, fmt::format("{}: out of memory", where));
  if (context->err != 0) {
    return make_error(ErrorKind::kBackend,
                      fmt::format("{}: connect failed: {}", where, context->errstr));
  }
  RedisConnection connection(std::move(context), std::string(where), Duration::zero());
  connection.set_timeout(command_timeout);
  auto login = [&](std::initializer_list<std::string_view> argv,
                   std::string_view what) -> Result<void> {
    SendFailure failure = SendFailure::kNone;
    auto reply = connection.run(std::span(argv.begin(), argv.size()), command_timeout, &failure);
    if (!reply) {
      // run() names only the command, never its arguments (AUTH's password).
      std::string_view detail = reply.error().message;
      if (detail.starts_with(where))
        detail.remove_prefix(std::min(detail.size(), where.size() + 2));
      return make_error(reply.error().kind, fmt::format("{}: {} failed: {}", where, what, detail));
    }
    return ok();
  };
  if (!url.password.empty()) {
    auto authed = url.user.empty() ? login({"AUTH", url.password}, "authentication")
                                   : login({"AUTH", url.user, url.password}, "authentication");
    if (!authed) return std::unexpected(authed.error());
  }
  if (url.db != 0) {
    const std::string db = std::to_string(url.db);
    if (auto selected = login({"SELECT", db}, "SELECT " + db); !selected)
      return std::unexpected(selected.error());
  }
  return connection;
}

void RedisConnection::set_timeout(Duration timeout) {
  if (timeout == timeout_) return;
  redisSetTimeout(context_.get(), to_timeval(timeout));
  timeout_ = timeout;
}

Result<RedisReply> RedisConnection::run(std::span<const std::string_view> argv, Duration timeout,
                                        SendFailure* failure, std::string* error_reply) {
  redisContext* c = context_.get();
  const std::string_view name = argv.empty() ? std::string_view("?") : argv[0];
  set_timeout(timeout);
  std::vector<const char*> ptrs;
  std::vector<std::size_t> lens;
  ptrs.reserve(argv.size());
  lens.reserve(argv.size());
  for (auto a : argv) {
    ptrs.push_back(a.data());
    lens.push_back(a.size());
  }
  if (redisAppendCommandArgv(c, static_cast<int>(argv.size()), ptrs.data(), lens.data()) !=
      REDIS_OK) {
    *failure = SendFailure::kNotSent;
    return make_error(ErrorKind::kBackend,
                      fmt::format("{}: {} not sent: {}", where_, name, context_error(*c)));
  }
  // The one translation of an I/O failure (errno as the failing call left
  // it) into an Error: a socket timeout is kTimeout, anything else kBackend.
  auto io_error = [&](std::string_view when_timed_out, std::string_view otherwise) {
    const bool timed_out = is_timeout(*c, errno);
    return make_error(
        timed_out ? ErrorKind::kTimeout : ErrorKind::kBackend,
        timed_out ? fmt::format("{}: {} {} {} ms", where_, name, when_timed_out, to_ms(timeout))
                  : fmt::format("{}: {} {}: {}", where_, name, otherwise, context_error(*c)));
  };
  // Phase 1: write the whole command. A failure here means Redis never had
  // it complete, so it cannot have run.
  int written = 0;
  do {
    errno = 0;
    if (redisBufferWrite(c, &written) != REDIS_OK) {
      *failure = SendFailure::kNotSent;
      return io_error("not sent within", "not sent");
    }
  } while (written == 0);
  // Phase 2: read the reply. From here on the command may have run.
  void* raw = nullptr;
  errno = 0;
  if (redisGetReply(c, &raw) != REDIS_OK || raw == nullptr) {
    *failure = is_timeout(*c, errno) ? SendFailure::kTimeout : SendFailure::kLost;
    return io_error("timed out after", "failed");
  }
  RedisReplyPtr reply(static_cast<redisReply*>(raw));
  if (reply->type == REDIS_REPLY_ERROR) {
    *failure = SendFailure::kErrorReply;
    if (error_reply != nullptr) error_reply->assign(reply->str, reply->len);
    return make_error(ErrorKind::kBackend, fmt::format("{}: {}: {}", where_, name,
                                                       std::string_view(reply->str, reply->len)));
  }
  *failure = SendFailure::kNone;
  return to_reply(*reply);
}

bool RedisConnection::looks_alive() const {
  pollfd fd{context_->fd, POLLIN, 0};
  const int n = ::poll(&fd, 1, 0);
  // An idle connection has nothing to read: readable means EOF or an
  // unsolicited error, i.e. Redis closed it (restart, idle timeout).
  return n == 0;
}

}  // namespace herdguard::internal
