// Restart rollouts (fleetctl agents restart) in the rollout engine, against the fake store,
// agents and clock: a wave's agents are sent a RestartCommand and the wave waits until each is
// back as a new process that reported metrics; then bake and the health gates; a failed
// hand-over, a timeout or a gate stops it naming the agent; --only-outdated and --version pick
// agents by their binary on disk; a controller restart resumes from the store.
#include <memory>
#include <string>
#include <vector>

#include "controller/rollout/rollout_engine.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testutil/status_testing.h"
#include "tests/unit/engine_fakes.h"

namespace pgfleet::controller {
namespace {

using ::testing::ElementsAre;
using testing::FakeAgents;
using testing::FakeClock;
using testing::FakeStore;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

class RestartRolloutTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_.AddEnvironment("prod");
    v1_ = store_.AddVersion("prod", "[databases]\n[pgbouncer]\nlisten_port = 6432\n");
    store_.SetDesired("prod", v1_);
    int pid = 100;
    for (const char* id : {"a1", "a2", "a3", "a4"}) {
      store_.AddAgent(id, "prod");
      agents_.Connect(id, "prod", v1_);
      agents_.agent(id).pid = pid++;
      agents_.NewMetrics(id);
      agents_.agent(id).on_disk_version = "0.1.0";
      agents_.agent(id).on_disk_build_id = "aaaaaaaaaaaaaaaa";
    }
    engine_ = std::make_unique<RolloutEngine>(store_, agents_, clock_);
  }

  RolloutSpec Spec(std::vector<std::string> waves = {"1", "100%"}) {
    RolloutSpec spec;
    spec.kind = RolloutKind::kRestart;
    spec.environment = "prod";
    spec.waves = std::move(waves);
    spec.bake = absl::Seconds(10);
    return spec;
  }
  uint64_t Start(const RolloutSpec& spec) {
    absl::StatusOr<StartedRollout> started = engine_->Start(spec, "alice");
    PGF_EXPECT_OK(started.status());
    return started.ok() ? started->rollout.id : 0;
  }
  void Tick() { engine_->Tick(clock_.Now()); }
  RolloutRow Rollout(uint64_t id) { return *store_.GetRollout(id); }
  RolloutAgentRow Member(uint64_t id, const std::string& agent) {
    absl::StatusOr<std::vector<RolloutAgentRow>> rows = store_.ListRolloutAgents(id);
    EXPECT_TRUE(rows.ok());
    if (!rows.ok()) return {};
    for (const RolloutAgentRow& row : *rows) {
      if (row.agent_id == agent) return row;
    }
    ADD_FAILURE() << agent << " is not in rollout " << id;
    return {};
  }
  // The RestartCommand ids sent to `agent`, oldest first.
  std::vector<uint64_t> RestartsTo(const std::string& agent) const {
    std::vector<uint64_t> ids;
    for (const auto& record : agents_.messages) {
      if (record.agent_id == agent && record.message.command().has_restart()) {
        ids.push_back(record.message.command().command_id());
      }
    }
    return ids;
  }
  // The agent's new process connects (its hello names the command) and reports metrics.
  void ComesBack(const std::string& agent, uint64_t command_id) {
    LiveAgent& live = agents_.agent(agent);
    live.pid += 1000;
    live.handover_command_id = command_id;
    live.metrics = std::make_shared<pgfleet::v1::MetricsReport>();
  }

  FakeStore store_;
  FakeAgents agents_;
  FakeClock clock_;
  std::unique_ptr<RolloutEngine> engine_;
  uint64_t v1_ = 0;
};

