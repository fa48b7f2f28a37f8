#include "protector/protector_metrics.h"

#include <fmt/format.h>

#include <functional>
#include <mutex>

#include "herdguard/protector.h"

namespace herdguard::internal {
namespace {

constexpr const char* kLayers[] = {"l1", "l2", "load"};
constexpr const char* kOutcomes[] = {"ok", "not_found", "stale", "fallback", "error"};
constexpr std::size_t kMaxHotKeyLabelBytes = 128;

// A key as a label value: keys are bytes, label values UTF-8 text.
std::string printable_label(std::string_view key) {
  std::string out(key.substr(0, kMaxHotKeyLabelBytes));
  for (char& c : out) {
    if (c < 0x20 || c > 0x7e) c = '?';
  }
  return out;
}

}  // namespace

Result<std::unique_ptr<ProtectorMetrics>> ProtectorMetrics::create(
    MetricsRegistry& registry, const std::string& name, std::vector<std::string> key_patterns,
    Protector* protector) {
  std::unique_ptr<ProtectorMetrics> m(new ProtectorMetrics());
  m->patterns_ = std::move(key_patterns);
  m->link_ = std::make_shared<Link>();
  m->link_->protector = protector;
  const Labels cache{{"cache", name}};

  std::vector<std::string> pattern_labels;
  for (const auto& p : m->patterns_) pattern_labels.push_back(p);
  pattern_labels.push_back("other");
  for (const std::string& pattern : pattern_labels) {
    std::array<std::array<Counter*, 5>, 3> per_layer{};
    for (int l = 0; l < 3; ++l) {
      for (int o = 0; o < 5; ++o) {
        auto c = registry.counter(
            "thundering_herd_requests_total",
            "Requests by result (ok, not_found, stale, fallback, error), by the layer that "
            "answered (l1, l2, load) and by key pattern.",
            {{"cache", name},
             {"result", kOutcomes[o]},
             {"layer", kLayers[l]},
             {"pattern", pattern}});
        if (!c) return std::unexpected(c.error());
        per_layer[l][o] = *c;
      }
    }
    m->requests_.push_back(per_layer);
  }
  auto wait =
      registry.histogram("thundering_herd_single_flight_wait_duration_seconds",
                         "Time callers waited for a shared load (single-flight), in seconds.",
                         duration_buckets_seconds(), cache);
  if (!wait) return std::unexpected(wait.error());
  m->wait_ = *wait;
  auto db = registry.histogram("thundering_herd_db_query_duration_seconds",
                               "Duration of repository (database) loads, in seconds.",
                               duration_buckets_seconds(), cache);
  if (!db) return std::unexpected(db.error());
  m->db_ = *db;

  // Scrape-time series, read from the snapshot.
  std::shared_ptr<Link> link = m->link_;
  auto read = [link](std::function<double(const ProtectionMetrics&)> field) {
    return [link, field]() -> double {
      std::shared_lock lock(link->mutex);
      if (link->protector == nullptr) return 0;
      return field(link->protector->metrics());
    };
  };
  struct Series {
    bool counter;
    const char* name;
    const char* help;
    Labels extra;
    std::function<double(const ProtectionMetrics&)> field;
  };
  using M = ProtectionMetrics;
  const std::vector<Series> series = {
      {true,
       "thundering_herd_cache_hits_total",
       "Fresh answers from a cache layer.",
       {{"layer", "l1"}},
       [](const M& s) { return double(s.l1_hits); }},
      {true,
       "thundering_herd_cache_hits_total",
       "Fresh answers from a cache layer.",
       {{"layer", "l2"}},
       [](const M& s) { return double(s.l2_hits); }},
      {true,
       "thundering_herd_cache_misses_total",
       "Lookups that found no fresh entry in a cache layer.",
       {{"layer", "l1"}},
       [](const M& s) { return double(s.total_requests - s.l1_hits); }},
      {true,
       "thundering_herd_cache_misses_total",
       "Lookups that found no fresh entry in a cache layer.",
       {{"layer", "l2"}},
       [](const M& s) { return double(s.l2_misses); }},
      {true,
       "thundering_herd_cache_hits_total",
       "Fresh answers from a cache layer.",
       {{"layer", "l3"}},
       [](const M& s) { return double(s.l3_hits); }},
      {true,
       "thundering_herd_cache_misses_total",
       "Lookups that found no fresh entry in a cache layer.",
       {{"layer", "l3"}},
       [](const M& s) { return double(s.l3_misses); }},
      {true,
       "thundering_herd_l3_rejected_total",
       "L3 records Redis refused to promote (older than an invalidation, or another epoch).",
       {},
       [](const M& s) { return double(s.l3_rejected); }},
      {true,
       "thundering_herd_l3_errors_total",
       "memcached errors of the L3 tier (each read as a miss or a skipped write).",
       {},
       [](const M& s) { return double(s.l3_errors); }},
      {true,
       "thundering_herd_single_flight_shared_total",
       "Callers that shared a load another caller started.",
       {},
       [](const M& s) { return double(s.single_flight_hits); }},
      {false,
       "thundering_herd_circuit_breaker_state",
       "Circuit breaker state: 0 closed, 1 open, 2 half-open.",
       {},
       [](const M& s) { return double(static_cast<int>(s.circuit_breaker_state)); }},
      {true,
       "thundering_herd_circuit_breaker_trips_total",
       "Times the circuit breaker opened.",
       {},
       [](const M& s) { return double(s.circuit_breaker_trips); }},
      {true,
       "thundering_herd_db_queries_total",
       "Loads sent to the repository (database).",
       {},
       [](const M& s) { return double(s.db_queries); }},
      {true,
       "thundering_herd_db_errors_total",
       "Repository loads that failed.",
       {},
       [](const M& s) { return double(s.db_errors); }},
      {true,
       "thundering_herd_stale_served_total",
       "Answers with a stale value (stale-while-revalidate or fail-safe).",
       {},
       [](const M& s) { return double(s.stale_returns); }},
      {true,
       "thundering_herd_background_refresh_total",
       "Background refreshes, started or dropped.",
       {{"outcome", "started"}},
       [](const M& s) { return double(s.background_refreshes); }},
      {true,
       "thundering_herd_background_refresh_total",
       "Background refreshes, started or dropped.",
       {{"outcome", "dropped"}},
       [](const M& s) { return double(s.background_refreshes_dropped); }},
      {true,
       "thundering_herd_early_refresh_total",
       "Refreshes of fresh entries started before they expired (early refresh).",
       {},
       [](const M& s) { return double(s.early_refreshes); }},
      {true,
       "thundering_herd_adaptive_ttl_changes_total",
       "Loads whose adaptive TTL changed, by direction (value unchanged: longer).",
       {{"direction", "longer"}},
       [](const M& s) { return double(s.ttl_lengthened); }},
      {true,
       "thundering_herd_adaptive_ttl_changes_total",
       "Loads whose adaptive TTL changed, by direction (value unchanged: longer).",
       {{"direction", "shorter"}},
       [](const M& s) { return double(s.ttl_shortened); }},
      {true,
       "thundering_herd_hot_keys_detected_total",
       "Times a key turned hot (hot-key detection).",
       {},
       [](const M& s) { return double(s.hot_keys_detected); }},
      {true,
       "thundering_herd_soft_timeouts_total",
       "Requests answered with their stale value at the soft load timeout.",
       {},
       [](const M& s) { return double(s.soft_timeouts); }},
      {true,
       "thundering_herd_fallback_total",
       "Answers from the fallback chain, by kind.",
       {{"kind", "stale"}},
       [](const M& s) { return double(s.fallbacks_stale); }},
      {true,
       "thundering_herd_fallback_total",
       "Answers from the fallback chain, by kind.",
       {{"kind", "default"}},
       [](const M& s) { return double(s.fallbacks - s.fallbacks_stale); }},
      {true,
       "thundering_herd_load_shed_total",
       "Requests refused by admission control.",
       {},
       [](const M& s) { return double(s.load_shed); }},
      {true,
       "thundering_herd_lock_acquisitions_total",
       "Loads led, by lock scope.",
       {{"scope", "local"}},
       [](const M& s) { return double(s.single_flight_leads); }},
      {true,
       "thundering_herd_lock_acquisitions_total",
       "Loads led, by lock scope.",
       {{"scope", "fleet"}},
       [](const M& s) { return double(s.fleet_lock_acquisitions); }},
      {true,
       "thundering_herd_lock_contentions_total",
       "Fleet lock attempts that found another holder.",
       {},
       [](const M& s) { return double(s.fleet_lock_contentions); }},
      {true,
       "thundering_herd_backplane_messages_total",
       "L1 backplane messages, by outcome.",
       {{"outcome", "published"}},
       [](const M& s) { return double(s.backplane_published); }},
      {true,
       "thundering_herd_backplane_messages_total",
       "L1 backplane messages, by outcome.",
       {{"outcome", "publish_failed"}},
       [](const M& s) { return double(s.backplane_publish_failures); }},
      {true,
       "thundering_herd_backplane_messages_total",
       "L1 backplane messages, by outcome.",
       {{"outcome", "received"}},
       [](const M& s) { return double(s.backplane_invalidations); }},
      {true,
       "thundering_herd_rate_limited_total",
       "get_for() requests over their client's rate limit, by answer.",
       {{"answer", "stale"}},
       [](const M& s) { return double(s.rate_limited_stale); }},
      {true,
       "thundering_herd_rate_limited_total",
       "get_for() requests over their client's rate limit, by answer.",
       {{"answer", "refused"}},
       [](const M& s) { return double(s.rate_limited - s.rate_limited_stale); }},
      {true,
       "thundering_herd_backplane_resyncs_total",
       "Backplane subscription losses and returns; every L1 copy was rechecked at each.",
       {},
       [](const M& s) { return double(s.backplane_resyncs); }},
      {true,
       "thundering_herd_not_modified_total",
       "Repository answers 'not modified' to a reload, by what L2 did: extended the entry in "
       "place, or wrote it (its entry there had changed).",
       {{"l2", "extended"}},
       [](const M& s) { return double(s.l2_extended); }},
      {true,
       "thundering_herd_not_modified_total",
       "Repository answers 'not modified' to a reload, by what L2 did: extended the entry in "
       "place, or wrote it (its entry there had changed).",
       {{"l2", "other"}},
       [](const M& s) { return double(s.not_modified - std::min(s.not_modified, s.l2_extended)); }},
      {true,
       "thundering_herd_tag_invalidations_total",
       "Tag invalidations, by kind: this process's invalidate_tag() and clear(), and other "
       "processes' heard on the backplane.",
       {{"kind", "tag"}},
       [](const M& s) { return double(s.tag_invalidations); }},
      {true,
       "thundering_herd_tag_invalidations_total",
       "Tag invalidations, by kind: this process's invalidate_tag() and clear(), and other "
       "processes' heard on the backplane.",
       {{"kind", "clear"}},
       [](const M& s) { return double(s.clears); }},
      {true,
       "thundering_herd_tag_invalidations_total",
       "Tag invalidations, by kind: this process's invalidate_tag() and clear(), and other "
       "processes' heard on the backplane.",
       {{"kind", "heard"}},
       [](const M& s) { return double(s.backplane_tag_invalidations); }},
      {true,
       "thundering_herd_tag_rejections_total",
       "Reads of entries refused because one of their tags, or clear(), was invalidated after "
       "their load began.",
       {},
       [](const M& s) { return double(s.tag_rejections); }},
      {true,
       "thundering_herd_tag_syncs_total",
       "Syncs of the known tag versions with Redis, by result.",
       {{"result", "ok"}},
       [](const M& s) { return double(s.tag_syncs); }},
      {true,
       "thundering_herd_tag_syncs_total",
       "Syncs of the known tag versions with Redis, by result.",
       {{"result", "error"}},
       [](const M& s) { return double(s.tag_sync_errors); }},
      {false,
       "thundering_herd_tags_known",
       "Tags whose last invalidation this process remembers.",
       {},
       [](const M& s) { return double(s.tags_known); }},
      {true,
       "thundering_herd_redis_errors_total",
       "Redis errors (none fails a request by itself).",
       {},
       [](const M& s) { return double(s.redis_errors); }},
      {false,
       "thundering_herd_loads_in_flight",
       "Loads in progress.",
       {},
       [](const M& s) { return double(s.loads_in_flight); }},
      {false,
       "thundering_herd_db_concurrency_limit",
       "The database concurrency limiter's current limit (0: off).",
       {},
       [](const M& s) { return double(s.db_limit); }},
      {false,
       "thundering_herd_db_loads_in_flight",
       "Database loads holding a slot of the concurrency limit.",
       {},
       [](const M& s) { return double(s.db_in_flight); }},
      {false,
       "thundering_herd_db_loads_waiting",
       "Database loads waiting for a slot of the concurrency limit.",
       {},
       [](const M& s) { return double(s.db_waiting); }},
      {true,
       "thundering_herd_db_loads_shed_total",
       "Database loads the concurrency limiter refused.",
       {},
       [](const M& s) { return double(s.db_shed); }},
      {true,
       "thundering_herd_loads_total",
       "Loads started, by where they ran.",
       {{"runner", "inline"}},
       [](const M& s) { return double(s.inline_loads); }},
      {true,
       "thundering_herd_loads_total",
       "Loads started, by where they ran.",
       {{"runner", "executor"}},
       [](const M& s) { return double(s.handed_off_loads); }},
      {true,
       "thundering_herd_loads_continued_total",
       "Inline loads cut by the leader's deadline that went on on the executor.",
       {},
       [](const M& s) { return double(s.continued_loads); }},
      {false,
       "thundering_herd_load_threads",
       "Threads of the elastic load executor.",
       {},
       [](const M& s) { return double(s.load_threads); }},
      {false,
       "thundering_herd_l1_entries",
       "Entries in the in-process cache.",
       {},
       [](const M& s) { return double(s.l1_entries); }},
      {false,
       "thundering_herd_l1_bytes",
       "Bytes held by the in-process cache.",
       {},
       [](const M& s) { return double(s.l1_bytes); }},
  };
  // The hot keys, one sample per key: its estimated reads/s in this
  // process. At most hot_keys.top_k labels; keys shown printable-ASCII only
  // (other bytes as '?') and cut at kMaxHotKeyLabelBytes.
  auto hot = registry.gauge_set_callback(
      "thundering_herd_hot_keys",
      "Hot keys now (top-K of hot-key detection), by key: estimated reads per second.", cache,
      "key", [link]() {
        MetricsRegistry::LabelledSamples samples;
        std::shared_lock lock(link->mutex);
        if (link->protector == nullptr) return samples;
        for (const HotKey& h : link->protector->hot_keys())
          samples.emplace_back(printable_label(h.key), h.rate);
        return samples;
      });
  if (!hot) return std::unexpected(hot.error());
  for (const Series& s : series) {
    Labels labels = cache;
    labels.insert(labels.end(), s.extra.begin(), s.extra.end());
    auto r = s.counter ? registry.counter_callback(s.name, s.help, labels, read(s.field))
                       : registry.gauge_callback(s.name, s.help, labels, read(s.field));
    if (!r) return std::unexpected(r.error());
  }
  return m;
}

void ProtectorMetrics::detach() {
  std::unique_lock lock(link_->mutex);
  link_->protector = nullptr;
}

ProtectorMetrics::~ProtectorMetrics() { detach(); }

std::size_t ProtectorMetrics::pattern_of(std::string_view key) const noexcept {
  for (std::size_t i = 0; i < patterns_.size(); ++i) {
    if (key.starts_with(patterns_[i])) return i;
  }
  return patterns_.size();
}

void ProtectorMetrics::record_request(std::string_view key, const RequestTrace& trace) noexcept {
  requests_[pattern_of(key)][static_cast<int>(trace.layer)][static_cast<int>(trace.outcome)]->inc();
}

}  // namespace herdguard::internal
