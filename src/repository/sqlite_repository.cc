// SqliteRepository: a pool of SQLite connections, each with its statements
// prepared once.
//
// Invariants:
//  * A connection is used by at most one thread at a time: the one holding
//    its Lease. That is why connections are opened SQLITE_OPEN_NOMUTEX
//    (SQLite's "multi-thread" mode) and need no lock of their own.
//  * A connection goes back to the pool only after its statements are reset
//    and their bindings cleared (Lease's destructor), so the next user never
//    sees a half-stepped statement or a pointer into a caller's freed key.
//  * The pool's mutex guards only the idle list and the waiter queue; it is
//    never held while SQLite runs or while a load sleeps.
//  * idle_ is non-empty only when no one waits: release() hands a connection
//    straight to the longest waiter (FIFO), so a stream of new arrivals cannot
//    starve a load that has waited longer.
//  * Keys are bound the same way by load() and upsert(): as TEXT when they are
//    well-formed UTF-8 without NUL bytes, as BLOB otherwise (see bind_key).
#include "herdguard/sqlite_repository.h"

#include <fmt/format.h>
#include <sqlite3.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <span>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

namespace herdguard {
namespace {

constexpr std::size_t kMaxPoolSize = 256;

struct DatabaseCloser {
  // close_v2 rather than close: it cannot fail with SQLITE_BUSY and leak the
  // handle if a statement were still alive.
  void operator()(sqlite3* db) const noexcept { sqlite3_close_v2(db); }
};
struct StatementFinalizer {
  void operator()(sqlite3_stmt* stmt) const noexcept { sqlite3_finalize(stmt); }
};
using DatabaseHandle = std::unique_ptr<sqlite3, DatabaseCloser>;
using Statement = std::unique_ptr<sqlite3_stmt, StatementFinalizer>;

struct Connection {
  DatabaseHandle db;  // declared first, so it is closed after its statements
  Statement select;
  // Prepared on the first upsert() that uses this connection: its ON CONFLICT
  // clause needs a unique key, and a table that is only read need not have one.
  Statement upsert;
};

// --- Errors: every SQLite failure becomes an Error here. ---

std::unexpected<Error> invalid(std::string_view what) {
  return make_error(ErrorKind::kInvalidArgument, fmt::format("sqlite: {}", what));
}

std::unexpected<Error> backend(sqlite3* db, int rc, std::string_view context) {
  // The connection's message is the more specific one ("no such column: x");
  // without a connection only the code is left.
  const char* detail = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  return make_error(ErrorKind::kBackend, fmt::format("sqlite: {}: {}", context, detail));
}

long long to_ms(std::chrono::milliseconds d) { return static_cast<long long>(d.count()); }

bool is_identifier(std::string_view s) {
  auto letter = [](char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_'; };
  auto digit = [](char c) { return c >= '0' && c <= '9'; };
  if (s.empty() || !letter(s.front())) return false;
  return std::all_of(s.begin(), s.end(), [&](char c) { return letter(c) || digit(c); });
}

// True when `s` is well-formed UTF-8 (no overlongs, surrogates or code points
// past U+10FFFF) and contains no NUL byte.
bool is_plain_utf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto lead = static_cast<unsigned char>(s[i]);
    if (lead == 0) return false;
    if (lead < 0x80) {
      ++i;
      continue;
    }
    std::size_t length;
    char32_t min;
    if ((lead & 0xE0) == 0xC0) {
      length = 2, min = 0x80;
    } else if ((lead & 0xF0) == 0xE0) {
      length = 3, min = 0x800;
    } else if ((lead & 0xF8) == 0xF0) {
      length = 4, min = 0x10000;
    } else {
      return false;
    }
    if (s.size() - i < length) return false;
    char32_t code_point = lead & (0x7F >> length);
    for (std::size_t k = 1; k < length; ++k) {
      const auto next = static_cast<unsigned char>(s[i + k]);
      if ((next & 0xC0) != 0x80) return false;
      code_point = (code_point << 6) | (next & 0x3F);
    }
    if (code_point < min || code_point > 0x10FFFF || (code_point >= 0xD800 && code_point <= 0xDFFF))
      return false;
    i += length;
  }
  return true;
}

// sqlite3_bind_* treat a null pointer as SQL NULL, and an empty string_view
// may carry one; an empty key or value must stay an empty string.
const char* data_or_empty(std::string_view s) { return s.data() != nullptr ? s.data() : ""; }

// Keys that are ordinary text are bound as TEXT, so rows written by other
// tools (the sqlite3 shell, an ORM) are found. SQLite requires TEXT to be
// well-formed UTF-8 and leaves strings with embedded NULs undefined, so any
// other key is bound as a BLOB, which compares byte for byte. The choice
// depends only on the key's bytes, so upsert() and load() always agree.
// SQLITE_STATIC: the key outlives the statement's use; the Lease clears the
// bindings before the connection is returned.
int bind_key(sqlite3_stmt* stmt, int index, std::string_view key) {
  if (is_plain_utf8(key)) {
    return sqlite3_bind_text64(stmt, index, data_or_empty(key), key.size(), SQLITE_STATIC,
                               SQLITE_UTF8);
  }
  return sqlite3_bind_blob64(stmt, index, data_or_empty(key), key.size(), SQLITE_STATIC);
}

Result<Statement> prepare(sqlite3* db, const std::string& sql, std::string_view context) {
  sqlite3_stmt* raw = nullptr;
  const int rc = sqlite3_prepare_v2(db, sql.c_str(), static_cast<int>(sql.size()), &raw, nullptr);
  Statement stmt(raw);
  if (rc != SQLITE_OK) return backend(db, rc, context);
  return stmt;
}

// --- The pool. ---

class ConnectionPool {
 public:
  // Returns a connection to the pool when it goes out of scope.
  class Lease {
   public:
    Lease() = default;
    Lease(ConnectionPool* pool, Connection* connection) : pool_(pool), connection_(connection) {}
    Lease(Lease&& other) noexcept
        : pool_(std::exchange(other.pool_, nullptr)),
          connection_(std::exchange(other.connection_, nullptr)) {}
    Lease& operator=(Lease&&) = delete;
    ~Lease() {
      if (connection_ == nullptr) return;
      for (sqlite3_stmt* stmt : {connection_->select.get(), connection_->upsert.get()}) {
        if (stmt == nullptr) continue;
        sqlite3_reset(stmt);  // its return value repeats an error already reported
        sqlite3_clear_bindings(stmt);
      }
      pool_->release(connection_);
    }

