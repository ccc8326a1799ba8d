#include "controller/grpc/services.h"

#include <algorithm>
#include <functional>

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "common/log.h"
#include "controller/auth/agent_identity.h"

namespace pgfleet::controller {

using common::ToGrpcStatus;

HelloDeadlines::~HelloDeadlines() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

uint64_t HelloDeadlines::Arm(grpc::ServerContext* context, absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  if (!thread_.joinable()) thread_ = std::thread([this] { Run(); });
  const uint64_t id = next_id_++;
  armed_[id] = Entry{context, deadline};
  return id;
}

bool HelloDeadlines::Disarm(uint64_t id) {
  absl::MutexLock lock(&mu_);
  armed_.erase(id);
  return fired_.erase(id) > 0;
}

void HelloDeadlines::Run() {
  absl::MutexLock lock(&mu_);
  while (!stopping_) {
    const absl::Time now = absl::Now();
    absl::Time next = absl::InfiniteFuture();
    for (auto it = armed_.begin(); it != armed_.end();) {
      if (it->second.deadline <= now) {
        // The handler is blocked in Read (it cannot Disarm, and so cannot return, while this
        // holds mu_): the context is alive. Read then returns false.
        it->second.context->TryCancel();
        fired_.insert(it->first);
        it = armed_.erase(it);
      } else {
        next = std::min(next, it->second.deadline);
        ++it;
      }
    }
    const uint64_t seen = next_id_;
    auto changed = [this, seen]()
                       ABSL_NO_THREAD_SAFETY_ANALYSIS { return stopping_ || next_id_ != seen; };
    mu_.AwaitWithDeadline(absl::Condition(&changed), next);
  }
}

struct AgentServiceImpl::Credentials {
  std::string certificate_cn;  // With TLS.
  std::optional<CertificateBinding> certificate_binding;
  std::optional<TokenRow> join_token;

  // What established the environment, for the log.
  std::string Basis() const {
    if (certificate_binding.has_value() && join_token.has_value()) {
      return absl::StrCat("certificate and join token ", join_token->id);
    }
    if (certificate_binding.has_value()) return "certificate";
    if (join_token.has_value()) return absl::StrCat("join token ", join_token->id);
    return "claimed, not verified: --insecure-agents";
  }
};

absl::StatusOr<AgentServiceImpl::Credentials> AgentServiceImpl::Admit(
    const grpc::ServerContext& context) {
  Credentials credentials;
  if (options_.require_client_cert) {
    std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
    std::vector<grpc::string_ref> names = auth->FindPropertyValues("x509_common_name");
    if (names.empty()) {
      return absl::UnauthenticatedError("agents must present a certificate");
    }
    credentials.certificate_cn.assign(names[0].data(), names[0].size());
    std::vector<grpc::string_ref> pems = auth->FindPropertyValues("x509_pem_cert");
    if (!pems.empty()) {
      absl::StatusOr<std::optional<CertificateBinding>> binding =
          CertificateBindingFromPem(std::string(pems[0].data(), pems[0].size()));
      if (!binding.ok()) {
        return absl::PermissionDeniedError(absl::StrCat("certificate ", credentials.certificate_cn,
                                                        ": ", binding.status().message()));
      }
      credentials.certificate_binding = *binding;
    }
  }
  const auto& metadata = context.client_metadata();
  if (auto it = metadata.find("authorization"); it != metadata.end()) {
    absl::StatusOr<TokenRow> token =
        api_.AuthenticateJoinToken(std::string(it->second.data(), it->second.size()));
    if (!token.ok()) return token.status();
    credentials.join_token = *token;
  }
  if (credentials.certificate_binding.has_value() && credentials.join_token.has_value() &&
      credentials.certificate_binding->environment != credentials.join_token->environment) {
    return absl::PermissionDeniedError(
        absl::StrCat("the certificate binds this agent to environment ",
                     credentials.certificate_binding->environment, " but the join token is for ",
                     credentials.join_token->environment));
  }
  if (!credentials.certificate_binding.has_value() && !credentials.join_token.has_value() &&
      !options_.insecure_agents) {
    return absl::UnauthenticatedError(absl::StrCat(
        "this controller needs agents to prove their environment: give the agent a join token "
        "(--join-token-file; fleetctl token create --role agent --env ENV)",
        options_.require_client_cert
            ? absl::StrCat(" or a certificate with the URI pgfleet://env/ENV/agent/",
                           credentials.certificate_cn)
            : "",
        ", or start the controller with --insecure-agents"));
  }
  return credentials;
}

grpc::Status AgentServiceImpl::Connect(
    grpc::ServerContext* context,
    grpc::ServerReaderWriter<pgfleet::v1::ControllerMessage, pgfleet::v1::AgentMessage>* stream) {
  // Everything that can be checked without reading from the stream is checked first, so a
  // stream without credentials costs nothing but this.
  absl::StatusOr<Credentials> credentials = Admit(*context);
  if (!credentials.ok()) {
    PGF_WARN("agents", "agent stream from %s refused: %s", context->peer(),
             credentials.status().message());
    return ToGrpcStatus(credentials.status());
  }
  // Admitted streams hold a thread until their hello: a bounded number, for a bounded time.
  if (pending_streams_.fetch_add(1) >= options_.max_pending_streams) {
    pending_streams_.fetch_sub(1);
    PGF_WARN("agents", "agent stream from %s refused: %d streams already wait for their hello",
             context->peer(), options_.max_pending_streams);
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        "too many agent streams waiting for their hello; retry later");
  }
  PGF_DEBUG("agents", "agent stream from %s admitted, waiting for its hello", context->peer());
  bool pending = true;
  auto done_pending = [&] {
    if (pending) pending_streams_.fetch_sub(1);
    pending = false;
  };
  struct PendingGuard {
    std::function<void()> release;
    ~PendingGuard() { release(); }
  } pending_guard{done_pending};

