#include "protector/tiered_cache.h"

namespace herdguard::internal {

TieredCache::TieredCache(std::unique_ptr<MemoryCache> l1, bool l1_enabled, Duration l1_max_ttl,
                         std::shared_ptr<RedisCache> l2, std::shared_ptr<Clock> clock,
                         EarlyRefreshOptions early_refresh, Duration ttl,
                         ProtectorCounters& counters)
    : l1_(std::move(l1)),
      l1_enabled_(l1_enabled),
      l1_max_ttl_(l1_max_ttl),
      l2_(std::move(l2)),
      clock_(std::move(clock)),
      coarse_lag_(clock_->coarse_lag()),
      system_clock_(dynamic_cast<const SystemClock*>(clock_.get())),
      early_refresh_(early_refresh),
      ttl_(ttl),
      counters_(counters) {}

std::optional<CacheEntry> TieredCache::l1_get(std::string_view key, TimePoint now) const {
  if (!l1_enabled_) return std::nullopt;
  auto got = l1_->get(key, now);
  if (!got || !*got) return std::nullopt;
  return std::move(*got);
}

MemoryCache::Freshness TieredCache::l1_peek(std::string_view key, std::string& value,
                                            bool& negative) const {
  if (!l1_enabled_) return MemoryCache::Freshness::kAbsent;
  // coarse <= now() <= coarse + coarse_lag_: an entry fresh at the latter is
  // fresh whenever now() is.
  const TimePoint coarse =
      system_clock_ ? system_clock_->SystemClock::coarse_now() : clock_->coarse_now();
  const TimePoint latest = add_saturating(coarse, coarse_lag_);
  return l1_->get_fresh_value(key, latest, value, negative);
}

TieredCache::L1Read TieredCache::l1_settle(std::string_view key, MemoryCache::Freshness peeked,
                                           std::string&& value, bool negative) const {
  L1Read read;
  if (peeked == MemoryCache::Freshness::kFresh) {
    read.fresh = true;
    read.negative = negative;
    read.value = std::move(value);
    return read;
  }
  if (peeked == MemoryCache::Freshness::kAbsent) return read;
  // Not fresh at the coarse clock's latest time, which may be up to
  // coarse_lag_ ahead, or in its early-refresh window: decide on the
  // precise time (a second lookup, on a path that goes on to L2 or a load,
  // or that decides about a refresh; the hit path carries nothing for it).
  const TimePoint now = clock_->now();
  read.entry = l1_get(key, now);
  if (read.entry && fresh_in_l1(*read.entry, now)) {
    read.fresh = true;
    read.negative = read.entry->negative;
    read.refresh_due = now >= read.entry->refresh_from;
    read.timing = {.fresh_until = read.entry->fresh_until,
                   .load_duration = read.entry->load_duration};
    read.value = std::move(read.entry->value);
    read.entry.reset();
  }
  return read;
}

TieredCache::L1Read TieredCache::l1_read(std::string_view key) const {
  std::string value;
  bool negative = false;
  const MemoryCache::Freshness peeked = l1_peek(key, value, negative);
  return l1_settle(key, peeked, std::move(value), negative);
}

Result<std::optional<Envelope>> TieredCache::l2_get(std::string_view key, TimePoint now,
                                                    Deadline deadline) {
  // A deadline that had passed before the call is the caller's, not a Redis
  // failure: the command is not even sent.
  const bool already_late = deadline.expired();
  auto got = l2_->get_envelope(key, deadline);
  if (!got) {
    if (!already_late) counters_.redis_errors.add();
    return got;
  }
  if (!*got || !(*got)->entry.is_usable(now)) {
    counters_.l2_misses.add();
    return std::optional<Envelope>();
  }
  counters_.l2_hits.add();
  return got;
}

void TieredCache::fill_l1(std::string_view key, CacheEntry entry, MemoryCache::Ticket ticket,
                          TimePoint now) {
  if (!l1_enabled_) return;
  if (l2_) entry.recheck_at = add_saturating(now, l1_max_ttl_);
  mark_refresh_window(entry);
  // An entry larger than a shard's budget is an error here, and only means
  // this value is not kept in L1; the caller has it regardless.
  auto stored = l1_->put_if_unchanged(key, std::move(entry), ticket);
  if (stored && !*stored) counters_.refused_l1_fills.add();
}

void TieredCache::mark_refresh_window(CacheEntry& entry) const noexcept {
  entry.refresh_from = refresh_window_start(early_refresh_, entry.fresh_until, entry.load_duration,
                                            ttl_, entry.negative);
}

Result<void> TieredCache::set(std::string_view key, CacheEntry entry) {
  Result<void> shared = ok();
  entry.version = 0;
  if (l2_) {
    auto version = l2_->set(key, entry);
    if (version) {
      entry.version = *version;
    } else {
      counters_.redis_errors.add();
      shared = std::unexpected(version.error());
    }
  }
  // A value L2 did not confirm is not kept in L1: it has no version, so a
  // later fill could not be ordered against it, and this process would serve
  // a value the rest of the fleet may never see. Erasing still bumps the
  // key's generation, so no fill that began before this set lands.
  if (l1_enabled_ && shared) {
    if (l2_) entry.recheck_at = add_saturating(clock_->now(), l1_max_ttl_);
    mark_refresh_window(entry);
    (void)l1_->put(key, std::move(entry));  // too large for L1: L2 has it
  } else {
    (void)l1_->erase(key);
  }
  return shared;
}

Result<void> TieredCache::invalidate(std::string_view key) {
  Result<void> shared = ok();
  if (l2_) {
    shared = l2_->erase(key);
    if (!shared) counters_.redis_errors.add();
  }
  (void)l1_->erase(key);
  return shared;
}

}  // namespace herdguard::internal
