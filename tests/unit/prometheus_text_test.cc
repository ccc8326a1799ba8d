// The Prometheus text helpers (common/prometheus_text.h, controller/metrics/prometheus.h): label
// escaping, value formatting, HELP escaping and cumulative histogram buckets.
#include "common/prometheus_text.h"

#include <string>

#include "controller/metrics/prometheus.h"
#include "gtest/gtest.h"

namespace pgfleet::controller::metrics {
namespace {

TEST(PrometheusTextTest, LabelValuesAreEscapedAndMadeUtf8) {
  std::string out;
  common::AppendLabelValue(&out, "a\\b\"c\nd");
  EXPECT_EQ(out, "a\\\\b\\\"c\\nd");
  out.clear();
  common::AppendLabelValue(&out, std::string("ok\xff\xc3(", 5));  // Not UTF-8: two bad bytes.
  EXPECT_EQ(out, "ok\xEF\xBF\xBD\xEF\xBF\xBD(");
  out.clear();
  common::AppendLabelValue(&out, "z\xc3\xa9");  // "zé" stays as it is.
  EXPECT_EQ(out, "z\xc3\xa9");
}

TEST(PrometheusTextTest, FamiliesAndSamples) {
  Exposition out;
  out.Family("x_total", "counter", "Line one\nback\\slash");
  out.Sample("x_total", {{"environment", "pr\"od"}, {"code", "OK"}}, 3);
  out.Sample("x_total", {}, 0.25);
  EXPECT_EQ(out.text(),
            "# HELP x_total Line one\\nback\\\\slash\n# TYPE x_total counter\n"
            "x_total{environment=\"pr\\\"od\",code=\"OK\"} 3\nx_total 0.25\n");
}

TEST(PrometheusTextTest, HistogramBucketsAreCumulative) {
  Histogram histogram({0.1, 1});
  histogram.Observe(0.05);
  histogram.Observe(0.1);  // On a bound: in that bucket (le is "less or equal").
  histogram.Observe(0.5);
  histogram.Observe(7);
  Exposition out;
  histogram.Render(out, "h", {{"m", "a"}});
  EXPECT_EQ(out.text(),
            "h_bucket{m=\"a\",le=\"0.1\"} 2\nh_bucket{m=\"a\",le=\"1\"} 3\n"
            "h_bucket{m=\"a\",le=\"+Inf\"} 4\nh_sum{m=\"a\"} 7.65\n"
            "h_count{m=\"a\"} 4\n");
}

TEST(PrometheusTextTest, HistogramVecKeepsOneHistogramPerLabelSet) {
  HistogramVec calls({"wire", "code"}, {1});
  calls.Observe({"grpc", "OK"}, 0.5);
  calls.Observe({"grpc", "OK"}, 2);
  calls.Observe({"http", "NOT_FOUND"}, 0.5);
  Exposition out;
  calls.RenderCounts(out, "c_total");
  EXPECT_EQ(out.text(),
            "c_total{wire=\"grpc\",code=\"OK\"} 2\nc_total{wire=\"http\",code=\"NOT_FOUND\"} 1\n");
}

}  // namespace
}  // namespace pgfleet::controller::metrics
