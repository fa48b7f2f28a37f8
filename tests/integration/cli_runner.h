// Runs a command (or the built `herdguard` CLI) and captures its exit code
// and combined output, for tests that check whole programs.
#pragma once

#include <stdio.h>
#include <sys/wait.h>

#include <array>
#include <string>

namespace herdguard::testing {

struct CliRun {
  int exit_code = -1;
  std::string output;  // stdout and stderr
};

inline CliRun run_command(const std::string& command) {
  CliRun r;
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return r;
  std::array<char, 4096> buffer;
  while (size_t n = fread(buffer.data(), 1, buffer.size(), pipe)) r.output.append(buffer.data(), n);
  const int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

#ifdef HERDGUARD_CLI_PATH
// `herdguard <args>`.
inline CliRun run_cli(const std::string& args) {
  return run_command(std::string(HERDGUARD_CLI_PATH) + " " + args);
}
#endif

}  // namespace herdguard::testing
