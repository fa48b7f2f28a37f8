// race_history.h — the history of a race test run and its checker.
//
// Every worker process of the race test (race_worker.cc) logs one text line
// per operation it ran against a Protector; the driver (race_test.cc) parses
// the lines of all workers and asks check_history() whether the history keeps
// herdguard's consistency contract ("memcache-lease semantics"): a load that
// began before invalidate(k) or set(k, v) returned never overwrites what those
// wrote, in L2 or in any L1. Stale serving is off in these runs, so every get
// must reflect every write that finished before it started.
//
// The database behind the cache holds one integer version per key, bumped by
// every update; cached values carry the version they were read or written
// with (encode_value), so a history says which version each get returned.
//
// Record format, one operation per line, `key=value` fields separated by
// single spaces (values never contain spaces); lines starting with '#' and
// blank lines are ignored:
//
//   op=get w=1 t=3 key=k2 start=812345 end=913456 out=ok v=7 deadline=1500000000
//      src=load/1/800000/900000
//
// (one line in the file). Fields:
//   op        get | invalidate | update_invalidate | update_set
//   w, t      worker process index and thread index within it
//   key       the cache key (also the database row)
//   start,end CLOCK_MONOTONIC (std::chrono::steady_clock) in nanoseconds;
//             comparable across the processes of one Linux machine
//   out       ok, or the error: an ErrorKind name (to_string(ErrorKind)),
//             or db_error when the database step failed
//   v         get: the version returned; invalidate: the version read from
//             the database just before invalidating; update_*: the version the
//             update wrote. -1 when there is none (failed get, failed database
//             step: such a write never reached the cache and is ignored).
//   deadline  get only: the deadline given to get(), as a duration in ns
//   src       get only, optional: who produced the returned value —
//             load/<worker>/<read_ns>/<done_ns> (a repository load that read
//             the database at read_ns and returned at done_ns) or
//             set/<worker>. Used to explain violations, never to judge.
//
// Thread safety: the functions here are pure; call them from any thread.
//
// Example:
//   auto history = herdguard::race::parse_history(text_of_all_logs);
//   if (!history) die(history.error().to_string());
//   herdguard::race::CheckReport report = herdguard::race::check_history(*history, {});
//   for (const auto& v : report.violations) puts(describe(v, origin_ns).c_str());
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "herdguard/result.h"

namespace herdguard::race {

enum class OpKind { kGet, kInvalidate, kUpdateInvalidate, kUpdateSet };

// "get", "invalidate", "update_invalidate", "update_set".
std::string_view to_string(OpKind kind) noexcept;

// Where a cached value came from (see `src` above).
struct ValueSource {
  enum class Kind { kUnknown, kLoad, kSet };
  Kind kind = Kind::kUnknown;
  int worker = -1;
  std::int64_t read_ns = 0;  // kLoad: when the database row was read
  std::int64_t done_ns = 0;  // kLoad: when the repository returned the value
};

struct Op {
  OpKind kind = OpKind::kGet;
  int worker = 0;
  int thread = 0;
  std::string key;
  std::int64_t start_ns = 0;
  std::int64_t end_ns = 0;
  std::string outcome = "ok";
  std::int64_t version = -1;
  std::int64_t deadline_ns = 0;
  ValueSource source{};

