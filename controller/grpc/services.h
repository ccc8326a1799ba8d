// gRPC adapters over controller/api/: each RPC of the operators' services is its ControlApi
// entry (authentication, role, audit and mapping happen there); the agents' stream is
// FleetApi's agent side. No fleet logic lives here.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <deque>
#include <functional>
#include <map>
#include <set>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "controller/api/control_api.h"
#include "controller/api/fleet_api.h"
#include "controller/registry/agent_registry.h"
#include "pgfleet/v1/agent.grpc.pb.h"
#include "pgfleet/v1/fleet.grpc.pb.h"

namespace pgfleet::controller {

// Metadata a follower adds to a write it hands to the leader (controller/grpc/leader_proxy.h),
// naming itself; a controller never hands such a request on again.
inline constexpr char kForwardedByMetadata[] = "pgfleet-forwarded-by";

// How agents' streams are admitted (pgfleet-controller's --insecure-agents,
// --agent-hello-timeout and --max-pending-agent-streams).
struct AgentAuthOptions {
  // TLS: every agent presents a client certificate whose CN is its agent id.
  bool require_client_cert = false;
  // Accept an environment the agent merely claims (no join token, no pgfleet:// URI in its
  // certificate): the behaviour before agent authentication existed.
  bool insecure_agents = false;
  // A stream whose hello has not arrived by then is cancelled.
  absl::Duration hello_timeout = absl::Seconds(10);
  // Streams admitted but not yet past their hello; more are refused (RESOURCE_EXHAUSTED).
  int max_pending_streams = 64;
};

// Cancels streams whose first message is late, from one thread for all of them.
class HelloDeadlines {
 public:
  HelloDeadlines() = default;
  ~HelloDeadlines();  // Stops the thread (every Arm must have been Disarmed by then).
  HelloDeadlines(const HelloDeadlines&) = delete;
  HelloDeadlines& operator=(const HelloDeadlines&) = delete;

  // TryCancel()s `context` at `deadline` unless Disarm()ed first.
  uint64_t Arm(grpc::ServerContextBase* context, absl::Time deadline);
  // After Disarm the context is never touched again. True when the deadline had fired.
  bool Disarm(uint64_t id);

 private:
  struct Entry {
    grpc::ServerContextBase* context;
    absl::Time deadline;
  };
  void Run();

  absl::Mutex mu_;
  std::map<uint64_t, Entry> armed_ ABSL_GUARDED_BY(mu_);
  std::set<uint64_t> fired_ ABSL_GUARDED_BY(mu_);
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;  // Started by the first Arm.
};

// Runs the agents' read sides (admission, hello, every message) off gRPC's threads. Those
// threads also answer HTTP/2 keepalive pings: while they wait on the store (a hello, an ACK, a
// metrics sample are SQLite writes), pings go unanswered, agents time their links out and
// reconnect, and each reconnect is more store work; at 10,000 agents that loop took the fleet
// down (80,000 reconnects during one rollout). Each stream has one read in flight, started by
// its task here once the message before is handled, so an agent's messages stay in order and
// a stream waits here for at most one task.
class StreamWorkers {
 public:
  explicit StreamWorkers(int threads);
  ~StreamWorkers();  // Runs what is queued, then stops the threads.
  StreamWorkers(const StreamWorkers&) = delete;
  StreamWorkers& operator=(const StreamWorkers&) = delete;

  void Post(std::function<void()> task);

 private:
  void Run();

  absl::Mutex mu_;
  std::deque<std::function<void()>> tasks_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

// The agents' streams on gRPC's callback API: each stream is a self-owning reactor (one read
// and at most one write in flight; messages for the agent are queued from any thread and
// written in order), so no thread waits on any agent and 10,000 agents need no 10,000 threads.
// At most kMaxQueuedMessages messages wait per stream: a stream that falls that far behind is
// cancelled (the agent reconnects and is brought up to date by its hello).
class AgentServiceImpl final : public pgfleet::v1::AgentService::CallbackService {
 public:
  static constexpr size_t kMaxQueuedMessages = 64;

  // Before the first message is read, the stream's credentials are checked: a certificate (with
  // TLS), and the environment it may join, from the certificate's pgfleet:// URI or the agent's
  // join token (see controller/auth/agent_identity.h). The hello must then match them.
  AgentServiceImpl(FleetApi& api, AgentRegistry& registry, AgentAuthOptions options)
      : api_(api), registry_(registry), options_(options) {}

  grpc::ServerBidiReactor<pgfleet::v1::AgentMessage, pgfleet::v1::ControllerMessage>* Connect(
      grpc::CallbackServerContext* context) override;

  // Ends the streams of agents that joined with this token (it was revoked); they are refused
  // when they reconnect.
  void DisconnectJoinToken(uint64_t token_id);
  // Checked before anything else when a stream opens: a stream it refuses ends with its
  // status (a follower of several controllers: UNAVAILABLE naming the leader). Set before the
  // server starts.
  void set_admission_check(std::function<absl::Status()> check) {
    admission_check_ = std::move(check);
  }
  // Ends every agent's stream (this controller stopped leading: they reconnect to the next).
  void DisconnectAll(const std::string& why);

