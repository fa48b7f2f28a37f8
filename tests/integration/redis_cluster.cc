#include "redis_cluster.h"

#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string_view>
#include <thread>
#include <utility>

#include "child_server.h"
#include "loopback_port.h"
#include "redis_link.h"

namespace herdguard::testing {
namespace {

using namespace link;  // a paused node is skipped; a hung one times out (redis_link.h)

void poll_until(const std::function<std::optional<std::string>()>& pending,
                std::chrono::milliseconds within, const std::string& what,
                const std::function<std::string()>& diagnostics) {
  link::poll_until(pending, within, "redis cluster", what, diagnostics);
}

constexpr int kSlots = 16384;
constexpr auto kFormWithin = std::chrono::seconds(30);
constexpr auto kCreateWithin = std::chrono::seconds(60);
constexpr auto kSetSlotSettlesWithin = std::chrono::seconds(10);
// Longer than MIGRATE's own 5000 ms timeout, so its error reply arrives.
constexpr auto kMigrateCommandTimeout = std::chrono::seconds(10);
constexpr int kKeysPerMigrate = 100;
constexpr int kLogLinesInDiagnostics = 20;

// redis-cli colours its output when TERM names a colour terminal, also into
// a file.
std::string without_colours(const std::string& text) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\x1b' && i + 1 < text.size() && text[i + 1] == '[') {
      i = std::min(text.find('m', i), text.size() - 1);
      continue;
    }
    out.push_back(text[i]);
  }
  return out;
}

// Runs one command on a node; throws std::runtime_error on any failure.
std::string must_run(int port, const std::string& password, const std::vector<std::string>& args) {
  Answer answer = Link(port, password).run(args);
  if (!answer.ok()) {
    std::string command;
    for (const auto& a : args) command += (command.empty() ? "" : " ") + a;
    throw std::runtime_error("redis cluster: " + command + ": " + answer.error);
  }
  return answer.text();
}

// One line of CLUSTER NODES: a node as the answering node sees it.
struct NodeView {
  std::string id;
  int port = 0;
  bool myself = false;
  bool primary = false;
  bool failing = false;                    // flagged `fail` or `fail?`
  std::string primary_id;                  // a replica's primary
  std::vector<std::pair<int, int>> slots;  // owned ranges, inclusive; no migration markers

  bool owns(int slot) const {
    return std::any_of(slots.begin(), slots.end(),
                       [slot](const auto& r) { return r.first <= slot && slot <= r.second; });
  }
};

std::vector<NodeView> parse_cluster_nodes(const std::string& text) {
  std::vector<NodeView> views;
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    std::istringstream words(line);
    std::string id, address, flags, primary_id, ping, pong, epoch, link;
    if (!(words >> id >> address >> flags >> primary_id >> ping >> pong >> epoch >> link)) continue;
    NodeView view;
    view.id = id;
    view.primary_id = primary_id;
    // ip:port@cport[,hostname]
    const auto colon = address.find(':');
    const auto at = address.find('@');
    if (colon != std::string::npos && at != std::string::npos && at > colon) {
      view.port = std::atoi(address.substr(colon + 1, at - colon - 1).c_str());
    }
    std::istringstream flag_list(flags);
    for (std::string flag; std::getline(flag_list, flag, ',');) {
      if (flag == "myself") view.myself = true;
      if (flag == "master") view.primary = true;
      if (flag == "fail" || flag == "fail?") view.failing = true;
    }
    for (std::string range; words >> range;) {
      if (range.starts_with('[')) continue;  // [slot->-id] / [slot-<-id]: a migration
      const auto dash = range.find('-');
      const int first = std::atoi(range.substr(0, dash).c_str());
      const int last =
          dash == std::string::npos ? first : std::atoi(range.substr(dash + 1).c_str());
      view.slots.emplace_back(first, last);
    }
    views.push_back(std::move(view));
  }
  return views;
}

// Which node is a primary owning which slots and which a replica of which
// primary, in a form two nodes' views can be compared by. (Failure flags are
// left out: they differ from node to node while a failure is being agreed.)
std::string cluster_shape(const std::vector<NodeView>& views) {
  std::vector<std::string> lines;
  for (const auto& v : views) {
    std::string line = v.id + (v.primary ? " primary" : " replica of " + v.primary_id);
    auto ranges = v.slots;
    std::sort(ranges.begin(), ranges.end());
    for (const auto& [first, last] : ranges) {
      line += " " + std::to_string(first) + "-" + std::to_string(last);
    }
    lines.push_back(std::move(line));
  }
  std::sort(lines.begin(), lines.end());
  std::string joined;
  for (const auto& l : lines) joined += l + "\n";
  return joined;
}

