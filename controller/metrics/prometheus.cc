#include "controller/metrics/prometheus.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "common/prometheus_text.h"

namespace pgfleet::controller::metrics {

std::string FormatValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  if (value == std::floor(value) && std::fabs(value) < 1e15) {
    return absl::StrCat(static_cast<int64_t>(value));
  }
  // The shortest form that reads back as the same double: le="0.1", not 0.10000000000000001.
  char buffer[32];
  for (int precision = 1; precision <= 17; ++precision) {
    snprintf(buffer, sizeof(buffer), "%.*g", precision, value);
    if (strtod(buffer, nullptr) == value) break;
  }
  return buffer;
}

void Exposition::Family(absl::string_view name, absl::string_view type, absl::string_view help) {
  common::AppendFamilyHeader(&out_, name, type, help);
}

void Exposition::Sample(absl::string_view name, const LabelPairs& labels, double value) {
  common::AppendSample(&out_, name, labels, FormatValue(value));
}

Histogram::Histogram(std::vector<double> upper_bounds)
    : upper_bounds_(std::move(upper_bounds)), counts_(upper_bounds_.size() + 1, 0) {}

void Histogram::Observe(double value) {
  size_t bucket = 0;
  while (bucket < upper_bounds_.size() && value > upper_bounds_[bucket]) ++bucket;
  std::lock_guard<std::mutex> lock(mu_);
  ++counts_[bucket];
  sum_ += value;
  ++count_;
}

uint64_t Histogram::count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return count_;
}

void Histogram::Render(Exposition& out, absl::string_view name, const LabelPairs& labels) const {
  std::vector<uint64_t> counts;
  double sum;
  uint64_t count;
  {
    std::lock_guard<std::mutex> lock(mu_);
    counts = counts_;
    sum = sum_;
    count = count_;
  }
  const std::string bucket_name = absl::StrCat(name, "_bucket");
  uint64_t cumulative = 0;
  for (size_t i = 0; i <= upper_bounds_.size(); ++i) {
    cumulative += counts[i];
    LabelPairs with_le = labels;
    with_le.emplace_back("le", i < upper_bounds_.size() ? FormatValue(upper_bounds_[i]) : "+Inf");
    out.Sample(bucket_name, with_le, static_cast<double>(cumulative));
  }
  out.Sample(absl::StrCat(name, "_sum"), labels, sum);
  out.Sample(absl::StrCat(name, "_count"), labels, static_cast<double>(count));
}

HistogramVec::HistogramVec(std::vector<std::string> label_names, std::vector<double> upper_bounds)
    : label_names_(std::move(label_names)), upper_bounds_(std::move(upper_bounds)) {}

void HistogramVec::Observe(const std::vector<std::string>& label_values, double value) {
  Histogram* histogram;
  {
    std::lock_guard<std::mutex> lock(mu_);
    std::unique_ptr<Histogram>& slot = histograms_[label_values];
    if (slot == nullptr) slot = std::make_unique<Histogram>(upper_bounds_);
    histogram = slot.get();  // Never removed: the pointer stays valid.
  }
  histogram->Observe(value);
}

LabelPairs HistogramVec::Labels(const std::vector<std::string>& values) const {
  LabelPairs labels;
  for (size_t i = 0; i < label_names_.size() && i < values.size(); ++i) {
    labels.emplace_back(label_names_[i], values[i]);
  }
  return labels;
}

void HistogramVec::RenderHistograms(Exposition& out, absl::string_view name) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [values, histogram] : histograms_) histogram->Render(out, name, Labels(values));
}

void HistogramVec::RenderCounts(Exposition& out, absl::string_view name) const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [values, histogram] : histograms_) {
    out.Sample(name, Labels(values), static_cast<double>(histogram->count()));
  }
}

std::vector<double> ApiLatencyBuckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
}

std::vector<double> StoreLatencyBuckets() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5};
}

Histogram& StoreWriteLatency() {
  static Histogram* const histogram = new Histogram(StoreLatencyBuckets());  // Never destroyed:
  return *histogram;  // the store may write while static destructors run.
}

}  // namespace pgfleet::controller::metrics
