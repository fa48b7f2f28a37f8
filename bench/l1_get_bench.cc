// Protector::get on an L1 hit, against the simplest thing a user might write
// instead: a sharded std::unordered_map behind std::shared_mutex. Both copy the
// value out, both run at 1 and 2 threads in the same binary, so their ratio is
// meaningful on a noisy machine.
#include <benchmark/benchmark.h>
#include <herdguard/herdguard.h>

#include <array>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

constexpr int kKeys = 1024;
const std::string kValue(100, 'v');  // past the small-string buffer: both sides allocate a copy

std::vector<std::string> make_keys() {
  std::vector<std::string> keys;
  for (int i = 0; i < kKeys; ++i) keys.push_back("product:" + std::to_string(i));
  return keys;
}

const std::vector<std::string>& keys() {
  static const std::vector<std::string> k = make_keys();
  return k;
}

class ShardedMap {
 public:
  void put(const std::string& k, const std::string& v) {
    Shard& s = shard(k);
    std::unique_lock lock(s.mutex);
    s.map[k] = v;
  }
  std::optional<std::string> get(const std::string& k) {
    Shard& s = shard(k);
    std::shared_lock lock(s.mutex);
    auto it = s.map.find(k);
    if (it == s.map.end()) return std::nullopt;
    return it->second;
  }

 private:
  struct Shard {
    std::shared_mutex mutex;
    std::unordered_map<std::string, std::string> map;
  };
  Shard& shard(const std::string& k) {
    return shards_[std::hash<std::string>{}(k) % shards_.size()];
  }
  std::array<Shard, 16> shards_;
};

std::unique_ptr<herdguard::Protector> make_protector(bool hot_keys, bool tagged = false) {
  auto repo = std::make_shared<herdguard::CallbackRepository>(
      [](std::string_view, herdguard::Deadline) -> herdguard::Result<std::optional<std::string>> {
        return std::optional<std::string>(kValue);
      });
  herdguard::ProtectorOptions options{.ttl = std::chrono::hours(24)};
  options.hot_keys.enabled = hot_keys;
  auto created = herdguard::Protector::create(options, repo);
  for (std::size_t i = 0; i < keys().size(); ++i) {
    herdguard::EntryOptions entry;
    // Three tags each, as a catalogue might: the product, its category, all.
    if (tagged) entry.tags = {keys()[i], "category:" + std::to_string(i % 16), "catalogue"};
    (void)(*created)->set(keys()[i], kValue, entry);
  }
  // An invalidation of a tag no entry carries: every entry is checked
  // against the tag versions once more (on its next read), then hits as before.
  if (tagged) (void)(*created)->invalidate_tag("unrelated");
  return std::move(*created);
}

// Tagged entries (tags.h: three each) after an unrelated tag invalidation.
herdguard::Protector& tagged_protector() {
  static std::unique_ptr<herdguard::Protector> p = make_protector(true, true);
  return *p;
}

// With the defaults (hot-key detection on).
herdguard::Protector& protector() {
  static std::unique_ptr<herdguard::Protector> p = make_protector(true);
  return *p;
}

// Hot-key detection off: the difference is what its sampling costs a hit.
herdguard::Protector& protector_without_hot_keys() {
  static std::unique_ptr<herdguard::Protector> p = make_protector(false);
  return *p;
}

ShardedMap& baseline() {
  static ShardedMap* m = [] {
    auto* map = new ShardedMap();  // lives for the whole benchmark run
    for (const auto& k : keys()) map->put(k, kValue);
    return map;
  }();
  return *m;
}

void BM_ProtectorGetL1Hit(benchmark::State& state) {
  herdguard::Protector& p = protector();
  std::size_t i = static_cast<std::size_t>(state.thread_index()) * 97;
  for (auto _ : state) {
    auto v = p.get(keys()[i++ % kKeys]);
    benchmark::DoNotOptimize(v);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ProtectorGetL1Hit)->Threads(1)->Threads(2)->UseRealTime();

void BM_ProtectorGetL1HitNoHotKeys(benchmark::State& state) {
  herdguard::Protector& p = protector_without_hot_keys();
  std::size_t i = static_cast<std::size_t>(state.thread_index()) * 97;
  for (auto _ : state) {
    auto v = p.get(keys()[i++ % kKeys]);
    benchmark::DoNotOptimize(v);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ProtectorGetL1HitNoHotKeys)->Threads(1)->Threads(2)->UseRealTime();

// The read path with tags: the same hit as BM_ProtectorGetL1Hit, on
// entries that carry tags, once their tags were checked.
void BM_ProtectorGetL1HitTagged(benchmark::State& state) {
  herdguard::Protector& p = tagged_protector();
  std::size_t i = static_cast<std::size_t>(state.thread_index()) * 97;
  for (auto _ : state) {
    auto v = p.get(keys()[i++ % kKeys]);
    benchmark::DoNotOptimize(v);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ProtectorGetL1HitTagged)->Threads(1)->Threads(2)->UseRealTime();

// Tagged hits while unrelated tags are invalidated (one per 10,000 reads of
// thread 0): each invalidation makes every entry's next read check its tags.
void BM_ProtectorGetL1HitTaggedUnderInvalidations(benchmark::State& state) {
  herdguard::Protector& p = tagged_protector();
  std::size_t i = static_cast<std::size_t>(state.thread_index()) * 97;
  std::uint64_t n = 0;
  for (auto _ : state) {
    if (state.thread_index() == 0 && ++n % 10'000 == 0)
      (void)p.invalidate_tag("unrelated:" + std::to_string(n % 64));
    auto v = p.get(keys()[i++ % kKeys]);
    benchmark::DoNotOptimize(v);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ProtectorGetL1HitTaggedUnderInvalidations)->Threads(1)->Threads(2)->UseRealTime();

void BM_ShardedMapSharedMutexGet(benchmark::State& state) {
  ShardedMap& m = baseline();
  std::size_t i = static_cast<std::size_t>(state.thread_index()) * 97;
  for (auto _ : state) {
    auto v = m.get(keys()[i++ % kKeys]);
    benchmark::DoNotOptimize(v);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ShardedMapSharedMutexGet)->Threads(1)->Threads(2)->UseRealTime();

// One hot key, as in a herd's aftermath: every thread reads the same entry.
void BM_ProtectorGetL1HitOneHotKey(benchmark::State& state) {
  herdguard::Protector& p = protector();
  for (auto _ : state) {
    auto v = p.get(keys()[0]);
    benchmark::DoNotOptimize(v);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ProtectorGetL1HitOneHotKey)->Threads(1)->Threads(2)->UseRealTime();

void BM_ShardedMapGetOneHotKey(benchmark::State& state) {
  ShardedMap& m = baseline();
  for (auto _ : state) {
    auto v = m.get(keys()[0]);
    benchmark::DoNotOptimize(v);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ShardedMapGetOneHotKey)->Threads(1)->Threads(2)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