 private:
  class Stream;
  struct Credentials;
  // From the TLS session and the metadata only; nothing is read from the stream.
  absl::StatusOr<Credentials> Admit(const grpc::CallbackServerContext& context);
  FleetApi& api_;
  AgentRegistry& registry_;
  AgentAuthOptions options_;
  std::function<absl::Status()> admission_check_;
  std::atomic<int> pending_streams_{0};
  HelloDeadlines deadlines_;
  // Two: one can wait on the store while the other handles registry and CPU work.
  StreamWorkers workers_{2};
  absl::Mutex sessions_mu_;
  // Connected agents by the join token they presented.
  std::multimap<uint64_t, std::weak_ptr<AgentSession>> sessions_by_token_
      ABSL_GUARDED_BY(sessions_mu_);
};

class FleetServiceImpl final : public pgfleet::v1::FleetService::Service {
 public:
  explicit FleetServiceImpl(const ControlApi& api) : api_(api) {}

  grpc::Status PushConfig(grpc::ServerContext* context,
                          const pgfleet::v1::PushConfigRequest* request,
                          pgfleet::v1::ConfigVersion* response) override;
  grpc::Status ListConfigs(grpc::ServerContext* context,
                           const pgfleet::v1::ListConfigsRequest* request,
                           pgfleet::v1::ListConfigsResponse* response) override;
  grpc::Status GetConfig(grpc::ServerContext* context, const pgfleet::v1::GetConfigRequest* request,
                         pgfleet::v1::ConfigVersion* response) override;
  grpc::Status RenderConfig(grpc::ServerContext* context,
                            const pgfleet::v1::RenderConfigRequest* request,
                            pgfleet::v1::RenderedConfig* response) override;
  grpc::Status SetDesiredConfig(grpc::ServerContext* context,
                                const pgfleet::v1::SetDesiredConfigRequest* request,
                                pgfleet::v1::Environment* response) override;
  grpc::Status ListEnvironments(grpc::ServerContext* context,
                                const pgfleet::v1::ListEnvironmentsRequest* request,
                                pgfleet::v1::ListEnvironmentsResponse* response) override;
  grpc::Status ListAgents(grpc::ServerContext* context,
                          const pgfleet::v1::ListAgentsRequest* request,
                          pgfleet::v1::ListAgentsResponse* response) override;
  grpc::Status GetAgent(grpc::ServerContext* context, const pgfleet::v1::GetAgentRequest* request,
                        pgfleet::v1::Agent* response) override;
  grpc::Status SendCommand(grpc::ServerContext* context,
                           const pgfleet::v1::SendCommandRequest* request,
                           pgfleet::v1::SendCommandResponse* response) override;
  grpc::Status SetAgentLabels(grpc::ServerContext* context,
                              const pgfleet::v1::SetAgentLabelsRequest* request,
                              pgfleet::v1::Agent* response) override;

 private:
  const ControlApi& api_;
};

class RolloutServiceImpl final : public pgfleet::v1::RolloutService::Service {
 public:
  explicit RolloutServiceImpl(const ControlApi& api) : api_(api) {}

  grpc::Status StartRollout(grpc::ServerContext* context,
                            const pgfleet::v1::StartRolloutRequest* request,
                            pgfleet::v1::Rollout* response) override;
  grpc::Status GetRollout(grpc::ServerContext* context,
                          const pgfleet::v1::GetRolloutRequest* request,
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
  const ControlApi& api_;
};

class MaintenanceServiceImpl final : public pgfleet::v1::MaintenanceService::Service {
 public:
  explicit MaintenanceServiceImpl(const ControlApi& api) : api_(api) {}

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
  const ControlApi& api_;
};

class TokenServiceImpl final : public pgfleet::v1::TokenService::Service {
 public:
  explicit TokenServiceImpl(const ControlApi& api) : api_(api) {}

  grpc::Status ListTokens(grpc::ServerContext* context,
                          const pgfleet::v1::ListTokensRequest* request,
                          pgfleet::v1::ListTokensResponse* response) override;
  grpc::Status CreateToken(grpc::ServerContext* context,
                           const pgfleet::v1::CreateTokenRequest* request,
                           pgfleet::v1::CreateTokenResponse* response) override;
  grpc::Status RevokeToken(grpc::ServerContext* context,
                           const pgfleet::v1::RevokeTokenRequest* request,
                           pgfleet::v1::Token* response) override;

 private:
  const ControlApi& api_;
};

class SecretsServiceImpl final : public pgfleet::v1::SecretsService::Service {
 public:
  explicit SecretsServiceImpl(const ControlApi& api) : api_(api) {}

  grpc::Status SetUserSecret(grpc::ServerContext* context,
                             const pgfleet::v1::SetUserSecretRequest* request,
                             pgfleet::v1::SecretsChange* response) override;
  grpc::Status SetTlsFiles(grpc::ServerContext* context,
                           const pgfleet::v1::SetTlsFilesRequest* request,
                           pgfleet::v1::SecretsChange* response) override;
  grpc::Status BeginRotation(grpc::ServerContext* context,
                             const pgfleet::v1::BeginRotationRequest* request,
                             pgfleet::v1::SecretsChange* response) override;
  grpc::Status EndRotation(grpc::ServerContext* context,
                           const pgfleet::v1::EndRotationRequest* request,
                           pgfleet::v1::SecretsChange* response) override;
  grpc::Status ListSecrets(grpc::ServerContext* context,
                           const pgfleet::v1::ListSecretsRequest* request,
                           pgfleet::v1::ListSecretsResponse* response) override;

 private:
  const ControlApi& api_;
};

}  // namespace pgfleet::controller
