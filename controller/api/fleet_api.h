// Everything operators can do to the fleet, independent of transport: the gRPC FleetService
// and the HTTP API both call this, so roles, validation and the audit log are in one place.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "controller/clock.h"
#include "controller/registry/agent_registry.h"
#include "controller/rollout/rollout_store.h"
#include "controller/store/store.h"
#include "pgfleet/v1/fleet.pb.h"

namespace pgfleet::controller {

class MaintenanceOrchestrator;
class RolloutEngine;

// Who is calling, as established by the transport (bearer token).
struct Caller {
  std::string actor;
  Role role = Role::kViewer;
};

// PermissionDenied unless the caller's role is at least `role`.
absl::Status RequireRole(const Caller& caller, Role role);

struct FleetApiOptions {
  absl::Duration command_timeout = absl::Seconds(10);
  absl::Duration metrics_interval = absl::Seconds(5);
};

class FleetApi {
 public:
  FleetApi(Store& store, AgentRegistry& registry, const Clock& clock, FleetApiOptions options = {});
  ~FleetApi();

  absl::StatusOr<pgfleet::v1::ConfigVersion> PushConfig(
      const Caller& caller, const pgfleet::v1::PushConfigRequest& request);
  absl::StatusOr<pgfleet::v1::ListConfigsResponse> ListConfigs(
      const Caller& caller, const pgfleet::v1::ListConfigsRequest& request);
  absl::StatusOr<pgfleet::v1::ConfigVersion> GetConfig(
      const Caller& caller, const pgfleet::v1::GetConfigRequest& request);
  // One agent's effective ini for a version (its desired one by default).
  absl::StatusOr<pgfleet::v1::RenderedConfig> RenderConfig(
      const Caller& caller, const pgfleet::v1::RenderConfigRequest& request);
  absl::StatusOr<pgfleet::v1::Environment> SetDesiredConfig(
      const Caller& caller, const pgfleet::v1::SetDesiredConfigRequest& request);
  absl::StatusOr<pgfleet::v1::ListEnvironmentsResponse> ListEnvironments(const Caller& caller);
  absl::StatusOr<pgfleet::v1::ListAgentsResponse> ListAgents(
      const Caller& caller, const pgfleet::v1::ListAgentsRequest& request);
  absl::StatusOr<pgfleet::v1::Agent> GetAgent(const Caller& caller,
                                              const pgfleet::v1::GetAgentRequest& request);
  absl::StatusOr<pgfleet::v1::SendCommandResponse> SendCommand(
      const Caller& caller, const pgfleet::v1::SendCommandRequest& request);
  // kubectl label: sets and removes operator labels (changing a value needs overwrite, else
  // InvalidArgument naming the key), then re-renders the agent's config if it is connected.
  absl::StatusOr<pgfleet::v1::Agent> SetAgentLabels(
      const Caller& caller, const pgfleet::v1::SetAgentLabelsRequest& request);

  // Agent side, called by the AgentService.
  // The agent's join token ("Bearer <token>" of a role-agent token).
  absl::StatusOr<TokenRow> AuthenticateJoinToken(const std::string& authorization);
  absl::Status OnAgentHello(const pgfleet::v1::AgentHello& hello);
  void OnAgentMessage(AgentSession& session, const pgfleet::v1::AgentMessage& message);
  void OnAgentGone(const std::shared_ptr<AgentSession>& session);
  // Sends the agent its desired config, rendered with its labels as the store has them now, if
  // it runs another one (desired-state reconciliation): another version, or the same version
  // rendered differently (its labels changed). A render the agent refused is not sent again on
  // this stream unless `force` (a rollout deliberately retrying it).
  void Reconcile(AgentSession& session, bool force = false);
  absl::Duration metrics_interval() const { return options_.metrics_interval; }
  // The agent's stream is up: it gets its desired config, and a pause if its environment is
  // inside a maintenance window.
  void OnAgentConnected(AgentSession& session);
  // The engines this API feeds: config results go to the rollout engine, connected agents to
  // the maintenance engine. Either may be null (tests of the fleet calls alone).
  void set_engines(RolloutEngine* rollouts, MaintenanceOrchestrator* maintenance) {
    rollout_engine_ = rollouts;
    maintenance_engine_ = maintenance;
  }
  // Lets environment descriptions show upstream and the active rollout.
  void set_rollout_store(RolloutStore* rollouts) { rollouts_ = rollouts; }
  // Several controllers: whether agents stream to this one (the leader). When not, an agent's
  // link state is read from the store, where the leader keeps it. Unset: always here.
  void set_streams_here(std::function<bool()> streams_here) {
    streams_here_ = std::move(streams_here);
  }

 private:
  // What a call about many agents reads once instead of once per agent (agents list of
  // 10,000): each environment's desired version, each config version, and the render of a
  // version without overlays (every agent's is the same). Lives for one call.
  struct ReadOnce {
    std::map<std::string, uint64_t> desired_by_environment;
    std::map<uint64_t, std::optional<ConfigVersionRow>> versions;
    std::map<uint64_t, std::string> base_sha256;
  };
  absl::StatusOr<uint64_t> DesiredVersionFor(const AgentRow& agent, ReadOnce* once = nullptr);
  // Reconcile with the agent's row as read by the caller, and versions read once for many.
  void Reconcile(AgentSession& session, const AgentRow& agent, ReadOnce& once, bool force);
  // The agent's render of `version`, with the labels in `agent`.
  absl::StatusOr<RenderedConfig> RenderFor(const AgentRow& agent, const ConfigVersionRow& version);
  absl::StatusOr<pgfleet::v1::Environment> DescribeEnvironment(const EnvironmentRow& env);
  pgfleet::v1::Agent ToProto(const AgentRow& row, uint64_t desired, ReadOnce* once = nullptr,
                             pgfleet::v1::AgentView view = pgfleet::v1::AGENT_VIEW_FULL);
  // The store keeps Unix milliseconds; the time comes from clock_ (fake in tests).
  int64_t NowMillis() const { return UnixMillis(clock_.Now()); }
  // "" when the agent has no desired version or it cannot be rendered.
  std::string DesiredSha256(const AgentRow& row, uint64_t desired, ReadOnce* once = nullptr);

  Store& store_;
  AgentRegistry& registry_;
  const Clock& clock_;
  FleetApiOptions options_;
  RolloutEngine* rollout_engine_ = nullptr;
  MaintenanceOrchestrator* maintenance_engine_ = nullptr;
  RolloutStore* rollouts_ = nullptr;
  std::function<bool()> streams_here_;
};

// A version as the API shows it: credentials and TLS files as fingerprints, never contents.
pgfleet::v1::ConfigVersion VersionToProto(const ConfigVersionRow& row);
pgfleet::v1::ConfigFileInfo FileInfoToProto(const ConfigFileRow& file);

}  // namespace pgfleet::controller
