#include "herdguard/warm_up.h"

#include <fmt/format.h>

#include <cmath>
#include <fstream>

namespace herdguard {

Result<void> WarmUpOptions::validate() const {
  // The bounds keep 1 / keys_per_second a representable clock duration.
  if (!(keys_per_second >= 0.001 && keys_per_second <= 1e9))
    return make_error(
        ErrorKind::kInvalidArgument,
        fmt::format("warm_up: keys_per_second must be in [0.001, 1e9], got {}", keys_per_second));
  return ok();
}

Result<std::vector<std::string>> read_warm_up_file(const std::string& path,
                                                   std::size_t max_key_bytes) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return make_error(ErrorKind::kBackend, fmt::format("warm-up file '{}' cannot be read", path));
  std::vector<std::string> keys;
  std::string line;
  for (std::size_t number = 1; std::getline(in, line); ++number) {
    const auto first = line.find_first_not_of(" \t\r");
    if (first == std::string::npos || line[first] == '#') continue;
    const auto last = line.find_last_not_of(" \t\r");
    std::string key = line.substr(first, last - first + 1);
    if (key.size() > max_key_bytes)
      return make_error(ErrorKind::kInvalidArgument,
                        fmt::format("warm-up file '{}' line {}: key of {} bytes, over {}", path,
                                    number, key.size(), max_key_bytes));
    keys.push_back(std::move(key));
  }
  if (in.bad())
    return make_error(ErrorKind::kBackend, fmt::format("warm-up file '{}': read error", path));
  return keys;
}

}  // namespace herdguard
