// Per-host differences (issue 18, part 2) with real processes: a controller, three agents
// started with different --labels, one PostgreSQL. A version with overlays renders and applies
// differently per agent; `config render` is what each agent runs; equal-rank conflicts and a
// render that fails validation for one agent are refused at push; the rollout budget sums the
// rendered pool sizes; drift shows an agent whose applied render is not its desired one.
#include <map>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "controller/store/store.h"
#include "gtest/gtest.h"
#include "pgfleet/v1/fleet.pb.h"
#include "tests/testutil/fixtures.h"
#include "tests/testutil/fleet_fixture.h"
#include "tests/testutil/json.h"
#include "tests/testutil/pq.h"
#include "tests/testutil/status_testing.h"
#include "tests/testutil/wait.h"

namespace pgfleet::testutil {
namespace {

[[maybe_unused]] auto* const kCluster = RegisterSharedPostgres(
    [] {
      PostgresOptions options;
      options.max_connections = 100;
      return options;
    }(),
    [](PostgresEnv& pg) -> absl::Status { return CreateAppDatabase(pg); });

constexpr char kEnv[] = "prod";
// big: size=large in zone a; small-a: size=small in zone a; small-b: size=small in zone b.
const std::map<std::string, std::string> kLabels = {{"big", "size=large,zone=a"},
                                                    {"small-a", "size=small,zone=a"},
                                                    {"small-b", "size=small,zone=b"}};
const std::vector<std::string> kAgents = {"big", "small-a", "small-b"};

class OverlaysTest : public FleetFixture {
 protected:
  OverlaysTest() : FleetFixture("pgfleet-overlays") {}

  void SetUp() override {
    ASSERT_NE(g_pg, nullptr) << "the shared PostgreSQL cluster did not start";
    ASSERT_NO_FATAL_FAILURE(FleetFixture::SetUp());
    ASSERT_NO_FATAL_FAILURE(StartController());
    for (const std::string& id : kAgents) {
      AgentOptions options = AppAgentOptions({{"auth_type", "scram-sha-256"},
                                              {"pool_mode", "transaction"},
                                              {"default_pool_size", "20"},
                                              {"admin_users", kAdminUser}});
      options.extra_args = LinkArgs(id, kEnv, controller_->address());
      // Several agents of one environment on this host: each keeps its own port.
      options.extra_args.push_back("--local-listeners");
      options.extra_args.push_back(absl::StrCat("--allow-path=", dir_));
      options.extra_args.push_back(absl::StrCat("--labels=", kLabels.at(id)));
      ASSERT_NO_FATAL_FAILURE(StartLinkedAgent(id, options));
    }
    PGF_ASSERT_OK(
        WaitForAgents("connected", [](const pgfleet::v1::Agent& a) { return a.connected(); }));
  }

  // The base every version here starts from: pool size 20 on appdb.
  std::string BaseIni(const std::map<std::string, std::string>& overrides = {}) const {
    std::map<std::string, std::string> settings = {
        {"listen_addr", "127.0.0.1"},   {"listen_port", "6432"},     {"unix_socket_dir", ""},
        {"auth_type", "scram-sha-256"}, {"auth_file", users_path_},  {"admin_users", kAdminUser},
        {"pool_mode", "transaction"},   {"default_pool_size", "20"}, {"max_client_conn", "300"},
    };
    for (const auto& [key, value] : overrides) settings[key] = value;
    std::string ini =
        absl::StrCat("; fleet base\n[databases]\n", kAppDb, " = host=127.0.0.1 port=", g_pg->port(),
                     " dbname=", kAppDb, "\n\n[pgbouncer]\n");
    for (const auto& [key, value] : settings) absl::StrAppend(&ini, key, " = ", value, "\n");
    return ini;
  }

  // The overlays of the main scenario: pool size by size label, a database only zone a has,
  // and one agent's own max_client_conn.
  std::string Overlays(int large_pool_size = 40) const {
    return absl::StrCat(
        "[pgfleet.overlay]\nname = large\nselector = size in (large,xlarge)\n"
        "[pgbouncer]\ndefault_pool_size = ",
        large_pool_size,
        "\n"
        "[pgfleet.overlay]\nname = small\nselector = size=small\n"
        "[pgbouncer]\ndefault_pool_size = 10\n"
        "[pgfleet.overlay]\nname = zone a\nselector = zone=a\n"
        "[databases]\nzonedb = host=127.0.0.1 port=",
        g_pg->port(), " dbname=", kAppDb,
        "\n"
        "[pgfleet.overlay]\nagent = small-b\n[pgbouncer]\nmax_client_conn = 123\n");
  }

