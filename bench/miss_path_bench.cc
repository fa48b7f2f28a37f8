// The miss path: what a Protector::get that loads costs, against the least a
// user could write instead (call the loader, insert into a map), and how a
// cold start of many distinct keys behaves with default options (no fixed
// pool may turn it into errors). Measured in one binary, so ratios hold on a
// noisy machine. The cold-start runs report wall time and errors as counters.
#include <benchmark/benchmark.h>
#include <herdguard/herdguard.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <latch>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace {

using herdguard::Deadline;
using herdguard::Result;
using namespace std::chrono_literals;

std::string load_value(std::string_view) { return std::string(100, 'v'); }

// Bare: the loader's work plus an insert into one locked map.
void BM_BareLoadAndInsert(benchmark::State& state) {
  std::mutex mutex;
  std::unordered_map<std::string, std::string> map;
  std::uint64_t next = 0;
  for (auto _ : state) {
    std::string key = "k" + std::to_string(next++);
    std::string value = load_value(key);
    std::lock_guard lock(mutex);
    map.insert_or_assign(std::move(key), value);
    benchmark::DoNotOptimize(value);
  }
}
BENCHMARK(BM_BareLoadAndInsert);

std::unique_ptr<herdguard::Protector> protector_with(herdguard::CallbackRepository::LoadFunction f,
                                                     herdguard::ProtectorOptions options = {}) {
  auto created = herdguard::Protector::create(
      std::move(options), std::make_shared<herdguard::CallbackRepository>(std::move(f)));
  if (!created) throw std::runtime_error(created.error().to_string());
  return std::move(*created);
}

// Protector::get of a key never seen (default options, no Redis): L1 miss,
// single flight, breaker, repository, entry, L1 fill.
void BM_ProtectorMiss(benchmark::State& state) {
  auto protector = protector_with([](std::string_view key, Deadline) {
    return Result<std::optional<std::string>>(load_value(key));
  });
  std::uint64_t next = 0;
  for (auto _ : state) {
    auto r = protector->get("k" + std::to_string(next++));
    if (!r) state.SkipWithError(r.error().to_string().c_str());
    benchmark::DoNotOptimize(r);
  }
}
BENCHMARK(BM_ProtectorMiss);

// `threads` callers at once, each getting its own key, each load taking
// `load_ms`; with Protector defaults (request_timeout 2 s, load_timeout 5 s)
// unless `load_timeout` is given. Reports wall time of the whole herd and
// the errors. `mode` (the benchmark's argument): 0 plain cache-aside (each
// caller calls the database itself, the baseline), 1 Protector defaults
// (database limit off), 2 defaults with the adaptive database limit.
void cold_start(benchmark::State& state, int threads, std::chrono::milliseconds load_ms,
                std::optional<herdguard::Duration> load_timeout) {
  const bool protect = state.range(0) != 0;
  double wall_ms = 0;
  std::atomic<int> errors{0};
  for (auto _ : state) {
    herdguard::ProtectorOptions options;
    if (load_timeout) options.single_flight.load_timeout = *load_timeout;
    if (state.range(0) == 2) options.db_limit.mode = herdguard::LimitMode::kAdaptive;
    auto database = [load_ms](std::string_view key, Deadline) {
      std::this_thread::sleep_for(load_ms);  // the database's latency
      return Result<std::optional<std::string>>(load_value(key));
    };
    auto protector = protector_with(database, options);
    std::latch ready(threads + 1);
    std::vector<std::thread> callers;
    errors = 0;
    for (int i = 0; i < threads; ++i) {
      callers.emplace_back([&, i] {
        const std::string key = "cold-" + std::to_string(i);
        ready.arrive_and_wait();
        bool ok = protect ? protector->get(key).has_value()
                          : database(key, Deadline::after(2s)).has_value();
        if (!ok) errors.fetch_add(1);
      });
    }
    const auto start = std::chrono::steady_clock::now();
    ready.arrive_and_wait();
    for (auto& t : callers) t.join();
    wall_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  }
  state.counters["wall_ms"] = wall_ms;
  state.counters["errors"] = errors.load();
}

void BM_ColdStart1000KeysX20ms(benchmark::State& state) {
  cold_start(state, 1000, 20ms, std::nullopt);
}
BENCHMARK(BM_ColdStart1000KeysX20ms)
    ->ArgName("mode")
    ->Arg(0)
    ->Arg(1)
    ->Arg(2)
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

void BM_ColdStart100KeysX300msLoadTimeout1s(benchmark::State& state) {
  cold_start(state, 100, 300ms, std::chrono::seconds(1));
}
BENCHMARK(BM_ColdStart100KeysX300msLoadTimeout1s)
    ->ArgName("mode")
    ->Arg(0)
    ->Arg(1)
    ->Arg(2)
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
