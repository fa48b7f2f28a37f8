// Tag versions (protector/tag_versions.h).
#include "protector/tag_versions.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <mutex>

#include "herdguard/envelope.h"

namespace herdguard::internal {

Result<void> validate_tag(std::string_view tag) {
  if (tag.empty()) return make_error(ErrorKind::kInvalidArgument, "tag is empty");
  if (tag.size() > kMaxTagBytes) {
    return make_error(ErrorKind::kInvalidArgument,
                      fmt::format("tag is {} bytes, over {}", tag.size(), kMaxTagBytes));
  }
  return ok();
}

Result<void> validate_tags(std::span<const std::string> tags) {
  if (tags.size() > kMaxEntryTags) {
    return make_error(ErrorKind::kInvalidArgument,
                      fmt::format("{} tags, over {} per entry", tags.size(), kMaxEntryTags));
  }
  for (const std::string& tag : tags) {
    if (auto valid = validate_tag(tag); !valid) return valid;
  }
  return ok();
}

bool TagVersions::valid(const CacheEntry& entry) const {
  bool stands = entry.tag_stamp >= clear_version_.load(std::memory_order_acquire);
  if (stands && !entry.tags.empty()) {
    std::shared_lock lock(mutex_);
    for (const std::string& tag : entry.tags) {
      auto it = versions_.find(tag);
      if (it != versions_.end() && it->second > entry.tag_stamp) {
        stands = false;
        break;
      }
    }
  }
  return stands;
}

bool TagVersions::raise_locked(std::string_view tag, std::uint64_t version) {
  std::uint64_t prev = known_max_.load(std::memory_order_relaxed);
  while (prev < version &&
         !known_max_.compare_exchange_weak(prev, version, std::memory_order_acq_rel)) {
  }
  if (tag.empty()) {
    if (clear_version_.load(std::memory_order_relaxed) >= version) return false;
    clear_version_.store(version, std::memory_order_release);
    return true;
  }
  auto [it, inserted] = versions_.try_emplace(std::string(tag), version);
  if (inserted) return true;
  if (it->second >= version) return false;
  it->second = version;
  return true;
}

namespace {
// Versions are a clock in µs: one far in the future is not herdguard's (a
// forged backplane message, another program's bytes in Redis) and, once
// known, would make every later stamp stand against every real version.
constexpr std::int64_t kFutureSlackUs = 3'600'000'000;  // 1 h of clock skew
std::int64_t host_now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}
bool plausible(std::uint64_t version, std::int64_t now_us) {
  return version > 0 && version <= static_cast<std::uint64_t>(now_us + kFutureSlackUs);
}
}  // namespace

bool TagVersions::learn(std::string_view tag, std::uint64_t version, bool trusted) {
  if (version == 0 || (!trusted && !plausible(version, host_now_us()))) return false;
  bool raised;
  {
    std::unique_lock lock(mutex_);
    raised = raise_locked(tag, version);
    if (versions_.size() >= 2 * std::max<std::size_t>(size_at_last_forget_, 1024)) {
      // By the highest version known, not this host's clock: versions are
      // Redis's clock, and the highest known is at most Redis's now.
      forget_older_locked(static_cast<std::int64_t>(known_max_.load(std::memory_order_relaxed)));
    }
  }
  if (raised) bump_epoch();
  return true;
}

bool TagVersions::learn_synced(std::span<const std::pair<std::string, std::uint64_t>> changes,
                               std::uint64_t through, bool complete, std::int64_t now_us) {
  bool raised = false;
  {
    std::unique_lock lock(mutex_);
    std::uint64_t highest = 0;
    for (const auto& [tag, version] : changes) {
      if (!plausible(version, now_us)) {
        complete = true;  // in version order: every later one is implausible too
        break;
      }
      raised = raise_locked(tag, version) || raised;
      highest = std::max(highest, version);
    }
    if (!plausible(through, now_us)) through = highest;
    // Incomplete: everything up to the highest version received is known
    // (the changes come in version order), nothing beyond.
    const std::uint64_t known = complete ? std::max(through, highest) : highest;
    if (known > synced_.load(std::memory_order_relaxed))
      synced_.store(known, std::memory_order_release);
    std::uint64_t prev = known_max_.load(std::memory_order_relaxed);
    while (prev < known &&
           !known_max_.compare_exchange_weak(prev, known, std::memory_order_acq_rel)) {
    }
    forget_older_locked(now_us);
  }
  if (raised) bump_epoch();
  return complete;
}

void TagVersions::forget_older_locked(std::int64_t now_us) {
  // Forgetting never makes an entry stand that was refused: every entry
  // stamped below `horizon` expired (keep is its longest life), and the
  // versions only ever compare with stamps.
  const std::int64_t horizon = now_us > keep_us_ ? now_us - keep_us_ : 0;
  if (horizon > 0) {
    const auto below = static_cast<std::uint64_t>(horizon);
    boost::unordered::erase_if(versions_, [below](const auto& kv) { return kv.second < below; });
  }
  size_at_last_forget_ = versions_.size();
}

std::uint64_t TagVersions::next_local_version() {
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  const auto now_us = static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(now).count());
  std::unique_lock lock(mutex_);  // one version per call, in order
  return std::max(known_max_.load(std::memory_order_relaxed) + 1, now_us);
}

std::size_t TagVersions::size() const {
  std::shared_lock lock(mutex_);
  return versions_.size();
}

}  // namespace herdguard::internal
