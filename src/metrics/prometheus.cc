#include "herdguard/prometheus.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

namespace herdguard {
namespace {

bool valid_name(const std::string& s, bool label) {
  if (s.empty()) return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    const bool letter =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (!label && c == ':');
    if (!letter && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return !(label && s.starts_with("__"));
}

// Label values escape backslash, double quote and newline; HELP text only backslash and newline.
std::string escape(const std::string& v, bool quotes) {
  std::string out;
  for (char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '"' && quotes) {
      out += "\\\"";
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::string format_value(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  return fmt::format("{}", v);
}

std::string label_text(const Labels& labels, const std::string& extra_name = "",
                       const std::string& extra_value = "") {
  if (labels.empty() && extra_name.empty()) return "";
  std::string out = "{";
  bool first = true;
  for (const auto& [k, v] : labels) {
    out += fmt::format("{}{}=\"{}\"", first ? "" : ",", k, escape(v, /*quotes=*/true));
    first = false;
  }
  if (!extra_name.empty())
    out += fmt::format("{}{}=\"{}\"", first ? "" : ",", extra_name,
                       escape(extra_value, /*quotes=*/true));
  return out + "}";
}

}  // namespace

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(new std::atomic<std::uint64_t>[bounds_.size() + 1]) {
  for (std::size_t i = 0; i <= bounds_.size(); ++i) counts_[i].store(0, std::memory_order_relaxed);
}

void Histogram::observe(double v) noexcept {
  const auto it = std::lower_bound(bounds_.begin(), bounds_.end(), v);
  counts_[static_cast<std::size_t>(it - bounds_.begin())].fetch_add(1, std::memory_order_relaxed);
  double sum = sum_.load(std::memory_order_relaxed);
  while (!sum_.compare_exchange_weak(sum, sum + v, std::memory_order_relaxed)) {
  }
}

std::vector<std::uint64_t> Histogram::cumulative_counts() const {
  std::vector<std::uint64_t> out;
  std::uint64_t running = 0;
  for (std::size_t i = 0; i <= bounds_.size(); ++i) {
    running += counts_[i].load(std::memory_order_relaxed);
    out.push_back(running);
  }
  return out;
}

double Histogram::sum() const noexcept { return sum_.load(std::memory_order_relaxed); }

std::vector<double> duration_buckets_seconds() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
}

Result<MetricsRegistry::Series*> MetricsRegistry::find_or_add(const std::string& name,
                                                              const std::string& help, Type type,
                                                              const Labels& labels, bool* created) {
  *created = false;
  if (!valid_name(name, false)) {
    return make_error(ErrorKind::kInvalidArgument,
                      fmt::format("metrics: bad metric name '{}'", name));
  }
  std::vector<std::string> label_names;
  for (const auto& [k, v] : labels) {
    if (!valid_name(k, true) || (type == Type::kHistogram && k == "le")) {
      return make_error(ErrorKind::kInvalidArgument,
                        fmt::format("metrics: bad label name '{}' on {}", k, name));
    }
    label_names.push_back(k);
  }
  std::lock_guard lock(mutex_);
  auto [it, inserted] = families_.try_emplace(name);
  Family& family = it->second;
  if (inserted) {
    family.type = type;
    family.help = help;
    family.label_names = label_names;
  } else if (family.type != type || family.label_names != label_names) {
    return make_error(
        ErrorKind::kInvalidArgument,
        fmt::format("metrics: '{}' is already registered with another type or labels", name));
  }
  for (auto& s : family.series) {
    if (s->labels == labels) return s.get();
  }
  family.series.push_back(std::make_unique<Series>());
  family.series.back()->labels = labels;
  *created = true;
  return family.series.back().get();
}

Result<Counter*> MetricsRegistry::counter(const std::string& name, const std::string& help,
                                          const Labels& labels) {
  bool created = false;
  auto s = find_or_add(name, help, Type::kCounter, labels, &created);
  if (!s) return std::unexpected(s.error());
  if (created) (*s)->counter = std::make_unique<Counter>();
  if (!(*s)->counter) {
    return make_error(ErrorKind::kInvalidArgument,
                      fmt::format("metrics: '{}' is a callback counter", name));
  }
  return (*s)->counter.get();
}

Result<Gauge*> MetricsRegistry::gauge(const std::string& name, const std::string& help,
                                      const Labels& labels) {
  bool created = false;
  auto s = find_or_add(name, help, Type::kGauge, labels, &created);
  if (!s) return std::unexpected(s.error());
  if (created) (*s)->gauge = std::make_unique<Gauge>();
  if (!(*s)->gauge) {
    return make_error(ErrorKind::kInvalidArgument,
                      fmt::format("metrics: '{}' is a callback gauge", name));
  }
  return (*s)->gauge.get();
}

Result<void> MetricsRegistry::gauge_callback(const std::string& name, const std::string& help,
                                             const Labels& labels, std::function<double()> read) {
  bool created = false;
  auto s = find_or_add(name, help, Type::kGauge, labels, &created);
  if (!s) return std::unexpected(s.error());
  if (!created)
    return make_error(ErrorKind::kInvalidArgument,
                      fmt::format("metrics: '{}' already exists", name));
  (*s)->read = std::move(read);
  return ok();
}

Result<void> MetricsRegistry::counter_callback(const std::string& name, const std::string& help,
                                               const Labels& labels, std::function<double()> read) {
  bool created = false;
  auto s = find_or_add(name, help, Type::kCounter, labels, &created);
  if (!s) return std::unexpected(s.error());
  if (!created)
    return make_error(ErrorKind::kInvalidArgument,
                      fmt::format("metrics: '{}' already exists", name));
  (*s)->read = std::move(read);
  return ok();
}

Result<void> MetricsRegistry::gauge_set_callback(const std::string& name, const std::string& help,
                                                 const Labels& labels,
                                                 const std::string& varying_label,
                                                 std::function<LabelledSamples()> read) {
  // Registered under its full label names (the varying one last) so that
  // the family's label set is checked like any other's.
  Labels all = labels;
  all.emplace_back(varying_label, "");
  bool created = false;
  auto s = find_or_add(name, help, Type::kGauge, all, &created);
  if (!s) return std::unexpected(s.error());
  if (!created)
    return make_error(ErrorKind::kInvalidArgument,
                      fmt::format("metrics: '{}' already exists", name));
  (*s)->labels = labels;
  (*s)->read_set = std::move(read);
  (*s)->varying_label = varying_label;
  return ok();
}

Result<Histogram*> MetricsRegistry::histogram(const std::string& name, const std::string& help,
                                              std::vector<double> bounds, const Labels& labels) {
  if (bounds.empty() || !std::is_sorted(bounds.begin(), bounds.end()) ||
      std::adjacent_find(bounds.begin(), bounds.end()) != bounds.end()) {
    return make_error(
        ErrorKind::kInvalidArgument,
        fmt::format("metrics: histogram '{}' needs strictly increasing bounds", name));
  }
  bool created = false;
  auto s = find_or_add(name, help, Type::kHistogram, labels, &created);
  if (!s) return std::unexpected(s.error());
  if (created) (*s)->histogram = std::make_unique<Histogram>(std::move(bounds));
  return (*s)->histogram.get();
}

std::string MetricsRegistry::render() const {
  std::lock_guard lock(mutex_);
  std::string out;
  for (const auto& [name, family] : families_) {
    const char* type = family.type == Type::kCounter ? "counter"
                       : family.type == Type::kGauge ? "gauge"
                                                     : "histogram";
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, escape(family.help, /*quotes=*/false),
                       name, type);
    for (const auto& s : family.series) {
      if (family.type == Type::kHistogram) {
        const Histogram& h = *s->histogram;
        const auto counts = h.cumulative_counts();
        for (std::size_t i = 0; i < h.bounds().size(); ++i) {
          out += fmt::format("{}_bucket{} {}\n", name,
                             label_text(s->labels, "le", format_value(h.bounds()[i])), counts[i]);
        }
        out += fmt::format("{}_bucket{} {}\n", name, label_text(s->labels, "le", "+Inf"),
                           counts.back());
        out += fmt::format("{}_sum{} {}\n", name, label_text(s->labels), format_value(h.sum()));
        out += fmt::format("{}_count{} {}\n", name, label_text(s->labels), counts.back());
        continue;
      }
      if (s->read_set) {
        for (const auto& [label_value, value] : s->read_set()) {
          out +=
              fmt::format("{}{} {}\n", name, label_text(s->labels, s->varying_label, label_value),
                          format_value(value));
        }
        continue;
      }
      double value = 0;
      if (s->read) {
        value = s->read();
      } else if (s->counter) {
        value = static_cast<double>(s->counter->value());
      } else if (s->gauge) {
        value = s->gauge->value();
      }
      out += fmt::format("{}{} {}\n", name, label_text(s->labels), format_value(value));
    }
  }
  return out;
}

std::vector<std::string> MetricsRegistry::names() const {
  std::lock_guard lock(mutex_);
  std::vector<std::string> out;
  for (const auto& [name, family] : families_) out.push_back(name);
  return out;
}

}  // namespace herdguard
