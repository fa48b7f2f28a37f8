// herdguard/postgres_repository.h — PostgreSQL as the repository, over
// libpqxx: a primary and read replicas, a bounded pool per server, one
// prepared statement, and the load's deadline as the statement timeout.
//
// Each load:
//   * picks a server round-robin among those whose breaker admits a call (a
//     server that fails — refused connections, a restart, timeouts — is
//     skipped while its own breaker is open, and comes back after a
//     successful half-open probe);
//   * borrows one of that server's `pool_size` connections (waiting no
//     longer than the deadline);
//   * runs `SET LOCAL statement_timeout = <remaining ms>` and the prepared
//     statement in one transaction, so a slow query becomes a kTimeout error
//     instead of a stuck thread;
//   * on a broken connection (the server restarted), drops it and retries
//     once on a fresh one.
// Values are read as text: for a bytea column give a `query` that encodes it
// (e.g. `SELECT encode(v, 'base64') FROM t WHERE k = $1`).
//
// URLs: postgresql://user[:password]@host[:port]/db (also postgres://), a
// unix-socket directory as a percent-encoded host
// (postgresql://user@%2Fvar%2Frun%2Fpostgresql/db) or ?host=/dir, and any
// libpq parameter (?sslmode=...). They are parsed by libpq itself.
//
// Thread safety: load() is safe from any number of threads.
//
// Example:
//   auto db = herdguard::PostgresRepository::open(
//       {.urls = {"postgresql://app@db-primary/shop", "postgresql://app@db-replica/shop"},
//        .table = "products", .key_column = "sku", .value_column = "json"});
//   if (!db) die(db.error().to_string());
//   auto protector = herdguard::Protector::create({}, std::move(*db));
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "herdguard/circuit_breaker.h"
#include "herdguard/repository.h"

namespace herdguard {

struct PostgresRepositoryOptions {
  // urls[0] is the primary, the others read replicas; all serve loads.
  // REQUIRES: non-empty, each parses.
  std::vector<std::string> urls{};
  // SELECT value_column FROM table WHERE key_column = $1. REQUIRES: letters,
  // digits and underscores, not starting with a digit (identifiers cannot be
  // bound as parameters, so they are validated instead).
  std::string table = "kv";
  std::string key_column = "key";
  std::string value_column = "value";
  // When set, used instead: SQL taking the key as $1 and returning the value
  // in its first column (no row: not found).
  std::string query{};
  // Connections per server. REQUIRES: 1..256.
  std::size_t pool_size = 4;
  // libpq connect_timeout, whole seconds. REQUIRES: >= 1.
  int connect_timeout_s = 2;
  // Each server's breaker.
  CircuitBreakerOptions server_breaker{.consecutive_failures = 3,
                                       .open_timeout = std::chrono::seconds(2)};

  // Returns kInvalidArgument naming the first bad field.
  Result<void> validate() const;
};

struct PostgresServerStats {
  std::string url;  // password redacted
  std::uint64_t loads = 0;
  std::uint64_t failures = 0;
  std::uint64_t connects = 0;
  BreakerState breaker = BreakerState::kClosed;
};

class PostgresRepository final : public Repository {
 public:
  // Checks the options and the URLs; connects to nothing yet (servers may be
  // down at start). Errors: kInvalidArgument naming the bad option or URL.
  static Result<std::unique_ptr<PostgresRepository>> open(PostgresRepositoryOptions options);
  ~PostgresRepository() override;

  // Errors: kTimeout (deadline passed waiting for a connection, or the
  // statement timeout fired); kBackend naming the server (password
  // redacted) and the cause; kCircuitOpen when every server's breaker is
  // open.
  Result<std::optional<std::string>> load(std::string_view key, Deadline deadline) override;

  // Loads run so far (attempted statements, over all servers).
  std::uint64_t queries() const noexcept;
  std::vector<PostgresServerStats> servers() const;

 private:
  struct Server;
  struct Impl;
  explicit PostgresRepository(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The URL with its password replaced by ***, or an error naming what libpq
// could not parse (kInvalidArgument).
Result<std::string> redact_postgres_url(std::string_view url);

}  // namespace herdguard
