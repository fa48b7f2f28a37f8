// RateLimiter against a real redis-server: one fleet-wide limit for limiters
// in several "processes" (each its own client), the per-process fallback
// while Redis is down, and keys others wrote.
#include <gtest/gtest.h>

#include <string>

#include "herdguard/rate_limiter.h"
#include "redis_server.h"
#include "test_support.h"

namespace herdguard {
namespace {

using namespace std::chrono_literals;
using testing::RedisServer;

std::unique_ptr<RateLimiter> limiter_on(const RedisServer& server, RateLimitOptions options) {
  auto client = RedisClient::create({.url = server.url(), .reconnect_backoff_min = 10ms});
  EXPECT_TRUE(client);
  auto limiter = RateLimiter::create(std::move(options), std::move(*client));
  EXPECT_TRUE(limiter) << limiter.error().to_string();
  return std::move(*limiter);
}

// A slow rate (one request per 100 s) with a burst of 10: the count is
// exact whatever the machine's speed.
RateLimitOptions ten_then_nothing() { return {.rate = 0.01, .burst = 10, .prefix = "t:rl:"}; }

TEST(RateLimiterRedis, TwoProcessesShareOneLimitPerClient) {
  auto server = RedisServer::start();
  auto a = limiter_on(*server, ten_then_nothing());
  auto b = limiter_on(*server, ten_then_nothing());
  int admitted = 0;
  for (int i = 0; i < 30; ++i) {
    RateLimiter& limiter = i % 2 == 0 ? *a : *b;
    auto verdict = limiter.admit("tenant-1", Deadline::after(5s));
    ASSERT_TRUE(verdict) << verdict.error().to_string();
    EXPECT_FALSE(verdict->local);
    if (verdict->allowed) {
      ++admitted;
    } else {
      EXPECT_GT(verdict->retry_after, 90s);  // the next is due in ~100 s
      EXPECT_LE(verdict->retry_after, 100s);
    }
  }
  EXPECT_EQ(admitted, 10) << "fleet-wide, not 10 per process";
  EXPECT_EQ(a->stats().local_decisions + b->stats().local_decisions, 0u);
  // Each client has its own allowance.
  EXPECT_TRUE(a->admit("tenant-2", Deadline::after(5s))->allowed);
}

TEST(RateLimiterRedis, WithRedisDownEachProcessDecidesAndNoRequestFails) {
  auto server = RedisServer::start();
  auto a = limiter_on(*server, ten_then_nothing());
  auto b = limiter_on(*server, ten_then_nothing());
  server->stop();
  int admitted = 0;
  for (int i = 0; i < 30; ++i) {
    RateLimiter& limiter = i % 2 == 0 ? *a : *b;
    auto verdict = limiter.admit("tenant-1", Deadline::after(5s));
    ASSERT_TRUE(verdict) << verdict.error().to_string();
    EXPECT_TRUE(verdict->local);
    admitted += verdict->allowed ? 1 : 0;
  }
  EXPECT_EQ(admitted, 20) << "the limit holds per process meanwhile";
  EXPECT_GT(a->stats().redis_errors, 0u);
  // Redis back: fleet-wide again (a fresh server: a fresh allowance).
  server->start_again();
  ASSERT_TRUE(
      testing::eventually([&] { return !a->admit("tenant-3", Deadline::after(5s))->local; }));
}

TEST(RateLimiterRedis, KeysOthersWroteNeitherFailNorLockAClientOut) {
  auto server = RedisServer::start();
  auto limiter = limiter_on(*server, {.rate = 0.01, .burst = 1, .prefix = "t:rl:"});
  auto admin = RedisClient::create({.url = server->url()});
  ASSERT_TRUE(admin);
  // Another type, not a number, a TAT far in the future, infinity.
  ASSERT_TRUE((*admin)->command({"LPUSH", "t:rl:{list}", "x"}));
  ASSERT_TRUE((*admin)->command({"SET", "t:rl:{text}", "abc"}));
  ASSERT_TRUE((*admin)->command({"SET", "t:rl:{future}", "99999999999999999999"}));
  ASSERT_TRUE((*admin)->command({"SET", "t:rl:{inf}", "1e400"}));
  for (const char* client : {"list", "text", "future", "inf"}) {
    auto first = limiter->admit(client, Deadline::after(5s));
    ASSERT_TRUE(first) << client << ": " << first.error().to_string();
    EXPECT_FALSE(first->local) << client << ": decided by Redis, not the fallback";
    EXPECT_TRUE(first->allowed) << client;
    auto second = limiter->admit(client, Deadline::after(5s));
    ASSERT_TRUE(second);
    EXPECT_FALSE(second->allowed) << client << ": the state was repaired, the limit holds";
  }
}

}  // namespace
}  // namespace herdguard
