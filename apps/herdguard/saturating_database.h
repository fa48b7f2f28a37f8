// `herdguard simulate --db-capacity N`: a model of a database server that
// saturates. A real server runs N queries at full speed (its cores, its
// disks); past that it shares them, and every query slows down. Here a query
// that starts with k queries in flight across all worker processes (itself
// included) takes db_latency × k / N when k > N, else db_latency: the
// server's throughput stays N queries per db_latency however many it is
// given (processor sharing), and each query's latency grows with the crowd.
//
// Hand-written because it is a model for the simulator, not a herdguard
// feature: it stands in for the server that the library's concurrency limiter
// (concurrency_limiter.h) protects, so that the limiter can be watched at
// work. No library models a saturating server.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "herdguard/repository.h"
#include "herdguard/result.h"

namespace herdguard::cli {

// The server's load: queries in flight across all worker processes, and the
// most seen at once. Two atomics in a MAP_SHARED mapping of a small file that
// the parent creates before it forks the workers; each worker inherits the
// mapping, so every process counts on the same atomics.
//
// Thread safety: enter() and leave() from any thread of any process.
class SharedDbLoad {
 public:
  // Creates `path` (which must not exist) and maps it, counters at zero.
  // Errors: kBackend naming the file and the failing call.
  static Result<std::shared_ptr<SharedDbLoad>> create(const std::string& path);
  ~SharedDbLoad();
  SharedDbLoad(const SharedDbLoad&) = delete;
  SharedDbLoad& operator=(const SharedDbLoad&) = delete;

  // A query starts: returns the queries now in flight, itself included, and
  // raises the peak to that if higher.
  std::int64_t enter() noexcept;
  // A query that entered has ended.
  void leave() noexcept;
  // The most queries in flight at once so far.
  std::int64_t peak() const noexcept;

 private:
  struct Counters;
  explicit SharedDbLoad(Counters* counters) : counters_(counters) {}
  Counters* counters_;  // in the shared mapping; unmapped by the destructor
};

// A repository wrapper playing the saturating server in front of `inner`
// (opened without latency of its own). A load first takes one of this
// worker's `connections` (the client's pool: a query waiting for a
// connection is not at the server yet), then counts itself in `load`, sleeps
// its latency, and reads `inner`. A query whose latency would run past its
// deadline holds its share of the server until the deadline and fails with
// kTimeout, as a statement timeout would end it.
class SaturatingDatabase final : public Repository {
 public:
  // REQUIRES: inner and load non-null, capacity >= 1, connections >= 1.
  SaturatingDatabase(std::shared_ptr<Repository> inner, std::shared_ptr<SharedDbLoad> load,
                     int capacity, std::chrono::milliseconds latency, int connections);

  // Errors: kTimeout (no connection free, or the query's latency, before the
  // deadline), and those of `inner`.
  Result<std::optional<std::string>> load(std::string_view key, Deadline deadline) override;

 private:
  const std::shared_ptr<Repository> inner_;
  const std::shared_ptr<SharedDbLoad> load_;
  const std::int64_t capacity_;
  const std::chrono::nanoseconds latency_;
  const int connections_;
  std::mutex mutex_;
  std::condition_variable connection_freed_;
  int free_connections_;  // guarded by mutex_; waiters wait for it > 0
};

}  // namespace herdguard::cli
