#include "database.h"

#include <fmt/format.h>

#include "herdguard/sqlite_repository.h"

namespace herdguard::cli {

bool is_postgres(const std::string& db) {
  return db.starts_with("postgresql://") || db.starts_with("postgres://");
}

Result<std::shared_ptr<Repository>> open_database(const std::string& db, int latency_ms,
                                                  int connections) {
  if (is_postgres(db)) {
    return make_error(ErrorKind::kInvalidArgument, "PostgreSQL is not supported by this build yet");
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
    return make_error(ErrorKind::kInvalidArgument, "PostgreSQL is not supported by this build yet");
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
