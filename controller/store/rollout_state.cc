// Names of rollout, rollout-agent and maintenance-window states as stored in SQLite and shown to
// operators.
#include "absl/strings/str_cat.h"
#include "controller/rollout/rollout_store.h"

namespace pgfleet::controller {

const char* RolloutStateName(RolloutState state) {
  switch (state) {
    case RolloutState::kRunning:
      return "running";
    case RolloutState::kPaused:
      return "paused";
    case RolloutState::kSucceeded:
      return "succeeded";
    case RolloutState::kFailed:
      return "failed";
    case RolloutState::kAborted:
      return "aborted";
  }
  return "?";
}

absl::StatusOr<RolloutState> ParseRolloutState(const std::string& name) {
  for (RolloutState state :
       {RolloutState::kRunning, RolloutState::kPaused, RolloutState::kSucceeded,
        RolloutState::kFailed, RolloutState::kAborted}) {
    if (name == RolloutStateName(state)) return state;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown rollout state '", name, "'"));
}

const char* RolloutAgentStateName(RolloutAgentState state) {
  switch (state) {
    case RolloutAgentState::kWaiting:
      return "waiting";
    case RolloutAgentState::kApplying:
      return "applying";
    case RolloutAgentState::kApplied:
      return "applied";
    case RolloutAgentState::kFailed:
      return "failed";
    case RolloutAgentState::kRolledBack:
      return "rolled_back";
  }
  return "?";
}

absl::StatusOr<RolloutAgentState> ParseRolloutAgentState(const std::string& name) {
  for (RolloutAgentState state :
       {RolloutAgentState::kWaiting, RolloutAgentState::kApplying, RolloutAgentState::kApplied,
        RolloutAgentState::kFailed, RolloutAgentState::kRolledBack}) {
    if (name == RolloutAgentStateName(state)) return state;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown rollout agent state '", name, "'"));
}

const char* WindowStateName(WindowState state) {
  switch (state) {
    case WindowState::kScheduled:
      return "scheduled";
    case WindowState::kPausing:
      return "pausing";
    case WindowState::kPaused:
      return "paused";
    case WindowState::kCompleted:
      return "completed";
    case WindowState::kCancelled:
      return "cancelled";
    case WindowState::kFailed:
      return "failed";
  }
  return "?";
}

absl::StatusOr<WindowState> ParseWindowState(const std::string& name) {
  for (WindowState state :
       {WindowState::kScheduled, WindowState::kPausing, WindowState::kPaused,
        WindowState::kCompleted, WindowState::kCancelled, WindowState::kFailed}) {
    if (name == WindowStateName(state)) return state;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown maintenance window state '", name, "'"));
}

}  // namespace pgfleet::controller
