#include "controller/http/metrics_history.h"

#include <algorithm>
#include <iterator>
#include <optional>

namespace pgfleet::controller {

int64_t MetricsHistory::NewestLocked(const std::string& agent_id) const {
  auto it = agents_.find(agent_id);
  return it == agents_.end() || it->second.samples.empty()
             ? 0
             : it->second.samples.back().timestamp_unix_ms;
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
    if (std::shared_ptr<const pgfleet::v1::MetricsReport> report = session->metrics()) {
      Add(session->agent_id(), *report);
    }
  }
  // Agents that left (or were renamed) long ago: their charts are no longer live.
  constexpr int64_t kForgetAfterMs = 10 * 60 * 1000;
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = agents_.begin(); it != agents_.end();) {
    const bool stale =
        it->second.samples.empty() ||
        it->second.samples.back().timestamp_unix_ms + kForgetAfterMs < newest_anywhere;
    if (stale) {
      total_bytes_ -= it->second.bytes;
      it = agents_.erase(it);
    } else {
      ++it;
    }
  }
}

size_t MetricsHistory::BytesPerAgentLocked() const {
  const size_t agents = std::max<size_t>(agents_.size(), 1);
  return std::max(limits_.min_bytes_per_agent, limits_.fleet_budget_bytes / agents);
}

size_t MetricsHistory::BytesPerAgent() const {
  std::lock_guard<std::mutex> lock(mu_);
  return BytesPerAgentLocked();
}

size_t MetricsHistory::TotalBytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return total_bytes_;
}

size_t MetricsHistory::SampleCount(const std::string& agent_id) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = agents_.find(agent_id);
  return it == agents_.end() ? 0 : it->second.samples.size();
}

void MetricsHistory::TrimLocked(AgentSamples& agent, size_t byte_limit) {
  // The newest sample stays even when it alone is over the limit: a chart shows the present.
  while (agent.samples.size() > 1 &&
         (agent.samples.size() > limits_.max_samples_per_agent || agent.bytes > byte_limit)) {
    agent.bytes -= agent.samples.front().serialized.size();
    total_bytes_ -= agent.samples.front().serialized.size();
    agent.samples.pop_front();
  }
}

void MetricsHistory::Add(const std::string& agent_id, const pgfleet::v1::MetricsReport& report) {
  // The charts read pools and database totals; pause details and server limits are only ever
  // needed in their latest form, which the registry keeps.
  pgfleet::v1::MetricsReport trimmed = report;
  trimmed.clear_pauses();
  trimmed.clear_server_limits();
  Kept kept{report.timestamp_unix_ms(), trimmed.SerializeAsString()};

  std::lock_guard<std::mutex> lock(mu_);
  AgentSamples& agent = agents_[agent_id];
  // Only newer reports: the same report is seen on every sampling pass until the next comes.
  if (!agent.samples.empty() &&
      agent.samples.back().timestamp_unix_ms >= report.timestamp_unix_ms()) {
    return;
  }
  agent.bytes += kept.serialized.size();
  total_bytes_ += kept.serialized.size();
  agent.samples.push_back(std::move(kept));
  TrimLocked(agent, BytesPerAgentLocked());
}

std::vector<pgfleet::v1::MetricsReport> MetricsHistory::Since(const std::string& agent_id,
                                                              int64_t since_unix_ms) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<pgfleet::v1::MetricsReport> out;
  auto it = agents_.find(agent_id);
  if (it == agents_.end()) return out;
  for (const Kept& kept : it->second.samples) {
    if (kept.timestamp_unix_ms <= since_unix_ms) continue;
    pgfleet::v1::MetricsReport report;
    if (report.ParseFromString(kept.serialized)) out.push_back(std::move(report));
  }
  return out;
}

}  // namespace pgfleet::controller
