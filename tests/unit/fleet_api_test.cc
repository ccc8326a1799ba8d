// FleetApi against a real SQLite store and fake agent streams: roles, config validation and
// the audit log, desired-state reconciliation (ACK, NACK, reconnect, pins), command fan-out
// with answers and timeouts, and agent disconnects.

#include "controller/api/fleet_api.h"

#include <stdlib.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "controller/registry/agent_registry.h"
#include "controller/store/store.h"
#include "gmock/gmock.h"
#include "google/protobuf/descriptor.h"
#include "gtest/gtest.h"
#include "tests/testutil/status_testing.h"
#include "tests/testutil/temp_dir.h"

namespace pgfleet::controller {
namespace {

using ::testing::HasSubstr;
using ::testing::UnorderedElementsAre;

constexpr char kValidIni[] =
    "[databases]\n"
    "appdb = host=127.0.0.1 port=5432 dbname=appdb\n"
    "[pgbouncer]\n"
    "listen_port = 6432\n"
    "default_pool_size = 20\n";
constexpr char kValidIni2[] =
    "[databases]\n"
    "appdb = host=127.0.0.1 port=5432 dbname=appdb\n"
    "[pgbouncer]\n"
    "listen_port = 6432\n"
    "default_pool_size = 40\n";

// The agent end of a stream: records what the controller writes, and lets a test wait for
// it without sleeping.
class FakeAgent {
 public:
  FakeAgent(const std::string& id, const std::string& environment)
      : session_(std::make_shared<AgentSession>(
            id, environment,
            [this](const pgfleet::v1::ControllerMessage& message) {
              std::lock_guard<std::mutex> lock(mu_);
              sent_.push_back(message);
              cv_.notify_all();
              return write_ok_;
            },
            [this] {
              std::lock_guard<std::mutex> lock(mu_);
              ++cancels_;
            })) {}

  const std::shared_ptr<AgentSession>& session() const { return session_; }

  std::vector<pgfleet::v1::ControllerMessage> Sent() const {
    std::lock_guard<std::mutex> lock(mu_);
    return sent_;
  }
  std::vector<pgfleet::v1::DesiredConfig> Configs() const {
    std::vector<pgfleet::v1::DesiredConfig> configs;
    for (const auto& message : Sent()) {
      if (message.has_desired_config()) configs.push_back(message.desired_config());
    }
    return configs;
  }
  // Blocks until the controller wrote a Command; nullopt if it never does.
  std::optional<pgfleet::v1::Command> WaitForCommand() {
    std::unique_lock<std::mutex> lock(mu_);
    std::optional<pgfleet::v1::Command> command;
    cv_.wait_for(lock, std::chrono::seconds(30), [&] {
      for (const pgfleet::v1::ControllerMessage& message : sent_) {
        if (message.has_command()) {
          command = message.command();
          return true;
        }
      }
      return false;
    });
    return command;
  }
  void set_write_ok(bool ok) {
    std::lock_guard<std::mutex> lock(mu_);
    write_ok_ = ok;
  }
  int cancels() const {
    std::lock_guard<std::mutex> lock(mu_);
    return cancels_;
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<pgfleet::v1::ControllerMessage> sent_;
  bool write_ok_ = true;
  int cancels_ = 0;
  std::shared_ptr<AgentSession> session_;  // Last: its writer uses the members above.
};

const Caller kAlice{"alice", Role::kOperator};
const Caller kViewer{"victor", Role::kViewer};
const Caller kAdmin{"root", Role::kAdmin};

class FleetApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const absl::Status created = temp_dir_.Create("pgfleet_api");
    ASSERT_TRUE(created.ok()) << created;
    dir_ = temp_dir_.path();
    absl::StatusOr<std::unique_ptr<Store>> store =
        OpenSqliteStore((std::filesystem::path(dir_) / "fleet.db").string());
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(store).value();
    MakeApi({});
  }
  void TearDown() override {
    api_.reset();
    agents_.clear();
    store_.reset();
  }

  void MakeApi(FleetApiOptions options) {
    api_ = std::make_unique<FleetApi>(*store_, registry_, clock_, options);
  }

  // What the AgentService does when a stream opens: hello, session, register, reconcile.
  FakeAgent* Connect(const std::string& id, const std::string& env, uint64_t applied = 0,
                     bool reconcile = true) {
    pgfleet::v1::AgentHello hello;
    hello.set_agent_id(id);
    hello.set_environment(env);
    hello.set_agent_version("0.1.0");
    hello.set_hostname(id + ".example");
    hello.set_applied_config_version(applied);
    absl::Status recorded = api_->OnAgentHello(hello);
    EXPECT_TRUE(recorded.ok()) << recorded;
    agents_.push_back(std::make_unique<FakeAgent>(id, env));
    FakeAgent* agent = agents_.back().get();
    agent->session()->set_applied_version(applied);
    if (std::shared_ptr<AgentSession> previous = registry_.Register(agent->session())) {
      previous->Cancel();
    }
    if (reconcile) api_->Reconcile(*agent->session());
    return agent;
  }

