// herdguard/prometheus.h — a small metrics registry (counters, gauges,
// histograms) and its Prometheus text exposition (format 0.0.4).
//
// Label sets are fixed when a series is registered: nothing on the hot path
// creates a series, so cardinality is bounded by what the program registers.
// (In herdguard, no label value comes from a raw cache key: keys map to a
// configured set of patterns, the rest to "other".) Counting is lock-free;
// render() takes the registry's lock to walk the series.
//
// Hand-written rather than taken from a library: Debian packages no C++
// Prometheus client, and the text format is small and stable.
//
// Thread safety: all methods are safe from any number of threads. Series
// references stay valid as long as the registry.
//
// Example:
//   auto registry = std::make_shared<herdguard::MetricsRegistry>();
//   auto& hits = *registry->counter("app_cache_hits_total", "Cache hits.", {{"layer", "l1"}});
//   hits.inc();
//   auto& wait = *registry->histogram("app_wait_seconds", "Wait.", {0.001, 0.01, 0.1, 1});
//   wait.observe(0.004);
//   std::string text = registry->render();   // serve it at /metrics
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "herdguard/result.h"

namespace herdguard {

using Labels = std::vector<std::pair<std::string, std::string>>;

class Counter {
 public:
  void inc(std::uint64_t n = 1) noexcept { value_.fetch_add(n, std::memory_order_relaxed); }
  std::uint64_t value() const noexcept { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::uint64_t> value_{0};
};

class Gauge {
 public:
  void set(double v) noexcept { value_.store(v, std::memory_order_relaxed); }
  double value() const noexcept { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

class Histogram {
 public:
  // REQUIRES: bounds strictly increasing (checked by the registry).
  explicit Histogram(std::vector<double> bounds);
  // Records one observation (in the metric's unit, e.g. seconds).
  void observe(double v) noexcept;
  const std::vector<double>& bounds() const noexcept { return bounds_; }
  // Cumulative counts per bound, then the +Inf count; and the sum.
  std::vector<std::uint64_t> cumulative_counts() const;
  double sum() const noexcept;

 private:
  const std::vector<double> bounds_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> counts_;  // per bucket, non-cumulative, + overflow
  std::atomic<double> sum_{0};
};

// Buckets from 1 ms to 30 s, for durations in seconds.
std::vector<double> duration_buckets_seconds();

class MetricsRegistry {
 public:
  // Each returns the series for (name, labels), creating it on first call.
  // Errors (kInvalidArgument): a name or label name that Prometheus does not
  // accept, a name already registered with another type or other label
  // names, bad histogram bounds.
  Result<Counter*> counter(const std::string& name, const std::string& help,
                           const Labels& labels = {});
  Result<Gauge*> gauge(const std::string& name, const std::string& help, const Labels& labels = {});
  // A gauge read by calling `read` at render time (e.g. a breaker's state).
  Result<void> gauge_callback(const std::string& name, const std::string& help,
                              const Labels& labels, std::function<double()> read);
  // A counter read by calling `read` at render time, for counts kept elsewhere.
  Result<void> counter_callback(const std::string& name, const std::string& help,
                                const Labels& labels, std::function<double()> read);
  Result<Histogram*> histogram(const std::string& name, const std::string& help,
                               std::vector<double> bounds, const Labels& labels = {});
  // Gauges read at render time as a set: `read` returns (value of
  // `varying_label`, sample) pairs, each rendered with `labels` plus that
  // label (e.g. the hot keys, one sample per key). The callback bounds how
  // many it returns (label cardinality is the caller's promise); it is
  // called with the registry's lock held, so it must not call the registry.
  using LabelledSamples = std::vector<std::pair<std::string, double>>;
  Result<void> gauge_set_callback(const std::string& name, const std::string& help,
                                  const Labels& labels, const std::string& varying_label,
                                  std::function<LabelledSamples()> read);

  // The text exposition format: # HELP, # TYPE, then one line per sample.
  std::string render() const;
  // Names of all registered metric families.
  std::vector<std::string> names() const;

 private:
  enum class Type { kCounter, kGauge, kHistogram };
  struct Series {
    Labels labels;
    std::unique_ptr<Counter> counter;
    std::unique_ptr<Gauge> gauge;
    std::unique_ptr<Histogram> histogram;
    std::function<double()> read;  // callback series
    // Set series (gauge_set_callback): samples with one more label.
    std::function<LabelledSamples()> read_set;
    std::string varying_label;
  };
  struct Family {
    Type type;
    std::string help;
    std::vector<std::string> label_names;
    std::vector<std::unique_ptr<Series>> series;
  };
  Result<Series*> find_or_add(const std::string& name, const std::string& help, Type type,
                              const Labels& labels, bool* created);

  mutable std::mutex mutex_;
  std::map<std::string, Family> families_;  // guarded by mutex_
};

}  // namespace herdguard
