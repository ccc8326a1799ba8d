#include "controller/grpc/services.h"

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "common/log.h"
#include "controller/auth/tokens.h"

namespace pgfleet::controller {

using common::ToGrpcStatus;

grpc::Status AgentServiceImpl::Connect(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<pgfleet::v1::ControllerMessage, pgfleet::v1::AgentMessage>* stream) {
  pgfleet::v1::AgentMessage first;
  if (!stream->Read(&first) || !first.has_hello()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "the first message must be a hello");
  }
  const pgfleet::v1::AgentHello& hello = first.hello();
  if (hello.agent_id().empty() || hello.environment().empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "hello needs agent_id and environment");
  }
  if (require_client_cert_) {
    std::shared_ptr<const grpc::AuthContext> auth = context->auth_context();
    std::vector<grpc::string_ref> names = auth->FindPropertyValues("x509_common_name");
    if (names.empty()) {
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "agents must present a certificate");
    }
    std::string common_name(names[0].data(), names[0].size());
    if (common_name != hello.agent_id()) {
      PGF_WARN("agents", "certificate %s tried to speak for agent %s: refused", common_name,
               hello.agent_id());
      return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                          absl::StrCat("certificate is for ", common_name, ", not ",
                                       hello.agent_id()));
    }
  }
  if (absl::Status recorded = api_.OnAgentHello(hello); !recorded.ok()) {
    return ToGrpcStatus(recorded);
  }
  auto session = std::make_shared<AgentSession>(
      hello.agent_id(), hello.environment(),
      [stream](const pgfleet::v1::ControllerMessage& message) { return stream->Write(message); },
      [context] { context->TryCancel(); });
  session->set_applied_version(hello.applied_config_version());
  if (std::shared_ptr<AgentSession> previous = registry_.Register(session)) {
    PGF_INFO("agents", "agent %s reconnected; closing its previous stream", hello.agent_id());
    previous->Cancel();
  }
  PGF_INFO("agents", "agent %s connected (env %s, %s, config version %d)", hello.agent_id(),
           hello.environment(), context->peer(), hello.applied_config_version());
  pgfleet::v1::ControllerMessage ack;
  ack.mutable_hello_ack()->set_metrics_interval_seconds(
      static_cast<int32_t>(absl::ToInt64Seconds(api_.metrics_interval())));
  session->Send(ack);
  api_.Reconcile(*session);
  api_.NotifyAgentConnected(*session);

  pgfleet::v1::AgentMessage message;
  while (stream->Read(&message)) api_.OnAgentMessage(*session, message);

  PGF_INFO("agents", "agent %s disconnected", hello.agent_id());
  api_.OnAgentGone(session);
  return grpc::Status::OK;
}

namespace {

// Authenticates, runs `fn(caller)` and copies its result into `response`.
template <typename Response, typename Fn>
grpc::Status Authenticated(Store& store, grpc::ServerContext* context, Response* response, Fn&& fn) {
  absl::StatusOr<Caller> caller = AuthenticateGrpc(store, *context);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  absl::StatusOr<Response> result = fn(*caller);
  if (!result.ok()) return ToGrpcStatus(result.status());
  *response = std::move(*result);
  return grpc::Status::OK;
}

}  // namespace

template <typename Fn>
grpc::Status FleetServiceImpl::Call(grpc::ServerContext* context, Fn&& fn) {
  absl::StatusOr<Caller> caller = AuthenticateGrpc(store_, *context);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  return ToGrpcStatus(fn(*caller));
}

#define PGF_FLEET_METHOD(Method, Request, Response)                                      \
  grpc::Status FleetServiceImpl::Method(grpc::ServerContext* context,                   \
                                        const pgfleet::v1::Request* request,            \
                                        pgfleet::v1::Response* response) {              \
    return Call(context, [&](const Caller& caller) -> absl::Status {                    \
      absl::StatusOr<pgfleet::v1::Response> result = api_.Method(caller, *request);      \
      if (!result.ok()) return result.status();                                         \
      *response = std::move(*result);                                                   \
      return absl::OkStatus();                                                          \
    });                                                                                 \
  }