  absl::StatusOr<pgfleet::v1::ConfigVersion> Push(const std::string& env, const std::string& ini,
                                                  const Caller& caller = kAlice) {
    pgfleet::v1::PushConfigRequest request;
    request.set_environment(env);
    request.set_ini_text(ini);
    request.set_message("test push");
    return api_->PushConfig(caller, request);
  }
  absl::StatusOr<pgfleet::v1::Environment> SetDesired(const std::string& env, uint64_t version,
                                                      const Caller& caller = kAlice) {
    pgfleet::v1::SetDesiredConfigRequest request;
    request.set_environment(env);
    request.set_version(version);
    return api_->SetDesiredConfig(caller, request);
  }
  void ConfigResult(FakeAgent* agent, uint64_t version, bool accepted,
                    const std::string& error = "") {
    pgfleet::v1::AgentMessage message;
    pgfleet::v1::ConfigResult* result = message.mutable_config_result();
    result->set_version(version);
    result->set_accepted(accepted);
    result->set_error(error);
    // A real agent reports the sha256 of the text it applied: its render (the base here).
    absl::StatusOr<ConfigVersionRow> row = store_->GetConfigVersion(version);
    result->set_sha256(
        accepted ? (row.ok() ? Sha256Hex(row->ini_text) : "sha-of-" + std::to_string(version))
                 : "");
    api_->OnAgentMessage(*agent->session(), message);
  }
  pgfleet::v1::Environment Env(const std::string& name) {
    absl::StatusOr<pgfleet::v1::ListEnvironmentsResponse> envs = api_->ListEnvironments(kViewer);
    EXPECT_TRUE(envs.ok()) << envs.status();
    if (envs.ok()) {
      for (const pgfleet::v1::Environment& env : envs->environments()) {
        if (env.name() == name) return env;
      }
    }
    ADD_FAILURE() << "no environment " << name;
    return {};
  }
  AgentRow StoredAgent(const std::string& id) {
    absl::StatusOr<AgentRow> row = store_->GetAgent(id);
    EXPECT_TRUE(row.ok()) << row.status();
    return row.ok() ? *row : AgentRow{};
  }
  static pgfleet::v1::SendCommandRequest PauseRequest(const std::string& env) {
    pgfleet::v1::SendCommandRequest request;
    request.set_environment(env);
    request.mutable_command()->mutable_pause()->set_database("appdb");
    request.mutable_command()->mutable_pause()->set_deadline_seconds(30);
    return request;
  }

  testutil::TempDir temp_dir_;  // Declared first: removed after the store closes.
  std::string dir_;
  SystemClock clock_;
  std::unique_ptr<Store> store_;
  AgentRegistry registry_;
  std::vector<std::unique_ptr<FakeAgent>> agents_;
  std::unique_ptr<FleetApi> api_;
};

// Answers the first Command each agent receives, once it has arrived (no sleeping).
class Responder {
 public:
  Responder(std::vector<FakeAgent*> agents, bool ok, const std::string& error = "")
      : thread_([agents, ok, error] {
          for (FakeAgent* agent : agents) {
            std::optional<pgfleet::v1::Command> command = agent->WaitForCommand();
            if (!command.has_value()) continue;
            pgfleet::v1::CommandResult result;
            result.set_command_id(command->command_id());
            result.set_ok(ok);
            result.set_error(error);
            agent->session()->DeliverResult(result);
          }
        }) {}
  ~Responder() { thread_.join(); }

 private:
  std::thread thread_;
};

// ---- Roles ----------------------------------------------------------------------------------

TEST_F(FleetApiTest, ViewerMayReadButNotChange) {
  FakeAgent* agent = Connect("a1", "dev");
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ConfigVersion version, Push("dev", kValidIni));
  const size_t audits_before = store_->ListAudit(100)->size();

  EXPECT_TRUE(absl::IsPermissionDenied(Push("dev", kValidIni2, kViewer).status()));
  EXPECT_TRUE(absl::IsPermissionDenied(SetDesired("dev", version.version(), kViewer).status()));
  pgfleet::v1::SendCommandRequest reload;
  reload.set_agent_id("a1");
  reload.mutable_command()->mutable_reload();
  absl::StatusOr<pgfleet::v1::SendCommandResponse> command = api_->SendCommand(kViewer, reload);
  EXPECT_TRUE(absl::IsPermissionDenied(command.status())) << command.status();
  EXPECT_THAT(std::string(command.status().message()), HasSubstr("viewer"));

