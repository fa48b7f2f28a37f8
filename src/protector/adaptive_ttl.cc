#include "protector/adaptive_ttl.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <functional>

namespace herdguard {

Result<void> AdaptiveTtlOptions::validate() const {
  auto bad = [](std::string what) {
    return make_error(ErrorKind::kInvalidArgument, fmt::format("adaptive_ttl: {}", what));
  };
  if (min <= Duration::zero()) return bad("min must be > 0");
  if (max < min) return bad("max must be >= min");
  if (!(grow >= 1) || !std::isfinite(grow))
    return bad(fmt::format("grow must be >= 1 and finite, got {}", grow));
  if (!(shrink > 0 && shrink <= 1))
    return bad(fmt::format("shrink must be in (0, 1], got {}", shrink));
  if (max_keys < 2) return bad(fmt::format("max_keys must be >= 2, got {}", max_keys));
  return ok();
}

Duration next_adaptive_ttl(const AdaptiveTtlOptions& options, Duration previous,
                           bool changed) noexcept {
  const Duration scaled = scale_saturating(previous, changed ? options.shrink : options.grow);
  return std::clamp(scaled, options.min, options.max);
}

namespace internal {

AdaptiveTtl::AdaptiveTtl(AdaptiveTtlOptions options, Duration initial)
    : options_(options), initial_(std::clamp(initial, options.min, options.max)) {}

AdaptiveTtl::Choice AdaptiveTtl::choose(std::string_view key, std::string_view value) {
  // A hash, not the value: the memory per key stays fixed whatever the
  // values' size; a collision (2^-64) only misses one shortening.
  const std::uint64_t hash = std::hash<std::string_view>{}(value);
  std::lock_guard lock(mutex_);
  const Memory* before = nullptr;
  if (auto it = newer_.find(key); it != newer_.end()) {
    before = &it->second;
  } else if (auto old = older_.find(key); old != older_.end()) {
    before = &old->second;
  }
  Choice choice{.ttl = initial_, .direction = 0};
  if (before != nullptr) {
    const bool changed = before->value_hash != hash;
    choice.ttl = next_adaptive_ttl(options_, before->ttl, changed);
    choice.direction = choice.ttl > before->ttl ? 1 : choice.ttl < before->ttl ? -1 : 0;
  }
  if (newer_.size() >= options_.max_keys / 2 && !newer_.contains(key)) {
    older_ = std::move(newer_);  // the generation before that is forgotten
    newer_ = Table();
  }
  newer_.insert_or_assign(std::string(key), Memory{.value_hash = hash, .ttl = choice.ttl});
  return choice;
}

}  // namespace internal
}  // namespace herdguard
