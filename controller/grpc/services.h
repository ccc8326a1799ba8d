// gRPC adapters: they authenticate, then call FleetApi. No fleet logic lives here.
#pragma once

#include <grpcpp/grpcpp.h>

#include "controller/api/fleet_api.h"
#include "controller/maintenance/orchestrator.h"
#include "controller/registry/agent_registry.h"
#include "controller/rollout/rollout_engine.h"
#include "controller/store/store.h"
#include "pgfleet/v1/agent.grpc.pb.h"
#include "pgfleet/v1/fleet.grpc.pb.h"

namespace pgfleet::controller {

class AgentServiceImpl final : public pgfleet::v1::AgentService::Service {
 public:
  // With require_client_cert, an agent must present a certificate whose CN is its agent_id:
  // an agent can only speak for itself.
  AgentServiceImpl(FleetApi& api, AgentRegistry& registry, bool require_client_cert)
      : api_(api), registry_(registry), require_client_cert_(require_client_cert) {}

  grpc::Status Connect(grpc::ServerContext* context,
                       grpc::ServerReaderWriter<pgfleet::v1::ControllerMessage,
                                                pgfleet::v1::AgentMessage>* stream) override;

 private:
  FleetApi& api_;
  AgentRegistry& registry_;
  bool require_client_cert_;
};

class FleetServiceImpl final : public pgfleet::v1::FleetService::Service {
 public:
  FleetServiceImpl(FleetApi& api, Store& store) : api_(api), store_(store) {}

  grpc::Status PushConfig(grpc::ServerContext* context, const pgfleet::v1::PushConfigRequest* request,
                          pgfleet::v1::ConfigVersion* response) override;
  grpc::Status ListConfigs(grpc::ServerContext* context,
                           const pgfleet::v1::ListConfigsRequest* request,
                           pgfleet::v1::ListConfigsResponse* response) override;
  grpc::Status GetConfig(grpc::ServerContext* context, const pgfleet::v1::GetConfigRequest* request,
                         pgfleet::v1::ConfigVersion* response) override;
  grpc::Status SetDesiredConfig(grpc::ServerContext* context,
                                const pgfleet::v1::SetDesiredConfigRequest* request,
                                pgfleet::v1::Environment* response) override;
  grpc::Status ListEnvironments(grpc::ServerContext* context,
                                const pgfleet::v1::ListEnvironmentsRequest* request,
                                pgfleet::v1::ListEnvironmentsResponse* response) override;
  grpc::Status ListAgents(grpc::ServerContext* context, const pgfleet::v1::ListAgentsRequest* request,
                          pgfleet::v1::ListAgentsResponse* response) override;
  grpc::Status GetAgent(grpc::ServerContext* context, const pgfleet::v1::GetAgentRequest* request,
                        pgfleet::v1::Agent* response) override;
  grpc::Status SendCommand(grpc::ServerContext* context,
                           const pgfleet::v1::SendCommandRequest* request,
                           pgfleet::v1::SendCommandResponse* response) override;

 private:
  template <typename Fn>
  grpc::Status Call(grpc::ServerContext* context, Fn&& fn);
  FleetApi& api_;
  Store& store_;
};

class RolloutServiceImpl final : public pgfleet::v1::RolloutService::Service {
 public:
  RolloutServiceImpl(RolloutEngine& engine, Store& store) : engine_(engine), store_(store) {}

  grpc::Status StartRollout(grpc::ServerContext* context,
                            const pgfleet::v1::StartRolloutRequest* request,
                            pgfleet::v1::Rollout* response) override;
  grpc::Status GetRollout(grpc::ServerContext* context, const pgfleet::v1::GetRolloutRequest* request,
                          pgfleet::v1::Rollout* response) override;
  grpc::Status ListRollouts(grpc::ServerContext* context,
                            const pgfleet::v1::ListRolloutsRequest* request,
                            pgfleet::v1::ListRolloutsResponse* response) override;
  grpc::Status PauseRollout(grpc::ServerContext* context,
                            const pgfleet::v1::RolloutActionRequest* request,
                            pgfleet::v1::Rollout* response) override;
  grpc::Status ResumeRollout(grpc::ServerContext* context,
                             const pgfleet::v1::RolloutActionRequest* request,
                             pgfleet::v1::Rollout* response) override;
  grpc::Status AbortRollout(grpc::ServerContext* context,
                            const pgfleet::v1::RolloutActionRequest* request,
                            pgfleet::v1::Rollout* response) override;
  grpc::Status Rollback(grpc::ServerContext* context, const pgfleet::v1::RollbackRequest* request,
                        pgfleet::v1::Rollout* response) override;
  grpc::Status Promote(grpc::ServerContext* context, const pgfleet::v1::PromoteRequest* request,
                       pgfleet::v1::Rollout* response) override;
  grpc::Status SetUpstream(grpc::ServerContext* context,
                           const pgfleet::v1::SetUpstreamRequest* request,
                           pgfleet::v1::Environment* response) override;

 private:
  RolloutEngine& engine_;
  Store& store_;
};

class MaintenanceServiceImpl final : public pgfleet::v1::MaintenanceService::Service {
 public:
  MaintenanceServiceImpl(MaintenanceOrchestrator& orchestrator, Store& store)
      : orchestrator_(orchestrator), store_(store) {}

  grpc::Status Pause(grpc::ServerContext* context, const pgfleet::v1::PauseWindowRequest* request,
                     pgfleet::v1::MaintenanceWindow* response) override;
  grpc::Status Resume(grpc::ServerContext* context, const pgfleet::v1::ResumeWindowRequest* request,
                      pgfleet::v1::MaintenanceWindow* response) override;
  grpc::Status Schedule(grpc::ServerContext* context,
                        const pgfleet::v1::ScheduleWindowRequest* request,
                        pgfleet::v1::MaintenanceWindow* response) override;
  grpc::Status GetWindow(grpc::ServerContext* context, const pgfleet::v1::GetWindowRequest* request,
                         pgfleet::v1::MaintenanceWindow* response) override;
  grpc::Status ListWindows(grpc::ServerContext* context,
                           const pgfleet::v1::ListWindowsRequest* request,
                           pgfleet::v1::ListWindowsResponse* response) override;
  grpc::Status CancelWindow(grpc::ServerContext* context,
                            const pgfleet::v1::CancelWindowRequest* request,
                            pgfleet::v1::MaintenanceWindow* response) override;

 private:
  MaintenanceOrchestrator& orchestrator_;
  Store& store_;
};

}  // namespace pgfleet::controller
