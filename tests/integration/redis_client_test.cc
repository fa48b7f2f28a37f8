// RedisClient against a real redis-server started by each test.
#include "herdguard/redis_client.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "redis_server.h"

namespace herdguard {
namespace {

using namespace std::chrono_literals;
using testing::RedisServer;

std::unique_ptr<RedisClient> client_for(const std::string& url, RedisOptions options = {}) {
  options.url = url;
  auto c = RedisClient::create(std::move(options));
  EXPECT_TRUE(c) << c.error().to_string();
  return std::move(*c);
}

// Waits until Redis reports `n` clients blocked (e.g. in BLPOP).
void testing_wait_for_blocked_clients(RedisClient& observer, int n) {
  const std::string wanted = "blocked_clients:" + std::to_string(n);
  const Deadline give_up = Deadline::after(10s);
  for (;;) {
    auto info = observer.command({"INFO", "clients"});
    ASSERT_TRUE(info) << info.error().to_string();
    if (info->str.find(wanted) != std::string::npos) return;
    ASSERT_FALSE(give_up.expired()) << info->str;
    std::this_thread::yield();
  }
}

TEST(RedisClient, BinarySafeValuesAndReplyTypes) {
  auto server = RedisServer::start();
  auto redis = client_for(server->url());
  const std::string key("k\0ey", 4);
  const std::string value("\0\xff\r\n$3\r\n", 9);
  auto set = redis->command({"SET", key, value});
  ASSERT_TRUE(set) << set.error().to_string();
  EXPECT_EQ(set->type, RedisReply::Type::kStatus);
  EXPECT_EQ(set->str, "OK");
  auto got = redis->command({"GET", key});
  ASSERT_TRUE(got);
  EXPECT_EQ(got->type, RedisReply::Type::kString);
  EXPECT_EQ(got->str, value);
  auto missing = redis->command({"GET", "absent"});
  ASSERT_TRUE(missing);
  EXPECT_TRUE(missing->is_nil());
  auto n = redis->command({"INCRBY", "counter", "5"});
  ASSERT_TRUE(n);
  EXPECT_EQ(n->type, RedisReply::Type::kInteger);
  EXPECT_EQ(n->integer, 5);
  ASSERT_TRUE(redis->command({"RPUSH", "list", "a", "b"}));
  auto list = redis->command({"LRANGE", "list", "0", "-1"});
  ASSERT_TRUE(list);
  ASSERT_EQ(list->type, RedisReply::Type::kArray);
  ASSERT_EQ(list->elements.size(), 2u);
  EXPECT_EQ(list->elements[1].str, "b");
}

TEST(RedisClient, ErrorReplyIsABackendErrorAndTheConnectionStaysUsable) {
  auto server = RedisServer::start();
  auto redis = client_for(server->url(), {.pool_size = 1});
  ASSERT_TRUE(redis->command({"SET", "text", "abc"}));
  auto r = redis->command({"INCR", "text"});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, ErrorKind::kBackend);
  EXPECT_NE(r.error().message.find("not an integer"), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("INCR"), std::string::npos);
  EXPECT_TRUE(redis->command({"PING"}));
  EXPECT_EQ(redis->stats().connects, 1u);
}

TEST(RedisClient, ScriptsRunByShaAndReloadAfterNoscript) {
  auto server = RedisServer::start();
  auto redis = client_for(server->url());
  static const RedisScript kIncrBy{"return redis.call('INCRBY', KEYS[1], ARGV[1])"};
  auto first = redis->eval(kIncrBy, {"n"}, {"2"});
  ASSERT_TRUE(first) << first.error().to_string();
  EXPECT_EQ(first->integer, 2);
  EXPECT_EQ(redis->stats().script_loads, 1u);
  ASSERT_TRUE(redis->eval(kIncrBy, {"n"}, {"3"}));
  EXPECT_EQ(redis->stats().script_loads, 1u);  // the SHA is remembered
  ASSERT_TRUE(redis->command({"SCRIPT", "FLUSH"}));
  auto after_flush = redis->eval(kIncrBy, {"n"}, {"4"});
  ASSERT_TRUE(after_flush) << after_flush.error().to_string();
  EXPECT_EQ(after_flush->integer, 9);
  EXPECT_EQ(redis->stats().script_loads, 2u);
}

TEST(RedisClient, RequirepassAcceptsTheRightPasswordAndNamesAWrongOne) {
  auto server = RedisServer::start({.requirepass = "right-horse"});
  const std::string socket = server->socket_path();
  auto good = client_for("unix://" + socket + "?password=right-horse");
  EXPECT_TRUE(good->command({"PING"}));
  auto bad = client_for("unix://" + socket + "?password=wrong-horse");
  auto r = bad->command({"PING"});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, ErrorKind::kBackend);
  EXPECT_NE(r.error().message.find("authentication failed"), std::string::npos)
      << r.error().message;
  EXPECT_EQ(r.error().message.find("wrong-horse"), std::string::npos) << "password leaked";
  auto none = client_for("unix://" + socket);
  auto unauthenticated = none->command({"GET", "k"});
  ASSERT_FALSE(unauthenticated);
  EXPECT_NE(unauthenticated.error().message.find("NOAUTH"), std::string::npos);
}

TEST(RedisClient, AclUserOverTcp) {
  auto server = RedisServer::start({.acl_user = "app", .acl_password = "app-pass", .tcp = true});
  auto redis =
      client_for("redis://app:app-pass@127.0.0.1:" + std::to_string(server->port()) + "/0");
  auto r = redis->command({"ACL", "WHOAMI"});
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_EQ(r->str, "app");
  auto wrong = client_for("redis://app:nope@127.0.0.1:" + std::to_string(server->port()));
  EXPECT_FALSE(wrong->command({"PING"}));
}