PGF_FLEET_METHOD(PushConfig, PushConfigRequest, ConfigVersion)
PGF_FLEET_METHOD(ListConfigs, ListConfigsRequest, ListConfigsResponse)
PGF_FLEET_METHOD(GetConfig, GetConfigRequest, ConfigVersion)
PGF_FLEET_METHOD(SetDesiredConfig, SetDesiredConfigRequest, Environment)
PGF_FLEET_METHOD(ListAgents, ListAgentsRequest, ListAgentsResponse)
PGF_FLEET_METHOD(GetAgent, GetAgentRequest, Agent)
PGF_FLEET_METHOD(SendCommand, SendCommandRequest, SendCommandResponse)

grpc::Status FleetServiceImpl::ListEnvironments(grpc::ServerContext* context,
                                                const pgfleet::v1::ListEnvironmentsRequest*,
                                                pgfleet::v1::ListEnvironmentsResponse* response) {
  return Call(context, [&](const Caller& caller) -> absl::Status {
    absl::StatusOr<pgfleet::v1::ListEnvironmentsResponse> result = api_.ListEnvironments(caller);
    if (!result.ok()) return result.status();
    *response = std::move(*result);
    return absl::OkStatus();
  });
}

#define PGF_ROLLOUT_METHOD(Method, Request, Response, expr)                             \
  grpc::Status RolloutServiceImpl::Method(grpc::ServerContext* context,               \
                                          const pgfleet::v1::Request* request,        \
                                          pgfleet::v1::Response* response) {          \
    return Authenticated(store_, context, response,                                   \
                         [&](const Caller& caller) { return engine_.expr; });         \
  }

PGF_ROLLOUT_METHOD(StartRollout, StartRolloutRequest, Rollout, Start(caller, *request))
PGF_ROLLOUT_METHOD(GetRollout, GetRolloutRequest, Rollout, Get(caller, *request))
PGF_ROLLOUT_METHOD(ListRollouts, ListRolloutsRequest, ListRolloutsResponse, List(caller, *request))
PGF_ROLLOUT_METHOD(PauseRollout, RolloutActionRequest, Rollout, Pause(caller, request->id()))
PGF_ROLLOUT_METHOD(ResumeRollout, RolloutActionRequest, Rollout, Resume(caller, request->id()))
PGF_ROLLOUT_METHOD(AbortRollout, RolloutActionRequest, Rollout, Abort(caller, request->id()))
PGF_ROLLOUT_METHOD(Rollback, RollbackRequest, Rollout, Rollback(caller, *request))
PGF_ROLLOUT_METHOD(Promote, PromoteRequest, Rollout, Promote(caller, *request))
PGF_ROLLOUT_METHOD(SetUpstream, SetUpstreamRequest, Environment, SetUpstream(caller, *request))

#define PGF_MAINTENANCE_METHOD(Method, Request, Response, expr)                         \
  grpc::Status MaintenanceServiceImpl::Method(grpc::ServerContext* context,           \
                                              const pgfleet::v1::Request* request,    \
                                              pgfleet::v1::Response* response) {      \
    return Authenticated(store_, context, response,                                   \
                         [&](const Caller& caller) { return orchestrator_.expr; });   \
  }

PGF_MAINTENANCE_METHOD(Pause, PauseWindowRequest, MaintenanceWindow, Pause(caller, *request))
PGF_MAINTENANCE_METHOD(Resume, ResumeWindowRequest, MaintenanceWindow, Resume(caller, *request))
PGF_MAINTENANCE_METHOD(Schedule, ScheduleWindowRequest, MaintenanceWindow,
                       Schedule(caller, *request))
PGF_MAINTENANCE_METHOD(GetWindow, GetWindowRequest, MaintenanceWindow, Get(caller, request->id()))
PGF_MAINTENANCE_METHOD(ListWindows, ListWindowsRequest, ListWindowsResponse,
                       List(caller, request->environment()))
PGF_MAINTENANCE_METHOD(CancelWindow, CancelWindowRequest, MaintenanceWindow,
                       Cancel(caller, request->id()))

}  // namespace pgfleet::controller
