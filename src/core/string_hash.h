// Internal: transparent hashing so maps keyed by std::string can be searched
// with a std::string_view without allocating a temporary string.
#pragma once

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

namespace herdguard::internal {

struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept {
    return std::hash<std::string_view>{}(s);
  }
};

struct StringEqual {
  using is_transparent = void;
  bool operator()(std::string_view a, std::string_view b) const noexcept { return a == b; }
};

}  // namespace herdguard::internal
