// Internal: the adaptive TTL's memory of each key's last value (as a hash)
// and TTL (include/herdguard/adaptive_ttl.h), bounded to max_keys keys in
// two generations.
//
// Thread safety: safe from any number of threads (one mutex, taken once per
// database load).
#pragma once

#include <boost/unordered/unordered_flat_map.hpp>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>

#include "core/string_hash.h"
#include "herdguard/adaptive_ttl.h"

namespace herdguard::internal {

class AdaptiveTtl {
 public:
  // REQUIRES: options.validate().
  AdaptiveTtl(AdaptiveTtlOptions options, Duration initial);

  struct Choice {
    Duration ttl{};
    // Compared with the key's previous load: +1 longer, -1 shorter, 0 the
    // same or first seen.
    int direction = 0;
  };
  // The TTL for `value`, just loaded for `key`, and remembers both.
  Choice choose(std::string_view key, std::string_view value);

 private:
  struct Memory {
    std::uint64_t value_hash = 0;
    Duration ttl{};
  };
  using Table = boost::unordered_flat_map<std::string, Memory, StringHash, StringEqual>;

  const AdaptiveTtlOptions options_;
  const Duration initial_;  // ProtectorOptions::ttl, clamped into [min, max]
  std::mutex mutex_;
  Table newer_;  // guarded by mutex_; at most max_keys / 2
  Table older_;  // guarded by mutex_; the generation before
};

}  // namespace herdguard::internal
