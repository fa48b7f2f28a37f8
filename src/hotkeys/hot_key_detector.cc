#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <bit>
#include <boost/unordered/unordered_flat_map.hpp>
#include <cmath>

#include "herdguard/hot_keys.h"
#include "hotkeys/space_saving.h"

namespace herdguard {

namespace {

// The bucket being filled, the last window's and the window before's.
constexpr std::size_t kRing = 2 * kHotKeyBucketsPerWindow + 1;

std::unexpected<Error> bad_option(std::string what) {
  return make_error(ErrorKind::kInvalidArgument, fmt::format("hot keys: {}", what));
}

}  // namespace

Result<void> HotKeyOptions::validate() const {
  if (top_k < 1) return bad_option("top_k must be >= 1, got 0");
  if (capacity < top_k || capacity > 1'000'000)
    return bad_option(
        fmt::format("capacity must be in top_k..1000000 ({}..1000000), got {}", top_k, capacity));
  if (window < std::chrono::milliseconds(4) || window > std::chrono::hours(1))
    return bad_option(fmt::format("window must be in 4 ms..1 h, got {} ns", window.count()));
  if (!(min_rate > 0) || !std::isfinite(min_rate))
    return bad_option(fmt::format("min_rate must be > 0 and finite, got {}", min_rate));
  if (!(viral_min_rate > 0) || !std::isfinite(viral_min_rate))
    return bad_option(fmt::format("viral_min_rate must be > 0 and finite, got {}", viral_min_rate));
  if (!(min_share >= 0 && min_share <= 1))
    return bad_option(fmt::format("min_share must be in [0, 1], got {}", min_share));
  if (!(viral_min_share >= 0 && viral_min_share <= 1))
    return bad_option(fmt::format("viral_min_share must be in [0, 1], got {}", viral_min_share));
  if (!(viral_growth > 1) || !std::isfinite(viral_growth))
    return bad_option(fmt::format("viral_growth must be > 1 and finite, got {}", viral_growth));
  if (sample_one_in > kMaxHotKeySampleInterval ||
      (sample_one_in != 0 && !std::has_single_bit(sample_one_in)))
    return bad_option(
        fmt::format("sample_one_in must be 0 (adaptive) or a power of two in 1..{}, got {}",
                    kMaxHotKeySampleInterval, sample_one_in));
  if (samples_per_window < 64)
    return bad_option(fmt::format("samples_per_window must be >= 64, got {}", samples_per_window));
  if (!(refresh_fraction > 0 && refresh_fraction < 1))
    return bad_option(fmt::format("refresh_fraction must be in (0, 1), got {}", refresh_fraction));
  return ok();
}

// The ring of bucket sketches. ring[current] is being filled; the
// kHotKeyBucketsPerWindow before it (going back) are the last window, the
// ones before those the window before.
struct HotKeyDetector::Sketches {
  explicit Sketches(std::size_t capacity) {
    ring.reserve(kRing);
    for (std::size_t i = 0; i < kRing; ++i) ring.emplace_back(capacity);
  }
  std::vector<internal::SpaceSaving> ring;
  std::array<std::uint64_t, kRing> totals{};  // per bucket: all reads counted
  // Per bucket: the largest weight of one record (the sampling interval then).
  std::array<std::uint64_t, kRing> max_weight{};
  std::size_t current = 0;
  bool started = false;
  TimePoint bucket_end{};
  std::size_t completed = 0;   // buckets ended so far, capped at kRing
  std::uint64_t recorded = 0;  // record() calls in the bucket being filled

