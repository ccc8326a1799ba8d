#include "controller/grpc/services.h"

#include <algorithm>
#include <deque>
#include <functional>
#include <optional>

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

uint64_t HelloDeadlines::Arm(grpc::ServerContextBase* context, absl::Time deadline) {
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
        // The stream has not ended (its reactor Disarms in its read handling or OnDone,
        // which cannot pass while this holds mu_): the context is alive. The read then fails.
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

StreamWorkers::StreamWorkers(int threads) {
  for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { Run(); });
}

StreamWorkers::~StreamWorkers() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  for (std::thread& thread : threads_) thread.join();
}

void StreamWorkers::Post(std::function<void()> task) {
  absl::MutexLock lock(&mu_);
  tasks_.push_back(std::move(task));
}

void StreamWorkers::Run() {
  while (true) {
    std::function<void()> task;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return stopping_ || !tasks_.empty(); };
      mu_.Await(absl::Condition(&ready));
      // Drained before stopping: a queued task is a stream that must still end.
      if (tasks_.empty()) return;
      task = std::move(tasks_.front());
      tasks_.pop_front();
    }
    task();
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
    const grpc::CallbackServerContext& context) {
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

// One agent's stream. It owns itself: gRPC calls OnDone once nothing is in flight any more,
// and OnDone deletes it. The read side (Start, then HandleRead after each OnReadDone, both on
// StreamWorkers) is the only one that reads and decides when the stream ends; writes are started by
// whichever thread queues a message when none is in flight, or by OnWriteDone for the next one.
// Finish waits for the write in flight.
class AgentServiceImpl::Stream final
    : public grpc::ServerBidiReactor<pgfleet::v1::AgentMessage, pgfleet::v1::ControllerMessage> {
 public:
  Stream(AgentServiceImpl& service, grpc::CallbackServerContext* context)
      : service_(service), context_(context), outbox_(std::make_shared<Outbox>()) {
    absl::MutexLock lock(&outbox_->mu);
    outbox_->stream = this;
  }

  // Admits the stream from its metadata, then reads the hello (or finishes at once). On a
  // StreamWorkers thread, like everything the read side does.
  void Start();

  // Hands the read's outcome to service_.workers_ (HandleRead).
  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnDone() override;

 private:
  // What the AgentSession's writer and canceller hold: they may outlive the stream (the
  // registry and the engines keep sessions), so they reach it only through here, and only
  // while `stream` is set (OnDone clears it).
  struct Outbox {
    absl::Mutex mu;
    Stream* stream ABSL_GUARDED_BY(mu) = nullptr;
    std::string agent_id ABSL_GUARDED_BY(mu);  // Once its hello is accepted; for the log.
    std::deque<pgfleet::v1::ControllerMessage> queue ABSL_GUARDED_BY(mu);
    bool writing ABSL_GUARDED_BY(mu) = false;  // A StartWrite is in flight.
    bool closed ABSL_GUARDED_BY(mu) = false;   // No further write starts.
    // The read side is over: Finish(finish_status) as soon as no write is in flight.
    bool finish_wanted ABSL_GUARDED_BY(mu) = false;
    bool finish_started ABSL_GUARDED_BY(mu) = false;
    grpc::Status finish_status ABSL_GUARDED_BY(mu);

    // Any thread. False once the stream is closed.
    static bool Send(const std::shared_ptr<Outbox>& outbox,
                     const pgfleet::v1::ControllerMessage& message);
    // Any thread: cancels the call (its read fails, and the stream ends).
    void Cancel();
  };

  void HandleRead(bool ok);
  void OnHello(bool ok);
  // The read side is over: ends the stream with `status` once the write in flight is done.
  void RequestFinish(grpc::Status status);
  void ReleasePending();
  void EndSession();

  AgentServiceImpl& service_;
  grpc::CallbackServerContext* const context_;
  const std::shared_ptr<Outbox> outbox_;
  // Owned by the write in flight (set by whoever starts it, under outbox_->mu).
  pgfleet::v1::ControllerMessage writing_;
  // The read side's own state (only the read side touches it, one reaction at a time).
  pgfleet::v1::AgentMessage incoming_;
  std::optional<Credentials> credentials_;
  bool pending_ = false;         // Counted in service_.pending_streams_.
  uint64_t hello_deadline_ = 0;  // Armed in service_.deadlines_ (0: not armed).
  std::shared_ptr<AgentSession> session_;
  uint64_t join_token_id_ = 0;
};

bool AgentServiceImpl::Stream::Outbox::Send(const std::shared_ptr<Outbox>& outbox,
                                            const pgfleet::v1::ControllerMessage& message) {
  Stream* stream = nullptr;
  {
    absl::MutexLock lock(&outbox->mu);
    if (outbox->closed || outbox->stream == nullptr) return false;
    if (outbox->queue.size() >= kMaxQueuedMessages) {
      PGF_WARN("agents", "agent %s reads too slowly (%d messages wait): closing its stream",
               outbox->agent_id, outbox->queue.size());
      outbox->closed = true;
      outbox->queue.clear();
      outbox->stream->context_->TryCancel();
      return false;
    }
    if (outbox->writing) {
      outbox->queue.push_back(message);
      return true;
    }
    outbox->writing = true;
    stream = outbox->stream;
    stream->writing_ = message;
  }
  // Outside the lock. The stream cannot end meanwhile: Finish waits for `writing` to clear,
  // which only this write's OnWriteDone does.
  stream->StartWrite(&stream->writing_);
  return true;
}

void AgentServiceImpl::Stream::Outbox::Cancel() {
  absl::MutexLock lock(&mu);
  // `stream` is set until OnDone, so the context is alive.
  if (stream != nullptr) stream->context_->TryCancel();
}

void AgentServiceImpl::Stream::Start() {
  // Agents stream to the leader only (several controllers): a follower ends the stream at once,
  // and the agent's link goes on to its next controller address.
  if (service_.admission_check_) {
    if (absl::Status leading = service_.admission_check_(); !leading.ok()) {
      PGF_DEBUG("agents", "agent stream from %s refused: %s", context_->peer(), leading.message());
      RequestFinish(ToGrpcStatus(leading));
      return;
    }
  }
  // Everything that can be checked without reading from the stream is checked first, so a
  // stream without credentials costs nothing but this.
  absl::StatusOr<Credentials> credentials = service_.Admit(*context_);
  if (!credentials.ok()) {
    PGF_WARN("agents", "agent stream from %s refused: %s", context_->peer(),
             credentials.status().message());
    RequestFinish(ToGrpcStatus(credentials.status()));
    return;
  }
  credentials_ = std::move(*credentials);
  // Admitted streams wait for their hello: a bounded number, for a bounded time.
  if (service_.pending_streams_.fetch_add(1) >= service_.options_.max_pending_streams) {
    service_.pending_streams_.fetch_sub(1);
    PGF_WARN("agents", "agent stream from %s refused: %d streams already wait for their hello",
             context_->peer(), service_.options_.max_pending_streams);
    RequestFinish(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                               "too many agent streams waiting for their hello; retry later"));
    return;
  }
  pending_ = true;
  PGF_DEBUG("agents", "agent stream from %s admitted, waiting for its hello", context_->peer());
  hello_deadline_ =
      service_.deadlines_.Arm(context_, absl::Now() + service_.options_.hello_timeout);
  StartRead(&incoming_);
}

