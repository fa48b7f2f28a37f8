#include "report.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

namespace herdguard::cli {
std::string thousands(std::uint64_t v) {
  std::string digits = std::to_string(v);
  std::string out;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out.push_back(',');
    out.push_back(digits[i]);
  }
  return out;
}

namespace {

std::string xml_escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out.push_back(c);
    }
  }
  return out;
}

// A "nice" axis maximum: 1, 2 or 5 times a power of ten, at least `v`.
double nice_max(double v) {
  if (v <= 0) return 1;
  const double p = std::pow(10.0, std::floor(std::log10(v)));
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    if (m * p >= v) return m * p;
  }
  return 10 * p;
}

}  // namespace

nlohmann::json to_json(const RunReport& run) {
  nlohmann::json hot_keys = nlohmann::json::array();
  for (const HotKeyReport& h : run.hot_keys) {
    nlohmann::json by_process = nlohmann::json::array();
    double last = 0, first = 1e300, rate = 0, previous = 0, previous_max = 0;
    bool viral = false;
    std::uint64_t waits = 0;
    for (const HotKeyDetection& d : h.by_process) {
      by_process.push_back({{"process", d.process},
                            {"detected_at_s", d.detected_at_s},
                            {"rate", d.rate},
                            {"previous_rate", d.previous_rate},
                            {"previous_rate_max", d.previous_rate_max},
                            {"viral", d.viral},
                            {"load_waits_after_detection", d.load_waits}});
      last = std::max(last, d.detected_at_s);
      first = std::min(first, d.detected_at_s);
      rate += d.rate;
      previous += d.previous_rate;
      previous_max += d.previous_rate_max;
      viral = viral || d.viral;
      waits += d.load_waits;
    }
    hot_keys.push_back({{"key", h.key},
                        {"detected_at_s", last},  // by then every process listed had it
                        {"first_detected_at_s", first},
                        {"processes", h.by_process.size()},
                        {"rate", rate},
                        {"previous_rate", previous},
                        {"previous_rate_max", previous_max},
                        {"viral", viral},
                        {"load_waits_after_detection", waits},
                        {"by_process", by_process}});
  }
  nlohmann::json timeline = nlohmann::json::array();
  for (const SecondReport& s : run.timeline) {
    nlohmann::json hot_now = nlohmann::json::array();
    for (const SecondHotKey& h : s.hot_keys)
      hot_now.push_back({{"key", h.key}, {"rate", h.rate}, {"processes", h.processes}});
    timeline.push_back({{"t", s.t},
                        {"requests", s.requests},
                        {"db_queries", s.db_queries},
                        {"errors", s.errors},
                        {"stale_served", s.stale_served},
                        {"load_waits", s.load_waits},
                        {"early_refreshes", s.early_refreshes},
                        {"redis_errors", s.redis_errors},
                        {"duplicate_loads", s.duplicate_loads},
                        {"rate_limited", s.rate_limited},
                        {"admitted_by_client", s.admitted_by_client},
                        {"hot_keys", hot_now},
                        {"p99", s.p99_ms}});
  }
  return {
      {"protect", run.protect},
      {"processes", run.processes},
      {"requests", run.requests},
      {"db_queries", run.db_queries},
      {"errors", run.errors},
      {"wrong_values", run.wrong_values},
      {"stale_served", run.stale_served},
      {"load_waits", run.load_waits},
      {"early_refreshes", run.early_refreshes},
      {"refreshes_dropped", run.refreshes_dropped},
      {"hot_keys", hot_keys},
      {"ttl_lengthened", run.ttl_lengthened},
      {"ttl_shortened", run.ttl_shortened},
      {"breaker_trips", run.breaker_trips},
      {"redis_errors", run.redis_errors},
      {"fleet_waits", run.fleet_waits},
      {"announcements_received", run.announcements_received},
      {"duplicate_loads", run.duplicate_loads},
      {"duplicate_loads_outside_redis_errors", run.duplicate_loads_outside_redis_errors},
      {"redis_error_window_s",
       run.redis_error_window
           ? nlohmann::json{{"from", run.redis_error_window->from},
                            {"to", run.redis_error_window->to},
                            {"seconds", run.redis_error_window->to - run.redis_error_window->from}}
           : nlohmann::json(nullptr)},
      {"goodput", run.goodput},
      {"db_shed", run.db_shed},
      {"rate_limited", run.rate_limited},
      {"batch_queries", run.batch_queries},
      {"l3_hits", run.l3_hits},
      {"l3_errors", run.l3_errors},
      {"l3_rejected", run.l3_rejected},
      {"tag_invalidations", run.tag_invalidations},
      {"rate_limiter_local_decisions", run.rate_limiter_local_decisions},
      {"db_capacity", run.db_capacity},
      {"db_peak", run.db_peak},
      {"failed_workers", run.failed_workers},
      {"errors_by_kind", run.errors_by_kind},
      {"first_error", run.first_error},
      {"latency_ms",
       {{"p50", run.latency.p50_ms}, {"p99", run.latency.p99_ms}, {"max", run.latency.max_ms}}},
      {"timeline", timeline}};
}

