#include "race_history.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <unordered_map>

namespace herdguard::race {
namespace {

constexpr std::string_view kOpNames[] = {"get", "invalidate", "update_invalidate", "update_set"};

Result<std::int64_t> parse_int(std::string_view field, std::string_view text) {
  std::int64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) {
    return make_error(ErrorKind::kInvalidArgument,
                      fmt::format("field {}: '{}' is not an integer", field, text));
  }
  return value;
}

// Splits `text` at every `sep`.
std::vector<std::string_view> split(std::string_view text, char sep) {
  std::vector<std::string_view> parts;
  for (;;) {
    const std::size_t at = text.find(sep);
    parts.push_back(text.substr(0, at));
    if (at == std::string_view::npos) return parts;
    text.remove_prefix(at + 1);
  }
}

Result<ValueSource> parse_source(std::string_view text) {
  const std::vector<std::string_view> parts = split(text, '/');
  ValueSource source;
  if (parts.size() == 2 && parts[0] == "set") {
    source.kind = ValueSource::Kind::kSet;
  } else if (parts.size() == 4 && parts[0] == "load") {
    source.kind = ValueSource::Kind::kLoad;
    auto read = parse_int("src", parts[2]);
    auto done = parse_int("src", parts[3]);
    if (!read) return std::unexpected(read.error());
    if (!done) return std::unexpected(done.error());
    source.read_ns = *read;
    source.done_ns = *done;
  } else {
    return make_error(ErrorKind::kInvalidArgument, fmt::format("field src: bad '{}'", text));
  }
  auto worker = parse_int("src", parts[1]);
  if (!worker) return std::unexpected(worker.error());
  source.worker = static_cast<int>(*worker);
  return source;
}

std::string format_source(const ValueSource& source) {
  switch (source.kind) {
    case ValueSource::Kind::kLoad:
      return fmt::format("load/{}/{}/{}", source.worker, source.read_ns, source.done_ns);
    case ValueSource::Kind::kSet:
      return fmt::format("set/{}", source.worker);
    case ValueSource::Kind::kUnknown:
      break;
  }
  return "";
}

std::string seconds(std::int64_t ns, std::int64_t origin_ns) {
  return fmt::format("{:+.3f}s", static_cast<double>(ns - origin_ns) / 1e9);
}

std::string describe_op(const Op& op, std::int64_t origin_ns) {
  return fmt::format("{} w{}/t{} [{}..{}] {} v{}", to_string(op.kind), op.worker, op.thread,
                     seconds(op.start_ns, origin_ns), seconds(op.end_ns, origin_ns), op.outcome,
                     op.version);
}

// The operations of one key, indexed for the checks below.
struct KeyIndex {
  std::vector<const Op*> writes_by_end;     // successful writes
  std::vector<std::int64_t> max_v_by_end;   // prefix max of their versions
  std::vector<const Op*> writes_by_start;   // successful writes
  std::vector<const Op*> failed_writes;     // errored writes with a version
  std::vector<const Op*> updates_by_start;  // update ops, any outcome
  std::vector<std::int64_t> max_update_v;   // prefix max of their versions
  std::unordered_map<std::int64_t, const Op*> update_of_version;
};

// The successful gets of one (worker, key).
struct GetIndex {
  std::vector<const Op*> by_end;
  std::vector<std::int64_t> max_v;  // prefix max of versions
};

// How many of `ops` (sorted by end) ended strictly before `t`.
std::size_t ended_before(const std::vector<const Op*>& ops, std::int64_t t) {
  return static_cast<std::size_t>(
      std::partition_point(ops.begin(), ops.end(), [t](const Op* o) { return o->end_ns < t; }) -
      ops.begin());
}

std::vector<std::int64_t> prefix_max(const std::vector<const Op*>& ops) {
  std::vector<std::int64_t> out;
  std::int64_t best = INT64_MIN;
  for (const Op* o : ops) out.push_back(best = std::max(best, o->version));
  return out;
}

KeyIndex index_key(const std::vector<const Op*>& ops) {
  KeyIndex index;
  for (const Op* o : ops) {
    if (!o->is_write()) continue;
    (o->ok() ? index.writes_by_end : index.failed_writes).push_back(o);
    if (o->is_update()) {
      index.updates_by_start.push_back(o);
      index.update_of_version[o->version] = o;
    }
  }
  index.writes_by_start = index.writes_by_end;
  std::ranges::sort(index.writes_by_end, {}, &Op::end_ns);
  std::ranges::sort(index.writes_by_start, {}, &Op::start_ns);
  std::ranges::sort(index.updates_by_start, {}, &Op::start_ns);
  index.max_v_by_end = prefix_max(index.writes_by_end);
  index.max_update_v = prefix_max(index.updates_by_start);
  return index;
}

// E1/E2 (P1 and P2): the update_set that wrote `get.version` may have landed
// after `landed_after` (W.start in P1, G1.start in P2) and before the get read.
bool excused_by_set(const KeyIndex& index, const Op& get, std::int64_t landed_after) {
  auto it = index.update_of_version.find(get.version);
  if (it == index.update_of_version.end()) return false;
  const Op& set = *it->second;
  if (set.kind != OpKind::kUpdateSet || set.start_ns >= get.end_ns) return false;
  return !set.ok() || set.end_ns > landed_after;
}

// E2 (P2): a failed write before g2 that no successful write followed in
// time for g2 to see it: W clears the excuse only when it ended more than its
// allowance (P1's: same process or other) before g2 started — another
// process's invalidate reaches this process's L1 only within that bound. The
// failed write ending last is the hardest to follow, so it decides.
bool excused_by_failed_write(const KeyIndex& index, const Op& g2, const CheckerOptions& options) {
  const Op* latest = nullptr;
  for (const Op* f : index.failed_writes) {
    if (f->start_ns < g2.start_ns && (!latest || f->end_ns > latest->end_ns)) latest = f;
  }
  if (!latest) return false;
  auto w = std::ranges::upper_bound(index.writes_by_start, latest->end_ns, {}, &Op::start_ns);
  for (; w != index.writes_by_start.end() && (*w)->start_ns < g2.start_ns; ++w) {
    const auto allowance = (*w)->worker == g2.worker ? options.same_process_allowance
                                                     : options.other_process_allowance;
    if ((*w)->end_ns + allowance.count() < g2.start_ns) return false;
  }
  return true;
}

// E3 (P2): an update with version in (v2, v1] still running around the pair.
bool excused_by_write_in_flight(const KeyIndex& index, const Op& g1, const Op& g2) {
  for (std::int64_t v = g2.version + 1; v <= g1.version; ++v) {
    auto it = index.update_of_version.find(v);
    if (it == index.update_of_version.end()) continue;
    const Op& w = *it->second;
    if (w.start_ns < g1.end_ns && w.end_ns > g2.start_ns) return true;
  }
  return false;
}

// A guess at how `get` came to miss `newer` — the write it missed (P1) or the
// earlier get it went back from (P2) — from who produced its value.
std::string explain(const Op& get, const Op& newer, bool newer_is_write) {
  const ValueSource& src = get.source;
  if (src.kind == ValueSource::Kind::kSet) {
    return fmt::format("value written by a set of worker {}", src.worker);
  }
  if (src.kind == ValueSource::Kind::kUnknown) return "value of unknown origin";
  const std::string_view what = newer_is_write ? "the write" : "the earlier get";
  if (src.done_ns > get.start_ns) {
    return fmt::format(
        "joined a load (worker {}) that read the database before {} {} and was "
        "still running",
        src.worker, what, newer_is_write ? "returned" : "began");
  }
  if (src.done_ns > newer.start_ns) {
    return fmt::format(
        "a load (worker {}) read the database before {} {} and stored its value "
        "after {} began: resurrected",
        src.worker, what, newer_is_write ? "returned" : "began", what);
  }
  if (newer_is_write && get.worker != newer.worker) {
    return fmt::format(
        "value loaded (worker {}) before the write began, still cached in this "
        "process: other processes' L1 is not invalidated",
        src.worker);
  }
  // The cache is filled after the repository returns, so a fill may still
  // land after the write removed the key.
  return fmt::format(
      "value loaded (worker {}) before {} began, put back into the cache after "
      "it was removed: a cache fill raced the write",
      src.worker, what);
}

void check_p1(const KeyIndex& index, const Op& g, const CheckerOptions& options,
              std::vector<Violation>& out) {
  const std::int64_t min_allowance =
      std::min(options.same_process_allowance, options.other_process_allowance).count();
  std::size_t i = ended_before(index.writes_by_end, g.start_ns - min_allowance);
  const Op* missed = nullptr;
  // Walk back over the writes that ended early enough, as long as one of
  // them (or an earlier one) has a newer version than the get returned.
  while (i-- > 0 && index.max_v_by_end[i] > g.version) {
    const Op& w = *index.writes_by_end[i];
    if (w.version <= g.version) continue;
    const auto allowance =
        w.worker == g.worker ? options.same_process_allowance : options.other_process_allowance;
    if (g.start_ns <= w.end_ns + allowance.count()) continue;
    if (excused_by_set(index, g, w.start_ns)) continue;
    if (!missed || w.version > missed->version) missed = &w;
  }
  if (missed) {
    out.push_back({.kind = ViolationKind::kInvalidationWins,
                   .key = g.key,
                   .get = g,
                   .cause = *missed,
                   .explanation = explain(g, *missed, true)});
  }
}

void check_p2(const KeyIndex& index, const GetIndex& gets, const Op& g2,
              const CheckerOptions& options, std::vector<Violation>& out) {
  std::size_t i = ended_before(gets.by_end, g2.start_ns);
  if (i == 0 || gets.max_v[i - 1] <= g2.version) return;
  if (excused_by_failed_write(index, g2, options)) return;
  while (i-- > 0 && gets.max_v[i] > g2.version) {
    const Op& g1 = *gets.by_end[i];
    if (g1.version <= g2.version) continue;
    if (excused_by_set(index, g2, g1.start_ns)) continue;
    if (excused_by_write_in_flight(index, g1, g2)) continue;
    out.push_back({.kind = ViolationKind::kMonotonicReads,
                   .key = g2.key,
                   .get = g2,
                   .cause = g1,
                   .explanation = explain(g2, g1, false)});
    return;
  }
}

}  // namespace

