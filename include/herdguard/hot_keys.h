// herdguard/hot_keys.h — finding the keys that are hot now, and the ones
// turning viral, in memory that does not grow with the number of keys.
//
// A heavy-hitters sketch (Space-Saving, Metwally, Agrawal, El Abbadi, ICDT
// 2005) of `capacity` counters per time bucket; a window is
// kHotKeyBucketsPerWindow buckets, and the detector keeps the buckets of the
// last two windows, so it compares a key's rate over the last window with
// its rate over the window before (a sliding window, moved one bucket at a
// time). Memory: 2·kHotKeyBucketsPerWindow + 1 sketches of `capacity`
// counters, whatever the number of distinct keys (bench/hot_keys_bench.cc).
//
// A key is hot when, over the last window, it is among the `top_k` most read
// and either
//   * its rate is at least `min_rate` reads per second, or its share of all
//     reads is at least `min_share` (so that hot means the same in a quiet
//     process and a busy one), or
//   * it is viral: its rate is at least `viral_min_rate` or its share at
//     least `viral_min_share`, and its rate is at least `viral_growth` times
//     its rate over the window before;
// and it was recorded at least kMinHotKeySamples times in the window.
// it stays hot while its rate is at least half the threshold it crossed
// (no flapping at the edge). Rates are Space-Saving's guaranteed counts
// (what a key was surely read, never what it inherited from the keys its
// counter replaced: with many distinct keys every counter is large); a key
// missing from the previous window's sketch is given that sketch's smallest
// counter as its previous count (an upper bound). So neither a rate nor a
// growth is ever overstated.
//
// The Protector (protector.h) samples one read in `sample_one_in` into its
// detector from the L1 hit path and the miss path, pins keys that turn hot
// in L1, refreshes them ahead of expiry, exports them to Prometheus and
// reports them to the alert sinks. The detector works on its own too.
//
// Thread safety: every method is safe from any number of threads; record()
// and advance() serialize on one mutex (hence the sampling), hot_keys() and
// is_hot() read the published hot set under another.
//
// Example:
//   auto detector = herdguard::HotKeyDetector::create({.min_rate = 500}, clock);
//   (*detector)->record("product:42", clock->now());
//   for (const herdguard::HotKey& hot : (*detector)->hot_keys()) ...
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "herdguard/clock.h"
#include "herdguard/result.h"

namespace herdguard {

inline constexpr std::size_t kHotKeyBucketsPerWindow = 4;
inline constexpr std::uint32_t kMaxHotKeySampleInterval = 65536;
// A key needs at least this many recorded reads in a window to be hot (so
// that a few chance samples of a cold key never look hot).
inline constexpr std::uint64_t kMinHotKeySamples = 4;

struct HotKeyOptions {
  // Off: the Protector keeps no detector and its read path samples nothing.
  bool enabled = true;
  // Counters per bucket sketch: the memory bound. REQUIRES: top_k..1'000'000.
  std::size_t capacity = 128;
  // At most this many hot keys at once (pinned, exported). REQUIRES: >= 1.
  std::size_t top_k = 16;
  // Rates are measured over this window, re-evaluated every
  // window / kHotKeyBucketsPerWindow. REQUIRES: 4 ms..1 h.
  Duration window = std::chrono::seconds(1);
  // A key read at least this often (reads/s, in this process) is hot.
  // REQUIRES: > 0.
  double min_rate = 1000;
  // A key read at least viral_min_rate times per second and at least
  // viral_growth times as often as over the window before is hot (viral).
  // REQUIRES: viral_min_rate > 0, viral_growth > 1.
  double viral_min_rate = 500;
  double viral_growth = 10;
  // Shares of all reads in the window (0: not used). REQUIRES: in [0, 1].
  double min_share = 0.01;
  double viral_min_share = 0.005;
  // The Protector records one read in this many (per thread); the hit path
  // pays one mask test for the rest. 0 (the default): adaptive — the
  // interval is a power of two from 1 to kMaxHotKeySampleInterval, doubled
  // or halved at each bucket's end so that about samples_per_window reads
  // are recorded per window: a quiet process records every read, a busy one
  // pays for a few thousand a second (measured: a recorded read costs
  // ~0.2 µs; one in 64 of ~60 ns L1 hits, under 1%). Else fixed.
  // REQUIRES: 0 or a power of two in 1..kMaxHotKeySampleInterval.
  std::uint32_t sample_one_in = 0;
  // Adaptive sampling's target. REQUIRES: >= 64.
  std::uint32_t samples_per_window = 4096;
  // The Protector refreshes a hot key in the background on a read after
  // this fraction of its TTL (whatever ProtectorOptions::early_refresh
  // says), so a hot key never expires in front of a caller.
  // REQUIRES: in (0, 1).
  double refresh_fraction = 0.8;

