// The agents' streams at scale, against a real pgfleet-controller: many AgentService streams
// (simulated agents in this process, each on its own TCP connection, speaking the protocol as
// pgfleet-agent does) are served by a few threads, not one thread per agent; messages the
// controller sends from an operator's RPC reach every stream and every answer gets back; a
// second stream for the same agent id supersedes the first.

#include <grpcpp/grpcpp.h>

#include <condition_variable>
#include <deque>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "pgfleet/v1/agent.grpc.pb.h"
#include "pgfleet/v1/fleet.pb.h"
#include "tests/testutil/fleet_fixture.h"
#include "tests/testutil/json.h"
#include "tests/testutil/status_testing.h"
#include "tests/testutil/wait.h"

namespace pgfleet::testutil {
namespace {

using pgfleet::v1::AgentMessage;
using pgfleet::v1::ControllerMessage;

// One simulated agent: hello first, then it reads everything the controller sends and answers
// every command with an ok CommandResult, like pgfleet-agent's link.
class RawAgent final : public grpc::ClientBidiReactor<AgentMessage, ControllerMessage> {
 public:
  RawAgent(const std::string& address, const std::string& agent_id, const std::string& env) {
    grpc::ChannelArguments args;
    // Its own TCP connection, as a real agent has (channels to one address share one by default).
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    channel_ = grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
    stub_ = pgfleet::v1::AgentService::NewStub(channel_);
    stub_->async()->Connect(&context_, this);
    AgentMessage hello;
    hello.mutable_hello()->set_agent_id(agent_id);
    hello.mutable_hello()->set_environment(env);
    hello.mutable_hello()->set_agent_version("test");
    Write(std::move(hello));
    StartRead(&incoming_);
    StartCall();
  }
  ~RawAgent() override {
    context_.TryCancel();
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return done_; });
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;
    if (incoming_.has_command()) {
      AgentMessage answer;
      answer.mutable_command_result()->set_command_id(incoming_.command().command_id());
      answer.mutable_command_result()->set_ok(true);
      Write(std::move(answer));
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (incoming_.has_hello_ack()) acked_ = true;
      if (incoming_.has_command()) ++commands_;
    }
    StartRead(&incoming_);
  }
  void OnWriteDone(bool ok) override {
    std::lock_guard<std::mutex> lock(mu_);
    writing_ = false;
    if (ok && !outbox_.empty()) StartNextWriteLocked();
  }
  void OnDone(const grpc::Status& status) override {
    std::lock_guard<std::mutex> lock(mu_);
    status_ = status;
    done_ = true;
    cv_.notify_all();
  }

  bool acked() const {
    std::lock_guard<std::mutex> lock(mu_);
    return acked_;
  }
  int commands() const {
    std::lock_guard<std::mutex> lock(mu_);
    return commands_;
  }
  bool done() const {
    std::lock_guard<std::mutex> lock(mu_);
    return done_;
  }
  grpc::Status status() const {
    std::lock_guard<std::mutex> lock(mu_);
    return status_;
  }

 private:
  void Write(AgentMessage message) {
    std::lock_guard<std::mutex> lock(mu_);
    outbox_.push_back(std::move(message));
    if (!writing_) StartNextWriteLocked();
  }
  void StartNextWriteLocked() {
    writing_ = true;
    writing_message_ = std::move(outbox_.front());
    outbox_.pop_front();
    StartWrite(&writing_message_);
  }

  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<pgfleet::v1::AgentService::Stub> stub_;
  grpc::ClientContext context_;
  ControllerMessage incoming_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<AgentMessage> outbox_;
  AgentMessage writing_message_;
  bool writing_ = false;
  bool acked_ = false;
  int commands_ = 0;
  bool done_ = false;
  grpc::Status status_;
};

int ThreadsOf(pid_t pid) {
  std::ifstream status(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(status, line)) {
    int threads = 0;
    if (absl::StartsWith(line, "Threads:") &&
        absl::SimpleAtoi(absl::StripAsciiWhitespace(line.substr(8)), &threads)) {
      return threads;
    }
  }
  return -1;
}

