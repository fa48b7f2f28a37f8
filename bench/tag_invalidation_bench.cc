// What one invalidate_tag costs Redis with 10^3 and 10^6 tagged entries in
// L2: the commands it runs (INFO commandstats, the script's inner commands
// included) and its wall time — the same whatever the number of entries,
// because invalidation is passive (tags.h). Then checks that an entry
// written before is refused (its get loads from the repository).
//
// A plain program against a redis-server it starts itself (the tests'
// fixture): bench_tag_invalidation [entries]   (default 1000000)
#include <fmt/format.h>
#include <herdguard/herdguard.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "redis_server.h"

namespace {

using namespace std::chrono_literals;

// Every command's calls since CONFIG RESETSTAT but INFO's and CONFIG's.
std::map<std::string, long long> command_calls(herdguard::RedisClient& client) {
  std::map<std::string, long long> calls;
  auto info = client.command({"INFO", "commandstats"});
  if (!info) return calls;
  const std::string& text = info->str;
  std::size_t at = 0;
  while ((at = text.find("cmdstat_", at)) != std::string::npos) {
    const std::size_t colon = text.find(':', at);
    const std::string name = text.substr(at + 8, colon - at - 8);
    const std::size_t eq = text.find("calls=", colon);
    if (name != "info" && !name.starts_with("config"))
      calls[name] = std::stoll(text.substr(eq + 6));
    at = colon;
  }
  return calls;
}

// Writes entries [from, to) tagged `tag` straight into L2 (MSET, 1,000 per
// command): the envelopes a Protector's loads would have stored.
void write_tagged(herdguard::RedisClient& client, const herdguard::RedisCache& l2,
                  const std::string& tag, int from, int to) {
  herdguard::Envelope e;
  e.entry.value = "value";
  e.entry.fresh_until = herdguard::system_clock()->now() + 1h;
  e.entry.stale_until = e.entry.fresh_until;
  e.entry.tags = {tag};
  e.entry.tag_stamp = 1;
  e.version = 1;
  const std::string bytes = herdguard::encode_envelope(e);
  std::vector<std::string> argv{"MSET"};
  for (int i = from; i < to; ++i) {
    argv.push_back(l2.redis_key("item:" + std::to_string(i)));
    argv.push_back(bytes);
    if (argv.size() == 2001 || i + 1 == to) {
      std::vector<std::string_view> views(argv.begin(), argv.end());
      if (auto r = client.command(views); !r) {
        fmt::print(stderr, "MSET failed: {}\n", r.error().to_string());
        std::exit(1);
      }
      argv.resize(1);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  const int entries = argc > 1 ? std::atoi(argv[1]) : 1'000'000;
  auto server = herdguard::testing::RedisServer::start();
  auto fleet = herdguard::RedisFleet::connect({.redis = {.url = server->url()}, .prefix = "tb:"});
  if (!fleet) {
    fmt::print(stderr, "{}\n", fleet.error().to_string());
    return 1;
  }
  std::atomic<int> loads{0};
  herdguard::ProtectorOptions options{.ttl = 1h};
  fleet->apply_to(options);
  auto protector = herdguard::Protector::create(
      options, std::make_shared<herdguard::CallbackRepository>(
                   [&loads](std::string_view,
                            herdguard::Deadline) -> herdguard::Result<std::optional<std::string>> {
                     loads.fetch_add(1);
                     return std::optional<std::string>("reloaded");
                   }));
  if (!protector) {
    fmt::print(stderr, "{}\n", protector.error().to_string());
    return 1;
  }
  herdguard::RedisClient& client = *fleet->client;
  (void)(*protector)->invalidate_tag("warm-up");  // loads the script: not part of a measure
  fmt::print("entries_tagged,commands,evalsha,publish,invalidate_tag_us\n");
  int written = 0;
  for (int target : {1'000, entries}) {
    if (target <= written) continue;
    write_tagged(client, *fleet->l2, "bulk", written, target);
    written = target;
    (void)client.command({"CONFIG", "RESETSTAT"});
    const auto start = std::chrono::steady_clock::now();
    auto done = (*protector)->invalidate_tag("bulk");
    const auto us = std::chrono::duration_cast<std::chrono::microseconds>(
                        std::chrono::steady_clock::now() - start)
                        .count();
    if (!done) {
      fmt::print(stderr, "invalidate_tag: {}\n", done.error().to_string());
      return 1;
    }
    long long total = 0;
    const auto calls = command_calls(client);
    for (const auto& [name, n] : calls) total += n;
    fmt::print("{},{},{},{},{}\n", written, total, calls.count("evalsha") ? calls.at("evalsha") : 0,
               calls.count("publish") ? calls.at("publish") : 0, us);
  }
  // An entry written before the last invalidation is refused: its get loads.
  auto got = (*protector)->get("item:7");
  const bool refused = got && *got == "reloaded" && loads.load() == 1;
  auto dbsize = client.command({"DBSIZE"});
  fmt::print("# redis keys: {}; item:7 refused and reloaded: {}\n", dbsize ? dbsize->integer : -1,
             refused ? "yes" : "NO");
  return refused ? 0 : 1;
}
