#include "child_server.h"

#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <stdexcept>
#include <thread>

namespace herdguard::testing {

pid_t spawn_child(std::vector<std::string> args, const std::function<void()>& before_exec) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    if (before_exec) before_exec();
    // After before_exec: a credential change clears the death signal.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(125);  // the parent died before the prctl
    ::execvp(argv[0], argv.data());
    ::_exit(127);
  }
  return pid;
}

void wait_until_answering(pid_t& pid, const std::function<bool()>& answers, const std::string& name,
                          std::chrono::milliseconds within, std::chrono::milliseconds poll,
                          const std::function<std::string()>& diagnostics) {
  const auto give_up = std::chrono::steady_clock::now() + within;
  while (!answers()) {
    int status = 0;
    if (::waitpid(pid, &status, WNOHANG) == pid) {
      pid = -1;
      throw std::runtime_error(name + " exited at start: " + diagnostics());
    }
    if (std::chrono::steady_clock::now() > give_up) {
      stop_child(pid);
      throw std::runtime_error(name + " did not answer in time: " + diagnostics());
    }
    // Polling a starting server: there is no readiness notification to wait on.
    std::this_thread::sleep_for(poll);
  }
}

void stop_child(pid_t& pid, int signal) {
  if (pid <= 0) return;
  ::kill(pid, signal);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  pid = -1;
}

void pause_child(pid_t pid) {
  if (pid <= 0) return;
  ::kill(pid, SIGSTOP);
  int status = 0;
  while (::waitpid(pid, &status, WUNTRACED) < 0 && errno == EINTR) {
  }
}

void resume_child(pid_t pid) {
  if (pid > 0) ::kill(pid, SIGCONT);
}

}  // namespace herdguard::testing
