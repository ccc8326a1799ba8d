// The rollout and maintenance-window parts of the store (sqlite_rollout_store.cc,
// sqlite_maintenance_store.cc) on both of its databases: what the engines resume from after a
// restart, and what a second controller on the same PostgreSQL database reads.

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "tests/testutil/status_testing.h"
#include "tests/unit/store_backends.h"

namespace pgfleet::controller {
namespace {

constexpr int64_t kT0 = 1'700'000'040'000;

class StoreRolloutsTest : public StoreBackendTest {
 protected:
  void SetUp() override {
    StoreBackendTest::SetUp();
    ASSERT_NE(store_, nullptr);
    PGF_ASSERT_OK_AND_ASSIGN(v1_, store_->AddConfigVersion("prod", "one", "alice", "", kT0));
    PGF_ASSERT_OK_AND_ASSIGN(v2_, store_->AddConfigVersion("prod", "two", "alice", "", kT0));
    for (const char* id : {"a1", "a2", "a3"}) {
      AgentRow hello;
      hello.agent_id = id;
      hello.environment = "prod";
      hello.agent_version = "0.1.0";
      hello.hostname = id;
      PGF_ASSERT_OK(store_->RecordAgentHello(hello, kT0));
    }
  }
  RolloutRow Rollout() {
    RolloutRow rollout;
    rollout.environment = "prod";
    rollout.from_version = v1_.version;
    rollout.to_version = v2_.version;
    rollout.waves = {"1", "100%"};
    rollout.bake_ms = 1000;
    rollout.created_by = "alice";
    rollout.created_unix_ms = kT0;
    rollout.selector = "zone=a";
    return rollout;
  }

  ConfigVersionRow v1_;
  ConfigVersionRow v2_;
};
INSTANTIATE_TEST_SUITE_P(Backends, StoreRolloutsTest, ::testing::ValuesIn(AllStoreBackends()),
                         StoreBackendName);

TEST_P(StoreRolloutsTest, RolloutsAndTheirAgentsRoundTrip) {
  std::vector<RolloutAgentRow> agents(3);
  agents[0].agent_id = "a1";
  agents[0].wave = 0;
  agents[0].previous_pin = v1_.version;
  agents[1].agent_id = "a2";
  agents[1].wave = 1;
  agents[2].agent_id = "a3";
  agents[2].wave = 1;
  agents[2].old_pid = 4242;
  PGF_ASSERT_OK_AND_ASSIGN(RolloutRow created, store_->CreateRollout(Rollout(), agents));
  EXPECT_GT(created.id, 0u);

  // One active rollout per environment, enforced by the database's partial unique index.
  absl::StatusOr<RolloutRow> second = store_->CreateRollout(Rollout(), {});
  EXPECT_TRUE(absl::IsFailedPrecondition(second.status())) << second.status();

  created.state = RolloutState::kPaused;
  created.current_wave = 1;
  created.reason = "operator paused";
  PGF_ASSERT_OK(store_->UpdateRollout(created));
  RolloutAgentRow applied = agents[0];
  applied.rollout_id = created.id;
  applied.state = RolloutAgentState::kApplied;
  applied.command_id = 7;
  applied.new_pid = 4343;
  PGF_ASSERT_OK(store_->UpdateRolloutAgent(applied));

  Reopen();  // What a restarted (or another) controller reads.
  PGF_ASSERT_OK_AND_ASSIGN(RolloutRow got, store_->GetRollout(created.id));
  EXPECT_EQ(got.state, RolloutState::kPaused);
  EXPECT_EQ(got.current_wave, 1);
  EXPECT_EQ(got.reason, "operator paused");
  EXPECT_EQ(got.waves, (std::vector<std::string>{"1", "100%"}));
  EXPECT_EQ(got.selector, "zone=a");
  EXPECT_EQ(got.from_version, v1_.version);
  PGF_ASSERT_OK_AND_ASSIGN(std::vector<RolloutRow> active, store_->ListRollouts("prod", true));
  ASSERT_EQ(active.size(), 1u);
  PGF_ASSERT_OK_AND_ASSIGN(std::vector<RolloutAgentRow> rows,
                           store_->ListRolloutAgents(created.id));
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0].agent_id, "a1");
  EXPECT_EQ(rows[0].state, RolloutAgentState::kApplied);
  EXPECT_EQ(rows[0].previous_pin, v1_.version);
  EXPECT_EQ(rows[0].command_id, 7u);
  EXPECT_EQ(rows[0].new_pid, 4343);
  EXPECT_EQ(rows[2].old_pid, 4242);
  EXPECT_FALSE(rows[1].previous_pin.has_value());
  EXPECT_TRUE(absl::IsNotFound(store_->GetRollout(created.id + 100).status()));

