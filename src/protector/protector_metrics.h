// Internal: the Protector's Prometheus series. Hot-path series (requests by
// result/layer/pattern, wait and query durations) are counted as they
// happen; the rest are read from Protector::metrics() when scraped.
//
// Label values never come from a raw key: a key's `pattern` is the first
// configured prefix it starts with, else "other", so cardinality is bounded
// by the configuration.
#pragma once

#include <array>
#include <memory>
#include <shared_mutex>
#include <string>
#include <vector>

#include "herdguard/prometheus.h"
#include "herdguard/result.h"

namespace herdguard {
class Protector;
}

namespace herdguard::internal {

enum class Layer { kL1 = 0, kL2 = 1, kLoad = 2 };
enum class Outcome { kOk = 0, kNotFound = 1, kStale = 2, kFallback = 3, kError = 4 };

// What one request went through, filled in along its path.
struct RequestTrace {
  Layer layer = Layer::kLoad;
  Outcome outcome = Outcome::kOk;
};

class ProtectorMetrics {
 public:
  // Registers every series under the label cache=`name`. The scrape-time
  // series read `protector` until detach() is called.
  // Errors: kInvalidArgument from the registry (e.g. the same cache name
  // registered twice).
  static Result<std::unique_ptr<ProtectorMetrics>> create(MetricsRegistry& registry,
                                                          const std::string& name,
                                                          std::vector<std::string> key_patterns,
                                                          Protector* protector);
  // After detach(), scrapes read zeros instead of the protector. Blocks
  // while a scrape is reading it. Idempotent; the destructor calls it.
  void detach();
  ~ProtectorMetrics();

  void record_request(std::string_view key, const RequestTrace& trace) noexcept;
  Histogram& single_flight_wait() noexcept { return *wait_; }
  Histogram& db_query_duration() noexcept { return *db_; }

 private:
  // Shared with the scrape callbacks, which may outlive this object in the
  // registry: they read the protector under the shared lock; detaching takes
  // the exclusive lock and clears it.
  struct Link {
    std::shared_mutex mutex;
    Protector* protector = nullptr;  // guarded by mutex
  };

  ProtectorMetrics() = default;
  std::size_t pattern_of(std::string_view key) const noexcept;

  std::vector<std::string> patterns_;  // prefixes; index patterns_.size() is "other"
  // [pattern][layer][outcome]
  std::vector<std::array<std::array<Counter*, 5>, 3>> requests_;
  Histogram* wait_ = nullptr;
  Histogram* db_ = nullptr;
  std::shared_ptr<Link> link_;
};

}  // namespace herdguard::internal
