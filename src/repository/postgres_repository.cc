// PostgresRepository: libpqxx connections in per-server bounded pools, each
// server behind its own circuit breaker. URL parsing and validation are
// libpq's (PQconninfoParse), so every libpq URL form works.
//
// Invariants (per Server, under its mutex): idle.size() <= open <=
// pool_size; `open` counts idle connections, borrowed ones and connects in
// progress. No libpqxx exception leaves this file: each is caught where the
// call is made and turned into a Result naming the server.
#include "herdguard/postgres_repository.h"

#include <fmt/format.h>
#include <libpq-fe.h>

#include <atomic>
#include <cctype>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <pqxx/pqxx>
#include <span>
#include <string_view>
#include <unordered_map>

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

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\r')) s.pop_back();
  return s;
}

struct Conninfo {
  std::string conninfo;  // keyword='value' form, for libpq
  std::string redacted;  // postgresql://user@host:port/db, for messages
  bool has_connect_timeout = false;
};

Result<Conninfo> parse_conninfo(std::string_view url) {
  auto bad = [](std::string what) {
    return make_error(ErrorKind::kInvalidArgument, fmt::format("postgres url: {}", what));
  };
  if (!url.starts_with("postgresql://") && !url.starts_with("postgres://")) {
    return bad(
        fmt::format("'{}' does not start with postgresql:// or postgres:// "
                    "(expected postgresql://user[:password]@host[:port]/db)",
                    url.substr(0, url.find(':'))));
  }
  char* error = nullptr;
  const std::string text(url);
  PQconninfoOption* options = PQconninfoParse(text.c_str(), &error);
  if (options == nullptr) {
    std::string message = error ? trim(error) : std::string("cannot parse");
    if (error) PQfreemem(error);
    // libpq's message may quote the URL; never echo a password.
    if (message.find(text) != std::string::npos) message = "cannot parse the URL";
    return bad(message);
  }
  Conninfo out;
  std::string user, host, hostaddr, port, dbname;
  for (PQconninfoOption* o = options; o->keyword != nullptr; ++o) {
    if (o->val == nullptr) continue;
    const std::string keyword = o->keyword;
    const std::string value = o->val;
    if (keyword == "connect_timeout") out.has_connect_timeout = true;
    if (keyword == "user") user = value;
    if (keyword == "host") host = value;
    if (keyword == "hostaddr") hostaddr = value;
    if (keyword == "port") port = value;
    if (keyword == "dbname") dbname = value;
    std::string quoted;
    for (char c : value) {
      if (c == '\\' || c == '\'') quoted.push_back('\\');
      quoted.push_back(c);
    }
    out.conninfo += fmt::format("{}{}='{}'", out.conninfo.empty() ? "" : " ", keyword, quoted);
  }
  PQconninfoFree(options);
  // libpq only checks the port when connecting; a typo should fail here.
  if (!port.empty()) {
    std::size_t start = 0;
    while (start <= port.size()) {
      const std::size_t end = std::min(port.find(',', start), port.size());
      const std::string one = port.substr(start, end - start);
      if (one.empty() || one.size() > 5 ||
          one.find_first_not_of("0123456789") != std::string::npos || std::stoi(one) < 1 ||
          std::stoi(one) > 65535) {
        return bad(fmt::format("port '{}' is not a number in 1..65535", one));
      }
      start = end + 1;
    }
  }
  if (host.empty()) host = hostaddr;
  out.redacted =
      fmt::format("postgresql://{}@{}{}/{}", user.empty() ? "(default user)" : user,
                  host.empty() ? "(default host)" : host, port.empty() ? "" : ":" + port, dbname);
  return out;
}

}  // namespace

Result<std::string> postgres_conninfo(std::string_view url) {
  auto parsed = parse_conninfo(url);
  if (!parsed) return std::unexpected(parsed.error());
  return std::move(parsed->conninfo);
}

Result<std::string> redact_postgres_url(std::string_view url) {
  auto parsed = parse_conninfo(url);
  if (!parsed) return std::unexpected(parsed.error());
  return std::move(parsed->redacted);
}

