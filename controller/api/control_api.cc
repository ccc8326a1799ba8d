#include "controller/api/control_api.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "controller/auth/tokens.h"

namespace pgfleet::controller {
namespace {

namespace pb = google::protobuf;
namespace v1 = pgfleet::v1;

constexpr char kFleet[] = "pgfleet.v1.FleetService";
constexpr char kRollout[] = "pgfleet.v1.RolloutService";
constexpr char kMaintenance[] = "pgfleet.v1.MaintenanceService";
constexpr char kTokens[] = "pgfleet.v1.TokenService";
constexpr char kSecrets[] = "pgfleet.v1.SecretsService";
constexpr bool kRead = true, kWrite = false;

}  // namespace

template <typename Request, typename Response, typename Fn>
void ControlApi::Add(const char* service, const char* name, Role role, bool read_only, Fn fn) {
  ApiMethod method;
  method.service = service;
  method.name = name;
  method.role = role;
  method.read_only = read_only;
  method.needs_leader = !read_only;
  method.request_type = Request::descriptor();
  method.response_type = Response::descriptor();
  method.new_request = [] { return std::make_unique<Request>(); };
  method.run = [fn = std::move(fn)](
                   const Caller& caller,
                   const pb::Message& request) -> absl::StatusOr<std::unique_ptr<pb::Message>> {
    // Invoke checked the request's type against request_type.
    PGF_ASSIGN_OR_RETURN(Response response, fn(caller, static_cast<const Request&>(request)));
    return std::make_unique<Response>(std::move(response));
  };
  index_[{method.service, method.name}] = methods_.size();
  methods_.push_back(std::move(method));
}

ControlApi::ControlApi(Store& store, const Clock& clock, FleetApi& fleet, RolloutApi& rollouts,
                       MaintenanceApi& maintenance, TokenAdmin& tokens)
    : store_(store), clock_(clock), fleet_(fleet), secrets_(store, clock) {
  // Reads need viewer; changing the fleet (configs, desired versions, commands, rollouts,
  // maintenance windows) needs operator; the release policy between environments (upstream)
  // and tokens need admin.
  Add<v1::PushConfigRequest, v1::ConfigVersion>(
      kFleet, "PushConfig", Role::kOperator, kWrite,
      [&fleet](const Caller& c, const auto& r) { return fleet.PushConfig(c, r); });
  // Operators push inis; credentials and TLS files (issue 18) are admin's.
  methods_.back().role_for_request = [](const pb::Message& request) {
    return SecretChangesFromPush(static_cast<const v1::PushConfigRequest&>(request)).empty()
               ? Role::kOperator
               : Role::kAdmin;
  };
  Add<v1::ListConfigsRequest, v1::ListConfigsResponse>(
      kFleet, "ListConfigs", Role::kViewer, kRead,
      [&fleet](const Caller& c, const auto& r) { return fleet.ListConfigs(c, r); });
  Add<v1::GetConfigRequest, v1::ConfigVersion>(
      kFleet, "GetConfig", Role::kViewer, kRead,
      [&fleet](const Caller& c, const auto& r) { return fleet.GetConfig(c, r); });
  Add<v1::RenderConfigRequest, v1::RenderedConfig>(
      kFleet, "RenderConfig", Role::kViewer, kRead,
      [&fleet](const Caller& c, const auto& r) { return fleet.RenderConfig(c, r); });
  Add<v1::SetDesiredConfigRequest, v1::Environment>(
      kFleet, "SetDesiredConfig", Role::kOperator, kWrite,
      [&fleet](const Caller& c, const auto& r) { return fleet.SetDesiredConfig(c, r); });
  Add<v1::ListEnvironmentsRequest, v1::ListEnvironmentsResponse>(
      kFleet, "ListEnvironments", Role::kViewer, kRead,
      [&fleet](const Caller& c, const auto&) { return fleet.ListEnvironments(c); });
  Add<v1::ListAgentsRequest, v1::ListAgentsResponse>(
      kFleet, "ListAgents", Role::kViewer, kRead,
      [&fleet](const Caller& c, const auto& r) { return fleet.ListAgents(c, r); });
  Add<v1::GetAgentRequest, v1::Agent>(
      kFleet, "GetAgent", Role::kViewer, kRead,
      [&fleet](const Caller& c, const auto& r) { return fleet.GetAgent(c, r); });
  Add<v1::SendCommandRequest, v1::SendCommandResponse>(
      kFleet, "SendCommand", Role::kOperator, kWrite,
      [&fleet](const Caller& c, const auto& r) { return fleet.SendCommand(c, r); });
  Add<v1::SetAgentLabelsRequest, v1::Agent>(
      kFleet, "SetAgentLabels", Role::kOperator, kWrite,
      [&fleet](const Caller& c, const auto& r) { return fleet.SetAgentLabels(c, r); });

  Add<v1::StartRolloutRequest, v1::Rollout>(
      kRollout, "StartRollout", Role::kOperator, kWrite,
      [&rollouts](const Caller& c, const auto& r) { return rollouts.StartRollout(c, r); });
  Add<v1::GetRolloutRequest, v1::Rollout>(
      kRollout, "GetRollout", Role::kViewer, kRead,
      [&rollouts](const Caller& c, const auto& r) { return rollouts.GetRollout(c, r); });
  Add<v1::ListRolloutsRequest, v1::ListRolloutsResponse>(
      kRollout, "ListRollouts", Role::kViewer, kRead,
      [&rollouts](const Caller& c, const auto& r) { return rollouts.ListRollouts(c, r); });
  Add<v1::RolloutActionRequest, v1::Rollout>(
      kRollout, "PauseRollout", Role::kOperator, kWrite,
      [&rollouts](const Caller& c, const auto& r) { return rollouts.PauseRollout(c, r); });
  Add<v1::RolloutActionRequest, v1::Rollout>(
      kRollout, "ResumeRollout", Role::kOperator, kWrite,
      [&rollouts](const Caller& c, const auto& r) { return rollouts.ResumeRollout(c, r); });
  Add<v1::RolloutActionRequest, v1::Rollout>(
      kRollout, "AbortRollout", Role::kOperator, kWrite,
      [&rollouts](const Caller& c, const auto& r) { return rollouts.AbortRollout(c, r); });
  Add<v1::RollbackRequest, v1::Rollout>(
      kRollout, "Rollback", Role::kOperator, kWrite,
      [&rollouts](const Caller& c, const auto& r) { return rollouts.Rollback(c, r); });
  Add<v1::PromoteRequest, v1::Rollout>(
      kRollout, "Promote", Role::kOperator, kWrite,
      [&rollouts](const Caller& c, const auto& r) { return rollouts.Promote(c, r); });
  Add<v1::SetUpstreamRequest, v1::Environment>(
      kRollout, "SetUpstream", Role::kAdmin, kWrite,
      [&rollouts](const Caller& c, const auto& r) { return rollouts.SetUpstream(c, r); });

  // Its Pause/Resume are windows; the rollout ones are named for rollouts.
  Add<v1::PauseWindowRequest, v1::MaintenanceWindow>(
      kMaintenance, "Pause", Role::kOperator, kWrite,
      [&maintenance](const Caller& c, const auto& r) { return maintenance.Pause(c, r); });
  Add<v1::ResumeWindowRequest, v1::MaintenanceWindow>(
      kMaintenance, "Resume", Role::kOperator, kWrite,
      [&maintenance](const Caller& c, const auto& r) { return maintenance.Resume(c, r); });
  Add<v1::ScheduleWindowRequest, v1::MaintenanceWindow>(
      kMaintenance, "Schedule", Role::kOperator, kWrite,
      [&maintenance](const Caller& c, const auto& r) { return maintenance.Schedule(c, r); });
  Add<v1::GetWindowRequest, v1::MaintenanceWindow>(
      kMaintenance, "GetWindow", Role::kViewer, kRead,
      [&maintenance](const Caller& c, const auto& r) { return maintenance.GetWindow(c, r); });
  Add<v1::ListWindowsRequest, v1::ListWindowsResponse>(
      kMaintenance, "ListWindows", Role::kViewer, kRead,
      [&maintenance](const Caller& c, const auto& r) { return maintenance.ListWindows(c, r); });
  Add<v1::CancelWindowRequest, v1::MaintenanceWindow>(
      kMaintenance, "CancelWindow", Role::kOperator, kWrite,
      [&maintenance](const Caller& c, const auto& r) { return maintenance.CancelWindow(c, r); });

  // Admin only; the listing is POST-only too, like every call that is not a viewer's read.
  Add<v1::ListTokensRequest, v1::ListTokensResponse>(
      kTokens, "ListTokens", Role::kAdmin, kWrite,
      [&tokens](const Caller& c, const auto& r) { return tokens.List(c, r); });
  methods_.back().needs_leader = false;  // A read, POST-only so its answer is never cached.
  Add<v1::CreateTokenRequest, v1::CreateTokenResponse>(
      kTokens, "CreateToken", Role::kAdmin, kWrite,
      [&tokens](const Caller& c, const auto& r) { return tokens.Create(c, r); });
  Add<v1::RevokeTokenRequest, v1::Token>(
      kTokens, "RevokeToken", Role::kAdmin, kWrite,
      [&tokens](const Caller& c, const auto& r) { return tokens.Revoke(c, r); });

  // Credentials and TLS material: admin only to change (PushConfig also requires admin when a
  // push carries files or overlaps); the listing shows fingerprints, so viewers may read it.
  SecretsApi& secrets = secrets_;
  Add<v1::SetUserSecretRequest, v1::SecretsChange>(
      kSecrets, "SetUserSecret", Role::kAdmin, kWrite,
      [&secrets](const Caller& c, const auto& r) { return secrets.SetUserSecret(c, r); });
  Add<v1::SetTlsFilesRequest, v1::SecretsChange>(
      kSecrets, "SetTlsFiles", Role::kAdmin, kWrite,
      [&secrets](const Caller& c, const auto& r) { return secrets.SetTlsFiles(c, r); });
  Add<v1::BeginRotationRequest, v1::SecretsChange>(
      kSecrets, "BeginRotation", Role::kAdmin, kWrite,
      [&secrets](const Caller& c, const auto& r) { return secrets.BeginRotation(c, r); });
  Add<v1::EndRotationRequest, v1::SecretsChange>(
      kSecrets, "EndRotation", Role::kAdmin, kWrite,
      [&secrets](const Caller& c, const auto& r) { return secrets.EndRotation(c, r); });
  Add<v1::ListSecretsRequest, v1::ListSecretsResponse>(
      kSecrets, "ListSecrets", Role::kViewer, kRead,
      [&secrets](const Caller& c, const auto& r) { return secrets.ListSecrets(c, r); });
}

absl::StatusOr<Caller> ControlApi::Authenticate(const std::string& authorization) const {
  return AuthenticateBearer(store_, authorization, clock_.Now());
}

const ApiMethod* ControlApi::Find(const std::string& service, const std::string& name) const {
  auto it = index_.find({service, name});
  return it == index_.end() ? nullptr : &methods_[it->second];
}

absl::StatusOr<std::unique_ptr<pb::Message>> ControlApi::Invoke(const Caller& caller,
                                                                const ApiMethod& method,
                                                                const pb::Message& request) const {
  if (request.GetDescriptor() != method.request_type) {
    return absl::InvalidArgumentError(absl::StrCat(method.name, " takes a ",
                                                   method.request_type->full_name(), ", not a ",
                                                   request.GetDescriptor()->full_name()));
  }
  Role needed = method.role;
  if (method.role_for_request) {
    needed = std::max(needed, method.role_for_request(request),
                      [](Role a, Role b) { return static_cast<int>(a) < static_cast<int>(b); });
  }
  PGF_RETURN_IF_ERROR(RequireRole(caller, needed));
  return method.run(caller, request);
}

const char* WireName(Wire wire) { return wire == Wire::kGrpc ? "grpc" : "http"; }

absl::StatusOr<std::unique_ptr<pb::Message>> ControlApi::Serve(Wire wire,
                                                               const std::string& authorization,
                                                               const ApiMethod& method,
                                                               const RequestSource& request,
                                                               bool forwarded) const {
  const auto started = std::chrono::steady_clock::now();
  auto serve = [&]() -> absl::StatusOr<std::unique_ptr<pb::Message>> {
    PGF_ASSIGN_OR_RETURN(Caller caller, Authenticate(authorization));
    PGF_ASSIGN_OR_RETURN(const pb::Message* message, request());
    if (method.needs_leader && routing_.is_leader && !routing_.is_leader()) {
      // A follower: the leader serves writes (its engines and agent streams act on them). The
      // caller's role is checked here too, so a refusal does not need the leader.
      PGF_RETURN_IF_ERROR(RequireRole(caller, method.role));
      if (forwarded || !routing_.forward) return routing_.not_leader();
      return routing_.forward(method, authorization, *message);
    }
    return Invoke(caller, method, *message);
  };
  absl::StatusOr<std::unique_ptr<pb::Message>> result = serve();
  if (observer_) {
    observer_(wire, method, result.status().code(),
              std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
  }
  return result;
}

absl::Status ControlApi::Call(const std::string& authorization, const std::string& service,
                              const std::string& name, const pb::Message& request,
                              pb::Message* response, bool forwarded) const {
  const ApiMethod* method = Find(service, name);
  if (method == nullptr) {
    return absl::UnimplementedError(absl::StrCat(service, "/", name, " has no API entry"));
  }
  PGF_ASSIGN_OR_RETURN(
      std::unique_ptr<pb::Message> result,
      Serve(
          Wire::kGrpc, authorization, *method,
          [&request]() -> absl::StatusOr<const pb::Message*> { return &request; }, forwarded));
  // Swapped, not copied, when of the same type (always, but for a proxied call): `agents
  // list` of 10,000 agents is a 5 MB message.
  if (result->GetDescriptor() == response->GetDescriptor()) {
    response->GetReflection()->Swap(response, result.get());
  } else {
    response->CopyFrom(*result);
  }
  return absl::OkStatus();
}

}  // namespace pgfleet::controller
