// The floor under bench/fleet_waiters.sh: how fast raw Redis pub/sub can hand
// a value to waiters in other processes on this machine, with no library in
// the way. Shaped like `herdguard simulate` herd rounds: N processes are
// released at once; process 0 "loads" (sleeps load_ms), SETs the value and
// PUBLISHes; the others have SUBSCRIBEd beforehand, and on the message GET
// the value. Prints p50/p99 of each process's (latency - load_ms) over all
// rounds, like fleet_waiters.sh, so the two lines compare in one run. As
// there, processes exit only after the whole round has measured.
//
// Usage: bench_fanout_anchor <redis unix socket> [processes=8] [rounds=30] [load_ms=50]
//
// Plain fork/pipe/hiredis rather than Google Benchmark: the measure is a
// distribution over processes, which that library does not model.
#include <hiredis/hiredis.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

bool write_exact(int fd, const void* data, std::size_t n) {
  return ::write(fd, data, n) == static_cast<ssize_t>(n);
}

bool read_exact(int fd, void* data, std::size_t n) {
  return ::read(fd, data, n) == static_cast<ssize_t>(n);
}

bool command_ok(redisContext* c, const char* format, const char* arg) {
  auto* reply = static_cast<redisReply*>(redisCommand(c, format, arg));
  const bool ok = reply != nullptr && reply->type != REDIS_REPLY_ERROR;
  if (reply) freeReplyObject(reply);
  return ok;
}

// One process of one round. Writes its (latency - load_ms) in ms, or NaN on
// a Redis failure, to `result_fd`. Never returns.
[[noreturn]] void run_process(const char* socket, int index, int round, int load_ms, int ready_fd,
                              int go_fd, int result_fd, int done_fd) {
  double beyond = std::nan("");
  redisContext* c = redisConnectUnix(socket);
  redisContext* sub = redisConnectUnix(socket);
  const std::string key =
      "fanout-anchor:" + std::to_string(::getppid()) + ":" + std::to_string(round);
  const std::string channel = "fanout-anchor:" + std::to_string(::getppid());
  bool ok = c != nullptr && !c->err && sub != nullptr && !sub->err;
  if (ok && index != 0) ok = command_ok(sub, "SUBSCRIBE %s", channel.c_str());
  (void)write_exact(ready_fd, "r", 1);
  char go;
  (void)::read(go_fd, &go, 1);  // EOF: every process released at once
  const auto start = Clock::now();
  if (ok && index == 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(load_ms));
    ok = command_ok(c, "SET %s value", key.c_str());
    if (ok) {
      auto* reply =
          static_cast<redisReply*>(redisCommand(c, "PUBLISH %s %s", channel.c_str(), key.c_str()));
      ok = reply != nullptr && reply->type == REDIS_REPLY_INTEGER;
      if (reply) freeReplyObject(reply);
    }
  } else if (ok) {
    void* message = nullptr;
    ok = redisGetReply(sub, &message) == REDIS_OK;
    if (message) freeReplyObject(message);
    ok = ok && command_ok(c, "GET %s", key.c_str());
  }
  if (ok) {
    beyond = std::chrono::duration<double, std::milli>(Clock::now() - start).count() - load_ms;
  }
  (void)write_exact(result_fd, &beyond, sizeof beyond);
  // As `herdguard simulate` does: exit only once every process of the round
  // has measured, so no process's teardown competes with a waiter still
  // being woken (in a fleet the processes go on running).
  char done;
  (void)::read(done_fd, &done, 1);  // EOF: all measured
  ::_exit(ok ? 0 : 1);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s <redis unix socket> [processes] [rounds] [load_ms]\n", argv[0]);
    return 2;
  }
  const char* socket = argv[1];
  const int processes = argc > 2 ? std::atoi(argv[2]) : 8;
  const int rounds = argc > 3 ? std::atoi(argv[3]) : 30;
  const int load_ms = argc > 4 ? std::atoi(argv[4]) : 50;
  if (processes < 2 || rounds < 1 || load_ms < 0) {
    std::fprintf(stderr, "processes must be >= 2, rounds >= 1, load_ms >= 0\n");
    return 2;
  }
  std::vector<double> beyond;
  int failures = 0;
  for (int round = 0; round < rounds; ++round) {
    int ready[2], go[2], done[2];
    if (::pipe(ready) != 0 || ::pipe(go) != 0 || ::pipe(done) != 0) return 1;
    std::vector<std::pair<pid_t, int>> children;
    for (int i = 0; i < processes; ++i) {
      int result[2];
      if (::pipe(result) != 0) return 1;
      const pid_t pid = ::fork();
      if (pid < 0) return 1;
      if (pid == 0) {
        ::close(ready[0]);
        ::close(go[1]);
        ::close(result[0]);
        ::close(done[1]);
        for (auto& [earlier, fd] : children) ::close(fd);
        run_process(socket, i, round, load_ms, ready[1], go[0], result[1], done[0]);
      }
      ::close(result[1]);
      children.emplace_back(pid, result[0]);
    }
    ::close(ready[1]);
    ::close(go[0]);
    ::close(done[0]);
    for (int i = 0; i < processes; ++i) {
      char c;
      if (!read_exact(ready[0], &c, 1)) break;
    }
    ::close(go[1]);
    ::close(ready[0]);
    for (auto& [pid, fd] : children) {
      double ms = std::nan("");
      if (read_exact(fd, &ms, sizeof ms) && !std::isnan(ms)) {
        beyond.push_back(ms);
      } else {
        ++failures;
      }
      ::close(fd);
    }
    ::close(done[1]);  // every process has measured: let them exit
    for (auto& [pid, fd] : children) ::waitpid(pid, nullptr, 0);
  }
  if (beyond.empty()) {
    std::fprintf(stderr, "no process reached Redis at %s\n", socket);
    return 1;
  }
  std::sort(beyond.begin(), beyond.end());
  auto quantile = [&](double q) {
    return beyond[std::min(beyond.size() - 1, static_cast<std::size_t>(q * beyond.size()))];
  };
  std::printf("p50 %.2f ms, p99 %.2f ms beyond the load (%zu samples, %d failed)\n", quantile(0.5),
              quantile(0.99), beyond.size(), failures);
  return failures == 0 ? 0 : 1;
}
