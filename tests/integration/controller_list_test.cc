// Several controller addresses (issue 24's client side): an agent given
// --controller=A,B,C and fleetctl given the same list find one that answers, and an agent whose
// controller dies moves on to the next one, with real processes: a PostgreSQL 15 cluster, two
// pgfleet-controllers (each on its own SQLite file), a pgfleet-agent and fleetctl.

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/status_macros.h"
#include "gtest/gtest.h"
#include "pgfleet/v1/fleet.pb.h"
#include "tests/testutil/agent_process.h"
#include "tests/testutil/controller_process.h"
#include "tests/testutil/fixtures.h"
#include "tests/testutil/fleet_fixture.h"
#include "tests/testutil/free_port.h"
#include "tests/testutil/json.h"
#include "tests/testutil/status_testing.h"
#include "tests/testutil/wait.h"

namespace pgfleet::testutil {
namespace {

constexpr char kEnv[] = "dev";

[[maybe_unused]] auto* const kCluster = RegisterSharedPostgres(
    PostgresOptions{}, [](PostgresEnv& pg) -> absl::Status { return CreateAppDatabase(pg); });

class ControllerListTest : public FleetFixture {
 protected:
  ControllerListTest() : FleetFixture("pgfleet-ctl-list") {}

  void SetUp() override {
    ASSERT_NE(g_pg, nullptr) << "the shared PostgreSQL cluster did not start";
    ASSERT_NO_FATAL_FAILURE(FleetFixture::SetUp());
  }

  // Whether `address` (one controller, or a list for fleetctl to choose from) lists agent `id`
  // as connected.
  absl::StatusOr<bool> ConnectedOn(const std::string& address, const std::string& id) {
    ctl_address_ = address;
    FleetctlResult listed = Ctl({"agents", "list", "--env", kEnv, "--output", "json"});
    if (listed.exit_code != 0) return absl::InternalError(listed.Describe());
    PGF_ASSIGN_OR_RETURN(pgfleet::v1::ListAgentsResponse agents,
                         ParseJson<pgfleet::v1::ListAgentsResponse>(listed.stdout_text));
    for (const pgfleet::v1::Agent& agent : agents.agents()) {
      if (agent.agent_id() == id) return agent.connected();
    }
    return false;
  }

  absl::Status AwaitConnectedOn(const std::string& address, const std::string& id) {
    return PollUntil(
        [&](std::string* note) -> absl::StatusOr<bool> {
          absl::StatusOr<bool> connected = ConnectedOn(address, id);
          if (!connected.ok()) {
            *note = std::string(connected.status().message());
            return false;
          }
          return *connected;
        },
        absl::Seconds(60), absl::StrCat(id, " connected on ", address));
  }
};

TEST_F(ControllerListTest, AgentAndFleetctlFindAControllerThatAnswersAndMoveOnWhenItDies) {
  ControllerProcess* first = nullptr;
  ControllerProcess* second = nullptr;
  ASSERT_NO_FATAL_FAILURE(StartController({}, &first));
  ASSERT_NO_FATAL_FAILURE(StartController({}, &second));
  // Nothing listens on `dead`: a controller that is down.
  PGF_ASSERT_OK_AND_ASSIGN(int dead_port, PickFreePort());
  const std::string dead = absl::StrCat("127.0.0.1:", dead_port);
  const std::string list = absl::StrCat(dead, ",", first->address(), ",", second->address());

  AgentOptions options = AppAgentOptions({{"auth_type", "scram-sha-256"}});
  options.extra_args = LinkArgs("dev-1", kEnv, list);
  ASSERT_NO_FATAL_FAILURE(StartLinkedAgent("dev-1", options));

  // The agent skips the dead address and joins the first live controller in the list.
  PGF_ASSERT_OK(AwaitConnectedOn(first->address(), "dev-1"));
  // fleetctl with the whole list picks a controller that answers, and says which did not.
  ctl_address_ = list;
  FleetctlResult listed = Ctl({"agents", "list", "--env", kEnv});
  ASSERT_EQ(listed.exit_code, 0) << listed.Describe();
  EXPECT_TRUE(absl::StrContains(listed.stdout_text, "dev-1")) << listed.Describe();
  EXPECT_TRUE(absl::StrContains(listed.stderr_text, absl::StrCat(dead, " does not answer")))
      << listed.Describe();

  // The first controller dies: the agent moves on to the next address.
  PGF_ASSERT_OK(first->Kill9());
  PGF_ASSERT_OK(AwaitConnectedOn(list, "dev-1"));
  PGF_ASSERT_OK_AND_ASSIGN(bool on_second, ConnectedOn(second->address(), "dev-1"));
  EXPECT_TRUE(on_second);
  EXPECT_TRUE(absl::StrContains(agent("dev-1").LogContents(),
                                absl::StrCat("connected to controller ", second->address())))
      << agent("dev-1").LogContents();

  // With none of them up, fleetctl fails as unreachable (exit 3), naming the list.
  PGF_ASSERT_OK(second->Kill9());
  ctl_address_ = absl::StrCat(dead, ",", first->address());
  FleetctlResult unreachable = Ctl({"agents", "list"});
  EXPECT_EQ(unreachable.exit_code, 3) << unreachable.Describe();
}

}  // namespace
}  // namespace pgfleet::testutil
