// What the rollout engine needs from the store. Persistent rollout state: the engine keeps
// everything it needs to resume after a controller restart here, so a rollout is never half-applied
// and forgotten.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "controller/maintenance/maintenance_store.h"
#include "controller/store/rows.h"

namespace pgfleet::controller {

enum class RolloutState { kRunning, kPaused, kSucceeded, kFailed, kAborted };
const char* RolloutStateName(RolloutState state);
absl::StatusOr<RolloutState> ParseRolloutState(const std::string& name);
inline bool IsActive(RolloutState state) {
  return state == RolloutState::kRunning || state == RolloutState::kPaused;
}

struct HealthLimits {
  int max_cl_waiting = 10;
  int64_t max_maxwait_ms = 1000;
  int max_new_server_errors = 0;
  int max_new_login_failures = 0;
};

enum class RolloutKind { kConfig, kRestart };
inline const char* RolloutKindName(RolloutKind kind) {
  return kind == RolloutKind::kRestart ? "restart" : "config";
}

struct RolloutRow {
  uint64_t id = 0;
  std::string environment;
  uint64_t from_version = 0;  // 0: the environment had no desired version.
  uint64_t to_version = 0;
  std::vector<std::string> waves;  // "1", "25%", "100%"
  int64_t bake_ms = 60000;
  int max_unavailable = 0;
  HealthLimits limits;
  RolloutState state = RolloutState::kRunning;
  int current_wave = 0;
  int64_t wave_started_unix_ms = 0;  // When the current wave's agents were told.
  int64_t bake_started_unix_ms = 0;  // 0: not baking yet (still applying).
  std::string failed_agent;
  std::string reason;
  std::string created_by;
  std::string force_reason;
  int64_t created_unix_ms = 0;
  int64_t finished_unix_ms = 0;
  // Canonical label selector (LabelSelector::ToString); empty: every agent of the environment.
  // A rollout with one moves only the matching agents and leaves them pinned to to_version.
  std::string selector;
  // kRestart: each wave's agents hand over to a new process of the binary on disk (no config
  // changes; from_version and to_version are the environment's desired version at the start).
  RolloutKind kind = RolloutKind::kConfig;
  bool only_outdated = false;  // Restart: only agents whose binary on disk is another one.
  std::string binary_version;  // Restart: only agents whose binary on disk is this version.
};

// One agent's progress in a rollout. Stored and shown as its name (RolloutAgentStateName).
enum class RolloutAgentState { kWaiting, kApplying, kApplied, kFailed, kRolledBack };
const char* RolloutAgentStateName(RolloutAgentState state);
absl::StatusOr<RolloutAgentState> ParseRolloutAgentState(const std::string& name);

// One agent's place in a rollout.
struct RolloutAgentRow {
  uint64_t rollout_id = 0;
  std::string agent_id;
  int wave = 0;
  RolloutAgentState state = RolloutAgentState::kWaiting;
  std::string error;
  // The agent's pin when the rollout took it, put back if the rollout fails or is aborted.
  std::optional<uint64_t> previous_pin;
  // Restart rollouts: the RestartCommand sent (0: not yet), the pid the agent ran when it was
  // sent, and the pid of the process that took over (0: not yet).
  uint64_t command_id = 0;
  int32_t old_pid = 0;
  int32_t new_pid = 0;
};

class RolloutStore {
 public:
  virtual ~RolloutStore() = default;
  // Inserts the rollout and its agents in one transaction. FailedPrecondition when the
  // environment already has an active (running or paused) rollout.
  virtual absl::StatusOr<RolloutRow> CreateRollout(const RolloutRow& rollout,
                                                   const std::vector<RolloutAgentRow>& agents) = 0;
  virtual absl::Status UpdateRollout(const RolloutRow& rollout) = 0;
  virtual absl::Status UpdateRolloutAgent(const RolloutAgentRow& agent) = 0;
  // A wave's (or a whole rollout's) agents at once: sets each agent's pin (SetAgentPin's
  // contract) and writes each rollout row (UpdateRolloutAgent's), all or nothing where the
  // store has transactions. This default makes one call per agent, so a store without a batch
  // path stays correct; SqliteStore does it in one transaction.
  struct AgentPin {
    std::string agent_id;
    std::optional<uint64_t> version;
  };
  virtual absl::Status UpdateRolloutAgents(const std::vector<AgentPin>& pins,
                                           const std::vector<RolloutAgentRow>& agents) {
    for (const AgentPin& pin : pins) {
      absl::Status set = SetAgentPin(pin.agent_id, pin.version);
      if (!set.ok()) return set;
    }
    for (const RolloutAgentRow& agent : agents) {
      absl::Status updated = UpdateRolloutAgent(agent);
      if (!updated.ok()) return updated;
    }
    return absl::OkStatus();
  }
  virtual absl::StatusOr<RolloutRow> GetRollout(uint64_t id) = 0;  // NotFound
  // Newest first. environment empty: all; active_only: running or paused.
  virtual absl::StatusOr<std::vector<RolloutRow>> ListRollouts(const std::string& environment,
                                                               bool active_only) = 0;
  virtual absl::StatusOr<std::vector<RolloutAgentRow>> ListRolloutAgents(uint64_t rollout_id) = 0;
  // Whether a rollout of a version with this sha256 succeeded in `environment`.
  virtual absl::StatusOr<bool> HasSucceededRollout(const std::string& environment,
                                                   const std::string& sha256) = 0;
  virtual absl::Status SetEnvironmentUpstream(const std::string& environment,
                                              const std::string& upstream) = 0;
  virtual absl::StatusOr<std::string> GetEnvironmentUpstream(const std::string& environment) = 0;

  // Shared with the rest of the store (see store.h for their contracts): what the engine
  // reads about environments, versions and agents, the pins it sets, the desired version it
  // moves when a rollout completes, the maintenance windows it waits for, and the audit log.
  virtual absl::StatusOr<EnvironmentRow> GetEnvironment(const std::string& name) = 0;
  virtual absl::Status SetDesiredVersion(const std::string& environment, uint64_t version,
                                         std::optional<uint64_t> expected_previous) = 0;
  virtual absl::StatusOr<ConfigVersionRow> GetConfigVersion(uint64_t version) = 0;
  virtual absl::StatusOr<std::vector<AgentRow>> ListAgents(const std::string& environment) = 0;
  virtual absl::Status SetAgentPin(const std::string& agent_id,
                                   std::optional<uint64_t> version) = 0;
  virtual absl::StatusOr<std::vector<WindowRow>> ListWindows(const std::string& environment,
                                                             bool open_only) = 0;
  virtual absl::Status Audit(const std::string& actor, const std::string& action,
                             const std::string& target, const std::string& details,
                             int64_t now_ms) = 0;
  // Restart rollouts record the RestartCommands they send like any other command.
  virtual absl::StatusOr<uint64_t> RecordCommand(const std::string& agent_id,
                                                 const std::string& kind, const std::string& args,
                                                 const std::string& actor, int64_t now_ms) = 0;
};

}  // namespace pgfleet::controller