  pgfleet::v1::AgentMessage first;
  const uint64_t deadline = deadlines_.Arm(context, absl::Now() + options_.hello_timeout);
  const bool read = stream->Read(&first);
  if (deadlines_.Disarm(deadline)) {
    PGF_WARN("agents", "agent stream from %s sent no hello within %s: closed", context->peer(),
             absl::FormatDuration(options_.hello_timeout));
    return grpc::Status(
        grpc::StatusCode::DEADLINE_EXCEEDED,
        absl::StrCat("no hello within ", absl::FormatDuration(options_.hello_timeout)));
  }
  if (!read || !first.has_hello()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "the first message must be a hello");
  }
  const pgfleet::v1::AgentHello& hello = first.hello();
  if (hello.agent_id().empty() || hello.environment().empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "hello needs agent_id and environment");
  }
  if (options_.require_client_cert && credentials->certificate_cn != hello.agent_id()) {
    PGF_WARN("agents", "certificate %s tried to speak for agent %s: refused",
             credentials->certificate_cn, hello.agent_id());
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                        absl::StrCat("certificate is for ", credentials->certificate_cn, ", not ",
                                     hello.agent_id()));
  }
  if (const std::optional<CertificateBinding>& bound = credentials->certificate_binding;
      bound.has_value() &&
      (bound->agent_id != hello.agent_id() || bound->environment != hello.environment())) {
    PGF_WARN("agents",
             "certificate for agent %s in environment %s tried to join as agent %s in "
             "environment %s: refused",
             bound->agent_id, bound->environment, hello.agent_id(), hello.environment());
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                        absl::StrCat("the certificate binds agent ", bound->agent_id,
                                     " to environment ", bound->environment, ", not agent ",
                                     hello.agent_id(), " in ", hello.environment()));
  }
  if (const std::optional<TokenRow>& token = credentials->join_token;
      token.has_value() && token->environment != hello.environment()) {
    PGF_WARN("agents", "agent %s presented join token %d of environment %s to join %s: refused",
             hello.agent_id(), token->id, token->environment, hello.environment());
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                        absl::StrCat("the join token is for environment ", token->environment,
                                     ", not ", hello.environment()));
  }
  done_pending();

  if (absl::Status recorded = api_.OnAgentHello(hello); !recorded.ok()) {
    return ToGrpcStatus(recorded);
  }
  auto session = std::make_shared<AgentSession>(
      hello.agent_id(), hello.environment(),
      [stream](const pgfleet::v1::ControllerMessage& message) { return stream->Write(message); },
      [context] { context->TryCancel(); });
  session->set_applied_version(hello.applied_config_version());
  session->set_restart_pending({hello.restart_pending().begin(), hello.restart_pending().end()});
  session->SetBinary(hello.build_id(), hello.pid(), hello.binary_outdated());
  session->set_handover_command_id(hello.handover_command_id());
  session->SetOnDisk(hello.on_disk_build_id(), hello.on_disk_version());
  session->set_applied_sha256(hello.applied_config_sha256());
  if (std::shared_ptr<AgentSession> previous = registry_.Register(session)) {
    PGF_INFO("agents", "agent %s reconnected; closing its previous stream", hello.agent_id());
    if (hello.handover_command_id() != 0) {
      // A RESTART: the new process took over, which is the command's success; the old
      // stream, which the command went out on, ends here.
      PGF_INFO("agents", "agent %s: pid %d took over from the previous process (command %d)",
               hello.agent_id(), hello.pid(), hello.handover_command_id());
      pgfleet::v1::CommandResult done;
      done.set_command_id(hello.handover_command_id());
      done.set_ok(true);
      previous->DeliverResult(done);
    }
    previous->Cancel();
  }
  PGF_INFO("agents", "agent %s connected (env %s, %s, %s, config version %d)", hello.agent_id(),
           hello.environment(), credentials->Basis(), context->peer(),
           hello.applied_config_version());
  pgfleet::v1::ControllerMessage ack;
  ack.mutable_hello_ack()->set_metrics_interval_seconds(
      static_cast<int32_t>(absl::ToInt64Seconds(api_.metrics_interval())));
  session->Send(ack);
  api_.OnAgentConnected(*session);

  const uint64_t join_token_id =
      credentials->join_token.has_value() ? credentials->join_token->id : 0;
  if (join_token_id != 0) {
    absl::MutexLock lock(&sessions_mu_);
    sessions_by_token_.emplace(join_token_id, session);
  }

  pgfleet::v1::AgentMessage message;
  while (stream->Read(&message)) api_.OnAgentMessage(*session, message);

  if (join_token_id != 0) {
    absl::MutexLock lock(&sessions_mu_);
    auto [begin, end] = sessions_by_token_.equal_range(join_token_id);
    for (auto it = begin; it != end; ++it) {
      if (it->second.lock() == session) {
        sessions_by_token_.erase(it);
        break;
      }
    }
  }

  PGF_INFO("agents", "agent %s disconnected", hello.agent_id());
  api_.OnAgentGone(session);
  return grpc::Status::OK;
}

