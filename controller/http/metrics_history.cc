#include "controller/http/metrics_history.h"

#include <optional>

namespace pgfleet::controller {

void MetricsHistory::Sample(const AgentRegistry& registry) {
  for (const std::shared_ptr<AgentSession>& session : registry.List("")) {
    std::optional<pgfleet::v1::MetricsReport> report = session->metrics();
    if (report.has_value()) Add(session->agent_id(), *report);
  }
}

void MetricsHistory::Add(const std::string& agent_id, const pgfleet::v1::MetricsReport& report) {
  std::lock_guard<std::mutex> lock(mu_);
  std::deque<pgfleet::v1::MetricsReport>& samples = samples_[agent_id];
  // Only newer reports: the same report is seen on every sampling pass until the next comes.
  if (!samples.empty() && samples.back().timestamp_unix_ms() >= report.timestamp_unix_ms()) {
    return;
  }
  samples.push_back(report);
  while (samples.size() > max_samples_) samples.pop_front();
}

std::vector<pgfleet::v1::MetricsReport> MetricsHistory::Since(const std::string& agent_id,
                                                              int64_t since_unix_ms) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<pgfleet::v1::MetricsReport> out;
  auto it = samples_.find(agent_id);
  if (it == samples_.end()) return out;
  for (const pgfleet::v1::MetricsReport& report : it->second) {
    if (report.timestamp_unix_ms() > since_unix_ms) out.push_back(report);
  }
  return out;
}

}  // namespace pgfleet::controller
