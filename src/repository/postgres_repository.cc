// PostgresRepository: libpqxx connections in per-server bounded pools, each
// server behind its own circuit breaker. URL parsing and validation are
// libpq's (PQconninfoParse), so every libpq URL form works.
#include "herdguard/postgres_repository.h"

#include <fmt/format.h>
#include <libpq-fe.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <pqxx/pqxx>

namespace herdguard {
namespace {

constexpr auto kRelaxed = std::memory_order_relaxed;
constexpr char kStatement[] = "herdguard_load";

bool is_identifier(const std::string& s) {
  if (s.empty() || std::isdigit(static_cast<unsigned char>(s[0]))) return false;
  for (unsigned char c : s) {
    if (!std::isalnum(c) && c != '_') return false;
  }
  return true;
}

struct Conninfo {
  std::string conninfo;  // keyword=value form, for libpq
  std::string redacted;  // for messages
};

// Parses with libpq, adds connect_timeout, and renders both forms.
Result<Conninfo> parse_conninfo(std::string_view url, int connect_timeout_s) {
  char* error = nullptr;
  const std::string text(url);
  PQconninfoOption* options = PQconninfoParse(text.c_str(), &error);
  if (options == nullptr) {
    std::string message = error ? error : "cannot parse";
    if (error) PQfreemem(error);
    while (!message.empty() && (message.back() == '\n' || message.back() == ' '))
      message.pop_back();
    return make_error(ErrorKind::kInvalidArgument, fmt::format("postgres url: {}", message));
  }
  if (!text.starts_with("postgresql://") && !text.starts_with("postgres://")) {
    PQconninfoFree(options);
    return make_error(ErrorKind::kInvalidArgument,
                      "postgres url: expected postgresql://user[:password]@host[:port]/db");
  }
  Conninfo out;
  std::string user, host, port, dbname;
  bool has_timeout = false;
  for (PQconninfoOption* o = options; o->keyword != nullptr; ++o) {
    if (o->val == nullptr) continue;
    const std::string keyword = o->keyword;
    std::string value = o->val;
    if (keyword == "connect_timeout") has_timeout = true;
    if (keyword == "user") user = value;
    if (keyword == "host") host = value;
    if (keyword == "port") port = value;
    if (keyword == "dbname") dbname = value;
    std::string quoted;
    for (char c : value) {
      if (c == '\\' || c == '\'') quoted.push_back('\\');
      quoted.push_back(c);
    }
    out.conninfo += fmt::format("{}='{}' ", keyword, quoted);
  }
  PQconninfoFree(options);
  // libpq only checks the port when connecting; a typo should fail here.
  if (port.empty() || port.find_first_not_of("0123456789,") != std::string::npos) {
    if (!port.empty()) {
      return make_error(ErrorKind::kInvalidArgument,
                        fmt::format("postgres url: port '{}' is not a number", port));
    }
  }
  if (!has_timeout) out.conninfo += fmt::format("connect_timeout='{}'", connect_timeout_s);
  out.redacted =
      fmt::format("postgresql://{}@{}{}/{}", user.empty() ? "(default user)" : user,
                  host.empty() ? "(default host)" : host, port.empty() ? "" : ":" + port, dbname);
  return out;
}

}  // namespace

Result<std::string> redact_postgres_url(std::string_view url) {
  auto parsed = parse_conninfo(url, 2);
  if (!parsed) return std::unexpected(parsed.error());
  return parsed->redacted;
}

Result<void> PostgresRepositoryOptions::validate() const {
  auto bad = [](std::string what) {
    return make_error(ErrorKind::kInvalidArgument, fmt::format("postgres repository: {}", what));
  };
  if (urls.empty()) return bad("urls must name at least one server");
  for (const std::string& url : urls) {
    if (auto parsed = parse_conninfo(url, connect_timeout_s); !parsed)
      return std::unexpected(parsed.error());
  }
  if (query.empty()) {
    for (const auto& [name, value] :
         {std::pair{"table", table}, {"key_column", key_column}, {"value_column", value_column}}) {
      if (!is_identifier(value)) {
        return bad(fmt::format("{} '{}' is not an identifier (letters, digits, _)", name, value));
      }
    }
  } else if (query.find("$1") == std::string::npos) {
    return bad("query must take the key as $1");
  }
  if (pool_size < 1 || pool_size > 256) return bad("pool_size must be in 1..256");
  if (connect_timeout_s < 1) return bad("connect_timeout_s must be >= 1");
  if (auto r = server_breaker.validate(); !r) return bad(r.error().message);
  return ok();
}

struct PostgresRepository::Server {
  Server(Conninfo info, std::unique_ptr<CircuitBreaker> b)
      : conninfo(std::move(info.conninfo)),
        redacted(std::move(info.redacted)),
        breaker(std::move(b)) {}

