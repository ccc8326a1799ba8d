// Label selectors end to end (issue 18, part 3), with real processes only: a PostgreSQL 15
// cluster, a pgfleet-controller and three pgfleet-agents of environment "sel" started with
// different --labels, and the fleetctl binary as an operator runs it.
//
//   sel-a1  --labels=zone=a,size=large
//   sel-a2  --labels=zone=a,size=small
//   sel-b1  --labels=zone=b
//
// Covers: `agents list -l` with each operator (=, !=, in, notin, exists, !exists) and the JSON
// API's ListAgents with the same selector; `agents label` adding, refusing to change a value
// without --overwrite, overwriting, removing a reported label, and the operator's labels
// surviving a reconnect; a bad selector (exit 2, naming the column) and one matching nothing (a
// clear error); `pause -l` pausing only the matching agents; `rollout start -l` moving only the
// matching agents and leaving the others on their version; a viewer refused `agents label`.

#include <sys/wait.h>

#include <algorithm>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/algorithm/container.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "common/status_macros.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "pgfleet/v1/fleet.pb.h"
#include "tests/testutil/agent_process.h"
#include "tests/testutil/controller_process.h"
#include "tests/testutil/fixtures.h"
#include "tests/testutil/fleet_fixture.h"
#include "tests/testutil/http.h"
#include "tests/testutil/json.h"
#include "tests/testutil/status_testing.h"
#include "tests/testutil/wait.h"

namespace pgfleet::testutil {
namespace {

constexpr char kEnv[] = "sel";

[[maybe_unused]] auto* const kCluster = RegisterSharedPostgres(
    PostgresOptions{}, [](PostgresEnv& pg) -> absl::Status { return CreateAppDatabase(pg); });

// Whether the agent holds appdb paused (by itself or through a pause of every database).
absl::StatusOr<bool> AppdbPaused(int port) {
  absl::StatusOr<std::vector<NamedRow>> rows = AdminShow(port, "SHOW STATE");
  if (!rows.ok()) return rows.status();
  NamedRow state;
  for (NamedRow& row : *rows) state[row["key"]] = row["value"];
  return state["paused"] == "yes" ||
         absl::c_linear_search(absl::StrSplit(state["paused_databases"], ','), kAppDb);
}

class SelectorsTest : public FleetFixture {
 protected:
  SelectorsTest() : FleetFixture("pgfleet-sel") {}

  const std::map<std::string, std::string> labels_ = {
      {"sel-a1", "zone=a,size=large"}, {"sel-a2", "zone=a,size=small"}, {"sel-b1", "zone=b"}};

  void SetUp() override {
    ASSERT_NE(g_pg, nullptr) << "the shared PostgreSQL cluster did not start";
    ASSERT_NO_FATAL_FAILURE(FleetFixture::SetUp());
    ControllerOptions options;
    AddHttpListener(options, dir_ + "/http.port");
    ASSERT_NO_FATAL_FAILURE(StartController(options));
    PGF_ASSERT_OK_AND_ASSIGN(http_port_, AwaitHttpPort(dir_ + "/http.port"));
    for (const auto& [id, labels] : labels_) ASSERT_NO_FATAL_FAILURE(StartAgent(id));
    PGF_ASSERT_OK(WaitAgents("all connected", [&](const pgfleet::v1::ListAgentsResponse& list) {
      return list.agents_size() == 3 &&
             absl::c_all_of(list.agents(), [](const auto& a) { return a.connected(); });
    }));
  }

  void StartAgent(const std::string& id) {
    AgentOptions options = AppAgentOptions({{"auth_type", "scram-sha-256"},
                                            {"pool_mode", "transaction"},
                                            {"default_pool_size", "5"},
                                            {"admin_users", kAdminUser}});
    options.extra_args = LinkArgs(id, kEnv, controller_->address());
    // Several agents of one environment on this host: each keeps its own port.
    options.extra_args.push_back("--local-listeners");
    options.extra_args.push_back(absl::StrCat("--labels=", labels_.at(id)));
    options.extra_args.push_back(absl::StrCat("--allow-path=", dir_));
    StartLinkedAgent(id, options);
  }

