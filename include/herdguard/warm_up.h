// herdguard/warm_up.h — loading a known list of keys when a process starts,
// so its first callers find them cached instead of all missing at once (the
// cold start is a herd of its own).
//
// The Protector (ProtectorOptions::warm_up) calls `keys` once on its own
// warm-up thread, then get()s each key — one single-flight load per key,
// behind the fleet lock when there is one, so a fleet starting together
// loads each key once — at most `keys_per_second` a second, so the warm-up
// never crowds out live traffic. Destroying the Protector stops it at the
// next key. Counted in ProtectionMetrics::warmed_keys / warm_up_failures.
//
// Example:
//   options.warm_up = {.keys = [] { return *herdguard::read_warm_up_file("hot-keys.txt"); },
//                      .keys_per_second = 200};
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "herdguard/result.h"

namespace herdguard {

struct WarmUpOptions {
  // The keys to load at start; empty function: no warm-up. Called once, on
  // the warm-up thread; an exception it throws counts as one failure.
  std::function<std::vector<std::string>()> keys{};
  // At most this many keys loaded per second. REQUIRES: in [0.001, 1e9].
  double keys_per_second = 100;

  // Returns kInvalidArgument naming the first bad field.
  Result<void> validate() const;
};

// The keys of a warm-up file: one per line; surrounding spaces and tabs are
// trimmed, blank lines and lines starting with '#' skipped. Errors:
// kBackend naming the file when it cannot be read; kInvalidArgument naming
// the line of a key longer than `max_key_bytes`.
Result<std::vector<std::string>> read_warm_up_file(const std::string& path,
                                                   std::size_t max_key_bytes = 1024);

}  // namespace herdguard
