// Protector::get on an L2 hit (L1 disabled: every get is one Redis GET plus
// envelope decoding), against a raw hiredis GET of the same key on the same
// server, at 1 and 8 threads. The Protector side uses a pool of 8
// connections; each raw thread has its own connection. Both run in the same
// binary against one redis-server on a unix socket, so their ratio is the
// figure to read.
#include <benchmark/benchmark.h>
#include <herdguard/herdguard.h>
#include <hiredis/hiredis.h>

#include <memory>
#include <stdexcept>
#include <string>

#include "redis_server.h"

namespace {

using namespace std::chrono_literals;
const std::string kKey = "product:42";
const std::string kValue(100, 'v');

herdguard::testing::RedisServer& server() {
  static auto s = herdguard::testing::RedisServer::start();
  return *s;
}

struct Protected {
  herdguard::RedisFleet fleet;
  std::unique_ptr<herdguard::Protector> protector;
};

Protected& protected_side() {
  static Protected* p = [] {
    auto fleet = herdguard::RedisFleet::connect(
        {.redis = {.url = server().url(), .pool_size = 8}, .prefix = "bench:"});
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
  return *p;
}

void BM_ProtectorGetL2Hit(benchmark::State& state) {
  herdguard::Protector& p = *protected_side().protector;
  for (auto _ : state) {
    auto v = p.get(kKey);
    if (!v) state.SkipWithError(v.error().to_string().c_str());
    benchmark::DoNotOptimize(v);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_ProtectorGetL2Hit)->Threads(1)->Threads(8)->UseRealTime();

void BM_RawHiredisGet(benchmark::State& state) {
  (void)protected_side();  // same key, written as an envelope by the protector
  const std::string redis_key = protected_side().fleet.l2->redis_key(kKey);
  timeval tv{1, 0};
  redisContext* c = redisConnectUnixWithTimeout(server().socket_path().c_str(), tv);
  if (c == nullptr || c->err) {
    state.SkipWithError("cannot connect");
    if (c) redisFree(c);
    return;
  }
  const char* argv[] = {"GET", redis_key.c_str()};
  const size_t argvlen[] = {3, redis_key.size()};
  for (auto _ : state) {
    auto* reply = static_cast<redisReply*>(redisCommandArgv(c, 2, argv, argvlen));
    if (reply == nullptr || reply->type != REDIS_REPLY_STRING) state.SkipWithError("GET failed");
    std::string value(reply ? reply->str : "", reply ? reply->len : 0);
    benchmark::DoNotOptimize(value);
    if (reply) freeReplyObject(reply);
  }
  redisFree(c);
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_RawHiredisGet)->Threads(1)->Threads(8)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
