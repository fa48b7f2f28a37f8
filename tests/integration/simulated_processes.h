// Several Protectors in one test, each with its own RedisFleet (client,
// L2, lock, notifier) over one Redis URL — a standalone server, a cluster
// or Sentinels — standing for several processes that share nothing but
// Redis; and a database that counts its loads and takes 50 ms each, so a
// herd overlaps with the load.
//
// Example:
//   SlowCountingDatabase db;
//   auto processes = SimulatedProcesses::start(cluster->url(), 4, "herd:", db.repository());
//   processes.protectors[0]->get("k");
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "herdguard/herdguard.h"

namespace herdguard::testing {

struct SlowCountingDatabase {
  std::atomic<int> loads{0};
  std::shared_ptr<Repository> repository() {
    return std::make_shared<CallbackRepository>(
        [this](std::string_view key, Deadline) -> Result<std::optional<std::string>> {
          loads.fetch_add(1);
          std::this_thread::sleep_for(std::chrono::milliseconds(50));
          return std::optional<std::string>("value-of-" + std::string(key));
        });
  }
};

struct SimulatedProcesses {
  std::vector<RedisFleet> fleets;
  std::vector<std::unique_ptr<Protector>> protectors;

  // `count` protectors with TTL 60 s, lease 2 s, command_timeout 1 s, each
  // subscribed before it is returned; `l1` false makes every read go to
  // Redis. Throws std::runtime_error when one cannot be set up.
  static SimulatedProcesses start(const std::string& redis_url, int count,
                                  const std::string& prefix,
                                  const std::shared_ptr<Repository>& repository, bool l1 = true) {
    using namespace std::chrono_literals;
    SimulatedProcesses out;
    for (int i = 0; i < count; ++i) {
      auto fleet = RedisFleet::connect(
          {.redis = {.url = redis_url, .command_timeout = 1s}, .prefix = prefix, .lease = 2s});
      if (!fleet) throw std::runtime_error(fleet.error().to_string());
      if (!fleet->notifier->wait_subscribed(Deadline::after(5s)))
        throw std::runtime_error("the notifier did not subscribe within 5 s");
      ProtectorOptions options{.ttl = 60s};
      options.l1_enabled = l1;
      fleet->apply_to(options);
      auto protector = Protector::create(std::move(options), repository);
      if (!protector) throw std::runtime_error(protector.error().to_string());
      out.protectors.push_back(std::move(*protector));
      out.fleets.push_back(std::move(*fleet));
    }
    return out;
  }
};

}  // namespace herdguard::testing
