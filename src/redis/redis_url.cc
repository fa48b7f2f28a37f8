// Redis URL parsing. Written by hand: hiredis takes host/port/path
// arguments, not URLs, and no Debian library parses redis:// URLs.
#include <fmt/format.h>

#include <charconv>
#include <optional>

#include "herdguard/redis_client.h"

namespace herdguard {
namespace {

std::unexpected<Error> bad_url(std::string_view url, std::string_view what) {
  // The URL itself is not repeated: it may carry a password.
  (void)url;
  return make_error(ErrorKind::kInvalidArgument, fmt::format("redis url: {}", what));
}

// Parses a whole non-negative decimal integer, or nullopt.
std::optional<long long> parse_int(std::string_view s) {
  if (s.empty()) return std::nullopt;
  long long v = 0;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || end != s.data() + s.size() || v < 0) return std::nullopt;
  return v;
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Decodes %XX escapes. Errors name the field.
Result<std::string> percent_decode(std::string_view s, std::string_view field) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out.push_back(s[i]);
      continue;
    }
    if (i + 2 >= s.size()) {
      return make_error(ErrorKind::kInvalidArgument,
                        fmt::format("redis url: truncated %-escape in the {}", field));
    }
    const int hi = hex_digit(s[i + 1]);
    const int lo = hex_digit(s[i + 2]);
    if (hi < 0 || lo < 0) {
      return make_error(ErrorKind::kInvalidArgument,
                        fmt::format("redis url: bad %-escape in the {}", field));
    }
    out.push_back(static_cast<char>(hi * 16 + lo));
    i += 2;
  }
  return out;
}

Result<int> parse_db(std::string_view s) {
  auto v = parse_int(s);
  if (!v || *v > 1'000'000) {
    return make_error(ErrorKind::kInvalidArgument,
                      fmt::format("redis url: db '{}' is not a non-negative integer", s));
  }
  return static_cast<int>(*v);
}

Result<RedisUrl> parse_unix(std::string_view url, std::string_view rest) {
  RedisUrl out;
  out.transport = RedisUrl::Transport::kUnix;
  std::string_view path = rest;
  std::string_view query;
  if (auto q = rest.find('?'); q != std::string_view::npos) {
    path = rest.substr(0, q);
    query = rest.substr(q + 1);
  }
  if (path.empty()) return bad_url(url, "unix socket path is empty");
  if (path.front() != '/') {
    return bad_url(url, fmt::format("unix socket path '{}' is not absolute "
                                    "(write unix:///abs/path.sock)",
                                    path));
  }
  out.socket_path = std::string(path);
  while (!query.empty()) {
    const auto amp = query.find('&');
    const std::string_view pair = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    const auto eq = pair.find('=');
    if (eq == std::string_view::npos) {
      return bad_url(url, fmt::format("query parameter '{}' has no value", pair));
    }
    const std::string_view name = pair.substr(0, eq);
    const std::string_view value = pair.substr(eq + 1);
    if (name == "db") {
      auto db = parse_db(value);
      if (!db) return std::unexpected(db.error());
      out.db = *db;
    } else if (name == "password") {
      auto decoded = percent_decode(value, "password");
      if (!decoded) return std::unexpected(decoded.error());
      out.password = std::move(*decoded);
    } else if (name == "user") {
      auto decoded = percent_decode(value, "user");
      if (!decoded) return std::unexpected(decoded.error());
      out.user = std::move(*decoded);
    } else {
      return bad_url(url,
                     fmt::format("unknown query parameter '{}' (known: db, user, password)", name));
    }
  }
  return out;
}

// Splits `[user[:password]@]` off the front of `rest` into `out`.
Result<void> take_userinfo(std::string_view& rest, RedisUrl& out) {
  // userinfo: everything before the last '@' (passwords may contain '@' only
  // percent-encoded, but be lenient and split at the last one).
  const auto at = rest.rfind('@');
  if (at == std::string_view::npos) return ok();
  const std::string_view userinfo = rest.substr(0, at);
  rest = rest.substr(at + 1);
  const auto colon = userinfo.find(':');
  auto user = percent_decode(userinfo.substr(0, colon), "user");
  if (!user) return std::unexpected(user.error());
  out.user = std::move(*user);
  if (colon != std::string_view::npos) {
    auto password = percent_decode(userinfo.substr(colon + 1), "password");
    if (!password) return std::unexpected(password.error());
    out.password = std::move(*password);
  }
  return ok();
}

