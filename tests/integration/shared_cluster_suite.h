// A GoogleTest suite whose tests share one Redis Cluster (redis_cluster.h,
// 3 primaries, no replicas), started before the suite's first test and
// stopped after its last: for tests that leave the cluster's layout alone.
//
// Example:
//   class MySuite : public herdguard::testing::SharedClusterSuite {};
//   TEST_F(MySuite, Something) { auto url = cluster_->url(); ... }
#pragma once

#include <gtest/gtest.h>

#include "redis_cluster.h"

namespace herdguard::testing {

class SharedClusterSuite : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { cluster_ = RedisCluster::start().release(); }
  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
  }
  // One suite runs at a time: each sets it up and tears it down in turn.
  static inline RedisCluster* cluster_ = nullptr;
};

}  // namespace herdguard::testing