  // Nothing happened: no new version, no desired version, nothing sent, nothing audited.
  PGF_ASSERT_OK_AND_ASSIGN(std::vector<ConfigVersionRow> versions,
                           store_->ListConfigVersions("dev"));
  EXPECT_EQ(versions.size(), 1u);
  PGF_ASSERT_OK_AND_ASSIGN(EnvironmentRow env, store_->GetEnvironment("dev"));
  EXPECT_EQ(env.desired_version, 0u);
  EXPECT_TRUE(agent->Sent().empty());
  EXPECT_EQ(store_->ListAudit(100)->size(), audits_before);

  // Reads are fine.
  pgfleet::v1::ListConfigsRequest list;
  list.set_environment("dev");
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ListConfigsResponse configs,
                           api_->ListConfigs(kViewer, list));
  EXPECT_EQ(configs.versions_size(), 1);
  pgfleet::v1::GetConfigRequest get;
  get.set_version(version.version());
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ConfigVersion got, api_->GetConfig(kViewer, get));
  EXPECT_EQ(got.ini_text(), kValidIni);
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ListEnvironmentsResponse envs,
                           api_->ListEnvironments(kViewer));
  EXPECT_EQ(envs.environments_size(), 1);
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ListAgentsResponse agents, api_->ListAgents(kViewer, {}));
  ASSERT_EQ(agents.agents_size(), 1);
  EXPECT_EQ(agents.agents(0).agent_id(), "a1");
  EXPECT_TRUE(agents.agents(0).connected());
  pgfleet::v1::GetAgentRequest get_agent;
  get_agent.set_agent_id("a1");
  PGF_EXPECT_OK(api_->GetAgent(kViewer, get_agent));
}

TEST_F(FleetApiTest, OperatorAndAdminMayChange) {
  FakeAgent* agent = Connect("a1", "dev");
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ConfigVersion v1, Push("dev", kValidIni, kAlice));
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ConfigVersion v2, Push("dev", kValidIni2, kAdmin));
  EXPECT_EQ(v2.author(), "root");
  PGF_ASSERT_OK(SetDesired("dev", v1.version(), kAlice));
  PGF_ASSERT_OK(SetDesired("dev", v2.version(), kAdmin));
  EXPECT_EQ(agent->Configs().size(), 2u);

  Responder responder({agent}, true);
  pgfleet::v1::SendCommandRequest reload;
  reload.set_agent_id("a1");
  reload.mutable_command()->mutable_reload();
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::SendCommandResponse response,
                           api_->SendCommand(kAlice, reload));
  ASSERT_EQ(response.outcomes_size(), 1);
  EXPECT_TRUE(response.outcomes(0).ok());
}

// ---- PushConfig -------------------------------------------------------------------------------

TEST_F(FleetApiTest, PushConfigRejectsInvalidIni) {
  absl::StatusOr<pgfleet::v1::ConfigVersion> pushed =
      Push("dev", "[pgbouncer]\ndefault_pool_size = abc\n");
  ASSERT_FALSE(pushed.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(pushed.status())) << pushed.status();
  EXPECT_THAT(std::string(pushed.status().message()), HasSubstr("default_pool_size"));
  EXPECT_THAT(std::string(pushed.status().message()), HasSubstr("abc"));
  EXPECT_TRUE(absl::IsInvalidArgument(Push("", kValidIni).status()));
  // Nothing stored or audited.
  PGF_ASSERT_OK_AND_ASSIGN(std::vector<ConfigVersionRow> versions,
                           store_->ListConfigVersions("dev"));
  EXPECT_TRUE(versions.empty());
  EXPECT_TRUE(store_->ListAudit(100)->empty());
}

TEST_F(FleetApiTest, PushConfigStoresVersionsAndAudits) {
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ConfigVersion v1, Push("dev", kValidIni));
  EXPECT_EQ(v1.version(), 1u);
  EXPECT_EQ(v1.environment(), "dev");
  EXPECT_EQ(v1.author(), "alice");
  EXPECT_EQ(v1.message(), "test push");
  EXPECT_EQ(v1.sha256(), Sha256Hex(kValidIni));
  EXPECT_EQ(v1.ini_text(), kValidIni);
  EXPECT_EQ(v1.parent_version(), 0u);

  // The same text again: the same version, not a new one.
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ConfigVersion again, Push("dev", kValidIni));
  EXPECT_EQ(again.version(), v1.version());
  EXPECT_EQ(again.sha256(), v1.sha256());

  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ConfigVersion v2, Push("dev", kValidIni2));
  EXPECT_EQ(v2.version(), 2u);
  EXPECT_EQ(v2.parent_version(), 1u);

  pgfleet::v1::ListConfigsRequest list;
  list.set_environment("dev");
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ListConfigsResponse configs,
                           api_->ListConfigs(kViewer, list));
  ASSERT_EQ(configs.versions_size(), 2);
  EXPECT_EQ(configs.versions(0).version(), 2u);  // Newest first.
  EXPECT_EQ(configs.versions(1).version(), 1u);

  PGF_ASSERT_OK_AND_ASSIGN(std::vector<AuditEntry> audit, store_->ListAudit(100));
  int pushes = 0;
  bool saw_v1 = false;
  for (const AuditEntry& entry : audit) {
    if (entry.action != "config.push") continue;
    ++pushes;
    EXPECT_EQ(entry.actor, "alice");
    EXPECT_EQ(entry.target, "dev");
    if (absl::StrContains(entry.details, "version=1 ")) saw_v1 = true;
  }
  EXPECT_EQ(pushes, 3);
  EXPECT_TRUE(saw_v1);
}

