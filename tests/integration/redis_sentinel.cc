#include "redis_sentinel.h"

#include <hiredis/hiredis.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
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
  link::poll_until(pending, within, "redis sentinel", what, diagnostics);
}

constexpr auto kFormWithin = std::chrono::seconds(30);
constexpr auto kAnswerWithin = std::chrono::seconds(10);
constexpr int kLogLinesInDiagnostics = 20;
// What the header promises about failover times rests on these.
constexpr int kDownAfterMs = 1000;
constexpr int kFailoverTimeoutMs = 5000;

std::string config_quoted(std::string_view s) {
  std::string out = "\"";
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (std::isprint(u)) {
      out += c;
    } else {
      char escaped[5];
      std::snprintf(escaped, sizeof(escaped), "\\x%02x", u);
      out += escaped;
    }
  }
  return out + "\"";
}

// One instance as a Sentinel describes it (SENTINEL MASTER, one element of
// SENTINEL REPLICAS or SENTINEL SENTINELS): a flat array of names and values.
using Fields = std::map<std::string, std::string>;

Fields fields_of(const redisReply* r) {
  Fields fields;
  if (r == nullptr || r->type != REDIS_REPLY_ARRAY) return fields;
  for (std::size_t i = 0; i + 1 < r->elements; i += 2) {
    fields[text_of(r->element[i])] = text_of(r->element[i + 1]);
  }
  return fields;
}

std::vector<Fields> field_list(const redisReply* r) {
  std::vector<Fields> list;
  if (r == nullptr || r->type != REDIS_REPLY_ARRAY) return list;
  for (std::size_t i = 0; i < r->elements; ++i) list.push_back(fields_of(r->element[i]));
  return list;
}

// The port a Sentinel names for the primary (SENTINEL GET-MASTER-ADDR-BY-NAME),
// or why it names none.
struct Named {
  int port = 0;
  std::string error{};
};

Named named_primary(Link& sentinel, const std::string& master_name) {
  Answer addr = sentinel.run({"SENTINEL", "GET-MASTER-ADDR-BY-NAME", master_name});
  if (!addr.ok()) return {.error = addr.error};
  const redisReply* r = addr.reply.get();
  if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
    return {.error = "does not know " + master_name};
  }
  return {.port = std::atoi(text_of(r->element[1]).c_str())};
}

// A data node's answer to ROLE.
struct Role {
  std::string role{};        // "master" or "slave"
  int primary_port = 0;      // a replica's primary
  std::string link_state{};  // a replica's: "connected" once in sync
};

std::optional<Role> role_of(const Answer& answer) {
  const redisReply* r = answer.reply.get();
  if (!answer.ok() || r->type != REDIS_REPLY_ARRAY || r->elements < 1) return std::nullopt;
  Role role{.role = text_of(r->element[0])};
  if (role.role == "slave" && r->elements >= 4) {
    role.primary_port = static_cast<int>(r->element[2]->integer);
    role.link_state = text_of(r->element[3]);
  }
  return role;
}

bool valid_master_name(std::string_view name) {
  return !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_';
  });
}

}  // namespace

std::unique_ptr<RedisSentinelGroup> RedisSentinelGroup::start(Options options) {
  if (options.replicas < 0 || options.sentinels < 1 || !valid_master_name(options.master_name)) {
    throw std::invalid_argument(
        "redis sentinel: needs replicas >= 0, sentinels >= 1 and a master_name of letters, "
        "digits, '-', '.' and '_'");
  }
  // Owned before anything is started: an exception below stops what was.
  std::unique_ptr<RedisSentinelGroup> group(new RedisSentinelGroup(std::move(options)));
  for (auto& node : group->data_nodes_) group->launch(node);
  group->wait_until_replicas_linked();
  // Only now: a Sentinel learns the replicas from the primary's INFO, which
  // it asks at once and then only every 10 s.
  for (auto& sentinel : group->sentinels_) group->launch(sentinel);
  const int primary = group->data_nodes_.front().port;
  poll_until([&] { return group->disagreement(primary, 0); }, kFormWithin,
             "the Sentinels did not agree", [&] { return group->diagnostics(); });
  return group;
}

