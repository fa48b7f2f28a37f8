#include "herdguard/result.h"

#include <fmt/format.h>

namespace herdguard {

std::string_view to_string(ErrorKind kind) noexcept {
  switch (kind) {
    case ErrorKind::kNotFound:
      return "not_found";
    case ErrorKind::kTimeout:
      return "timeout";
    case ErrorKind::kCircuitOpen:
      return "circuit_open";
    case ErrorKind::kOverloaded:
      return "overloaded";
    case ErrorKind::kRateLimited:
      return "rate_limited";
    case ErrorKind::kLockNotAcquired:
      return "lock_not_acquired";
    case ErrorKind::kBackend:
      return "backend";
    case ErrorKind::kInvalidArgument:
      return "invalid_argument";
    case ErrorKind::kCorrupt:
      return "corrupt";
    case ErrorKind::kInternal:
      return "internal";
  }
  return "unknown";
}

std::string Error::to_string() const {
  if (retry_after > std::chrono::nanoseconds::zero()) {
    return fmt::format("{}: {} (retry after {} ms)", herdguard::to_string(kind), message,
                       std::chrono::ceil<std::chrono::milliseconds>(retry_after).count());
  }
  return fmt::format("{}: {}", herdguard::to_string(kind), message);
}

}  // namespace herdguard
