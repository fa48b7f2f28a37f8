// A GET through RedisClient on a Redis Cluster (slot lookup, the owner's
// pool) against a raw hiredis GET sent straight to the node that owns the
// key, and a Protector L2 hit (L1 disabled) over the cluster; 1 and 8
// threads. Everything runs against one local 3-primary cluster that the
// benchmark starts (the tests' fixture), over loopback TCP, so the ratio
// of the two GET rows is the figure to read (issue 13: >= 0.9).
#include <benchmark/benchmark.h>
#include <herdguard/herdguard.h>
#include <hiredis/hiredis.h>

#include <memory>
#include <stdexcept>
#include <string>

#include "redis_cluster.h"

namespace {

using namespace std::chrono_literals;
const std::string kKey = "product:42";
const std::string kValue(100, 'v');

herdguard::testing::RedisCluster& cluster() {
  static auto c = herdguard::testing::RedisCluster::start();
  return *c;
}

herdguard::RedisClient& client() {
  static std::unique_ptr<herdguard::RedisClient> c = [] {
    auto created = herdguard::RedisClient::create({.url = cluster().url(), .pool_size = 8});
    if (!created) throw std::runtime_error(created.error().to_string());
    if (!(*created)->command({"SET", kKey, kValue})) throw std::runtime_error("SET failed");
    return std::move(*created);
  }();
  return *c;
}

void BM_ClusterClientGet(benchmark::State& state) {
  herdguard::RedisClient& c = client();
  for (auto _ : state) {
    auto v = c.command({"GET", kKey});
    if (!v) state.SkipWithError(v.error().to_string().c_str());
    benchmark::DoNotOptimize(v);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ClusterClientGet)->Threads(1)->Threads(8)->UseRealTime();

// The owner found once, outside the loop: the floor for a GET of this key.
void BM_RawHiredisGetOnTheOwner(benchmark::State& state) {
  (void)client();  // the key is written
  auto reply = client().command({"CLUSTER", "KEYSLOT", kKey});
  if (!reply) {
    state.SkipWithError("CLUSTER KEYSLOT failed");
    return;
  }
  const int port = cluster().port_for_slot(static_cast<int>(reply->integer));
  timeval tv{1, 0};
  redisContext* c = redisConnectWithTimeout("127.0.0.1", port, tv);
  if (c == nullptr || c->err) {
    state.SkipWithError("cannot connect");
    if (c) redisFree(c);
    return;
  }
  const char* argv[] = {"GET", kKey.c_str()};
  const size_t argvlen[] = {3, kKey.size()};
  for (auto _ : state) {
    auto* r = static_cast<redisReply*>(redisCommandArgv(c, 2, argv, argvlen));
    if (r == nullptr || r->type != REDIS_REPLY_STRING) state.SkipWithError("GET failed");
    std::string value(r ? r->str : "", r ? r->len : 0);
    benchmark::DoNotOptimize(value);
    if (r) freeReplyObject(r);
  }
  redisFree(c);
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_RawHiredisGetOnTheOwner)->Threads(1)->Threads(8)->UseRealTime();

struct Protected {
  herdguard::RedisFleet fleet;
  std::unique_ptr<herdguard::Protector> protector;
};

void BM_ProtectorGetL2HitOnACluster(benchmark::State& state) {
  static Protected* p = [] {
    auto fleet = herdguard::RedisFleet::connect(
        {.redis = {.url = cluster().url(), .pool_size = 8}, .prefix = "bench:"});
    if (!fleet) throw std::runtime_error(fleet.error().to_string());
    herdguard::ProtectorOptions options{.ttl = 24h};
    options.l1_enabled = false;
    fleet->apply_to(options);
    auto repo = std::make_shared<herdguard::CallbackRepository>(
        [](std::string_view, herdguard::Deadline) -> herdguard::Result<std::optional<std::string>> {
          return std::optional<std::string>(kValue);
        });
    auto protector = herdguard::Protector::create(std::move(options), repo);
    if (!protector) throw std::runtime_error(protector.error().to_string());
    if (!(*protector)->get(kKey)) throw std::runtime_error("warm-up get failed");
    return new Protected{std::move(*fleet), std::move(*protector)};  // lives for the run
  }();
  for (auto _ : state) {
    auto v = p->protector->get(kKey);
    if (!v) state.SkipWithError(v.error().to_string().c_str());
    benchmark::DoNotOptimize(v);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ProtectorGetL2HitOnACluster)->Threads(1)->Threads(8)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
