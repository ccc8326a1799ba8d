// What the engines may know and do about connected agents: look at a snapshot of each one
// (its applied config version and newest metrics report) and hand it a message. The
// AgentRegistry implements it over the agents' gRPC streams; unit tests use a fake. Engines
// call it only outside their own locks, so a slow stream never stalls a rollout or a window.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "controller/store/rows.h"
#include "pgfleet/v1/agent.pb.h"

namespace pgfleet::controller {

// A connected agent as seen at one moment.
struct LiveAgent {
  std::string agent_id;
  std::string environment;
  uint64_t applied_version = 0;
  // Shared with the session, never copied: a snapshot of every agent is taken each engine tick
  // and each dashboard sample, and copying 10,000 reports each time was most of the cost.
  std::shared_ptr<const pgfleet::v1::MetricsReport> metrics;
  // The process on this stream (issue 19): its pid, the RestartCommand it took over after (0:
  // none), and whether the binary at its path is another one than it runs (and which).
  int32_t pid = 0;
  uint64_t handover_command_id = 0;
  bool binary_outdated = false;
  std::string on_disk_build_id;
  std::string on_disk_version;
};

class AgentDirectory {
 public:
  virtual ~AgentDirectory() = default;
  // nullopt when the agent has no stream open.
  virtual std::optional<LiveAgent> FindLive(const std::string& agent_id) const = 0;
  // environment empty: all.
  virtual std::vector<LiveAgent> ListLive(const std::string& environment) const = 0;
  // Sends `version` to the agent unless it already runs it, or (without `force`) it was
  // already sent on this stream (the agent works on it, or refused it). False when the agent
  // is not connected or its stream is gone.
  virtual bool OfferConfig(const std::string& agent_id, const ConfigVersionRow& version,
                           bool force) = 0;
  // OfferConfig to each of `agent_ids` (a rollout wave); returns how many were sent or run it
  // already. The default offers one by one; the registry renders and builds the message once
  // when every agent's render is the same (a version without overlays).
  virtual int OfferConfigs(const std::vector<std::string>& agent_ids,
                           const ConfigVersionRow& version, bool force) {
    int offered = 0;
    for (const std::string& agent_id : agent_ids) offered += OfferConfig(agent_id, version, force);
    return offered;
  }
  // False when the agent is not connected or its stream is gone.
  virtual bool Send(const std::string& agent_id, const pgfleet::v1::ControllerMessage& message) = 0;
};

}  // namespace pgfleet::controller