nlohmann::json report_json(const Scenario& s, const std::vector<RunReport>& runs) {
  nlohmann::json faults = nlohmann::json::array();
  for (const Fault& f : s.faults) faults.push_back(f.to_string());
  if (runs.size() == 1) {
    nlohmann::json j = to_json(runs[0]);
    j["duration_s"] = s.duration_s;
    j["faults"] = faults;
    j["db_limit"] = s.db_limit;
    j["early_refresh"] = s.early_refresh;
    j["viral"] = s.viral;
    j["adaptive_ttl"] = s.adaptive_ttl;
    return j;
  }
  nlohmann::json list = nlohmann::json::array();
  for (const RunReport& r : runs) list.push_back(to_json(r));
  return {{"duration_s", s.duration_s},       {"faults", faults}, {"db_limit", s.db_limit},
          {"early_refresh", s.early_refresh}, {"viral", s.viral}, {"runs", list}};
}

std::string verdict(const std::vector<RunReport>& runs) {
  if (runs.size() >= 2) {
    const RunReport& bare = runs.front();
    const RunReport& guarded = runs.back();
    const double cut =
        guarded.db_queries > 0 ? static_cast<double>(bare.db_queries) / guarded.db_queries : 0;
    std::string line = fmt::format(
        "herdguard ({}) cut database queries from {} to {}{} and errors from {} to {}; p99 {:.1f} "
        "ms → "
        "{:.1f} ms.",
        guarded.protect, thousands(bare.db_queries), thousands(guarded.db_queries),
        cut > 0 ? fmt::format(" ({:.0f}x fewer)", cut) : "", thousands(bare.errors),
        thousands(guarded.errors), bare.latency.p99_ms, guarded.latency.p99_ms);
    if (guarded.db_capacity > 0) {
      line += fmt::format(" The database ran at most {} → {} queries at once (capacity {}).",
                          bare.db_peak, guarded.db_peak, guarded.db_capacity);
    }
    return line;
  }
  const RunReport& r = runs.front();
  std::string line = fmt::format(
      "{}: {} database queries for {} requests, {} errors, {} stale answers, {} loads shed, "
      "goodput {}/s, p99 {:.1f} ms.",
      r.protect, thousands(r.db_queries), thousands(r.requests), thousands(r.errors),
      thousands(r.stale_served), thousands(r.db_shed),
      thousands(static_cast<std::uint64_t>(r.goodput)), r.latency.p99_ms);
  if (r.db_capacity > 0) {
    line += fmt::format(" The database ran at most {} queries at once (capacity {}).", r.db_peak,
                        r.db_capacity);
  }
  return line;
}