// Regression: FleetApi::PushConfig once parsed the pushed text with its %include directives
// followed on the *controller's* file system, so an operator could make the controller read any
// file it can read and echo its first line back in the parse error (pushing "%include
// /etc/passwd" answered "... expected '=' after 'root:x:0:0:root:/root:/bin/bash'"). Pushed
// configs must now be self-contained.
TEST_F(FleetApiTest, PushConfigDoesNotReadControllerFiles) {
  const std::string secret = dir_ + "/secret.txt";
  {
    std::FILE* file = std::fopen(secret.c_str(), "w");
    ASSERT_NE(file, nullptr);
    std::fputs("TOPSECRET-controller-only-line\n", file);
    std::fclose(file);
  }
  absl::StatusOr<pgfleet::v1::ConfigVersion> pushed =
      Push("dev", absl::StrCat("[pgbouncer]\n%include ", secret, "\n"));
  EXPECT_THAT(std::string(pushed.status().message()), ::testing::Not(HasSubstr("TOPSECRET")))
      << "the controller read a local file named by a pushed config and returned its content";
}

TEST_F(FleetApiTest, SetDesiredConfigValidatesVersion) {
  FakeAgent* agent = Connect("a1", "dev");
  PGF_ASSERT_OK(Push("dev", kValidIni));
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ConfigVersion staging, Push("staging", kValidIni2));
  EXPECT_TRUE(absl::IsInvalidArgument(SetDesired("dev", staging.version()).status()));
  EXPECT_TRUE(absl::IsNotFound(SetDesired("dev", 999).status()));
  EXPECT_TRUE(agent->Sent().empty());
  PGF_ASSERT_OK_AND_ASSIGN(std::vector<AuditEntry> audit, store_->ListAudit(100));
  for (const AuditEntry& entry : audit) EXPECT_NE(entry.action, "config.set_desired");
}

// ---- Reconciliation --------------------------------------------------------------------------

TEST_F(FleetApiTest, ReconcileSendsDesiredConfigOnceAndTracksAck) {
  FakeAgent* agent = Connect("a1", "dev");
  EXPECT_TRUE(agent->Sent().empty()) << "no desired version yet";
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ConfigVersion v, Push("dev", kValidIni));
  api_->Reconcile(*agent->session());
  EXPECT_TRUE(agent->Sent().empty()) << "pushed but not desired";

  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::Environment env, SetDesired("dev", v.version()));
  EXPECT_EQ(env.desired_version(), v.version());
  EXPECT_EQ(env.agents_total(), 1);
  EXPECT_EQ(env.agents_connected(), 1);
  EXPECT_EQ(env.agents_converged(), 0);

  std::vector<pgfleet::v1::DesiredConfig> configs = agent->Configs();
  ASSERT_EQ(configs.size(), 1u);
  EXPECT_EQ(configs[0].version(), v.version());
  EXPECT_EQ(configs[0].sha256(), Sha256Hex(kValidIni));
  EXPECT_EQ(configs[0].ini_text(), kValidIni);
  EXPECT_EQ(agent->session()->sent_version(), v.version());

  // Already sent: the agent is working on it.
  api_->Reconcile(*agent->session());
  EXPECT_EQ(agent->Sent().size(), 1u);

  ConfigResult(agent, v.version(), true);
  EXPECT_EQ(agent->session()->applied_version(), v.version());
  AgentRow row = StoredAgent("a1");
  EXPECT_EQ(row.applied_version, v.version());
  EXPECT_EQ(row.last_error, "");
  EXPECT_EQ(Env("dev").agents_converged(), 1);

  pgfleet::v1::GetAgentRequest get;
  get.set_agent_id("a1");
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::Agent proto, api_->GetAgent(kViewer, get));
  EXPECT_EQ(proto.applied_version(), v.version());
  EXPECT_EQ(proto.desired_version(), v.version());
  EXPECT_TRUE(proto.connected());

  api_->Reconcile(*agent->session());
  EXPECT_EQ(agent->Sent().size(), 1u) << "converged agents get nothing";
}

