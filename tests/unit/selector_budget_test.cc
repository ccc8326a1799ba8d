// The connection-budget pre-flight of a rollout with a label selector (issue 18): the matching
// agents count with the new version's render, the others with what they run (their pin or the
// environment's desired version), not everyone with the new one.
#include <map>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "controller/rollout/rollout_engine.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testutil/status_testing.h"
#include "tests/unit/engine_fakes.h"

namespace pgfleet::controller {
namespace {

using testing::FakeAgents;
using testing::FakeClock;
using testing::FakeStore;
using ::testing::HasSubstr;

std::string IniWithPoolSize(int pool_size) {
  return absl::StrCat(
      "[databases]\nappdb = host=10.0.0.5 port=5432 dbname=appdb user=app\n"
      "[pgbouncer]\nlisten_port = 6432\ndefault_pool_size = ",
      pool_size, "\nreserve_pool_size = 0\n");
}

// Four agents, two per zone, all reporting that 10.0.0.5:5432 takes 150 connections: with the
// default reserve (15 kept free) 135 are available.
class SelectorBudgetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_.AddEnvironment("prod");
    v20_ = store_.AddVersion("prod", IniWithPoolSize(20));
    v40_ = store_.AddVersion("prod", IniWithPoolSize(40));
    v60_ = store_.AddVersion("prod", IniWithPoolSize(60));
    store_.SetDesired("prod", v20_);
    for (const char* id : {"a1", "a2", "b1", "b2"}) {
      store_.AddAgent(id, "prod");
      store_.SetLabels(id, {{"zone", std::string(1, id[0])}});
      agents_.Connect(id, "prod", v20_);
      pgfleet::v1::ServerLimits* limits = agents_.NewMetrics(id).add_server_limits();
      limits->set_address("10.0.0.5:5432");
      limits->set_max_connections(150);
    }
    engine_ = std::make_unique<RolloutEngine>(store_, agents_, clock_);
  }
  RolloutSpec Spec(uint64_t version, const std::string& selector) {
    RolloutSpec spec;
    spec.environment = "prod";
    spec.version = version;
    spec.waves = {"100%"};
    spec.selector = selector;
    return spec;
  }

  FakeStore store_;
  FakeAgents agents_;
  FakeClock clock_;
  std::unique_ptr<RolloutEngine> engine_;
  uint64_t v20_ = 0, v40_ = 0, v60_ = 0;
};

TEST_F(SelectorBudgetTest, OnlyMatchingAgentsCountWithTheNewRender) {
  // Everyone at 40: 160 > 135, refused.
  absl::StatusOr<StartedRollout> all = engine_->Start(Spec(v40_, ""), "alice");
  EXPECT_EQ(all.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(all.status().message(), HasSubstr("connection budget of 10.0.0.5:5432 exceeded"));
  // Zone a at 40, zone b at the 20 it runs: 120 <= 135.
  PGF_EXPECT_OK(engine_->Start(Spec(v40_, "zone=a"), "alice").status());
}

TEST_F(SelectorBudgetTest, OthersCountWithWhatTheyRunIncludingTheirPins) {
  // Zone a pinned to 40 by an earlier rollout of theirs (desired stays 20).
  store_.SetAgentPin("a1", v40_).IgnoreError();
  store_.SetAgentPin("a2", v40_).IgnoreError();
  // Zone b to 60: 2 x 60 + 2 x 40 = 200 > 135 (the old count, everyone at 60, was 240; counting
  // zone a at the desired 20 would say 160: both wrong).
  absl::StatusOr<StartedRollout> refused = engine_->Start(Spec(v60_, "zone=b"), "alice");
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(refused.status().message(), HasSubstr("sum to 200 server connections"));
  // Zone b to 40: 4 x 40 = 160 > 135, refused too.
  EXPECT_EQ(engine_->Start(Spec(v40_, "zone=b"), "alice").status().code(),
            absl::StatusCode::kFailedPrecondition);
  // Zone a back to 20 fits: 4 x 20.
  PGF_EXPECT_OK(engine_->Start(Spec(v20_, "zone=a"), "alice").status());
}

}  // namespace
}  // namespace pgfleet::controller
