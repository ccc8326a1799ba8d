// The rollout engine against a fake store, fake agents and a fake clock: every transition
// (waves, bake, health gates, NACK, apply timeout, abort, pause/resume, holding for offline
// agents and maintenance windows, completion, a controller restart mid-wave), in microseconds.
#include "controller/rollout/rollout_engine.h"

#include <memory>
#include <string>
#include <vector>

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

constexpr char kIniV1[] =
    "[databases]\n"
    "appdb = host=127.0.0.1 port=5432 dbname=appdb\n"
    "[pgbouncer]\n"
    "listen_port = 6432\n"
    "default_pool_size = 20\n";
constexpr char kIniV2[] =
    "[databases]\n"
    "appdb = host=127.0.0.1 port=5432 dbname=appdb\n"
    "[pgbouncer]\n"
    "listen_port = 6432\n"
    "default_pool_size = 30\n";

class RolloutEngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_.AddEnvironment("prod");
    v1_ = store_.AddVersion("prod", kIniV1);
    v2_ = store_.AddVersion("prod", kIniV2);
    store_.SetDesired("prod", v1_);
    for (const char* id : {"a1", "a2", "a3", "a4"}) {
      store_.AddAgent(id, "prod");
      agents_.Connect(id, "prod", v1_);
    }
    engine_ = std::make_unique<RolloutEngine>(store_, agents_, clock_);
  }

  RolloutSpec Spec(std::vector<std::string> waves = {"1", "50%", "100%"}) {
    RolloutSpec spec;
    spec.environment = "prod";
    spec.version = v2_;
    spec.waves = std::move(waves);
    spec.bake = absl::Seconds(60);
    return spec;
  }
  uint64_t StartRollout(RolloutSpec spec) {
    absl::StatusOr<StartedRollout> started = engine_->Start(spec, "alice");
    PGF_EXPECT_OK(started.status());
    return started.ok() ? started->rollout.id : 0;
  }
  void Tick() { engine_->Tick(clock_.Now()); }
  // The agent applied `version` and said so.
  void Ack(const std::string& agent, uint64_t version) {
    agents_.agent(agent).applied_version = version;
    engine_->OnConfigResult(agent, version, true, "");
  }
  RolloutRow Rollout(uint64_t id) {
    absl::StatusOr<RolloutRow> row = store_.GetRollout(id);
    PGF_EXPECT_OK(row.status());
    return row.ok() ? *row : RolloutRow{};
  }
  RolloutAgentState AgentState(uint64_t id, const std::string& agent) {
    absl::StatusOr<std::vector<RolloutAgentRow>> rows = store_.ListRolloutAgents(id);
    for (const RolloutAgentRow& row : *rows) {
      if (row.agent_id == agent) return row.state;
    }
    ADD_FAILURE() << agent << " is not in rollout " << id;
    return RolloutAgentState::kWaiting;
  }
  // Acks the current wave's agents, bakes it out and ticks into the next wave.
  void PassWave(uint64_t id, const std::vector<std::string>& wave_agents) {
    for (const std::string& agent : wave_agents) Ack(agent, v2_);
    Tick();  // Everyone applied: the bake starts.
    clock_.Advance(absl::Seconds(60));
    Tick();  // Baked: the next wave (or completion).
    (void)id;
  }

  FakeStore store_;
  FakeAgents agents_;
  FakeClock clock_;
  std::unique_ptr<RolloutEngine> engine_;
  uint64_t v1_ = 0, v2_ = 0;
};

