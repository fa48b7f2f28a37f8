// PostgresRepository against real PostgreSQL clusters started by the tests.
#include "herdguard/postgres_repository.h"

#include <gtest/gtest.h>

#include <atomic>
#include <pqxx/pqxx>
#include <thread>
#include <vector>

#include "herdguard/protector.h"
#include "postgres_server.h"
#include "test_support.h"

namespace herdguard {
namespace {

using namespace std::chrono_literals;
using testing::PostgresServer;

std::unique_ptr<PostgresServer> seeded_server() {
  auto pg = PostgresServer::start();
  pg->exec("CREATE TABLE products (sku text PRIMARY KEY, doc text)");
  pg->exec(
      "INSERT INTO products SELECT 'sku-' || i, '{\"id\":' || i || ',\"name\":\"Ünïcode ✓\"}' "
      "FROM generate_series(1, 100) AS i");
  return pg;
}

std::unique_ptr<PostgresRepository> open_repo(PostgresRepositoryOptions options) {
  options.table = "products";
  options.key_column = "sku";
  options.value_column = "doc";
  auto repo = PostgresRepository::open(std::move(options));
  EXPECT_TRUE(repo) << repo.error().to_string();
  if (!repo) throw std::runtime_error(repo.error().to_string());
  return std::move(*repo);
}

TEST(PostgresRepository, LoadsAValueAndReportsNotFound) {
  auto pg = seeded_server();
  auto repo = open_repo({.urls = {pg->url()}});
  auto v = repo->load("sku-7", Deadline::after(10s));
  ASSERT_TRUE(v) << v.error().to_string();
  ASSERT_TRUE(*v);
  EXPECT_EQ(**v, "{\"id\":7,\"name\":\"Ünïcode ✓\"}");
  auto missing = repo->load("sku-0", Deadline::after(10s));
  ASSERT_TRUE(missing) << missing.error().to_string();
  EXPECT_FALSE(*missing);
  EXPECT_EQ(repo->queries(), 2u);
  EXPECT_EQ(repo->servers()[0].url_redacted,
            "postgresql://postgres@127.0.0.1:" + std::to_string(pg->port()) + "/herdguard");
}

TEST(PostgresRepository, AwkwardValuesRoundTripByteForByte) {
  auto pg = seeded_server();
  const std::vector<std::pair<std::string, std::string>> rows = {
      {"quotes", "it's \"quoted\" \\ back\\slash; DROP TABLE products; --"},
      {"whitespace", "line 1\nline 2\r\n\ttabbed  "},
      {"utf8 ключ ✓", "日本語 · emoji 🐄🐂 · combining é"},
      {"empty", ""},
      {"big", std::string(200000, 'x') + "end"},
      {"control", std::string("\x01\x02\x1f\x7f bytes", 10)},
  };
  {
    pqxx::connection c(pg->url());
    pqxx::work tx(c);
    for (const auto& [k, v] : rows) tx.exec_params0("INSERT INTO products VALUES ($1, $2)", k, v);
    tx.commit();
  }
  auto repo = open_repo({.urls = {pg->url()}});
  for (const auto& [k, v] : rows) {
    auto r = repo->load(k, Deadline::after(10s));
    ASSERT_TRUE(r) << k << ": " << r.error().to_string();
    ASSERT_TRUE(*r) << k;
    EXPECT_EQ(**r, v) << k;
  }
}

// get_many's batch: 100 keys, one statement; values in order, absent keys
// nullopt, awkward keys matched exactly.
TEST(PostgresRepository, LoadManyIsOneStatementForAHundredKeys) {
  auto pg = seeded_server();
  pg->exec("INSERT INTO products VALUES ('it''s \"odd\", (really)', 'odd')");
  auto repo = open_repo({.urls = {pg->url()}});
  std::vector<std::string> keys;
  for (int i = 1; i <= 98; ++i) keys.push_back("sku-" + std::to_string(i));
  keys.push_back("sku-0");                   // absent
  keys.push_back("it's \"odd\", (really)");  // quotes, a comma, parentheses
  const auto got = repo->load_many(keys, Deadline::after(10s));
  EXPECT_EQ(repo->queries(), 1u) << "one statement";
  ASSERT_EQ(got.size(), keys.size());
  for (int i = 1; i <= 98; ++i) {
    ASSERT_TRUE(got[i - 1]) << got[i - 1].error().to_string();
    ASSERT_TRUE(*got[i - 1]);
    EXPECT_EQ(**got[i - 1], "{\"id\":" + std::to_string(i) + ",\"name\":\"Ünïcode ✓\"}");
  }
  ASSERT_TRUE(got[98]);
  EXPECT_FALSE(*got[98]);
  ASSERT_TRUE(got[99] && *got[99]);
  EXPECT_EQ(**got[99], "odd");
}

// Rows match keys by SQL's `=`, as load() does: a char(n) key column
// (its text comes back space-padded) still answers every key.
TEST(PostgresRepository, LoadManyMatchesKeysAsLoadDoesInAPaddedColumn) {
  auto pg = PostgresServer::start();
  pg->exec("CREATE TABLE products (sku char(10) PRIMARY KEY, doc text)");
  pg->exec("INSERT INTO products VALUES ('a', 'one'), ('bb', 'two')");
  auto repo = open_repo({.urls = {pg->url()}});
  ASSERT_EQ(repo->load("a", Deadline::after(10s)).value(), std::optional<std::string>("one"));
  const std::vector<std::string> keys = {"bb", "a", "c", "a"};
  const auto got = repo->load_many(keys, Deadline::after(10s));
  ASSERT_EQ(got.size(), 4u);
  EXPECT_EQ(got[0].value(), std::optional<std::string>("two"));
  EXPECT_EQ(got[1].value(), std::optional<std::string>("one"));
  EXPECT_EQ(got[2].value(), std::nullopt);
  EXPECT_EQ(got[3].value(), std::optional<std::string>("one"));
}

// Through the Protector: a cold get_many of 100 keys is one statement.
TEST(PostgresRepository, ProtectorGetManyOfAHundredColdKeysIsOneStatement) {
  auto pg = seeded_server();
  std::shared_ptr<PostgresRepository> repo = open_repo({.urls = {pg->url()}});
  auto protector = Protector::create({}, repo);
  ASSERT_TRUE(protector) << protector.error().to_string();
  std::vector<std::string> keys;
  for (int i = 1; i <= 100; ++i) keys.push_back("sku-" + std::to_string(i));
  const auto got = (*protector)->get_many(keys, Deadline::after(10s));
  for (const auto& r : got) ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_EQ(repo->queries(), 1u);
  EXPECT_EQ((*protector)->metrics().db_batches, 1u);
}

TEST(PostgresRepository, UnixSocketUrlsAndCustomQuery) {
  auto pg = seeded_server();
  for (const std::string& url :
       {pg->socket_url(), "postgresql://postgres@/herdguard?host=" + pg->socket_dir() +
                              "&port=" + std::to_string(pg->port())}) {
    auto repo =
        open_repo({.urls = {url}, .query = "SELECT upper(doc) FROM products WHERE sku = $1"});
    auto v = repo->load("sku-1", Deadline::after(10s));
    ASSERT_TRUE(v) << url << ": " << v.error().to_string();
    ASSERT_TRUE(*v);
    EXPECT_NE((*v)->find("\"ID\":1"), std::string::npos) << **v;
  }
}

TEST(PostgresRepository, TheDeadlineIsTheStatementTimeout) {
  auto pg = seeded_server();
  auto repo = open_repo(
      {.urls = {pg->url()},
       .query = "SELECT CASE WHEN $1 = 'slow' THEN pg_sleep(5)::text || $1 ELSE 'fast:' || $1 END",
       .pool_size = 1,
       .replica_breaker = {.consecutive_failures = 100}});
  auto slow = repo->load("slow", Deadline::after(200ms));
  ASSERT_FALSE(slow);
  EXPECT_EQ(slow.error().kind, ErrorKind::kTimeout) << slow.error().to_string();
  EXPECT_NE(slow.error().message.find("statement timeout"), std::string::npos)
      << slow.error().message;
  // The one pooled connection is still usable: the next load runs on it.
  auto fast = repo->load("k", Deadline::after(10s));
  ASSERT_TRUE(fast) << fast.error().to_string();
  ASSERT_TRUE(*fast);
  EXPECT_EQ(**fast, "fast:k");
  EXPECT_EQ(repo->servers()[0].connects, 1u);
}

TEST(PostgresRepository, ReconnectsAfterAServerRestart) {
  auto pg = seeded_server();
  auto repo = open_repo({.urls = {pg->url()}});
  ASSERT_TRUE(repo->load("sku-1", Deadline::after(10s)));
  pg->stop();
  auto down = repo->load("sku-1", Deadline::after(5s));
  ASSERT_FALSE(down);
  EXPECT_EQ(down.error().kind, ErrorKind::kBackend) << down.error().to_string();
  pg->start_again();
  // The pooled connection is broken by the restart: the load drops it and
  // retries on a fresh one, so the first load after the restart succeeds.
  for (int i = 0; i < 10; ++i) {
    auto r = repo->load("sku-" + std::to_string(i + 2), Deadline::after(10s));
    ASSERT_TRUE(r) << i << ": " << r.error().to_string();
    ASSERT_TRUE(*r);
  }
  EXPECT_GE(repo->servers()[0].connects, 2u);
}

TEST(PostgresRepository, LoadsSpreadOverReplicasAndSurviveOneDying) {
  constexpr std::uint32_t kThreshold = 2;
  auto primary = seeded_server();
  auto replica = seeded_server();
  auto repo =
      open_repo({.urls = {primary->url(), replica->url()},
                 .replica_breaker = {.consecutive_failures = kThreshold, .open_timeout = 200ms}});
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(repo->load("sku-" + std::to_string(i + 1), Deadline::after(10s)));
  }
  EXPECT_GT(repo->servers()[0].loads, 0u);
  EXPECT_GT(repo->servers()[1].loads, 0u);