// Parses `host[:port]` or `[ipv6][:port]`.
Result<RedisUrl::Node> parse_host_port(std::string_view url, std::string_view hostport,
                                       int default_port = 6379) {
  std::string_view host = hostport;
  std::string_view port;
  if (!hostport.empty() && hostport.front() == '[') {
    const auto close = hostport.find(']');
    if (close == std::string_view::npos) return bad_url(url, "IPv6 host lacks its closing ']'");
    host = hostport.substr(1, close - 1);
    const std::string_view after = hostport.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return bad_url(url, "unexpected text after the IPv6 host");
      port = after.substr(1);
      if (port.empty()) return bad_url(url, "port is empty");
    }
  } else if (auto colon = hostport.rfind(':'); colon != std::string_view::npos) {
    host = hostport.substr(0, colon);
    port = hostport.substr(colon + 1);
    if (port.empty()) return bad_url(url, "port is empty");
  }
  if (host.empty()) return bad_url(url, "host is empty");
  RedisUrl::Node node{.host = std::string(host), .port = default_port};
  if (!port.empty()) {
    auto p = parse_int(port);
    if (!p || *p < 1 || *p > 65535) {
      return bad_url(url, fmt::format("port '{}' is not a number in 1..65535", port));
    }
    node.port = static_cast<int>(*p);
  }
  return node;
}

Result<RedisUrl> parse_tcp(std::string_view url, std::string_view rest) {
  RedisUrl out;
  out.transport = RedisUrl::Transport::kTcp;
  if (auto taken = take_userinfo(rest, out); !taken) return std::unexpected(taken.error());
  std::string_view hostport = rest;
  std::string_view path;
  if (auto slash = rest.find('/'); slash != std::string_view::npos) {
    hostport = rest.substr(0, slash);
    path = rest.substr(slash + 1);
  }
  if (hostport.find('?') != std::string_view::npos || path.find('?') != std::string_view::npos) {
    return bad_url(url, "query parameters are only supported for unix:// URLs");
  }
  auto node = parse_host_port(url, hostport);
  if (!node) return std::unexpected(node.error());
  out.host = std::move(node->host);
  out.port = node->port;
  if (!path.empty()) {
    auto db = parse_db(path);
    if (!db) return std::unexpected(db.error());
    out.db = *db;
  }
  return out;
}

// Parses `host[:port][,host[:port]...]` into out.seeds (at least one, at
// most 64); host/port become the first's.
Result<void> parse_node_list(std::string_view url, std::string_view rest, RedisUrl& out,
                             int default_port) {
  while (true) {
    const auto comma = rest.find(',');
    auto node = parse_host_port(url, rest.substr(0, comma), default_port);
    if (!node) return std::unexpected(node.error());
    out.seeds.push_back(std::move(*node));
    if (out.seeds.size() > 64) return bad_url(url, "more than 64 seed nodes");
    if (comma == std::string_view::npos) break;
    rest = rest.substr(comma + 1);
  }
  out.host = out.seeds.front().host;
  out.port = out.seeds.front().port;
  return ok();
}

// `redis-cluster://[user[:password]@]host[:port][,host[:port]...]`: the
// seed nodes. Redis Cluster has only database 0, so no path is taken.
Result<RedisUrl> parse_cluster(std::string_view url, std::string_view rest) {
  RedisUrl out;
  out.transport = RedisUrl::Transport::kCluster;
  if (auto taken = take_userinfo(rest, out); !taken) return std::unexpected(taken.error());
  if (rest.find('?') != std::string_view::npos) {
    return bad_url(url, "query parameters are only supported for unix:// URLs");
  }
  if (auto slash = rest.find('/'); slash != std::string_view::npos) {
    if (rest.substr(slash) != "/" && rest.substr(slash) != "/0") {
      return bad_url(url, "Redis Cluster has only database 0: remove the /db path");
    }
    rest = rest.substr(0, slash);
  }
  if (rest.empty())
    return bad_url(url, "no seed node (write redis-cluster://host:port[,host:port])");
  if (auto nodes = parse_node_list(url, rest, out, 6379); !nodes)
    return std::unexpected(nodes.error());
  return out;
}

