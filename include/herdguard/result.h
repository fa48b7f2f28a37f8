// herdguard/result.h — errors as values.
//
// Every fallible library call returns `Result<T>`: either a `T` or an `Error`
// carrying an `ErrorKind` and a human-readable message. Kinds are chosen by what
// the caller should do next: retry later (timeout, overloaded, rate_limited,
// circuit_open, backend, lock_not_acquired), give up (not_found), or fix the input
// (invalid_argument, corrupt).
//
// Thread safety: plain values; share them like any other value type.
//
// Example:
//   herdguard::Result<std::string> r = protector.get("product:42");
//   if (!r) {
//     if (r.error().kind == herdguard::ErrorKind::kNotFound) return NotFound();
//     LOG(WARNING) << r.error().to_string();   // "timeout: load of ... "
//     return Unavailable();
//   }
//   use(*r);
#pragma once

#include <chrono>
#include <expected>
#include <string>
#include <string_view>
#include <utility>

namespace herdguard {

enum class ErrorKind {
  kNotFound,         // The repository has no value for the key. Do not retry.
  kTimeout,          // A deadline passed (the caller's, or the load's own). Retry later.
  kCircuitOpen,      // The breaker is open: the backend is failing. Retry later.
  kOverloaded,       // Admission refused (waiter cap, full queue, shedding). Retry later.
  kRateLimited,      // The client is over its rate limit (rate_limiter.h). Retry after retry_after.
  kLockNotAcquired,  // Another owner holds the lock. Retry later or wait.
  kBackend,          // Redis, the database or a user loader failed. Retry later.
  kInvalidArgument,  // The input is wrong (empty key, bad option, bad URL). Fix it.
  kCorrupt,          // Stored bytes do not decode. Treated as a miss where possible.
  kInternal,         // A bug in herdguard. Please report it.
};

// Returns a stable lower_snake_case name, e.g. "circuit_open".
std::string_view to_string(ErrorKind kind) noexcept;

struct Error {
  ErrorKind kind = ErrorKind::kInternal;
  std::string message;
  // kOverloaded, kRateLimited: about how long to wait before trying again
  // (zero: no advice).
  std::chrono::nanoseconds retry_after{0};

  // "<kind>: <message>", for logs.
  std::string to_string() const;
};

// A value or an Error. [[nodiscard]]: ignoring a Result ignores a failure.
template <typename T>
class [[nodiscard]] Result : public std::expected<T, Error> {
 public:
  using std::expected<T, Error>::expected;
  Result(const std::expected<T, Error>& e) : std::expected<T, Error>(e) {}        // NOLINT
  Result(std::expected<T, Error>&& e) : std::expected<T, Error>(std::move(e)) {}  // NOLINT
};

// Builds the error alternative of any Result: `return make_error(ErrorKind::kTimeout, "...")`.
inline std::unexpected<Error> make_error(ErrorKind kind, std::string message) {
  return std::unexpected<Error>(Error{kind, std::move(message)});
}

// Result<void> success value: `return ok();`.
inline Result<void> ok() { return {}; }

}  // namespace herdguard