  PGF_ASSERT_OK_AND_ASSIGN(bool succeeded, store_->HasSucceededRollout("prod", v2_.sha256));
  EXPECT_FALSE(succeeded);
  got.state = RolloutState::kSucceeded;
  got.finished_unix_ms = kT0 + 5;
  PGF_ASSERT_OK(store_->UpdateRollout(got));
  PGF_ASSERT_OK_AND_ASSIGN(succeeded, store_->HasSucceededRollout("prod", v2_.sha256));
  EXPECT_TRUE(succeeded);
  PGF_ASSERT_OK_AND_ASSIGN(active, store_->ListRollouts("prod", true));
  EXPECT_TRUE(active.empty());
  // The environment is free for the next one.
  PGF_ASSERT_OK(store_->CreateRollout(Rollout(), {}).status());
}

TEST_P(StoreRolloutsTest, Upstreams) {
  PGF_ASSERT_OK(store_->EnsureEnvironment("staging", kT0));
  PGF_ASSERT_OK(store_->SetEnvironmentUpstream("prod", "staging"));
  PGF_ASSERT_OK_AND_ASSIGN(std::string upstream, store_->GetEnvironmentUpstream("prod"));
  EXPECT_EQ(upstream, "staging");
  PGF_ASSERT_OK(store_->SetEnvironmentUpstream("prod", ""));
  PGF_ASSERT_OK_AND_ASSIGN(upstream, store_->GetEnvironmentUpstream("prod"));
  EXPECT_EQ(upstream, "");
}

TEST_P(StoreRolloutsTest, WindowsRoundTrip) {
  WindowRow window;
  window.environment = "prod";
  window.database = "appdb";
  window.starts_unix_ms = kT0 + 10'000;
  window.ends_unix_ms = kT0 + 20'000;
  window.created_by = "alice";
  window.created_unix_ms = kT0;
  window.skip_agents = {"a3"};
  window.selector = "zone=a";
  PGF_ASSERT_OK_AND_ASSIGN(WindowRow created, store_->CreateWindow(window));
  EXPECT_GT(created.id, 0u);
  // Overlapping windows whose selectors may share agents are refused.
  window.selector = "";
  EXPECT_FALSE(store_->CreateWindow(window).ok());

  created.state = WindowState::kPaused;
  created.pause_sent_unix_ms = kT0 + 10'001;
  created.resumed_agents = {"a2"};
  PGF_ASSERT_OK(store_->UpdateWindow(created));
  Reopen();
  PGF_ASSERT_OK_AND_ASSIGN(WindowRow got, store_->GetWindow(created.id));
  EXPECT_EQ(got.state, WindowState::kPaused);
  EXPECT_EQ(got.pause_sent_unix_ms, kT0 + 10'001);
  EXPECT_EQ(got.skip_agents, std::vector<std::string>{"a3"});
  EXPECT_EQ(got.resumed_agents, std::vector<std::string>{"a2"});
  EXPECT_EQ(got.selector, "zone=a");
  PGF_ASSERT_OK_AND_ASSIGN(std::vector<WindowRow> open, store_->ListWindows("prod", true));
  ASSERT_EQ(open.size(), 1u);
  got.state = WindowState::kCompleted;
  PGF_ASSERT_OK(store_->UpdateWindow(got));
  PGF_ASSERT_OK_AND_ASSIGN(open, store_->ListWindows("prod", true));
  EXPECT_TRUE(open.empty());
  PGF_ASSERT_OK_AND_ASSIGN(std::vector<WindowRow> all, store_->ListWindows("", false));
  EXPECT_EQ(all.size(), 1u);
  EXPECT_TRUE(absl::IsNotFound(store_->GetWindow(created.id + 100).status()));
}

TEST_P(StoreRolloutsTest, LabelOverridesSurviveAReopen) {
  PGF_ASSERT_OK(store_->SetAgentLabelOverrides("a1", {{"zone", "b"}, {"rack", std::nullopt}}));
  Reopen();
  PGF_ASSERT_OK_AND_ASSIGN(AgentRow agent, store_->GetAgent("a1"));
  ASSERT_EQ(agent.label_overrides.size(), 2u);
  EXPECT_EQ(agent.label_overrides["zone"], "b");
  EXPECT_FALSE(agent.label_overrides["rack"].has_value());
  EXPECT_EQ(agent.labels.at("zone"), "b");
  EXPECT_TRUE(absl::IsNotFound(store_->SetAgentLabelOverrides("nobody", {})));
}

}  // namespace
}  // namespace pgfleet::controller
