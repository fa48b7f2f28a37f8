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
// Values are returned byte for byte as the text of the first column (a text
// column holds any UTF-8, including quotes, backslashes and newlines).
//
// URLs: postgresql://user[:password]@host[:port]/db (also postgres://), a
// unix-socket directory as a percent-encoded host
// (postgresql://user@%2Fvar%2Frun%2Fpostgresql/db) or ?host=/dir, and any
// libpq parameter (?sslmode=...). They are parsed by libpq itself
// (postgres_conninfo() below).
//
// Errors never arrive as exceptions: everything libpqxx throws is caught and
// returned as a Result error naming the server (password redacted) and the
// cause.
//
// Thread safety: every method is safe from any number of threads.
//
// Example:
//   auto db = herdguard::PostgresRepository::open(
//       {.urls = {"postgresql://app@db-primary/shop", "postgresql://app@db-replica/shop"},
//        .table = "products", .key_column = "sku", .value_column = "json"});
//   if (!db) die(db.error().to_string());
//   auto protector = herdguard::Protector::create({}, std::move(*db));
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "herdguard/circuit_breaker.h"
#include "herdguard/concurrency_limiter.h"
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
  // How long establishing one connection may take (libpq connect_timeout,
  // rounded up to whole seconds; libpq waits at least 2 s). REQUIRES: > 0.
  Duration connect_timeout = std::chrono::seconds(2);
  // Each server's own breaker (primary and replicas alike): a server whose
  // loads fail is skipped while its breaker is open, and serves again once a
  // half-open probe succeeds. REQUIRES: valid (CircuitBreakerOptions::validate).
  CircuitBreakerOptions replica_breaker{.consecutive_failures = 3,
                                        .open_timeout = std::chrono::seconds(2)};
  // Each server's own concurrency limit (concurrency_limiter.h). Off by
  // default: each server's pool already bounds it, and the Protector's
  // db_limit bounds the repository. With several servers of different
  // capacity, set it (e.g. kAdaptive) so each server's limit is learnt from
  // its own latency: a load goes to the next server in turn with a free
  // slot, and waits for the first admitting server's slot only when every
  // server is at its limit (kOverloaded with retry_after when it gets none).
  // REQUIRES: valid (ConcurrencyLimitOptions::validate).
  ConcurrencyLimitOptions server_limit{.mode = LimitMode::kOff};

  // Returns kInvalidArgument naming the first bad field.
  Result<void> validate() const;
};

// One server's counters, in `urls` order (a snapshot: each field is read
// atomically, the fields together are not).
struct PostgresServerStats {
  std::string url_redacted;     // postgresql://user@host:port/db, no password
  std::uint64_t loads = 0;      // loads sent to this server
  std::uint64_t failures = 0;   // of which failed (error other than not-found)
  std::uint64_t connects = 0;   // connections opened so far (restarts reconnect)
  std::size_t connections = 0;  // connections open now (<= pool_size)
  BreakerState breaker = BreakerState::kClosed;
  ConcurrencyLimiterStats limit{};  // the server's limiter (limit 0: off)
};

class PostgresRepository final : public Repository {
 public:
  // Checks the options and the URLs, then connects once to the primary
  // (urls[0]) and prepares the statement there, so a wrong URL, password,
  // database or table is reported now; that connection joins the primary's
  // pool. Replicas are connected lazily (they may be down at start). Later
  // outages and restarts of any server are survived (see load()).
  // Errors: kInvalidArgument naming the bad option or URL; kBackend naming
  // the primary (password redacted) and libpq's message when it cannot be
  // reached or the statement does not prepare.
  // Thread safety: a plain factory.
  static Result<std::unique_ptr<PostgresRepository>> open(PostgresRepositoryOptions options);
  ~PostgresRepository() override;

  // Returns the text of the first column of the first row, std::nullopt when
  // there is no row (or the value is NULL).
  // Errors: kTimeout (deadline passed waiting for a pooled connection, or the
  // statement timeout — the deadline's remaining time — fired); kBackend
  // naming the server (password redacted) and the cause, when the last server
  // tried failed (a server that refuses or drops the connection is failed
  // over to the next one within the same load); kCircuitOpen when every
  // server's breaker is open.
  // Thread safety: safe from any number of threads; at most pool_size
  // connections per server are open at once.
  Result<std::optional<std::string>> load(std::string_view key, Deadline deadline) override;
  // The keys in one statement (`SELECT key, value ... WHERE key IN ($1, …)`,
  // per 1,000 keys), on one server chosen as for load(), with the same
  // timeouts, retry and failover; an error is every key's. With a custom
  // `query` there is no batch form: the keys load one by one.
  std::vector<Result<std::optional<std::string>>> load_many(std::span<const std::string> keys,
                                                            Deadline deadline) override;
  // Without a custom `query`.
  bool loads_in_batches() const noexcept override;

  // Statements run by load() so far, over all servers. Never fails; any thread.
  std::uint64_t queries() const noexcept;
  // Per-server counters, in `urls` order. Never fails; any thread.
  std::vector<PostgresServerStats> servers() const;

 private:
  struct Server;
  struct Impl;
  explicit PostgresRepository(std::unique_ptr<Impl> impl);
  // What a load runs in its transaction (one key's statement, or a batch's):
  // the values of its keys, in order (postgres_repository.cc).
  struct Operation;
  using Rows = std::vector<std::optional<std::string>>;
  // Runs `op` on a server chosen round-robin, failing over (see load()).
  Result<Rows> run_somewhere(const Operation& op, Deadline deadline);
  // One run at `server`, holding `slot` of its limiter, behind its breaker.
  // Sets *try_next when another server should be tried (breaker open, or a
  // refused or dropped connection with time left).
  Result<Rows> run_at(Server& server, ConcurrencyLimiter::Permit slot, const Operation& op,
                      Deadline deadline, bool* try_next);
  std::unique_ptr<Impl> impl_;
};

// Parses postgresql://user[:password]@host[:port]/db (also postgres://);
// the host may be a percent-encoded unix-socket directory
// (postgresql://user@%2Ftmp%2Fpg/db) or given as ?host=/dir. Returns the
// libpq keyword/value conninfo string (keyword='value' pairs, quoted).
// Errors: kInvalidArgument naming the problem (not a postgres URL, a bad
// port, anything libpq cannot parse). Thread safety: a pure function.
Result<std::string> postgres_conninfo(std::string_view url);

// The URL as postgresql://user@host[:port]/db, without the password, for
// messages. Errors: as postgres_conninfo(). Thread safety: a pure function.
Result<std::string> redact_postgres_url(std::string_view url);

}  // namespace herdguard
