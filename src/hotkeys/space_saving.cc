#include "hotkeys/space_saving.h"

#include <algorithm>

namespace herdguard::internal {

SpaceSaving::SpaceSaving(std::size_t capacity) : capacity_(capacity) {
  counters_.reserve(capacity);  // no rehash while counting: the memory is fixed up front
}

void SpaceSaving::add(std::string_view key, std::uint64_t weight) {
  if (auto it = counters_.find(key); it != counters_.end()) {
    it->second += weight;
    return;
  }
  if (counters_.size() < capacity_) {
    counters_.emplace(std::string(key), weight);
    return;
  }
  // Full: the new key takes over the smallest counter. A linear scan: this
  // runs on sampled reads of keys outside the top `capacity`, and a heap or
  // stream-summary list would cost more memory per counter than it saves.
  auto smallest =
      std::min_element(counters_.begin(), counters_.end(),
                       [](const auto& a, const auto& b) { return a.second < b.second; });
  const std::uint64_t inherited = smallest->second;
  counters_.erase(smallest);
  counters_.emplace(std::string(key), inherited + weight);
}

std::uint64_t SpaceSaving::count(std::string_view key) const {
  auto it = counters_.find(key);
  return it == counters_.end() ? 0 : it->second;
}

std::uint64_t SpaceSaving::floor() const {
  if (counters_.size() < capacity_) return 0;
  std::uint64_t smallest = UINT64_MAX;
  for (const auto& [key, count] : counters_) smallest = std::min(smallest, count);
  return smallest;
}

void SpaceSaving::clear() { counters_.clear(); }  // keeps the table's capacity

std::size_t SpaceSaving::memory_bytes() const {
  // One slot per bucket plus a metadata byte each (boost's flat layout).
  std::size_t bytes =
      counters_.bucket_count() * (sizeof(std::pair<std::string, std::uint64_t>) + 1);
  for (const auto& [key, count] : counters_) {
    if (key.capacity() > std::string().capacity()) bytes += key.capacity() + 1;  // past SSO
  }
  return bytes;
}

}  // namespace herdguard::internal
