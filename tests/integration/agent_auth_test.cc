// Which agents may join which environment, against a real pgfleet-controller and real
// pgfleet-agent processes (no PostgreSQL: agents only need their listener here).
//
//  * With mutual TLS, a certificate whose URI SAN is pgfleet://env/ENV/agent/ID binds the agent
//    to ENV: a dev agent's (valid, same-CA) certificate asking for prod is refused and never
//    receives prod's config, which carries prod's database password.
//  * Without a pgfleet:// URI (or without TLS), an agent proves its environment with a join token
//    (`fleetctl token create --role agent --env ENV`, given with --join-token-file): none, an
//    unknown one, another environment's, an operator's, a revoked or an expired one is refused,
//    with the reason in the agent's log; the right one works.
//  * A stream is checked from its metadata before anything is read, waits at most
//    --agent-hello-timeout for its hello, and at most --max-pending-agent-streams such streams
//    wait at once; a real agent still connects meanwhile.

#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "pgfleet/v1/agent.grpc.pb.h"
#include "pgfleet/v1/fleet.pb.h"
#include "tests/testutil/agent_process.h"
#include "tests/testutil/controller_process.h"
#include "tests/testutil/fixtures.h"
#include "tests/testutil/fleet_fixture.h"
#include "tests/testutil/json.h"
#include "tests/testutil/process.h"
#include "tests/testutil/status_testing.h"
#include "tests/testutil/wait.h"

namespace pgfleet::testutil {
namespace {

constexpr char kAdminToken[] = "pgf_agent-auth-test-bootstrap-admin";
// In prod's config only: it must never reach an agent that is not prod's.
constexpr char kProdSecret[] = "prod-Db-Secret-4711";

class AgentAuthTest : public FleetFixture {
 protected:
  AgentAuthTest() : FleetFixture("pgfleet-agent-auth") {}

  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(FleetFixture::SetUp());
    token_ = kAdminToken;
    // Refused agents and cut links are what these tests make; their exits are not judged.
    expect_clean_exits_ = false;
  }

  void StartController(std::vector<std::string> extra_args, bool insecure_agents = false) {
    ControllerOptions options;
    options.insecure_agents = insecure_agents;
    options.extra_args = std::move(extra_args);
    FleetFixture::StartController(std::move(options));
  }

  // A join token minted through the API, as an operator would; returns the secret.
  std::string CreateAgentToken(const std::string& env, const std::vector<std::string>& more = {}) {
    std::vector<std::string> args = {"token", "create", "--role",   "agent",
                                     "--env", env,      "--output", "json"};
    args.insert(args.end(), more.begin(), more.end());
    FleetctlResult created = Ctl(args);
    EXPECT_EQ(created.exit_code, 0) << created.Describe();
    absl::StatusOr<pgfleet::v1::CreateTokenResponse> response =
        ParseJson<pgfleet::v1::CreateTokenResponse>(created.stdout_text);
    EXPECT_TRUE(response.ok()) << response.status();
    if (!response.ok()) return "";
    EXPECT_EQ(response->token().role(), "agent");
    EXPECT_EQ(response->token().environment(), env);
    EXPECT_TRUE(absl::StartsWith(response->secret(), "pgf_")) << created.Describe();
    return response->secret();
  }

  std::string WriteTokenFile(const std::string& name, const std::string& token) {
    const std::string path = absl::StrCat(dir_, "/", name, ".token");
    EXPECT_TRUE(WriteFile(path, token + "\n").ok());
    return path;
  }

  // Agent `id` asking to join `env`, with `more` flags (--join-token-file, --tls-*).
  AgentProcess* StartAgent(const std::string& id, const std::string& env,
                           const std::vector<std::string>& more = {}) {
    AgentOptions options;
    options.databases_section = "appdb = host=127.0.0.1 port=1 dbname=appdb\n";
    options.userlist = {{"app", "app-password"}};
    options.extra_args = LinkArgs(id, env, controller_->address());
    // Every agent of an environment runs on this host: each keeps its own port.
    options.extra_args.push_back("--local-listeners");
    options.extra_args.insert(options.extra_args.end(), more.begin(), more.end());
    absl::StatusOr<std::unique_ptr<AgentProcess>> agent = AgentProcess::Start(options);
    EXPECT_TRUE(agent.ok()) << id << ": " << agent.status();
    if (!agent.ok()) return nullptr;
    AgentProcess* raw = agent->get();
    agents_[id] = std::move(*agent);
    return raw;
  }

