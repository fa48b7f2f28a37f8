#include "protector/tiered_cache.h"

namespace herdguard::internal {

TieredCache::TieredCache(std::unique_ptr<MemoryCache> l1, bool l1_enabled, Duration l1_max_ttl,
                         std::shared_ptr<RedisCache> l2, std::shared_ptr<MemcachedCache> l3,
                         Duration load_timeout, std::shared_ptr<Clock> clock,
                         EarlyRefreshOptions early_refresh, Duration ttl,
                         std::shared_ptr<TagVersions> tags, Duration tag_history,
                         ProtectorCounters& counters)
    : tags_(std::move(tags)),
      tag_history_(tag_history),
      tag_sync_interval_ns_(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                std::max(Duration(std::chrono::milliseconds(1)), l1_max_ttl / 2))
                                .count()),
      l1_(std::move(l1)),
      l1_enabled_(l1_enabled),
      l1_max_ttl_(l1_max_ttl),
      l2_(std::move(l2)),
      l3_(l2_ ? std::move(l3) : nullptr),
      tombstone_for_(
          l3_ ? add_saturating(add_saturating(l3_->options().max_lifetime,
                                              std::max(load_timeout, l3_->options().timeout)),
                               kTombstoneMargin)
              : Duration::zero()),
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
  sync_tags_if_due(deadline);
  auto got = l2_->get_envelope(key, deadline);
  if (!got) {
    if (!already_late) counters_.redis_errors.add();
    return got;
  }
  if (!*got || !(*got)->entry.is_usable(now) || !stands((*got)->entry)) {
    counters_.l2_misses.add();
    return std::optional<Envelope>();
  }
  counters_.l2_hits.add();
  return got;
}