// The first answering node's CLUSTER NODES, parsed.
std::vector<NodeView> first_answering_view(const std::vector<int>& ports,
                                           const std::string& password) {
  std::string errors;
  for (const int port : ports) {
    Answer nodes = Link(port, password).run({"CLUSTER", "NODES"});
    if (nodes.ok()) return parse_cluster_nodes(nodes.text());
    errors += "\n  " + nodes.error;
  }
  throw std::runtime_error("redis cluster: no node answers CLUSTER NODES:" + errors);
}

}  // namespace

std::unique_ptr<RedisCluster> RedisCluster::start(Options options) {
  if (options.primaries < 3 || options.replicas_per_primary < 0) {
    throw std::invalid_argument(
        "redis cluster: needs primaries >= 3 and replicas_per_primary >= 0");
  }
  // Owned before anything is started: an exception below stops what was.
  std::unique_ptr<RedisCluster> cluster(new RedisCluster(std::move(options)));
  for (auto& node : cluster->nodes_) cluster->launch_node(node);
  cluster->create_cluster();
  cluster->wait_until_formed();
  for (auto& node : cluster->nodes_) {
    node.id = must_run(node.port, cluster->options_.requirepass, {"CLUSTER", "MYID"});
  }
  cluster->seed_ports_ = cluster->primary_ports();
  return cluster;
}