std::string report_table(const Scenario& s, const std::vector<RunReport>& runs) {
  std::string out = fmt::format(
      "herdguard simulate: {} processes, {}, {:g} s, {} keys (zipf {:g}), ttl {} ms\n", s.processes,
      s.rate > 0 ? fmt::format("{:g} requests/s", s.rate)
                 : fmt::format("{} threads each", s.concurrency),
      s.duration_s, s.keys, s.zipf, s.ttl_ms);
  out += fmt::format("database: {}; concurrency limit: {}\n",
                     s.db_capacity > 0 ? fmt::format("capacity {} queries at {} ms each",
                                                     s.db_capacity, s.db_latency_ms)
                                       : fmt::format("{} ms per query", s.db_latency_ms),
                     s.db_limit);
  if (!s.faults.empty()) {
    out += "faults:";
    for (const Fault& f : s.faults) out += " " + f.to_string();
    out += "\n";
  }
  const bool peak = s.db_capacity > 0;
  out += fmt::format("\n{:<8} {:>10} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8} {}{:>9} {:>9} {:>9}\n",
                     "protect", "requests", "goodput/s", "db queries", "errors", "stale", "shed",
                     "trips", peak ? fmt::format("{:>8} ", "db peak") : "", "p50 ms", "p99 ms",
                     "max ms");
  for (const RunReport& r : runs) {
    out += fmt::format(
        "{:<8} {:>10} {:>10.0f} {:>10} {:>8} {:>8} {:>8} {:>8} {}{:>9.1f} {:>9.1f} {:>9.1f}\n",
        r.protect, r.requests, r.goodput, r.db_queries, r.errors, r.stale_served, r.db_shed,
        r.breaker_trips, peak ? fmt::format("{:>8} ", r.db_peak) : "", r.latency.p50_ms,
        r.latency.p99_ms, r.latency.max_ms);
  }
  for (const RunReport& r : runs) {
    if (r.errors_by_kind.empty()) continue;
    std::string kinds;
    for (const auto& [kind, count] : r.errors_by_kind)
      kinds += fmt::format("{}{} {}", kinds.empty() ? "" : ", ", kind, thousands(count));
    out += fmt::format("{} errors: {}; first: {}\n", r.protect, kinds, r.first_error);
  }
  for (const RunReport& r : runs) {
    if (s.rate_limit <= 0) break;
    std::uint64_t least = UINT64_MAX, most = 0;
    for (const SecondReport& sec : r.timeline) {
      // Whole seconds only: the last bucket holds the stragglers.
      if (sec.t >= static_cast<int>(s.duration_s)) continue;
      for (std::uint64_t a : sec.admitted_by_client) {
        least = std::min(least, a);
        most = std::max(most, a);
      }
    }
    out += fmt::format(
        "{} rate limit {}/s per client: {} requests over it; a client admitted {}..{} per second; "
        "{} decisions per process (Redis unreachable)\n",
        r.protect, s.rate_limit, thousands(r.rate_limited), least == UINT64_MAX ? 0 : least, most,
        thousands(r.rate_limiter_local_decisions));
  }
  // The viral key, when there is one, then the hottest others (at most 5):
  // who found them and when, and whether anyone still waited on them.
  const std::string viral_key = s.viral.empty() ? "" : s.viral.substr(0, s.viral.rfind('@'));
  for (const RunReport& r : runs) {
    std::vector<const HotKeyReport*> shown;
    for (const HotKeyReport& h : r.hot_keys)
      if (h.key == viral_key) shown.push_back(&h);
    for (const HotKeyReport& h : r.hot_keys)
      if (h.key != viral_key && shown.size() < 5) shown.push_back(&h);
    if (shown.empty()) continue;
    out += fmt::format("{} hot keys ({} in all):", r.protect, r.hot_keys.size());
    for (const HotKeyReport* h : shown) {
      double last = 0;
      std::uint64_t waits = 0;
      for (const HotKeyDetection& d : h->by_process) {
        last = std::max(last, d.detected_at_s);
        waits += d.load_waits;
      }
      out += fmt::format(" {}{} in {}/{} processes by {:.2f} s, {} waits after;", h->key,
                         h->key == viral_key ? " (viral)" : "", h->by_process.size(), r.processes,
                         last, waits);
    }
    out.back() = '\n';
  }
  out += "\n" + verdict(runs) + "\n";
  return out;
}