  // `config push` of a base and overlay files; the command's result.
  FleetctlResult PushWith(const std::string& base, const std::vector<std::string>& overlays) {
    const int n = ++pushes_;
    const std::string base_path = absl::StrCat(dir_, "/base-", n, ".ini");
    EXPECT_TRUE(WriteFile(base_path, base).ok());
    std::vector<std::string> args = {"config", "push",    "--env",    kEnv,
                                     "-f",     base_path, "--output", "json"};
    for (size_t i = 0; i < overlays.size(); ++i) {
      const std::string path = absl::StrCat(dir_, "/overlay-", n, "-", i, ".ini");
      EXPECT_TRUE(WriteFile(path, overlays[i]).ok());
      args.insert(args.end(), {"--overlay", path});
    }
    return Ctl(args);
  }

  absl::StatusOr<uint64_t> Push(const std::string& base, const std::vector<std::string>& overlays) {
    FleetctlResult result = PushWith(base, overlays);
    if (result.exit_code != 0) return absl::InternalError(result.Describe());
    PGF_ASSIGN_OR_RETURN(pgfleet::v1::ConfigVersion version,
                         ParseJson<pgfleet::v1::ConfigVersion>(result.stdout_text));
    return version.version();
  }

  absl::StatusOr<pgfleet::v1::ListAgentsResponse> ListAgents() const {
    FleetctlResult result = Ctl({"agents", "list", "--env", kEnv, "--output", "json"});
    if (result.exit_code != 0) return absl::InternalError(result.Describe());
    return ParseJson<pgfleet::v1::ListAgentsResponse>(result.stdout_text);
  }

  absl::Status WaitForAgents(const std::string& what,
                             const std::function<bool(const pgfleet::v1::Agent&)>& condition) {
    return PollUntil(
        [&](std::string* note) -> absl::StatusOr<bool> {
          PGF_ASSIGN_OR_RETURN(pgfleet::v1::ListAgentsResponse list, ListAgents());
          *note = list.DebugString();
          if (list.agents_size() != static_cast<int>(kAgents.size())) return false;
          for (const auto& agent : list.agents()) {
            if (!condition(agent)) return false;
          }
          return true;
        },
        absl::Seconds(30), what, absl::Milliseconds(100));
  }

  std::map<std::string, pgfleet::v1::Agent> AgentsById() {
    std::map<std::string, pgfleet::v1::Agent> by_id;
    absl::StatusOr<pgfleet::v1::ListAgentsResponse> list = ListAgents();
    EXPECT_TRUE(list.ok()) << list.status();
    if (list.ok()) {
      for (const auto& agent : list->agents()) by_id[agent.agent_id()] = agent;
    }
    return by_id;
  }

  std::string ShowConfig(const std::string& id, const std::string& key) {
    absl::StatusOr<std::vector<NamedRow>> rows = AdminShow(port(id), "SHOW CONFIG");
    EXPECT_TRUE(rows.ok()) << rows.status();
    if (!rows.ok()) return "";
    for (NamedRow& row : *rows) {
      if (row["key"] == key) return row["value"];
    }
    return "<none>";
  }

  bool HasDatabase(const std::string& id, const std::string& name) {
    absl::StatusOr<std::vector<NamedRow>> rows = AdminShow(port(id), "SHOW DATABASES");
    EXPECT_TRUE(rows.ok()) << rows.status();
    if (!rows.ok()) return false;
    for (NamedRow& row : *rows) {
      if (row["name"] == name) return true;
    }
    return false;
  }

  FleetctlResult Render(const std::string& id, uint64_t version) const {
    return Ctl({"config", "render", "--env", kEnv, "--agent", id, "--version",
                absl::StrCat("v", version)});
  }

  // Pushes the base alone and applies it everywhere (rollouts need a desired version).
  uint64_t ApplyBase() {
    absl::StatusOr<uint64_t> base = Push(BaseIni(), {});
    EXPECT_TRUE(base.ok()) << base.status();
    FleetctlResult applied =
        Ctl({"config", "apply", "--env", kEnv, "--version", absl::StrCat("v", *base), "--wait"});
    EXPECT_EQ(applied.exit_code, 0) << applied.Describe();
    return *base;
  }

