// Leader lease and fencing (Store::AcquireLeadership), on both store databases: two stores on
// one database stand for two controllers. Once the second took over, the first (deposed)
// one's writes are refused, inside their own transactions, and leave nothing behind.

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testutil/status_testing.h"
#include "tests/unit/store_backends.h"

namespace pgfleet::controller {
namespace {

using ::testing::HasSubstr;

constexpr int64_t kT0 = 1'700'000'040'000;
constexpr int64_t kLeaseMs = 10'000;

class StoreFencingTest : public StoreBackendTest {
 protected:
  void SetUp() override {
    StoreBackendTest::SetUp();
    ASSERT_NE(store_, nullptr);
    PGF_ASSERT_OK_AND_ASSIGN(other_, OpenAgain());  // The second controller.
    PGF_ASSERT_OK_AND_ASSIGN(v1_, store_->AddConfigVersion("prod", "one", "alice", "", kT0));
    PGF_ASSERT_OK_AND_ASSIGN(v2_, store_->AddConfigVersion("prod", "two", "alice", "", kT0));
    AgentRow hello;
    hello.agent_id = "a1";
    hello.environment = "prod";
    hello.agent_version = "0.1.0";
    hello.hostname = "a1";
    PGF_ASSERT_OK(store_->RecordAgentHello(hello, kT0));
  }
  void TearDown() override {
    other_.reset();
    StoreBackendTest::TearDown();
  }
  RolloutRow Rollout() {
    RolloutRow rollout;
    rollout.environment = "prod";
    rollout.from_version = v1_.version;
    rollout.to_version = v2_.version;
    rollout.waves = {"100%"};
    rollout.created_by = "alice";
    rollout.created_unix_ms = kT0;
    return rollout;
  }

  std::unique_ptr<SqliteStore> other_;
  ConfigVersionRow v1_;
  ConfigVersionRow v2_;
};
INSTANTIATE_TEST_SUITE_P(Backends, StoreFencingTest, ::testing::ValuesIn(AllStoreBackends()),
                         StoreBackendName);

TEST_P(StoreFencingTest, OneLeaseAtATimeRenewedByItsHolder) {
  EXPECT_TRUE(absl::IsNotFound(store_->GetLeaderLease().status()));
  PGF_ASSERT_OK_AND_ASSIGN(LeaderLease first, store_->AcquireLeadership("c1", kT0, kLeaseMs));
  EXPECT_EQ(first.holder, "c1");
  EXPECT_EQ(first.fencing_token, 1u);
  EXPECT_EQ(first.expires_unix_ms, kT0 + kLeaseMs);

  // While c1's lease is live, c2 cannot take it.
  absl::StatusOr<LeaderLease> refused = other_->AcquireLeadership("c2", kT0 + 1, kLeaseMs);
  ASSERT_TRUE(absl::IsFailedPrecondition(refused.status())) << refused.status();
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("held by c1"));

  // c1 renews: same token, later expiry.
  PGF_ASSERT_OK_AND_ASSIGN(LeaderLease renewed,
                           store_->AcquireLeadership("c1", kT0 + 5'000, kLeaseMs));
  EXPECT_EQ(renewed.fencing_token, 1u);
  EXPECT_EQ(renewed.expires_unix_ms, kT0 + 5'000 + kLeaseMs);
  EXPECT_FALSE(other_->AcquireLeadership("c2", kT0 + kLeaseMs + 1, kLeaseMs).ok())
      << "the renewal moved the expiry";
  PGF_ASSERT_OK_AND_ASSIGN(LeaderLease stored, other_->GetLeaderLease());
  EXPECT_EQ(stored.holder, "c1");
}

TEST_P(StoreFencingTest, ADeposedLeadersWritesAreRefused) {
  PGF_ASSERT_OK_AND_ASSIGN(LeaderLease c1, store_->AcquireLeadership("c1", kT0, kLeaseMs));
  // As leader, c1 starts a rollout and takes its first step.
  PGF_ASSERT_OK_AND_ASSIGN(RolloutRow rollout, store_->CreateRollout(Rollout(), {}));
  rollout.current_wave = 0;
  rollout.wave_started_unix_ms = kT0 + 1;
  PGF_ASSERT_OK(store_->UpdateRollout(rollout));

  // c1 stalls past its lease (a GC pause, a partition); c2 takes over with a larger token.
  PGF_ASSERT_OK_AND_ASSIGN(LeaderLease c2,
                           other_->AcquireLeadership("c2", kT0 + kLeaseMs + 1, kLeaseMs));
  EXPECT_GT(c2.fencing_token, c1.fencing_token);
  PGF_ASSERT_OK_AND_ASSIGN(RolloutRow seen_by_c2, other_->GetRollout(rollout.id));
  seen_by_c2.current_wave = 1;
  PGF_ASSERT_OK(other_->UpdateRollout(seen_by_c2));

  // c1 wakes up and writes the step it had in mind: refused, whatever the write's shape (a
  // single statement, a transaction, a write-behind flush), and nothing of it lands.
  RolloutRow late = rollout;
  late.current_wave = 7;
  late.reason = "late write from the deposed leader";
  absl::Status refused = store_->UpdateRollout(late);
  ASSERT_TRUE(absl::IsFailedPrecondition(refused)) << refused;
  EXPECT_THAT(std::string(refused.message()), HasSubstr("no longer the leader"));
  EXPECT_THAT(std::string(refused.message()), HasSubstr("c2"));
  EXPECT_TRUE(absl::IsFailedPrecondition(store_->SetDesiredVersion("prod", v2_.version, {})));
  EXPECT_TRUE(absl::IsFailedPrecondition(
      store_->AddConfigVersion("prod", "three", "alice", "", kT0).status()));
  EXPECT_TRUE(absl::IsFailedPrecondition(
      store_->RecordCommand("a1", "pause", "", "c1", kT0 + kLeaseMs + 2).status()));
  EXPECT_TRUE(absl::IsFailedPrecondition(store_->EnsureEnvironment("qa", kT0)));

  PGF_ASSERT_OK_AND_ASSIGN(RolloutRow stored, other_->GetRollout(rollout.id));
  EXPECT_EQ(stored.current_wave, 1) << "the new leader's step stands";
  EXPECT_EQ(stored.reason, "");
  PGF_ASSERT_OK_AND_ASSIGN(EnvironmentRow prod, other_->GetEnvironment("prod"));
  EXPECT_EQ(prod.desired_version, 0u);
  PGF_ASSERT_OK_AND_ASSIGN(std::vector<ConfigVersionRow> versions,
                           other_->ListConfigVersions("prod"));
  EXPECT_EQ(versions.size(), 2u);
  EXPECT_TRUE(absl::IsNotFound(other_->GetEnvironment("qa").status()));

  // c1 cannot renew its way back while c2 leads; reads still work.
  absl::StatusOr<LeaderLease> renew = store_->AcquireLeadership("c1", kT0 + kLeaseMs + 3, kLeaseMs);
  ASSERT_TRUE(absl::IsFailedPrecondition(renew.status())) << renew.status();
  EXPECT_THAT(std::string(renew.status().message()), HasSubstr("deposed"));
  PGF_EXPECT_OK(store_->GetRollout(rollout.id).status());

  // The new leader writes as usual.
  PGF_EXPECT_OK(other_->SetDesiredVersion("prod", v2_.version, {}));
  PGF_EXPECT_OK(other_->RecordCommand("a1", "pause", "", "c2", kT0 + kLeaseMs + 4).status());
}

}  // namespace
}  // namespace pgfleet::controller