TEST_F(RestartRolloutTest, WavesWaitForEachAgentToComeBackAsANewProcess) {
  const uint64_t id = Start(Spec());
  EXPECT_EQ(Rollout(id).kind, RolloutKind::kRestart);
  ASSERT_EQ(RestartsTo("a1").size(), 1u);
  EXPECT_THAT(RestartsTo("a2"), IsEmpty());
  const uint64_t command = RestartsTo("a1")[0];
  EXPECT_EQ(Member(id, "a1").command_id, command);
  EXPECT_EQ(Member(id, "a1").old_pid, 100);

  Tick();
  EXPECT_EQ(Rollout(id).bake_started_unix_ms, 0) << "the old process still runs";
  // The new process connected but has not reported metrics yet: not healthy yet.
  agents_.agent("a1").pid = 555;
  agents_.agent("a1").handover_command_id = command;
  agents_.agent("a1").metrics.reset();
  Tick();
  EXPECT_EQ(Rollout(id).bake_started_unix_ms, 0);
  agents_.NewMetrics("a1");
  Tick();
  EXPECT_EQ(Member(id, "a1").state, RolloutAgentState::kApplied);
  EXPECT_EQ(Member(id, "a1").new_pid, 555);
  EXPECT_NE(Rollout(id).bake_started_unix_ms, 0);

  clock_.Advance(absl::Seconds(10));
  Tick();
  EXPECT_EQ(Rollout(id).current_wave, 1);
  for (const char* agent : {"a2", "a3", "a4"}) {
    ASSERT_EQ(RestartsTo(agent).size(), 1u) << agent;
    ComesBack(agent, RestartsTo(agent)[0]);
  }
  Tick();  // Back: bake.
  clock_.Advance(absl::Seconds(10));
  Tick();
  EXPECT_EQ(Rollout(id).state, RolloutState::kSucceeded);
  // A restart moves no config: no offers, no pins, the same desired version.
  EXPECT_THAT(agents_.offers, IsEmpty());
  EXPECT_EQ(store_.PinOf("a1"), std::nullopt);
  EXPECT_EQ(store_.GetEnvironment("prod")->desired_version, v1_);
  EXPECT_THAT(RestartsTo("a1"), ElementsAre(command)) << "each agent is restarted once";
  EXPECT_THAT(store_.audit_actions, ElementsAre("rollout.start", "rollout.succeeded"));
}

TEST_F(RestartRolloutTest, FailedHandOverStopsTheRolloutNamingTheAgent) {
  const uint64_t id = Start(Spec());
  const uint64_t command = RestartsTo("a1")[0];
  engine_->OnCommandResult("a1", command + 99, false, "another command");  // Not ours.
  Tick();
  EXPECT_EQ(Rollout(id).state, RolloutState::kRunning);
  engine_->OnCommandResult("a1", command, false,
                           "the new process (pid 7) ended before it was ready (exit status 1)");
  Tick();
  const RolloutRow failed = Rollout(id);
  EXPECT_EQ(failed.state, RolloutState::kFailed);
  EXPECT_EQ(failed.failed_agent, "a1");
  EXPECT_THAT(failed.reason, HasSubstr("agent a1 could not restart"));
  EXPECT_THAT(failed.reason, HasSubstr("exit status 1"));
  EXPECT_EQ(Member(id, "a1").state, RolloutAgentState::kFailed);
  EXPECT_EQ(Member(id, "a2").state, RolloutAgentState::kWaiting);
  EXPECT_THAT(RestartsTo("a2"), IsEmpty()) << "later waves are never restarted";
  EXPECT_THAT(agents_.offers, IsEmpty());
}

TEST_F(RestartRolloutTest, AgentNotBackInTimeFailsTheRollout) {
  const uint64_t id = Start(Spec());
  clock_.Advance(kRolloutApplyTimeout + absl::Milliseconds(1));
  Tick();
  EXPECT_EQ(Rollout(id).state, RolloutState::kFailed);
  EXPECT_EQ(Rollout(id).failed_agent, "a1");
  EXPECT_THAT(Rollout(id).reason, HasSubstr("did not come back as a new process"));
}

TEST_F(RestartRolloutTest, HealthGateAfterTheRestartStopsTheRollout) {
  const uint64_t id = Start(Spec());
  ComesBack("a1", RestartsTo("a1")[0]);
  Tick();  // Bake starts with the new process's baseline.
  pgfleet::v1::PoolMetrics* pool = agents_.NewMetrics("a1").add_pools();
  pool->set_database("appdb");
  pool->set_cl_waiting(11);
  clock_.Advance(absl::Seconds(1));
  Tick();
  EXPECT_EQ(Rollout(id).state, RolloutState::kFailed);
  EXPECT_EQ(Rollout(id).failed_agent, "a1");
  EXPECT_THAT(Rollout(id).reason, HasSubstr("health gate failed on a1"));
  EXPECT_THAT(RestartsTo("a2"), IsEmpty());
}