  // Returns kInvalidArgument naming the first bad field.
  Result<void> validate() const;
};

struct HotKey {
  std::string key{};
  double rate = 0;  // estimated reads/s over the last window
  // Over the window before: surely (guaranteed counts, as `rate`), and at
  // most (a key the sketch did not hold gets its smallest counter). Growth
  // is judged against the latter.
  double previous_rate = 0;
  double previous_rate_max = 0;
  TimePoint detected_at{};  // when it turned hot (this time)
  bool viral = false;       // turned hot by growth rather than by rate
  // Requests that waited for a load of the key since it turned hot (the
  // Protector counts them; record_load_wait()).
  std::uint64_t load_waits = 0;
};

// What one evaluation changed: keys that turned hot, keys that cooled down.
struct HotKeyChanges {
  std::vector<HotKey> turned_hot{};
  std::vector<std::string> cooled{};
  // A bucket ended and the hot set was evaluated (even if nothing changed).
  bool evaluated = false;
  bool empty() const noexcept { return turned_hot.empty() && cooled.empty(); }
};

class HotKeyDetector {
 public:
  // Errors: kInvalidArgument from options.validate() or a null clock.
  static Result<std::unique_ptr<HotKeyDetector>> create(HotKeyOptions options,
                                                        std::shared_ptr<Clock> clock);
  ~HotKeyDetector();
  HotKeyDetector(const HotKeyDetector&) = delete;
  HotKeyDetector& operator=(const HotKeyDetector&) = delete;

  // Counts `weight` reads of `key` at `now` (the Protector passes the
  // sample_interval() it sampled with). When `now` ends a bucket, the hot
  // set is evaluated first and what changed is returned (else nothing).
  // Instants earlier than the current bucket count into it.
  HotKeyChanges record(std::string_view key, TimePoint now, std::uint64_t weight = 1);
  // record(), unless another thread is recording right now: then the read
  // is not counted and nullopt returned (the Protector's sampled hit path
  // never waits; both threads' keys lose samples alike).
  std::optional<HotKeyChanges> try_record(std::string_view key, TimePoint now,
                                          std::uint64_t weight = 1);
  // Ends the buckets that `now` has passed and evaluates, without a read
  // (a quiet process's hot keys cool down).
  HotKeyChanges advance(TimePoint now);

  // The hot keys, by rate, highest first (at most top_k).
  std::vector<HotKey> hot_keys() const;
  bool is_hot(std::string_view key) const;
  // How many keys are hot. Lock-free.
  std::size_t hot_count() const noexcept { return hot_count_.load(std::memory_order_relaxed); }
  // The sampling interval to use now (options' sample_one_in when fixed, else
  // adapted at each bucket's end). Lock-free.
  std::uint32_t sample_interval() const noexcept {
    return sample_interval_.load(std::memory_order_relaxed);
  }
  // Counts a request that waited for a load of `key`, if it is hot.
  void record_load_wait(std::string_view key);
  // Bytes held by the sketches and the hot set (keys included): bounded by
  // the options, not by the number of distinct keys seen.
  std::size_t memory_bytes() const;
  const HotKeyOptions& options() const noexcept { return options_; }

 private:
  struct Sketches;  // hot_key_detector.cc
  HotKeyDetector(HotKeyOptions options, std::shared_ptr<Clock> clock);
  // REQUIRES: sketch_mutex_ held.
  HotKeyChanges roll_to(TimePoint now);
  // record()'s body. REQUIRES: sketch_mutex_ held.
  HotKeyChanges record_locked(std::string_view key, TimePoint now, std::uint64_t weight);
  // Doubles or halves an adaptive sampling interval towards
  // samples_per_window. REQUIRES: sketch_mutex_ held.
  void adapt_sampling(std::uint64_t recorded_last_bucket);

  const HotKeyOptions options_;
  const std::shared_ptr<Clock> clock_;
  const Duration bucket_;  // window / kHotKeyBucketsPerWindow
  // The sketches and the bucket clock: taken by record()/advance() only.
  mutable std::mutex sketch_mutex_;
  std::unique_ptr<Sketches> sketches_;  // guarded by sketch_mutex_
  // The published hot set: written by an evaluation (sketch_mutex_ held,
  // then this one), read by hot_keys()/is_hot(). Lock order: sketch, hot.
  mutable std::mutex hot_mutex_;
  std::vector<HotKey> hot_;  // guarded by hot_mutex_; at most top_k, by rate
  // hot_.size(), published with it: lets is_hot() and record_load_wait()
  // skip the lock while nothing is hot (the common case on the miss path).
  std::atomic<std::size_t> hot_count_{0};
  // Written under sketch_mutex_ at a bucket's end; read anywhere.
  std::atomic<std::uint32_t> sample_interval_{1};
};

}  // namespace herdguard