  // Prod's config, with prod's database password in it, as prod's desired config.
  uint64_t PushProdConfig(const AgentProcess& agent) {
    const std::string ini = absl::StrCat(
        "[databases]\nappdb = host=127.0.0.1 port=1 dbname=appdb user=app password=", kProdSecret,
        "\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = ", agent.port(),
        "\nunix_socket_dir =\nauth_type = scram-sha-256\nauth_file = ", agent.dir(),
        "/userlist.txt\n");
    const std::string path = dir_ + "/prod.ini";
    EXPECT_TRUE(WriteFile(path, ini).ok());
    FleetctlResult pushed =
        Ctl({"config", "push", "--env", "prod", "-f", path, "--output", "json"});
    EXPECT_EQ(pushed.exit_code, 0) << pushed.Describe();
    absl::StatusOr<pgfleet::v1::ConfigVersion> version =
        ParseJson<pgfleet::v1::ConfigVersion>(pushed.stdout_text);
    EXPECT_TRUE(version.ok()) << version.status();
    if (!version.ok()) return 0;
    FleetctlResult applied =
        Ctl({"config", "apply", "--env", "prod", "--version", absl::StrCat(version->version())});
    EXPECT_EQ(applied.exit_code, 0) << applied.Describe();
    return version->version();
  }

  absl::StatusOr<pgfleet::v1::ListAgentsResponse> ListAgents() const {
    FleetctlResult listed = Ctl({"agents", "list", "--output", "json"});
    if (listed.exit_code != 0) return absl::InternalError(listed.Describe());
    return ParseJson<pgfleet::v1::ListAgentsResponse>(listed.stdout_text);
  }

  absl::Status WaitApplied(const std::string& id, const std::string& env, uint64_t version) {
    return PollUntil(
        [&](std::string* note) -> absl::StatusOr<bool> {
          absl::StatusOr<pgfleet::v1::ListAgentsResponse> list = ListAgents();
          if (!list.ok()) return list.status();
          for (const auto& agent : list->agents()) {
            if (agent.agent_id() != id) continue;
            *note = absl::StrCat(id, " env ", agent.environment(), " connected ", agent.connected(),
                                 " applied v", agent.applied_version());
            return agent.environment() == env && agent.connected() &&
                   agent.applied_version() == version;
          }
          *note = absl::StrCat(id, " not listed");
          return false;
        },
        absl::Seconds(30), absl::StrCat(id, " on v", version, " in ", env));
  }

  // Waits until the agent logged that the controller refused it, `times` times (so it retried).
  absl::Status WaitRefused(const std::string& id, const std::string& reason, int times = 2) {
    return PollUntil(
        [&](std::string* note) -> absl::StatusOr<bool> {
          const std::string log = agents_.at(id)->LogContents();
          *note = ReadFileTail(agents_.at(id)->log_path(), 600);
          return CountOccurrences(log, "refused this agent") >= times &&
                 absl::StrContains(log, reason);
        },
        absl::Seconds(30), absl::StrCat(id, " refused (", reason, ")"));
  }

  // Nothing of prod's config is on the agent's disk or in its log, and the controller never
  // recorded it as an agent.
  void ExpectNeverJoined(const std::string& id) {
    const std::string log = agents_.at(id)->LogContents();
    EXPECT_FALSE(absl::StrContains(log, "connected to controller")) << log;
    EXPECT_FALSE(absl::StrContains(log, kProdSecret)) << log;
    std::error_code error;
    if (std::filesystem::exists(StateDir(id), error)) {
      for (const auto& entry : std::filesystem::recursive_directory_iterator(StateDir(id))) {
        if (!entry.is_regular_file()) continue;
        absl::StatusOr<std::string> text = ReadFile(entry.path().string());
        ASSERT_TRUE(text.ok()) << text.status();
        EXPECT_FALSE(absl::StrContains(*text, kProdSecret)) << entry.path();
      }
    }
    PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ListAgentsResponse list, ListAgents());
    for (const auto& agent : list.agents()) EXPECT_NE(agent.agent_id(), id);
  }
};

// --- Certificates bind the environment ---------------------------------------------------------

