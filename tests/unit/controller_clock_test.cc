// The controller's API takes the time from the Clock it is given, like the engines: token
// expiry, token states and an agent's first and last sighting follow a fake clock that is
// far from the wall clock.

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "controller/api/fleet_api.h"
#include "controller/auth/token_admin.h"
#include "controller/auth/tokens.h"
#include "controller/clock.h"
#include "controller/registry/agent_registry.h"
#include "controller/store/store.h"
#include "gtest/gtest.h"
#include "tests/testutil/status_testing.h"
#include "tests/testutil/temp_dir.h"
#include "tests/unit/engine_fakes.h"

namespace pgfleet::controller {
namespace {

using testing::FakeClock;

const Caller kAdmin{"root", Role::kAdmin};

class ControllerClockTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PGF_ASSERT_OK(dir_.Create("pgfleet_clock"));
    PGF_ASSERT_OK_AND_ASSIGN(store_, OpenSqliteStore(dir_.path() + "/fleet.db"));
  }

  testutil::TempDir dir_;  // Declared before the store: removed after it closes.
  // Years before the wall clock: anything read from absl::Now() shows up.
  FakeClock clock_{absl::FromUnixSeconds(1'000'000'000)};
  std::unique_ptr<Store> store_;
};

TEST_F(ControllerClockTest, TokenExpiryFollowsTheClock) {
  TokenAdmin tokens(*store_, clock_);
  pgfleet::v1::CreateTokenRequest create;
  create.set_name("short-lived");
  create.set_role("viewer");
  create.set_expires_in_seconds(60);
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::CreateTokenResponse created, tokens.Create(kAdmin, create));
  EXPECT_EQ(created.token().created_unix_ms(), UnixMillis(clock_.Now()));
  EXPECT_EQ(created.token().expires_unix_ms(), UnixMillis(clock_.Now() + absl::Seconds(60)));
  const std::string bearer = "Bearer " + created.secret();

  clock_.Advance(absl::Seconds(59));
  PGF_ASSERT_OK_AND_ASSIGN(Caller caller, AuthenticateBearer(*store_, bearer, clock_.Now()));
  EXPECT_EQ(caller.actor, "short-lived");

  clock_.Advance(absl::Seconds(1));
  absl::Status expired = AuthenticateBearer(*store_, bearer, clock_.Now()).status();
  EXPECT_TRUE(absl::IsUnauthenticated(expired)) << expired;
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ListTokensResponse listed, tokens.List(kAdmin, {}));
  ASSERT_EQ(listed.tokens_size(), 1);
  EXPECT_EQ(listed.tokens(0).state(), "expired");
}

TEST_F(ControllerClockTest, AgentSightingsFollowTheClock) {
  AgentRegistry registry;
  FleetApi api(*store_, registry, clock_);
  pgfleet::v1::AgentHello hello;
  hello.set_agent_id("a1");
  hello.set_environment("dev");
  hello.set_hostname("a1.example");
  PGF_ASSERT_OK(api.OnAgentHello(hello));
  const int64_t first = UnixMillis(clock_.Now());

  clock_.Advance(absl::Minutes(5));
  PGF_ASSERT_OK(api.OnAgentHello(hello));
  PGF_ASSERT_OK_AND_ASSIGN(AgentRow agent, store_->GetAgent("a1"));
  EXPECT_EQ(agent.first_seen_unix_ms, first);
  EXPECT_EQ(agent.last_seen_unix_ms, UnixMillis(clock_.Now()));
}

}  // namespace
}  // namespace pgfleet::controller