  int pushes_ = 0;
};

TEST_F(OverlaysTest, VersionRendersAndAppliesDifferentlyPerAgent) {
  PGF_ASSERT_OK_AND_ASSIGN(uint64_t version, Push(BaseIni(), {Overlays()}));
  FleetctlResult applied =
      Ctl({"config", "apply", "--env", kEnv, "--version", absl::StrCat("v", version), "--wait"});
  ASSERT_EQ(applied.exit_code, 0) << applied.Describe();

  // Each agent runs its own render: pool size by size label, zonedb only in zone a, and the
  // agent overlay on small-b alone.
  EXPECT_EQ(ShowConfig("big", "default_pool_size"), "40");
  EXPECT_EQ(ShowConfig("small-a", "default_pool_size"), "10");
  EXPECT_EQ(ShowConfig("small-b", "default_pool_size"), "10");
  EXPECT_TRUE(HasDatabase("big", "zonedb"));
  EXPECT_TRUE(HasDatabase("small-a", "zonedb"));
  EXPECT_FALSE(HasDatabase("small-b", "zonedb"));
  EXPECT_EQ(ShowConfig("big", "max_client_conn"), "300");
  EXPECT_EQ(ShowConfig("small-b", "max_client_conn"), "123");
  // A client gets through the overlay-only database.
  PGF_ASSERT_OK_AND_ASSIGN(PgConn conn,
                           Connect(TcpConnString(port("big"), "zonedb", kAppUser, kAppPassword)));
  PGF_EXPECT_OK(ScalarInt(conn.get(), "select 1").status());

  // `config render` prints exactly what each agent runs: its sha256 is the one the agent
  // reports, and no agent has drifted.
  PGF_ASSERT_OK(WaitForAgents("every agent reports its render", [&](const pgfleet::v1::Agent& a) {
    return a.applied_version() == version && !a.applied_sha256().empty();
  }));
  std::map<std::string, pgfleet::v1::Agent> agents = AgentsById();
  std::map<std::string, std::string> renders;
  for (const std::string& id : kAgents) {
    FleetctlResult rendered = Render(id, version);
    ASSERT_EQ(rendered.exit_code, 0) << rendered.Describe();
    renders[id] = rendered.stdout_text;
    EXPECT_EQ(controller::Sha256Hex(rendered.stdout_text), agents[id].applied_sha256()) << id;
    EXPECT_EQ(agents[id].desired_sha256(), agents[id].applied_sha256()) << id;
    EXPECT_FALSE(agents[id].drifted()) << id;
    // The base's comment and layout survive the edits.
    EXPECT_TRUE(absl::StartsWith(rendered.stdout_text, "; fleet base\n[databases]\n")) << id;
  }
  EXPECT_NE(renders["big"], renders["small-a"]);
  EXPECT_NE(renders["small-a"], renders["small-b"]);
  EXPECT_TRUE(absl::StrContains(Render("big", version).stderr_text,
                                "base + overlay \"large\" + overlay \"zone a\""));

  // diff --agent compares two versions as that agent runs them.
  PGF_ASSERT_OK_AND_ASSIGN(uint64_t next, Push(BaseIni(), {Overlays(/*large_pool_size=*/45)}));
  FleetctlResult diff = Ctl(
      {"config", "diff", absl::StrCat("v", version), absl::StrCat("v", next), "--agent", "big"});
  ASSERT_EQ(diff.exit_code, 0) << diff.Describe();
  EXPECT_TRUE(absl::StrContains(diff.stdout_text, "-default_pool_size = 40")) << diff.stdout_text;
  EXPECT_TRUE(absl::StrContains(diff.stdout_text, "+default_pool_size = 45")) << diff.stdout_text;
  FleetctlResult same = Ctl({"config", "diff", absl::StrCat("v", version), absl::StrCat("v", next),
                             "--agent", "small-a"});
  ASSERT_EQ(same.exit_code, 0) << same.Describe();
  EXPECT_FALSE(absl::StrContains(same.stdout_text, "default_pool_size")) << same.stdout_text;

  // config show: the base, then the overlays.
  FleetctlResult shown = Ctl({"config", "show", absl::StrCat("v", version)});
  ASSERT_EQ(shown.exit_code, 0) << shown.Describe();
  EXPECT_TRUE(absl::StrContains(shown.stdout_text, "; ---- base ----\n; fleet base\n"));
  EXPECT_TRUE(absl::StrContains(shown.stdout_text, "selector = size in (large,xlarge)\n"));
  EXPECT_TRUE(absl::StrContains(shown.stdout_text, "agent = small-b\n"));
}

// An operator relabels an agent (`fleetctl agents label`): its render follows at once, at the
// same version number, and the agent applies it; relabelling back restores the first render.
TEST_F(OverlaysTest, RelabellingAnAgentReRendersItsConfigAtTheSameVersion) {
  PGF_ASSERT_OK_AND_ASSIGN(uint64_t version, Push(BaseIni(), {Overlays()}));
  FleetctlResult applied =
      Ctl({"config", "apply", "--env", kEnv, "--version", absl::StrCat("v", version), "--wait"});
  ASSERT_EQ(applied.exit_code, 0) << applied.Describe();
  ASSERT_EQ(ShowConfig("small-a", "default_pool_size"), "10");

  FleetctlResult relabel = Ctl({"agents", "label", "small-a", "size=large", "--overwrite"});
  ASSERT_EQ(relabel.exit_code, 0) << relabel.Describe();
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        *note = ShowConfig("small-a", "default_pool_size");
        return *note == "40";
      },
      absl::Seconds(30), "small-a to run the large overlay after its relabel"));
  std::map<std::string, pgfleet::v1::Agent> agents = AgentsById();
  EXPECT_EQ(agents["small-a"].applied_version(), version);
  FleetctlResult rendered = Render("small-a", version);
  ASSERT_EQ(rendered.exit_code, 0) << rendered.Describe();
  PGF_ASSERT_OK(WaitForAgents("small-a to report its new render", [&](const pgfleet::v1::Agent& a) {
    return a.agent_id() != "small-a" ||
           a.applied_sha256() == controller::Sha256Hex(rendered.stdout_text);
  }));
  EXPECT_EQ(ShowConfig("small-b", "default_pool_size"), "10");  // The others are untouched.

  relabel = Ctl({"agents", "label", "small-a", "size=small", "--overwrite"});
  ASSERT_EQ(relabel.exit_code, 0) << relabel.Describe();
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        *note = ShowConfig("small-a", "default_pool_size");
        return *note == "10";
      },
      absl::Seconds(30), "small-a back on the small overlay"));
}