namespace {
std::int64_t steady_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace

std::uint64_t TieredCache::tag_stamp(Deadline deadline) {
  sync_tags_if_due(deadline);
  return tags_->stamp();
}

void TieredCache::sync_tags_if_due(Deadline deadline) {
  if (!l2_ || deadline.expired()) return;
  const std::int64_t now = steady_ns();
  std::int64_t due = next_tag_sync_ns_.load(std::memory_order_acquire);
  if (now < due) return;
  if (!next_tag_sync_ns_.compare_exchange_strong(due, now + tag_sync_interval_ns_,
                                                 std::memory_order_acq_rel)) {
    return;  // another caller syncs
  }
  // Page by page until complete (a process that starts after many
  // invalidations reads them all before it trusts L2), within the deadline.
  for (;;) {
    auto changes = l2_->tag_changes(tags_->synced_through(), kTagSyncBatch, deadline);
    if (!changes) {
      // Retried soon, not after a whole interval: until it succeeds this
      // process may not know an invalidation whose message it missed.
      counters_.tag_sync_errors.add();
      next_tag_sync_ns_.store(steady_ns() + std::min(tag_sync_interval_ns_, kTagSyncRetryNs),
                              std::memory_order_release);
      return;
    }
    const bool complete = tags_->learn_synced(changes->changes, changes->sequence,
                                              changes->complete, changes->now_us);
    counters_.tag_syncs.add();
    if (complete) {
      synced_once_.store(true, std::memory_order_release);
      return;
    }
    if (deadline.expired()) {
      force_tag_sync();  // more to read: the next read goes on
      return;
    }
  }
}

Result<std::uint64_t> TieredCache::invalidate_tag(std::string_view tag, Deadline deadline) {
  std::uint64_t version = 0;
  if (l2_) {
    auto made = l2_->invalidate_tag(tag, tag_history_, deadline);
    if (!made) {
      if (!deadline.expired()) counters_.redis_errors.add();
      return made;
    }
    version = *made;
  } else {
    version = tags_->next_local_version();
  }
  tags_->learn(tag, version, /*trusted=*/l2_ != nullptr);
  return version;
}

bool TieredCache::stands(const CacheEntry& entry) const {
  // Before this process first learned every tag invalidation there is
  // (its first complete sync), no entry of L2 or L3 is trusted: one from
  // before a clear() or a tag invalidation it never heard of would stand.
  if (tags_->valid(entry) && synced_once_.load(std::memory_order_acquire)) return true;
  counters_.tag_rejections.add();
  return false;
}

std::optional<Envelope> TieredCache::l2_decode(std::string_view bytes) {
  std::optional<Envelope> decoded = l2_->decode_value(bytes);
  if (decoded && !stands(decoded->entry)) return std::nullopt;
  return decoded;
}

void TieredCache::remember_epoch(std::uint64_t epoch) noexcept {
  l3_epoch_.store(epoch, std::memory_order_release);
  l3_epoch_read_ns_.store(steady_ns(), std::memory_order_release);
}

std::uint64_t TieredCache::l3_epoch(std::string_view key, Deadline deadline) {
  if (!l3_) return 0;
  const std::uint64_t known = l3_epoch_.load(std::memory_order_acquire);
  const std::int64_t age = steady_ns() - l3_epoch_read_ns_.load(std::memory_order_acquire);
  if (known != 0 && age < std::chrono::nanoseconds(kEpochRecheck).count()) return known;
  auto guard = l2_->tier_guard(key, deadline);
  if (!guard) {
    if (!deadline.expired()) counters_.redis_errors.add();
    return 0;
  }
  remember_epoch(guard->epoch);
  return guard->epoch;
}

std::optional<CacheEntry> TieredCache::l3_promotable(std::string_view key, Deadline deadline,
                                                     TimePoint fresh_at_least_until) {
  auto got = l3_->get(key, deadline);
  if (!got) {
    counters_.l3_errors.add();
    return std::nullopt;
  }
  const TimePoint now = clock_->now();
  if (!*got || !(*got)->envelope.entry.is_fresh(std::max(now, fresh_at_least_until))) {
    counters_.l3_misses.add();
    return std::nullopt;
  }
  auto guard = l2_->tier_guard(key, deadline);
  if (!guard) {
    // Unconfirmed: never answered (an invalidate may have come in).
    if (!deadline.expired()) counters_.redis_errors.add();
    counters_.l3_misses.add();
    return std::nullopt;
  }
  remember_epoch(guard->epoch);
  const L3Record& record = **got;
  if (record.epoch != guard->epoch || record.envelope.version < guard->min_version ||
      !stands(record.envelope.entry)) {
    counters_.l3_rejected.add();
    if (auto erased = l3_->erase(key, deadline); !erased) counters_.l3_errors.add();
    return std::nullopt;
  }
  counters_.l3_hits.add();
  CacheEntry entry = std::move((*got)->envelope.entry);
  entry.version = record.envelope.version;
  return entry;
}

void TieredCache::l3_store(std::string_view key, const CacheEntry& entry, std::uint64_t version,
                           std::uint64_t epoch, Deadline deadline) {
  if (!l3_ || epoch == 0 || deadline.expired()) return;
  L3Record record{.envelope = {.entry = entry, .version = version}, .epoch = epoch};
  record.envelope.entry.recheck_at = TimePoint::max();
  record.envelope.entry.refresh_from = TimePoint::max();
  if (auto stored = l3_->put(key, record, deadline); !stored) counters_.l3_errors.add();
}

Result<std::vector<std::optional<Envelope>>> TieredCache::l2_get_many(
    std::span<const std::string> keys, TimePoint now, Deadline deadline) {
  const bool already_late = deadline.expired();
  sync_tags_if_due(deadline);
  auto got = l2_->get_envelopes(keys, deadline);
  if (!got) {
    if (!already_late) counters_.redis_errors.add();
    return got;
  }
  for (std::optional<Envelope>& envelope : *got) {
    if (!envelope || !envelope->entry.is_usable(now) || !stands(envelope->entry)) {
      envelope.reset();
      counters_.l2_misses.add();
    } else {
      counters_.l2_hits.add();
    }
  }
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
    // Read before the write, as a load's is (l3_store).
    const std::uint64_t epoch = l3_ ? l3_epoch(key, Deadline::after(l3_->options().timeout)) : 0;
    auto version = l2_->set(key, entry, tombstone_for_);
    if (version) {
      entry.version = *version;
      if (l3_) {
        const Deadline l3_deadline = Deadline::after(l3_->options().timeout);
        if (epoch != 0 && *version != 0) {
          l3_store(key, entry, *version, epoch, l3_deadline);
        } else if (auto erased = l3_->erase(key, l3_deadline); !erased) {
          counters_.l3_errors.add();
        }
      }
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
    shared = l2_->invalidate(key, tombstone_for_);
    if (!shared) counters_.redis_errors.add();
  }
  // Also when Redis failed: one stale record fewer (the tombstone, when it
  // was written, guards the rest).
  if (l3_) {
    if (auto erased = l3_->erase(key, Deadline::after(l3_->options().timeout)); !erased)
      counters_.l3_errors.add();
  }
  (void)l1_->erase(key);
  return shared;
}

}  // namespace herdguard::internal
