// A wave of many agents is written to the store in batches (one transaction per wave, not two
// per agent): the rollout engine against a real SqliteStore, counting the store's write
// transactions (the store_write_duration histogram observes one per transaction).
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "controller/metrics/prometheus.h"
#include "controller/rollout/rollout_engine.h"
#include "controller/store/sqlite_store.h"
#include "gtest/gtest.h"
#include "tests/testutil/status_testing.h"
#include "tests/testutil/temp_dir.h"
#include "tests/unit/engine_fakes.h"

namespace pgfleet::controller {
namespace {

using testing::FakeAgents;
using testing::FakeClock;

constexpr int kAgents = 300;
constexpr int64_t kT0 = 1'700'000'040'000;

class RolloutBatchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PGF_ASSERT_OK(temp_dir_.Create("pgfleet_batch"));
    absl::StatusOr<std::unique_ptr<SqliteStore>> store =
        SqliteStore::Open(temp_dir_.path() + "/controller.db");
    PGF_ASSERT_OK(store.status());
    store_ = std::move(store).value();
    PGF_ASSERT_OK_AND_ASSIGN(
        ConfigVersionRow v1,
        store_->AddConfigVersion("prod", "[pgbouncer]\ndefault_pool_size = 20\n", "alice", "",
                                 kT0));
    PGF_ASSERT_OK_AND_ASSIGN(
        ConfigVersionRow v2,
        store_->AddConfigVersion("prod", "[pgbouncer]\ndefault_pool_size = 25\n", "alice", "",
                                 kT0));
    v1_ = v1.version;
    v2_ = v2.version;
    PGF_ASSERT_OK(store_->SetDesiredVersion("prod", v1_, std::nullopt));
    for (int i = 0; i < kAgents; ++i) {
      AgentRow hello;
      hello.agent_id = absl::StrCat("agent-", i);
      hello.environment = "prod";
      hello.applied_version = v1_;
      PGF_ASSERT_OK(store_->RecordAgentHello(hello, kT0));
      agents_.Connect(hello.agent_id, "prod", v1_);
    }
    engine_ = std::make_unique<RolloutEngine>(*store_, agents_, clock_);
  }

  static uint64_t Writes() { return metrics::StoreWriteLatency().count(); }

  testutil::TempDir temp_dir_;  // Declared first: removed after the store closes.
  std::unique_ptr<SqliteStore> store_;
  FakeAgents agents_;
  FakeClock clock_;
  std::unique_ptr<RolloutEngine> engine_;
  uint64_t v1_ = 0;
  uint64_t v2_ = 0;
};

TEST_F(RolloutBatchTest, AWaveIsPinnedAcknowledgedAndUnpinnedInAFewTransactions) {
  RolloutSpec spec;
  spec.environment = "prod";
  spec.version = v2_;
  spec.waves = {"100%"};
  spec.bake = absl::Seconds(1);

  uint64_t before = Writes();
  PGF_ASSERT_OK_AND_ASSIGN(StartedRollout started, engine_->Start(spec, "alice"));
  // The rollout, its audit entry and the wave's pins and rows: not 2 per agent.
  EXPECT_LT(Writes() - before, 10u) << "write transactions to start a wave of " << kAgents;
  const uint64_t id = started.rollout.id;
  PGF_ASSERT_OK_AND_ASSIGN(AgentRow pinned, store_->GetAgent("agent-7"));
  EXPECT_EQ(pinned.pinned_version, std::optional<uint64_t>(v2_));

  for (int i = 0; i < kAgents; ++i) {
    const std::string agent = absl::StrCat("agent-", i);
    agents_.agent(agent).applied_version = v2_;
    engine_->OnConfigResult(agent, v2_, true, "");
  }
  before = Writes();
  engine_->Tick(clock_.Now());
  EXPECT_LT(Writes() - before, 10u) << "write transactions to record " << kAgents << " ACKs";
  PGF_ASSERT_OK_AND_ASSIGN(std::vector<RolloutAgentRow> rows, store_->ListRolloutAgents(id));
  ASSERT_EQ(rows.size(), static_cast<size_t>(kAgents));
  for (const RolloutAgentRow& row : rows) EXPECT_EQ(row.state, RolloutAgentState::kApplied);

  clock_.Advance(absl::Seconds(2));
  before = Writes();
  engine_->Tick(clock_.Now());
  EXPECT_LT(Writes() - before, 10u) << "write transactions to complete the rollout";
  PGF_ASSERT_OK_AND_ASSIGN(RolloutRow done, store_->GetRollout(id));
  EXPECT_EQ(done.state, RolloutState::kSucceeded) << done.reason;
  PGF_ASSERT_OK_AND_ASSIGN(std::vector<AgentRow> agents, store_->ListAgents("prod"));
  for (const AgentRow& agent : agents) {
    EXPECT_EQ(agent.pinned_version, std::nullopt) << agent.agent_id;
  }
}

TEST_F(RolloutBatchTest, ABatchIsAllOrNothing) {
  std::vector<RolloutStore::AgentPin> pins = {
      {"agent-1", v2_}, {"agent-2", v2_}, {"no-such-agent", v2_}};
  absl::Status status = store_->UpdateRolloutAgents(pins, {});
  EXPECT_TRUE(absl::IsNotFound(status)) << status;
  for (const char* id : {"agent-1", "agent-2"}) {
    PGF_ASSERT_OK_AND_ASSIGN(AgentRow agent, store_->GetAgent(id));
    EXPECT_EQ(agent.pinned_version, std::nullopt) << id;
  }
  // A version of another environment is refused like SetAgentPin refuses it.
  PGF_ASSERT_OK_AND_ASSIGN(ConfigVersionRow dev,
                           store_->AddConfigVersion("dev", "[pgbouncer]\n", "alice", "", kT0));
  status = store_->UpdateRolloutAgents({{"agent-1", dev.version}}, {});
  EXPECT_TRUE(absl::IsInvalidArgument(status)) << status;
  PGF_ASSERT_OK(store_->UpdateRolloutAgents({{"agent-1", v2_}, {"agent-2", v2_}}, {}));
  PGF_ASSERT_OK_AND_ASSIGN(AgentRow agent, store_->GetAgent("agent-2"));
  EXPECT_EQ(agent.pinned_version, std::optional<uint64_t>(v2_));
}

}  // namespace
}  // namespace pgfleet::controller