  // The bucket `back` places before the one being filled (1: the last ended).
  const internal::SpaceSaving& ended(std::size_t back) const {
    return ring[(current + kRing - back) % kRing];
  }
};

Result<std::unique_ptr<HotKeyDetector>> HotKeyDetector::create(HotKeyOptions options,
                                                               std::shared_ptr<Clock> clock) {
  if (auto valid = options.validate(); !valid) return std::unexpected(valid.error());
  if (!clock) return bad_option("clock must not be null");
  return std::unique_ptr<HotKeyDetector>(new HotKeyDetector(options, std::move(clock)));
}

HotKeyDetector::HotKeyDetector(HotKeyOptions options, std::shared_ptr<Clock> clock)
    : options_(options),
      clock_(std::move(clock)),
      bucket_(options.window / static_cast<Duration::rep>(kHotKeyBucketsPerWindow)),
      sketches_(std::make_unique<Sketches>(options.capacity)) {
  // Adaptive starts at 64: cheap on a busy hit path from the first read,
  // and a quiet process comes down to 1 at the first bucket's end.
  sample_interval_.store(options.sample_one_in != 0 ? options.sample_one_in : 64);
}

HotKeyDetector::~HotKeyDetector() = default;

HotKeyChanges HotKeyDetector::record_locked(std::string_view key, TimePoint now,
                                            std::uint64_t weight) {
  HotKeyChanges changes = roll_to(now);
  Sketches& s = *sketches_;
  s.ring[s.current].add(key, weight);
  s.totals[s.current] += weight;
  s.max_weight[s.current] = std::max(s.max_weight[s.current], weight);
  ++s.recorded;
  return changes;
}

HotKeyChanges HotKeyDetector::record(std::string_view key, TimePoint now, std::uint64_t weight) {
  std::lock_guard lock(sketch_mutex_);
  return record_locked(key, now, weight);
}

std::optional<HotKeyChanges> HotKeyDetector::try_record(std::string_view key, TimePoint now,
                                                        std::uint64_t weight) {
  std::unique_lock lock(sketch_mutex_, std::try_to_lock);
  if (!lock.owns_lock()) return std::nullopt;
  return record_locked(key, now, weight);
}

HotKeyChanges HotKeyDetector::advance(TimePoint now) {
  std::lock_guard lock(sketch_mutex_);
  return roll_to(now);
}

HotKeyChanges HotKeyDetector::roll_to(TimePoint now) {
  Sketches& s = *sketches_;
  if (!s.started) {
    s.started = true;
    s.bucket_end = add_saturating(now, bucket_);
    return {};
  }
  if (now < s.bucket_end) return {};
  // Buckets that ended by `now`; past kRing they are all empty anyway.
  const auto passed = static_cast<std::size_t>((now - s.bucket_end) / bucket_) + 1;
  for (std::size_t i = 0; i < std::min(passed, kRing); ++i) {
    s.current = (s.current + 1) % kRing;
    s.ring[s.current].clear();
    s.totals[s.current] = 0;
    s.max_weight[s.current] = 0;
  }
  s.completed = std::min(kRing, s.completed + passed);
  // The interval adapts after this evaluation, which judges the window
  // by the interval its samples were taken with.
  const std::uint64_t recorded_last_bucket = passed == 1 ? s.recorded : 0;
  s.recorded = 0;
  s.bucket_end = add_saturating(s.bucket_end, bucket_ * static_cast<Duration::rep>(passed));

  // The last window's guaranteed counts per key (Space-Saving's lower
  // bounds: a key that merely inherited a large counter from the keys it
  // replaced is not hot — with many distinct keys, every counter is large).
  boost::unordered_flat_map<std::string_view, std::uint64_t> counts;
  for (std::size_t back = 1; back <= kHotKeyBucketsPerWindow; ++back) {
    s.ended(back).for_each([&](std::string_view key, std::uint64_t count, std::uint64_t error) {
      counts[key] += count - error;
    });
  }
  std::uint64_t window_total = 0;
  std::uint64_t window_weight = 1;  // the coarsest sampling in the window
  for (std::size_t back = 1; back <= kHotKeyBucketsPerWindow; ++back) {
    window_total += s.totals[(s.current + kRing - back) % kRing];
    window_weight = std::max(window_weight, s.max_weight[(s.current + kRing - back) % kRing]);
  }
  const double window_s = std::chrono::duration<double>(options_.window).count();
  // A share threshold as a count (max: the criterion is off).
  auto share_count = [&](double share) {
    return share > 0 ? share * static_cast<double>(window_total) : HUGE_VAL;
  };
  const double hot_share_count = share_count(options_.min_share);
  const double viral_share_count = share_count(options_.viral_min_share);
  // Growth needs a whole window before the last one: at start, everything
  // grows from nothing.
  const bool growth_known = s.completed >= 2 * kHotKeyBucketsPerWindow;

  std::vector<HotKey> previous;
  {
    std::lock_guard lock(hot_mutex_);
    previous = hot_;
  }
  auto previously = [&](std::string_view key) -> const HotKey* {
    for (const HotKey& h : previous)
      if (h.key == key) return &h;
    return nullptr;
  };

  std::vector<HotKey> hot;
  for (const auto& [key, count] : counts) {
    if (count < kMinHotKeySamples * window_weight) continue;
    const double rate = static_cast<double>(count) / window_s;
    const double n = static_cast<double>(count);
    if (rate < std::min(options_.min_rate, options_.viral_min_rate) / 2 &&
        n < std::min(hot_share_count, viral_share_count) / 2)
      continue;  // cheap cut
    // The window before: at most `before_max` (a key without a counter
    // gets the sketch's floor), surely `before_min`.
    std::uint64_t before_max = 0, before_min = 0;
    for (std::size_t back = kHotKeyBucketsPerWindow + 1; back <= 2 * kHotKeyBucketsPerWindow;
         ++back) {
      const internal::SpaceSaving& bucket = s.ended(back);
      const std::uint64_t c = bucket.count(key);
      before_max += c != 0 ? c : bucket.floor();
      before_min += bucket.guaranteed(key);
    }
    const double previous_rate = static_cast<double>(before_min) / window_s;
    const double previous_rate_max = static_cast<double>(before_max) / window_s;
    const HotKey* was = previously(key);
    const bool by_rate = rate >= options_.min_rate || n >= hot_share_count;
    const bool by_growth = growth_known &&
                           (rate >= options_.viral_min_rate || n >= viral_share_count) &&
                           rate >= options_.viral_growth * previous_rate_max;
    // Hysteresis: a hot key stays hot down to half the threshold it crossed.
    const bool stays =
        was != nullptr &&
        (was->viral ? rate >= options_.viral_min_rate / 2 || n >= viral_share_count / 2
                    : rate >= options_.min_rate / 2 || n >= hot_share_count / 2);
    if (!by_rate && !by_growth && !stays) continue;
    HotKey h{.key = std::string(key),
             .rate = rate,
             .previous_rate = previous_rate,
             .previous_rate_max = previous_rate_max,
             .detected_at = now,
             .viral = !by_rate,
             .load_waits = 0};
    if (was != nullptr) {
      h.detected_at = was->detected_at;
      h.viral = was->viral;
      h.load_waits = was->load_waits;
    }
    hot.push_back(std::move(h));
  }
  std::sort(hot.begin(), hot.end(),
            [](const HotKey& a, const HotKey& b) { return a.rate > b.rate; });
  if (hot.size() > options_.top_k) hot.resize(options_.top_k);
  hot.shrink_to_fit();  // the candidates may have been many: keep top_k's worth

  HotKeyChanges changes;
  changes.evaluated = true;
  for (const HotKey& h : hot)
    if (previously(h.key) == nullptr) changes.turned_hot.push_back(h);
  for (const HotKey& h : previous) {
    const bool still = std::any_of(hot.begin(), hot.end(),
                                   [&](const HotKey& now_hot) { return now_hot.key == h.key; });
    if (!still) changes.cooled.push_back(h.key);
  }
  std::lock_guard lock(hot_mutex_);
  // Load waits counted since `previous` was copied are kept.
  for (HotKey& h : hot) {
    for (const HotKey& live : hot_)
      if (live.key == h.key) h.load_waits = live.load_waits;
  }
  hot_ = std::move(hot);
  hot_count_.store(hot_.size(), std::memory_order_relaxed);
  adapt_sampling(recorded_last_bucket);
  return changes;
}

void HotKeyDetector::adapt_sampling(std::uint64_t recorded_last_bucket) {
  if (options_.sample_one_in != 0) return;  // fixed
  // Straight to the power of two that would have recorded about the
  // target in the last bucket, unless the present one is within 2x of it.
  const std::uint64_t target = options_.samples_per_window / kHotKeyBucketsPerWindow;
  const std::uint64_t interval = sample_interval();
  const std::uint64_t reads = recorded_last_bucket * interval;
  const std::uint64_t wanted = std::clamp<std::uint64_t>(
      std::bit_ceil(std::max<std::uint64_t>(1, reads / target)), 1, kMaxHotKeySampleInterval);
  if (wanted >= 2 * interval || 2 * wanted <= interval)
    sample_interval_.store(static_cast<std::uint32_t>(wanted), std::memory_order_relaxed);
}

std::vector<HotKey> HotKeyDetector::hot_keys() const {
  std::lock_guard lock(hot_mutex_);
  return hot_;
}

bool HotKeyDetector::is_hot(std::string_view key) const {
  if (hot_count() == 0) return false;
  std::lock_guard lock(hot_mutex_);
  return std::any_of(hot_.begin(), hot_.end(), [&](const HotKey& h) { return h.key == key; });
}

void HotKeyDetector::record_load_wait(std::string_view key) {
  if (hot_count() == 0) return;
  std::lock_guard lock(hot_mutex_);
  for (HotKey& h : hot_) {
    if (h.key == key) {
      ++h.load_waits;
      return;
    }
  }
}

std::size_t HotKeyDetector::memory_bytes() const {
  std::size_t bytes = sizeof(*this) + sizeof(Sketches);
  {
    std::lock_guard lock(sketch_mutex_);
    for (const auto& sketch : sketches_->ring) bytes += sketch.memory_bytes();
  }
  std::lock_guard lock(hot_mutex_);
  bytes += hot_.capacity() * sizeof(HotKey);
  for (const HotKey& h : hot_) bytes += h.key.capacity();
  return bytes;
}

}  // namespace herdguard
