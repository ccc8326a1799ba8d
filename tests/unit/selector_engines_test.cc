// The rollout and maintenance engines with a label selector: only the matching agents move or
// pause, waves are taken among them, the others keep their version, and a selector that matches
// nothing is refused rather than done as nothing.
#include <memory>
#include <string>
#include <vector>

#include "controller/maintenance/orchestrator.h"
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
using ::testing::UnorderedElementsAre;

constexpr char kIniV1[] =
    "[databases]\nappdb = host=127.0.0.1 port=5432 dbname=appdb\n"
    "[pgbouncer]\nlisten_port = 6432\ndefault_pool_size = 20\n";
constexpr char kIniV2[] =
    "[databases]\nappdb = host=127.0.0.1 port=5432 dbname=appdb\n"
    "[pgbouncer]\nlisten_port = 6432\ndefault_pool_size = 30\n";
constexpr char kIniV3[] =
    "[databases]\nappdb = host=127.0.0.1 port=5432 dbname=appdb\n"
    "[pgbouncer]\nlisten_port = 6432\ndefault_pool_size = 40\n";

// Six agents: a1..a3 in zone a, b1..b3 in zone b; a3 and b3 are large.
class SelectorEnginesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_.AddEnvironment("prod");
    v1_ = store_.AddVersion("prod", kIniV1);
    v2_ = store_.AddVersion("prod", kIniV2);
    v3_ = store_.AddVersion("prod", kIniV3);
    store_.SetDesired("prod", v1_);
    for (const char* id : {"a1", "a2", "a3", "b1", "b2", "b3"}) {
      store_.AddAgent(id, "prod");
      std::map<std::string, std::string> labels = {{"zone", std::string(1, id[0])}};
      if (id[1] == '3') labels["size"] = "large";
      store_.SetLabels(id, labels);
      agents_.Connect(id, "prod", v1_);
    }
    rollouts_ = std::make_unique<RolloutEngine>(store_, agents_, clock_);
    maintenance_ = std::make_unique<MaintenanceOrchestrator>(store_, agents_, clock_);
  }

  RolloutSpec Spec(uint64_t version, const std::string& selector,
                   std::vector<std::string> waves = {"1", "100%"}) {
    RolloutSpec spec;
    spec.environment = "prod";
    spec.version = version;
    spec.waves = std::move(waves);
    spec.bake = absl::Seconds(10);
    spec.selector = selector;
    return spec;
  }
  void Tick() {
    rollouts_->Tick(clock_.Now());
    maintenance_->Tick(clock_.Now());
  }
  // Every agent that was offered `version` applies it.
  void AckOffered(uint64_t version) {
    for (const auto& offer : agents_.offers) {
      if (offer.version == version) agents_.agent(offer.agent_id).applied_version = version;
    }
  }
  // Runs the rollout to its end, acking everything offered.
  RolloutRow RunToEnd(uint64_t id, uint64_t version) {
    for (int i = 0; i < 20; ++i) {
      AckOffered(version);
      Tick();
      clock_.Advance(absl::Seconds(11));
      Tick();
      absl::StatusOr<RolloutRow> row = store_.GetRollout(id);
      if (!row.ok() || !IsActive(row->state)) break;
    }
    absl::StatusOr<RolloutRow> row = store_.GetRollout(id);
    EXPECT_TRUE(row.ok());
    return row.ok() ? *row : RolloutRow{};
  }
  std::vector<std::string> Members(uint64_t id) {
    std::vector<std::string> out;
    absl::StatusOr<std::vector<RolloutAgentRow>> rows = store_.ListRolloutAgents(id);
    for (const RolloutAgentRow& row : *rows) out.push_back(row.agent_id);
    return out;
  }

  FakeStore store_;
  FakeAgents agents_;
  FakeClock clock_;
  std::unique_ptr<RolloutEngine> rollouts_;
  std::unique_ptr<MaintenanceOrchestrator> maintenance_;
  uint64_t v1_ = 0, v2_ = 0, v3_ = 0;
};

TEST_F(SelectorEnginesTest, RolloutWithSelectorMovesOnlyMatchingAgentsInItsOwnWaves) {
  PGF_ASSERT_OK_AND_ASSIGN(StartedRollout started,
                           rollouts_->Start(Spec(v2_, "zone=a", {"1", "100%"}), "alice"));
  EXPECT_EQ(started.rollout.selector, "zone=a");
  EXPECT_THAT(Members(started.rollout.id), UnorderedElementsAre("a1", "a2", "a3"));
  // The canary wave is one agent of zone a, not of the environment.
  EXPECT_THAT(agents_.OffersTo("a1"), ElementsAre(v2_));
  EXPECT_THAT(agents_.OffersTo("a2"), IsEmpty());
  RolloutRow done = RunToEnd(started.rollout.id, v2_);
  EXPECT_EQ(done.state, RolloutState::kSucceeded) << done.reason;
  for (const char* id : {"a1", "a2", "a3"}) {
    EXPECT_EQ(store_.PinOf(id), v2_) << id << " stays pinned to the new version";
  }
  for (const char* id : {"b1", "b2", "b3"}) {
    EXPECT_THAT(agents_.OffersTo(id), IsEmpty()) << id;
    EXPECT_EQ(store_.PinOf(id), std::nullopt) << id;
  }
  PGF_ASSERT_OK_AND_ASSIGN(EnvironmentRow env, store_.GetEnvironment("prod"));
  EXPECT_EQ(env.desired_version, v1_) << "a rollout of some agents leaves the environment's";
}

