// The Prometheus text exposition format (0.0.4) for the controller's /metrics, and the two
// thread-safe instruments it needs: histograms (API and store latencies) and a set of them
// keyed by label values. Header-light on purpose: the store includes it to time its writes.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"

namespace pgfleet::controller::metrics {

using LabelPairs = std::vector<std::pair<std::string, std::string>>;

// A sample value: integers without a fraction, others in the shortest form that reads back
// exactly; +Inf/-Inf/NaN as the format spells them.
std::string FormatValue(double value);

// Builds the exposition text. Samples of one family follow its HELP/TYPE lines, contiguously.
class Exposition {
 public:
  void Family(absl::string_view name, absl::string_view type, absl::string_view help);
  void Sample(absl::string_view name, const LabelPairs& labels, double value);
  const std::string& text() const { return out_; }
  std::string Take() { return std::move(out_); }

 private:
  std::string out_;
};

// Cumulative buckets, as Prometheus reads them. Observe is cheap (a mutex and a few adds).
class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);
  void Observe(double value);
  // `name`_bucket{..., le="..."}, `name`_sum and `name`_count samples (no HELP/TYPE).
  void Render(Exposition& out, absl::string_view name, const LabelPairs& labels) const;
  uint64_t count() const;

 private:
  const std::vector<double> upper_bounds_;
  mutable std::mutex mu_;
  std::vector<uint64_t> counts_;  // Per bucket, not cumulative; one more for +Inf.
  double sum_ = 0;
  uint64_t count_ = 0;
};

// Histograms by label values (e.g. wire, method, code), made on first use. The label names
// are fixed; the values must come from bounded sets (the API's method table, status codes).
class HistogramVec {
 public:
  HistogramVec(std::vector<std::string> label_names, std::vector<double> upper_bounds);
  void Observe(const std::vector<std::string>& label_values, double value);
  // Every histogram's samples under `name` (no HELP/TYPE), and each one's count alone as the
  // samples of a counter family (requests_total next to request_duration_seconds).
  void RenderHistograms(Exposition& out, absl::string_view name) const;
  void RenderCounts(Exposition& out, absl::string_view name) const;

 private:
  LabelPairs Labels(const std::vector<std::string>& values) const;
  const std::vector<std::string> label_names_;
  const std::vector<double> upper_bounds_;
  mutable std::mutex mu_;
  std::map<std::vector<std::string>, std::unique_ptr<Histogram>> histograms_;
};

// Latency buckets in seconds: API calls (1 ms .. 10 s) and store writes (100 us .. 2.5 s).
std::vector<double> ApiLatencyBuckets();
std::vector<double> StoreLatencyBuckets();

// How long each store write transaction took (BEGIN .. COMMIT, or one autocommit statement),
// in seconds: process-wide, so the SQLite store can record into it without being wired to
// the metrics, which render it.
Histogram& StoreWriteLatency();

}  // namespace pgfleet::controller::metrics