TEST_F(FleetApiTest, NackIsRecorded) {
  FakeAgent* agent = Connect("a1", "dev");
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ConfigVersion v1, Push("dev", kValidIni));
  PGF_ASSERT_OK(SetDesired("dev", v1.version()));
  ASSERT_EQ(agent->Configs().size(), 1u);

  ConfigResult(agent, v1.version(), false, "auth_file /etc/x: no such file");
  EXPECT_EQ(agent->session()->applied_version(), 0u);
  AgentRow row = StoredAgent("a1");
  // The stored error names the version it is about.
  EXPECT_EQ(row.last_error, absl::StrCat("v", v1.version(), ": auth_file /etc/x: no such file"));
  EXPECT_EQ(row.applied_version, 0u);
  EXPECT_EQ(Env("dev").agents_converged(), 0);
  pgfleet::v1::GetAgentRequest get;
  get.set_agent_id("a1");
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::Agent proto, api_->GetAgent(kViewer, get));
  EXPECT_EQ(proto.last_error(),
            absl::StrCat("v", v1.version(), ": auth_file /etc/x: no such file"));

  // A new desired version is sent, and its ACK clears the error.
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ConfigVersion v2, Push("dev", kValidIni2));
  PGF_ASSERT_OK(SetDesired("dev", v2.version()));
  std::vector<pgfleet::v1::DesiredConfig> configs = agent->Configs();
  ASSERT_GE(configs.size(), 2u);
  EXPECT_EQ(configs.back().version(), v2.version());
  ConfigResult(agent, v2.version(), true);
  row = StoredAgent("a1");
  EXPECT_EQ(row.last_error, "");
  EXPECT_EQ(row.applied_version, v2.version());
  EXPECT_EQ(Env("dev").agents_converged(), 1);
}

// Regression: FleetApi::OnAgentMessage once cleared the session's sent version on every
// ConfigResult, NACKs included, so the next Reconcile (any SetDesiredConfig of the environment,
// even to the same version) re-sent the config the agent had just refused, against
// AgentSession::sent_version()'s contract. Only an ACK clears it now.
TEST_F(FleetApiTest, NackedVersionIsNotResentOnReconcile) {
  FakeAgent* agent = Connect("a1", "dev");
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ConfigVersion v1, Push("dev", kValidIni));
  PGF_ASSERT_OK(SetDesired("dev", v1.version()));
  ASSERT_EQ(agent->Configs().size(), 1u);
  ConfigResult(agent, v1.version(), false, "auth_file /etc/x: no such file");

  api_->Reconcile(*agent->session());
  EXPECT_EQ(agent->Configs().size(), 1u) << "a NACKed version was re-sent on the same stream";
  PGF_ASSERT_OK(SetDesired("dev", v1.version()));
  EXPECT_EQ(agent->Configs().size(), 1u) << "a NACKed version was re-sent on the same stream";
}

TEST_F(FleetApiTest, AgentOfflineDuringChangeConvergesAfterReconnect) {
  FakeAgent* first = Connect("a1", "dev");
  api_->OnAgentGone(first->session());
  EXPECT_FALSE(StoredAgent("a1").connected);

  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ConfigVersion v, Push("dev", kValidIni));
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::Environment env, SetDesired("dev", v.version()));
  EXPECT_EQ(env.agents_connected(), 0);
  EXPECT_TRUE(first->Sent().empty()) << "the old stream is gone";

  FakeAgent* second = Connect("a1", "dev", /*applied=*/0);
  EXPECT_TRUE(StoredAgent("a1").connected);
  std::vector<pgfleet::v1::DesiredConfig> configs = second->Configs();
  ASSERT_EQ(configs.size(), 1u);
  EXPECT_EQ(configs[0].version(), v.version());
  EXPECT_EQ(configs[0].ini_text(), kValidIni);
  ConfigResult(second, v.version(), true);
  EXPECT_EQ(Env("dev").agents_converged(), 1);

  // Reconnecting while already on the desired version: nothing to send.
  api_->OnAgentGone(second->session());
  FakeAgent* third = Connect("a1", "dev", /*applied=*/v.version());
  EXPECT_TRUE(third->Configs().empty());
  EXPECT_EQ(Env("dev").agents_converged(), 1);
}

