#include "redis/key_layout.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>

#include "core/little_endian.h"

namespace herdguard::internal {

std::string redis_ms(Duration d) {
  return std::to_string(
      std::max<long long>(1, std::chrono::duration_cast<std::chrono::milliseconds>(d).count()));
}

std::string redis_unix_ms(TimePoint t) { return redis_ms(t.time_since_epoch()); }

std::int64_t write_until_ms(std::int64_t redis_now_ms, Deadline hard_deadline) {
  return redis_now_ms +
         std::chrono::duration_cast<std::chrono::milliseconds>(hard_deadline.remaining()).count();
}

Result<std::uint64_t> parse_version_reply(const RedisReply& reply) {
  if (reply.type == RedisReply::Type::kInteger && reply.integer > 0)
    return static_cast<std::uint64_t>(reply.integer);
  if (reply.type == RedisReply::Type::kString) {
    std::uint64_t v = 0;
    const char* end = reply.str.data() + reply.str.size();
    auto [ptr, ec] = std::from_chars(reply.str.data(), end, v);
    if (ec == std::errc() && ptr == end && v > 0) return v;
  }
  return make_error(ErrorKind::kBackend, "redis: unexpected version in a script reply");
}

Result<std::uint64_t> parse_count_reply(const RedisReply& reply) {
  if (reply.type == RedisReply::Type::kString && reply.str == "0") return std::uint64_t{0};
  if (reply.type == RedisReply::Type::kInteger && reply.integer == 0) return std::uint64_t{0};
  return parse_version_reply(reply);
}

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

std::string little_endian(std::uint64_t v) {
  if (v == 0) return {};
  std::string out;
  append_le(out, v);
  return out;
}

std::optional<WriteOutcome> loaded_write_outcome(long long result) {
  switch (result) {
    case 1:
      return WriteOutcome::kWritten;
    case 2:
      return WriteOutcome::kExtended;
    case 0:
      return WriteOutcome::kSuperseded;
    case -1:
      return WriteOutcome::kTooLate;
    default:
      return std::nullopt;
  }
}

}  // namespace herdguard::internal