void AgentServiceImpl::DisconnectJoinToken(uint64_t token_id) {
  std::vector<std::shared_ptr<AgentSession>> sessions;
  {
    absl::MutexLock lock(&sessions_mu_);
    auto [begin, end] = sessions_by_token_.equal_range(token_id);
    for (auto it = begin; it != end; ++it) {
      if (std::shared_ptr<AgentSession> session = it->second.lock()) sessions.push_back(session);
    }
  }
  for (const std::shared_ptr<AgentSession>& session : sessions) {
    PGF_INFO("agents", "agent %s: its join token %d was revoked; closing its stream",
             session->agent_id(), token_id);
    session->Cancel();
  }
}

namespace {

// The bearer token from the call's metadata, then the API's entry for this RPC.
grpc::Status CallApi(const ControlApi& api, grpc::ServerContext* context,
                     const std::string& service, const char* method,
                     const google::protobuf::Message& request,
                     google::protobuf::Message* response) {
  const auto& metadata = context->client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) {
    return ToGrpcStatus(
        absl::UnauthenticatedError("missing bearer token (authorization: Bearer <token>)"));
  }
  return ToGrpcStatus(api.Call(std::string(it->second.data(), it->second.size()), service, method,
                               request, response));
}

}  // namespace

#define PGF_API_METHOD(Impl, Service, Method, Request, Response)                                \
  grpc::Status Impl::Method(grpc::ServerContext* context, const pgfleet::v1::Request* request,  \
                            pgfleet::v1::Response* response) {                                  \
    return CallApi(api_, context, pgfleet::v1::Service::service_full_name(), #Method, *request, \
                   response);                                                                   \
  }

