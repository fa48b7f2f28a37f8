// What the fleet's database loads and Redis errors say about a run, once
// every worker's log is merged: loads that repeated another load of the
// same key within one expiry ("duplicates"), and the window in which Redis
// failed (a failover, a node killed).
//
// Example:
//   auto dup = count_duplicate_loads(loads, /*min_gap_s=*/ttl_s / 2, seconds);
//   auto window = redis_error_window(redis_errors_by_second);
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace herdguard::cli {

struct LoadEvent {
  std::string key;
  double t_s = 0;  // when the load began, seconds since the run's start
  // A refresh ahead of expiry (hot keys, early refresh): the version of the
  // still-fresh value it replaced; 0 for any other load (a miss, an expiry).
  std::uint64_t refreshed_version = 0;
};

struct DuplicateLoads {
  std::uint64_t total = 0;
  std::vector<std::uint64_t> by_second;  // by the second the duplicate began in
  // Each duplicate: when the load it repeated began, and when it began.
  std::vector<std::pair<double, double>> pairs;
};

// A load is a duplicate when it began less than `min_gap_s` after the
// previous load of the same key began (in any process): with a TTL T and no
// writes, one expiry's loads are T apart, so `min_gap_s` = T/2 counts every
// extra load of an expiry. Except a refresh ahead of expiry that replaced a
// newer value than the previous load did (refreshed_version above the
// previous load's): it refreshes what that load produced — a hot key is
// refreshed up to 0.4 T before it expires, and with a TTL jittered short
// that can come less than T/2 after its load — while a second refresh of
// the same value is still a duplicate. `seconds` sizes by_second (later
// loads count in the last second). Pure.
DuplicateLoads count_duplicate_loads(std::vector<LoadEvent> loads, double min_gap_s,
                                     std::size_t seconds);

// [from, to) in timeline seconds: from the first second with a Redis error
// to the first later second without one (to = the run's length when none).
struct SecondsWindow {
  int from = 0;
  int to = 0;
};
std::optional<SecondsWindow> redis_error_window(const std::vector<std::uint64_t>& errors_by_second);

// The duplicates of which neither load began inside `window`: a load made
// without the fleet lock while Redis failed is repeated once Redis answers
// again, and that repeat belongs to the failure, not to the time after it.
std::uint64_t duplicates_outside(const DuplicateLoads& duplicates,
                                 const std::optional<SecondsWindow>& window);

}  // namespace herdguard::cli
