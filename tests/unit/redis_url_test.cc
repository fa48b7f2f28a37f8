// Redis URL parsing: every accepted form, and a clear error for each mistake.
#include <gtest/gtest.h>

#include "herdguard/redis_client.h"

namespace herdguard {
namespace {

using Transport = RedisUrl::Transport;

RedisUrl parse_ok(std::string_view url) {
  auto r = RedisUrl::parse(url);
  EXPECT_TRUE(r) << url << ": " << r.error().to_string();
  return r ? *r : RedisUrl{};
}

void expect_error(std::string_view url, std::string_view words) {
  auto r = RedisUrl::parse(url);
  ASSERT_FALSE(r) << url << " parsed";
  EXPECT_EQ(r.error().kind, ErrorKind::kInvalidArgument);
  EXPECT_NE(r.error().message.find(words), std::string::npos) << url << " → " << r.error().message;
}

TEST(RedisUrl, TcpForms) {
  RedisUrl u = parse_ok("redis://cache.internal");
  EXPECT_EQ(u.transport, Transport::kTcp);
  EXPECT_EQ(u.host, "cache.internal");
  EXPECT_EQ(u.port, 6379);
  EXPECT_EQ(u.db, 0);
  EXPECT_TRUE(u.user.empty());
  EXPECT_TRUE(u.password.empty());

  u = parse_ok("redis://127.0.0.1:6390/3");
  EXPECT_EQ(u.host, "127.0.0.1");
  EXPECT_EQ(u.port, 6390);
  EXPECT_EQ(u.db, 3);

  u = parse_ok("redis://app:s3cret@10.0.0.5:7000/1");
  EXPECT_EQ(u.user, "app");
  EXPECT_EQ(u.password, "s3cret");
  EXPECT_EQ(u.host, "10.0.0.5");
  EXPECT_EQ(u.port, 7000);
  EXPECT_EQ(u.db, 1);

  u = parse_ok("redis://:only-password@host");
  EXPECT_TRUE(u.user.empty());
  EXPECT_EQ(u.password, "only-password");

  u = parse_ok("redis://only-user@host/");
  EXPECT_EQ(u.user, "only-user");
  EXPECT_TRUE(u.password.empty());
  EXPECT_EQ(u.db, 0);

  u = parse_ok("redis://[::1]:6380/2");
  EXPECT_EQ(u.host, "::1");
  EXPECT_EQ(u.port, 6380);
  EXPECT_EQ(u.db, 2);
}

TEST(RedisUrl, PercentEncodedCredentials) {
  RedisUrl u = parse_ok("redis://us%40er:p%3Ass%2Fw%25rd@host:1");
  EXPECT_EQ(u.user, "us@er");
  EXPECT_EQ(u.password, "p:ss/w%rd");
}

TEST(RedisUrl, UnixForms) {
  RedisUrl u = parse_ok("unix:///run/redis/redis.sock");
  EXPECT_EQ(u.transport, Transport::kUnix);
  EXPECT_EQ(u.socket_path, "/run/redis/redis.sock");
  EXPECT_EQ(u.db, 0);

  u = parse_ok("unix:///tmp/r.sock?db=5&user=app&password=pa%26ss");
  EXPECT_EQ(u.socket_path, "/tmp/r.sock");
  EXPECT_EQ(u.db, 5);
  EXPECT_EQ(u.user, "app");
  EXPECT_EQ(u.password, "pa&ss");
}

TEST(RedisUrl, MistakesAreNamed) {
  expect_error("", "no scheme");
  expect_error("127.0.0.1:6379", "no scheme");
  expect_error("http://host", "unknown scheme 'http'");
  expect_error("rediss://host", "unknown scheme 'rediss'");
  expect_error("redis://", "host is empty");
  expect_error("redis://:6379", "host is empty");
  expect_error("redis://host:", "port is empty");
  expect_error("redis://host:notaport", "port 'notaport'");
  expect_error("redis://host:0", "port '0'");
  expect_error("redis://host:65536", "port '65536'");
  expect_error("redis://host:6379/x", "db 'x'");
  expect_error("redis://host:6379/-1", "db '-1'");
  expect_error("redis://host:6379/1/2", "db '1/2'");
  expect_error("redis://host?db=1", "query parameters");
  expect_error("redis://[::1:6379", "closing ']'");
  expect_error("redis://us%zzer@host", "bad %-escape in the user");
  expect_error("redis://user:pass%4@host", "truncated %-escape in the password");
  expect_error("unix://", "socket path is empty");
  expect_error("unix://relative/r.sock", "not absolute");
  expect_error("unix:///tmp/r.sock?db=abc", "db 'abc'");
  expect_error("unix:///tmp/r.sock?timeout=5", "unknown query parameter 'timeout'");
  expect_error("unix:///tmp/r.sock?db", "has no value");
}

TEST(RedisUrl, ErrorsNeverRepeatThePassword) {
  auto r = RedisUrl::parse("redis://app:hunter2@host:notaport");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message.find("hunter2"), std::string::npos) << r.error().message;
}

TEST(RedisUrl, RedactedHidesThePassword) {
  EXPECT_EQ(parse_ok("redis://app:hunter2@host:7000/1").redacted(), "redis://app:***@host:7000/1");
  EXPECT_EQ(parse_ok("redis://host").redacted(), "redis://host:6379/0");
  EXPECT_EQ(parse_ok("redis://[::1]:1").redacted(), "redis://[::1]:1/0");
  EXPECT_EQ(parse_ok("unix:///r.sock?password=hunter2&db=2").redacted(),
            "unix:///r.sock?db=2&password=***");
}

TEST(RedisUrl, ClusterFormsListTheSeedNodes) {
  RedisUrl u = parse_ok("redis-cluster://10.0.0.1:7000,10.0.0.2,[::1]:7002");
  EXPECT_EQ(u.transport, Transport::kCluster);
  ASSERT_EQ(u.seeds.size(), 3u);
  EXPECT_EQ(u.seeds[0].host, "10.0.0.1");
  EXPECT_EQ(u.seeds[0].port, 7000);
  EXPECT_EQ(u.seeds[1].host, "10.0.0.2");
  EXPECT_EQ(u.seeds[1].port, 6379);
  EXPECT_EQ(u.seeds[2].host, "::1");
  EXPECT_EQ(u.seeds[2].port, 7002);
  EXPECT_EQ(u.host, "10.0.0.1");  // the first seed, for components that need one node
  EXPECT_EQ(u.port, 7000);
  EXPECT_EQ(u.db, 0);

  u = parse_ok("redis-cluster://app:p%40ss@host:7000/0");
  EXPECT_EQ(u.user, "app");
  EXPECT_EQ(u.password, "p@ss");
  ASSERT_EQ(u.seeds.size(), 1u);
  EXPECT_EQ(u.redacted(), "redis-cluster://app:***@host:7000");
  EXPECT_EQ(parse_ok("redis-cluster://a:1,[::1]:2").redacted(), "redis-cluster://a:1,[::1]:2");
}

TEST(RedisUrl, ClusterMistakesAreNamed) {
  expect_error("redis-cluster://", "no seed node");
  expect_error("redis-cluster://host:7000/1", "only database 0");
  expect_error("redis-cluster://host:7000,", "host is empty");
  expect_error("redis-cluster://host:7000,,b:1", "host is empty");
  expect_error("redis-cluster://host:0", "port");
  expect_error("redis-cluster://host:7000?db=1", "query parameters");
  expect_error("redis-clusters://host", "unknown scheme");
  std::string many = "redis-cluster://h:1";
  for (int i = 0; i < 64; ++i) many += ",h:1";
  expect_error(many, "more than 64");
}

TEST(RedisUrl, SentinelFormsNameTheSentinelsAndThePrimary) {
  RedisUrl u = parse_ok("redis-sentinel://10.0.0.1,10.0.0.2:26380/mymaster");
  EXPECT_EQ(u.transport, Transport::kSentinel);
  ASSERT_EQ(u.seeds.size(), 2u);
  EXPECT_EQ(u.seeds[0].port, 26379);  // Sentinel's port unless given
  EXPECT_EQ(u.seeds[1].port, 26380);
  EXPECT_EQ(u.master_name, "mymaster");
  EXPECT_EQ(u.db, 0);
  u = parse_ok("redis-sentinel://:s3cret@h:1/shop%2Dprimary/3");
  EXPECT_EQ(u.password, "s3cret");
  EXPECT_EQ(u.master_name, "shop-primary");
  EXPECT_EQ(u.db, 3);
  EXPECT_EQ(u.redacted(), "redis-sentinel://:***@h:1/shop-primary/3");
}

TEST(RedisUrl, SentinelMistakesAreNamed) {
  expect_error("redis-sentinel://h:1", "no primary name");
  expect_error("redis-sentinel://h:1/", "no primary name");
  expect_error("redis-sentinel:///mymaster", "no Sentinel");
  expect_error("redis-sentinel://h:1/m/x", "db");
  expect_error("redis-sentinel://h:1,/m", "host is empty");
  expect_error("redis-sentinel://h:1/m?db=2", "query parameters");
}

TEST(RedisOptions, ValidateNamesTheBadField) {
  EXPECT_TRUE(RedisOptions{}.validate());
  auto check = [](RedisOptions o, std::string_view words) {
    auto r = o.validate();
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().kind, ErrorKind::kInvalidArgument);
    EXPECT_NE(r.error().message.find(words), std::string::npos) << r.error().message;
  };
  check({.url = "redis://host:bad"}, "port");
  check({.connect_timeout = Duration::zero()}, "connect_timeout");
  check({.command_timeout = -std::chrono::milliseconds(1)}, "command_timeout");
  check({.pool_size = 0}, "pool_size");
  check({.reconnect_backoff_min = std::chrono::seconds(3),
         .reconnect_backoff_max = std::chrono::seconds(1)},
        "backoff");
  EXPECT_FALSE(RedisClient::create({.url = "nope"}));
}

}  // namespace
}  // namespace herdguard