  absl::StatusOr<pgfleet::v1::ListAgentsResponse> List(const std::string& selector = "") const {
    std::vector<std::string> args = {"agents", "list", "--env", kEnv, "--output", "json"};
    if (!selector.empty()) args.insert(args.end(), {"-l", selector});
    FleetctlResult result = Ctl(args);
    if (result.exit_code != 0) return absl::InternalError(result.Describe());
    return ParseJson<pgfleet::v1::ListAgentsResponse>(result.stdout_text);
  }
  // The ids `agents list -l selector` prints, sorted.
  std::vector<std::string> Ids(const std::string& selector) const {
    absl::StatusOr<pgfleet::v1::ListAgentsResponse> list = List(selector);
    EXPECT_TRUE(list.ok()) << list.status();
    std::vector<std::string> ids;
    if (list.ok()) {
      for (const auto& agent : list->agents()) ids.push_back(agent.agent_id());
    }
    return ids;
  }
  pgfleet::v1::Agent Agent(const std::string& id) const {
    FleetctlResult result = Ctl({"agents", "show", id, "--output", "json"});
    EXPECT_EQ(result.exit_code, 0) << result.Describe();
    absl::StatusOr<pgfleet::v1::Agent> agent = ParseJson<pgfleet::v1::Agent>(result.stdout_text);
    EXPECT_TRUE(agent.ok()) << agent.status();
    return agent.ok() ? *agent : pgfleet::v1::Agent{};
  }
  static std::string Labels(const pgfleet::v1::Agent& agent) {
    std::map<std::string, std::string> sorted(agent.labels().begin(), agent.labels().end());
    std::vector<std::string> parts;
    for (const auto& [k, v] : sorted) parts.push_back(absl::StrCat(k, "=", v));
    return absl::StrJoin(parts, ",");
  }

  absl::Status WaitAgents(const std::string& what,
                          const std::function<bool(const pgfleet::v1::ListAgentsResponse&)>& ok) {
    return PollUntil(
        [&](std::string* note) -> absl::StatusOr<bool> {
          absl::StatusOr<pgfleet::v1::ListAgentsResponse> list = List();
          if (!list.ok()) {
            *note = std::string(list.status().message());
            return false;
          }
          std::vector<std::string> seen;
          for (const auto& a : list->agents()) {
            seen.push_back(absl::StrCat(a.agent_id(), a.connected() ? " up" : " down", " v",
                                        a.applied_version(), " pin v", a.pinned_version()));
          }
          *note = absl::StrJoin(seen, ", ");
          return ok(*list);
        },
        absl::Seconds(60), what, absl::Milliseconds(100));
  }

  absl::StatusOr<uint64_t> Push(const std::string& pool_size) {
    const std::string path = absl::StrCat(dir_, "/push-", pool_size, ".ini");
    PGF_RETURN_IF_ERROR(WriteFile(
        path, absl::StrCat("[databases]\n", kAppDb, " = host=127.0.0.1 port=", g_pg->port(),
                           " dbname=", kAppDb,
                           "\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = 6432\n"
                           "unix_socket_dir =\nauth_type = scram-sha-256\nauth_file = ",
                           users_path_, "\nadmin_users = ", kAdminUser,
                           "\npool_mode = transaction\ndefault_pool_size = ", pool_size, "\n")));
    FleetctlResult result =
        Ctl({"config", "push", "--env", kEnv, "-f", path, "-m", "selectors", "--output", "json"});
    if (result.exit_code != 0) return absl::InternalError(result.Describe());
    absl::StatusOr<pgfleet::v1::ConfigVersion> version =
        ParseJson<pgfleet::v1::ConfigVersion>(result.stdout_text);
    if (!version.ok()) return version.status();
    return version->version();
  }