TEST_F(RestartRolloutTest, OfflineAgentIsRestartedWhenItIsBack) {
  agents_.Disconnect("a1");
  const uint64_t id = Start(Spec());
  EXPECT_THAT(RestartsTo("a1"), IsEmpty());
  Tick();
  EXPECT_THAT(Rollout(id).reason, HasSubstr("holding"));
  agents_.Connect("a1", "prod", v1_);
  agents_.agent("a1").pid = 300;
  agents_.NewMetrics("a1");
  Tick();
  ASSERT_EQ(RestartsTo("a1").size(), 1u);
  EXPECT_EQ(Member(id, "a1").old_pid, 300);
}

TEST_F(RestartRolloutTest, ControllerRestartResumesFromTheStore) {
  const uint64_t id = Start(Spec());
  const uint64_t command = RestartsTo("a1")[0];
  engine_ = std::make_unique<RolloutEngine>(store_, agents_, clock_);  // A new controller.
  ComesBack("a1", command);
  Tick();
  EXPECT_EQ(Member(id, "a1").state, RolloutAgentState::kApplied);
  EXPECT_THAT(RestartsTo("a1"), ElementsAre(command)) << "not restarted twice";
}

TEST_F(RestartRolloutTest, OnlyOutdatedAndVersionPickAgentsByTheirBinaryOnDisk) {
  RolloutSpec outdated = Spec({"100%"});
  outdated.only_outdated = true;
  absl::StatusOr<StartedRollout> none = engine_->Start(outdated, "alice");
  EXPECT_EQ(none.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(none.status().message(), HasSubstr("nothing to restart"));

  agents_.agent("a2").binary_outdated = true;
  agents_.agent("a2").on_disk_version = "0.2.0";
  agents_.agent("a2").on_disk_build_id = "bbbbbbbbbbbbbbbb";
  agents_.agent("a3").on_disk_version = "0.2.0";  // Same version, not outdated (odd, but said).
  RolloutSpec wrong_version = outdated;
  wrong_version.binary_version = "0.3.0";
  EXPECT_EQ(engine_->Start(wrong_version, "alice").status().code(),
            absl::StatusCode::kFailedPrecondition);
  RolloutSpec both = outdated;
  both.binary_version = "0.2.0";
  const uint64_t id = Start(both);
  absl::StatusOr<std::vector<RolloutAgentRow>> members = store_.ListRolloutAgents(id);
  PGF_ASSERT_OK(members.status());
  ASSERT_EQ(members->size(), 1u);
  EXPECT_EQ(members->at(0).agent_id, "a2");
  EXPECT_TRUE(Rollout(id).only_outdated);
  EXPECT_EQ(Rollout(id).binary_version, "0.2.0");
  EXPECT_EQ(RestartsTo("a2").size(), 1u);
  EXPECT_THAT(RestartsTo("a3"), IsEmpty());

  LiveAgent live;
  live.on_disk_version = "0.2.0";
  live.on_disk_build_id = "sha256:0123456789abcdef";
  EXPECT_TRUE(OnDiskBinaryIs(live, "0.2.0"));
  EXPECT_TRUE(OnDiskBinaryIs(live, "01234567"));
  EXPECT_TRUE(OnDiskBinaryIs(live, "sha256:0123456789ab"));
  EXPECT_FALSE(OnDiskBinaryIs(live, "0123"));  // Too short to name a build.
  EXPECT_FALSE(OnDiskBinaryIs(live, "0.1.0"));
}

TEST_F(RestartRolloutTest, NoDesiredVersionIsRefused) {
  store_.AddEnvironment("bare");
  store_.AddAgent("b1", "bare");
  RolloutSpec spec = Spec();
  spec.environment = "bare";
  absl::StatusOr<StartedRollout> started = engine_->Start(spec, "alice");
  EXPECT_EQ(started.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(started.status().message(), HasSubstr("no desired version"));
}

}  // namespace
}  // namespace pgfleet::controller