    explicit operator bool() const { return connection_ != nullptr; }
    Connection* operator->() const { return connection_; }

   private:
    ConnectionPool* pool_ = nullptr;
    Connection* connection_ = nullptr;
  };

  explicit ConnectionPool(std::vector<std::unique_ptr<Connection>> connections)
      : connections_(std::move(connections)) {
    for (const auto& c : connections_) idle_.push_back(c.get());
  }
  ConnectionPool(const ConnectionPool&) = delete;
  ConnectionPool& operator=(const ConnectionPool&) = delete;

  std::size_t size() const { return connections_.size(); }

  // Waits until a connection is free or `deadline` passes; an empty Lease
  // means the deadline passed first. A free connection is taken even when
  // the deadline has passed: no wait was needed.
  Lease acquire(Deadline deadline) {
    std::unique_lock lock(mutex_);
    if (!idle_.empty()) {
      Connection* c = idle_.back();
      idle_.pop_back();
      return Lease(this, c);
    }
    Waiter waiter;
    waiters_.push_back(&waiter);
    waiter.handed_over.wait_until(lock, deadline.when(),
                                  [&] { return waiter.connection != nullptr; });
    if (waiter.connection == nullptr) {
      // Timed out; release() has not seen us yet, so we are still queued.
      waiters_.erase(std::find(waiters_.begin(), waiters_.end(), &waiter));
      return Lease();
    }
    return Lease(this, waiter.connection);
  }

