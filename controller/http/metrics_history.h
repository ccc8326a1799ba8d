// The last few minutes of every connected agent's metrics reports, at full resolution, for the
// dashboard's live charts. The store keeps one sample per minute (history); charts that move
// every second need every report, so they are kept here, in memory only.
//
// Bounded per agent, and so for the fleet: each sample is kept serialized (pools and database
// totals only), and an agent keeps at most max_samples_per_agent samples and at most
// BytesPerAgent() bytes of them, the oldest dropped first. BytesPerAgent() shares
// fleet_budget_bytes among the agents kept (never less than min_bytes_per_agent): by default
// 128 MiB for the whole fleet up to 16,384 agents, e.g. 128 KiB each for 1,000 agents (about
// 3 minutes of one report a second with a few pools) and 13 KiB each for 10,000 (about 3
// minutes of one report every 10 s).
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "controller/registry/agent_registry.h"
#include "pgfleet/v1/agent.pb.h"

namespace pgfleet::controller {

struct MetricsHistoryLimits {
  // Five minutes at one report a second.
  size_t max_samples_per_agent = 300;
  size_t fleet_budget_bytes = size_t{128} << 20;
  size_t min_bytes_per_agent = size_t{8} << 10;
};

class MetricsHistory {
 public:
  explicit MetricsHistory(MetricsHistoryLimits limits = {}) : limits_(limits) {}

  // Appends each connected agent's newest report unless it is the one already kept (agents
  // report every --metrics-interval; sampling more often than that records each report once,
  // and an unchanged report is not even copied). Agents silent for ten minutes are forgotten.
  void Sample(const AgentRegistry& registry);
  void Add(const std::string& agent_id, const pgfleet::v1::MetricsReport& report);

  // Reports newer than `since_unix_ms`, oldest first.
  std::vector<pgfleet::v1::MetricsReport> Since(const std::string& agent_id,
                                                int64_t since_unix_ms) const;

  // What one agent may keep now (serialized bytes), and what all keep (for tests and /metrics).
  size_t BytesPerAgent() const;
  size_t TotalBytes() const;
  size_t SampleCount(const std::string& agent_id) const;

 private:
  struct Kept {
    int64_t timestamp_unix_ms = 0;
    std::string serialized;  // A trimmed MetricsReport.
  };
  struct AgentSamples {
    std::deque<Kept> samples;
    size_t bytes = 0;
  };

  size_t BytesPerAgentLocked() const;
  void TrimLocked(AgentSamples& agent, size_t byte_limit);
  // The newest kept timestamp per agent, so Sample() can skip unchanged reports cheaply.
  int64_t NewestLocked(const std::string& agent_id) const;

  const MetricsHistoryLimits limits_;
  mutable std::mutex mu_;
  std::map<std::string, AgentSamples> agents_;
  size_t total_bytes_ = 0;
};

}  // namespace pgfleet::controller