  int http_port_ = 0;
};

TEST_F(SelectorsTest, AgentsListFiltersWithEveryOperatorOverGrpcAndHttp) {
  using V = std::vector<std::string>;
  EXPECT_EQ(Ids(""), (V{"sel-a1", "sel-a2", "sel-b1"}));
  EXPECT_EQ(Ids("zone=a"), (V{"sel-a1", "sel-a2"}));
  EXPECT_EQ(Ids("zone==b"), (V{"sel-b1"}));
  EXPECT_EQ(Ids("zone!=a"), (V{"sel-b1"}));
  EXPECT_EQ(Ids("size in (large,xlarge)"), (V{"sel-a1"}));
  EXPECT_EQ(Ids("size notin (large)"), (V{"sel-a2", "sel-b1"}));
  EXPECT_EQ(Ids("size"), (V{"sel-a1", "sel-a2"}));
  EXPECT_EQ(Ids("!size"), (V{"sel-b1"}));
  EXPECT_EQ(Ids("zone=a,size!=large"), (V{"sel-a2"}));
  // Nothing matches: an empty list (a query, not an action), said on stderr.
  FleetctlResult none = Ctl({"agents", "list", "--env", kEnv, "-l", "zone=z"});
  EXPECT_EQ(none.exit_code, 0) << none.Describe();
  EXPECT_THAT(none.stderr_text, ::testing::HasSubstr("no agent matches zone=z"));

  // The table shows labels and pins.
  FleetctlResult table = Ctl({"agents", "list", "--env", kEnv, "--selector", "zone=b"});
  EXPECT_EQ(table.exit_code, 0) << table.Describe();
  EXPECT_THAT(table.stdout_text, ::testing::HasSubstr("PINNED"));
  EXPECT_THAT(table.stdout_text, ::testing::HasSubstr("zone=b"));
  EXPECT_THAT(table.stdout_text, ::testing::Not(::testing::HasSubstr("sel-a1")));

  // The JSON API filters through the same code: GET with the selector in the query string.
  const std::vector<std::string> auth = {absl::StrCat("Authorization: Bearer ", token_)};
  PGF_ASSERT_OK_AND_ASSIGN(
      HttpResponse filtered,
      HttpGet(http_port_, "/api/ListAgents?environment=sel&selector=size%20notin%20(large)", auth));
  ASSERT_EQ(filtered.status, 200) << filtered.raw;
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ListAgentsResponse http_list,
                           ParseJson<pgfleet::v1::ListAgentsResponse>(filtered.body));
  V http_ids;
  for (const auto& agent : http_list.agents()) http_ids.push_back(agent.agent_id());
  EXPECT_EQ(http_ids, (V{"sel-a2", "sel-b1"}));
  PGF_ASSERT_OK_AND_ASSIGN(
      HttpResponse bad,
      HttpGet(http_port_, "/api/ListAgents?environment=sel&selector=zone%20in", auth));
  EXPECT_EQ(bad.status, 400) << bad.raw;
  EXPECT_THAT(bad.body, ::testing::HasSubstr("column"));
}

TEST_F(SelectorsTest, BadSelectorIsAUsageErrorNamingTheColumn) {
  for (std::vector<std::string> args : std::vector<std::vector<std::string>>{
           {"agents", "list", "--env", kEnv, "-l", "size in (large"},
           {"rollout", "start", "--env", kEnv, "--version", "v1", "-l", "size in (large"},
           {"pause", "--env", kEnv, "-l", "size in (large"},
           {"reload", "--env", kEnv, "-l", "size in (large"}}) {
    FleetctlResult result = Ctl(args);
    EXPECT_EQ(result.exit_code, 2) << result.Describe();
    EXPECT_THAT(result.stderr_text, ::testing::HasSubstr("column 15")) << result.Describe();
  }
}

TEST_F(SelectorsTest, LabelAddOverwriteRemoveAndSurviveReconnect) {
  // Add a new label.
  FleetctlResult added = Ctl({"agents", "label", "sel-b1", "tier=gold"});
  EXPECT_EQ(added.exit_code, 0) << added.Describe();
  EXPECT_EQ(Labels(Agent("sel-b1")), "tier=gold,zone=b");
  EXPECT_EQ(Ids("tier=gold"), (std::vector<std::string>{"sel-b1"}));
  // Changing an existing value (reported by the agent) needs --overwrite: a usage error.
  FleetctlResult refused = Ctl({"agents", "label", "sel-b1", "zone=c"});
  EXPECT_EQ(refused.exit_code, 2) << refused.Describe();
  EXPECT_THAT(refused.stderr_text, ::testing::HasSubstr("'zone' already has a value (b)"));
  EXPECT_EQ(Labels(Agent("sel-b1")), "tier=gold,zone=b");
  FleetctlResult overwritten = Ctl({"agents", "label", "sel-b1", "zone=c", "--overwrite"});
  EXPECT_EQ(overwritten.exit_code, 0) << overwritten.Describe();
  // Removing a label the agent reports, and a malformed argument.
  FleetctlResult removed = Ctl({"agents", "label", "sel-a1", "size-"});
  EXPECT_EQ(removed.exit_code, 0) << removed.Describe();
  FleetctlResult malformed = Ctl({"agents", "label", "sel-a1", "size"});
  EXPECT_EQ(malformed.exit_code, 2) << malformed.Describe();
  EXPECT_EQ(Ids("size"), (std::vector<std::string>{"sel-a2"}));
  EXPECT_EQ(Ids("zone=c"), (std::vector<std::string>{"sel-b1"}));
  pgfleet::v1::Agent a1 = Agent("sel-a1");
  EXPECT_EQ(Labels(a1), "zone=a");
  EXPECT_EQ(a1.reported_labels().at("size"), "large");
  EXPECT_THAT(a1.removed_labels(), ::testing::ElementsAre("size"));
  EXPECT_EQ(Agent("sel-b1").operator_labels().at("zone"), "c");

  // The operator's labels win over --labels again after the agents reconnect.
  for (const std::string id : {"sel-a1", "sel-b1"}) {
    absl::StatusOr<int> stopped = agents_.at(id)->Stop(absl::Seconds(10));
    ASSERT_TRUE(stopped.ok()) << stopped.status();
    old_agents_.push_back(std::move(agents_.at(id)));
    agents_.erase(id);
    ASSERT_NO_FATAL_FAILURE(StartAgent(id));
  }
  PGF_ASSERT_OK(WaitAgents("all reconnected", [&](const pgfleet::v1::ListAgentsResponse& list) {
    return absl::c_all_of(list.agents(), [](const auto& a) { return a.connected(); });
  }));
  EXPECT_EQ(Labels(Agent("sel-a1")), "zone=a");
  EXPECT_EQ(Labels(Agent("sel-b1")), "tier=gold,zone=c");

  // Removing an operator-only label just drops it.
  FleetctlResult dropped = Ctl({"agents", "label", "sel-b1", "tier-"});
  EXPECT_EQ(dropped.exit_code, 0) << dropped.Describe();
  EXPECT_EQ(Labels(Agent("sel-b1")), "zone=c");
}

TEST_F(SelectorsTest, ViewerCannotLabel) {
  FleetctlResult created =
      Ctl({"token", "create", "--role", "viewer", "--name", "sel-viewer", "--output", "json"});
  ASSERT_EQ(created.exit_code, 0) << created.Describe();
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::CreateTokenResponse viewer,
                           ParseJson<pgfleet::v1::CreateTokenResponse>(created.stdout_text));
  FleetctlResult refused = CtlAs(viewer.secret(), {"agents", "label", "sel-a1", "tier=gold"});
  EXPECT_EQ(refused.exit_code, 4) << refused.Describe();
  EXPECT_EQ(Labels(Agent("sel-a1")), "size=large,zone=a");
  // Listing with a selector is a read: the viewer may.
  FleetctlResult listed = CtlAs(viewer.secret(), {"agents", "list", "--env", kEnv, "-l", "zone=a"});
  EXPECT_EQ(listed.exit_code, 0) << listed.Describe();
}