TEST_F(FleetApiTest, PinnedAgentGetsItsPinnedVersion) {
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ConfigVersion v1, Push("dev", kValidIni));
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ConfigVersion v2, Push("dev", kValidIni2));
  FakeAgent* pinned = Connect("a1", "dev", 0, /*reconcile=*/false);
  FakeAgent* floating = Connect("a2", "dev", 0, /*reconcile=*/false);
  PGF_ASSERT_OK(store_->SetAgentPin("a1", v1.version()));
  PGF_ASSERT_OK(SetDesired("dev", v2.version()));

  std::vector<pgfleet::v1::DesiredConfig> pinned_configs = pinned->Configs();
  ASSERT_EQ(pinned_configs.size(), 1u);
  EXPECT_EQ(pinned_configs[0].version(), v1.version());
  EXPECT_EQ(pinned_configs[0].ini_text(), kValidIni);
  std::vector<pgfleet::v1::DesiredConfig> floating_configs = floating->Configs();
  ASSERT_EQ(floating_configs.size(), 1u);
  EXPECT_EQ(floating_configs[0].version(), v2.version());

  pgfleet::v1::GetAgentRequest get;
  get.set_agent_id("a1");
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::Agent proto, api_->GetAgent(kViewer, get));
  EXPECT_EQ(proto.desired_version(), v1.version());

  // Converged relative to the pin.
  ConfigResult(pinned, v1.version(), true);
  ConfigResult(floating, v2.version(), true);
  EXPECT_EQ(Env("dev").agents_converged(), 2);

  // A fresh session of the pinned agent is reconciled to the pin, too.
  api_->OnAgentGone(pinned->session());
  FakeAgent* back = Connect("a1", "dev", 0);
  std::vector<pgfleet::v1::DesiredConfig> back_configs = back->Configs();
  ASSERT_EQ(back_configs.size(), 1u);
  EXPECT_EQ(back_configs[0].version(), v1.version());
}

// ---- Commands ---------------------------------------------------------------------------------

TEST_F(FleetApiTest, PauseFansOutAndCollectsAnswers) {
  FakeAgent* a1 = Connect("a1", "dev");
  FakeAgent* a2 = Connect("a2", "dev");
  FakeAgent* other = Connect("b1", "prod");

  pgfleet::v1::SendCommandResponse response;
  {
    Responder responder({a1, a2}, true);
    PGF_ASSERT_OK_AND_ASSIGN(response, api_->SendCommand(kAlice, PauseRequest("dev")));
  }
  ASSERT_EQ(response.outcomes_size(), 2);
  std::set<std::string> answered;
  for (const pgfleet::v1::CommandOutcome& outcome : response.outcomes()) {
    EXPECT_TRUE(outcome.ok()) << outcome.agent_id() << ": " << outcome.error();
    EXPECT_EQ(outcome.error(), "");
    answered.insert(outcome.agent_id());
  }
  EXPECT_THAT(answered, UnorderedElementsAre("a1", "a2"));

  std::set<uint64_t> ids;
  for (FakeAgent* agent : {a1, a2}) {
    std::vector<pgfleet::v1::ControllerMessage> sent = agent->Sent();
    ASSERT_EQ(sent.size(), 1u);
    ASSERT_TRUE(sent[0].has_command());
    const pgfleet::v1::Command& command = sent[0].command();
    ASSERT_TRUE(command.has_pause());
    EXPECT_EQ(command.pause().database(), "appdb");
    EXPECT_EQ(command.pause().deadline_seconds(), 30);
    EXPECT_NE(command.command_id(), 0u);
    ids.insert(command.command_id());
  }
  EXPECT_EQ(ids.size(), 2u) << "command ids must be distinct";
  EXPECT_TRUE(other->Sent().empty()) << "another environment's agent got the command";

  PGF_ASSERT_OK_AND_ASSIGN(std::vector<CommandRow> commands, store_->ListCommands("", 10));
  ASSERT_EQ(commands.size(), 2u);
  for (const CommandRow& row : commands) {
    EXPECT_EQ(row.kind, "pause");
    EXPECT_EQ(row.args, "db=appdb deadline=30s");
    EXPECT_EQ(row.actor, "alice");
    EXPECT_TRUE(ids.contains(row.id));
  }
  PGF_ASSERT_OK_AND_ASSIGN(std::vector<AuditEntry> audit, store_->ListAudit(10));
  ASSERT_FALSE(audit.empty());
  EXPECT_EQ(audit[0].action, "command.pause");
  EXPECT_EQ(audit[0].target, "dev");
  EXPECT_EQ(audit[0].actor, "alice");
}

TEST_F(FleetApiTest, AgentErrorIsReported) {
  FakeAgent* a1 = Connect("a1", "dev");
  pgfleet::v1::SendCommandRequest request = PauseRequest("");
  request.set_agent_id("a1");
  pgfleet::v1::SendCommandResponse response;
  {
    Responder responder({a1}, false, "database appdb is not configured");
    PGF_ASSERT_OK_AND_ASSIGN(response, api_->SendCommand(kAlice, request));
  }
  ASSERT_EQ(response.outcomes_size(), 1);
  EXPECT_FALSE(response.outcomes(0).ok());
  EXPECT_EQ(response.outcomes(0).error(), "database appdb is not configured");
}

