// Redis Cluster's key → slot function, against slots that a real
// cluster-enabled redis-server 7.0 reported (CLUSTER KEYSLOT).
#include "redis/cluster_slot.h"

#include <gtest/gtest.h>

#include <string>

#include "redis/key_layout.h"

namespace herdguard::internal {
namespace {

TEST(ClusterSlot, MatchesRedisForPlainKeys) {
  EXPECT_EQ(cluster_slot("foo"), 12182);
  EXPECT_EQ(cluster_slot("bar"), 5061);
  EXPECT_EQ(cluster_slot("hello"), 866);
  EXPECT_EQ(cluster_slot("123456789"), 12739);  // CRC16/XMODEM's check value 0x31C3
  EXPECT_EQ(cluster_slot("somekey"), 11058);
  EXPECT_EQ(cluster_slot(""), 0);
}

TEST(ClusterSlot, HashesOnlyTheFirstNonEmptyHashTag) {
  EXPECT_EQ(cluster_slot("{user1000}.following"), 3443);
  EXPECT_EQ(cluster_slot("{user1000}.followers"), 3443);
  EXPECT_EQ(cluster_hash_tag("{user1000}.following"), "user1000");
  // "{}" is no hash tag: the whole key is hashed.
  EXPECT_EQ(cluster_slot("a{}b"), 13694);
  EXPECT_EQ(cluster_slot("{}"), 15257);
  EXPECT_EQ(cluster_hash_tag("a{}b"), "a{}b");
  // The first '{' and the next '}': "{{x}}" hashes "{x".
  EXPECT_EQ(cluster_slot("{{x}}"), 11068);
  EXPECT_EQ(cluster_hash_tag("{{x}}"), "{x");
  EXPECT_EQ(cluster_slot("x{"), 3596);
  EXPECT_EQ(cluster_slot("}{a}"), 15495);
}

TEST(ClusterSlot, EveryRedisKeyOfOneCacheKeySharesASlot) {
  // Binary bytes, braces inside the key: the hash tag is the same prefix of
  // the key for each purpose, so one script can touch them all.
  for (std::string key : {std::string("k"), std::string("a{b}c"), std::string("x}y"),
                          std::string("\0\xff{", 3), std::string("{}")}) {
    const auto slot = cluster_slot(value_key("app:", key));
    EXPECT_EQ(cluster_slot(lock_key("app:", key)), slot) << key;
    EXPECT_EQ(cluster_slot(version_key("app:", key)), slot) << key;
    EXPECT_EQ(cluster_slot(waiters_key("app:", key)), slot) << key;
    EXPECT_EQ(cluster_slot(tombstone_key("app:", key)), slot) << key;
  }
  // Except a key that starts with '}': "{}" is no hash tag (the Protector
  // refuses such keys on a cluster).
  EXPECT_NE(cluster_slot(value_key("pfx", "}k")), cluster_slot(lock_key("pfx", "}k")));
  EXPECT_EQ(cluster_slot("pfx{}k}:v"), 8765);
  EXPECT_EQ(cluster_slot("pfx{}k}:l"), 4422);
}

}  // namespace
}  // namespace herdguard::internal