TEST_F(OverlaysTest, ConflictsAndPerAgentValidationAreRefusedAtPush) {
  // size=large and zone=a can both hold for one agent (big has both): refused, naming both.
  FleetctlResult conflict =
      PushWith(BaseIni(), {"[pgfleet.overlay]\nname = large\nselector = size=large\n"
                           "[pgbouncer]\ndefault_pool_size = 40\n",
                           "[pgfleet.overlay]\nname = zone a\nselector = zone=a\n"
                           "[pgbouncer]\ndefault_pool_size = 30\n"});
  EXPECT_EQ(conflict.exit_code, 2) << conflict.Describe();
  EXPECT_TRUE(absl::StrContains(conflict.stderr_text, "conflicting overlays"))
      << conflict.Describe();
  EXPECT_TRUE(absl::StrContains(conflict.stderr_text, "overlay \"large\"")) << conflict.Describe();
  EXPECT_TRUE(absl::StrContains(conflict.stderr_text, "overlay \"zone a\"")) << conflict.Describe();
  EXPECT_TRUE(absl::StrContains(conflict.stderr_text, "[pgbouncer] default_pool_size"))
      << conflict.Describe();
  // The same two edits on disjoint selectors are fine.
  PGF_EXPECT_OK(Push(BaseIni(), {"[pgfleet.overlay]\nselector = zone=b\n"
                                 "[pgbouncer]\ndefault_pool_size = 40\n"
                                 "[pgfleet.overlay]\nselector = zone=a\n"
                                 "[pgbouncer]\ndefault_pool_size = 30\n"})
                    .status());

  // A render that only fails for one agent: refused, naming it; nothing stored.
  FleetctlResult invalid = PushWith(
      BaseIni(), {"[pgfleet.overlay]\nagent = small-a\n[pgbouncer]\npool_mode = sometimes\n"});
  EXPECT_EQ(invalid.exit_code, 2) << invalid.Describe();
  EXPECT_TRUE(absl::StrContains(invalid.stderr_text, "as rendered for agent small-a"))
      << invalid.Describe();
  EXPECT_TRUE(absl::StrContains(invalid.stderr_text, "pool_mode")) << invalid.Describe();
}