  replica->stop();
  // At most kThreshold loads may fail (in fact none do: a load that finds the
  // replica dead fails over to the primary), and then the replica's breaker
  // skips it.
  std::uint32_t failed = 0;
  for (int i = 0; i < 40; ++i) {
    auto r = repo->load("sku-" + std::to_string(i % 100 + 1), Deadline::after(10s));
    if (!r) ++failed;
    if (i >= 20) {
      ASSERT_TRUE(r) << r.error().to_string();
    }
  }
  EXPECT_LE(failed, kThreshold);
  EXPECT_GT(repo->servers()[1].failures, 0u);
  EXPECT_NE(repo->servers()[1].breaker, BreakerState::kClosed);

  replica->start_again();
  const auto replica_loads = repo->servers()[1].loads;
  const Deadline give_up = Deadline::after(30s);
  while (repo->servers()[1].breaker != BreakerState::kClosed && !give_up.expired()) {
    ASSERT_TRUE(repo->load("sku-3", Deadline::after(10s)));
  }
  EXPECT_EQ(repo->servers()[1].breaker, BreakerState::kClosed) << "the replica did not come back";
  EXPECT_GT(repo->servers()[1].loads, replica_loads);
  const auto before = repo->servers();
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(repo->load("sku-4", Deadline::after(10s)));
  EXPECT_GT(repo->servers()[1].loads, before[1].loads) << "the replica serves again";
  EXPECT_EQ(repo->servers()[1].failures, before[1].failures);
}

// Per-server limits: a load goes to the next server with a free slot; when
// every server is at its limit it waits (here: not at all) and is shed. Two
// URLs of one cluster stand for a primary and a replica. Loads of "held"
// block on an advisory lock the test holds, so the servers stay full.
TEST(PostgresRepository, ServerLimitsRouteToAFreeServerAndShedWhenAllAreFull) {
  auto pg = seeded_server();
  pqxx::connection gate(pg->url());
  pqxx::nontransaction(gate).exec("SELECT pg_advisory_lock(42)");
  auto repo = open_repo(
      {.urls = {pg->url(), pg->socket_url()},
       .query = "SELECT CASE WHEN $1 = 'held' THEN (SELECT 'held' FROM "
                "pg_advisory_xact_lock_shared(42)) ELSE 'fast:' || $1 END",
       .server_limit = {.mode = LimitMode::kFixed, .limit = 1, .max_wait = Duration::zero()}});
  std::vector<std::thread> held;
  std::atomic<int> held_ok{0};
  for (int i = 0; i < 2; ++i) {
    held.emplace_back([&] {
      auto r = repo->load("held", Deadline::after(60s));
      if (r && *r && **r == "held") held_ok.fetch_add(1);
    });
  }
  // Both servers hold one load each (the second went to the free server).
  const auto in_flight = [&](std::size_t i) { return repo->servers()[i].limit.in_flight; };
  testing::wait_until([&] { return in_flight(0) == 1 && in_flight(1) == 1; });

  auto shed = repo->load("k", Deadline::after(10s));
  ASSERT_FALSE(shed);
  EXPECT_EQ(shed.error().kind, ErrorKind::kOverloaded) << shed.error().to_string();
  EXPECT_GT(shed.error().retry_after, Duration::zero());

  pqxx::nontransaction(gate).exec("SELECT pg_advisory_unlock(42)");
  for (auto& t : held) t.join();
  EXPECT_EQ(held_ok.load(), 2);
  const auto servers = repo->servers();
  EXPECT_EQ(servers[0].loads, 1u);
  EXPECT_EQ(servers[1].loads, 1u);
  EXPECT_EQ(servers[0].limit.limit, 1u);
  EXPECT_EQ(servers[0].limit.shed + servers[1].limit.shed, 1u);
  auto fast = repo->load("k", Deadline::after(10s));  // slots free again
  ASSERT_TRUE(fast) << fast.error().to_string();
  EXPECT_EQ(**fast, "fast:k");
}

TEST(PostgresRepository, ManyThreadsShareABoundedPool) {
  auto pg = seeded_server();
  auto repo = open_repo({.urls = {pg->url()}, .pool_size = 2});
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        auto r = repo->load("sku-" + std::to_string((t * 200 + i) % 100 + 1), Deadline::after(30s));
        if (!r || !*r) failures.fetch_add(1);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_LE(repo->servers()[0].connects, 2u);
  EXPECT_LE(repo->servers()[0].connections, 2u);
  EXPECT_EQ(repo->queries(), 1600u);
}

TEST(PostgresRepository, BadUrlsAndOptionsAreNamed) {
  auto check = [](PostgresRepositoryOptions o, std::string_view words) {
    auto r = PostgresRepository::open(std::move(o));
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().kind, ErrorKind::kInvalidArgument) << r.error().to_string();
    EXPECT_NE(r.error().message.find(words), std::string::npos) << r.error().message;
  };
  check({}, "at least one server");
  check({.urls = {"mysql://host/db"}}, "postgresql://");
  check({.urls = {"postgresql://host:notaport/db"}}, "port");
  check({.urls = {"postgresql://host:99999/db"}}, "port '99999'");
  check({.urls = {"postgresql://host/db"}, .table = "products; DROP TABLE x"}, "table");
  check({.urls = {"postgresql://host/db"}, .query = "SELECT 1"}, "$1");
  check({.urls = {"postgresql://host/db"}, .pool_size = 0}, "pool_size");
  check({.urls = {"postgresql://host/db"}, .pool_size = 257}, "pool_size");
  check({.urls = {"postgresql://host/db"}, .connect_timeout = 0s}, "connect_timeout");
  check({.urls = {"postgresql://host/db"}, .server_limit = {.limit = 0}}, "server_limit");
  check({.urls = {"postgresql://host/db"}, .replica_breaker = {.consecutive_failures = 0}},
        "replica_breaker");
}

