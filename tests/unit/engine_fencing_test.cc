// Several controllers, one leader, at the engines' level (issue 24): two stores on one database
// stand for two controllers, each with its own rollout engine or maintenance orchestrator and
// its own connected agents. Once the second controller took the lease over, the deposed one's
// engine writes no step and sends no agent anything, and the new leader's engine goes on from
// the stored state. Leadership (controller/leader/leadership.h) on the same stores: who leads,
// what a follower says, and a deposed leader stepping down. On SQLite and PostgreSQL.

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "controller/leader/leadership.h"
#include "controller/maintenance/orchestrator.h"
#include "controller/rollout/rollout_engine.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testutil/status_testing.h"
#include "tests/unit/engine_fakes.h"
#include "tests/unit/store_backends.h"

namespace pgfleet::controller {
namespace {

using ::testing::ElementsAre;
using testing::FakeAgents;
using testing::FakeClock;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

constexpr char kIniV1[] = "[databases]\nappdb = host=127.0.0.1 dbname=appdb\n[pgbouncer]\n";
constexpr char kIniV2[] =
    "[databases]\nappdb = host=127.0.0.1 dbname=appdb\n[pgbouncer]\ndefault_pool_size = 30\n";
constexpr absl::Duration kLease = absl::Seconds(10);

class EngineFencingTest : public StoreBackendTest {
 protected:
  void SetUp() override {
    StoreBackendTest::SetUp();
    ASSERT_NE(store_, nullptr);
    PGF_ASSERT_OK_AND_ASSIGN(other_, OpenAgain());
    const int64_t now = UnixMillis(clock_.Now());
    PGF_ASSERT_OK_AND_ASSIGN(ConfigVersionRow v1,
                             store_->AddConfigVersion("prod", kIniV1, "alice", "", now));
    PGF_ASSERT_OK_AND_ASSIGN(ConfigVersionRow v2,
                             store_->AddConfigVersion("prod", kIniV2, "alice", "", now));
    v1_ = v1.version;
    v2_ = v2.version;
    PGF_ASSERT_OK(store_->SetDesiredVersion("prod", v1_, std::nullopt));
    for (const char* id : {"a1", "a2", "a3"}) {
      AgentRow hello;
      hello.agent_id = id;
      hello.environment = "prod";
      hello.agent_version = "0.1.0";
      hello.hostname = id;
      PGF_ASSERT_OK(store_->RecordAgentHello(hello, now));
      // The agents stream to the first controller (the leader) ...
      first_agents_.Connect(id, "prod", v1_);
    }
    // ... which takes the lease.
    PGF_ASSERT_OK(store_->AcquireLeadership("c1", now, absl::ToInt64Milliseconds(kLease)).status());
  }
  void TearDown() override {
    other_.reset();
    StoreBackendTest::TearDown();
  }

  // The first controller stops renewing (stalled, or cut off from the store); once its lease
  // expired the second takes over. The agents move to the second controller.
  void SecondTakesOver() {
    clock_.Advance(kLease + absl::Seconds(1));
    PGF_ASSERT_OK_AND_ASSIGN(LeaderLease lease,
                             other_->AcquireLeadership("c2", UnixMillis(clock_.Now()),
                                                       absl::ToInt64Milliseconds(kLease)));
    ASSERT_EQ(lease.fencing_token, 2u);
    for (const char* id : {"a1", "a2", "a3"}) {
      second_agents_.Connect(id, "prod", first_agents_.agent(id).applied_version);
    }
  }

  RolloutRow Rollout(uint64_t id) {
    absl::StatusOr<RolloutRow> row = other_->GetRollout(id);
    PGF_EXPECT_OK(row.status());
    return row.ok() ? *row : RolloutRow{};
  }

