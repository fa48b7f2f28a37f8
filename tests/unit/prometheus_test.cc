// The metrics registry and its text exposition.
#include "herdguard/prometheus.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

namespace herdguard {
namespace {

TEST(MetricsRegistry, RendersCountersGaugesAndHistograms) {
  MetricsRegistry r;
  auto hits = r.counter("app_hits_total", "Hits.", {{"layer", "l1"}});
  ASSERT_TRUE(hits);
  (*hits)->inc(3);
  ASSERT_TRUE(r.gauge_callback("app_state", "State\nwith a newline.", {}, [] { return 2.0; }));
  auto wait = r.histogram("app_wait_seconds", "Wait.", {0.01, 0.1, 1});
  ASSERT_TRUE(wait);
  (*wait)->observe(0.005);
  (*wait)->observe(0.05);
  (*wait)->observe(5);
  const std::string text = r.render();
  EXPECT_NE(text.find("# HELP app_hits_total Hits.\n# TYPE app_hits_total counter\n"
                      "app_hits_total{layer=\"l1\"} 3\n"),
            std::string::npos)
      << text;
  EXPECT_NE(
      text.find("# HELP app_state State\\nwith a newline.\n# TYPE app_state gauge\napp_state 2\n"),
      std::string::npos)
      << text;
  EXPECT_NE(text.find("app_wait_seconds_bucket{le=\"0.01\"} 1\n"
                      "app_wait_seconds_bucket{le=\"0.1\"} 2\n"
                      "app_wait_seconds_bucket{le=\"1\"} 2\n"
                      "app_wait_seconds_bucket{le=\"+Inf\"} 3\n"
                      "app_wait_seconds_sum 5.055\n"
                      "app_wait_seconds_count 3\n"),
            std::string::npos)
      << text;
}

TEST(MetricsRegistry, SameNameAndLabelsIsTheSameSeries) {
  MetricsRegistry r;
  auto a = r.counter("x_total", "X.", {{"k", "v"}});
  auto b = r.counter("x_total", "X.", {{"k", "v"}});
  ASSERT_TRUE(a && b);
  EXPECT_EQ(*a, *b);
  auto other = r.counter("x_total", "X.", {{"k", "w"}});
  ASSERT_TRUE(other);
  EXPECT_NE(*a, *other);
}

TEST(MetricsRegistry, MistakesAreRefused) {
  MetricsRegistry r;
  EXPECT_FALSE(r.counter("bad-name", "h"));
  EXPECT_FALSE(r.counter("9starts_with_digit", "h"));
  EXPECT_FALSE(r.counter("ok_total", "h", {{"bad-label", "v"}}));
  EXPECT_FALSE(r.counter("ok_total", "h", {{"__reserved", "v"}}));
  ASSERT_TRUE(r.counter("typed_total", "h"));
  EXPECT_FALSE(r.gauge("typed_total", "h"));                      // another type
  EXPECT_FALSE(r.counter("typed_total", "h", {{"extra", "v"}}));  // other label names
  EXPECT_FALSE(r.histogram("h_seconds", "h", {1, 0.5}));
  EXPECT_FALSE(r.histogram("h_seconds", "h", {}));
  EXPECT_FALSE(r.histogram("h2_seconds", "h", {1}, {{"le", "x"}}));
}

TEST(MetricsRegistry, LabelValuesAreEscaped) {
  MetricsRegistry r;
  ASSERT_TRUE(r.counter("e_total", "h", {{"v", "a\"b\\c\nd"}}));
  EXPECT_NE(r.render().find("e_total{v=\"a\\\"b\\\\c\\nd\"} 0"), std::string::npos) << r.render();
}

TEST(MetricsRegistry, CountingFromManyThreadsIsExact) {
  MetricsRegistry r;
  Counter& c = **r.counter("c_total", "h");
  Histogram& h = **r.histogram("h_seconds", "h", duration_buckets_seconds());
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) {
        c.inc();
        h.observe(0.002);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(c.value(), 40000u);
  EXPECT_EQ(h.cumulative_counts().back(), 40000u);
  EXPECT_NEAR(h.sum(), 80.0, 1e-6);
}

}  // namespace
}  // namespace herdguard