Result<void> PostgresRepositoryOptions::validate() const {
  auto bad = [](std::string what) {
    return make_error(ErrorKind::kInvalidArgument, fmt::format("postgres repository: {}", what));
  };
  if (urls.empty()) return bad("urls must name at least one server");
  for (const std::string& url : urls) {
    if (auto parsed = parse_conninfo(url); !parsed) return std::unexpected(parsed.error());
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
  if (connect_timeout <= Duration::zero()) return bad("connect_timeout must be > 0");
  if (auto r = server_limit.validate(); !r) {
    return bad(fmt::format("server_limit: {}", r.error().message));
  }
  if (auto r = replica_breaker.validate(); !r) {
    return bad(fmt::format("replica_breaker: {}", r.error().message));
  }
  return ok();
}

struct PostgresRepository::Server {
  Server(Conninfo info, std::unique_ptr<CircuitBreaker> b, std::shared_ptr<ConcurrencyLimiter> l)
      : conninfo(std::move(info.conninfo)),
        redacted(std::move(info.redacted)),
        has_connect_timeout(info.has_connect_timeout),
        breaker(std::move(b)),
        limiter(std::move(l)) {}

  const std::string conninfo;
  const std::string redacted;
  const bool has_connect_timeout;
  const std::unique_ptr<CircuitBreaker> breaker;
  const std::shared_ptr<ConcurrencyLimiter> limiter;

  std::mutex mutex;
  std::condition_variable freed;
  // Guarded by mutex. Invariant: idle.size() <= open <= pool_size.
  std::vector<std::unique_ptr<pqxx::connection>> idle;
  std::size_t open = 0;

  std::atomic<std::uint64_t> loads{0}, failures{0}, connects{0};
};

// Runs in the load's transaction; throws what libpqxx throws (run()
// turns it into errors).
struct PostgresRepository::Operation {
  std::function<Rows(pqxx::work&)> run;
};

struct PostgresRepository::Impl {
  using Rows = PostgresRepository::Rows;
  using Operation = PostgresRepository::Operation;
  PostgresRepositoryOptions options;
  std::string sql;
  std::vector<std::unique_ptr<Server>> servers;
  std::atomic<std::uint64_t> next{0};
  std::atomic<std::uint64_t> queries{0};

  // Opens and prepares one connection. The caller has counted it in
  // server.open. Errors: kBackend naming the server and libpq's message.
  Result<std::unique_ptr<pqxx::connection>> connect(Server& server, Duration timeout) {
    std::string conninfo = server.conninfo;
    if (!server.has_connect_timeout) {
      const auto seconds =
          std::max<std::int64_t>(1, std::chrono::ceil<std::chrono::seconds>(timeout).count());
      conninfo += fmt::format(" connect_timeout='{}'", seconds);
    }
    try {
      auto c = std::make_unique<pqxx::connection>(conninfo);
      c->prepare(kStatement, sql);
      c->prepare_now(kStatement);  // a missing table or column fails here, not mid-load
      server.connects.fetch_add(1, kRelaxed);
      return c;
    } catch (const std::exception& e) {
      return make_error(ErrorKind::kBackend, fmt::format("postgres {}: connect failed: {}",
                                                         server.redacted, trim(e.what())));
    }
  }

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
        auto c = connect(server, std::min(options.connect_timeout, deadline.remaining()));
        if (!c) {
          lock.lock();
          --server.open;
          lock.unlock();
          server.freed.notify_one();
        }
        return c;
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

  // After one broken connection the idle ones are suspect too (a restart
  // breaks them all): close them, so the retry connects afresh.
  void drop_idle(Server& server) {
    std::vector<std::unique_ptr<pqxx::connection>> dropped;
    {
      std::lock_guard lock(server.mutex);
      dropped.swap(server.idle);
      server.open -= dropped.size();
    }
    server.freed.notify_all();
  }

  // One attempt on one connection. `*broken` tells the caller to retry on a
  // fresh connection.
  Result<Rows> run(Server& server, pqxx::connection& c, const Operation& op, Deadline deadline,
                   bool* reusable, bool* broken) {
    *reusable = true;
    *broken = false;
    const auto remaining_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline.remaining()).count();
    if (remaining_ms < 1) {
      return make_error(ErrorKind::kTimeout,
                        fmt::format("postgres {}: the deadline passed", server.redacted));
    }
    queries.fetch_add(1, kRelaxed);
    try {
      pqxx::work tx(c);
      tx.exec0(fmt::format("SET LOCAL statement_timeout = {}", remaining_ms));
      Rows rows = op.run(tx);
      tx.commit();
      return rows;
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

  Result<Rows> load_from(Server& server, const Operation& op, Deadline deadline) {
    server.loads.fetch_add(1, kRelaxed);
    Result<Rows> result = make_error(ErrorKind::kInternal, "not run");
    for (int attempt = 0; attempt < 2; ++attempt) {
      auto c = borrow(server, deadline);
      if (!c) return std::unexpected(c.error());
      bool reusable = true;
      bool broken = false;
      result = run(server, **c, op, deadline, &reusable, &broken);
      give_back(server, std::move(*c), reusable);
      if (!broken) break;
      drop_idle(server);  // once more, on a freshly connected one
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
    auto info = parse_conninfo(url);
    if (!info) return std::unexpected(info.error());
    auto breaker = CircuitBreaker::create(options.replica_breaker, system_clock());
    if (!breaker) return std::unexpected(breaker.error());
    auto limiter = ConcurrencyLimiter::create(options.server_limit);
    if (!limiter) return std::unexpected(limiter.error());
    impl->servers.push_back(
        std::make_unique<Server>(std::move(*info), std::move(*breaker), std::move(*limiter)));
  }
  impl->options = std::move(options);
  // One connection to the primary now: a wrong URL, password or table is an
  // error here rather than on every load.
  Server& primary = *impl->servers.front();
  auto first = impl->connect(primary, impl->options.connect_timeout);
  if (!first) return std::unexpected(first.error());
  primary.idle.push_back(std::move(*first));
  primary.open = 1;
  return std::unique_ptr<PostgresRepository>(new PostgresRepository(std::move(impl)));
}

PostgresRepository::PostgresRepository(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
PostgresRepository::~PostgresRepository() = default;

Result<std::optional<std::string>> PostgresRepository::load(std::string_view key,
                                                            Deadline deadline) {
  const std::string k(key);
  const Operation one{[&k](pqxx::work& tx) {
    const pqxx::result rows = tx.exec_prepared(kStatement, k);
    Rows out(1);
    if (!rows.empty() && rows.columns() >= 1 && !rows[0][0].is_null())
      out[0].emplace(rows[0][0].c_str(), rows[0][0].size());
    return out;
  }};
  auto rows = run_somewhere(one, deadline);
  if (!rows) return std::unexpected(std::move(rows.error()));
  return std::move(rows->at(0));
}

std::vector<Result<std::optional<std::string>>> PostgresRepository::load_many(
    std::span<const std::string> keys, Deadline deadline) {
  if (!impl_->options.query.empty()) return Repository::load_many(keys, deadline);
  const PostgresRepositoryOptions& o = impl_->options;
  // PostgreSQL takes up to 65,535 parameters: 1,000 a statement, one
  // statement (and transaction) per chunk.
  constexpr std::size_t kChunk = 1000;
  std::vector<Result<std::optional<std::string>>> results;
  results.reserve(keys.size());
  for (std::size_t from = 0; from < keys.size(); from += kChunk) {
    const std::span<const std::string> chunk =
        keys.subspan(from, std::min(kChunk, keys.size() - from));
    // Rows are matched to keys by SQL's `=` (each $i takes the key
    // column's type, as in load(): char(n), uuid, citext compare as they
    // do there), not by comparing text here: the CASE names the first key
    // a row equals. (Two keys equal to one row, as "A" and "a" in a citext
    // column, answer the first only; the other reads as absent.)
    std::string sql = fmt::format("SELECT CASE WHEN {} = $1 THEN 1", o.key_column);
    for (std::size_t i = 2; i <= chunk.size(); ++i)
      sql += fmt::format(" WHEN {} = ${} THEN {}", o.key_column, i, i);
    sql += fmt::format(" END, {} FROM {} WHERE {} IN ($1", o.value_column, o.table, o.key_column);
    for (std::size_t i = 2; i <= chunk.size(); ++i) sql += fmt::format(", ${}", i);
    sql += ")";
    const Operation batch{[&](pqxx::work& tx) {
      const pqxx::result rows =
          tx.exec_params(sql, pqxx::prepare::make_dynamic_params(chunk.begin(), chunk.end()));
      // Where each key's row goes (a key may be asked for twice).
      std::unordered_map<std::string_view, std::vector<std::size_t>> positions;
      for (std::size_t i = 0; i < chunk.size(); ++i) positions[chunk[i]].push_back(i);
      Rows out(chunk.size());
      for (const auto& row : rows) {
        if (row[0].is_null() || row[1].is_null()) continue;
        const auto position = row[0].as<long long>();
        if (position < 1 || static_cast<std::size_t>(position) > chunk.size()) continue;
        // A key asked for twice answers at both places.
        for (std::size_t at : positions[chunk[static_cast<std::size_t>(position) - 1]])
          out[at].emplace(row[1].c_str(), row[1].size());
      }
      return out;
    }};
    auto rows = run_somewhere(batch, deadline);
    for (std::size_t i = 0; i < chunk.size(); ++i) {
      if (rows) {
        results.emplace_back(std::move((*rows)[i]));
      } else {
        results.emplace_back(std::unexpected(rows.error()));
      }
    }
  }
  return results;
}

bool PostgresRepository::loads_in_batches() const noexcept { return impl_->options.query.empty(); }

Result<PostgresRepository::Rows> PostgresRepository::run_somewhere(const Operation& op,
                                                                   Deadline deadline) {
  const std::size_t n = impl_->servers.size();
  const std::uint64_t first = impl_->next.fetch_add(1, kRelaxed);
  Result<Rows> last =
      make_error(ErrorKind::kCircuitOpen,
                 fmt::format("postgres: all {} servers are failing (breakers open)", n));
  // The first server (in turn) at its limit whose breaker was not open: the
  // one to wait for when every server is at its limit.
  Server* full = nullptr;
  for (std::size_t i = 0; i < n; ++i) {
    Server& server = *impl_->servers[(first + i) % n];
    auto slot = server.limiter->try_acquire();
    if (!slot) {
      if (full == nullptr && server.breaker->state() != BreakerState::kOpen) full = &server;
      continue;  // at its limit: try the next server
    }
    bool failed_over = false;
    auto result = run_at(server, std::move(*slot), op, deadline, &failed_over);
    if (!failed_over) return result;
    // An open breaker keeps the "all servers failing" error unless another failed.
    if (result.error().kind != ErrorKind::kCircuitOpen) last = std::move(result);
  }
  if (full == nullptr) return last;
  auto slot = full->limiter->acquire(deadline);
  if (!slot) {
    slot.error().message = fmt::format("postgres {}: {}", full->redacted, slot.error().message);
    return std::unexpected(std::move(slot.error()));
  }
  bool failed_over = false;
  return run_at(*full, std::move(*slot), op, deadline, &failed_over);
}

Result<PostgresRepository::Rows> PostgresRepository::run_at(Server& server,
                                                            ConcurrencyLimiter::Permit slot,
                                                            const Operation& op, Deadline deadline,
                                                            bool* try_next) {
  *try_next = false;
  if (auto permit = server.breaker->try_acquire(); !permit) {
    *try_next = true;  // skip a failing server
    return make_error(ErrorKind::kCircuitOpen,
                      fmt::format("postgres {}: breaker open", server.redacted));
  }
  const auto start = std::chrono::steady_clock::now();
  auto result = impl_->load_from(server, op, deadline);
  const Duration elapsed = std::chrono::steady_clock::now() - start;
  const bool failed = !result;
  server.breaker->record(failed ? CallOutcome::kFailure : CallOutcome::kSuccess, elapsed);
  slot.record(elapsed, !failed                                      ? LoadOutcome::kSuccess
                       : result.error().kind == ErrorKind::kTimeout ? LoadOutcome::kTimeout
                                                                    : LoadOutcome::kIgnore);
  if (!failed) return result;
  server.failures.fetch_add(1, kRelaxed);
  // A server that refused or dropped us: fail over to the next one while
  // time remains. A timeout has used the time: report it.
  *try_next = result.error().kind == ErrorKind::kBackend && !deadline.expired();
  return result;
}

std::uint64_t PostgresRepository::queries() const noexcept { return impl_->queries.load(kRelaxed); }

std::vector<PostgresServerStats> PostgresRepository::servers() const {
  std::vector<PostgresServerStats> out;
  for (const auto& s : impl_->servers) {
    std::size_t open = 0;
    {
      std::lock_guard lock(s->mutex);
      open = s->open;
    }
    out.push_back({.url_redacted = s->redacted,
                   .loads = s->loads.load(kRelaxed),
                   .failures = s->failures.load(kRelaxed),
                   .connects = s->connects.load(kRelaxed),
                   .connections = open,
                   .breaker = s->breaker->state(),
                   .limit = s->limiter->stats()});
  }
  return out;
}

}  // namespace herdguard