  std::unique_ptr<SqliteStore> other_;
  FakeClock clock_;
  FakeAgents first_agents_, second_agents_;
  uint64_t v1_ = 0, v2_ = 0;
};
INSTANTIATE_TEST_SUITE_P(Backends, EngineFencingTest, ::testing::ValuesIn(AllStoreBackends()),
                         StoreBackendName);

TEST_P(EngineFencingTest, DeposedLeaderWritesNoRolloutStepAndSendsNothing) {
  RolloutEngine first(*store_, first_agents_, clock_);
  RolloutSpec spec;
  spec.environment = "prod";
  spec.version = v2_;
  spec.waves = {"1", "100%"};
  spec.bake = absl::Seconds(5);
  PGF_ASSERT_OK_AND_ASSIGN(StartedRollout started, first.Start(spec, "alice"));
  const uint64_t id = started.rollout.id;
  first.Tick(clock_.Now());
  ASSERT_THAT(first_agents_.OffersTo("a1"), ElementsAre(v2_)) << "the canary";
  first_agents_.agent("a1").applied_version = v2_;
  first.OnConfigResult("a1", v2_, true, "");
  first.Tick(clock_.Now());  // The canary applied: its bake starts.
  const RolloutRow baking = Rollout(id);
  ASSERT_NE(baking.bake_started_unix_ms, 0);

  ASSERT_NO_FATAL_FAILURE(SecondTakesOver());
  // The deposed leader's engine ticks on (it has not noticed yet): the bake is over, so it
  // would start the last wave. Its writes are refused, so it sends nothing either.
  first_agents_.offers.clear();
  first.Tick(clock_.Now());
  EXPECT_THAT(first_agents_.offers, IsEmpty()) << "a deposed leader sent a rollout step";
  const RolloutRow after_deposed = Rollout(id);
  EXPECT_EQ(after_deposed.current_wave, baking.current_wave);
  EXPECT_EQ(after_deposed.wave_started_unix_ms, baking.wave_started_unix_ms);
  PGF_ASSERT_OK_AND_ASSIGN(std::vector<RolloutAgentRow> members, other_->ListRolloutAgents(id));
  for (const RolloutAgentRow& member : members) {
    if (member.agent_id != "a1") {
      EXPECT_EQ(member.state, RolloutAgentState::kWaiting) << member.agent_id;
    }
  }
  // Nor can it start, pause or abort rollouts.
  EXPECT_TRUE(absl::IsFailedPrecondition(first.Abort(id, "alice").status()));

  // The new leader's engine goes on from the stored state: the last wave, each agent once.
  RolloutEngine second(*other_, second_agents_, clock_);
  second.Tick(clock_.Now());
  EXPECT_EQ(Rollout(id).current_wave, 1);
  EXPECT_THAT(second_agents_.OffersTo("a1"), IsEmpty());
  EXPECT_THAT(second_agents_.OffersTo("a2"), ElementsAre(v2_));
  EXPECT_THAT(second_agents_.OffersTo("a3"), ElementsAre(v2_));
  for (const char* id_text : {"a2", "a3"}) {
    second_agents_.agent(id_text).applied_version = v2_;
    second.OnConfigResult(id_text, v2_, true, "");
  }
  second.Tick(clock_.Now());
  clock_.Advance(absl::Seconds(6));
  second.Tick(clock_.Now());
  EXPECT_EQ(Rollout(id).state, RolloutState::kSucceeded);
  EXPECT_THAT(first_agents_.offers, IsEmpty());
}

TEST_P(EngineFencingTest, DeposedLeaderSendsNoResume) {
  MaintenanceOrchestrator first(*store_, first_agents_, clock_);
  WindowSpec spec;
  spec.environment = "prod";
  spec.database = "appdb";
  spec.starts = absl::InfinitePast();
  spec.duration = absl::Seconds(30);
  PGF_ASSERT_OK_AND_ASSIGN(WindowRow window, first.Schedule(spec, "alice"));
  first.Tick(clock_.Now());
  EXPECT_THAT(first_agents_.Commands(), ElementsAre("pause:a1", "pause:a2", "pause:a3"));

  ASSERT_NO_FATAL_FAILURE(SecondTakesOver());
  clock_.Advance(absl::Seconds(30));  // The window is due to end.
  first_agents_.messages.clear();
  first.Tick(clock_.Now());
  EXPECT_THAT(first_agents_.Commands(), IsEmpty()) << "a deposed leader ended the window";
  PGF_ASSERT_OK_AND_ASSIGN(std::vector<WindowRow> open, other_->ListWindows("prod", true));
  ASSERT_EQ(open.size(), 1u);

  MaintenanceOrchestrator second(*other_, second_agents_, clock_);
  second.Tick(clock_.Now());
  EXPECT_THAT(second_agents_.Commands(), ElementsAre("resume:a1", "resume:a2", "resume:a3"));
  PGF_ASSERT_OK_AND_ASSIGN(open, other_->ListWindows("prod", true));
  EXPECT_THAT(open, IsEmpty());
}

TEST_P(EngineFencingTest, LeadershipElectsOneAndTheOtherFollowsUntilItIsDeposed) {
  // store_ holds c1's lease from SetUp; a third store is a fresh controller.
  PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<SqliteStore> third, OpenAgain());
  LeadershipOptions options;
  options.lease = kLease;
  options.renew = absl::Seconds(3);
  options.self = "c1";
  Leadership c1(*store_, clock_, options);
  options.self = "c3";
  Leadership c3(*third, clock_, options);
  int c1_deposed = 0, c3_elected = 0;
  c1.set_on_deposed([&c1_deposed] { ++c1_deposed; });
  c3.set_on_elected([&c3_elected] { ++c3_elected; });

  c1.RunOnce();
  c3.RunOnce();
  EXPECT_TRUE(c1.IsLeader());
  EXPECT_FALSE(c3.IsLeader());
  EXPECT_EQ(c3.leader(), "c1");
  absl::Status refused = c3.NotLeaderError();
  EXPECT_TRUE(absl::IsUnavailable(refused));
  EXPECT_THAT(std::string(refused.message()), HasSubstr("the leader is c1"));

  // c1 stops renewing; after its lease c3 takes over, and c1's next round finds it deposed.
  clock_.Advance(kLease + absl::Seconds(1));
  c3.RunOnce();
  EXPECT_TRUE(c3.IsLeader());
  EXPECT_EQ(c3_elected, 1);
  c1.RunOnce();
  EXPECT_FALSE(c1.IsLeader());
  EXPECT_EQ(c1_deposed, 1);
  EXPECT_EQ(c1.leader(), "c3");
  // The deposed controller's store refuses writes.
  EXPECT_TRUE(absl::IsFailedPrecondition(store_->SetDesiredVersion("prod", v2_, std::nullopt)));
  third.reset();
}

TEST_P(EngineFencingTest, WithoutAnElectionAlwaysLeadsAndLeavesTheLeaseAlone) {
  // SQLite, one controller: no election, no fencing.
  LeadershipOptions options;
  options.elect = false;
  options.self = "solo";
  Leadership solo(*other_, clock_, options);
  int elected = 0;
  solo.set_on_elected([&elected] { ++elected; });
  solo.Start();
  EXPECT_TRUE(solo.IsLeader());
  EXPECT_EQ(elected, 1);
  solo.Stop();
  PGF_ASSERT_OK_AND_ASSIGN(LeaderLease lease, other_->GetLeaderLease());
  EXPECT_EQ(lease.holder, "c1");
  EXPECT_EQ(lease.fencing_token, 1u);
}

}  // namespace
}  // namespace pgfleet::controller
