// A repository wrapper that plays the database faults of a scenario's
// timeline: `db-slow` adds latency, `db-down` makes each load fail the way a
// dead database does — a real connection attempt that the kernel refuses
// (to a unix socket that is bound but not listening) — rather than skipping
// the call.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "herdguard/repository.h"
#include "scenario.h"

namespace herdguard::cli {

class FaultyRepository final : public Repository {
 public:
  // `refusing_socket`: a path bound by the parent but never listened on.
  FaultyRepository(std::shared_ptr<Repository> inner, std::vector<Fault> faults,
                   std::string refusing_socket);

  // The timeline starts now (called when the workers are released).
  void start();
  Result<std::optional<std::string>> load(std::string_view key, Deadline deadline) override;
  // load(), logged as a refresh ahead of expiry when `previous` is still
  // fresh (see LoadRecord).
  Result<LoadedEntry> reload_entry(std::string_view key, Deadline deadline,
                                   const PreviousValue& previous) override;
  // A batch is one query: the faults hit it once.
  std::vector<Result<std::optional<std::string>>> load_many(std::span<const std::string> keys,
                                                            Deadline deadline) override;
  bool loads_in_batches() const noexcept override { return inner_->loads_in_batches(); }
  // Keys loaded at the database or its dead endpoint (a batch counts each
  // of its keys), and batch calls.
  std::uint64_t calls() const noexcept { return calls_.load(std::memory_order_relaxed); }
  std::uint64_t batches() const noexcept { return batches_.load(std::memory_order_relaxed); }
  // A load: its key, when it began (steady clock, which all processes of
  // the machine share), and, for a refresh ahead of expiry (it replaced a
  // value still fresh), that value's version (else 0).
  struct LoadRecord {
    std::string key;
    std::chrono::steady_clock::time_point at;
    std::uint64_t refreshed_version = 0;
  };
  // Every load so far, for the fleet-wide duplicate count (load_overlap.h).
  // Thread-safe.
  std::vector<LoadRecord> load_log() const;

 private:
  double elapsed_s() const;
  Result<void> refused_connection() const;
  // db-down: a refused connection; db-slow: the extra time (kTimeout if it
  // passes the deadline); nothing outside the faults' windows.
  Result<void> play_faults(Deadline deadline) const;

  const std::shared_ptr<Repository> inner_;
  const std::vector<Fault> faults_;
  const std::string refusing_socket_;
  std::atomic<std::chrono::steady_clock::rep> start_{0};
  std::atomic<std::uint64_t> calls_{0};
  std::atomic<std::uint64_t> batches_{0};
  Result<std::optional<std::string>> logged_load(std::string_view key, Deadline deadline,
                                                 std::uint64_t refreshed_version);
  void log_load(std::string_view key, std::uint64_t refreshed_version);
  mutable std::mutex log_mutex_;
  std::vector<LoadRecord> log_;  // guarded by log_mutex_
};

}  // namespace herdguard::cli