  const std::string conninfo;
  const std::string redacted;
  const std::unique_ptr<CircuitBreaker> breaker;

  std::mutex mutex;
  std::condition_variable freed;
  // Guarded by mutex. Invariant: idle.size() <= open <= pool_size.
  std::vector<std::unique_ptr<pqxx::connection>> idle;
  std::size_t open = 0;

  std::atomic<std::uint64_t> loads{0}, failures{0}, connects{0};
};

struct PostgresRepository::Impl {
  PostgresRepositoryOptions options;
  std::string sql;
  std::vector<std::unique_ptr<Server>> servers;
  std::atomic<std::uint64_t> next{0};
  std::atomic<std::uint64_t> queries{0};

  // A connection of `server`: idle, new (if under the cap), or the first to
  // free up before `deadline`. Errors: kTimeout, kBackend (connect failed).
  Result<std::unique_ptr<pqxx::connection>> borrow(Server& server, Deadline deadline) {
    std::unique_lock lock(server.mutex);
    for (;;) {
      if (!server.idle.empty()) {
        auto c = std::move(server.idle.back());
        server.idle.pop_back();
        return c;
      }
      if (server.open < options.pool_size) {
        ++server.open;
        lock.unlock();
        try {
          auto c = std::make_unique<pqxx::connection>(server.conninfo);
          c->prepare(kStatement, sql);
          server.connects.fetch_add(1, kRelaxed);
          return c;
        } catch (const std::exception& e) {
          lock.lock();
          --server.open;
          server.freed.notify_one();
          return make_error(ErrorKind::kBackend, fmt::format("postgres {}: connect failed: {}",
                                                             server.redacted, trim(e.what())));
        }
      }
      if (server.freed.wait_until(lock, deadline.when()) == std::cv_status::timeout &&
          server.idle.empty() && server.open >= options.pool_size) {
        return make_error(
            ErrorKind::kTimeout,
            fmt::format("postgres {}: no free connection before the deadline", server.redacted));
      }
    }
  }

  void give_back(Server& server, std::unique_ptr<pqxx::connection> c, bool reusable) {
    {
      std::lock_guard lock(server.mutex);
      if (reusable) {
        server.idle.push_back(std::move(c));
      } else {
        --server.open;
      }
    }
    server.freed.notify_one();
    // A discarded connection closes here, outside the lock.
  }

  static std::string trim(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
    return s;
  }

  // One attempt on one connection. `*broken` tells the caller to retry on a
  // fresh connection.
  Result<std::optional<std::string>> run(Server& server, pqxx::connection& c, std::string_view key,
                                         Deadline deadline, bool* reusable, bool* broken) {
    *reusable = true;
    *broken = false;
    const auto remaining_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline.remaining()).count();
    if (remaining_ms < 1) return make_error(ErrorKind::kTimeout, "postgres: the deadline passed");
    queries.fetch_add(1, kRelaxed);
    try {
      pqxx::work tx(c);
      tx.exec0(fmt::format("SET LOCAL statement_timeout = {}", remaining_ms));
      pqxx::result rows = tx.exec_prepared(kStatement, std::string(key));
      tx.commit();
      if (rows.empty()) return std::optional<std::string>();
      const pqxx::field field = rows[0][0];
      if (field.is_null()) return std::optional<std::string>();
      return std::optional<std::string>(std::string(field.c_str(), field.size()));
    } catch (const pqxx::broken_connection& e) {
      *reusable = false;
      *broken = true;
      return make_error(ErrorKind::kBackend, fmt::format("postgres {}: connection lost: {}",
                                                         server.redacted, trim(e.what())));
    } catch (const pqxx::sql_error& e) {
      // The transaction was rolled back; the connection is still good.
      if (e.sqlstate() == "57014") {
        return make_error(ErrorKind::kTimeout,
                          fmt::format("postgres {}: statement timeout after {} ms", server.redacted,
                                      remaining_ms));
      }
      return make_error(ErrorKind::kBackend,
                        fmt::format("postgres {}: {} (SQLSTATE {})", server.redacted,
                                    trim(e.what()), e.sqlstate()));
    } catch (const std::exception& e) {
      *reusable = false;
      return make_error(ErrorKind::kBackend,
                        fmt::format("postgres {}: {}", server.redacted, trim(e.what())));
    }
  }