TEST_F(AgentAuthTest, DevCertificateCannotJoinProdNorReceiveItsConfig) {
  const std::string certs = dir_ + "/certs";
  PGF_ASSERT_OK_AND_ASSIGN(
      RunResult made,
      RunCommand({"bash", std::string(PGFLEET_SOURCE_DIR) + "/scripts/make-test-certs.sh", certs,
                  "dev-1@dev", "prod-1@prod", "legacy-1"}));
  ASSERT_TRUE(made.Succeeded()) << made.Describe();
  ASSERT_NO_FATAL_FAILURE(StartController({absl::StrCat("--tls-cert=", certs, "/controller.pem"),
                                           absl::StrCat("--tls-key=", certs, "/controller-key.pem"),
                                           absl::StrCat("--tls-ca=", certs, "/ca.pem")}));
  ctl_options_.tls_ca = certs + "/ca.pem";
  auto tls = [&](const std::string& name) -> std::vector<std::string> {
    return {absl::StrCat("--tls-ca=", certs, "/ca.pem"),
            absl::StrCat("--tls-cert=", certs, "/", name, ".pem"),
            absl::StrCat("--tls-key=", certs, "/", name, "-key.pem")};
  };

  // prod-1 first, so prod's config names its port.
  AgentProcess* prod = StartAgent("prod-1", "prod", tls("prod-1"));
  ASSERT_NE(prod, nullptr);
  const uint64_t prod_version = PushProdConfig(*prod);
  ASSERT_GT(prod_version, 0u);
  PGF_ASSERT_OK(WaitApplied("prod-1", "prod", prod_version));

  // dev-1's certificate is valid (same CA, CN dev-1) but binds it to dev.
  ASSERT_NE(StartAgent("dev-1", "prod", tls("dev-1")), nullptr);
  PGF_ASSERT_OK(WaitRefused("dev-1", "binds agent dev-1 to environment dev"));
  EXPECT_TRUE(absl::StrContains(controller_->LogContents(),
                                "certificate for agent dev-1 in environment dev tried to join as "
                                "agent dev-1 in environment prod: refused"))
      << controller_->LogContents();
  ExpectNeverJoined("dev-1");

  // A prod certificate cannot speak for another agent of prod either.
  ASSERT_NE(StartAgent("prod-2", "prod", tls("prod-1")), nullptr);
  PGF_ASSERT_OK(WaitRefused("prod-2", "certificate is for prod-1, not prod-2"));
  ExpectNeverJoined("prod-2");

  // A certificate that names no environment (CN only) needs a join token.
  ASSERT_NE(StartAgent("legacy-1", "prod", tls("legacy-1")), nullptr);
  PGF_ASSERT_OK(WaitRefused("legacy-1", "prove their environment"));
  ExpectNeverJoined("legacy-1");

  // The same dev certificate in its own environment works.
  agents_.erase("dev-1");
  ASSERT_NE(StartAgent("dev-1", "dev", tls("dev-1")), nullptr);
  PGF_ASSERT_OK(PollUntil(
      [&](std::string*) -> absl::StatusOr<bool> {
        return absl::StrContains(agents_.at("dev-1")->LogContents(), "connected to controller");
      },
      absl::Seconds(30), "dev-1 connected in dev"));
  EXPECT_TRUE(absl::StrContains(controller_->LogContents(),
                                "agent dev-1 connected (env dev, "
                                "certificate"))
      << controller_->LogContents();
  // prod-1 was never displaced.
  EXPECT_EQ(CountOccurrences(controller_->LogContents(), "agent prod-1 connected"), 1);
}

// --- Join tokens -------------------------------------------------------------------------------

