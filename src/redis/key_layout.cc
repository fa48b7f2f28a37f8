#include "redis/key_layout.h"

#include <fmt/format.h>

namespace herdguard::internal {

Result<void> validate_prefix(std::string_view prefix, std::string_view component) {
  if (prefix.find_first_of("{}") != std::string_view::npos) {
    return make_error(ErrorKind::kInvalidArgument,
                      fmt::format("{}: prefix must not contain '{{' or '}}' (it would change "
                                  "the Redis Cluster hash tag of herdguard's keys)",
                                  component));
  }
  if (prefix.size() > 256) {
    return make_error(ErrorKind::kInvalidArgument,
                      fmt::format("{}: prefix is {} bytes, over 256", component, prefix.size()));
  }
  return ok();
}

}  // namespace herdguard::internal
