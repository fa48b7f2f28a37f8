// A real Redis primary with replicas, watched by Sentinels, for one test: one
// primary and `replicas` replicas (redis-server --replicaof), then `sentinels`
// Sentinels (redis-server --sentinel, each from its own config file), all in a
// fresh temporary folder on free loopback TCP ports on 127.0.0.1, awaited
// until the replicas are in sync and every Sentinel knows the primary, the
// replicas and the other Sentinels. Every process is stopped and the folder
// removed when the object is destroyed, also when the test fails. When the
// test process dies, every process gets SIGKILL (PR_SET_PDEATHSIG), so none
// outlives its test; only the folder is left then. Faults: a data node or a
// Sentinel killed or paused, the primary failed over by the Sentinels (after
// a kill or a pause) or on request (SENTINEL FAILOVER).
//
// Not thread-safe: one test thread drives it. The Sentinels agree by gossip;
// the accessors that ask them (primary_port(), primary_url()) report what one
// answering Sentinel says, and the calls that wait (start(),
// wait_for_failover(), failover(), wait_until_replica()) return only once
// every answering Sentinel agrees.
//
// Example:
//   auto group = herdguard::testing::RedisSentinelGroup::start({.replicas = 2});
//   // A client that finds the primary through the Sentinels:
//   auto client = herdguard::RedisClient::create({.url = group->url()});
//   const int old_primary = group->primary_port();
//   group->kill(old_primary);
//   group->wait_for_failover(old_primary, std::chrono::seconds(30));
//   auto direct = herdguard::RedisClient::create({.url = group->primary_url()});
//   group->failover();  // a graceful switch to the last replica
#pragma once

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace herdguard::testing {

class RedisSentinelGroup {
 public:
  struct Options {
    // Replicas of the primary; with at least one, the primary can be failed
    // over. REQUIRES: >= 0.
    int replicas = 1;
    // Sentinels watching the primary; the quorum that agrees the primary is
    // down is their majority. REQUIRES: >= 1.
    int sentinels = 3;
    // The name the Sentinels monitor the primary under. REQUIRES: not empty,
    // only letters, digits, '-', '.' and '_'.
    std::string master_name = "mymaster";
    // When not empty: every data node's `requirepass` and `masterauth`, and
    // the Sentinels' `auth-pass`. The Sentinels themselves need no password.
    std::string requirepass{};
  };

  // Starts the primary and the replicas, waits until every replica's link to
  // the primary is up, then starts the Sentinels and waits until every one
  // names the primary, sees it up, and knows every replica (in sync with the
  // primary) and the other Sentinels. Waits at most 30 s, polling every
  // 50 ms; takes about 2.2 s (a Sentinel announces itself to the others
  // every 2 s; 0.2 s with one Sentinel). Throws std::runtime_error, with
  // every process's view and log, when a process cannot be started or the
  // group does not form in time; the processes already started are stopped
  // then. Throws std::invalid_argument when `options` breaks a REQUIRES.
  static std::unique_ptr<RedisSentinelGroup> start(Options options);
  static std::unique_ptr<RedisSentinelGroup> start() { return start(Options{}); }
  ~RedisSentinelGroup();
  RedisSentinelGroup(const RedisSentinelGroup&) = delete;
  RedisSentinelGroup& operator=(const RedisSentinelGroup&) = delete;

  // `redis-sentinel://127.0.0.1:S1,127.0.0.1:S2,.../<master_name>`: every
  // Sentinel (with a password: `redis-sentinel://:PASS@127.0.0.1:S1,...`, the
  // data nodes' password, percent-encoded). Unchanged by failovers and kills.
  std::string url() const;
  // `redis://127.0.0.1:P/0` (with a password: `redis://:PASS@127.0.0.1:P/0`)
  // of the primary the first answering Sentinel names now. Throws
  // std::runtime_error when no Sentinel answers.
  std::string primary_url() const;
  int primary_port() const;
  // The data nodes' ports in start order (the first was the primary at
  // start), and the Sentinels'; killed ones included.
  std::vector<int> data_ports() const;
  std::vector<int> sentinel_ports() const;
  const std::string& master_name() const { return options_.master_name; }
  // The process id of the data node or Sentinel on `port`; -1 once it was
  // killed. REQUIRES: `port` is one of data_ports() or sentinel_ports() (else
  // std::out_of_range).
  pid_t pid(int port) const;

  // SIGKILL (as abrupt as a crash), and waits for the process to exit. It is
  // not restarted. Idempotent. Same REQUIRES as pid().
  void kill(int port);
  // SIGSTOP, returning once the process has stopped, and SIGCONT: a process
  // that keeps its connections and stops answering, as a hung one does.
  // Paused processes are skipped by the calls that ask the group. A Sentinel
  // paused for more than 2 s enters TILT mode for 30 s once resumed: it
  // neither judges the primary down nor fails it over meanwhile. A primary
  // paused past the Sentinels' down-after (1000 ms) is failed over; once
  // resumed it still claims to be a primary, and accepts writes, until a
  // Sentinel turns it into a replica about 10 s later (wait_until_replica()).
  // Same REQUIRES as pid().
  void pause(int port);
  void resume(int port);

  // Waits until every answering Sentinel names the same primary, not
  // `old_primary_port`; that primary answers ROLE as a master; every other
  // answering data node except `old_primary_port` is a replica of it with its
  // link up; and every answering Sentinel has finished the failover (sees
  // the new primary up, its replicas in sync, the other Sentinels up), so
  // the next fault can follow at once. With down-after-milliseconds 1000
  // this takes about 3 s after a kill (4 s with two replicas); allow 30 s:
  // a split vote is retried only after 10 s. Throws std::runtime_error (with
  // every process's view and log) after `within`. The old primary, if it
  // still runs, is not waited for: see wait_until_replica().
  // REQUIRES: `old_primary_port` was the primary and was killed or paused, or
  // failed over on request; it had a replica the Sentinels could promote.
  void wait_for_failover(int old_primary_port, std::chrono::milliseconds within);

  // A switch with nothing killed: SENTINEL FAILOVER on the first answering
  // Sentinel (forced: no votes asked), then wait_for_failover() of the
  // current primary; takes about 1.2 s (2.4 s with two replicas). The old
  // primary keeps answering as a primary, and accepting writes that will be
  // lost, until a Sentinel turns it into a replica of the new one about 10 s
  // later (Sentinel first waits 8 s for a newer config);
  // wait_until_replica(old) waits for that. Throws std::runtime_error when
  // the Sentinel refuses (NOGOODSLAVE: no replica to promote; INPROG: a
  // failover is already running) or the switch does not finish within
  // `within`.
  void failover(std::chrono::milliseconds within = std::chrono::seconds(30));

  // Waits until the data node on `port` is a replica of the primary the
  // first answering Sentinel names, with its link up: the old primary after
  // failover(), or a paused primary once resumed (each about 10 s). Throws
  // std::runtime_error after `within`. REQUIRES: `port` is one of
  // data_ports(), running and not paused.
  void wait_until_replica(int port, std::chrono::milliseconds within);

 private:
  struct Process {
    bool sentinel = false;
    int port = 0;
    pid_t pid = -1;
    bool paused = false;
  };

  explicit RedisSentinelGroup(Options options);
  // Starts a data node (the first one the primary, the others its replicas)
  // or a Sentinel on a free port, and waits until it answers PING.
  void launch(Process& process);
  void wait_until_replicas_linked();
  // Why not every answering Sentinel names `primary`, sees it up, sees every
  // other answering Sentinel up, and sees every other answering data node as
  // its replica, in sync by the Sentinel's last INFO of it (connected is
  // enough for `except`); nullopt once they all do.
  std::optional<std::string> disagreement(int primary, int except) const;
  Process& process(int port);
  const Process& process(int port) const;
  // The ports of `processes` neither killed nor paused.
  std::vector<int> answering(const std::vector<Process>& processes) const;
  std::string log_path(const Process& process) const;
  // Every process's view and the tail of its log, for an exception's message.
  std::string diagnostics() const;

  Options options_;
  std::string dir_;
  std::vector<Process> data_nodes_;
  std::vector<Process> sentinels_;
};

}  // namespace herdguard::testing
