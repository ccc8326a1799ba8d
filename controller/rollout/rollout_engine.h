// Moves an environment from one config version to another in waves: canary first, then
// percentages. Each wave: pin its agents to the new version, wait for every ACK, bake while
// watching health, then go on. A NACK, a failed gate or an abort unpins the agents already
// moved, so they converge back to the old version. All state is in the store: after a
// controller restart Tick() picks up where it was.
#pragma once

#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "controller/api/fleet_api.h"
#include "controller/periodic.h"
#include "controller/registry/agent_registry.h"
#include "controller/rollout/rollout_store.h"
#include "controller/store/store.h"
#include "pgfleet/v1/fleet.pb.h"

namespace pgfleet::controller {

// Assigns agents (sorted) to waves: "N" is a count, "P%" a share of all agents; each entry is
// cumulative ("1,25%,100%" = one canary, then up to a quarter, then everyone). The last wave
// always takes whoever is left. InvalidArgument for a malformed spec.
absl::StatusOr<std::vector<int>> AssignWaves(const std::vector<std::string>& spec, size_t agents);

// Why an agent fails the health gate, or empty if it passes.
struct HealthCounters {
  int64_t server_errors = 0;
  int64_t login_failures = 0;
};
HealthCounters CountersOf(const pgfleet::v1::MetricsReport& report);
std::string CheckHealth(const pgfleet::v1::MetricsReport& report, const HealthCounters& baseline,
                        const HealthLimits& limits);

class RolloutEngine {
 public:
  RolloutEngine(Store& store, RolloutStore& rollouts, AgentRegistry& registry, FleetApi& api);
  ~RolloutEngine();

  // Ticks every `interval` on a thread of its own until destroyed.
  void StartTicking(absl::Duration interval);
  // One pass over every active rollout. Public for tests.
  void Tick();

  absl::StatusOr<pgfleet::v1::Rollout> Start(const Caller& caller,
                                             const pgfleet::v1::StartRolloutRequest& request);
  absl::StatusOr<pgfleet::v1::Rollout> Get(const Caller& caller,
                                           const pgfleet::v1::GetRolloutRequest& request);
  absl::StatusOr<pgfleet::v1::ListRolloutsResponse> List(
      const Caller& caller, const pgfleet::v1::ListRolloutsRequest& request);
  absl::StatusOr<pgfleet::v1::Rollout> Pause(const Caller& caller, uint64_t id);
  absl::StatusOr<pgfleet::v1::Rollout> Resume(const Caller& caller, uint64_t id);
  absl::StatusOr<pgfleet::v1::Rollout> Abort(const Caller& caller, uint64_t id);
  absl::StatusOr<pgfleet::v1::Rollout> Rollback(const Caller& caller,
                                                const pgfleet::v1::RollbackRequest& request);
  absl::StatusOr<pgfleet::v1::Rollout> Promote(const Caller& caller,
                                               const pgfleet::v1::PromoteRequest& request);
  absl::StatusOr<pgfleet::v1::Environment> SetUpstream(
      const Caller& caller, const pgfleet::v1::SetUpstreamRequest& request);

  // FleetApi forwards every config result here.
  void OnConfigResult(const std::string& agent_id, uint64_t version, bool accepted,
                      const std::string& error);

 private:
  absl::Status Step(RolloutRow& rollout) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status StartWave(RolloutRow& rollout, std::vector<RolloutAgentRow>& agents)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Finish(RolloutRow& rollout, RolloutState state, const std::string& agent,
                      const std::string& reason) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Complete(RolloutRow& rollout) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<pgfleet::v1::Rollout> StartLocked(const Caller& caller,
                                                   const pgfleet::v1::StartRolloutRequest& request)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<pgfleet::v1::Rollout> Describe(const RolloutRow& rollout);
  void Reconcile(const std::string& agent_id);

  Store& store_;
  RolloutStore& rollouts_;
  AgentRegistry& registry_;
  FleetApi& api_;

  absl::Mutex mu_;
  // Health baselines, taken when a wave starts baking (in memory: after a restart the bake
  // takes a fresh baseline).
  std::map<std::pair<uint64_t, std::string>, HealthCounters> baselines_ ABSL_GUARDED_BY(mu_);

  PeriodicThread ticker_;
};

}  // namespace pgfleet::controller