TEST(PostgresRepository, ConninfoFromUrls) {
  auto tcp = postgres_conninfo("postgresql://app:s3cret@db.example:6543/shop?sslmode=disable");
  ASSERT_TRUE(tcp) << tcp.error().to_string();
  for (std::string_view part : {"host='db.example'", "port='6543'", "user='app'",
                                "password='s3cret'", "dbname='shop'", "sslmode='disable'"}) {
    EXPECT_NE(tcp->find(part), std::string::npos) << *tcp << " lacks " << part;
  }
  auto encoded = postgres_conninfo("postgres://app@%2Ftmp%2Fpg/shop");
  ASSERT_TRUE(encoded) << encoded.error().to_string();
  EXPECT_NE(encoded->find("host='/tmp/pg'"), std::string::npos) << *encoded;
  auto query_host = postgres_conninfo("postgresql://app@/shop?host=/var/run/postgresql");
  ASSERT_TRUE(query_host) << query_host.error().to_string();
  EXPECT_NE(query_host->find("host='/var/run/postgresql'"), std::string::npos) << *query_host;
  auto quoted = postgres_conninfo("postgresql://app:it%27s@h/db");
  ASSERT_TRUE(quoted) << quoted.error().to_string();
  EXPECT_NE(quoted->find("password='it\\'s'"), std::string::npos) << *quoted;

  auto redacted = redact_postgres_url("postgresql://app:s3cret@db.example:6543/shop");
  ASSERT_TRUE(redacted);
  EXPECT_EQ(*redacted, "postgresql://app@db.example:6543/shop");

  for (std::string_view bad :
       {"", "host=db", "http://db/x", "postgresql://h:0/db", "postgresql://h/db?nosuchparam=1"}) {
    auto r = postgres_conninfo(bad);
    ASSERT_FALSE(r) << bad;
    EXPECT_EQ(r.error().kind, ErrorKind::kInvalidArgument);
    EXPECT_NE(r.error().message.find("postgres url"), std::string::npos) << r.error().message;
  }
}