// Written as text, not built with an XML library: the chart is a fixed
// template of a few element kinds whose only free text (run names) goes
// through xml_escape, and the tests parse every chart back with pugixml, so
// a malformed one fails there. A DOM library would add a run-time
// dependency to the CLI for no change in what it writes.
std::string report_svg(const Scenario& s, const std::vector<RunReport>& runs) {
  constexpr double kWidth = 800, kPanel = 220, kLeft = 70, kRight = 20, kTop = 40, kGap = 60;
  const double plot_w = kWidth - kLeft - kRight;
  const double height = kTop + 2 * kPanel + kGap + 50;
  const double duration = std::max(1.0, std::ceil(s.duration_s));
  static const char* kColors[] = {"#d62728", "#1f77b4", "#2ca02c", "#9467bd"};

  double max_db = 0, max_p99 = 0;
  for (const RunReport& r : runs) {
    for (const SecondReport& sec : r.timeline) {
      max_db = std::max(max_db, static_cast<double>(sec.db_queries));
      max_p99 = std::max(max_p99, sec.p99_ms);
    }
  }
  max_db = nice_max(max_db);
  max_p99 = nice_max(max_p99);
  auto x_of = [&](double t) { return kLeft + plot_w * std::min(t, duration) / duration; };

  std::string svg = fmt::format(
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} "
      "{1}\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n"
      "<title>herdguard simulate: database queries per second and p99 latency</title>\n"
      "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
      kWidth, height);
  auto panel = [&](double top, const std::string& title, double max_y, const std::string& unit,
                   auto value_of, const std::string& series_id) {
    // Fault windows first, under the lines.
    for (const Fault& f : s.faults) {
      svg += fmt::format(
          "<rect class=\"fault\" x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\" "
          "fill=\"#f4a6a6\" fill-opacity=\"0.35\"><title>{}</title></rect>\n",
          x_of(f.start_s), top, x_of(f.end_s) - x_of(f.start_s), kPanel, xml_escape(f.to_string()));
    }
    svg += fmt::format("<text x=\"{}\" y=\"{:.1f}\" font-weight=\"bold\">{}</text>\n", kLeft,
                       top - 8, xml_escape(title));
    svg += fmt::format(
        "<rect x=\"{}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{}\" fill=\"none\" "
        "stroke=\"#333\"/>\n",
        kLeft, top, plot_w, kPanel);
    for (int i = 0; i <= 4; ++i) {
      const double y = top + kPanel - kPanel * i / 4.0;
      svg += fmt::format(
          "<line x1=\"{}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#ddd\"/>"
          "<text x=\"{}\" y=\"{:.1f}\" text-anchor=\"end\">{:g}{}</text>\n",
          kLeft, y, kLeft + plot_w, y, kLeft - 6, y + 4, max_y * i / 4.0, unit);
    }
    for (std::size_t r = 0; r < runs.size(); ++r) {
      std::string points;
      for (const SecondReport& sec : runs[r].timeline) {
        if (sec.t >= duration) break;  // the last bucket holds only stragglers
        const double y = top + kPanel - kPanel * std::min(value_of(sec), max_y) / max_y;
        points += fmt::format("{:.1f},{:.1f} ", x_of(sec.t + 0.5), y);
      }
      svg += fmt::format(
          "<polyline class=\"series\" data-series=\"{}\" data-run=\"{}\" fill=\"none\" "
          "stroke=\"{}\" "
          "stroke-width=\"2\" points=\"{}\"/>\n",
          series_id, xml_escape(runs[r].protect), kColors[r % 4], points);
    }
  };
  panel(
      kTop, "database queries per second", max_db, "",
      [](const SecondReport& sec) { return static_cast<double>(sec.db_queries); }, "db_queries");
  panel(
      kTop + kPanel + kGap, "p99 latency (ms)", max_p99, "",
      [](const SecondReport& sec) { return sec.p99_ms; }, "p99");
  // Time axis and legend.
  const double axis_y = kTop + 2 * kPanel + kGap;
  for (int i = 0; i <= 5; ++i) {
    const double t = duration * i / 5.0;
    svg += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{:g} s</text>\n",
                       x_of(t), axis_y + 16, std::round(t * 10) / 10);
  }
  double legend_x = kLeft;
  for (std::size_t r = 0; r < runs.size(); ++r) {
    svg += fmt::format(
        "<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"14\" height=\"4\" fill=\"{}\"/>"
        "<text x=\"{:.1f}\" y=\"{:.1f}\">{}</text>\n",
        legend_x, axis_y + 32, kColors[r % 4], legend_x + 18, axis_y + 37,
        xml_escape(runs[r].protect));
    legend_x += 110;
  }
  if (!s.faults.empty()) {
    svg += fmt::format(
        "<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"14\" height=\"10\" fill=\"#f4a6a6\" "
        "fill-opacity=\"0.6\"/>"
        "<text x=\"{:.1f}\" y=\"{:.1f}\">fault window</text>\n",
        legend_x, axis_y + 29, legend_x + 18, axis_y + 37);
  }
  svg += "</svg>\n";
  return svg;
}

}  // namespace herdguard::cli
