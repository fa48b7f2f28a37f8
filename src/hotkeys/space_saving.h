// Internal: the Space-Saving heavy-hitters sketch (Metwally, Agrawal, El
// Abbadi, "Efficient Computation of Frequent and Top-k Elements in Data
// Streams", ICDT 2005): `capacity` counters; a key not counted yet, when
// all are taken, replaces the smallest one and inherits its count. So a
// key's count is never under its true count, and over it by at most what it
// inherited (its `error`): count − error is a guaranteed lower bound.
// Hand-written: no Debian library has a heavy-hitters sketch, and the
// algorithm is a dozen lines.
//
// Layout: the counts in one contiguous array (the replacement's scan for
// the smallest is a tight loop over it), keys and errors beside them, and a
// flat map from key to slot. A replaced slot reuses its key string's
// storage: after warm-up, counting allocates nothing for keys up to the
// longest seen.
//
// Thread safety: none (HotKeyDetector serializes access).
#pragma once

#include <boost/unordered/unordered_flat_map.hpp>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace herdguard::internal {

class SpaceSaving {
 public:
  // REQUIRES: capacity >= 1.
  explicit SpaceSaving(std::size_t capacity);
  SpaceSaving(SpaceSaving&&) = default;

  void add(std::string_view key, std::uint64_t weight);
  // The key's estimated count (an upper bound); 0 when it has no counter.
  std::uint64_t count(std::string_view key) const;
  // What the key was surely read (count − error); 0 when it has no counter.
  std::uint64_t guaranteed(std::string_view key) const;
  // An upper bound on the count of a key that has no counter: the smallest
  // counter when all are taken, else 0.
  std::uint64_t floor() const;
  void clear();
  // Calls f(key, count, error) for every counter: the key was read at
  // least count − error and at most count times.
  template <typename F>
  void for_each(F&& f) const {
    for (std::size_t i = 0; i < used_; ++i) f(std::string_view(keys_[i]), counts_[i], errors_[i]);
  }
  // Bytes held: the arrays, the map's slots and the keys' heap storage.
  std::size_t memory_bytes() const;

 private:
  const std::size_t capacity_;
  std::size_t used_ = 0;               // slots [0, used_) hold keys
  std::vector<std::uint64_t> counts_;  // per slot
  std::vector<std::uint64_t> errors_;  // per slot: inherited on replacement
  std::vector<std::string> keys_;      // per slot; the map's keys view these
  boost::unordered_flat_map<std::string_view, std::uint32_t> slot_of_;
};

}  // namespace herdguard::internal
