#include <fmt/format.h>

#include "herdguard/protector.h"

namespace herdguard {
namespace {

std::unexpected<Error> bad(std::string_view what) {
  return make_error(ErrorKind::kInvalidArgument, fmt::format("protector: {}", what));
}

long long ms(Duration d) {
  return static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(d).count());
}

}  // namespace

Result<void> ProtectorOptions::validate() const {
  if (ttl <= Duration::zero()) return bad(fmt::format("ttl must be > 0, got {} ms", ms(ttl)));
  if (!(ttl_jitter >= 0.0 && ttl_jitter < 1.0))
    return bad(fmt::format("ttl_jitter must be in [0, 1), got {}", ttl_jitter));
  if (stale_while_revalidate < Duration::zero())
    return bad(
        fmt::format("stale_while_revalidate must be >= 0, got {} ms", ms(stale_while_revalidate)));
  if (fail_safe_max_staleness < Duration::zero())
    return bad(fmt::format("fail_safe_max_staleness must be >= 0, got {} ms",
                           ms(fail_safe_max_staleness)));
  if (negative_ttl <= Duration::zero())
    return bad(fmt::format("negative_ttl must be > 0, got {} ms", ms(negative_ttl)));
  if (request_timeout <= Duration::zero())
    return bad(fmt::format("request_timeout must be > 0, got {} ms", ms(request_timeout)));
  if (max_key_bytes < 1) return bad("max_key_bytes must be >= 1");
  if (max_value_bytes < 1) return bad("max_value_bytes must be >= 1");
  if (!clock) return bad("clock must not be null");
  if (alert_interval < Duration::zero()) return bad("alert_interval must be >= 0");
  if (max_background_refreshes < 1) return bad("max_background_refreshes must be >= 1, got 0");
  if (soft_load_timeout <= Duration::zero())
    return bad(fmt::format("soft_load_timeout must be > 0, got {} ms", ms(soft_load_timeout)));
  if (auto valid = early_refresh.validate(); !valid) return bad(valid.error().message);
  if (auto valid = warm_up.validate(); !valid) return bad(valid.error().message);
  if (adaptive_ttl.enabled) {
    if (auto valid = adaptive_ttl.validate(); !valid) return bad(valid.error().message);
  }
  if (hot_keys.enabled) {
    if (auto valid = hot_keys.validate(); !valid) return bad(valid.error().message);
  }
  for (const auto& sink : alert_sinks) {
    if (!sink) return bad("alert_sinks must not hold null");
  }
  if (l3 && !l2) return bad("l3 requires l2 (Redis confirms which L3 records may be promoted)");
  if (l3 && l2->on_cluster())
    return bad(
        "l3 is not supported with Redis Cluster yet (its epoch key would need one per node)");
  if (fleet_lock && !l2)
    return bad("fleet_lock requires l2 (the lock holder writes the value there)");
  if (notifier && !fleet_lock) return bad("notifier is only used with fleet_lock");
  if (fleet_lock && fleet_lock->options().prefix != l2->options().prefix)
    return bad(
        "fleet_lock and l2 must share one prefix (the lock bumps the version the "
        "cache's writes compare)");
  if (l2 && max_value_bytes > kMaxEnvelopeValueBytes)
    return bad(
        fmt::format("max_value_bytes must be <= {} with an l2 (Redis strings end at "
                    "512 MiB), got {}",
                    kMaxEnvelopeValueBytes, max_value_bytes));
  if (tag_history < add_saturating(single_flight.load_timeout, std::chrono::minutes(2)))
    return bad(
        fmt::format("tag_history must be >= load_timeout + 2 min, got {} ms", ms(tag_history)));
  if (l1_max_ttl <= Duration::zero())
    return bad(fmt::format("l1_max_ttl must be > 0, got {} ms", ms(l1_max_ttl)));
  if (fleet_retry_interval <= Duration::zero())
    return bad(
        fmt::format("fleet_retry_interval must be > 0, got {} ms", ms(fleet_retry_interval)));
  if (fleet_poll_min <= Duration::zero() || fleet_poll_max < fleet_poll_min)
    return bad(fmt::format("fleet_poll_min must be > 0 and <= fleet_poll_max, got {} ms and {} ms",
                           ms(fleet_poll_min), ms(fleet_poll_max)));
  if (auto r = l1.validate(); !r) return bad(fmt::format("l1: {}", r.error().message));
  if (auto r = single_flight.validate(); !r)
    return bad(fmt::format("single_flight: {}", r.error().message));
  if (auto r = breaker.validate(); !r) return bad(fmt::format("breaker: {}", r.error().message));
  if (!db_limiter) {
    if (auto r = db_limit.validate(); !r)
      return bad(fmt::format("db_limit: {}", r.error().message));
  }
  return ok();
}

}  // namespace herdguard
