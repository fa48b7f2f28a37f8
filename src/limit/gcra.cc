#include "limit/gcra.h"

#include <algorithm>

namespace herdguard::internal {

GcraDecision gcra_decide(TimePoint tat, TimePoint now, Duration interval, Duration tolerance) {
  // A TAT further ahead than this algorithm sets (now + tolerance +
  // interval at most) comes from a clock that stepped back: start afresh,
  // as the Redis script does, rather than lock the client out.
  if (tat > add_saturating(now, add_saturating(tolerance, interval))) tat = now;
  const TimePoint start = std::max(tat, now);
  const TimePoint allowed_from = add_saturating(start, -tolerance);
  if (now < allowed_from)
    return {.allowed = false, .tat = start, .retry_after = allowed_from - now};
  return {.allowed = true, .tat = add_saturating(start, interval), .retry_after = Duration::zero()};
}

GcraDecision LocalGcra::decide(std::string_view client, TimePoint now) {
  std::lock_guard lock(mutex_);
  auto it = tats_.find(client);
  if (it == tats_.end()) {
    if (tats_.size() >= max_clients_) make_room(now);
    it = tats_.emplace(std::string(client), TimePoint::min()).first;
  }
  const GcraDecision decision = gcra_decide(it->second, now, interval_, tolerance_);
  it->second = decision.tat;
  return decision;
}

void LocalGcra::make_room(TimePoint now) {
  boost::unordered::erase_if(tats_, [now](const auto& entry) { return entry.second <= now; });
  if (tats_.size() >= max_clients_) tats_.erase(tats_.begin());
}

std::size_t LocalGcra::size() const {
  std::lock_guard lock(mutex_);
  return tats_.size();
}

}  // namespace herdguard::internal
