// Internal: the Space-Saving heavy-hitters sketch (Metwally, Agrawal, El
// Abbadi, "Efficient Computation of Frequent and Top-k Elements in Data
// Streams", ICDT 2005): `capacity` counters; a key not counted yet, when
// all are taken, replaces the smallest one and inherits its count. So a
// key's count is never under its true count, and over it by at most the
// smallest counter. Hand-written: no Debian library has a heavy-hitters
// sketch, and the algorithm is a dozen lines.
//
// Thread safety: none (HotKeyDetector serializes access).
#pragma once

#include <boost/unordered/unordered_flat_map.hpp>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/string_hash.h"

namespace herdguard::internal {

class SpaceSaving {
 public:
  // REQUIRES: capacity >= 1.
  explicit SpaceSaving(std::size_t capacity);

  void add(std::string_view key, std::uint64_t weight);
  // The key's estimated count; 0 when it has no counter.
  std::uint64_t count(std::string_view key) const;
  // An upper bound on the count of a key that has no counter: the smallest
  // counter when all are taken, else 0.
  std::uint64_t floor() const;
  void clear();
  // Calls f(key, count) for every counter.
  template <typename F>
  void for_each(F&& f) const {
    for (const auto& [key, count] : counters_) f(std::string_view(key), count);
  }
  // Bytes held: the table's slots and the keys' heap storage.
  std::size_t memory_bytes() const;

 private:
  const std::size_t capacity_;
  boost::unordered_flat_map<std::string, std::uint64_t, StringHash, StringEqual> counters_;
};

}  // namespace herdguard::internal