#define PGF_FLEET_METHOD(Method, Request, Response) \
  PGF_API_METHOD(FleetServiceImpl, FleetService, Method, Request, Response)
PGF_FLEET_METHOD(PushConfig, PushConfigRequest, ConfigVersion)
PGF_FLEET_METHOD(ListConfigs, ListConfigsRequest, ListConfigsResponse)
PGF_FLEET_METHOD(GetConfig, GetConfigRequest, ConfigVersion)
PGF_FLEET_METHOD(SetDesiredConfig, SetDesiredConfigRequest, Environment)
PGF_FLEET_METHOD(RenderConfig, RenderConfigRequest, RenderedConfig)
PGF_FLEET_METHOD(ListEnvironments, ListEnvironmentsRequest, ListEnvironmentsResponse)
PGF_FLEET_METHOD(ListAgents, ListAgentsRequest, ListAgentsResponse)
PGF_FLEET_METHOD(GetAgent, GetAgentRequest, Agent)
PGF_FLEET_METHOD(SendCommand, SendCommandRequest, SendCommandResponse)
PGF_FLEET_METHOD(SetAgentLabels, SetAgentLabelsRequest, Agent)

#define PGF_ROLLOUT_METHOD(Method, Request, Response) \
  PGF_API_METHOD(RolloutServiceImpl, RolloutService, Method, Request, Response)
PGF_ROLLOUT_METHOD(StartRollout, StartRolloutRequest, Rollout)
PGF_ROLLOUT_METHOD(GetRollout, GetRolloutRequest, Rollout)
PGF_ROLLOUT_METHOD(ListRollouts, ListRolloutsRequest, ListRolloutsResponse)
PGF_ROLLOUT_METHOD(PauseRollout, RolloutActionRequest, Rollout)
PGF_ROLLOUT_METHOD(ResumeRollout, RolloutActionRequest, Rollout)
PGF_ROLLOUT_METHOD(AbortRollout, RolloutActionRequest, Rollout)
PGF_ROLLOUT_METHOD(Rollback, RollbackRequest, Rollout)
PGF_ROLLOUT_METHOD(Promote, PromoteRequest, Rollout)
PGF_ROLLOUT_METHOD(SetUpstream, SetUpstreamRequest, Environment)

#define PGF_MAINTENANCE_METHOD(Method, Request, Response) \
  PGF_API_METHOD(MaintenanceServiceImpl, MaintenanceService, Method, Request, Response)
PGF_MAINTENANCE_METHOD(Pause, PauseWindowRequest, MaintenanceWindow)
PGF_MAINTENANCE_METHOD(Resume, ResumeWindowRequest, MaintenanceWindow)
PGF_MAINTENANCE_METHOD(Schedule, ScheduleWindowRequest, MaintenanceWindow)
PGF_MAINTENANCE_METHOD(GetWindow, GetWindowRequest, MaintenanceWindow)
PGF_MAINTENANCE_METHOD(ListWindows, ListWindowsRequest, ListWindowsResponse)
PGF_MAINTENANCE_METHOD(CancelWindow, CancelWindowRequest, MaintenanceWindow)

#define PGF_TOKEN_METHOD(Method, Request, Response) \
  PGF_API_METHOD(TokenServiceImpl, TokenService, Method, Request, Response)
PGF_TOKEN_METHOD(ListTokens, ListTokensRequest, ListTokensResponse)
PGF_TOKEN_METHOD(CreateToken, CreateTokenRequest, CreateTokenResponse)
PGF_TOKEN_METHOD(RevokeToken, RevokeTokenRequest, Token)

#define PGF_SECRETS_METHOD(Method, Request, Response) \
  PGF_API_METHOD(SecretsServiceImpl, SecretsService, Method, Request, Response)
PGF_SECRETS_METHOD(SetUserSecret, SetUserSecretRequest, SecretsChange)
PGF_SECRETS_METHOD(SetTlsFiles, SetTlsFilesRequest, SecretsChange)
PGF_SECRETS_METHOD(BeginRotation, BeginRotationRequest, SecretsChange)
PGF_SECRETS_METHOD(EndRotation, EndRotationRequest, SecretsChange)
PGF_SECRETS_METHOD(ListSecrets, ListSecretsRequest, ListSecretsResponse)

}  // namespace pgfleet::controller