TEST_F(RolloutEngineTest, WavesBakeAndComplete) {
  const uint64_t id = StartRollout(Spec());
  // Wave 1 (the canary) is told at once: pinned, and offered the version by force.
  EXPECT_EQ(Rollout(id).current_wave, 0);
  EXPECT_EQ(store_.PinOf("a1"), v2_);
  EXPECT_EQ(store_.PinOf("a2"), std::nullopt);
  EXPECT_THAT(agents_.OffersTo("a1"), ElementsAre(v2_));
  EXPECT_TRUE(agents_.offers[0].force);
  EXPECT_THAT(agents_.OffersTo("a2"), IsEmpty());
  EXPECT_EQ(AgentState(id, "a1"), RolloutAgentState::kApplying);
  EXPECT_EQ(AgentState(id, "a2"), RolloutAgentState::kWaiting);

  Tick();  // Not applied yet: nothing moves.
  EXPECT_EQ(Rollout(id).bake_started_unix_ms, 0);

  Ack("a1", v2_);
  Tick();
  EXPECT_EQ(AgentState(id, "a1"), RolloutAgentState::kApplied);
  EXPECT_EQ(Rollout(id).bake_started_unix_ms, UnixMillis(clock_.Now()));

  clock_.Advance(absl::Seconds(59));
  Tick();
  EXPECT_EQ(Rollout(id).current_wave, 0) << "still baking";

  clock_.Advance(absl::Seconds(1));
  Tick();
  // Wave 2 is 50% of four agents, cumulative: a2 joins a1.
  EXPECT_EQ(Rollout(id).current_wave, 1);
  EXPECT_THAT(agents_.OffersTo("a2"), ElementsAre(v2_));
  EXPECT_THAT(agents_.OffersTo("a3"), IsEmpty());

  PassWave(id, {"a2"});
  EXPECT_EQ(Rollout(id).current_wave, 2);
  EXPECT_THAT(agents_.OffersTo("a3"), ElementsAre(v2_));
  EXPECT_THAT(agents_.OffersTo("a4"), ElementsAre(v2_));

  PassWave(id, {"a3", "a4"});
  const RolloutRow done = Rollout(id);
  EXPECT_EQ(done.state, RolloutState::kSucceeded);
  EXPECT_EQ(done.finished_unix_ms, UnixMillis(clock_.Now()));
  EXPECT_EQ(store_.GetEnvironment("prod")->desired_version, v2_);
  for (const char* agent : {"a1", "a2", "a3", "a4"}) {
    EXPECT_EQ(store_.PinOf(agent), std::nullopt) << agent;
  }
  EXPECT_THAT(store_.audit_actions, ElementsAre("rollout.start", "rollout.succeeded"));
}

TEST_F(RolloutEngineTest, NackFailsTheRolloutAndMovesTheWaveBack) {
  const uint64_t id = StartRollout(Spec());
  engine_->OnConfigResult("a1", v2_, false, "auth_file not found");
  // Only queued: nothing is written until the next tick.
  EXPECT_EQ(AgentState(id, "a1"), RolloutAgentState::kApplying);
  Tick();
  const RolloutRow failed = Rollout(id);
  EXPECT_EQ(failed.state, RolloutState::kFailed);
  EXPECT_EQ(failed.failed_agent, "a1");
  EXPECT_THAT(failed.reason, HasSubstr("auth_file not found"));
  EXPECT_EQ(AgentState(id, "a1"), RolloutAgentState::kFailed);
  EXPECT_EQ(store_.PinOf("a1"), std::nullopt);
  // Back to the environment's desired version, forced (the agent may have refused it once).
  EXPECT_THAT(agents_.OffersTo("a1"), ElementsAre(v2_, v1_));
  EXPECT_TRUE(agents_.offers.back().force);
  EXPECT_THAT(agents_.OffersTo("a2"), IsEmpty()) << "later waves were never moved";
  EXPECT_EQ(store_.GetEnvironment("prod")->desired_version, v1_);
  EXPECT_THAT(store_.audit_actions, ElementsAre("rollout.start", "rollout.failed"));
}

TEST_F(RolloutEngineTest, NackOfAnotherVersionIsIgnored) {
  const uint64_t id = StartRollout(Spec());
  engine_->OnConfigResult("a1", v1_, false, "an old refusal");
  Tick();
  EXPECT_EQ(Rollout(id).state, RolloutState::kRunning);
  EXPECT_EQ(AgentState(id, "a1"), RolloutAgentState::kApplying);
}

TEST_F(RolloutEngineTest, AgentThatNeverAppliesFailsAfterTheApplyTimeout) {
  const uint64_t id = StartRollout(Spec());
  clock_.Advance(kRolloutApplyTimeout);
  Tick();
  EXPECT_EQ(Rollout(id).state, RolloutState::kRunning) << "exactly at the timeout: still waiting";
  clock_.Advance(absl::Milliseconds(1));
  Tick();
  EXPECT_EQ(Rollout(id).state, RolloutState::kFailed);
  EXPECT_THAT(Rollout(id).reason, HasSubstr("did not apply"));
  EXPECT_EQ(AgentState(id, "a1"), RolloutAgentState::kRolledBack);
}