void AgentServiceImpl::Stream::ReleasePending() {
  if (pending_) service_.pending_streams_.fetch_sub(1);
  pending_ = false;
}

void AgentServiceImpl::Stream::RequestFinish(grpc::Status status) {
  bool finish_now = false;
  {
    absl::MutexLock lock(&outbox_->mu);
    outbox_->closed = true;
    outbox_->queue.clear();
    if (outbox_->finish_wanted) return;
    outbox_->finish_wanted = true;
    outbox_->finish_status = status;
    if (outbox_->writing) {
      // A write the agent does not take (it is gone, or stopped reading) would hold the stream
      // open: cancelled, it fails and its OnWriteDone finishes.
      context_->TryCancel();
    } else {
      outbox_->finish_started = true;
      finish_now = true;
    }
  }
  if (finish_now) Finish(std::move(status));
}

void AgentServiceImpl::Stream::OnWriteDone(bool ok) {
  bool next = false;
  bool finish = false;
  grpc::Status status;
  {
    absl::MutexLock lock(&outbox_->mu);
    if (!ok && !outbox_->closed) {
      // The stream broke under the write; the read side sees it too and ends the stream.
      outbox_->closed = true;
      outbox_->queue.clear();
      context_->TryCancel();
    }
    if (!outbox_->closed && !outbox_->queue.empty()) {
      writing_ = std::move(outbox_->queue.front());
      outbox_->queue.pop_front();
      next = true;
    } else {
      outbox_->writing = false;
      if (outbox_->finish_wanted && !outbox_->finish_started) {
        outbox_->finish_started = true;
        finish = true;
        status = outbox_->finish_status;
      }
    }
  }
  if (next) {
    StartWrite(&writing_);
  } else if (finish) {
    Finish(std::move(status));
  }
}