TEST_F(AgentAuthTest, PlainTcpAgentsNeedTheirEnvironmentsJoinToken) {
  ASSERT_NO_FATAL_FAILURE(StartController({}));
  const std::string prod_token = CreateAgentToken("prod");
  const std::string dev_token = CreateAgentToken("dev");
  ASSERT_FALSE(prod_token.empty());
  ASSERT_FALSE(dev_token.empty());

  AgentProcess* prod = StartAgent(
      "prod-1", "prod", {absl::StrCat("--join-token-file=", WriteTokenFile("prod", prod_token))});
  ASSERT_NE(prod, nullptr);
  const uint64_t prod_version = PushProdConfig(*prod);
  ASSERT_GT(prod_version, 0u);
  PGF_ASSERT_OK(WaitApplied("prod-1", "prod", prod_version));
  EXPECT_TRUE(absl::StrContains(controller_->LogContents(),
                                "agent prod-1 connected (env prod, "
                                "join token"));

  // No token at all.
  ASSERT_NE(StartAgent("none-1", "prod"), nullptr);
  PGF_ASSERT_OK(WaitRefused("none-1", "--join-token-file"));
  ExpectNeverJoined("none-1");

  // A token the controller never issued.
  ASSERT_NE(StartAgent("wrong-1", "prod",
                       {absl::StrCat("--join-token-file=",
                                     WriteTokenFile("wrong",
                                                    "pgf_00000000000000000000000000000000"
                                                    "00000000000000000000000000000000"))}),
            nullptr);
  PGF_ASSERT_OK(WaitRefused("wrong-1", "join token refused: unknown token"));
  ExpectNeverJoined("wrong-1");

  // dev's token, asking for prod.
  ASSERT_NE(StartAgent("dev-1", "prod",
                       {absl::StrCat("--join-token-file=", WriteTokenFile("dev", dev_token))}),
            nullptr);
  PGF_ASSERT_OK(WaitRefused("dev-1", "the join token is for environment dev, not prod"));
  ExpectNeverJoined("dev-1");

  // An operator's (admin's) token is not a join token.
  ASSERT_NE(StartAgent("admin-1", "prod",
                       {absl::StrCat("--join-token-file=", WriteTokenFile("admin", kAdminToken))}),
            nullptr);
  PGF_ASSERT_OK(WaitRefused("admin-1", "agents need an agent token"));
  ExpectNeverJoined("admin-1");

  // An agent token is not an operator's token either.
  FleetctlResult as_agent =
      RunFleetctl({"agents", "list"}, prod_token, controller_->address()).value();
  EXPECT_EQ(as_agent.exit_code, 4) << as_agent.Describe();
  EXPECT_TRUE(absl::StrContains(as_agent.stderr_text, "join token")) << as_agent.Describe();

  // Revoked: refused at the next connect.
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ListTokensResponse tokens,
                           ParseJson<pgfleet::v1::ListTokensResponse>(
                               Ctl({"token", "list", "--output", "json"}).stdout_text));
  uint64_t dev_token_id = 0;
  for (const auto& token : tokens.tokens()) {
    if (token.environment() == "dev") dev_token_id = token.id();
  }
  ASSERT_NE(dev_token_id, 0u);
  FleetctlResult revoked = Ctl({"token", "revoke", absl::StrCat(dev_token_id)});
  ASSERT_EQ(revoked.exit_code, 0) << revoked.Describe();
  ASSERT_NE(StartAgent("dev-2", "dev",
                       {absl::StrCat("--join-token-file=", WriteTokenFile("dev", dev_token))}),
            nullptr);
  PGF_ASSERT_OK(WaitRefused("dev-2", "was revoked"));

  // Revoking a token in use closes its agents' streams, and they are refused from then on.
  const std::string staging_token = CreateAgentToken("staging");
  ASSERT_NE(
      StartAgent("staging-1", "staging",
                 {absl::StrCat("--join-token-file=", WriteTokenFile("staging", staging_token))}),
      nullptr);
  PGF_ASSERT_OK(PollUntil(
      [&](std::string*) -> absl::StatusOr<bool> {
        return absl::StrContains(agents_.at("staging-1")->LogContents(), "connected to controller");
      },
      absl::Seconds(30), "staging-1 connected"));
  PGF_ASSERT_OK_AND_ASSIGN(tokens, ParseJson<pgfleet::v1::ListTokensResponse>(
                                       Ctl({"token", "list", "--output", "json"}).stdout_text));
  uint64_t staging_token_id = 0;
  for (const auto& token : tokens.tokens()) {
    if (token.environment() == "staging") staging_token_id = token.id();
  }
  ASSERT_NE(staging_token_id, 0u);
  revoked = Ctl({"token", "revoke", absl::StrCat(staging_token_id)});
  ASSERT_EQ(revoked.exit_code, 0) << revoked.Describe();
  PGF_ASSERT_OK(WaitRefused("staging-1", "was revoked", 1));

  // Expired: an agent token with a one-second life, once `token list` calls it expired.
  const std::string short_lived = CreateAgentToken("dev", {"--expires-in", "1s"});
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        FleetctlResult listed = Ctl({"token", "list"});
        *note = listed.stdout_text;
        return CountOccurrences(listed.stdout_text, "expired") >= 1;
      },
      absl::Seconds(30), "the one-second token to expire"));
  ASSERT_NE(StartAgent("dev-3", "dev",
                       {absl::StrCat("--join-token-file=", WriteTokenFile("short", short_lived))}),
            nullptr);
  PGF_ASSERT_OK(WaitRefused("dev-3", "expired at"));

  // prod-1 stayed connected and on prod's config throughout.
  PGF_ASSERT_OK(WaitApplied("prod-1", "prod", prod_version));
  EXPECT_EQ(CountOccurrences(controller_->LogContents(), "agent prod-1 connected"), 1);
}

