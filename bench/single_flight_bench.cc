// Single-flight costs: the overhead of an uncontended call (one caller, so no
// sharing: the price of the machinery itself; the leader runs the load on its
// own thread), the same at 1, 2 and 8 threads on distinct and on one key, with
// heap allocations per call, and the memory each waiting async caller holds.
// Go's singleflight.Group.Do is the yardstick: ../shared/anchors/go-singleflight.
#include <benchmark/benchmark.h>
#include <herdguard/single_flight.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <new>
#include <string>

namespace {

// Counts heap bytes requested while `counting` is set (this binary only),
// and every allocation always (for allocations per call).
std::atomic<bool> counting{false};
std::atomic<std::size_t> counted_bytes{0};
std::atomic<std::uint64_t> allocations{0};

}  // namespace

// GCC sees free() paired with a pointer from operator new once these are
// inlined into each other; here they are the same allocator by construction.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void* operator new(std::size_t n) {
  allocations.fetch_add(1, std::memory_order_relaxed);
  if (counting.load(std::memory_order_relaxed))
    counted_bytes.fetch_add(n, std::memory_order_relaxed);
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
#pragma GCC diagnostic pop

namespace {

using herdguard::Deadline;
using herdguard::Result;

void BM_DirectLoaderCall(benchmark::State& state) {
  herdguard::SingleFlight::Loader loader = [](Deadline) -> Result<std::string> {
    return std::string("v");
  };
  for (auto _ : state) {
    auto r = loader(Deadline::after(std::chrono::seconds(1)));
    benchmark::DoNotOptimize(r);
  }
}
BENCHMARK(BM_DirectLoaderCall);

// Reports heap allocations per iteration over the benchmark's loop (all
// threads), read at thread 0's start and end.
class AllocationsPerCall {
 public:
  explicit AllocationsPerCall(benchmark::State& state) : state_(state) {
    if (state.thread_index() == 0) start_ = allocations.load();
  }
  ~AllocationsPerCall() {
    if (state_.thread_index() != 0) return;
    const double calls = static_cast<double>(state_.iterations()) * state_.threads();
    state_.counters["allocs_per_call"] = static_cast<double>(allocations.load() - start_) / calls;
  }

 private:
  benchmark::State& state_;
  std::uint64_t start_ = 0;
};

std::unique_ptr<herdguard::SingleFlight>& shared_flights() {
  static auto flights = std::move(*herdguard::SingleFlight::create({}));
  return flights;
}

const herdguard::SingleFlight::Loader& instant_loader() {
  static const herdguard::SingleFlight::Loader loader = [](Deadline) -> Result<std::string> {
    return std::string("v");
  };
  return loader;
}

// One key per thread: no sharing, every call is a flight of its own.
void BM_SingleFlightUncontendedCall(benchmark::State& state) {
  auto& flights = shared_flights();
  const std::string key = "key-" + std::to_string(state.thread_index());
  const Deadline deadline = Deadline::after(std::chrono::hours(1));
  AllocationsPerCall allocs(state);
  for (auto _ : state) {
    auto r = flights->call(key, deadline, instant_loader());
    benchmark::DoNotOptimize(r);
  }
}
BENCHMARK(BM_SingleFlightUncontendedCall)->Threads(1)->Threads(2)->Threads(8)->UseRealTime();

// Every thread on one key: calls overlap and join each other's flights.
void BM_SingleFlightOneKeyCall(benchmark::State& state) {
  auto& flights = shared_flights();
  const Deadline deadline = Deadline::after(std::chrono::hours(1));
  AllocationsPerCall allocs(state);
  for (auto _ : state) {
    auto r = flights->call("hot", deadline, instant_loader());
    benchmark::DoNotOptimize(r);
  }
}
BENCHMARK(BM_SingleFlightOneKeyCall)->Threads(1)->Threads(2)->Threads(8)->UseRealTime();

// Joins `range(0)` async waiters to one held flight and reports heap bytes per waiter.
void BM_SingleFlightMemoryPerAsyncWaiter(benchmark::State& state) {
  const auto waiters = static_cast<std::size_t>(state.range(0));
  double bytes_per_waiter = 0;
  for (auto _ : state) {
    auto flights =
        std::move(*herdguard::SingleFlight::create({.max_waiters_per_key = waiters + 1}));
    std::mutex mutex;
    std::condition_variable cv;
    bool open = false;
    herdguard::SingleFlight::Loader loader = [&](Deadline) -> Result<std::string> {
      std::unique_lock lock(mutex);
      cv.wait(lock, [&] { return open; });
      return std::string("v");
    };
    std::atomic<std::size_t> delivered{0};
    (void)flights->call_async("key", loader, [&](const Result<std::string>&) { delivered++; });
    counted_bytes = 0;
    counting = true;
    for (std::size_t i = 0; i < waiters; ++i) {
      (void)flights->call_async("key", loader, [&](const Result<std::string>&) { delivered++; });
    }
    counting = false;
    bytes_per_waiter = static_cast<double>(counted_bytes.load()) / static_cast<double>(waiters);
    {
      std::lock_guard lock(mutex);
      open = true;
    }
    cv.notify_all();
    flights.reset();
  }
  state.counters["bytes_per_waiter"] = bytes_per_waiter;
}
BENCHMARK(BM_SingleFlightMemoryPerAsyncWaiter)
    ->Arg(10'000)
    ->Iterations(3)
    ->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