void AgentServiceImpl::Stream::OnReadDone(bool ok) {
  // The hello (or the end) has arrived: the stream no longer counts against
  // --max-pending-agent-streams, which bounds streams that send nothing, not hellos queued
  // here. The read side's state is safe to touch: its task runs only after this posts it.
  ReleasePending();
  // The stream stays alive: it ends only through Finish, which the read side calls, and no
  // read is in flight until the task starts the next one.
  service_.workers_.Post([this, ok] { HandleRead(ok); });
}

void AgentServiceImpl::Stream::HandleRead(bool ok) {
  if (session_ == nullptr) {
    OnHello(ok);
    return;
  }
  if (!ok) {
    EndSession();
    RequestFinish(grpc::Status::OK);
    return;
  }
  service_.api_.OnAgentMessage(*session_, incoming_);
  StartRead(&incoming_);
}

void AgentServiceImpl::Stream::OnHello(bool ok) {
  ReleasePending();
  const bool late = service_.deadlines_.Disarm(hello_deadline_);
  hello_deadline_ = 0;
  if (late) {
    PGF_WARN("agents", "agent stream from %s sent no hello within %s: closed", context_->peer(),
             absl::FormatDuration(service_.options_.hello_timeout));
    RequestFinish(grpc::Status(
        grpc::StatusCode::DEADLINE_EXCEEDED,
        absl::StrCat("no hello within ", absl::FormatDuration(service_.options_.hello_timeout))));
    return;
  }
  if (!ok || !incoming_.has_hello()) {
    RequestFinish(
        grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "the first message must be a hello"));
    return;
  }
  const pgfleet::v1::AgentHello hello = incoming_.hello();
  const Credentials& credentials = *credentials_;
  const AgentAuthOptions& options = service_.options_;
  if (hello.agent_id().empty() || hello.environment().empty()) {
    RequestFinish(
        grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "hello needs agent_id and environment"));
    return;
  }
  if (options.require_client_cert && credentials.certificate_cn != hello.agent_id()) {
    PGF_WARN("agents", "certificate %s tried to speak for agent %s: refused",
             credentials.certificate_cn, hello.agent_id());
    RequestFinish(grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                               absl::StrCat("certificate is for ", credentials.certificate_cn,
                                            ", not ", hello.agent_id())));
    return;
  }
  if (const std::optional<CertificateBinding>& bound = credentials.certificate_binding;
      bound.has_value() &&
      (bound->agent_id != hello.agent_id() || bound->environment != hello.environment())) {
    PGF_WARN("agents",
             "certificate for agent %s in environment %s tried to join as agent %s in "
             "environment %s: refused",
             bound->agent_id, bound->environment, hello.agent_id(), hello.environment());
    RequestFinish(grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                               absl::StrCat("the certificate binds agent ", bound->agent_id,
                                            " to environment ", bound->environment, ", not agent ",
                                            hello.agent_id(), " in ", hello.environment())));
    return;
  }
  if (const std::optional<TokenRow>& token = credentials.join_token;
      token.has_value() && token->environment != hello.environment()) {
    PGF_WARN("agents", "agent %s presented join token %d of environment %s to join %s: refused",
             hello.agent_id(), token->id, token->environment, hello.environment());
    RequestFinish(grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                               absl::StrCat("the join token is for environment ",
                                            token->environment, ", not ", hello.environment())));
    return;
  }

  if (absl::Status recorded = service_.api_.OnAgentHello(hello); !recorded.ok()) {
    RequestFinish(ToGrpcStatus(recorded));
    return;
  }
  std::shared_ptr<Outbox> outbox = outbox_;
  auto session = std::make_shared<AgentSession>(
      hello.agent_id(), hello.environment(),
      [outbox](const pgfleet::v1::ControllerMessage& message) {
        return Outbox::Send(outbox, message);
      },
      [outbox] { outbox->Cancel(); });
  session->set_applied_version(hello.applied_config_version());
  session->set_restart_pending({hello.restart_pending().begin(), hello.restart_pending().end()});
  session->SetBinary(hello.build_id(), hello.pid(), hello.binary_outdated());
  session->set_handover_command_id(hello.handover_command_id());
  session->SetOnDisk(hello.on_disk_build_id(), hello.on_disk_version());
  session->set_applied_sha256(hello.applied_config_sha256());
  session_ = session;
  {
    absl::MutexLock lock(&outbox_->mu);
    outbox_->agent_id = hello.agent_id();
  }
  if (std::shared_ptr<AgentSession> previous = service_.registry_.Register(session)) {
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
           hello.environment(), credentials.Basis(), context_->peer(),
           hello.applied_config_version());
  pgfleet::v1::ControllerMessage ack;
  ack.mutable_hello_ack()->set_metrics_interval_seconds(
      static_cast<int32_t>(absl::ToInt64Seconds(service_.api_.metrics_interval())));
  session->Send(ack);
  service_.api_.OnAgentConnected(*session);

  join_token_id_ = credentials.join_token.has_value() ? credentials.join_token->id : 0;
  if (join_token_id_ != 0) {
    absl::MutexLock lock(&service_.sessions_mu_);
    service_.sessions_by_token_.emplace(join_token_id_, session);
  }
  StartRead(&incoming_);
}

