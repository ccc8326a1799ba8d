// Names of rollout states as stored in SQLite and shown to operators.
#include "absl/strings/str_cat.h"
#include "controller/rollout/rollout_store.h"

namespace pgfleet::controller {

const char* RolloutStateName(RolloutState state) {
  switch (state) {
    case RolloutState::kRunning: return "running";
    case RolloutState::kPaused: return "paused";
    case RolloutState::kSucceeded: return "succeeded";
    case RolloutState::kFailed: return "failed";
    case RolloutState::kAborted: return "aborted";
  }
  return "?";
}

absl::StatusOr<RolloutState> ParseRolloutState(const std::string& name) {
  for (RolloutState state : {RolloutState::kRunning, RolloutState::kPaused,
                             RolloutState::kSucceeded, RolloutState::kFailed,
                             RolloutState::kAborted}) {
    if (name == RolloutStateName(state)) return state;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown rollout state '", name, "'"));
}

}  // namespace pgfleet::controller