 private:
  struct Waiter {
    std::condition_variable handed_over;
    Connection* connection = nullptr;  // set by release(), under mutex_
  };

  void release(Connection* c) {
    std::lock_guard lock(mutex_);
    if (waiters_.empty()) {
      idle_.push_back(c);
      return;
    }
    Waiter* waiter = waiters_.front();
    waiters_.pop_front();
    waiter->connection = c;
    // Notified under the lock: the waiter lives on its own stack, and cannot
    // return (and destroy it) before it gets the lock back.
    waiter->handed_over.notify_one();
  }

  const std::vector<std::unique_ptr<Connection>> connections_;  // all, idle or leased

  std::mutex mutex_;
  // State below is protected by mutex_.
  std::vector<Connection*> idle_;
  std::deque<Waiter*> waiters_;  // longest waiting first
};

// --- Opening. ---

// Runs `PRAGMA journal_mode=WAL`. In WAL mode readers do not block the writer
// nor the writer readers, so upserts (or another process's writes) do not
// stall loads. The mode is stored in the file, so one connection sets it.
// A file that cannot switch (in memory, or read-only) keeps its mode: WAL is
// an optimisation, not a requirement.
Result<void> enable_wal(sqlite3* db, std::string_view path) {
  auto pragma = prepare(db, "PRAGMA journal_mode=WAL", fmt::format("cannot open '{}'", path));
  if (!pragma) return std::unexpected(pragma.error());
  const int rc = sqlite3_step(pragma->get());
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
    return backend(db, rc, fmt::format("cannot open '{}'", path));
  }
  return ok();
}

Result<void> ensure_table(sqlite3* db, const SqliteRepositoryOptions& options) {
  const std::string context = fmt::format("cannot open '{}'", options.path);
  if (options.create_if_missing) {
    const std::string sql =
        fmt::format(R"(CREATE TABLE IF NOT EXISTS "{}" ("{}" TEXT PRIMARY KEY, "{}" BLOB))",
                    options.table, options.key_column, options.value_column);
    const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr);
    if (rc != SQLITE_OK) return backend(db, rc, context);
    return ok();
  }
  // Identifiers are case-insensitive in SQLite, hence NOCASE. A view will do
  // too: loads only read.
  auto lookup = prepare(db,
                        "SELECT 1 FROM sqlite_master WHERE type IN ('table', 'view') AND "
                        "name = ?1 COLLATE NOCASE",
                        context);
  if (!lookup) return std::unexpected(lookup.error());
  int rc = sqlite3_bind_text64(lookup->get(), 1, options.table.data(), options.table.size(),
                               SQLITE_STATIC, SQLITE_UTF8);
  if (rc == SQLITE_OK) rc = sqlite3_step(lookup->get());
  if (rc == SQLITE_DONE) {
    return make_error(ErrorKind::kBackend,
                      fmt::format("sqlite: table '{}' does not exist in '{}' (create_if_missing "
                                  "is false)",
                                  options.table, options.path));
  }
  if (rc != SQLITE_ROW) return backend(db, rc, context);
  return ok();
}

