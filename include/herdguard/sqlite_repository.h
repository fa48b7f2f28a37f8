// herdguard/sqlite_repository.h — the embedded default database.
//
// Reads values from one table of a SQLite file: `SELECT value_column FROM
// table WHERE key_column = ?`. The statement is prepared once per pooled
// connection; a bounded pool of connections serves concurrent loads (first
// come, first served), and a load waits for a free connection no longer than
// its deadline. The file is switched to WAL journal mode so that readers and
// a writer do not block each other. Keys that are valid UTF-8 without NUL
// bytes are bound as TEXT (so rows written by other tools are found); any
// other key is bound as a BLOB, so every key round-trips byte for byte.
//
// Thread safety: all methods are safe from any number of threads.
//
// Example:
//   auto repo = herdguard::SqliteRepository::open({.path = "/var/lib/app/products.db",
//                                                  .table = "products",
//                                                  .key_column = "sku",
//                                                  .value_column = "json"});
//   if (!repo) die(repo.error().to_string());   // e.g. "backend: cannot open ..."
//   auto v = (*repo)->load("sku-1", herdguard::Deadline::after(std::chrono::seconds(1)));
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "herdguard/repository.h"

namespace herdguard {

struct SqliteRepositoryOptions {
  // Path of the database file. REQUIRES: non-empty and not ":memory:" (each
  // pooled connection would get its own empty database).
  std::string path{};
  // Table and column names. REQUIRES: non-empty identifiers of letters,
  // digits and underscores, not starting with a digit (they cannot be bound
  // as SQL parameters, so they are validated instead).
  std::string table = "kv";
  std::string key_column = "key";
  std::string value_column = "value";
  // Creates the file and the table (key TEXT PRIMARY KEY, value BLOB) when
  // they are missing. When false, a missing file or table is an error at
  // open() and nothing is created.
  bool create_if_missing = true;
  // Number of pooled connections, i.e. concurrent queries. REQUIRES: 1..256.
  std::size_t pool_size = 4;
  // How long SQLite retries a locked database before failing a statement.
  std::chrono::milliseconds busy_timeout{1000};
  // For demos and tests: each load holds its connection this long before it
  // queries, standing in for a loaded database. Zero (the default) disables it.
  // REQUIRES: >= 0.
  std::chrono::milliseconds simulated_latency{0};

  // Returns kInvalidArgument naming the first bad field.
  Result<void> validate() const;
};

class SqliteRepository final : public Repository {
 public:
  // Opens `pool_size` connections and prepares the statements.
  // Errors: kInvalidArgument (bad options); kBackend naming the file and
  // SQLite's message when the file cannot be opened or the table is missing.
  static Result<std::unique_ptr<SqliteRepository>> open(SqliteRepositoryOptions options);
  ~SqliteRepository() override;

  // Errors: kTimeout when no connection frees up (or the simulated latency
  // does not end) before `deadline`; kBackend on a SQLite error.
  Result<std::optional<std::string>> load(std::string_view key, Deadline deadline) override;
  // One SELECT ... WHERE key IN (...) per 500 keys, on one connection.
  std::vector<Result<std::optional<std::string>>> load_many(std::span<const std::string> keys,
                                                            Deadline deadline) override;
  bool loads_in_batches() const noexcept override { return true; }

  // Inserts or replaces a row (seeding, tests). Blocks for a free connection
  // for at most `busy_timeout`. Errors: kTimeout, kBackend.
  Result<void> upsert(std::string_view key, std::string_view value);

  // Number of SELECTs run by load() so far.
  std::uint64_t queries() const noexcept;

 private:
  struct Impl;
  explicit SqliteRepository(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace herdguard