// --- Streams that never say hello --------------------------------------------------------------

// A raw AgentService stream, as any program with the generated stub can open one; it sends
// nothing. Finish() runs on a thread of its own.
class SilentStream {
 public:
  SilentStream(const std::shared_ptr<grpc::Channel>& channel, const std::string& token) {
    stub_ = pgfleet::v1::AgentService::NewStub(channel);
    // Generous: a stream the controller does not close in time fails the test with
    // DEADLINE_EXCEEDED, not a hang.
    context_.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    if (!token.empty()) context_.AddMetadata("authorization", absl::StrCat("Bearer ", token));
    stream_ = stub_->Connect(&context_);
    thread_ = std::thread([this] {
      pgfleet::v1::ControllerMessage message;
      while (stream_->Read(&message)) got_messages_++;
      status_ = stream_->Finish();
      finished_ = true;
    });
  }
  ~SilentStream() {
    context_.TryCancel();
    thread_.join();
  }
  bool finished() const { return finished_; }
  // Valid once finished().
  const grpc::Status& status() const { return status_; }
  int got_messages() const { return got_messages_; }
  void Cancel() { context_.TryCancel(); }

 private:
  std::unique_ptr<pgfleet::v1::AgentService::Stub> stub_;
  grpc::ClientContext context_;
  std::unique_ptr<
      grpc::ClientReaderWriter<pgfleet::v1::AgentMessage, pgfleet::v1::ControllerMessage>>
      stream_;
  grpc::Status status_;
  std::atomic<bool> finished_{false};
  std::atomic<int> got_messages_{0};
  std::thread thread_;
};

absl::Status WaitFinished(const SilentStream& stream, const std::string& what) {
  return PollUntil([&](std::string*) -> absl::StatusOr<bool> { return stream.finished(); },
                   absl::Seconds(60), what);
}

TEST_F(AgentAuthTest, StreamsWithoutCredentialsAreRefusedBeforeAnythingIsRead) {
  ASSERT_NO_FATAL_FAILURE(StartController({"--agent-hello-timeout=60s", "-v"}));
  auto channel = grpc::CreateChannel(controller_->address(), grpc::InsecureChannelCredentials());
  // Nothing is sent, yet the answer comes at once: the check needs no hello.
  SilentStream anonymous(channel, "");
  PGF_ASSERT_OK(WaitFinished(anonymous, "the anonymous stream to be refused"));
  EXPECT_EQ(anonymous.status().error_code(), grpc::StatusCode::UNAUTHENTICATED)
      << anonymous.status().error_message();
  EXPECT_TRUE(absl::StrContains(anonymous.status().error_message(), "join token"))
      << anonymous.status().error_message();
  SilentStream unknown(channel, "pgf_not-a-token");
  PGF_ASSERT_OK(WaitFinished(unknown, "the unknown token's stream to be refused"));
  EXPECT_EQ(unknown.status().error_code(), grpc::StatusCode::UNAUTHENTICATED)
      << unknown.status().error_message();
  EXPECT_EQ(anonymous.got_messages() + unknown.got_messages(), 0);
}