std::string_view to_string(OpKind kind) noexcept { return kOpNames[static_cast<int>(kind)]; }

std::string_view to_string(ViolationKind kind) noexcept {
  switch (kind) {
    case ViolationKind::kInvalidationWins:
      return "P1 invalidation_wins";
    case ViolationKind::kMonotonicReads:
      return "P2 monotonic_reads";
    case ViolationKind::kDeadline:
      return "P3 deadline";
    case ViolationKind::kUnknownVersion:
      return "P0 unknown_version";
  }
  return "?";
}

std::string format_op(const Op& op) {
  std::string line =
      fmt::format("op={} w={} t={} key={} start={} end={} out={} v={}", to_string(op.kind),
                  op.worker, op.thread, op.key, op.start_ns, op.end_ns, op.outcome, op.version);
  if (op.is_get()) line += fmt::format(" deadline={}", op.deadline_ns);
  if (op.source.kind != ValueSource::Kind::kUnknown) line += " src=" + format_source(op.source);
  return line;
}

Result<Op> parse_op(std::string_view line) {
  Op op;
  unsigned seen = 0;  // bit per required field
  for (std::string_view field : split(line, ' ')) {
    if (field.empty()) continue;
    const std::size_t eq = field.find('=');
    if (eq == std::string_view::npos) {
      return make_error(ErrorKind::kInvalidArgument, fmt::format("'{}' is not name=value", field));
    }
    const std::string_view name = field.substr(0, eq);
    const std::string_view value = field.substr(eq + 1);
    if (name == "op") {
      auto kind = std::ranges::find(kOpNames, value);
      if (kind == std::end(kOpNames)) {
        return make_error(ErrorKind::kInvalidArgument, fmt::format("unknown op '{}'", value));
      }
      op.kind = static_cast<OpKind>(kind - std::begin(kOpNames));
      seen |= 1u;
    } else if (name == "key") {
      op.key = value;
      seen |= 2u;
    } else if (name == "out") {
      op.outcome = value;
      seen |= 4u;
    } else if (name == "src") {
      auto source = parse_source(value);
      if (!source) return std::unexpected(source.error());
      op.source = *source;
    } else {
      auto number = parse_int(name, value);
      if (!number) return std::unexpected(number.error());
      if (name == "w") {
        op.worker = static_cast<int>(*number), seen |= 8u;
      } else if (name == "t") {
        op.thread = static_cast<int>(*number), seen |= 16u;
      } else if (name == "start") {
        op.start_ns = *number, seen |= 32u;
      } else if (name == "end") {
        op.end_ns = *number, seen |= 64u;
      } else if (name == "v") {
        op.version = *number, seen |= 128u;
      } else if (name == "deadline") {
        op.deadline_ns = *number;
      } else {
        return make_error(ErrorKind::kInvalidArgument, fmt::format("unknown field '{}'", name));
      }
    }
  }
  if (seen != 255u) {
    return make_error(ErrorKind::kInvalidArgument,
                      "missing one of op, w, t, key, start, end, out, v");
  }
  return op;
}

