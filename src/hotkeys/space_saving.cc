#include "hotkeys/space_saving.h"

#include <algorithm>

namespace herdguard::internal {

SpaceSaving::SpaceSaving(std::size_t capacity)
    : capacity_(capacity), counts_(capacity), errors_(capacity), keys_(capacity) {
  slot_of_.reserve(capacity);  // no rehash while counting: the memory is fixed up front
}

void SpaceSaving::add(std::string_view key, std::uint64_t weight) {
  if (auto it = slot_of_.find(key); it != slot_of_.end()) {
    counts_[it->second] += weight;
    return;
  }
  std::size_t slot = used_;
  std::uint64_t inherited = 0;
  if (used_ < capacity_) {
    ++used_;
  } else {
    // Full: the new key takes over the smallest counter. A linear scan of
    // one array: this runs on sampled reads of keys outside the top
    // `capacity`, and a stream-summary list would cost more memory per
    // counter than it saves at these sizes.
    slot = static_cast<std::size_t>(std::min_element(counts_.begin(), counts_.end()) -
                                    counts_.begin());
    inherited = counts_[slot];
    slot_of_.erase(std::string_view(keys_[slot]));
  }
  keys_[slot].assign(key);  // reuses the slot's storage when it fits
  counts_[slot] = inherited + weight;
  errors_[slot] = inherited;
  slot_of_.emplace(std::string_view(keys_[slot]), static_cast<std::uint32_t>(slot));
}

std::uint64_t SpaceSaving::count(std::string_view key) const {
  auto it = slot_of_.find(key);
  return it == slot_of_.end() ? 0 : counts_[it->second];
}

std::uint64_t SpaceSaving::guaranteed(std::string_view key) const {
  auto it = slot_of_.find(key);
  return it == slot_of_.end() ? 0 : counts_[it->second] - errors_[it->second];
}

std::uint64_t SpaceSaving::floor() const {
  if (used_ < capacity_) return 0;
  return *std::min_element(counts_.begin(), counts_.end());
}

void SpaceSaving::clear() {
  // Keeps every array's and key's storage for the next bucket.
  slot_of_.clear();
  std::fill(counts_.begin(), counts_.end(), 0);
  std::fill(errors_.begin(), errors_.end(), 0);
  used_ = 0;
}

std::size_t SpaceSaving::memory_bytes() const {
  std::size_t bytes = capacity_ * (2 * sizeof(std::uint64_t) + sizeof(std::string));
  // One slot per bucket plus a metadata byte each (boost's flat layout).
  bytes += slot_of_.bucket_count() * (sizeof(std::pair<std::string_view, std::uint32_t>) + 1);
  for (const std::string& key : keys_) {
    if (key.capacity() > std::string().capacity()) bytes += key.capacity() + 1;  // past SSO
  }
  return bytes;
}

}  // namespace herdguard::internal
