#include "worker_protection.h"

#include <fmt/format.h>

#include <charconv>
#include <random>

#include "database.h"

namespace herdguard::cli {
namespace {

// --invalidate-tag-rate: the database's rows tagged in groups of 100 (key:N
// carries "group:<N / 100>"), as a repository that knows each row's group
// would tag them.
class GroupTaggedRepository final : public Repository {
 public:
  explicit GroupTaggedRepository(std::shared_ptr<Repository> inner) : inner_(std::move(inner)) {}
  Result<std::optional<std::string>> load(std::string_view key, Deadline deadline) override {
    return inner_->load(key, deadline);
  }
  Result<LoadedEntry> load_entry(std::string_view key, Deadline deadline) override {
    auto loaded = inner_->load(key, deadline);
    if (!loaded) return std::unexpected(std::move(loaded.error()));
    LoadedEntry entry{.value = std::move(*loaded)};
    int n = 0;
    if (key.starts_with("key:") &&
        std::from_chars(key.data() + 4, key.data() + key.size(), n).ec == std::errc()) {
      entry.options.tags = {fmt::format("group:{}", n / 100)};
    }
    return entry;
  }
  std::vector<Result<std::optional<std::string>>> load_many(std::span<const std::string> keys,
                                                            Deadline deadline) override {
    return inner_->load_many(keys, deadline);
  }
  bool loads_in_batches() const noexcept override { return inner_->loads_in_batches(); }