TEST_F(FleetApiTest, SilentAgentTimesOut) {
  FleetApiOptions options;
  options.command_timeout = absl::Milliseconds(200);
  MakeApi(options);
  FakeAgent* talker = Connect("a1", "dev");
  FakeAgent* silent = Connect("a2", "dev");

  pgfleet::v1::SendCommandResponse response;
  const absl::Time start = absl::Now();
  {
    Responder responder({talker}, true);
    PGF_ASSERT_OK_AND_ASSIGN(response, api_->SendCommand(kAlice, PauseRequest("dev")));
  }
  const absl::Duration elapsed = absl::Now() - start;
  EXPECT_GE(elapsed, absl::Milliseconds(190));
  EXPECT_LT(elapsed, absl::Seconds(5)) << "the timeout was not honoured";

  ASSERT_EQ(response.outcomes_size(), 2);
  for (const pgfleet::v1::CommandOutcome& outcome : response.outcomes()) {
    if (outcome.agent_id() == "a1") {
      EXPECT_TRUE(outcome.ok()) << outcome.error();
    } else {
      EXPECT_EQ(outcome.agent_id(), "a2");
      EXPECT_FALSE(outcome.ok());
      EXPECT_THAT(outcome.error(), HasSubstr("no answer"));
    }
  }
  ASSERT_EQ(silent->Sent().size(), 1u);
  PGF_ASSERT_OK_AND_ASSIGN(std::vector<CommandRow> rows, store_->ListCommands("a2", 10));
  ASSERT_EQ(rows.size(), 1u);
  ASSERT_TRUE(rows[0].ok.has_value()) << "the timeout was not recorded";
  EXPECT_FALSE(*rows[0].ok);
  EXPECT_THAT(rows[0].error, HasSubstr("no answer"));
}

TEST_F(FleetApiTest, ClosedStreamIsReportedWithoutWaiting) {
  FakeAgent* agent = Connect("a1", "dev");
  agent->set_write_ok(false);
  pgfleet::v1::SendCommandRequest request;
  request.set_agent_id("a1");
  request.mutable_command()->mutable_reload();
  const absl::Time start = absl::Now();
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::SendCommandResponse response,
                           api_->SendCommand(kAlice, request));
  EXPECT_LT(absl::Now() - start, absl::Seconds(5)) << "waited for an answer to an unsent command";
  ASSERT_EQ(response.outcomes_size(), 1);
  EXPECT_FALSE(response.outcomes(0).ok());
  EXPECT_THAT(response.outcomes(0).error(), HasSubstr("stream closed"));
}

TEST_F(FleetApiTest, SendCommandRequestErrors) {
  Connect("a1", "dev");
  pgfleet::v1::SendCommandRequest unknown = PauseRequest("");
  unknown.set_agent_id("nobody");
  absl::StatusOr<pgfleet::v1::SendCommandResponse> response = api_->SendCommand(kAlice, unknown);
  EXPECT_TRUE(absl::IsUnavailable(response.status())) << response.status();

  pgfleet::v1::SendCommandRequest empty;
  empty.set_environment("dev");
  response = api_->SendCommand(kAlice, empty);
  EXPECT_TRUE(absl::IsInvalidArgument(response.status())) << response.status();

  pgfleet::v1::SendCommandRequest no_target = PauseRequest("");
  response = api_->SendCommand(kAlice, no_target);
  EXPECT_TRUE(absl::IsInvalidArgument(response.status())) << response.status();

  PGF_ASSERT_OK_AND_ASSIGN(std::vector<CommandRow> commands, store_->ListCommands("", 10));
  EXPECT_TRUE(commands.empty());
  EXPECT_TRUE(agents_[0]->Sent().empty());
}

// ---- Agent lifecycle ---------------------------------------------------------------------------

TEST_F(FleetApiTest, OnAgentGoneMarksDisconnected) {
  FakeAgent* agent = Connect("a1", "dev");
  EXPECT_TRUE(StoredAgent("a1").connected);
  EXPECT_EQ(Env("dev").agents_connected(), 1);
  api_->OnAgentGone(agent->session());
  EXPECT_FALSE(StoredAgent("a1").connected);
  EXPECT_EQ(registry_.Find("a1"), nullptr);
  EXPECT_EQ(Env("dev").agents_connected(), 0);
  EXPECT_EQ(Env("dev").agents_total(), 1);
  pgfleet::v1::ControllerMessage message;
  message.mutable_hello_ack();
  EXPECT_FALSE(agent->session()->Send(message)) << "a closed session still writes";
  EXPECT_TRUE(agent->Sent().empty());
}

TEST_F(FleetApiTest, OnAgentGoneOfReplacedSessionKeepsTheNewOne) {
  FakeAgent* old_stream = Connect("a1", "dev");
  FakeAgent* new_stream = Connect("a1", "dev");
  EXPECT_EQ(old_stream->cancels(), 1) << "the replaced stream is cancelled";
  EXPECT_EQ(new_stream->cancels(), 0);
  api_->OnAgentGone(old_stream->session());
  EXPECT_EQ(registry_.Find("a1"), new_stream->session());
  EXPECT_TRUE(StoredAgent("a1").connected);
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ListAgentsResponse agents, api_->ListAgents(kViewer, {}));
  ASSERT_EQ(agents.agents_size(), 1);
  EXPECT_TRUE(agents.agents(0).connected());

  // The new stream still works and gets what is desired.
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ConfigVersion v, Push("dev", kValidIni));
  PGF_ASSERT_OK(SetDesired("dev", v.version()));
  EXPECT_EQ(new_stream->Configs().size(), 1u);
  EXPECT_TRUE(old_stream->Configs().empty());

  api_->OnAgentGone(new_stream->session());
  EXPECT_FALSE(StoredAgent("a1").connected);
  EXPECT_EQ(registry_.Find("a1"), nullptr);
}