TEST_F(RolloutEngineTest, HealthGateFailsOnWaitingClients) {
  const uint64_t id = StartRollout(Spec());
  Ack("a1", v2_);
  Tick();  // Bake starts; baseline taken.
  pgfleet::v1::PoolMetrics* pool = agents_.NewMetrics("a1").add_pools();
  pool->set_database("appdb");
  pool->set_user("app");
  pool->set_cl_waiting(11);  // The default limit is 10.
  clock_.Advance(absl::Seconds(5));
  Tick();
  const RolloutRow failed = Rollout(id);
  EXPECT_EQ(failed.state, RolloutState::kFailed);
  EXPECT_EQ(failed.failed_agent, "a1");
  EXPECT_THAT(failed.reason, HasSubstr("health gate failed on a1"));
  EXPECT_THAT(failed.reason, HasSubstr("11 clients waiting"));
  EXPECT_EQ(AgentState(id, "a1"), RolloutAgentState::kFailed);
  EXPECT_EQ(store_.PinOf("a1"), std::nullopt);
}

TEST_F(RolloutEngineTest, HealthGateCountsOnlyNewServerErrors) {
  // Errors from before the bake are the baseline; only new ones count.
  pgfleet::v1::DatabaseStats* db = agents_.NewMetrics("a1").add_databases();
  db->set_server_errors(7);
  const uint64_t id = StartRollout(Spec());
  Ack("a1", v2_);
  Tick();
  clock_.Advance(absl::Seconds(5));
  Tick();
  EXPECT_EQ(Rollout(id).state, RolloutState::kRunning) << "old errors are not the new config's";
  agents_.NewMetrics("a1").add_databases()->set_server_errors(8);  // A newer report.
  Tick();
  EXPECT_EQ(Rollout(id).state, RolloutState::kFailed);
  EXPECT_THAT(Rollout(id).reason, HasSubstr("1 new server connection failures"));
}

