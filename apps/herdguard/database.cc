#include "database.h"

#include <fmt/format.h>
#include <sqlite3.h>

#include <algorithm>
#include <memory>
#include <pqxx/pqxx>
#include <thread>

#include "herdguard/postgres_repository.h"
#include "herdguard/sqlite_repository.h"

namespace herdguard::cli {

bool is_postgres(const std::string& db) {
  return db.starts_with("postgresql://") || db.starts_with("postgres://");
}

Result<std::shared_ptr<Repository>> open_database(const std::string& db, int latency_ms,
                                                  int connections) {
  if (is_postgres(db)) {
    auto pg = PostgresRepository::open({.urls = {db},
                                        .table = "products",
                                        .key_column = "key",
                                        .value_column = "value",
                                        .pool_size = static_cast<std::size_t>(connections)});
    if (!pg) return std::unexpected(pg.error());
    std::shared_ptr<PostgresRepository> shared = std::move(*pg);
    if (latency_ms == 0) return std::shared_ptr<Repository>(shared);
    // The extra latency is spent before the query, within the load's deadline.
    // A batch is one query: it waits once.
    const auto latency = std::chrono::milliseconds(latency_ms);
    auto wait = [latency](Deadline deadline) -> Result<void> {
      if (latency >= deadline.remaining()) {
        std::this_thread::sleep_until(deadline.when());
        return make_error(ErrorKind::kTimeout, "database latency exceeded the deadline");
      }
      std::this_thread::sleep_for(latency);
      return ok();
    };
    return std::shared_ptr<Repository>(std::make_shared<CallbackRepository>(
        [shared, wait](std::string_view key,
                       Deadline deadline) -> Result<std::optional<std::string>> {
          if (auto waited = wait(deadline); !waited) return std::unexpected(waited.error());
          return shared->load(key, deadline);
        },
        [shared, wait](std::span<const std::string> keys, Deadline deadline) {
          if (auto waited = wait(deadline); !waited) {
            return std::vector<Result<std::optional<std::string>>>(keys.size(),
                                                                   std::unexpected(waited.error()));
          }
          return shared->load_many(keys, deadline);
        }));
  }
  auto sqlite =
      SqliteRepository::open({.path = db,
                              .table = "products",
                              .pool_size = static_cast<std::size_t>(connections),
                              .busy_timeout = std::chrono::milliseconds(5000),
                              .simulated_latency = std::chrono::milliseconds(latency_ms)});
  if (!sqlite) return std::unexpected(sqlite.error());
  return std::shared_ptr<Repository>(std::move(*sqlite));
}

namespace {

// Runs `sql` on `conn`. Errors: kBackend with SQLite's message.
Result<void> sqlite_exec(sqlite3* conn, const std::string& sql, const std::string& db) {
  char* message = nullptr;
  if (sqlite3_exec(conn, sql.c_str(), nullptr, nullptr, &message) == SQLITE_OK) return ok();
  std::string why = message ? message : sqlite3_errmsg(conn);
  sqlite3_free(message);
  return make_error(ErrorKind::kBackend, fmt::format("seeding {}: {}", db, why));
}

// SQLite: one transaction, one INSERT … SELECT over a recursive CTE per
// chunk of rows (one upsert per row and transaction took minutes for
// millions of keys: each commit syncs the file). Raw sqlite3, because the
// repository's API reads and writes one key at a time.
Result<void> seed_sqlite(const std::string& db, int keys, const std::string& hot_key,
                         const std::function<void(int, int)>& progress) {
  // The repository creates the table as it reads it.
  auto table = SqliteRepository::open({.path = db, .table = "products", .pool_size = 1});
  if (!table) return std::unexpected(table.error());
  table->reset();
  sqlite3* conn = nullptr;
  if (sqlite3_open_v2(db.c_str(), &conn, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) {
    std::string why = conn ? sqlite3_errmsg(conn) : "out of memory";
    sqlite3_close(conn);
    return make_error(ErrorKind::kBackend, fmt::format("seeding {}: {}", db, why));
  }
  const std::unique_ptr<sqlite3, int (*)(sqlite3*)> owned(conn, sqlite3_close);
  sqlite3_busy_timeout(conn, 5000);
  if (auto r = sqlite_exec(conn, "BEGIN IMMEDIATE", db); !r) return r;
  for (int from = 0; from < keys; from += kSeedChunk) {
    const int to = std::min(keys, from + kSeedChunk);
    auto r = sqlite_exec(
        conn,
        fmt::format("WITH RECURSIVE n(i) AS (SELECT {} UNION ALL SELECT i + 1 FROM n WHERE i + 1 < "
                    "{}) INSERT INTO products (key, value) SELECT 'key:' || i, "
                    "'value-of-key:' || i FROM n WHERE true "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    from, to),
        db);
    if (!r) {
      (void)sqlite_exec(conn, "ROLLBACK", db);
      return r;
    }
    if (progress) progress(to, keys);
  }
  sqlite3_stmt* hot = nullptr;
  const char* upsert =
      "INSERT INTO products (key, value) VALUES (?1, ?2) "
      "ON CONFLICT (key) DO UPDATE SET value = excluded.value";
  const std::string hot_value = "value-of-" + hot_key;
  const bool hot_ok =
      sqlite3_prepare_v2(conn, upsert, -1, &hot, nullptr) == SQLITE_OK &&
      sqlite3_bind_text(hot, 1, hot_key.data(), static_cast<int>(hot_key.size()),
                        SQLITE_TRANSIENT) == SQLITE_OK &&
      sqlite3_bind_text(hot, 2, hot_value.data(), static_cast<int>(hot_value.size()),
                        SQLITE_TRANSIENT) == SQLITE_OK &&
      sqlite3_step(hot) == SQLITE_DONE;
  sqlite3_finalize(hot);
  if (!hot_ok) {
    std::string why = sqlite3_errmsg(conn);
    (void)sqlite_exec(conn, "ROLLBACK", db);
    return make_error(ErrorKind::kBackend, fmt::format("seeding {}: {}", db, why));
  }
  return sqlite_exec(conn, "COMMIT", db);
}

}  // namespace

Result<void> seed_database(const std::string& db, int keys, const std::string& hot_key,
                           const std::function<void(int done, int total)>& progress) {
  if (is_postgres(db)) {
    auto redacted = redact_postgres_url(db);
    if (!redacted) return std::unexpected(redacted.error());
    try {
      pqxx::connection c(db);
      pqxx::work tx(c);
      tx.exec0("CREATE TABLE IF NOT EXISTS products (key text PRIMARY KEY, value text NOT NULL)");
      tx.exec0(
          fmt::format("INSERT INTO products SELECT 'key:' || i, 'value-of-key:' || i "
                      "FROM generate_series(0, {}) AS i "
                      "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                      keys - 1));
      tx.exec_params0(
          "INSERT INTO products VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = "
          "EXCLUDED.value",
          hot_key, "value-of-" + hot_key);
      tx.commit();
    } catch (const std::exception& e) {
      std::string message = e.what();
      while (!message.empty() && message.back() == '\n') message.pop_back();
      return make_error(ErrorKind::kBackend, fmt::format("seeding {}: {}", *redacted, message));
    }
    return ok();
  }
  return seed_sqlite(db, keys, hot_key, progress);
}

}  // namespace herdguard::cli
