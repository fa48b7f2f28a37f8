// Runs the real `herdguard demo` binary end to end and reads its JSON report.
#include <gtest/gtest.h>
#include <stdio.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "cli_runner.h"

namespace {

using herdguard::testing::CliRun;

CliRun run(const std::string& args) { return herdguard::testing::run_cli(args); }

TEST(CliDemo, JsonReportsOneDatabaseQueryForTheProtectedRun) {
  CliRun r = run("demo --json");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto report = nlohmann::json::parse(r.output);
  EXPECT_EQ(report["requests"], 1000);
  EXPECT_EQ(report["db_latency_ms"], 50);
  ASSERT_EQ(report["scenarios"].size(), 2u);
  const auto& unprotected = report["scenarios"][0];
  const auto& guarded = report["scenarios"][1];
  EXPECT_EQ(unprotected["name"], "unprotected");
  EXPECT_EQ(guarded["name"], "protected");
  EXPECT_EQ(guarded["db_queries"], 1);
  EXPECT_EQ(guarded["errors"], 0);
  // Plain cache-aside sends (nearly) the whole herd to the database.
  EXPECT_GT(unprotected["db_queries"].get<int>(), 100);
  for (const auto& s : report["scenarios"]) {
    EXPECT_LE(s["latency_ms"]["p50"].get<double>(), s["latency_ms"]["p99"].get<double>());
    EXPECT_LE(s["latency_ms"]["p99"].get<double>(), s["latency_ms"]["max"].get<double>());
  }
}

TEST(CliDemo, FlagsChangeTheScenario) {
  CliRun r = run("demo --json --requests 50 --db-latency-ms 5");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto report = nlohmann::json::parse(r.output);
  EXPECT_EQ(report["requests"], 50);
  EXPECT_EQ(report["db_latency_ms"], 5);
  EXPECT_EQ(report["scenarios"][1]["db_queries"], 1);
}

TEST(CliDemo, TableOutputEndsWithAConclusion) {
  CliRun r = run("demo --requests 20 --db-latency-ms 1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("unprotected"), std::string::npos);
  EXPECT_NE(r.output.find("with herdguard it took 1"), std::string::npos) << r.output;
}

TEST(CliDemo, BadFlagValueIsAClearError) {
  CliRun r = run("demo --requests 0");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("--requests"), std::string::npos) << r.output;
}

TEST(CliDemo, HelpExplainsEveryFlag) {
  CliRun r = run("demo --help");
  ASSERT_EQ(r.exit_code, 0);
  for (const char* flag :
       {"--requests", "--db-latency-ms", "--db-connections", "--timeout-ms", "--json"}) {
    EXPECT_NE(r.output.find(flag), std::string::npos) << flag;
  }
}

TEST(CliDemo, PrometheusOutputPassesPromtool) {
  CliRun r = run("demo --requests 50 --db-latency-ms 5 --prometheus");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("thundering_herd_db_queries_total{cache=\"demo\"} 2\n"),
            std::string::npos)
      << r.output;  // the warm-up load and the herd's one load
  const std::string file = ::testing::TempDir() + "herdguard-demo.prom";
  FILE* f = std::fopen(file.c_str(), "w");
  ASSERT_NE(f, nullptr);
  std::fwrite(r.output.data(), 1, r.output.size(), f);
  std::fclose(f);
  const CliRun check = herdguard::testing::run_command("promtool check metrics < '" + file + "'");
  std::remove(file.c_str());
  EXPECT_EQ(check.exit_code, 0) << check.output;
  EXPECT_EQ(check.output, "");
}

}  // namespace
