// A real Redis Cluster for one test: `primaries * (1 + replicas_per_primary)`
// redis-server nodes in a fresh temporary folder, each on free loopback TCP
// ports (client and cluster bus) on 127.0.0.1, joined by
// `redis-cli --cluster create` and awaited until every node sees the whole
// cluster healthy. The nodes are stopped and the folder removed when the
// object is destroyed — also when the test fails, and also when the test
// process dies (each node gets SIGKILL through PR_SET_PDEATHSIG), so no node
// outlives its test. Faults: a node killed, paused, a primary failed over, a
// slot migrated (whole, or stopped half way so a test sees ASK redirects).
//
// Not thread-safe: one test thread drives it. A node's cluster view converges
// by gossip; the accessors that ask the cluster (primary_ports(),
// port_for_slot()) report what one answering node sees, and the calls that
// change it (start(), wait_for_failover(), finish_migration()) return only once
// every answering node agrees.
//
// Example:
//   auto cluster = herdguard::testing::RedisCluster::start({.replicas_per_primary = 1});
//   auto client = herdguard::RedisClient::create({.url = cluster->url()});
//   cluster->migrate_slot(slot, other_primary);     // keys move, MOVED afterwards
//   const int owner = cluster->port_for_slot(slot);
//   cluster->kill(owner);
//   cluster->wait_for_failover(owner, std::chrono::seconds(15));
#pragma once

#include <sys/types.h>

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace herdguard::testing {

class RedisCluster {
 public:
  struct Options {
    // Primaries the 16384 slots are spread over. REQUIRES: >= 3 (what
    // `redis-cli --cluster create` accepts).
    int primaries = 3;
    // Replicas of each primary; with at least one, a killed primary is
    // failed over (wait_for_failover()).
    int replicas_per_primary = 0;
    // When not empty: every node's `requirepass` and `masterauth`.
    std::string requirepass{};
  };

  // Starts the nodes, creates the cluster and waits (at most 30 s, polling
  // every 50 ms) until every node reports cluster_state:ok with all 16384
  // slots assigned, knows every node, agrees with the others on which node is
  // a primary owning which slots and which a replica of which primary, and
  // every replica's link to its primary is up. Takes about 2 s (a primary
  // reports cluster_state:ok no sooner than 2 s after it started). Throws
  // std::runtime_error, with redis-cli's output and the nodes' logs, when a
  // node cannot be started or the cluster does not form in time; the nodes
  // already started are stopped then. Throws std::invalid_argument when
  // `options` breaks a REQUIRES.
  static std::unique_ptr<RedisCluster> start(Options options);
  static std::unique_ptr<RedisCluster> start() { return start(Options{}); }
  ~RedisCluster();
  RedisCluster(const RedisCluster&) = delete;
  RedisCluster& operator=(const RedisCluster&) = delete;

  // `redis-cluster://127.0.0.1:P1,127.0.0.1:P2,...`: the primaries at start
  // as seeds (with a password: `redis-cluster://:PASS@127.0.0.1:P1,...`, the
  // password percent-encoded). Unchanged by failovers and kills.
  std::string url() const;
  // Every node's client port, in start order; killed nodes included.
  std::vector<int> ports() const;
  int node_count() const { return static_cast<int>(nodes_.size()); }
  // The ports of the primaries the cluster has now (CLUSTER NODES of the
  // first answering node), ascending; a primary flagged `fail` or `fail?`
  // is left out. Throws std::runtime_error when no node answers.
  std::vector<int> primary_ports() const;
  // The port of the primary that owns `slot` now, as the first answering
  // node sees it. Throws std::runtime_error when no node answers or none
  // owns the slot. REQUIRES: 0 <= slot < 16384.
  int port_for_slot(int slot) const;
  // The node's process id; -1 once it was killed. REQUIRES: `port` is one of
  // ports() (else std::out_of_range).
  pid_t pid(int port) const;

  // SIGKILL (as abrupt as a crash), and waits for the node to exit. Its
  // cluster config stays on disk; it is not restarted. Idempotent.
  void kill(int port);
  // SIGSTOP, returning once the node has stopped, and SIGCONT: a node that
  // keeps its connections and stops answering clients and the cluster bus,
  // as a hung one does. Paused nodes are skipped by the calls that ask the
  // cluster.
  void pause(int port);
  void resume(int port);

  // Waits until a node other than `dead_port` owns every slot `dead_port`
  // owned, and every other answering node reports cluster_state:ok and agrees
  // with the others on the roles and slot owners (so primary_ports() and
  // port_for_slot() answer the same whichever node is asked). With
  // --cluster-node-timeout 1000 this takes about 2-3 s. Throws
  // std::runtime_error (with every node's view) after `within`.
  // REQUIRES: `dead_port` was killed or paused, and it had replicas.
  void wait_for_failover(int dead_port, std::chrono::milliseconds within);

  // Moves `slot`, with its keys, from its owner to the primary `to_port`:
  // begin_migration(), move_keys(), finish_migration(). Throws
  // std::runtime_error (with the node's error reply) on failure.
  // REQUIRES: `to_port` is a primary that does not own `slot`.
  void migrate_slot(int slot, int to_port);
  // The halves of migrate_slot(), so a test can act while the slot is half
  // migrated (the owner answers ASK for keys it no longer has):
  //   begin_migration: CLUSTER SETSLOT IMPORTING on `to_port`, then MIGRATING
  //     on the owner.
  //   move_keys: MIGRATEs every key of the slot to `to_port`, in batches,
  //     until the owner has none left. REQUIRES: begin_migration(slot).
  //   finish_migration: CLUSTER SETSLOT NODE on the target, the source and
  //     every other answering primary, then waits (at most 10 s) until every
  //     answering node sees the target as the owner. REQUIRES: move_keys(slot)
  //     (the source refuses while it still holds keys of the slot).
  void begin_migration(int slot, int to_port);
  void move_keys(int slot);
  void finish_migration(int slot);

 private:
  struct Node {
    int port = 0;
    int bus_port = 0;
    pid_t pid = -1;
    bool paused = false;
    std::string id;  // the cluster node id, known once the cluster is created
  };
  struct Migration {
    int from_port = 0;
    int to_port = 0;
  };

  explicit RedisCluster(Options options);
  void launch_node(Node& node);
  void create_cluster();
  void wait_until_formed();
  Node& node(int port);
  const Node& node(int port) const;
  // The nodes neither killed nor paused.
  std::vector<int> answering_ports() const;
  // Every node's view and the tail of its log, for an exception's message.
  std::string diagnostics() const;

  Options options_;
  std::string dir_;
  std::vector<Node> nodes_;
  std::vector<int> seed_ports_;
  std::map<int, Migration> migrations_;  // by slot, between begin and finish
};

}  // namespace herdguard::testing
