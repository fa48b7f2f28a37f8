// HotKeyDetector: its memory against the number of distinct keys, and the
// cost of one record(). The issue asks that the sketch's memory be flat from
// 10^4 to 10^7 distinct keys: BM_HotKeySketchMemory feeds that many distinct
// keys (one read in five on 16 hot ones) through a detector with default
// options and reports memory_bytes() and the process's RSS growth, which
// should not move with the key count. BM_HotKeyRecord is the price of one
// sampled read on the Protector's paths, at 1 and 2 threads (record()
// serializes on one mutex).
#include <benchmark/benchmark.h>
#include <herdguard/herdguard.h>
#include <unistd.h>

#include <charconv>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

namespace {

// Resident set size in bytes, from /proc/self/statm (0 if unreadable).
std::int64_t rss_bytes() {
  std::ifstream statm("/proc/self/statm");
  std::int64_t size_pages = 0;
  std::int64_t resident_pages = 0;
  if (!(statm >> size_pages >> resident_pages)) return 0;
  return resident_pages * static_cast<std::int64_t>(sysconf(_SC_PAGESIZE));
}

// Writes "key:<n>" into `out`, reusing its buffer.
void make_key(std::uint64_t n, std::string& out) {
  char digits[24];
  const auto [end, ec] = std::to_chars(digits, digits + sizeof(digits), n);
  out.assign("key:");
  out.append(digits, end);
}

void BM_HotKeySketchMemory(benchmark::State& state) {
  const auto distinct = static_cast<std::uint64_t>(state.range(0));
  constexpr std::uint64_t kSteps = 20;  // the clock moves 50 ms after each 1/20th
  constexpr std::uint64_t kHotKeys = 16;
  std::size_t sketch_bytes = 0;
  std::int64_t rss_growth = 0;
  std::uint64_t records = 0;
  for (auto _ : state) {
    const std::int64_t rss_before = rss_bytes();
    auto clock = std::make_shared<herdguard::ManualClock>();
    auto created = herdguard::HotKeyDetector::create({}, clock);
    if (!created) {
      const std::string message = created.error().to_string();
      state.SkipWithError(message.c_str());
      return;
    }
    herdguard::HotKeyDetector& detector = **created;
    std::string key;
    key.reserve(32);
    const std::uint64_t step = (distinct + kSteps - 1) / kSteps;
    for (std::uint64_t i = 0; i < distinct; ++i) {
      const herdguard::TimePoint now = clock->now();
      make_key(i, key);  // every key at least once
      benchmark::DoNotOptimize(detector.record(key, now));
      ++records;
      if (i % 4 == 0) {  // skew: one read in five goes to 16 hot keys
        make_key((i / 4) % kHotKeys, key);
        benchmark::DoNotOptimize(detector.record(key, now));
        ++records;
      }
      if ((i + 1) % step == 0) clock->advance(std::chrono::milliseconds(50));
    }
    sketch_bytes = detector.memory_bytes();
    rss_growth = rss_bytes() - rss_before;
  }
  state.counters["sketch_bytes"] = static_cast<double>(sketch_bytes);
  state.counters["rss_growth_bytes"] = static_cast<double>(rss_growth);
  state.counters["distinct_keys"] = static_cast<double>(distinct);
  state.SetItemsProcessed(static_cast<std::int64_t>(records));
}
BENCHMARK(BM_HotKeySketchMemory)
    ->Arg(10'000)
    ->Arg(100'000)
    ->Arg(1'000'000)
    ->Arg(10'000'000)
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond);

constexpr std::size_t kRecordKeys = 100'000;

const std::vector<std::string>& record_keys() {
  static const std::vector<std::string> keys = [] {
    std::vector<std::string> k(kRecordKeys);
    for (std::size_t i = 0; i < kRecordKeys; ++i) make_key(i, k[i]);
    return k;
  }();
  return keys;
}

// Shared by every thread and every run, as the Protector's one detector is.
// The clock stands still, so no bucket ends: this is the cost of counting,
// without the (once per bucket) evaluation.
herdguard::HotKeyDetector& record_detector() {
  static const std::unique_ptr<herdguard::HotKeyDetector> detector = [] {
    auto created =
        herdguard::HotKeyDetector::create({}, std::make_shared<herdguard::ManualClock>());
    return std::move(*created);
  }();
  return *detector;
}

void BM_HotKeyRecord(benchmark::State& state) {
  const std::vector<std::string>& keys = record_keys();
  herdguard::HotKeyDetector& detector = record_detector();
  const herdguard::TimePoint now = herdguard::ManualClock().now();
  std::size_t i = static_cast<std::size_t>(state.thread_index()) * 7919;
  for (auto _ : state) {
    benchmark::DoNotOptimize(detector.record(keys[i % kRecordKeys], now, 16));
    ++i;
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_HotKeyRecord)->Threads(1)->Threads(2)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
