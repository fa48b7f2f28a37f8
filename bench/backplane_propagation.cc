// How fast the L1 backplane makes every other process forget a key
// (ProtectorOptions::l1_backplane): N listening processes each hold the key
// in L1 (trusted for an hour: l1_max_ttl), the parent calls invalidate(),
// and each process notes when its Protector dropped the key. Prints p50/p99
// and max of (drop time − the start of the invalidate() call) over all
// processes and rounds, and how many drops were missed.
//
// The drop time is taken by a second backplane listener registered after
// the Protector's own: listeners are called in registration order on the
// notifier's thread, so it runs right after the Protector's erase, and it
// checks that L1 no longer has the key. steady_clock is CLOCK_MONOTONIC,
// one clock for every process of the machine.
//
// Usage: bench_backplane <redis url> [processes=8] [rounds=200]
//
// Plain fork/pipe rather than Google Benchmark: the measure is a
// distribution over processes, which that library does not model.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

#include "herdguard/herdguard.h"

namespace {

using namespace std::chrono_literals;
using herdguard::Deadline;

constexpr std::int64_t kMissed = -1;

bool write_exact(int fd, const void* data, std::size_t n) {
  return ::write(fd, data, n) == static_cast<ssize_t>(n);
}

bool read_exact(int fd, void* data, std::size_t n) {
  return ::read(fd, data, n) == static_cast<ssize_t>(n);
}

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

struct Process {
  herdguard::RedisFleet fleet;
  std::unique_ptr<herdguard::Protector> protector;
};

std::optional<Process> make_process(const std::string& url) {
  auto fleet = herdguard::RedisFleet::connect({.redis = {.url = url}, .prefix = "bench-bp:"});
  if (!fleet) {
    std::fprintf(stderr, "%s\n", fleet.error().to_string().c_str());
    return std::nullopt;
  }
  herdguard::ProtectorOptions options{.ttl = 1h, .ttl_jitter = 0};
  options.l1_max_ttl = 1h;  // only the backplane can make a process forget
  fleet->apply_to(options);
  if (!fleet->notifier->wait_subscribed(Deadline::after(10s))) return std::nullopt;
  auto protector = herdguard::Protector::create(
      std::move(options),
      std::make_shared<herdguard::CallbackRepository>([](std::string_view key, Deadline) {
        return herdguard::Result<std::optional<std::string>>(std::string(key) + "-value");
      }));
  if (!protector) return std::nullopt;
  return Process{std::move(*fleet), std::move(*protector)};
}

// A listening process: for each round, gets the key (into L1), says ready,
// and reports when its Protector dropped it. Never returns.
[[noreturn]] void listen_rounds(const std::string& url, int rounds, int ready_fd, int result_fd) {
  std::optional<Process> p = make_process(url);
  if (!p) std::_Exit(2);
  std::mutex mutex;
  std::condition_variable dropped;
  std::int64_t dropped_at = 0;  // guarded by mutex; 0: not yet
  std::string watched;          // guarded by mutex
  auto timer = p->fleet.notifier->listen({.invalidated = [&](std::uint64_t, std::string_view key) {
    const std::int64_t at = now_ns();
    std::lock_guard lock(mutex);
    if (key != watched) return;
    // Registered after the Protector's listener, so called after it.
    dropped_at = p->protector->peek(key).has_value() ? kMissed : at;
    dropped.notify_one();
  }});
  for (int round = 0; round < rounds; ++round) {
    const std::string key = "key-" + std::to_string(round);
    {
      std::lock_guard lock(mutex);
      watched = key;
      dropped_at = 0;
    }
    if (!p->protector->get(key) || !p->protector->peek(key)) std::_Exit(3);
    (void)write_exact(ready_fd, "r", 1);
    std::unique_lock lock(mutex);
    const bool heard = dropped.wait_for(lock, 5s, [&] { return dropped_at != 0; });
    const std::int64_t at = heard ? dropped_at : kMissed;
    lock.unlock();
    (void)write_exact(result_fd, &at, sizeof at);
  }
  timer.reset();
  std::_Exit(0);
}

double percentile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  return v[static_cast<std::size_t>(q * static_cast<double>(v.size() - 1))];
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s <redis url> [processes=8] [rounds=200]\n", argv[0]);
    return 2;
  }
  const std::string url = argv[1];
  const int processes = argc > 2 ? std::atoi(argv[2]) : 8;
  const int rounds = argc > 3 ? std::atoi(argv[3]) : 200;
  if (processes < 1 || rounds < 1) return 2;
  int ready[2], results[2];
  if (::pipe(ready) != 0 || ::pipe(results) != 0) return 1;
  std::vector<pid_t> children;
  // Forked before this process starts any thread.
  for (int i = 0; i < processes; ++i) {
    const pid_t pid = ::fork();
    if (pid == 0) listen_rounds(url, rounds, ready[1], results[1]);
    children.push_back(pid);
  }
  std::optional<Process> invalidator = make_process(url);
  if (!invalidator) return 1;
  std::vector<double> micros;
  int missed = 0;
  for (int round = 0; round < rounds; ++round) {
    for (int i = 0; i < processes; ++i) {
      char r;
      if (!read_exact(ready[0], &r, 1)) return 1;
    }
    const std::string key = "key-" + std::to_string(round);
    const std::int64_t start = now_ns();
    if (!invalidator->protector->invalidate(key)) return 1;
    for (int i = 0; i < processes; ++i) {
      std::int64_t at = 0;
      if (!read_exact(results[0], &at, sizeof at)) return 1;
      if (at == kMissed) {
        ++missed;
      } else {
        micros.push_back(static_cast<double>(at - start) / 1e3);
      }
    }
  }
  int failed = 0;
  for (pid_t pid : children) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) ++failed;
  }
  if (micros.empty()) return 1;
  std::printf(
      "backplane: %d processes x %d rounds: drop after invalidate() p50 %.0f us, p99 %.0f us, "
      "max %.0f us; missed %d; failed processes %d\n",
      processes, rounds, percentile(micros, 0.5), percentile(micros, 0.99),
      *std::max_element(micros.begin(), micros.end()), missed, failed);
  return missed == 0 && failed == 0 ? 0 : 1;
}