  Result<std::optional<std::string>> load_from(Server& server, std::string_view key,
                                               Deadline deadline) {
    server.loads.fetch_add(1, kRelaxed);
    Result<std::optional<std::string>> result = make_error(ErrorKind::kInternal, "not run");
    for (int attempt = 0; attempt < 2; ++attempt) {
      auto c = borrow(server, deadline);
      if (!c) return std::unexpected(c.error());
      bool reusable = true;
      bool broken = false;
      result = run(server, **c, key, deadline, &reusable, &broken);
      give_back(server, std::move(*c), reusable);
      if (!broken) break;  // a broken pooled connection: once more, freshly connected
    }
    return result;
  }
};

Result<std::unique_ptr<PostgresRepository>> PostgresRepository::open(
    PostgresRepositoryOptions options) {
  if (auto valid = options.validate(); !valid) return std::unexpected(valid.error());
  auto impl = std::make_unique<Impl>();
  impl->sql = options.query.empty()
                  ? fmt::format("SELECT {} FROM {} WHERE {} = $1 LIMIT 1", options.value_column,
                                options.table, options.key_column)
                  : options.query;
  for (const std::string& url : options.urls) {
    auto info = parse_conninfo(url, options.connect_timeout_s);
    if (!info) return std::unexpected(info.error());
    auto breaker = CircuitBreaker::create(options.server_breaker, system_clock());
    if (!breaker) return std::unexpected(breaker.error());
    impl->servers.push_back(std::make_unique<Server>(std::move(*info), std::move(*breaker)));
  }
  impl->options = std::move(options);
  return std::unique_ptr<PostgresRepository>(new PostgresRepository(std::move(impl)));
}

PostgresRepository::PostgresRepository(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
PostgresRepository::~PostgresRepository() = default;

Result<std::optional<std::string>> PostgresRepository::load(std::string_view key,
                                                            Deadline deadline) {
  const std::size_t n = impl_->servers.size();
  const std::uint64_t first = impl_->next.fetch_add(1, kRelaxed);
  for (std::size_t i = 0; i < n; ++i) {
    Server& server = *impl_->servers[(first + i) % n];
    auto permit = server.breaker->try_acquire();
    if (!permit) continue;  // this server is failing: try the next one
    const auto start = std::chrono::steady_clock::now();
    auto result = impl_->load_from(server, key, deadline);
    const bool failed = !result && result.error().kind != ErrorKind::kNotFound;
    server.breaker->record(failed ? CallOutcome::kFailure : CallOutcome::kSuccess,
                           std::chrono::steady_clock::now() - start);
    if (!failed) return result;
    server.failures.fetch_add(1, kRelaxed);
    // A server that refused or dropped us: fail over to the next one while
    // time remains. A timeout has used the time: report it.
    if (result.error().kind != ErrorKind::kBackend || deadline.expired() || i + 1 == n)
      return result;
  }
  return make_error(ErrorKind::kCircuitOpen,
                    fmt::format("postgres: all {} servers are failing (breakers open)", n));
}

std::uint64_t PostgresRepository::queries() const noexcept { return impl_->queries.load(kRelaxed); }

std::vector<PostgresServerStats> PostgresRepository::servers() const {
  std::vector<PostgresServerStats> out;
  for (const auto& s : impl_->servers) {
    out.push_back({.url = s->redacted,
                   .loads = s->loads.load(kRelaxed),
                   .failures = s->failures.load(kRelaxed),
                   .connects = s->connects.load(kRelaxed),
                   .breaker = s->breaker->state()});
  }
  return out;
}

}  // namespace herdguard