TEST_F(SelectorEnginesTest, SetBasedSelectorAndFullRolloutUnpins) {
  PGF_ASSERT_OK_AND_ASSIGN(StartedRollout some,
                           rollouts_->Start(Spec(v2_, "size in (large)", {"100%"}), "alice"));
  EXPECT_THAT(Members(some.rollout.id), UnorderedElementsAre("a3", "b3"));
  EXPECT_EQ(RunToEnd(some.rollout.id, v2_).state, RolloutState::kSucceeded);
  // Everyone to v3: the pins go, the environment's desired version moves.
  PGF_ASSERT_OK_AND_ASSIGN(StartedRollout all, rollouts_->Start(Spec(v3_, "", {"100%"}), "alice"));
  EXPECT_EQ(Members(all.rollout.id).size(), 6u);
  EXPECT_EQ(RunToEnd(all.rollout.id, v3_).state, RolloutState::kSucceeded);
  for (const char* id : {"a1", "a3", "b3"}) EXPECT_EQ(store_.PinOf(id), std::nullopt) << id;
  PGF_ASSERT_OK_AND_ASSIGN(EnvironmentRow env, store_.GetEnvironment("prod"));
  EXPECT_EQ(env.desired_version, v3_);
}

TEST_F(SelectorEnginesTest, FailedRolloutRestoresEarlierPins) {
  PGF_ASSERT_OK_AND_ASSIGN(StartedRollout some,
                           rollouts_->Start(Spec(v2_, "zone=a", {"100%"}), "alice"));
  ASSERT_EQ(RunToEnd(some.rollout.id, v2_).state, RolloutState::kSucceeded);
  // A full rollout to v3 that is aborted: zone a goes back to its pin (v2), not to v1.
  PGF_ASSERT_OK_AND_ASSIGN(StartedRollout all, rollouts_->Start(Spec(v3_, "", {"100%"}), "alice"));
  PGF_ASSERT_OK(rollouts_->Abort(all.rollout.id, "alice").status());
  EXPECT_EQ(store_.PinOf("a1"), v2_);
  EXPECT_EQ(store_.PinOf("b1"), std::nullopt);
  EXPECT_EQ(agents_.OffersTo("a1").back(), v2_);
  EXPECT_EQ(agents_.OffersTo("b1").back(), v1_);
}

TEST_F(SelectorEnginesTest, RolloutSelectorMatchingNothingOrBadIsRefused) {
  absl::StatusOr<StartedRollout> none = rollouts_->Start(Spec(v2_, "zone=c"), "alice");
  EXPECT_EQ(none.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(none.status().message(), HasSubstr("selector \"zone=c\" matches no agent"));
  EXPECT_THAT(none.status().message(), HasSubstr("prod"));
  absl::StatusOr<StartedRollout> bad = rollouts_->Start(Spec(v2_, "zone in (a"), "alice");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("column"));
  EXPECT_THAT(agents_.offers, IsEmpty());
}

TEST_F(SelectorEnginesTest, WindowWithSelectorPausesOnlyMatchingAgents) {
  WindowSpec spec;
  spec.environment = "prod";
  spec.database = "appdb";
  spec.starts = absl::InfinitePast();
  spec.duration = absl::Minutes(30);
  spec.selector = "zone!=a";
  // An offline agent outside the selector does not keep the window from starting.
  agents_.Disconnect("a1");
  PGF_ASSERT_OK_AND_ASSIGN(WindowRow window, maintenance_->Schedule(spec, "alice"));
  EXPECT_EQ(window.selector, "zone!=a");
  Tick();
  EXPECT_THAT(agents_.Commands(), UnorderedElementsAre("pause:b1", "pause:b2", "pause:b3"));
  // Zone a agents that connect during the window are left alone too.
  agents_.Connect("a1", "prod", v1_);
  maintenance_->OnAgentConnected("a1", "prod");
  PGF_ASSERT_OK(maintenance_->Cancel(window.id, "alice").status());
  EXPECT_THAT(agents_.Commands(), UnorderedElementsAre("pause:b1", "pause:b2", "pause:b3",
                                                       "resume:b1", "resume:b2", "resume:b3"));
}

TEST_F(SelectorEnginesTest, WindowSelectorMatchingNothingIsRefused) {
  WindowSpec spec;
  spec.environment = "prod";
  spec.starts = absl::InfinitePast();
  spec.selector = "!zone";
  absl::StatusOr<WindowRow> window = maintenance_->Schedule(spec, "alice");
  EXPECT_EQ(window.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(window.status().message(), HasSubstr("selector \"!zone\" matches no agent"));
}

}  // namespace
}  // namespace pgfleet::controller