TEST_F(OverlaysTest, BudgetPreflightSumsRenderedPoolSizes) {
  const uint64_t base = ApplyBase();
  ASSERT_NE(base, 0u);
  // Agents learn the server's max_connections at their first login.
  PGF_ASSERT_OK_AND_ASSIGN(PgConn conn,
                           Connect(TcpConnString(port("big"), kAppDb, kAppUser, kAppPassword)));
  PGF_ASSERT_OK(ScalarInt(conn.get(), "select 1").status());
  PGF_ASSERT_OK(WaitForAgents("big reports max_connections", [](const pgfleet::v1::Agent& a) {
    return a.agent_id() != "big" || a.last_metrics().server_limits_size() > 0;
  }));
  // The base alone (3 x 20 = 60) fits in 100 - 3 - 10; with big's rendered 60, 20 + 20 + 60 =
  // 100 does not.
  PGF_ASSERT_OK_AND_ASSIGN(
      uint64_t greedy,
      Push(BaseIni(), {"[pgfleet.overlay]\nagent = big\n[pgbouncer]\ndefault_pool_size = 60\n"}));
  FleetctlResult refused = Ctl({"rollout", "start", "--env", kEnv, "--version",
                                absl::StrCat("v", greedy), "--waves", "100%", "--bake", "1s"});
  EXPECT_EQ(refused.exit_code, 1) << refused.Describe();
  EXPECT_TRUE(absl::StrContains(refused.stderr_text, "connection budget of 127.0.0.1:"))
      << refused.Describe();
  EXPECT_TRUE(absl::StrContains(refused.stderr_text,
                                "3 agents' own rendered configs (pool sizes + reserve pools) sum "
                                "to 100 server connections"))
      << refused.Describe();
  // The same base with small overlays passes.
  PGF_ASSERT_OK_AND_ASSIGN(
      uint64_t modest,
      Push(BaseIni(), {"[pgfleet.overlay]\nagent = big\n[pgbouncer]\ndefault_pool_size = 25\n"}));
  FleetctlResult started = Ctl({"rollout", "start", "--env", kEnv, "--version",
                                absl::StrCat("v", modest), "--waves", "100%", "--bake", "1s"});
  EXPECT_EQ(started.exit_code, 0) << started.Describe();
}

TEST_F(OverlaysTest, DriftShowsAnAgentWhoseAppliedRenderIsNotItsDesiredOne) {
  PGF_ASSERT_OK_AND_ASSIGN(uint64_t first, Push(BaseIni(), {Overlays()}));
  FleetctlResult applied =
      Ctl({"config", "apply", "--env", kEnv, "--version", absl::StrCat("v", first), "--wait"});
  ASSERT_EQ(applied.exit_code, 0) << applied.Describe();
  // The next version's render for small-b names an auth_file its host does not have: small-b
  // refuses it (NACK) and keeps running the first version's render.
  const std::string missing = absl::StrCat(dir_, "/no-such-users.txt");
  PGF_ASSERT_OK_AND_ASSIGN(
      uint64_t second,
      Push(BaseIni(), {Overlays(/*large_pool_size=*/41),
                       absl::StrCat("[pgfleet.overlay]\nagent = small-b\nname = broken\n"
                                    "[pgbouncer]\nauth_file = ",
                                    missing, "\n")}));
  FleetctlResult nacked =
      Ctl({"config", "apply", "--env", kEnv, "--version", absl::StrCat("v", second), "--wait"});
  EXPECT_EQ(nacked.exit_code, 5) << nacked.Describe();
  PGF_ASSERT_OK(WaitForAgents("big and small-a on the second version, small-b refused it",
                              [&](const pgfleet::v1::Agent& a) {
                                if (a.agent_id() == "small-b") return !a.last_error().empty();
                                return a.applied_version() == second;
                              }));
  std::map<std::string, pgfleet::v1::Agent> agents = AgentsById();
  EXPECT_FALSE(agents["big"].drifted());
  EXPECT_FALSE(agents["small-a"].drifted());
  EXPECT_TRUE(agents["small-b"].drifted()) << agents["small-b"].DebugString();
  FleetctlResult rendered = Render("small-b", first);
  ASSERT_EQ(rendered.exit_code, 0) << rendered.Describe();
  EXPECT_EQ(agents["small-b"].applied_sha256(), controller::Sha256Hex(rendered.stdout_text));
  EXPECT_EQ(ShowConfig("big", "default_pool_size"), "41");
}

}  // namespace
}  // namespace pgfleet::testutil
