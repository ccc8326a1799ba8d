// The RolloutService as the operators see it, for both wires (gRPC and HTTP): roles, the
// audit log and the mapping between protos and the rollout engine's rows.
#pragma once

#include "absl/status/statusor.h"
#include "controller/api/fleet_api.h"
#include "controller/clock.h"
#include "controller/registry/agent_directory.h"
#include "controller/rollout/rollout_engine.h"
#include "controller/store/store.h"
#include "pgfleet/v1/fleet.pb.h"

namespace pgfleet::controller {

// The phase the API shows for a rollout: applying, baking, holding (waiting on a health
// threshold or a budget) or done (no longer active).
const char* RolloutPhaseName(const RolloutRow& rollout);

class RolloutApi {
 public:
  RolloutApi(Store& store, RolloutEngine& engine, AgentDirectory& agents, const Clock& clock)
      : store_(store), engine_(engine), agents_(agents), clock_(clock) {}

  absl::StatusOr<pgfleet::v1::Rollout> StartRollout(
      const Caller& caller, const pgfleet::v1::StartRolloutRequest& request);
  absl::StatusOr<pgfleet::v1::Rollout> GetRollout(const Caller& caller,
                                                  const pgfleet::v1::GetRolloutRequest& request);
  absl::StatusOr<pgfleet::v1::ListRolloutsResponse> ListRollouts(
      const Caller& caller, const pgfleet::v1::ListRolloutsRequest& request);
  absl::StatusOr<pgfleet::v1::Rollout> PauseRollout(
      const Caller& caller, const pgfleet::v1::RolloutActionRequest& request);
  absl::StatusOr<pgfleet::v1::Rollout> ResumeRollout(
      const Caller& caller, const pgfleet::v1::RolloutActionRequest& request);
  absl::StatusOr<pgfleet::v1::Rollout> AbortRollout(
      const Caller& caller, const pgfleet::v1::RolloutActionRequest& request);
  absl::StatusOr<pgfleet::v1::Rollout> Rollback(const Caller& caller,
                                                const pgfleet::v1::RollbackRequest& request);
  absl::StatusOr<pgfleet::v1::Rollout> Promote(const Caller& caller,
                                               const pgfleet::v1::PromoteRequest& request);
  absl::StatusOr<pgfleet::v1::Environment> SetUpstream(
      const Caller& caller, const pgfleet::v1::SetUpstreamRequest& request);

 private:
  absl::StatusOr<pgfleet::v1::Rollout> Describe(const RolloutRow& rollout);
  absl::StatusOr<pgfleet::v1::Rollout> Describe(const StartedRollout& started);
  int64_t NowMs() const { return UnixMillis(clock_.Now()); }

  Store& store_;
  RolloutEngine& engine_;
  AgentDirectory& agents_;
  const Clock& clock_;
};

// The engine's view of a StartRolloutRequest (defaults filled in).
RolloutSpec SpecFromProto(const pgfleet::v1::StartRolloutRequest& request);

}  // namespace pgfleet::controller
