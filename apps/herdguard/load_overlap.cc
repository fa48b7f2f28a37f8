#include "load_overlap.h"

#include <algorithm>
#include <map>

namespace herdguard::cli {

DuplicateLoads count_duplicate_loads(std::vector<LoadEvent> loads, double min_gap_s,
                                     std::size_t seconds) {
  DuplicateLoads out;
  out.by_second.assign(std::max<std::size_t>(seconds, 1), 0);
  std::sort(loads.begin(), loads.end(), [](const LoadEvent& a, const LoadEvent& b) {
    return a.key != b.key ? a.key < b.key : a.t_s < b.t_s;
  });
  for (std::size_t i = 1; i < loads.size(); ++i) {
    if (loads[i].key != loads[i - 1].key || loads[i].t_s - loads[i - 1].t_s >= min_gap_s) continue;
    if (loads[i].refreshed_version > loads[i - 1].refreshed_version) continue;  // a refresh chain
    ++out.total;
    out.pairs.emplace_back(loads[i - 1].t_s, loads[i].t_s);
    const double t = std::max(0.0, loads[i].t_s);
    out.by_second[std::min(static_cast<std::size_t>(t), out.by_second.size() - 1)] += 1;
  }
  return out;
}

std::optional<SecondsWindow> redis_error_window(
    const std::vector<std::uint64_t>& errors_by_second) {
  const auto first = std::find_if(errors_by_second.begin(), errors_by_second.end(),
                                  [](std::uint64_t n) { return n > 0; });
  if (first == errors_by_second.end()) return std::nullopt;
  const auto after = std::find(first, errors_by_second.end(), 0u);
  return SecondsWindow{static_cast<int>(first - errors_by_second.begin()),
                       static_cast<int>(after - errors_by_second.begin())};
}

}  // namespace herdguard::cli

namespace herdguard::cli {

std::uint64_t duplicates_outside(const DuplicateLoads& duplicates,
                                 const std::optional<SecondsWindow>& window) {
  if (!window) return duplicates.total;
  auto inside = [&](double t) { return t >= window->from && t < window->to; };
  std::uint64_t n = 0;
  for (const auto& [previous, t] : duplicates.pairs) {
    if (!inside(previous) && !inside(t)) ++n;
  }
  return n;
}

}  // namespace herdguard::cli
