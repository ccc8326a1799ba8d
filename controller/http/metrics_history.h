// The last few minutes of every connected agent's metrics reports, at full resolution, for the
// dashboard's live charts. The store keeps one sample per minute (history); charts that move
// every second need every report, so they are kept here, in memory only.
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

class MetricsHistory {
 public:
  // 300 samples: five minutes at one report a second. Each is a trimmed report (pools and
  // database totals only), about 1 KB for a few pools.
  explicit MetricsHistory(size_t max_samples_per_agent = 300)
      : max_samples_(max_samples_per_agent) {}

  // Appends each connected agent's newest report unless it is the one already kept (agents
  // report every --metrics-interval; sampling more often than that records each report once,
  // and an unchanged report is not even copied). Agents silent for ten minutes are forgotten.
  void Sample(const AgentRegistry& registry);
  void Add(const std::string& agent_id, const pgfleet::v1::MetricsReport& report);

  // Reports newer than `since_unix_ms`, oldest first.
  std::vector<pgfleet::v1::MetricsReport> Since(const std::string& agent_id,
                                                int64_t since_unix_ms) const;

 private:
  const size_t max_samples_;
  mutable std::mutex mu_;
  std::map<std::string, std::deque<pgfleet::v1::MetricsReport>> samples_;
  // The newest kept timestamp per agent, so Sample() can skip unchanged reports cheaply.
  int64_t NewestLocked(const std::string& agent_id) const;
};

}  // namespace pgfleet::controller