TEST_F(SelectorsTest, SelectorMatchingNothingIsAnError) {
  PGF_ASSERT_OK_AND_ASSIGN(uint64_t v1, Push("5"));
  PGF_ASSERT_OK_AND_ASSIGN(uint64_t v2, Push("6"));
  FleetctlResult applied =
      Ctl({"config", "apply", "--env", kEnv, "--version", absl::StrCat("v", v1)});
  ASSERT_EQ(applied.exit_code, 0) << applied.Describe();
  for (std::vector<std::string> args : std::vector<std::vector<std::string>>{
           {"rollout", "start", "--env", kEnv, "--version", absl::StrCat("v", v2), "-l", "zone=z"},
           {"pause", "--env", kEnv, "--for", "1m", "-l", "zone=z"},
           {"reload", "--env", kEnv, "-l", "zone=z"}}) {
    FleetctlResult result = Ctl(args);
    EXPECT_EQ(result.exit_code, 1) << result.Describe();
    EXPECT_THAT(result.stderr_text,
                ::testing::HasSubstr("selector \"zone=z\" matches no agent of environment sel"))
        << result.Describe();
  }
}

TEST_F(SelectorsTest, PauseWithSelectorPausesOnlyMatchingAgents) {
  FleetctlResult paused = Ctl({"pause", "--env", kEnv, "--db", kAppDb, "--for", "2m", "--wait",
                               "-l", "size in (large,small)"});
  ASSERT_EQ(paused.exit_code, 0) << paused.Describe();
  EXPECT_THAT(paused.stdout_text, ::testing::HasSubstr("-l size in (large,small)"));
  for (const std::string id : {"sel-a1", "sel-a2"}) {
    PGF_ASSERT_OK_AND_ASSIGN(bool is_paused, AppdbPaused(port(id)));
    EXPECT_TRUE(is_paused) << id;
  }
  PGF_ASSERT_OK_AND_ASSIGN(bool b1_paused, AppdbPaused(port("sel-b1")));
  EXPECT_FALSE(b1_paused) << "sel-b1 does not match the selector";
  FleetctlResult resumed = Ctl({"resume", "--env", kEnv, "--db", kAppDb});
  ASSERT_EQ(resumed.exit_code, 0) << resumed.Describe();
  for (const std::string id : {"sel-a1", "sel-a2"}) {
    PGF_ASSERT_OK(PollUntil(
        [&](std::string*) -> absl::StatusOr<bool> {
          absl::StatusOr<bool> is_paused = AppdbPaused(port(id));
          if (!is_paused.ok()) return is_paused.status();
          return !*is_paused;
        },
        absl::Seconds(15), absl::StrCat(id, " to resume")));
  }
}