RedisCluster::RedisCluster(Options options) : options_(std::move(options)) {
  std::string pattern =
      (std::filesystem::temp_directory_path() / "herdguard-redis-cluster-XXXXXX").string();
  std::vector<char> buf(pattern.begin(), pattern.end());
  buf.push_back('\0');
  if (::mkdtemp(buf.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  dir_ = buf.data();
  nodes_.resize(static_cast<std::size_t>(options_.primaries * (1 + options_.replicas_per_primary)));
}

RedisCluster::~RedisCluster() {
  for (auto& node : nodes_) stop_child(node.pid);
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

void RedisCluster::launch_node(Node& node) {
  // The bus port is chosen too (--cluster-port): the default, port + 10000,
  // is beyond 65535 for most ephemeral ports. Another process may take a port
  // between the choice and the bind; then the node is tried again on others.
  constexpr int kAttempts = 3;
  for (int attempt = 1;; ++attempt) {
    std::set<int> taken;
    for (const auto& other : nodes_) taken.insert({other.port, other.bus_port});
    auto pick = [&taken] {
      for (int tries = 0; tries < 100; ++tries) {
        const int port = free_loopback_port();
        if (port != 0 && taken.insert(port).second) return port;
      }
      throw std::runtime_error("redis cluster: no free loopback port");
    };
    node.port = pick();
    node.bus_port = pick();
    const std::string port = std::to_string(node.port);
    const std::string data_dir = dir_ + "/" + port;
    const std::string log = dir_ + "/redis-" + port + ".log";
    std::filesystem::create_directory(data_dir);
    std::vector<std::string> args = {"redis-server", "--port", port};
    args.insert(args.end(), {"--bind", "127.0.0.1", "--protected-mode", "no"});
    args.insert(args.end(), {"--cluster-enabled", "yes", "--cluster-port",
                             std::to_string(node.bus_port), "--cluster-config-file",
                             dir_ + "/nodes-" + port + ".conf", "--cluster-node-timeout", "1000"});
    args.insert(args.end(), {"--dir", data_dir, "--save", "", "--appendonly", "no", "--daemonize",
                             "no", "--loglevel", "notice", "--logfile", log});
    // A replica's first sync would otherwise wait 5 s for more replicas to
    // share it: that was most of start()'s time with replicas.
    args.insert(args.end(), {"--repl-diskless-sync-delay", "0"});
    if (!options_.requirepass.empty()) {
      args.insert(args.end(),
                  {"--requirepass", options_.requirepass, "--masterauth", options_.requirepass});
    }
    node.pid = spawn_child(std::move(args));
    const int node_port = node.port;
    try {
      wait_until_answering(
          node.pid, [&] { return Link(node_port, options_.requirepass).run({"PING"}).ok(); },
          "redis-server (cluster node " + endpoint(node_port) + ")", std::chrono::seconds(10),
          std::chrono::milliseconds(10), [&log] { return read_file(log); });
      return;
    } catch (const std::runtime_error&) {
      if (attempt == kAttempts ||
          read_file(log).find("Address already in use") == std::string::npos) {
        throw;
      }
    }
  }
}

void RedisCluster::create_cluster() {
  std::vector<std::string> args = {"redis-cli"};
  if (!options_.requirepass.empty()) {
    args.insert(args.end(), {"-a", options_.requirepass, "--no-auth-warning"});
  }
  args.insert(args.end(), {"--cluster", "create"});
  for (const auto& node : nodes_) args.push_back(endpoint(node.port));
  args.insert(args.end(), {"--cluster-replicas", std::to_string(options_.replicas_per_primary),
                           "--cluster-yes"});
  const std::string output_path = dir_ + "/redis-cli.log";
  const char* output = output_path.c_str();
  // In the forked child: only async-signal-safe calls.
  pid_t pid = spawn_child(std::move(args), [output] {
    const int out = ::open(output, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    const int in = ::open("/dev/null", O_RDONLY);
    if (out >= 0) {
      ::dup2(out, STDOUT_FILENO);
      ::dup2(out, STDERR_FILENO);
    }
    if (in >= 0) ::dup2(in, STDIN_FILENO);
  });
  const auto give_up = std::chrono::steady_clock::now() + kCreateWithin;
  int status = 0;
  while (true) {
    const pid_t done = ::waitpid(pid, &status, WNOHANG);
    if (done == pid) break;
    if (done < 0 && errno != EINTR) {
      throw std::runtime_error("redis cluster: waitpid for redis-cli failed");
    }
    if (std::chrono::steady_clock::now() > give_up) {
      stop_child(pid);
      throw std::runtime_error(
          "redis cluster: redis-cli --cluster create did not finish in time\n" + diagnostics());
    }
    // redis-cli itself polls the nodes once a second while they join.
    std::this_thread::sleep_for(kPoll);
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    throw std::runtime_error("redis cluster: redis-cli --cluster create failed (status " +
                             std::to_string(status) + ")\n" + diagnostics());
  }
}

void RedisCluster::wait_until_formed() {
  const std::string known = std::to_string(nodes_.size());
  const int replicas = options_.primaries * options_.replicas_per_primary;
  poll_until(
      [&]() -> std::optional<std::string> {
        std::optional<std::string> shape;
        int linked_replicas = 0;
        for (const auto& node : nodes_) {
          Link link(node.port, options_.requirepass);
          Answer info = link.run({"CLUSTER", "INFO"});
          if (!info.ok()) return info.error;
          const std::string where = endpoint(node.port) + ": ";
          if (info_field(info.text(), "cluster_state") != "ok") {
            return where + "cluster_state not ok";
          }
          if (info_field(info.text(), "cluster_slots_assigned") != std::to_string(kSlots)) {
            return where + "not all slots assigned";
          }
          if (info_field(info.text(), "cluster_known_nodes") != known) {
            return where + "does not know every node yet";
          }
          Answer nodes = link.run({"CLUSTER", "NODES"});
          if (!nodes.ok()) return nodes.error;
          const std::vector<NodeView> views = parse_cluster_nodes(nodes.text());
          const std::string mine = cluster_shape(views);
          if (shape && *shape != mine) return where + "disagrees on roles or slot owners";
          shape = mine;
          const auto self =
              std::find_if(views.begin(), views.end(), [](const NodeView& v) { return v.myself; });
          if (self == views.end() || self->primary) continue;
          Answer replication = link.run({"INFO", "replication"});
          if (!replication.ok()) return replication.error;
          if (info_field(replication.text(), "master_link_status") != "up") {
            return where + "replica's link to its primary is not up";
          }
          ++linked_replicas;
        }
        if (linked_replicas != replicas) {
          return std::to_string(linked_replicas) + " of " + std::to_string(replicas) +
                 " replicas linked";
        }
        return std::nullopt;
      },
      kFormWithin, "the cluster did not form", [this] { return diagnostics(); });
}

std::string RedisCluster::url() const {
  std::string url = "redis-cluster://";
  if (!options_.requirepass.empty()) url += ":" + percent_encode(options_.requirepass) + "@";
  for (std::size_t i = 0; i < seed_ports_.size(); ++i) {
    url += (i == 0 ? "" : ",") + endpoint(seed_ports_[i]);
  }
  return url;
}

std::vector<int> RedisCluster::ports() const {
  std::vector<int> ports;
  for (const auto& node : nodes_) ports.push_back(node.port);
  return ports;
}

std::vector<int> RedisCluster::primary_ports() const {
  std::vector<int> primaries;
  for (const auto& view : first_answering_view(answering_ports(), options_.requirepass)) {
    if (view.primary && !view.failing) primaries.push_back(view.port);
  }
  std::sort(primaries.begin(), primaries.end());
  return primaries;
}

int RedisCluster::port_for_slot(int slot) const {
  if (slot < 0 || slot >= kSlots) {
    throw std::out_of_range("redis cluster: no slot " + std::to_string(slot));
  }
  for (const auto& view : first_answering_view(answering_ports(), options_.requirepass)) {
    if (view.primary && view.owns(slot)) return view.port;
  }
  throw std::runtime_error("redis cluster: no primary owns slot " + std::to_string(slot));
}

pid_t RedisCluster::pid(int port) const { return node(port).pid; }

std::vector<int> RedisCluster::answering_ports() const {
  std::vector<int> ports;
  for (const auto& node : nodes_) {
    if (node.pid > 0 && !node.paused) ports.push_back(node.port);
  }
  return ports;
}

const RedisCluster::Node& RedisCluster::node(int port) const {
  for (const auto& node : nodes_) {
    if (node.port == port) return node;
  }
  throw std::out_of_range("redis cluster: no node on port " + std::to_string(port));
}

RedisCluster::Node& RedisCluster::node(int port) {
  return const_cast<Node&>(std::as_const(*this).node(port));
}

void RedisCluster::kill(int port) {
  Node& n = node(port);
  stop_child(n.pid);
  n.paused = false;
}

void RedisCluster::pause(int port) {
  Node& n = node(port);
  if (n.pid <= 0) return;
  pause_child(n.pid);
  n.paused = true;
}

void RedisCluster::resume(int port) {
  Node& n = node(port);
  resume_child(n.pid);
  n.paused = false;
}

void RedisCluster::wait_for_failover(int dead_port, std::chrono::milliseconds within) {
  const std::string dead_id = node(dead_port).id;
  poll_until(
      [&]() -> std::optional<std::string> {
        std::optional<std::string> shape;
        for (const int port : answering_ports()) {
          if (port == dead_port) continue;
          Link link(port, options_.requirepass);
          const std::string where = endpoint(port) + ": ";
          Answer info = link.run({"CLUSTER", "INFO"});
          if (!info.ok()) return info.error;
          if (info_field(info.text(), "cluster_state") != "ok") {
            return where + "cluster_state not ok";
          }
          Answer nodes = link.run({"CLUSTER", "NODES"});
          if (!nodes.ok()) return nodes.error;
          const std::vector<NodeView> views = parse_cluster_nodes(nodes.text());
          for (const auto& v : views) {
            if (v.id == dead_id && !v.slots.empty()) {
              return where + "still sees " + endpoint(dead_port) + " owning slots";
            }
          }
          const std::string mine = cluster_shape(views);
          if (shape && *shape != mine) return where + "disagrees on roles or slot owners";
          shape = mine;
        }
        if (!shape) return "no other node answers";
        return std::nullopt;
      },
      within, "no failover of " + endpoint(dead_port), [this] { return diagnostics(); });
}

void RedisCluster::migrate_slot(int slot, int to_port) {
  begin_migration(slot, to_port);
  move_keys(slot);
  finish_migration(slot);
}

void RedisCluster::begin_migration(int slot, int to_port) {
  if (migrations_.contains(slot)) {
    throw std::logic_error("redis cluster: slot " + std::to_string(slot) + " is already migrating");
  }
  const int from_port = port_for_slot(slot);
  if (from_port == to_port) {
    throw std::invalid_argument("redis cluster: " + endpoint(to_port) + " already owns slot " +
                                std::to_string(slot));
  }
  const std::string s = std::to_string(slot);
  // The target first: once the source answers ASK, the target must accept it.
  must_run(to_port, options_.requirepass,
           {"CLUSTER", "SETSLOT", s, "IMPORTING", node(from_port).id});
  must_run(from_port, options_.requirepass,
           {"CLUSTER", "SETSLOT", s, "MIGRATING", node(to_port).id});
  migrations_[slot] = Migration{from_port, to_port};
}

void RedisCluster::move_keys(int slot) {
  const auto it = migrations_.find(slot);
  if (it == migrations_.end()) {
    throw std::logic_error("redis cluster: move_keys without begin_migration of slot " +
                           std::to_string(slot));
  }
  const Migration m = it->second;
  Link source(m.from_port, options_.requirepass, kMigrateCommandTimeout);
  while (true) {
    Answer keys = source.run(
        {"CLUSTER", "GETKEYSINSLOT", std::to_string(slot), std::to_string(kKeysPerMigrate)});
    if (!keys.ok()) throw std::runtime_error("redis cluster: CLUSTER GETKEYSINSLOT: " + keys.error);
    if (keys.reply->elements == 0) return;
    std::vector<std::string> migrate = {"MIGRATE", "127.0.0.1", std::to_string(m.to_port),
                                        "",        "0",         "5000"};
    if (!options_.requirepass.empty()) {
      migrate.insert(migrate.end(), {"AUTH", options_.requirepass});
    }
    migrate.push_back("KEYS");
    for (std::size_t i = 0; i < keys.reply->elements; ++i) {
      const redisReply* key = keys.reply->element[i];
      migrate.emplace_back(key->str, key->len);
    }
    Answer moved = source.run(migrate);
    if (!moved.ok()) throw std::runtime_error("redis cluster: MIGRATE: " + moved.error);
  }
}

void RedisCluster::finish_migration(int slot) {
  const auto it = migrations_.find(slot);
  if (it == migrations_.end()) {
    throw std::logic_error("redis cluster: finish_migration without begin_migration of slot " +
                           std::to_string(slot));
  }
  const Migration m = it->second;
  const std::string s = std::to_string(slot);
  const std::string target_id = node(m.to_port).id;
  // The target first: it bumps its config epoch, so its claim wins in gossip.
  std::vector<int> order = {m.to_port, m.from_port};
  for (const int port : primary_ports()) {
    if (port != m.to_port && port != m.from_port) order.push_back(port);
  }
  for (const int port : order) {
    must_run(port, options_.requirepass, {"CLUSTER", "SETSLOT", s, "NODE", target_id});
  }
  migrations_.erase(it);
  poll_until(
      [&]() -> std::optional<std::string> {
        for (const int port : answering_ports()) {
          Answer nodes = Link(port, options_.requirepass).run({"CLUSTER", "NODES"});
          if (!nodes.ok()) return nodes.error;
          const auto views = parse_cluster_nodes(nodes.text());
          const bool sees_target = std::any_of(views.begin(), views.end(), [&](const NodeView& v) {
            return v.id == target_id && v.owns(slot);
          });
          if (!sees_target) return endpoint(port) + ": does not see the new owner yet";
        }
        return std::nullopt;
      },
      kSetSlotSettlesWithin, "slot " + s + " did not settle on " + endpoint(m.to_port),
      [this] { return diagnostics(); });
}

std::string RedisCluster::diagnostics() const {
  std::string out =
      "redis-cli --cluster create said:\n" + without_colours(read_file(dir_ + "/redis-cli.log"));
  for (const auto& n : nodes_) {
    const std::string port = std::to_string(n.port);
    out += "--- node " + endpoint(n.port);
    if (n.pid <= 0) {
      out += " (not running)\n";
    } else if (n.paused) {
      out += " (paused)\n";
    } else {
      Answer nodes = Link(n.port, options_.requirepass).run({"CLUSTER", "NODES"});
      out += ", its CLUSTER NODES:\n" + (nodes.ok() ? nodes.text() : nodes.error + "\n");
    }
    out += "its log (last lines):\n" +
           last_lines(read_file(dir_ + "/redis-" + port + ".log"), kLogLinesInDiagnostics);
  }
  return out;
}

}  // namespace herdguard::testing