TEST(RedisClient, SelectsTheDatabaseOfTheUrl) {
  auto server = RedisServer::start();
  auto db3 = client_for("unix://" + server->socket_path() + "?db=3");
  auto db0 = client_for(server->url());
  ASSERT_TRUE(db3->command({"SET", "only-in-3", "x"}));
  auto in0 = db0->command({"GET", "only-in-3"});
  ASSERT_TRUE(in0);
  EXPECT_TRUE(in0->is_nil());
  auto in3 = db3->command({"GET", "only-in-3"});
  ASSERT_TRUE(in3);
  EXPECT_EQ(in3->str, "x");
}

TEST(RedisClient, DownAtStartFailsFastThenRecoversWithoutRecreating) {
  auto server = RedisServer::start();
  server->stop();
  auto redis =
      client_for(server->url(), {.reconnect_backoff_min = 20ms, .reconnect_backoff_max = 100ms});
  for (int i = 0; i < 200; ++i) {
    auto r = redis->command({"PING"});
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().kind, ErrorKind::kBackend);
  }
  // Backoff: most of the 200 commands failed without a connect attempt.
  EXPECT_LT(redis->stats().connect_failures, 50u);
  EXPECT_GE(redis->stats().connect_failures, 1u);

  server->start_again();
  const Deadline give_up = Deadline::after(10s);
  Result<RedisReply> r = make_error(ErrorKind::kInternal, "not tried");
  while (!(r = redis->command({"PING"})) && !give_up.expired()) std::this_thread::yield();
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_EQ(r->str, "PONG");
}

TEST(RedisClient, AHungRedisCostsOneTimeoutThenFailsFastUntilItAnswers) {
  auto server = RedisServer::start();
  auto redis = client_for(
      server->url(),
      {.command_timeout = 100ms, .reconnect_backoff_min = 2s, .reconnect_backoff_max = 2s});
  ASSERT_TRUE(redis->command({"PING"}));
  server->pause();
  auto first = redis->command({"PING"});
  ASSERT_FALSE(first);
  EXPECT_EQ(first.error().kind, ErrorKind::kTimeout);
  // Right after a timeout the client does not wait on Redis again.
  auto next = redis->command({"PING"});
  ASSERT_FALSE(next);
  EXPECT_EQ(next.error().kind, ErrorKind::kBackend);
  EXPECT_NE(next.error().message.find("timing out"), std::string::npos) << next.error().message;
  server->resume();
  const Deadline give_up = Deadline::after(10s);
  Result<RedisReply> r = make_error(ErrorKind::kInternal, "not tried");
  while (!(r = redis->command({"PING"})) && !give_up.expired()) std::this_thread::yield();
  ASSERT_TRUE(r) << r.error().to_string();
}

TEST(RedisClient, RestartMidUseDropsBrokenConnectionsAndReconnects) {
  auto server = RedisServer::start();
  auto redis = client_for(server->url(), {.reconnect_backoff_min = 10ms});
  ASSERT_TRUE(redis->command({"SET", "k", "v"}));
  server->stop();
  EXPECT_FALSE(redis->command({"GET", "k"}));
  server->start_again();
  const Deadline give_up = Deadline::after(10s);
  Result<RedisReply> r = make_error(ErrorKind::kInternal, "not tried");
  while (!(r = redis->command({"GET", "k"})) && !give_up.expired()) std::this_thread::yield();
  ASSERT_TRUE(r) << r.error().to_string();
  EXPECT_TRUE(r->is_nil());  // a fresh server: the data is gone, the client is fine
}

TEST(RedisClient, PoolIsBoundedAndAFullPoolTimesOut) {
  auto server = RedisServer::start();
  auto redis = client_for(server->url(),
                          {.command_timeout = 30s, .pool_wait_timeout = 50ms, .pool_size = 2});
  auto observer = client_for(server->url());
  // Two BLPOPs hold both pooled connections until we push.
  std::vector<std::thread> blocked;
  for (int i = 0; i < 2; ++i) {
    blocked.emplace_back([&] { EXPECT_TRUE(redis->command({"BLPOP", "queue", "0"})); });
  }
  testing_wait_for_blocked_clients(*observer, 2);
  auto r = redis->command({"PING"});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().kind, ErrorKind::kTimeout);
  EXPECT_EQ(redis->stats().pool_timeouts, 1u);
  EXPECT_EQ(redis->stats().connects, 2u);
  ASSERT_TRUE(observer->command({"RPUSH", "queue", "a", "b"}));
  for (auto& t : blocked) t.join();
  EXPECT_TRUE(redis->command({"PING"}));
  EXPECT_EQ(redis->stats().connects, 2u);
}

TEST(RedisClient, ManyThreadsShareTheBoundedPool) {
  auto server = RedisServer::start();
  auto redis = client_for(server->url(), {.command_timeout = 5s, .pool_size = 3});
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) {
        const std::string key = "k" + std::to_string(t);
        if (!redis->command({"INCR", key})) failures.fetch_add(1);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_LE(redis->stats().connects, 3u);
  for (int t = 0; t < 8; ++t) {
    auto v = redis->command({"GET", "k" + std::to_string(t)});
    ASSERT_TRUE(v);
    EXPECT_EQ(v->str, "200");
  }
}

}  // namespace
}  // namespace herdguard