TEST_F(FleetApiTest, MetricsReachTheAgentView) {
  FakeAgent* agent = Connect("a1", "dev");
  pgfleet::v1::AgentMessage message;
  message.mutable_metrics()->set_client_count(7);
  message.mutable_metrics()->set_timestamp_unix_ms(UnixMillis(clock_.Now()));
  api_->OnAgentMessage(*agent->session(), message);
  pgfleet::v1::GetAgentRequest get;
  get.set_agent_id("a1");
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::Agent proto, api_->GetAgent(kViewer, get));
  EXPECT_EQ(proto.last_metrics().client_count(), 7);
  PGF_ASSERT_OK_AND_ASSIGN(std::vector<MetricsSample> samples, store_->ListMetrics("a1", 0));
  EXPECT_EQ(samples.size(), 1u);
}

// fleetctl's table asks for AGENT_VIEW_BASIC: each agent with its metrics' scalars and none of
// its lists; an unset view is the full one, as before the field existed.
TEST_F(FleetApiTest, BasicViewKeepsEveryMetricsScalarAndDropsTheLists) {
  FakeAgent* agent = Connect("a1", "dev");
  pgfleet::v1::AgentMessage message;
  pgfleet::v1::MetricsReport* metrics = message.mutable_metrics();
  // Every scalar field set through the descriptor, so a field added to MetricsReport later is
  // checked too.
  const google::protobuf::Descriptor* descriptor = metrics->GetDescriptor();
  const google::protobuf::Reflection* reflection = metrics->GetReflection();
  std::vector<const google::protobuf::FieldDescriptor*> scalars;
  for (int i = 0; i < descriptor->field_count(); ++i) {
    const google::protobuf::FieldDescriptor* field = descriptor->field(i);
    if (field->is_repeated()) continue;
    ASSERT_NE(field->cpp_type(), google::protobuf::FieldDescriptor::CPPTYPE_MESSAGE)
        << field->name() << ": BASIC's copy knows scalars only";
    scalars.push_back(field);
    switch (field->cpp_type()) {
      case google::protobuf::FieldDescriptor::CPPTYPE_INT32:
        reflection->SetInt32(metrics, field, 7 + i);
        break;
      case google::protobuf::FieldDescriptor::CPPTYPE_INT64:
        reflection->SetInt64(metrics, field, UnixMillis(clock_.Now()));
        break;
      case google::protobuf::FieldDescriptor::CPPTYPE_BOOL:
        reflection->SetBool(metrics, field, true);
        break;
      case google::protobuf::FieldDescriptor::CPPTYPE_STRING:
        reflection->SetString(metrics, field, field->name() + "-value");
        break;
      default:
        FAIL() << field->name() << ": a scalar type this test does not set yet";
    }
  }
  metrics->add_pools()->set_database("app");
  metrics->add_databases()->set_database("app");
  api_->OnAgentMessage(*agent->session(), message);

  pgfleet::v1::ListAgentsRequest request;
  request.set_view(pgfleet::v1::AGENT_VIEW_BASIC);
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ListAgentsResponse basic,
                           api_->ListAgents(kViewer, request));
  ASSERT_EQ(basic.agents_size(), 1);
  const pgfleet::v1::MetricsReport& kept = basic.agents(0).last_metrics();
  for (const google::protobuf::FieldDescriptor* field : scalars) {
    EXPECT_TRUE(reflection->HasField(kept, field)) << field->name() << " is not in the BASIC view";
  }
  EXPECT_EQ(kept.pools_size(), 0);
  EXPECT_EQ(kept.databases_size(), 0);
  EXPECT_EQ(basic.agents(0).agent_id(), "a1");
  EXPECT_TRUE(basic.agents(0).connected());

  for (pgfleet::v1::AgentView view :
       {pgfleet::v1::AGENT_VIEW_UNSPECIFIED, pgfleet::v1::AGENT_VIEW_FULL}) {
    request.set_view(view);
    PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ListAgentsResponse full,
                             api_->ListAgents(kViewer, request));
    ASSERT_EQ(full.agents_size(), 1);
    EXPECT_EQ(full.agents(0).last_metrics().SerializeAsString(), metrics->SerializeAsString())
        << pgfleet::v1::AgentView_Name(view);
  }
}

}  // namespace
}  // namespace pgfleet::controller