// Opens one pooled connection. The first one also sets up the file.
Result<std::unique_ptr<Connection>> open_connection(const SqliteRepositoryOptions& options,
                                                    const std::string& select_sql, bool first) {
  const std::string context = fmt::format("cannot open '{}'", options.path);
  // NOMUTEX: see the invariants at the top. Without create_if_missing
  // nothing is created, not even the file.
  int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX;
  if (options.create_if_missing) flags |= SQLITE_OPEN_CREATE;
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(options.path.c_str(), &raw, flags, nullptr);
  auto connection = std::make_unique<Connection>();
  connection->db.reset(raw);  // owned even on failure: it carries the message
  if (rc != SQLITE_OK) return backend(raw, rc, context);
  sqlite3* db = connection->db.get();

  // By default SQLite reads a double-quoted name that matches no column as a
  // string literal: SELECT "no_such_column" would return that text for every
  // row. Turned off, a wrong name fails here at open() instead.
  for (int setting : {SQLITE_DBCONFIG_DQS_DML, SQLITE_DBCONFIG_DQS_DDL}) {
    rc = sqlite3_db_config(db, setting, 0, nullptr);
    if (rc != SQLITE_OK) return backend(db, rc, context);
  }

  const auto busy_ms = std::min<long long>(to_ms(options.busy_timeout), INT_MAX);
  rc = sqlite3_busy_timeout(db, static_cast<int>(busy_ms));
  if (rc != SQLITE_OK) return backend(db, rc, context);

  if (first) {
    if (auto r = enable_wal(db, options.path); !r) return std::unexpected(r.error());
    if (auto r = ensure_table(db, options); !r) return std::unexpected(r.error());
  }

  auto select = prepare(db, select_sql,
                        fmt::format("cannot read table '{}' in '{}'", options.table, options.path));
  if (!select) return std::unexpected(select.error());
  connection->select = std::move(*select);
  return connection;
}

}  // namespace

Result<void> SqliteRepositoryOptions::validate() const {
  if (path.empty()) return invalid("path must not be empty");
  if (path == ":memory:") {
    return invalid(
        "path must name a file: ':memory:' would give each pooled connection its own database");
  }
  const std::pair<std::string_view, std::string_view> identifiers[] = {
      {"table", table}, {"key_column", key_column}, {"value_column", value_column}};
  for (const auto& [field, value] : identifiers) {
    if (!is_identifier(value)) {
      return invalid(fmt::format(
          "{} must be letters, digits and underscores, not starting with a digit; got '{}'", field,
          value));
    }
  }
  if (pool_size < 1 || pool_size > kMaxPoolSize) {
    return invalid(fmt::format("pool_size must be in 1..{}, got {}", kMaxPoolSize, pool_size));
  }
  if (busy_timeout < std::chrono::milliseconds::zero()) {
    return invalid(fmt::format("busy_timeout must be >= 0, got {} ms", to_ms(busy_timeout)));
  }
  if (simulated_latency < std::chrono::milliseconds::zero()) {
    return invalid(
        fmt::format("simulated_latency must be >= 0, got {} ms", to_ms(simulated_latency)));
  }
  return ok();
}

struct SqliteRepository::Impl {
  Impl(SqliteRepositoryOptions o, std::vector<std::unique_ptr<Connection>> connections)
      : options(std::move(o)),
        upsert_sql(fmt::format(
            R"(INSERT INTO "{0}" ("{1}", "{2}") VALUES (?1, ?2) ON CONFLICT ("{1}") DO UPDATE SET "{2}" = excluded."{2}")",
            options.table, options.key_column, options.value_column)),
        pool(std::move(connections)) {}

  // Holds the caller's connection for options.simulated_latency (or until
  // `deadline`: kTimeout), like a slow query would.
  Result<void> simulate_latency(Deadline deadline) const {
    const auto latency = options.simulated_latency;
    if (latency <= latency.zero()) return ok();
    const auto latency_end = std::chrono::steady_clock::now() + latency;
    if (latency_end > deadline.when()) {
      // Sleep only as long as the caller waits.
      std::this_thread::sleep_until(deadline.when());
      return make_error(ErrorKind::kTimeout,
                        fmt::format("sqlite: deadline passed during the simulated latency of {} ms",
                                    to_ms(latency)));
    }
    std::this_thread::sleep_until(latency_end);
    return ok();
  }

  const SqliteRepositoryOptions options;
  const std::string upsert_sql;
  ConnectionPool pool;
  std::atomic<std::uint64_t> queries{0};  // a statistic: relaxed is enough
};