TEST_F(RolloutEngineTest, AbortMovesEveryMovedAgentBack) {
  const uint64_t id = StartRollout(Spec());
  PassWave(id, {"a1"});
  ASSERT_EQ(Rollout(id).current_wave, 1);
  absl::StatusOr<RolloutRow> aborted = engine_->Abort(id, "bob");
  PGF_ASSERT_OK(aborted.status());
  EXPECT_EQ(aborted->state, RolloutState::kAborted);
  EXPECT_EQ(aborted->reason, "aborted by bob");
  EXPECT_EQ(Rollout(id).state, RolloutState::kAborted);
  for (const char* moved : {"a1", "a2"}) {
    EXPECT_EQ(AgentState(id, moved), RolloutAgentState::kRolledBack) << moved;
    EXPECT_EQ(store_.PinOf(moved), std::nullopt) << moved;
    EXPECT_EQ(agents_.OffersTo(moved).back(), v1_) << moved;
  }
  EXPECT_EQ(AgentState(id, "a3"), RolloutAgentState::kWaiting);
  EXPECT_THAT(agents_.OffersTo("a3"), IsEmpty());
  EXPECT_EQ(engine_->Abort(id, "bob").status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(RolloutEngineTest, PauseHoldsTheRolloutAndResumeGoesOn) {
  const uint64_t id = StartRollout(Spec());
  Ack("a1", v2_);
  Tick();
  PGF_ASSERT_OK(engine_->Pause(id).status());
  EXPECT_EQ(engine_->Pause(id).status().code(), absl::StatusCode::kFailedPrecondition);
  clock_.Advance(absl::Minutes(10));
  Tick();
  EXPECT_EQ(Rollout(id).state, RolloutState::kPaused);
  EXPECT_EQ(Rollout(id).current_wave, 0) << "a paused rollout does not move";
  EXPECT_THAT(agents_.OffersTo("a2"), IsEmpty());
  // A NACK while paused is still recorded, and fails the rollout once it runs again.
  PGF_ASSERT_OK(engine_->Resume(id).status());
  EXPECT_EQ(engine_->Resume(id).status().code(), absl::StatusCode::kFailedPrecondition);
  Tick();
  EXPECT_EQ(Rollout(id).current_wave, 1);
  EXPECT_THAT(agents_.OffersTo("a2"), ElementsAre(v2_));
  // A paused rollout can be aborted too.
  PGF_ASSERT_OK(engine_->Pause(id).status());
  PGF_ASSERT_OK(engine_->Abort(id, "bob").status());
  EXPECT_EQ(Rollout(id).state, RolloutState::kAborted);
}

TEST_F(RolloutEngineTest, OfflineAgentsHoldTheWaveUntilTheyReturn) {
  agents_.Disconnect("a1");
  const uint64_t id = StartRollout(Spec());
  EXPECT_EQ(store_.PinOf("a1"), v2_) << "pinned anyway: it converges when it returns";
  Tick();
  EXPECT_THAT(Rollout(id).reason, HasSubstr("holding: 1 agents of wave 1 are offline"));
  clock_.Advance(kRolloutApplyTimeout + absl::Minutes(1));
  Tick();
  EXPECT_EQ(Rollout(id).state, RolloutState::kRunning) << "offline is not failing to apply";
  agents_.Connect("a1", "prod", v2_);  // Came back and applied its pinned version.
  Tick();
  EXPECT_EQ(Rollout(id).reason, "");
  EXPECT_NE(Rollout(id).bake_started_unix_ms, 0);
}

TEST_F(RolloutEngineTest, MaxUnavailableLetsAWaveGoOnWithoutOfflineAgents) {
  agents_.Disconnect("a2");
  RolloutSpec spec = Spec({"2", "100%"});
  spec.max_unavailable = 1;
  const uint64_t id = StartRollout(spec);
  Ack("a1", v2_);
  Tick();
  EXPECT_NE(Rollout(id).bake_started_unix_ms, 0);
  clock_.Advance(absl::Seconds(60));
  Tick();
  EXPECT_EQ(Rollout(id).current_wave, 1);
}

TEST_F(RolloutEngineTest, NoWaveStartsDuringAMaintenanceWindow) {
  const uint64_t id = StartRollout(Spec());
  Ack("a1", v2_);
  Tick();
  WindowRow window;
  window.environment = "prod";
  window.starts_unix_ms = UnixMillis(clock_.Now());
  window.ends_unix_ms = window.starts_unix_ms + 3'600'000;
  window.state = WindowState::kPaused;
  PGF_ASSERT_OK_AND_ASSIGN(WindowRow created, store_.CreateWindow(window));
  clock_.Advance(absl::Seconds(60));
  Tick();  // Wave 1 baked; wave 2 would start but the window holds it.
  EXPECT_EQ(Rollout(id).current_wave, 1);
  EXPECT_EQ(Rollout(id).wave_started_unix_ms, 0);
  EXPECT_THAT(Rollout(id).reason, HasSubstr("maintenance window"));
  EXPECT_THAT(agents_.OffersTo("a2"), IsEmpty());
  created.state = WindowState::kCompleted;
  PGF_ASSERT_OK(store_.UpdateWindow(created));
  Tick();
  EXPECT_THAT(agents_.OffersTo("a2"), ElementsAre(v2_));
  EXPECT_EQ(Rollout(id).reason, "");
}

TEST_F(RolloutEngineTest, ANewEngineOverTheSameStoreResumesMidWave) {
  const uint64_t id = StartRollout(Spec());
  PassWave(id, {"a1"});
  Ack("a2", v2_);
  Tick();  // Wave 2 baking.
  const int64_t bake_started = Rollout(id).bake_started_unix_ms;
  ASSERT_NE(bake_started, 0);

  engine_.reset();  // The controller restarts.
  engine_ = std::make_unique<RolloutEngine>(store_, agents_, clock_);
  clock_.Advance(absl::Seconds(30));
  Tick();
  EXPECT_EQ(Rollout(id).current_wave, 1);
  EXPECT_EQ(Rollout(id).bake_started_unix_ms, bake_started) << "the bake is not restarted";
  clock_.Advance(absl::Seconds(30));
  Tick();
  EXPECT_EQ(Rollout(id).current_wave, 2);
  PassWave(id, {"a3", "a4"});
  EXPECT_EQ(Rollout(id).state, RolloutState::kSucceeded);
}

TEST_F(RolloutEngineTest, CompletionDoesNotOverwriteADesiredVersionChangedMeanwhile) {
  const uint64_t id = StartRollout(Spec({"100%"}));
  const uint64_t v3 = store_.AddVersion("prod", "[databases]\n");
  store_.SetDesired("prod", v3);  // Someone set another version by hand meanwhile.
  PassWave(id, {"a1", "a2", "a3", "a4"});
  EXPECT_EQ(Rollout(id).state, RolloutState::kFailed);
  EXPECT_THAT(Rollout(id).reason, HasSubstr("could not make"));
  EXPECT_EQ(store_.GetEnvironment("prod")->desired_version, v3);
  EXPECT_EQ(agents_.OffersTo("a1").back(), v3) << "rolled back to what is desired now";
}

TEST_F(RolloutEngineTest, AgentsThatJoinedDuringTheRolloutFollowTheNewVersion) {
  const uint64_t id = StartRollout(Spec({"100%"}));
  agents_.Connect("late", "prod", v1_);  // Not a member: it joined after the start.
  PassWave(id, {"a1", "a2", "a3", "a4"});
  EXPECT_EQ(Rollout(id).state, RolloutState::kSucceeded);
  EXPECT_THAT(agents_.OffersTo("late"), ElementsAre(v2_));
  EXPECT_FALSE(agents_.offers.back().force);
}

TEST_F(RolloutEngineTest, PreflightRefusals) {
  RolloutSpec same = Spec();
  same.version = v1_;
  EXPECT_EQ(engine_->Start(same, "alice").status().code(), absl::StatusCode::kFailedPrecondition);

  store_.AddEnvironment("fresh");
  const uint64_t fresh_version = store_.AddVersion("fresh", kIniV1);
  RolloutSpec fresh = Spec();
  fresh.environment = "fresh";
  fresh.version = fresh_version;
  absl::Status no_desired = engine_->Start(fresh, "alice").status();
  EXPECT_EQ(no_desired.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(no_desired.message(), HasSubstr("no desired version"));

  RolloutSpec other_env = Spec();
  other_env.version = fresh_version;
  EXPECT_EQ(engine_->Start(other_env, "alice").status().code(), absl::StatusCode::kInvalidArgument);

  PGF_ASSERT_OK(store_.SetEnvironmentUpstream("prod", "staging"));
  absl::Status upstream = engine_->Start(Spec(), "alice").status();
  EXPECT_EQ(upstream.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(upstream.message(), HasSubstr("upstream environment staging"));

  RolloutSpec forced = Spec();
  forced.force = true;
  EXPECT_EQ(engine_->Start(forced, "alice").status().code(), absl::StatusCode::kInvalidArgument)
      << "--force needs a reason";
  forced.force_reason = "hotfix";
  PGF_ASSERT_OK_AND_ASSIGN(StartedRollout started, engine_->Start(forced, "alice"));
  EXPECT_THAT(started.rollout.force_reason, HasSubstr("hotfix (overrode: "));
  EXPECT_EQ(engine_->Start(forced, "alice").status().code(), absl::StatusCode::kFailedPrecondition)
      << "one active rollout per environment";
  EXPECT_THAT(agents_.offers, ::testing::SizeIs(1)) << "refused starts sent nothing";
}

TEST_F(RolloutEngineTest, RollbackGoesBackToThePreviousGoodVersion) {
  EXPECT_EQ(engine_->Rollback("prod", {}, absl::Seconds(10), "bob").status().code(),
            absl::StatusCode::kFailedPrecondition);
  const uint64_t id = StartRollout(Spec({"100%"}));
  PassWave(id, {"a1", "a2", "a3", "a4"});
  ASSERT_EQ(Rollout(id).state, RolloutState::kSucceeded);
  PGF_ASSERT_OK_AND_ASSIGN(StartedRollout back,
                           engine_->Rollback("prod", {}, absl::Seconds(10), "bob"));
  EXPECT_EQ(back.rollout.from_version, v2_);
  EXPECT_EQ(back.rollout.to_version, v1_);
  EXPECT_THAT(back.rollout.waves, ElementsAre("100%"));
  EXPECT_EQ(agents_.OffersTo("a4").back(), v1_);
}

TEST_F(RolloutEngineTest, SendsHappenOutsideTheEngineLock) {
  // Every offer calls back into the engine, as a slow or re-entrant stream would: with the
  // engine's lock held during a send this would deadlock.
  int calls = 0;
  agents_.on_send = [&] {
    ++calls;
    EXPECT_EQ(engine_->Pause(999).status().code(), absl::StatusCode::kNotFound);
  };
  const uint64_t id = StartRollout(Spec());
  PassWave(id, {"a1"});
  PGF_ASSERT_OK(engine_->Abort(id, "bob").status());
  EXPECT_GE(calls, 3);
}

TEST(AssignWavesTest, CumulativeCountsAndShares) {
  PGF_ASSERT_OK_AND_ASSIGN(std::vector<int> waves, AssignWaves({"1", "50%", "100%"}, 4));
  EXPECT_THAT(waves, ElementsAre(0, 1, 2, 2));
  EXPECT_FALSE(AssignWaves({"0"}, 4).ok());
  EXPECT_FALSE(AssignWaves({"150%"}, 4).ok());
  EXPECT_FALSE(AssignWaves({}, 4).ok());
}

}  // namespace
}  // namespace pgfleet::controller
