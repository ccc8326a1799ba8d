#include "controller/http/metrics_history.h"

#include <algorithm>
#include <iterator>
#include <optional>

namespace pgfleet::controller {

int64_t MetricsHistory::NewestLocked(const std::string& agent_id) const {
  auto it = samples_.find(agent_id);
  return it == samples_.end() || it->second.empty() ? 0 : it->second.back().timestamp_unix_ms();
}

void MetricsHistory::Sample(const AgentRegistry& registry) {
  int64_t newest_anywhere = 0;
  for (const std::shared_ptr<AgentSession>& session : registry.List("")) {
    const int64_t reported = session->metrics_timestamp_ms();
    newest_anywhere = std::max(newest_anywhere, reported);
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (reported == 0 || NewestLocked(session->agent_id()) >= reported) continue;
    }
    std::optional<pgfleet::v1::MetricsReport> report = session->metrics();
    if (report.has_value()) Add(session->agent_id(), *report);
  }
  // Agents that left (or were renamed) long ago: their charts are no longer live.
  constexpr int64_t kForgetAfterMs = 10 * 60 * 1000;
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = samples_.begin(); it != samples_.end();) {
    const bool stale = it->second.empty() ||
                       it->second.back().timestamp_unix_ms() + kForgetAfterMs < newest_anywhere;
    it = stale ? samples_.erase(it) : std::next(it);
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
  // The charts read pools and database totals; pause details and server limits are only ever
  // needed in their latest form, which the registry keeps.
  samples.back().clear_pauses();
  samples.back().clear_server_limits();
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