Result<std::vector<Op>> parse_history(std::string_view text) {
  std::vector<Op> ops;
  std::size_t number = 0;
  for (std::string_view line : split(text, '\n')) {
    ++number;
    if (line.empty() || line.front() == '#') continue;
    auto op = parse_op(line);
    if (!op) {
      return make_error(ErrorKind::kInvalidArgument,
                        fmt::format("line {}: {}", number, op.error().message));
    }
    ops.push_back(std::move(*op));
  }
  return ops;
}

std::string encode_value(std::int64_t version, const ValueSource& source) {
  return fmt::format("{}:{}", version, format_source(source));
}

Result<DecodedValue> decode_value(std::string_view value) {
  const std::size_t colon = value.find(':');
  auto version = parse_int("value", value.substr(0, colon));
  if (!version) {
    return make_error(ErrorKind::kCorrupt, fmt::format("value '{}' has no version", value));
  }
  DecodedValue decoded{.version = *version};
  if (colon != std::string_view::npos) {
    if (auto source = parse_source(value.substr(colon + 1))) decoded.source = *source;
  }
  return decoded;
}

std::map<ViolationKind, std::size_t> CheckReport::counts() const {
  std::map<ViolationKind, std::size_t> out;
  for (const Violation& v : violations) ++out[v.kind];
  return out;
}

