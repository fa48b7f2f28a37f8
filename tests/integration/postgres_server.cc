#include "postgres_server.h"

#include <glob.h>
#include <grp.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <pqxx/pqxx>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <vector>

#include "child_server.h"
#include "loopback_port.h"

namespace herdguard::testing {
namespace {

// The newest installed PostgreSQL's bin folder (Debian: /usr/lib/postgresql/<v>/bin).
std::string postgres_bin() {
  glob_t g{};
  std::string found;
  if (::glob("/usr/lib/postgresql/*/bin/postgres", 0, nullptr, &g) == 0 && g.gl_pathc > 0) {
    found = std::filesystem::path(g.gl_pathv[g.gl_pathc - 1]).parent_path().string();
  }
  ::globfree(&g);
  if (found.empty())
    throw std::runtime_error("PostgreSQL server programs not found (scripts/bootstrap)");
  return found;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

}  // namespace

std::unique_ptr<PostgresServer> PostgresServer::start() {
  std::unique_ptr<PostgresServer> server(new PostgresServer());
  server->run_as_postgres({server->bin_ + "/initdb", "-D", server->dir_ + "/data", "-A", "trust",
                           "-U", "postgres", "--no-sync"},
                          /*wait=*/true);
  server->launch();
  pqxx::connection admin("host=" + server->dir_ + " port=" + std::to_string(server->port_) +
                         " user=postgres dbname=postgres");
  pqxx::nontransaction(admin).exec0("CREATE DATABASE herdguard");
  return server;
}

PostgresServer::PostgresServer() : bin_(postgres_bin()), port_(free_loopback_port()) {
  std::string pattern = (std::filesystem::temp_directory_path() / "herdguard-pg-XXXXXX").string();
  if (::mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  dir_ = pattern;
  if (::geteuid() == 0) {
    // The cluster runs as `postgres`: it must own the folder.
    const passwd* pw = ::getpwnam("postgres");
    if (pw == nullptr) throw std::runtime_error("no 'postgres' user (install postgresql)");
    if (::chown(dir_.c_str(), pw->pw_uid, pw->pw_gid) != 0)
      throw std::runtime_error("chown failed");
  }
}

PostgresServer::~PostgresServer() {
  stop();
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

std::string PostgresServer::url() const {
  return "postgresql://postgres@127.0.0.1:" + std::to_string(port_) + "/herdguard";
}

std::string PostgresServer::socket_url() const {
  std::string encoded;
  for (char c : dir_) encoded += c == '/' ? std::string("%2F") : std::string(1, c);
  return "postgresql://postgres@" + encoded + ":" + std::to_string(port_) + "/herdguard";
}

void PostgresServer::exec(const std::string& sql) const {
  pqxx::connection c(url());
  pqxx::nontransaction(c).exec0(sql);
}

// Forks; the child drops to the postgres user when we are root, dies with
// us (PR_SET_PDEATHSIG, set after the credential change that would clear
// it), and execs argv. With `wait`, waits and throws on a failure.
void PostgresServer::run_as_postgres(const std::vector<std::string>& argv, bool wait) {
  const std::string log = dir_ + "/server.log";
  const pid_t pid = spawn_child(argv, [&log] {
    if (::geteuid() == 0) {
      const passwd* pw = ::getpwnam("postgres");
      if (pw == nullptr || ::setgid(pw->pw_gid) != 0 || ::initgroups("postgres", pw->pw_gid) != 0 ||
          ::setuid(pw->pw_uid) != 0) {
        ::_exit(126);
      }
    }
    FILE* out = std::freopen(log.c_str(), "a", stdout);
    FILE* err = std::freopen(log.c_str(), "a", stderr);
    (void)out;
    (void)err;
  });
  if (!wait) {
    pid_ = pid;
    return;
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    throw std::runtime_error(argv[0] + " failed: " + read_file(log));
  }
}

void PostgresServer::launch() {
  run_as_postgres(
      {bin_ + "/postgres", "-D", dir_ + "/data", "-k", dir_, "-p", std::to_string(port_), "-c",
       "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=200"},
      /*wait=*/false);
  const std::string conninfo =
      "host=127.0.0.1 port=" + std::to_string(port_) + " user=postgres dbname=postgres";
  wait_until_answering(
      pid_, [&] { return PQping(conninfo.c_str()) == PQPING_OK; }, "postgres",
      std::chrono::seconds(30), std::chrono::milliseconds(20),
      [this] { return read_file(dir_ + "/server.log"); });
}

void PostgresServer::stop() {
  stop_child(pid_, SIGQUIT);  // immediate shutdown
}

void PostgresServer::start_again() {
  if (pid_ > 0) return;
  launch();
}

}  // namespace herdguard::testing
