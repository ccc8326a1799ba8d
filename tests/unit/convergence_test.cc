// Convergence judges the render, not only the version (issue 18): after an agent is relabelled
// its desired render changes at the same version, and until it applies the new render neither
// DescribeEnvironment (agents_converged) nor `fleetctl config apply --wait` counts it converged.
#include <filesystem>
#include <memory>
#include <string>

#include "cli/commands/commands.h"
#include "controller/api/fleet_api.h"
#include "controller/registry/agent_registry.h"
#include "controller/store/store.h"
#include "gtest/gtest.h"
#include "tests/testutil/status_testing.h"
#include "tests/testutil/temp_dir.h"

namespace pgfleet::controller {
namespace {

constexpr char kIni[] =
    "[databases]\nappdb = host=127.0.0.1 port=5432 dbname=appdb\n"
    "[pgbouncer]\nlisten_port = 6432\ndefault_pool_size = 20\n";

const Caller kOperator{"olga", Role::kOperator};

class ConvergenceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PGF_ASSERT_OK(dir_.Create("pgfleet_converge"));
    PGF_ASSERT_OK_AND_ASSIGN(store_, OpenSqliteStore(dir_.path() + "/fleet.db"));
    api_ = std::make_unique<FleetApi>(*store_, registry_, clock_);
    session_ = std::make_shared<AgentSession>(
        "a1", "prod", [](const pgfleet::v1::ControllerMessage&) { return true; }, [] {});
  }
  void TearDown() override {
    api_.reset();
    session_.reset();
    store_.reset();
  }

  // The agent reports having applied `version` as rendered to `sha256`.
  void Ack(uint64_t version, const std::string& sha256) {
    pgfleet::v1::AgentMessage message;
    pgfleet::v1::ConfigResult* result = message.mutable_config_result();
    result->set_version(version);
    result->set_accepted(true);
    result->set_sha256(sha256);
    api_->OnAgentMessage(*session_, message);
  }
  int Converged() {
    absl::StatusOr<pgfleet::v1::ListEnvironmentsResponse> envs = api_->ListEnvironments(kOperator);
    EXPECT_TRUE(envs.ok()) << envs.status();
    return envs.ok() && envs->environments_size() == 1 ? envs->environments(0).agents_converged()
                                                       : -1;
  }
  pgfleet::v1::Agent Agent() {
    pgfleet::v1::GetAgentRequest request;
    request.set_agent_id("a1");
    absl::StatusOr<pgfleet::v1::Agent> agent = api_->GetAgent(kOperator, request);
    EXPECT_TRUE(agent.ok()) << agent.status();
    return agent.ok() ? *agent : pgfleet::v1::Agent{};
  }

  testutil::TempDir dir_;
  AgentRegistry registry_;
  SystemClock clock_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<FleetApi> api_;
  std::shared_ptr<AgentSession> session_;
};

TEST_F(ConvergenceTest, ARelabelledAgentIsNotConvergedUntilItAppliesTheNewRender) {
  pgfleet::v1::AgentHello hello;
  hello.set_agent_id("a1");
  hello.set_environment("prod");
  (*hello.mutable_labels())["size"] = "small";
  PGF_ASSERT_OK(api_->OnAgentHello(hello));
  registry_.Register(session_);
  // Large agents get a bigger pool.
  pgfleet::v1::PushConfigRequest push;
  push.set_environment("prod");
  push.set_ini_text(kIni);
  pgfleet::v1::ConfigOverlay* overlay = push.add_overlays();
  overlay->set_name("large");
  overlay->set_selector("size=large");
  pgfleet::v1::OverlaySetting* setting = overlay->add_set();
  setting->set_section("pgbouncer");
  setting->set_key("default_pool_size");
  setting->set_value("80");
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ConfigVersion v1, api_->PushConfig(kOperator, push));
  pgfleet::v1::SetDesiredConfigRequest desired;
  desired.set_environment("prod");
  desired.set_version(v1.version());
  PGF_ASSERT_OK(api_->SetDesiredConfig(kOperator, desired).status());

  const std::string small_render = Agent().desired_sha256();
  ASSERT_FALSE(small_render.empty());
  Ack(v1.version(), small_render);
  EXPECT_EQ(Converged(), 1);
  EXPECT_TRUE(cli::AgentConverged(Agent(), v1.version()));

  // Relabelled: same version, another render, not applied yet.
  pgfleet::v1::SetAgentLabelsRequest label;
  label.set_agent_id("a1");
  (*label.mutable_set())["size"] = "large";
  label.set_overwrite(true);
  PGF_ASSERT_OK(api_->SetAgentLabels(kOperator, label).status());
  const std::string large_render = Agent().desired_sha256();
  ASSERT_NE(large_render, small_render);
  EXPECT_EQ(Agent().applied_version(), v1.version());
  EXPECT_EQ(Converged(), 0);
  EXPECT_FALSE(cli::AgentConverged(Agent(), v1.version()));

  // Applied: converged again.
  Ack(v1.version(), large_render);
  EXPECT_EQ(Converged(), 1);
  EXPECT_TRUE(cli::AgentConverged(Agent(), v1.version()));
}

TEST(AgentConvergedTest, VersionFirstThenTheRenderWhereKnown) {
  pgfleet::v1::Agent agent;
  agent.set_applied_version(3);
  agent.set_desired_version(3);
  EXPECT_TRUE(cli::AgentConverged(agent, 3));  // No sha256 known (an older agent).
  EXPECT_FALSE(cli::AgentConverged(agent, 4));
  agent.set_applied_sha256("aaa");
  agent.set_desired_sha256("bbb");
  EXPECT_FALSE(cli::AgentConverged(agent, 3));
  agent.set_desired_sha256("aaa");
  EXPECT_TRUE(cli::AgentConverged(agent, 3));
}

}  // namespace
}  // namespace pgfleet::controller
