// PostgresRepository against real PostgreSQL clusters started by the tests.
#include "herdguard/postgres_repository.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "postgres_server.h"

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
  options.table = options.query.empty() ? "products" : options.table;
  options.key_column = "sku";
  options.value_column = "doc";
  auto repo = PostgresRepository::open(std::move(options));
  EXPECT_TRUE(repo) << repo.error().to_string();
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
  ASSERT_TRUE(missing);
  EXPECT_FALSE(*missing);
  EXPECT_EQ(repo->queries(), 2u);
}

TEST(PostgresRepository, UnixSocketUrlAndCustomQuery) {
  auto pg = seeded_server();
  auto repo = open_repo(
      {.urls = {pg->socket_url()}, .query = "SELECT upper(doc) FROM products WHERE sku = $1"});
  auto v = repo->load("sku-1", Deadline::after(10s));
  ASSERT_TRUE(v) << v.error().to_string();
  ASSERT_TRUE(*v);
  EXPECT_NE((*v)->find("\"ID\":1"), std::string::npos) << **v;
}

TEST(PostgresRepository, TheDeadlineIsTheStatementTimeout) {
  auto pg = seeded_server();
  auto repo = open_repo({.urls = {pg->url()},
                         .query = "SELECT pg_sleep(5)::text || $1",
                         .pool_size = 1,
                         .server_breaker = {.consecutive_failures = 100}});
  auto slow = repo->load("k", Deadline::after(200ms));
  ASSERT_FALSE(slow);
  EXPECT_EQ(slow.error().kind, ErrorKind::kTimeout) << slow.error().to_string();
  EXPECT_NE(slow.error().message.find("statement timeout"), std::string::npos)
      << slow.error().message;
  // The one pooled connection is still usable: the next load runs on it.
  auto fast = open_repo({.urls = {pg->url()}, .pool_size = 1});
  EXPECT_TRUE(fast->load("sku-1", Deadline::after(10s)));
  EXPECT_EQ(repo->servers()[0].connects, 1u);
}

TEST(PostgresRepository, ReconnectsAfterAServerRestart) {
  auto pg = seeded_server();
  auto repo = open_repo({.urls = {pg->url()}, .server_breaker = {.open_timeout = 50ms}});
  ASSERT_TRUE(repo->load("sku-1", Deadline::after(10s)));
  pg->stop();
  EXPECT_FALSE(repo->load("sku-1", Deadline::after(2s)));
  pg->start_again();
  const Deadline give_up = Deadline::after(30s);
  Result<std::optional<std::string>> r = make_error(ErrorKind::kInternal, "not tried");
  while (!(r = repo->load("sku-2", Deadline::after(5s))) && !give_up.expired())
    std::this_thread::yield();
  ASSERT_TRUE(r) << r.error().to_string();
  ASSERT_TRUE(*r);
  EXPECT_GE(repo->servers()[0].connects, 2u);
}

TEST(PostgresRepository, LoadsSpreadOverReplicasAndSurviveOneDying) {
  auto primary = seeded_server();
  auto replica = seeded_server();
  auto repo = open_repo({.urls = {primary->url(), replica->url()},
                         .server_breaker = {.consecutive_failures = 2, .open_timeout = 200ms}});
  for (int i = 0; i < 20; ++i)
    ASSERT_TRUE(repo->load("sku-" + std::to_string(i + 1), Deadline::after(10s)));
  EXPECT_GT(repo->servers()[0].loads, 0u);
  EXPECT_GT(repo->servers()[1].loads, 0u);

  replica->stop();
  // Every load still succeeds: a failure on the dead replica fails over to
  // the primary within the same load, and the replica's breaker then skips it.
  for (int i = 0; i < 40; ++i) {
    auto r = repo->load("sku-" + std::to_string(i % 100 + 1), Deadline::after(10s));
    ASSERT_TRUE(r) << r.error().to_string();
  }
  EXPECT_NE(repo->servers()[1].breaker, BreakerState::kClosed);

  replica->start_again();
  const auto replica_loads = repo->servers()[1].loads;
  const Deadline give_up = Deadline::after(30s);
  while (repo->servers()[1].breaker != BreakerState::kClosed && !give_up.expired()) {
    ASSERT_TRUE(repo->load("sku-3", Deadline::after(10s)));
  }
  EXPECT_EQ(repo->servers()[1].breaker, BreakerState::kClosed) << "the replica did not come back";
  EXPECT_GT(repo->servers()[1].loads, replica_loads);
}

TEST(PostgresRepository, ManyThreadsShareABoundedPool) {
  auto pg = seeded_server();
  auto repo = open_repo({.urls = {pg->url()}, .pool_size = 2});
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 100; ++i) {
        auto r = repo->load("sku-" + std::to_string((t * 100 + i) % 100 + 1), Deadline::after(30s));
        if (!r || !*r) failures.fetch_add(1);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_LE(repo->servers()[0].connects, 2u);
  EXPECT_EQ(repo->queries(), 800u);
}

TEST(PostgresRepository, BadUrlsAndOptionsAreNamed) {
  auto check = [](PostgresRepositoryOptions o, std::string_view words) {
    auto r = PostgresRepository::open(std::move(o));
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().kind, ErrorKind::kInvalidArgument);
    EXPECT_NE(r.error().message.find(words), std::string::npos) << r.error().message;
  };
  check({}, "at least one server");
  check({.urls = {"mysql://host/db"}}, "postgres url");
  check({.urls = {"postgresql://host:notaport/db"}}, "postgres url");
  check({.urls = {"postgresql://host/db"}, .table = "products; DROP TABLE x"}, "table");
  check({.urls = {"postgresql://host/db"}, .query = "SELECT 1"}, "$1");
  check({.urls = {"postgresql://host/db"}, .pool_size = 0}, "pool_size");
}

TEST(PostgresRepository, AServerThatIsNotThereIsABackendErrorWithoutThePassword) {
  auto repo =
      PostgresRepository::open({.urls = {"postgresql://app:hunter2@127.0.0.1:1/db"}, .table = "t"});
  ASSERT_TRUE(repo) << repo.error().to_string();
  auto r = (*repo)->load("k", Deadline::after(5s));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, ErrorKind::kBackend);
  EXPECT_NE(r.error().message.find("127.0.0.1:1"), std::string::npos) << r.error().message;
  EXPECT_EQ(r.error().message.find("hunter2"), std::string::npos) << r.error().message;
}

}  // namespace
}  // namespace herdguard
