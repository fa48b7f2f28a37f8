// What the test fixtures that run a real server (redis_server.h,
// memcached_server.h, postgres_server.h) share: starting it as a child that
// dies with the test process, waiting until it answers, and stopping it.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <chrono>
#include <functional>
#include <string>
#include <vector>

namespace herdguard::testing {

// Forks and execs `args` (args[0] looked up on PATH). In the child,
// `before_exec` runs first (e.g. dropping privileges), then the child is set
// to get SIGKILL when the test process dies (PR_SET_PDEATHSIG: no server
// outlives its test, also when the test crashes). Throws std::runtime_error
// when fork fails.
pid_t spawn_child(std::vector<std::string> args, const std::function<void()>& before_exec = {});

// Polls `answers` every `poll` until it is true. When the child exits first,
// or `within` passes (then the child is killed), throws std::runtime_error
// naming `name` with `diagnostics()` (e.g. the server's log); `pid` is -1 then.
void wait_until_answering(pid_t& pid, const std::function<bool()>& answers, const std::string& name,
                          std::chrono::milliseconds within, std::chrono::milliseconds poll,
                          const std::function<std::string()>& diagnostics);

// Sends `signal` and reaps the child; `pid` becomes -1. Nothing when pid <= 0.
void stop_child(pid_t& pid, int signal = SIGKILL);

// SIGSTOP, returning once the child has stopped (the signal is delivered
// asynchronously: a request sent right after kill() may still be answered),
// and SIGCONT: a server that keeps its connections and stops answering, as
// a hung one does. Nothing when pid <= 0.
void pause_child(pid_t pid);
void resume_child(pid_t pid);

}  // namespace herdguard::testing