// `redis-sentinel://[user[:password]@]host[:port][,host[:port]...]/MASTER[/db]`:
// the Sentinels (port 26379 by default) and the name of the primary they
// watch. The user and password are the data nodes' (Sentinels are asked
// without AUTH).
Result<RedisUrl> parse_sentinel(std::string_view url, std::string_view rest) {
  RedisUrl out;
  out.transport = RedisUrl::Transport::kSentinel;
  if (auto taken = take_userinfo(rest, out); !taken) return std::unexpected(taken.error());
  if (rest.find('?') != std::string_view::npos) {
    return bad_url(url, "query parameters are only supported for unix:// URLs");
  }
  const auto slash = rest.find('/');
  if (slash == std::string_view::npos || slash + 1 == rest.size()) {
    return bad_url(url, "no primary name (write redis-sentinel://host:port[,host:port]/NAME)");
  }
  std::string_view name = rest.substr(slash + 1);
  if (const auto db_slash = name.find('/'); db_slash != std::string_view::npos) {
    auto db = parse_db(name.substr(db_slash + 1));
    if (!db) return std::unexpected(db.error());
    out.db = *db;
    name = name.substr(0, db_slash);
  }
  auto decoded = percent_decode(name, "primary name");
  if (!decoded) return std::unexpected(decoded.error());
  if (decoded->empty()) return bad_url(url, "the primary name is empty");
  out.master_name = std::move(*decoded);
  rest = rest.substr(0, slash);
  if (rest.empty())
    return bad_url(url, "no Sentinel (write redis-sentinel://host:port[,host:port]/NAME)");
  if (auto nodes = parse_node_list(url, rest, out, 26379); !nodes)
    return std::unexpected(nodes.error());
  return out;
}

}  // namespace

Result<RedisUrl> RedisUrl::parse(std::string_view url) {
  constexpr std::string_view kRedis = "redis://";
  constexpr std::string_view kUnix = "unix://";
  constexpr std::string_view kCluster = "redis-cluster://";
  constexpr std::string_view kSentinel = "redis-sentinel://";
  if (url.starts_with(kRedis)) return parse_tcp(url, url.substr(kRedis.size()));
  if (url.starts_with(kUnix)) return parse_unix(url, url.substr(kUnix.size()));
  if (url.starts_with(kCluster)) return parse_cluster(url, url.substr(kCluster.size()));
  if (url.starts_with(kSentinel)) return parse_sentinel(url, url.substr(kSentinel.size()));
  const auto scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) {
    return bad_url(url,
                   "no scheme (expected redis://, unix://, redis-cluster:// or redis-sentinel://)");
  }
  return bad_url(
      url,
      fmt::format(
          "unknown scheme '{}' (expected redis://, unix://, redis-cluster:// or redis-sentinel://)",
          url.substr(0, scheme_end)));
}

std::string RedisUrl::redacted() const {
  const std::string secret = password.empty() ? "" : ":***";
  if (transport == Transport::kUnix) {
    std::string out = fmt::format("unix://{}?db={}", socket_path, db);
    if (!user.empty()) out += "&user=" + user;
    if (!password.empty()) out += "&password=***";
    return out;
  }
  const std::string userinfo =
      user.empty() && password.empty() ? "" : fmt::format("{}{}@", user, secret);
  auto shown = [](const std::string& h) {
    return h.find(':') != std::string::npos ? "[" + h + "]" : h;
  };
  if (transport == Transport::kCluster || transport == Transport::kSentinel) {
    std::string nodes;
    for (const auto& seed : seeds) {
      if (!nodes.empty()) nodes += ',';
      nodes += fmt::format("{}:{}", shown(seed.host), seed.port);
    }
    if (transport == Transport::kCluster)
      return fmt::format("redis-cluster://{}{}", userinfo, nodes);
    return fmt::format("redis-sentinel://{}{}/{}{}", userinfo, nodes, master_name,
                       db == 0 ? std::string() : fmt::format("/{}", db));
  }
  return fmt::format("redis://{}{}:{}/{}", userinfo, shown(host), port, db);
}

Result<void> RedisOptions::validate() const {
  auto bad = [](std::string_view what) {
    return make_error(ErrorKind::kInvalidArgument, fmt::format("redis options: {}", what));
  };
  if (auto parsed = RedisUrl::parse(url); !parsed) return std::unexpected(parsed.error());
  if (connect_timeout <= Duration::zero()) return bad("connect_timeout must be > 0");
  if (command_timeout <= Duration::zero()) return bad("command_timeout must be > 0");
  if (pool_wait_timeout < Duration::zero()) return bad("pool_wait_timeout must be >= 0");
  if (pool_size < 1) return bad("pool_size must be >= 1");
  if (reconnect_backoff_min < Duration::zero() || reconnect_backoff_max < reconnect_backoff_min) {
    return bad("reconnect backoff must satisfy 0 <= min <= max");
  }
  // Waits on Redis are refused past an hour rather than saturated: a
  // command that may block that long is a hung connection, and the backoff
  // arithmetic (doubling) must not overflow.
  constexpr Duration kLongest = std::chrono::hours(1);
  if (connect_timeout > kLongest) return bad("connect_timeout must be <= 1 h");
  if (command_timeout > kLongest) return bad("command_timeout must be <= 1 h");
  if (pool_wait_timeout > kLongest) return bad("pool_wait_timeout must be <= 1 h");
  if (reconnect_backoff_max > kLongest) return bad("reconnect_backoff_max must be <= 1 h");
  return ok();
}

}  // namespace herdguard