TEST(PostgresRepository, ANoServerAtOpenIsABackendErrorWithoutThePassword) {
  auto repo =
      PostgresRepository::open({.urls = {"postgresql://app:hunter2@127.0.0.1:1/db"}, .table = "t"});
  ASSERT_FALSE(repo);
  EXPECT_EQ(repo.error().kind, ErrorKind::kBackend);
  EXPECT_NE(repo.error().message.find("postgresql://app@127.0.0.1:1/db"), std::string::npos)
      << repo.error().message;
  EXPECT_EQ(repo.error().message.find("hunter2"), std::string::npos) << repo.error().message;
}

TEST(PostgresRepository, AMissingTableAtOpenIsABackendError) {
  auto pg = seeded_server();
  auto repo = PostgresRepository::open({.urls = {pg->url()}, .table = "no_such_table"});
  ASSERT_FALSE(repo);
  EXPECT_EQ(repo.error().kind, ErrorKind::kBackend);
  EXPECT_NE(repo.error().message.find("no_such_table"), std::string::npos) << repo.error().message;
}

TEST(PostgresRepository, AReplicaDownAtOpenIsSkipped) {
  auto pg = seeded_server();
  auto repo = open_repo({.urls = {pg->url(), "postgresql://postgres:pw@127.0.0.1:1/herdguard"},
                         .replica_breaker = {.consecutive_failures = 1}});
  for (int i = 0; i < 10; ++i) {
    auto r = repo->load("sku-5", Deadline::after(10s));
    ASSERT_TRUE(r) << r.error().to_string();
  }
  EXPECT_GT(repo->servers()[1].failures, 0u);
  EXPECT_EQ(repo->servers()[1].url_redacted.find("pw"), std::string::npos);
}

}  // namespace
}  // namespace herdguard
