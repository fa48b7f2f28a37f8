// The race test's checker (tests/integration/race_history.h) on small,
// hand-written histories: for each property and each exemption, one history
// that breaks it and one that does not — proof that the checker can fail.
// Times are in milliseconds here, converted to the record's nanoseconds.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "race_history.h"

namespace herdguard::race {
namespace {

constexpr std::int64_t kMs = 1'000'000;

Op get(int worker, std::int64_t start_ms, std::int64_t end_ms, std::int64_t version,
       std::string key = "k0") {
  return Op{.kind = OpKind::kGet,
            .worker = worker,
            .thread = 0,
            .key = std::move(key),
            .start_ns = start_ms * kMs,
            .end_ns = end_ms * kMs,
            .outcome = "ok",
            .version = version,
            .deadline_ns = 1500 * kMs};
}

Op write(OpKind kind, int worker, std::int64_t start_ms, std::int64_t end_ms, std::int64_t version,
         std::string outcome = "ok") {
  return Op{.kind = kind,
            .worker = worker,
            .thread = 1,
            .key = "k0",
            .start_ns = start_ms * kMs,
            .end_ns = end_ms * kMs,
            .outcome = std::move(outcome),
            .version = version};
}

Op update_invalidate(int worker, std::int64_t start_ms, std::int64_t end_ms, std::int64_t v,
                     std::string outcome = "ok") {
  return write(OpKind::kUpdateInvalidate, worker, start_ms, end_ms, v, std::move(outcome));
}

Op update_set(int worker, std::int64_t start_ms, std::int64_t end_ms, std::int64_t v,
              std::string outcome = "ok") {
  return write(OpKind::kUpdateSet, worker, start_ms, end_ms, v, std::move(outcome));
}

std::size_t count(const CheckReport& report, ViolationKind kind) {
  auto counts = report.counts();
  return counts.contains(kind) ? counts.at(kind) : 0;
}

CheckReport check(const std::vector<Op>& history) { return check_history(history, {}); }

// --- The record format --------------------------------------------------------

TEST(RaceHistory, RecordsRoundTripThroughText) {
  Op g = get(2, 100, 120, 7, "k3");
  g.thread = 5;
  g.source = {.kind = ValueSource::Kind::kLoad, .worker = 1, .read_ns = 90, .done_ns = 95};
  Op w = update_set(1, 10, 20, 4, "timeout");
  auto parsed = parse_history("# worker 2\n" + format_op(g) + "\n\n" + format_op(w) + "\n");
  ASSERT_TRUE(parsed) << parsed.error().to_string();
  ASSERT_EQ(parsed->size(), 2u);
  const Op& back = (*parsed)[0];
  EXPECT_EQ(back.kind, OpKind::kGet);
  EXPECT_EQ(back.worker, 2);
  EXPECT_EQ(back.thread, 5);
  EXPECT_EQ(back.key, "k3");
  EXPECT_EQ(back.start_ns, 100 * kMs);
  EXPECT_EQ(back.end_ns, 120 * kMs);
  EXPECT_EQ(back.version, 7);
  EXPECT_EQ(back.deadline_ns, 1500 * kMs);
  EXPECT_EQ(back.source.kind, ValueSource::Kind::kLoad);
  EXPECT_EQ(back.source.done_ns, 95);
  EXPECT_EQ((*parsed)[1].kind, OpKind::kUpdateSet);
  EXPECT_EQ((*parsed)[1].outcome, "timeout");
  EXPECT_FALSE((*parsed)[1].ok());
}

TEST(RaceHistory, BadLinesAreReportedWithTheirNumber) {
  auto parsed = parse_history(format_op(get(0, 1, 2, 1)) + "\nop=get w=x\n");
  ASSERT_FALSE(parsed);
  EXPECT_NE(parsed.error().message.find("line 2"), std::string::npos) << parsed.error().message;
  EXPECT_FALSE(parse_op("op=fly w=0 t=0 key=k start=0 end=0 out=ok v=1"));
  EXPECT_FALSE(parse_op("op=get w=0 t=0 key=k start=0 end=0 out=ok"));  // no v
}

TEST(RaceHistory, ValuesCarryTheirVersionAndSource) {
  auto load = decode_value(encode_value(
      12, {.kind = ValueSource::Kind::kLoad, .worker = 3, .read_ns = 5, .done_ns = 9}));
  ASSERT_TRUE(load);
  EXPECT_EQ(load->version, 12);
  EXPECT_EQ(load->source.kind, ValueSource::Kind::kLoad);
  EXPECT_EQ(load->source.worker, 3);
  EXPECT_EQ(load->source.read_ns, 5);
  auto set = decode_value(encode_value(4, {.kind = ValueSource::Kind::kSet, .worker = 1}));
  ASSERT_TRUE(set);
  EXPECT_EQ(set->source.kind, ValueSource::Kind::kSet);
  EXPECT_EQ(decode_value("8")->version, 8);
  EXPECT_FALSE(decode_value("stale"));
}

// --- P0: only versions that were written -----------------------------------

TEST(RaceChecker, P0VersionNoUpdateWroteIsReported) {
  CheckReport report = check({update_invalidate(0, 10, 20, 2), get(0, 30, 40, 3)});
  ASSERT_EQ(count(report, ViolationKind::kUnknownVersion), 1u);
  EXPECT_EQ(report.violations[0].get.version, 3);
}

TEST(RaceChecker, P0VersionOfAnUpdateStillRunningIsFine) {
  // The get read the row after the update committed, before it invalidated.
  CheckReport report = check({update_invalidate(0, 10, 50, 2), get(1, 30, 40, 2), get(1, 1, 2, 1)});
  EXPECT_TRUE(report.violations.empty()) << describe(report.violations[0], 0);
}

// --- P1: invalidation wins -----------------------------------------------------

TEST(RaceChecker, P1GetAfterInvalidateReturningOldVersionIsReported) {
  CheckReport report = check({update_invalidate(0, 100, 110, 2), get(0, 120, 130, 1)});
  ASSERT_EQ(report.violations.size(), 1u);
  const Violation& v = report.violations[0];
  EXPECT_EQ(v.kind, ViolationKind::kInvalidationWins);
  EXPECT_EQ(v.key, "k0");
  EXPECT_EQ(v.get.start_ns, 120 * kMs);
  EXPECT_EQ(v.get.version, 1);
  ASSERT_TRUE(v.cause);
  EXPECT_EQ(v.cause->version, 2);
  EXPECT_EQ(v.cause->end_ns, 110 * kMs);
  const std::string text = describe(v, 100 * kMs);
  EXPECT_NE(text.find("P1 invalidation_wins key=k0"), std::string::npos) << text;
  EXPECT_NE(text.find("+0.020s"), std::string::npos) << text;
}

TEST(RaceChecker, P1GetAfterInvalidateReturningNewVersionIsFine) {
  EXPECT_TRUE(check({update_invalidate(0, 100, 110, 2), get(0, 120, 130, 2)}).violations.empty());
}

TEST(RaceChecker, P1GetOverlappingTheWriteMayReturnTheOldVersion) {
  EXPECT_TRUE(check({update_invalidate(0, 100, 125, 2), get(0, 120, 130, 1)}).violations.empty());
}

TEST(RaceChecker, P1PlainInvalidateCountsWithTheVersionItRead) {
  EXPECT_EQ(check({update_set(1, 0, 5, 2), write(OpKind::kInvalidate, 0, 100, 110, 2),
                   get(0, 120, 130, 1)})
                .violations.size(),
            1u);
}

TEST(RaceChecker, P1OtherProcessesHaveTheirAllowance) {
  // Default other_process_allowance: 1500 ms.
  EXPECT_TRUE(check({update_invalidate(0, 100, 110, 2), get(1, 1000, 1010, 1)}).violations.empty());
  CheckReport late = check({update_invalidate(0, 100, 110, 2), get(1, 1700, 1710, 1)});
  ASSERT_EQ(late.violations.size(), 1u);
  EXPECT_EQ(late.violations[0].kind, ViolationKind::kInvalidationWins);
}

TEST(RaceChecker, P1ReportsExplainALoadThatResurrectedItsValue) {
  Op g = get(0, 300, 310, 1);
  g.source = {
      .kind = ValueSource::Kind::kLoad, .worker = 0, .read_ns = 90 * kMs, .done_ns = 200 * kMs};
  CheckReport report = check({update_invalidate(0, 100, 110, 2), g});
  ASSERT_EQ(report.violations.size(), 1u);
  EXPECT_NE(report.violations[0].explanation.find("resurrected"), std::string::npos)
      << report.violations[0].explanation;
}

// E1: overlapping sets are last-writer-wins.
TEST(RaceChecker, E1OlderSetThatMayHaveLandedLastIsExcused) {
  // v2's set overlaps the v3 write, so it may have reached the cache last.
  EXPECT_TRUE(
      check({update_set(1, 100, 200, 2), update_invalidate(0, 120, 150, 3), get(0, 300, 310, 2)})
          .violations.empty());
}

TEST(RaceChecker, E1OlderSetThatEndedBeforeTheWriteIsNotExcused) {
  CheckReport report =
      check({update_set(1, 50, 60, 2), update_invalidate(0, 120, 150, 3), get(0, 300, 310, 2)});
  ASSERT_EQ(report.violations.size(), 1u);
  EXPECT_EQ(report.violations[0].cause->version, 3);
}

// E2 (P1): a failed set may land its own value at any time.
TEST(RaceChecker, E2FailedSetExcusesItsOwnValue) {
  EXPECT_TRUE(check({update_set(1, 100, 110, 2, "timeout"), update_invalidate(0, 105, 210, 3),
                     get(0, 300, 310, 2)})
                  .violations.empty());
}

TEST(RaceChecker, E2FailedSetDoesNotExcuseOtherValues) {
  CheckReport report = check({update_set(1, 100, 110, 2, "timeout"),
                              update_invalidate(0, 105, 210, 3), get(0, 300, 310, 1)});
  ASSERT_EQ(count(report, ViolationKind::kInvalidationWins), 1u);
}

// --- P2: monotonic reads per process ---------------------------------------------

// The updates end long before the gets, in another process, so that only P2
// is at stake (P1 allows other processes 1500 ms).
std::vector<Op> versions_two_and_three() {
  return {update_invalidate(1, 10, 20, 2), update_invalidate(1, 30, 40, 3)};
}

TEST(RaceChecker, P2GoingBackInOneProcessIsReported) {
  std::vector<Op> history = versions_two_and_three();
  history.push_back(get(0, 100, 110, 3));
  history.push_back(get(0, 120, 130, 2));
  CheckReport report = check(history);
  ASSERT_EQ(report.violations.size(), 1u);
  const Violation& v = report.violations[0];
  EXPECT_EQ(v.kind, ViolationKind::kMonotonicReads);
  EXPECT_EQ(v.get.version, 2);
  ASSERT_TRUE(v.cause);
  EXPECT_EQ(v.cause->version, 3);
  EXPECT_EQ(v.cause->end_ns, 110 * kMs);
}

TEST(RaceChecker, P2GoingForwardIsFine) {
  std::vector<Op> history = versions_two_and_three();
  history.push_back(get(0, 100, 110, 2));
  history.push_back(get(0, 120, 130, 3));
  EXPECT_TRUE(check(history).violations.empty());
}

TEST(RaceChecker, P2DoesNotCompareProcessesOrOverlappingGets) {
  std::vector<Op> history = versions_two_and_three();
  history.push_back(get(0, 100, 110, 3));
  history.push_back(get(2, 120, 130, 2));  // another process
  history.push_back(get(0, 105, 130, 2));  // overlaps the v3 get
  EXPECT_TRUE(check(history).violations.empty());
}

// E2 (P2): a failed write no successful write has followed.
TEST(RaceChecker, E2FailedWriteBeforeTheSecondGetExcusesThePair) {
  std::vector<Op> history = versions_two_and_three();
  history.push_back(get(0, 100, 110, 3));
  history.push_back(write(OpKind::kInvalidate, 1, 105, 115, 3, "timeout"));
  history.push_back(get(0, 120, 130, 2));
  EXPECT_TRUE(check(history).violations.empty());
}

TEST(RaceChecker, E2FailedWriteFollowedByASuccessfulOneExcusesNothing) {
  std::vector<Op> history = versions_two_and_three();
  history.push_back(get(0, 100, 110, 3));
  history.push_back(write(OpKind::kInvalidate, 1, 105, 115, 3, "timeout"));
  history.push_back(write(OpKind::kInvalidate, 0, 116, 118, 3));  // the getter's own process
  history.push_back(get(0, 120, 130, 2));
  EXPECT_EQ(count(check(history), ViolationKind::kMonotonicReads), 1u);
}

// Another process's successful write reaches this process's L1 only within
// other_process_allowance (1.5 s): until then the failed write still excuses.
TEST(RaceChecker, E2AnotherProcessesWriteEndsTheExcuseOnlyAfterItsAllowance) {
  // A failed then a successful invalidate by worker 1, then a get of worker 0.
  auto history_with_second_get_at = [](std::int64_t start_ms) {
    std::vector<Op> history = versions_two_and_three();
    history.push_back(get(0, 100, 110, 3));
    history.push_back(write(OpKind::kInvalidate, 1, 105, 115, 3, "timeout"));
    history.push_back(write(OpKind::kInvalidate, 1, 116, 118, 3));
    history.push_back(get(0, start_ms, start_ms + 10, 2));
    return history;
  };
  EXPECT_EQ(count(check(history_with_second_get_at(120)), ViolationKind::kMonotonicReads), 0u);
  EXPECT_EQ(count(check(history_with_second_get_at(1700)), ViolationKind::kMonotonicReads), 1u);
}

// E1 (P2): an older set that may have landed after the first get read.
TEST(RaceChecker, E1OlderSetLandingBetweenTheGetsIsExcused) {
  std::vector<Op> history = {update_set(1, 10, 105, 2), update_invalidate(1, 30, 40, 3),
                             get(0, 100, 110, 3), get(0, 120, 130, 2)};
  EXPECT_TRUE(check(history).violations.empty());
}

TEST(RaceChecker, E1OlderSetThatEndedBeforeTheFirstGetIsNotExcused) {
  std::vector<Op> history = {update_set(1, 10, 20, 2), update_invalidate(1, 30, 40, 3),
                             get(0, 100, 110, 3), get(0, 120, 130, 2)};
  EXPECT_EQ(count(check(history), ViolationKind::kMonotonicReads), 1u);
}

// E3: the database runs ahead of the cache while a write is in flight.
TEST(RaceChecker, E3UpdateStillInvalidatingExcusesThePair) {
  std::vector<Op> history = {update_invalidate(1, 10, 20, 2), update_invalidate(1, 90, 200, 3),
                             get(0, 100, 110, 3), get(0, 120, 130, 2)};
  EXPECT_TRUE(check(history).violations.empty());
}

TEST(RaceChecker, E3UpdateThatEndedBeforeTheSecondGetDoesNotExcuse) {
  std::vector<Op> history = {update_invalidate(1, 10, 20, 2), update_invalidate(1, 90, 115, 3),
                             get(0, 100, 110, 3), get(0, 120, 130, 2)};
  EXPECT_EQ(count(check(history), ViolationKind::kMonotonicReads), 1u);
}

// --- P3: deadlines -----------------------------------------------------------------

TEST(RaceChecker, P3GetFarPastItsDeadlineIsReported) {
  Op slow = get(0, 0, 2000, 1);  // deadline 1500 ms, allowance 100 ms
  slow.outcome = "timeout";
  CheckReport report = check({slow});
  ASSERT_EQ(report.violations.size(), 1u);
  EXPECT_EQ(report.violations[0].kind, ViolationKind::kDeadline);
  EXPECT_EQ(report.worst_overshoot, std::chrono::milliseconds(500));
  EXPECT_NE(describe(report.violations[0], 0).find("took 2000 ms"), std::string::npos);
}

TEST(RaceChecker, P3GetWithinItsAllowanceIsFine) {
  CheckReport report = check({get(0, 0, 1580, 1), get(0, 0, 100, 1)});
  EXPECT_TRUE(report.violations.empty());
  EXPECT_EQ(report.worst_overshoot, std::chrono::milliseconds(80));
  EXPECT_EQ(report.gets_checked, 2u);
}

TEST(RaceChecker, P3GetJustPastItsAllowanceIsReported) {
  CheckReport report = check({get(0, 0, 1620, 1)});  // 120 ms past: over the 100 ms allowance
  ASSERT_EQ(report.violations.size(), 1u);
  EXPECT_EQ(report.violations[0].kind, ViolationKind::kDeadline);
}

TEST(RaceChecker, FailedGetsAndFailedDatabaseStepsAreNotJudged) {
  Op failed_get = get(0, 120, 130, -1);
  failed_get.outcome = "timeout";
  Op db_failed = update_invalidate(0, 100, 110, -1, "db_error");
  CheckReport report = check({update_invalidate(0, 10, 20, 2), failed_get, db_failed});
  EXPECT_TRUE(report.violations.empty());
  EXPECT_EQ(report.writes, 1u);
  EXPECT_EQ(report.failed_writes, 0u);
}

}  // namespace
}  // namespace herdguard::race