void AgentServiceImpl::Stream::EndSession() {
  if (session_ == nullptr) return;
  if (join_token_id_ != 0) {
    absl::MutexLock lock(&service_.sessions_mu_);
    auto [begin, end] = service_.sessions_by_token_.equal_range(join_token_id_);
    for (auto it = begin; it != end; ++it) {
      if (it->second.lock() == session_) {
        service_.sessions_by_token_.erase(it);
        break;
      }
    }
  }
  PGF_INFO("agents", "agent %s disconnected", session_->agent_id());
  service_.api_.OnAgentGone(session_);
  session_.reset();
}

void AgentServiceImpl::Stream::OnDone() {
  // Normally the read side has ended everything already; this is the safety net.
  if (hello_deadline_ != 0) service_.deadlines_.Disarm(hello_deadline_);
  ReleasePending();
  EndSession();
  {
    absl::MutexLock lock(&outbox_->mu);
    outbox_->stream = nullptr;
    outbox_->closed = true;
    outbox_->queue.clear();
  }
  delete this;
}

grpc::ServerBidiReactor<pgfleet::v1::AgentMessage, pgfleet::v1::ControllerMessage>*
AgentServiceImpl::Connect(grpc::CallbackServerContext* context) {
  auto* stream = new Stream(*this, context);
  // Admission may read the store (join tokens): not on gRPC's thread either.
  workers_.Post([stream] { stream->Start(); });
  return stream;
}

void AgentServiceImpl::DisconnectAll(const std::string& why) {
  for (const std::shared_ptr<AgentSession>& session : registry_.List("")) {
    PGF_INFO("agents", "agent %s: %s; closing its stream", session->agent_id(), why);
    session->Cancel();
  }
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
  // A follower handed this write on (controller/grpc/leader_proxy.h): never handed on again.
  const bool forwarded = metadata.find(kForwardedByMetadata) != metadata.end();
  return ToGrpcStatus(api.Call(std::string(it->second.data(), it->second.size()), service, method,
                               request, response, forwarded));
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