RedisSentinelGroup::RedisSentinelGroup(Options options) : options_(std::move(options)) {
  std::string pattern =
      (std::filesystem::temp_directory_path() / "herdguard-redis-sentinel-XXXXXX").string();
  std::vector<char> buf(pattern.begin(), pattern.end());
  buf.push_back('\0');
  if (::mkdtemp(buf.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  dir_ = buf.data();
  data_nodes_.resize(static_cast<std::size_t>(1 + options_.replicas));
  sentinels_.resize(static_cast<std::size_t>(options_.sentinels), Process{.sentinel = true});
}

RedisSentinelGroup::~RedisSentinelGroup() {
  // The Sentinels first, so none reacts to the data nodes going away.
  for (auto& sentinel : sentinels_) stop_child(sentinel.pid);
  for (auto& node : data_nodes_) stop_child(node.pid);
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

std::string RedisSentinelGroup::log_path(const Process& process) const {
  return dir_ + (process.sentinel ? "/sentinel-" : "/redis-") + std::to_string(process.port) +
         ".log";
}

void RedisSentinelGroup::launch(Process& process) {
  const bool sentinel = process.sentinel;
  // The primary is the first data node; the others replicate it.
  const int primary_port = data_nodes_.front().port;
  const std::string& password = options_.requirepass;
  // Another process may take a port between the choice and the bind; then
  // the process is tried again on another.
  constexpr int kAttempts = 3;
  for (int attempt = 1;; ++attempt) {
    std::set<int> taken;
    for (const auto* group : {&data_nodes_, &sentinels_}) {
      for (const auto& other : *group) taken.insert(other.port);
    }
    process.port = 0;
    for (int tries = 0; tries < 100 && process.port == 0; ++tries) {
      const int port = free_loopback_port();
      if (port != 0 && !taken.contains(port)) process.port = port;
    }
    if (process.port == 0) throw std::runtime_error("redis sentinel: no free loopback port");
    const std::string port = std::to_string(process.port);
    const std::string log = log_path(process);
    std::vector<std::string> args;
    if (sentinel) {
      // Sentinel rewrites its config file (its id, the replicas and Sentinels
      // it found), so each has its own, writable, in the folder. `monitor`
      // comes before the other lines about the same name.
      const std::string config = dir_ + "/sentinel-" + port + ".conf";
      const std::string& name = options_.master_name;
      std::ofstream out(config);
      out << "port " << port << "\nbind 127.0.0.1\nprotected-mode no\ndaemonize no\n"
          << "dir " << config_quoted(dir_) << "\nlogfile " << config_quoted(log) << "\n"
          << "sentinel resolve-hostnames no\nsentinel announce-hostnames no\n"
          << "sentinel monitor " << name << " 127.0.0.1 " << primary_port << " "
          << options_.sentinels / 2 + 1 << "\n"
          << "sentinel down-after-milliseconds " << name << " " << kDownAfterMs << "\n"
          << "sentinel failover-timeout " << name << " " << kFailoverTimeoutMs << "\n"
          << "sentinel parallel-syncs " << name << " 1\n";
      if (!password.empty()) {
        out << "sentinel auth-pass " << name << " " << config_quoted(password) << "\n";
      }
      out.close();
      if (!out) throw std::runtime_error("redis sentinel: cannot write " + config);
      args = {"redis-server", config, "--sentinel"};
    } else {
      const std::string data_dir = dir_ + "/" + port;
      std::filesystem::create_directory(data_dir);
      args = {"redis-server", "--port", port, "--bind", "127.0.0.1", "--protected-mode", "no"};
      args.insert(args.end(), {"--dir", data_dir, "--save", "", "--appendonly", "no", "--daemonize",
                               "no", "--loglevel", "notice", "--logfile", log});
      // A replica's first sync would otherwise wait 5 s for more replicas to
      // share it.
      args.insert(args.end(), {"--repl-diskless-sync-delay", "0"});
      if (&process != &data_nodes_.front()) {
        args.insert(args.end(), {"--replicaof", "127.0.0.1", std::to_string(primary_port)});
      }
      // masterauth on the primary too: after a failover it is a replica.
      if (!password.empty()) {
        args.insert(args.end(), {"--requirepass", password, "--masterauth", password});
      }
    }
    process.pid = spawn_child(std::move(args));
    const int answering_port = process.port;
    const std::string link_password = sentinel ? std::string() : password;
    try {
      wait_until_answering(
          process.pid, [&] { return Link(answering_port, link_password).run({"PING"}).ok(); },
          std::string(sentinel ? "redis-server --sentinel " : "redis-server ") +
              endpoint(answering_port),
          kAnswerWithin, std::chrono::milliseconds(10), [&log] { return read_file(log); });
      return;
    } catch (const std::runtime_error&) {
      if (attempt == kAttempts ||
          read_file(log).find("Address already in use") == std::string::npos) {
        throw;
      }
    }
  }
}

void RedisSentinelGroup::wait_until_replicas_linked() {
  const int primary_port = data_nodes_.front().port;
  poll_until(
      [&]() -> std::optional<std::string> {
        for (std::size_t i = 1; i < data_nodes_.size(); ++i) {
          const int port = data_nodes_[i].port;
          Answer info = Link(port, options_.requirepass).run({"INFO", "replication"});
          if (!info.ok()) return info.error;
          if (info_field(info.text(), "master_link_status") != "up") {
            return endpoint(port) + ": link to the primary is not up";
          }
        }
        // The Sentinels take the replicas from this list.
        Answer info = Link(primary_port, options_.requirepass).run({"INFO", "replication"});
        if (!info.ok()) return info.error;
        if (info_field(info.text(), "connected_slaves") != std::to_string(options_.replicas)) {
          return endpoint(primary_port) + ": does not list every replica";
        }
        return std::nullopt;
      },
      kFormWithin, "the replicas did not sync", [this] { return diagnostics(); });
}

std::optional<std::string> RedisSentinelGroup::disagreement(int primary, int except) const {
  const std::string& name = options_.master_name;
  const std::vector<int> sentinels = answering(sentinels_);
  if (sentinels.empty()) return "no Sentinel answers";
  std::vector<int> replicas = answering(data_nodes_);
  std::erase_if(replicas, [&](int port) { return port == primary; });
  // Whether `list` has an instance on `port` with every field in `wanted`.
  auto has = [](const std::vector<Fields>& list, int port, const Fields& wanted) {
    return std::any_of(list.begin(), list.end(), [&](const Fields& f) {
      const auto at = f.find("port");
      if (at == f.end() || at->second != std::to_string(port)) return false;
      return std::all_of(wanted.begin(), wanted.end(), [&](const auto& w) {
        const auto it = f.find(w.first);
        return it != f.end() && it->second == w.second;
      });
    });
  };
  for (const int port : sentinels) {
    Link link(port, "");
    const std::string where = endpoint(port) + ": ";
    // While its failover runs, a Sentinel already names the promoted replica
    // here; SENTINEL MASTER below says whether it has finished.
    Named named = named_primary(link, name);
    if (!named.error.empty()) return where + named.error;
    if (named.port != primary) return where + "names " + endpoint(named.port) + " the primary";
    Answer master = link.run({"SENTINEL", "MASTER", name});
    if (!master.ok()) return master.error;
    Fields fields = fields_of(master.reply.get());
    if (fields["port"] != std::to_string(primary) || fields["flags"] != "master") {
      return where + "sees the primary " + fields["ip"] + ":" + fields["port"] + " as " +
             fields["flags"];
    }
    // Connected, and in sync by its last INFO: a replica it can promote.
    Answer known_replicas = link.run({"SENTINEL", "REPLICAS", name});
    if (!known_replicas.ok()) return known_replicas.error;
    const std::vector<Fields> replica_list = field_list(known_replicas.reply.get());
    const Fields ready = {
        {"flags", "slave"}, {"master-link-status", "ok"}, {"master-port", std::to_string(primary)}};
    for (const int replica : replicas) {
      // A Sentinel asks a replica's INFO only every 10 s: it may not have
      // seen `except` (e.g. an old primary just turned replica) in sync yet.
      if (replica == except ? !has(replica_list, replica, {{"flags", "slave"}})
                            : !has(replica_list, replica, ready)) {
        return where + "does not see " + endpoint(replica) + " as a replica" +
               (replica == except ? "" : " in sync");
      }
    }
    Answer known_sentinels = link.run({"SENTINEL", "SENTINELS", name});
    if (!known_sentinels.ok()) return known_sentinels.error;
    const std::vector<Fields> sentinel_list = field_list(known_sentinels.reply.get());
    for (const int other : sentinels) {
      if (other == port) continue;
      // `master_down` may linger: it is this Sentinel's last answer about an
      // old primary, forgotten 5 s later.
      if (!has(sentinel_list, other, {{"flags", "sentinel"}}) &&
          !has(sentinel_list, other, {{"flags", "sentinel,master_down"}})) {
        return where + "does not see the Sentinel " + endpoint(other) + " up";
      }
    }
  }
  return std::nullopt;
}

std::string RedisSentinelGroup::url() const {
  std::string url = "redis-sentinel://";
  if (!options_.requirepass.empty()) url += ":" + percent_encode(options_.requirepass) + "@";
  for (std::size_t i = 0; i < sentinels_.size(); ++i) {
    url += (i == 0 ? "" : ",") + endpoint(sentinels_[i].port);
  }
  return url + "/" + options_.master_name;
}

std::string RedisSentinelGroup::primary_url() const {
  const std::string userinfo =
      options_.requirepass.empty() ? "" : ":" + percent_encode(options_.requirepass) + "@";
  return "redis://" + userinfo + endpoint(primary_port()) + "/0";
}

int RedisSentinelGroup::primary_port() const {
  std::string errors;
  for (const int port : answering(sentinels_)) {
    Link link(port, "");
    Named named = named_primary(link, options_.master_name);
    if (named.error.empty()) return named.port;
    errors += "\n  " + named.error;
  }
  throw std::runtime_error("redis sentinel: no Sentinel names the primary:" + errors);
}

std::vector<int> RedisSentinelGroup::data_ports() const {
  std::vector<int> ports;
  for (const auto& node : data_nodes_) ports.push_back(node.port);
  return ports;
}

std::vector<int> RedisSentinelGroup::sentinel_ports() const {
  std::vector<int> ports;
  for (const auto& sentinel : sentinels_) ports.push_back(sentinel.port);
  return ports;
}

pid_t RedisSentinelGroup::pid(int port) const { return process(port).pid; }

std::vector<int> RedisSentinelGroup::answering(const std::vector<Process>& processes) const {
  std::vector<int> ports;
  for (const auto& p : processes) {
    if (p.pid > 0 && !p.paused) ports.push_back(p.port);
  }
  return ports;
}

const RedisSentinelGroup::Process& RedisSentinelGroup::process(int port) const {
  for (const auto* group : {&data_nodes_, &sentinels_}) {
    for (const auto& p : *group) {
      if (p.port == port) return p;
    }
  }
  throw std::out_of_range("redis sentinel: no process on port " + std::to_string(port));
}

RedisSentinelGroup::Process& RedisSentinelGroup::process(int port) {
  return const_cast<Process&>(std::as_const(*this).process(port));
}

void RedisSentinelGroup::kill(int port) {
  Process& p = process(port);
  stop_child(p.pid);
  p.paused = false;
}

void RedisSentinelGroup::pause(int port) {
  Process& p = process(port);
  if (p.pid <= 0) return;
  pause_child(p.pid);
  p.paused = true;
}

void RedisSentinelGroup::resume(int port) {
  Process& p = process(port);
  resume_child(p.pid);
  p.paused = false;
}

void RedisSentinelGroup::wait_for_failover(int old_primary_port, std::chrono::milliseconds within) {
  poll_until(
      [&]() -> std::optional<std::string> {
        const std::vector<int> sentinels = answering(sentinels_);
        if (sentinels.empty()) return "no Sentinel answers";
        int primary = 0;
        for (const int port : sentinels) {
          Link link(port, "");
          Named named = named_primary(link, options_.master_name);
          const std::string where = endpoint(port) + ": ";
          if (!named.error.empty()) return where + named.error;
          if (named.port == old_primary_port) return where + "still names the old primary";
          if (primary != 0 && named.port != primary) {
            return where + "names " + endpoint(named.port) + ", another " + endpoint(primary);
          }
          primary = named.port;
        }
        const std::vector<int> nodes = answering(data_nodes_);
        if (std::find(nodes.begin(), nodes.end(), primary) == nodes.end()) {
          return "the Sentinels name " + endpoint(primary) + ", which does not answer";
        }
        const auto role = role_of(Link(primary, options_.requirepass).run({"ROLE"}));
        if (!role || role->role != "master") {
          return endpoint(primary) + ": named the primary, but not a master yet";
        }
        for (const int port : nodes) {
          if (port == primary || port == old_primary_port) continue;
          const auto replica = role_of(Link(port, options_.requirepass).run({"ROLE"}));
          if (!replica || replica->role != "slave" || replica->primary_port != primary ||
              replica->link_state != "connected") {
            return endpoint(port) + ": not yet a connected replica of " + endpoint(primary);
          }
        }
        // And every Sentinel has finished its part: ready for the next fault.
        return disagreement(primary, old_primary_port);
      },
      within, "no failover of " + endpoint(old_primary_port), [this] { return diagnostics(); });
}

void RedisSentinelGroup::failover(std::chrono::milliseconds within) {
  const int old_primary_port = primary_port();
  const std::vector<int> sentinels = answering(sentinels_);
  // Forced: this Sentinel fails over without asking the others for votes.
  Answer answer = Link(sentinels.front(), "").run({"SENTINEL", "FAILOVER", options_.master_name});
  if (!answer.ok()) {
    throw std::runtime_error("redis sentinel: SENTINEL FAILOVER refused: " + answer.error + "\n" +
                             diagnostics());
  }
  wait_for_failover(old_primary_port, within);
}

void RedisSentinelGroup::wait_until_replica(int port, std::chrono::milliseconds within) {
  poll_until(
      [&]() -> std::optional<std::string> {
        Named named{.error = "no Sentinel answers"};
        for (const int sentinel : answering(sentinels_)) {
          Link link(sentinel, "");
          named = named_primary(link, options_.master_name);
          if (named.error.empty()) break;
        }
        if (!named.error.empty()) return named.error;
        if (named.port == port) return "the Sentinels name it the primary";
        const auto role = role_of(Link(port, options_.requirepass).run({"ROLE"}));
        if (!role || role->role != "slave" || role->primary_port != named.port ||
            role->link_state != "connected") {
          return "not yet a connected replica of " + endpoint(named.port);
        }
        // And the Sentinels see it connected: a replica they could promote.
        return disagreement(named.port, port);
      },
      within, endpoint(port) + " did not become a replica", [this] { return diagnostics(); });
}

std::string RedisSentinelGroup::diagnostics() const {
  std::string out;
  auto state = [](const Process& p) -> std::string {
    if (p.pid <= 0) return " (not running)";
    if (p.paused) return " (paused)";
    return "";
  };
  for (const auto& n : data_nodes_) {
    out += "--- data node " + endpoint(n.port) + state(n);
    if (n.pid > 0 && !n.paused) {
      Answer info = Link(n.port, options_.requirepass).run({"INFO", "replication"});
      out += ", its INFO replication:\n" + (info.ok() ? info.text() : info.error + "\n");
    } else {
      out += "\n";
    }
    out += "its log (last lines):\n" + last_lines(read_file(log_path(n)), kLogLinesInDiagnostics);
  }
  for (const auto& s : sentinels_) {
    out += "--- Sentinel " + endpoint(s.port) + state(s);
    if (s.pid > 0 && !s.paused) {
      Link link(s.port, "");
      const std::string& name = options_.master_name;
      Answer master = link.run({"SENTINEL", "MASTER", name});
      if (master.ok()) {
        Fields f = fields_of(master.reply.get());
        out += ", sees the primary " + f["ip"] + ":" + f["port"] + " as " + f["flags"];
        if (!f["failover-state"].empty()) out += " (failover: " + f["failover-state"] + ")";
        out += "\n";
      } else {
        out += ": " + master.error + "\n";
      }
      for (const auto& [what, command] :
           {std::pair{"replicas", "REPLICAS"}, std::pair{"other Sentinels", "SENTINELS"}}) {
        Answer known = link.run({"SENTINEL", command, name});
        out += std::string("its ") + what + ":";
        for (auto& f : field_list(known.reply.get())) {
          out += " " + f["port"] + " (" + f["flags"];
          if (!f["master-link-status"].empty()) out += ", link " + f["master-link-status"];
          out += ")";
        }
        out += "\n";
      }
    } else {
      out += "\n";
    }
    out += "its log (last lines):\n" + last_lines(read_file(log_path(s)), kLogLinesInDiagnostics);
  }
  return out;
}

}  // namespace herdguard::testing