CheckReport check_history(const std::vector<Op>& history, const CheckerOptions& options) {
  CheckReport report;
  std::map<std::string, std::vector<const Op*>> by_key;
  std::map<std::pair<int, std::string>, GetIndex> gets;
  for (const Op& op : history) {
    by_key[op.key].push_back(&op);
    if (op.is_get() && op.ok()) gets[{op.worker, op.key}].by_end.push_back(&op);
    if (op.is_write()) ++(op.ok() ? report.writes : report.failed_writes);
  }
  for (auto& [_, index] : gets) {
    std::ranges::sort(index.by_end, {}, &Op::end_ns);
    index.max_v = prefix_max(index.by_end);
  }
  for (const auto& [key, ops] : by_key) {
    const KeyIndex index = index_key(ops);
    for (const Op* g : ops) {
      if (!g->is_get()) continue;
      if (g->deadline_ns > 0) {
        const std::int64_t overshoot = (g->end_ns - g->start_ns) - g->deadline_ns;
        report.worst_overshoot =
            std::max(report.worst_overshoot, std::chrono::nanoseconds(overshoot));
        if (overshoot > options.deadline_allowance.count()) {
          report.violations.push_back({.kind = ViolationKind::kDeadline, .key = key, .get = *g});
        }
      }
      if (!g->ok()) continue;
      ++report.gets_checked;
      // P0: the newest version an update had started writing by g's end.
      const std::size_t started = static_cast<std::size_t>(
          std::ranges::lower_bound(index.updates_by_start, g->end_ns, {}, &Op::start_ns) -
          index.updates_by_start.begin());
      const std::int64_t newest =
          std::max(options.initial_version, started ? index.max_update_v[started - 1] : 0);
      if (g->version < options.initial_version || g->version > newest) {
        report.violations.push_back({.kind = ViolationKind::kUnknownVersion,
                                     .key = key,
                                     .get = *g,
                                     .explanation = fmt::format("newest version {}", newest)});
      }
      check_p1(index, *g, options, report.violations);
      check_p2(index, gets.at({g->worker, key}), *g, options, report.violations);
    }
  }
  std::ranges::stable_sort(report.violations, {},
                           [](const Violation& v) { return v.get.start_ns; });
  return report;
}

std::string describe(const Violation& violation, std::int64_t origin_ns) {
  std::string text = fmt::format("{} key={} get {}", to_string(violation.kind), violation.key,
                                 describe_op(violation.get, origin_ns));
  if (violation.kind == ViolationKind::kDeadline) {
    text += fmt::format(" took {:.0f} ms with a deadline of {:.0f} ms",
                        static_cast<double>(violation.get.end_ns - violation.get.start_ns) / 1e6,
                        static_cast<double>(violation.get.deadline_ns) / 1e6);
  }
  if (violation.cause) {
    text += fmt::format("; {} {}",
                        violation.kind == ViolationKind::kMonotonicReads ? "after" : "missed",
                        describe_op(*violation.cause, origin_ns));
  }
  if (!violation.explanation.empty()) text += "; " + violation.explanation;
  const ValueSource& src = violation.get.source;
  if (src.kind == ValueSource::Kind::kLoad) {
    text += fmt::format(" [the load read the row at {}, returned at {}]",
                        seconds(src.read_ns, origin_ns), seconds(src.done_ns, origin_ns));
  }
  return text;
}

std::map<std::string, std::size_t> count_operations(const std::vector<Op>& history) {
  std::map<std::string, std::size_t> out;
  for (const Op& op : history) ++out[fmt::format("{} {}", to_string(op.kind), op.outcome)];
  return out;
}

}  // namespace herdguard::race
