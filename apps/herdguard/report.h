// Presenting `herdguard simulate` results: JSON, a table with a one-line
// verdict, and an SVG chart.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "scenario.h"
#include "scenario_run.h"

namespace herdguard::cli {

// 1234567 → "1,234,567".
std::string thousands(std::uint64_t v);

// One run as JSON: processes, requests, db_queries, errors, stale_served,
// breaker_trips, goodput, db_shed, db_capacity, db_peak, latency_ms {p50,
// p99, max}, timeline [{t, requests, db_queries, errors, stale_served,
// p99_ms}], ...
nlohmann::json to_json(const RunReport& run);

// The report of a scenario: one run, or with --compare {"runs": [...]}.
nlohmann::json report_json(const Scenario& scenario, const std::vector<RunReport>& runs);

// The table and verdict for a terminal.
std::string report_table(const Scenario& scenario, const std::vector<RunReport>& runs);

// One line saying what happened, e.g. "fleet: 41 database queries for
// 60,000 requests, 0 errors, p99 3.2 ms" or, comparing, how much herdguard
// cut database queries and errors.
std::string verdict(const std::vector<RunReport>& runs);

// An SVG chart: database queries per second (top) and p99 latency (bottom)
// over time, one line per run, fault windows shaded. Hand-written SVG: no
// Debian library draws charts to SVG, and the format is plain XML text.
std::string report_svg(const Scenario& scenario, const std::vector<RunReport>& runs);

}  // namespace herdguard::cli