  bool ok() const { return outcome == "ok"; }
  bool is_get() const { return kind == OpKind::kGet; }
  // A write that reached (or may have reached) the cache: its database step
  // succeeded, so it has a version.
  bool is_write() const { return kind != OpKind::kGet && version >= 0; }
  bool is_update() const { return kind == OpKind::kUpdateInvalidate || kind == OpKind::kUpdateSet; }
};

// One record line, without the newline.
std::string format_op(const Op& op);
// Errors: kInvalidArgument naming the missing or malformed field.
Result<Op> parse_op(std::string_view line);
// All records of `text` (several logs may be concatenated). Errors:
// kInvalidArgument with the line number of the first bad line.
Result<std::vector<Op>> parse_history(std::string_view text);

// The cached value a worker stores for `version`: "<version>:" followed by
// its source, e.g. "7:load/1/800000/900000" or "7:set/2".
std::string encode_value(std::int64_t version, const ValueSource& source);
struct DecodedValue {
  std::int64_t version = -1;
  ValueSource source{};
};
// Errors: kCorrupt when the value does not start with a version.
Result<DecodedValue> decode_value(std::string_view value);

struct CheckerOptions {
  // P1: how long after a write ends a get in the same process, or in another
  // process, may still miss it. Other processes learn of writes through
  // Redis, and their L1 within a bounded time (the library's l1_max_ttl plus
  // loads already running), hence a larger default.
  std::chrono::nanoseconds same_process_allowance{0};
  std::chrono::nanoseconds other_process_allowance = std::chrono::milliseconds(1500);
  // P3: how far past its deadline a get may return (scheduling on a loaded
  // 2-core machine, a Redis command already on the wire).
  std::chrono::nanoseconds deadline_allowance = std::chrono::milliseconds(100);
  // The version every row starts with.
  std::int64_t initial_version = 1;
};

enum class ViolationKind {
  kInvalidationWins,  // P1
  kMonotonicReads,    // P2
  kDeadline,          // P3
  kUnknownVersion,    // a get returned a version no update had written yet
};

// "P1 invalidation_wins", "P2 monotonic_reads", "P3 deadline",
// "P0 unknown_version".
std::string_view to_string(ViolationKind kind) noexcept;

struct Violation {
  ViolationKind kind = ViolationKind::kInvalidationWins;
  std::string key;
  // The get that broke the property.
  Op get;
  // P1: the write it missed (the highest version among those it missed).
  // P2: the earlier get of the same process that returned a newer version.
  std::optional<Op> cause{};
  // A best guess at the mechanism, from the value's source (see explain()).
  std::string explanation{};
};

struct CheckReport {
  std::vector<Violation> violations{};  // ordered by the get's start
  std::size_t gets_checked = 0;         // successful gets (P0, P1, P2)
  std::size_t writes = 0;               // successful writes
  std::size_t failed_writes = 0;        // errored writes with a version
  // P3: the largest (duration - deadline) over all gets; negative when every
  // get returned before its deadline.
  std::chrono::nanoseconds worst_overshoot{INT64_MIN};

  std::map<ViolationKind, std::size_t> counts() const;
};

// Checks the history of one run (see the file comment) and returns every
// violation, at most one per get and property:
//
//  P0 A successful get returns a version some update on its key had written
//     by the time the get ended (or the initial version).
//  P1 Invalidation wins: a successful get G of key k that starts more than
//     the allowance after a successful write W of k ended (same_process_ or
//     other_process_allowance, by whether G and W ran in one worker) returns
//     a version >= V(W).
//  P2 Monotonic reads: within one worker, successful gets G1, G2 of k with
//     G1.end < G2.start have version(G2) >= version(G1).
//  P3 Deadlines: every get (also failed ones) returns within its deadline
//     plus deadline_allowance.
//
// Exemptions — behaviour the contract allows, each unit-tested:
//
//  E1 Sets are last-writer-wins (P1 and P2). Versions come from the
//     database, but two update+set operations that overlap may reach the
//     cache in either order. A get returning version v is excused (from a
//     write W in P1, from an earlier get G1 in P2) when the update_set U that
//     wrote v started before the get ended, and U could have landed after W
//     (P1: U.end > W.start) or after G1 read (P2: U.end > G1.start).
//  E2 Failed writes promise nothing (P1 and P2). An errored set or invalidate
//     may still take effect later (Redis was paused; the command runs after
//     SIGCONT), and an errored set may land its old value at any time. P1: a
//     failed update_set U with V(U) == v and U.start < G.end excuses G for
//     every W (its own value is the only one a failed set can land; it can
//     only be older than W when U started before W ended). P2: a pair is
//     excused when some failed write F of k started before G2.start and no
//     successful write W of k started after F.end and ended more than its
//     P1 allowance before G2.start (another process's write reaches this
//     process's L1 only within other_process_allowance).
//  E3 A write in flight (P2 only). Cache-aside reads the database ahead of the
//     cache: while an update's invalidate or set is still running, G1 may
//     load the new version (its cache read failed or missed) and G2 may still
//     find the old one in the cache. A pair is excused when an update W of k
//     with version(G2) < V(W) <= version(G1) started before G1 ended and ended
//     after G2 started. (When W ended before G2 started, P1 judges G2.)
CheckReport check_history(const std::vector<Op>& history, const CheckerOptions& options);

// One line: kind, key, the get (worker/thread, times relative to origin_ns,
// version), the cause, the explanation.
std::string describe(const Violation& violation, std::int64_t origin_ns);

// Counts of operations by "kind outcome", e.g. "get ok" -> 1234.
std::map<std::string, std::size_t> count_operations(const std::vector<Op>& history);

}  // namespace herdguard::race