class AgentStreamsTest : public FleetFixture {
 protected:
  AgentStreamsTest() : FleetFixture("pgfleet-agent-streams") {}

  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(FleetFixture::SetUp());
    // The simulated agents' streams are cancelled at the end; their exits are not judged.
    expect_clean_exits_ = false;
    ASSERT_NO_FATAL_FAILURE(StartController());
  }

  absl::Status WaitAcked(const std::vector<std::unique_ptr<RawAgent>>& agents) {
    return PollUntil(
        [&](std::string* note) -> absl::StatusOr<bool> {
          size_t acked = 0;
          for (const auto& agent : agents) acked += agent->acked() ? 1 : 0;
          *note = absl::StrCat(acked, " of ", agents.size(), " streams got their HelloAck");
          return acked == agents.size();
        },
        absl::Seconds(120), "every simulated agent's HelloAck");
  }
};

TEST_F(AgentStreamsTest, ManyStreamsShareAFewThreadsAndAllAnswerACommand) {
  constexpr int kAgents = 200;
  const int threads_before = ThreadsOf(controller_->pid());
  std::vector<std::unique_ptr<RawAgent>> agents;
  for (int i = 0; i < kAgents; ++i) {
    agents.push_back(
        std::make_unique<RawAgent>(controller_->address(), absl::StrCat("raw-", i), "swarm"));
  }
  PGF_ASSERT_OK(WaitAcked(agents));

  // One thread per open stream was the synchronous server's way (200 streams, 200+ threads).
  const int threads = ThreadsOf(controller_->pid());
  EXPECT_LT(threads, threads_before + 40)
      << threads << " threads with " << kAgents << " agent streams open (" << threads_before
      << " before any)";

  // An operator's command is queued to every stream from the RPC's thread; every agent gets it
  // and every answer comes back.
  FleetctlResult reloaded = Ctl({"--output", "json", "reload", "--env", "swarm"});
  ASSERT_EQ(reloaded.exit_code, 0) << reloaded.Describe();
  absl::StatusOr<pgfleet::v1::SendCommandResponse> response =
      ParseJson<pgfleet::v1::SendCommandResponse>(reloaded.stdout_text);
  PGF_ASSERT_OK(response.status());
  ASSERT_EQ(response->outcomes_size(), kAgents);
  for (const auto& outcome : response->outcomes()) {
    EXPECT_TRUE(outcome.ok()) << outcome.agent_id() << ": " << outcome.error();
  }
  for (const auto& agent : agents) EXPECT_EQ(agent->commands(), 1);
  for (const auto& agent : agents) EXPECT_FALSE(agent->done()) << agent->status().error_message();
}

TEST_F(AgentStreamsTest, ASecondStreamForTheSameAgentEndsTheFirst) {
  auto first = std::make_unique<RawAgent>(controller_->address(), "twin", "swarm");
  PGF_ASSERT_OK(PollUntil([&](std::string*) -> absl::StatusOr<bool> { return first->acked(); },
                          absl::Seconds(30), "the first stream's HelloAck"));
  auto second = std::make_unique<RawAgent>(controller_->address(), "twin", "swarm");
  PGF_ASSERT_OK(PollUntil([&](std::string*) -> absl::StatusOr<bool> { return second->acked(); },
                          absl::Seconds(30), "the second stream's HelloAck"));
  PGF_ASSERT_OK(PollUntil([&](std::string*) -> absl::StatusOr<bool> { return first->done(); },
                          absl::Seconds(30), "the first stream to be ended"));
  EXPECT_FALSE(second->done());
  // Commands go to the newer stream only.
  FleetctlResult reloaded = Ctl({"reload", "--agent", "twin"});
  ASSERT_EQ(reloaded.exit_code, 0) << reloaded.Describe();
  EXPECT_EQ(second->commands(), 1);
  EXPECT_EQ(first->commands(), 0);
}

}  // namespace
}  // namespace pgfleet::testutil