TEST_F(SelectorsTest, RolloutWithSelectorMovesOnlyMatchingAgents) {
  PGF_ASSERT_OK_AND_ASSIGN(uint64_t v1, Push("5"));
  PGF_ASSERT_OK_AND_ASSIGN(uint64_t v2, Push("6"));
  FleetctlResult applied =
      Ctl({"config", "apply", "--env", kEnv, "--version", absl::StrCat("v", v1)});
  ASSERT_EQ(applied.exit_code, 0) << applied.Describe();
  PGF_ASSERT_OK(WaitAgents("every agent on v1", [&](const pgfleet::v1::ListAgentsResponse& list) {
    return absl::c_all_of(list.agents(), [&](const auto& a) { return a.applied_version() == v1; });
  }));
  FleetctlResult started =
      Ctl({"rollout", "start", "--env", kEnv, "--version", absl::StrCat("v", v2), "--waves",
           "1,100%", "--bake", "1s", "-l", "zone=a", "--watch"});
  ASSERT_EQ(started.exit_code, 0) << started.Describe();
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ListAgentsResponse list, List());
  for (const auto& agent : list.agents()) {
    if (agent.agent_id() == "sel-b1") {
      EXPECT_EQ(agent.applied_version(), v1) << "sel-b1 does not match: it keeps its version";
      EXPECT_EQ(agent.pinned_version(), 0u);
      EXPECT_EQ(agent.desired_version(), v1);
    } else {
      EXPECT_EQ(agent.applied_version(), v2) << agent.agent_id();
      EXPECT_EQ(agent.pinned_version(), v2) << agent.agent_id() << " stays pinned";
    }
  }
  FleetctlResult env = Ctl({"env", "list", "--output", "json"});
  ASSERT_EQ(env.exit_code, 0) << env.Describe();
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ListEnvironmentsResponse envs,
                           ParseJson<pgfleet::v1::ListEnvironmentsResponse>(env.stdout_text));
  ASSERT_EQ(envs.environments_size(), 1);
  EXPECT_EQ(envs.environments(0).desired_version(), v1) << "the environment's version is unchanged";
  FleetctlResult status = Ctl({"rollout", "status", "--env", kEnv, "--output", "json"});
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::Rollout rollout,
                           ParseJson<pgfleet::v1::Rollout>(status.stdout_text));
  EXPECT_EQ(rollout.selector(), "zone=a");
  EXPECT_EQ(rollout.agents_size(), 2);
}

}  // namespace
}  // namespace pgfleet::testutil
