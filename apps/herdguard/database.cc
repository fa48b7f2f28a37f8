#include "database.h"

#include <fmt/format.h>

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

Result<void> seed_database(const std::string& db, int keys, const std::string& hot_key) {
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
  auto sqlite = SqliteRepository::open({.path = db, .table = "products", .pool_size = 1});
  if (!sqlite) return std::unexpected(sqlite.error());
  if (auto r = (*sqlite)->upsert(hot_key, "value-of-" + hot_key); !r) return r;
  for (int i = 0; i < keys; ++i) {
    const std::string key = fmt::format("key:{}", i);
    if (auto r = (*sqlite)->upsert(key, "value-of-" + key); !r) return r;
  }
  return ok();
}

}  // namespace herdguard::cli