TEST_F(AgentAuthTest, PendingStreamsAreCappedAndARealAgentStillConnects) {
  // A long hello timeout, so the silent streams surely still wait while the agent connects.
  ASSERT_NO_FATAL_FAILURE(
      StartController({"--agent-hello-timeout=60s", "--max-pending-agent-streams=3", "-v"}));
  const std::string token = CreateAgentToken("dev");
  auto channel = grpc::CreateChannel(controller_->address(), grpc::InsecureChannelCredentials());
  auto admitted = [&](int count) {
    return PollUntil(
        [&](std::string*) -> absl::StatusOr<bool> {
          return CountOccurrences(controller_->LogContents(), "waiting for its hello") >= count;
        },
        absl::Seconds(30), absl::StrCat(count, " streams admitted"));
  };
  std::vector<std::unique_ptr<SilentStream>> silent;
  silent.push_back(std::make_unique<SilentStream>(channel, token));
  silent.push_back(std::make_unique<SilentStream>(channel, token));
  PGF_ASSERT_OK(admitted(2));

  // Two silent streams wait; a real agent with the same token joins meanwhile.
  ASSERT_NE(StartAgent("dev-1", "dev",
                       {absl::StrCat("--join-token-file=", WriteTokenFile("dev", token))}),
            nullptr);
  PGF_ASSERT_OK(PollUntil(
      [&](std::string*) -> absl::StatusOr<bool> {
        return absl::StrContains(agents_.at("dev-1")->LogContents(), "connected to controller");
      },
      absl::Seconds(30), "dev-1 connected"));
  PGF_ASSERT_OK(admitted(3));  // The agent's own stream was admitted too, then passed its hello.
  for (const auto& stream : silent) EXPECT_FALSE(stream->finished());

  // A third silent stream fills the cap; the fourth is refused at once.
  silent.push_back(std::make_unique<SilentStream>(channel, token));
  PGF_ASSERT_OK(admitted(4));
  SilentStream over_cap(channel, token);
  PGF_ASSERT_OK(WaitFinished(over_cap, "the stream over the cap to be refused"));
  EXPECT_EQ(over_cap.status().error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED)
      << over_cap.status().error_message();

  // A silent stream that goes away frees its place.
  silent.front()->Cancel();
  PGF_ASSERT_OK(WaitFinished(*silent.front(), "the cancelled stream to end"));
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        SilentStream probe(channel, token);
        // Admitted (still open a moment later) rather than refused at once.
        absl::Status refused =
            PollUntil([&](std::string*) -> absl::StatusOr<bool> { return probe.finished(); },
                      absl::Milliseconds(500), "probe");
        *note = refused.ok() ? probe.status().error_message() : "admitted";
        return !refused.ok();
      },
      absl::Seconds(30), "a place under the cap again"));
}

TEST_F(AgentAuthTest, SilentStreamsAreClosedAtTheHelloDeadline) {
  // --insecure-agents: even streams that need no credentials cannot wait forever.
  ASSERT_NO_FATAL_FAILURE(StartController({"--agent-hello-timeout=1s"}, /*insecure_agents=*/true));
  auto channel = grpc::CreateChannel(controller_->address(), grpc::InsecureChannelCredentials());
  std::vector<std::unique_ptr<SilentStream>> silent;
  for (int i = 0; i < 3; ++i) silent.push_back(std::make_unique<SilentStream>(channel, ""));
  // A real agent connects while they wait.
  ASSERT_NE(StartAgent("dev-1", "dev"), nullptr);
  for (const auto& stream : silent) {
    PGF_ASSERT_OK(WaitFinished(*stream, "a silent stream to be closed"));
    // Closed by the controller: CANCELLED, not the client's own 60 s DEADLINE_EXCEEDED.
    EXPECT_EQ(stream->status().error_code(), grpc::StatusCode::CANCELLED)
        << stream->status().error_code() << " " << stream->status().error_message();
    EXPECT_EQ(stream->got_messages(), 0);
  }
  PGF_ASSERT_OK(PollUntil(
      [&](std::string*) -> absl::StatusOr<bool> {
        return CountOccurrences(controller_->LogContents(), "sent no hello within 1s: closed") >= 3;
      },
      absl::Seconds(30), "the controller to log the three closes"));
  PGF_ASSERT_OK(PollUntil(
      [&](std::string*) -> absl::StatusOr<bool> {
        return absl::StrContains(agents_.at("dev-1")->LogContents(), "connected to controller");
      },
      absl::Seconds(30), "dev-1 connected"));
  // The real agent, past its hello, is not cut off by the deadline.
  EXPECT_EQ(CountOccurrences(controller_->LogContents(), "agent dev-1 connected"), 1);
  EXPECT_FALSE(absl::StrContains(controller_->LogContents(), "agent dev-1 disconnected"));
}

}  // namespace
}  // namespace pgfleet::testutil