 private:
  const std::shared_ptr<Repository> inner_;
};

}  // namespace

Result<WorkerProtection> build_worker_protection(
    const Scenario& s, int index, const std::string& db, const std::string& redis_url,
    const std::string& l3_url, const std::string& refusing_socket, const std::string& prefix,
    std::shared_ptr<SharedDbLoad> db_load) {
  WorkerProtection p;
  // With a capacity, the saturating server spends the latency (and holds
  // this worker's connections); the database under it answers at once.
  const bool saturating = s.db_capacity > 0;
  auto repository = open_database(db, saturating ? 0 : s.db_latency_ms, s.db_connections);
  if (!repository) return std::unexpected(repository.error());
  std::shared_ptr<Repository> server = std::move(*repository);
  if (saturating) {
    server = std::make_shared<SaturatingDatabase>(
        std::move(server), std::move(db_load), s.db_capacity,
        std::chrono::milliseconds(s.db_latency_ms), s.db_connections);
  }
  p.db = std::make_shared<FaultyRepository>(std::move(server), s.faults, refusing_socket);
  const auto ttl = std::chrono::milliseconds(s.ttl_ms);
  const auto timeout = std::chrono::milliseconds(s.timeout_ms);
  const bool fleet_mode = uses_fleet_lock(s.protect);
  if (!redis_url.empty()) {
    auto fleet = RedisFleet::connect(
        {.redis = {.url = redis_url},
         .prefix = prefix,
         .lease = std::chrono::milliseconds(s.lease_ms),
         .notifications = s.notify && fleet_mode,
         .ready_channels = parse_ready_channels(s.ready_channels)
                               .value_or(RedisFleetOptions::ReadyChannels::kAuto)});
    if (!fleet) return std::unexpected(fleet.error());
    p.fleet = std::move(*fleet);
    if (p.fleet->notifier) (void)p.fleet->notifier->wait_subscribed(Deadline::after(timeout));
  }
  if (s.protect == Protection::kNone) {
    std::shared_ptr<Cache> cache;
    if (p.fleet) {
      cache = p.fleet->l2;
    } else {
      auto memory = MemoryCache::create({}, system_clock());
      if (!memory) return std::unexpected(memory.error());
      cache = std::shared_ptr<MemoryCache>(std::move(*memory));
    }
    auto repo = p.db;
    const double jitter = s.jitter;
    p.request = [cache, repo, ttl, timeout, jitter](const std::string& key) -> Result<std::string> {
      const TimePoint now = system_clock()->now();
      if (auto hit = cache->get(key); hit && *hit && (*hit)->is_fresh(now)) return (*hit)->value;
      auto loaded = repo->load(key, Deadline::after(timeout));
      if (!loaded) return std::unexpected(loaded.error());
      if (!*loaded) return make_error(ErrorKind::kNotFound, "no such key");
      thread_local std::mt19937 rng(std::random_device{}());
      const TimePoint until =
          now + jittered_ttl(ttl, jitter, std::uniform_real_distribution<double>(0, 1)(rng));
      (void)cache->put(key, {.value = **loaded, .fresh_until = until, .stale_until = until});
      return std::move(**loaded);
    };
    p.request_for = [request = p.request](const std::string&, const std::string& key,
                                          bool* rate_limited) {
      *rate_limited = false;
      return request(key);
    };
    p.request_many = [request = p.request](const std::vector<std::string>& keys) {
      std::vector<Result<std::string>> answers;
      for (const std::string& key : keys) answers.push_back(request(key));
      return answers;
    };
    return p;
  }
  ProtectorOptions options{.ttl = ttl, .ttl_jitter = s.jitter, .request_timeout = timeout};
  options.single_flight.load_timeout = timeout;
  auto db_limit = parse_db_limit(s.db_limit);
  if (!db_limit) return std::unexpected(db_limit.error());
  options.db_limit.mode = db_limit->mode;
  options.db_limit.limit = db_limit->limit;
  auto early = parse_early_refresh(s.early_refresh);
  if (!early) return std::unexpected(early.error());
  options.early_refresh = *early;
  if (!s.adaptive_ttl.empty()) {
    auto adaptive = parse_adaptive_ttl(s.adaptive_ttl);
    if (!adaptive) return std::unexpected(adaptive.error());
    options.adaptive_ttl = *adaptive;
  }
  if (s.protect == Protection::kFull) {
    options.stale_while_revalidate = std::chrono::hours(1);
    options.fail_safe_max_staleness = std::chrono::hours(1);
  } else {
    options.stale_while_revalidate = Duration::zero();
    options.fail_safe_max_staleness = Duration::zero();
  }
  if (p.fleet) {
    options.l2 = p.fleet->l2;
    if (fleet_mode) {
      options.fleet_lock = p.fleet->locks;
      options.notifier = p.fleet->notifier;
    }
  }
  if (!l3_url.empty() && p.fleet) {
    // Short timeouts, as a pod would set them: memcached is a cache, and a
    // dead one must cost little (each failure reads as a miss).
    auto l3 = MemcachedCache::create({.url = l3_url, .prefix = prefix});
    if (!l3) return std::unexpected(l3.error());
    options.l3 = std::move(*l3);
  }
  if (s.rate_limit > 0) {
    auto limiter = RateLimiter::create(
        {.rate = s.rate_limit, .burst = s.rate_limit_burst, .prefix = prefix + "rl:"},
        p.fleet ? p.fleet->client : nullptr);
    if (!limiter) return std::unexpected(limiter.error());
    p.rate_limiter = std::move(*limiter);
    options.rate_limiter = p.rate_limiter;
  }
  if (s.metrics_port > 0) {
    p.registry = std::make_shared<MetricsRegistry>();
    options.metrics_registry = p.registry;
    options.metrics_name = fmt::format("worker{}", index);
  }
  std::shared_ptr<Repository> loads_from = p.db;
  if (s.invalidate_tag_rate > 0) loads_from = std::make_shared<GroupTaggedRepository>(p.db);
  auto protector = Protector::create(std::move(options), std::move(loads_from));
  if (!protector) return std::unexpected(protector.error());
  p.protector = std::move(*protector);
  if (p.registry) {
    auto server = MetricsServer::start({.port = s.metrics_port + index}, p.registry);
    if (!server) return std::unexpected(server.error());
    p.metrics_server = std::move(*server);
  }
  Protector* raw = p.protector.get();
  if (s.protect == Protection::kFull) {
    p.request = [raw](const std::string& key) { return raw->get_stale_while_revalidate(key); };
  } else {
    p.request = [raw](const std::string& key) { return raw->get(key); };
  }
  p.request_for = [raw, timeout](const std::string& client, const std::string& key,
                                 bool* rate_limited) {
    return raw->get_for(client, key, Deadline::after(timeout), rate_limited);
  };
  p.request_many = [raw, timeout](const std::vector<std::string>& keys) {
    return raw->get_many(keys, Deadline::after(timeout));
  };
  return p;
}

}  // namespace herdguard::cli