Result<std::unique_ptr<SqliteRepository>> SqliteRepository::open(SqliteRepositoryOptions options) {
  if (auto r = options.validate(); !r) return std::unexpected(r.error());
  if (sqlite3_threadsafe() == 0) {
    return make_error(ErrorKind::kBackend,
                      "sqlite: the library was built without thread support (SQLITE_THREADSAFE=0)");
  }
  const std::string select_sql =
      fmt::format(R"(SELECT "{}" FROM "{}" WHERE "{}" = ?1)", options.value_column, options.table,
                  options.key_column);
  std::vector<std::unique_ptr<Connection>> connections;
  connections.reserve(options.pool_size);
  for (std::size_t i = 0; i < options.pool_size; ++i) {
    auto connection = open_connection(options, select_sql, /*first=*/i == 0);
    if (!connection) return std::unexpected(connection.error());
    connections.push_back(std::move(*connection));
  }
  return std::unique_ptr<SqliteRepository>(
      new SqliteRepository(std::make_unique<Impl>(std::move(options), std::move(connections))));
}

SqliteRepository::SqliteRepository(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

SqliteRepository::~SqliteRepository() = default;

Result<std::optional<std::string>> SqliteRepository::load(std::string_view key, Deadline deadline) {
  // The caller has given up already; do not spend a query on it.
  if (deadline.expired()) {
    return make_error(ErrorKind::kTimeout, "sqlite: deadline passed before the load started");
  }
  auto lease = impl_->pool.acquire(deadline);
  if (!lease) {
    return make_error(ErrorKind::kTimeout,
                      fmt::format("sqlite: no free connection to '{}' before the deadline "
                                  "(all {} in use)",
                                  impl_->options.path, impl_->pool.size()));
  }

  if (auto waited = impl_->simulate_latency(deadline); !waited)
    return std::unexpected(waited.error());

  sqlite3* db = lease->db.get();
  sqlite3_stmt* select = lease->select.get();
  if (int rc = bind_key(select, 1, key); rc != SQLITE_OK) return backend(db, rc, "load failed");
  impl_->queries.fetch_add(1, std::memory_order_relaxed);
  const int rc = sqlite3_step(select);
  if (rc == SQLITE_DONE) return std::optional<std::string>();
  if (rc != SQLITE_ROW) return backend(db, rc, "load failed");
  // column_blob before column_bytes, as SQLite asks. NULL (and an empty blob)
  // come back as a null pointer: both read as an empty value.
  const void* bytes = sqlite3_column_blob(select, 0);
  const int size = sqlite3_column_bytes(select, 0);
  std::string value;
  if (bytes != nullptr)
    value.assign(static_cast<const char*>(bytes), static_cast<std::size_t>(size));
  return std::optional<std::string>(std::move(value));  // copied out before the lease resets
}

std::vector<Result<std::optional<std::string>>> SqliteRepository::load_many(
    std::span<const std::string> keys, Deadline deadline) {
  using One = Result<std::optional<std::string>>;
  std::vector<One> results(keys.size(), One(std::optional<std::string>()));
  auto fail_all = [&](std::size_t from, const Error& error) {
    for (std::size_t i = from; i < keys.size(); ++i) results[i] = std::unexpected(error);
  };
  if (keys.empty()) return results;
  if (deadline.expired()) {
    fail_all(0, {ErrorKind::kTimeout, "sqlite: deadline passed before the batch load started"});
    return results;
  }
  auto lease = impl_->pool.acquire(deadline);
  if (!lease) {
    fail_all(0, {ErrorKind::kTimeout,
                 fmt::format("sqlite: no free connection to '{}' before the deadline (all {} in "
                             "use)",
                             impl_->options.path, impl_->pool.size())});
    return results;
  }
  if (auto waited = impl_->simulate_latency(deadline); !waited) {
    fail_all(0, waited.error());
    return results;
  }
  sqlite3* db = lease->db.get();
  const SqliteRepositoryOptions& o = impl_->options;
  // SQLite caps host parameters per statement (999 before 3.32): chunks of
  // kChunk keys, one statement each.
  constexpr std::size_t kChunk = 500;
  for (std::size_t from = 0; from < keys.size(); from += kChunk) {
    const std::size_t n = std::min(kChunk, keys.size() - from);
    // Rows are matched to keys by SQL's own `=` (the column's affinity and
    // collation, as load() does), not by comparing bytes here: each key is
    // a row (position, key) of a CTE joined to the table, so a row equal to
    // two keys (a NOCASE column) answers both.
    std::string sql = "WITH hg_keys(i, k) AS (VALUES (1, ?1)";
    for (std::size_t i = 2; i <= n; ++i) sql += fmt::format(", ({}, ?{})", i, i);
    sql += fmt::format(
        R"() SELECT hg_keys.i, t."{}" FROM hg_keys JOIN "{}" AS t ON t."{}" = hg_keys.k)",
        o.value_column, o.table, o.key_column);
    auto stmt = prepare(db, sql, "batch load failed");
    if (!stmt) {
      fail_all(from, stmt.error());
      return results;
    }
    for (std::size_t i = 0; i < n; ++i) {
      const std::string& key = keys[from + i];
      if (int rc = bind_key(stmt->get(), static_cast<int>(i + 1), key); rc != SQLITE_OK) {
        fail_all(from, backend(db, rc, "batch load failed").error());
        return results;
      }
    }
    impl_->queries.fetch_add(1, std::memory_order_relaxed);
    int rc;
    while ((rc = sqlite3_step(stmt->get())) == SQLITE_ROW) {
      const sqlite3_int64 position = sqlite3_column_int64(stmt->get(), 0);
      if (position < 1 || static_cast<std::size_t>(position) > n) continue;
      const void* bytes = sqlite3_column_blob(stmt->get(), 1);
      const int size = sqlite3_column_bytes(stmt->get(), 1);
      std::string value;
      if (bytes != nullptr)
        value.assign(static_cast<const char*>(bytes), static_cast<std::size_t>(size));
      results[from + static_cast<std::size_t>(position) - 1] =
          std::optional<std::string>(std::move(value));
    }
    if (rc != SQLITE_DONE) {
      fail_all(from, backend(db, rc, "batch load failed").error());
      return results;
    }
  }
  return results;
}

Result<void> SqliteRepository::upsert(std::string_view key, std::string_view value) {
  auto lease = impl_->pool.acquire(Deadline::after(impl_->options.busy_timeout));
  if (!lease) {
    return make_error(ErrorKind::kTimeout,
                      fmt::format("sqlite: no free connection to '{}' within busy_timeout ({} ms)",
                                  impl_->options.path, to_ms(impl_->options.busy_timeout)));
  }
  sqlite3* db = lease->db.get();
  if (!lease->upsert) {
    auto stmt = prepare(db, impl_->upsert_sql,
                        fmt::format("cannot write table '{}'", impl_->options.table));
    if (!stmt) return std::unexpected(stmt.error());
    lease->upsert = std::move(*stmt);
  }
  sqlite3_stmt* upsert = lease->upsert.get();
  int rc = bind_key(upsert, 1, key);
  if (rc == SQLITE_OK) {
    rc = sqlite3_bind_blob64(upsert, 2, data_or_empty(value), value.size(), SQLITE_STATIC);
  }
  if (rc != SQLITE_OK) return backend(db, rc, "upsert failed");
  rc = sqlite3_step(upsert);
  if (rc != SQLITE_DONE) return backend(db, rc, "upsert failed");
  return ok();
}

std::uint64_t SqliteRepository::queries() const noexcept {
  return impl_->queries.load(std::memory_order_relaxed);
}

}  // namespace herdguard
