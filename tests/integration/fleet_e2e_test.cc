// The fleet end to end, with real processes only: one PostgreSQL 15 cluster, a
// pgfleet-controller on its own SQLite file, pgfleet-agents started with --controller, and the
// fleetctl binary as an operator would run it. Covers config push/apply and NACKs, PAUSE/RESUME
// from the controller, fail-static behaviour when the controller dies, tokens and mutual TLS,
// and rollouts (waves, bake, health gates, rollback, resume after a crash, promotion).
//
// One PostgreSQL cluster serves the whole binary; every test starts its own controller (fresh
// database) and agents. Nothing waits with a bare sleep: tests poll a condition with a deadline.

#include <libpq-fe.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/status_macros.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "pgfleet/v1/fleet.pb.h"
#include "tests/testutil/agent_process.h"
#include "tests/testutil/controller_process.h"
#include "tests/testutil/fixtures.h"
#include "tests/testutil/fleet_fixture.h"
#include "tests/testutil/free_port.h"
#include "tests/testutil/json.h"
#include "tests/testutil/log_lines.h"
#include "tests/testutil/postgres_env.h"
#include "tests/testutil/pq.h"
#include "tests/testutil/process.h"
#include "tests/testutil/status_testing.h"
#include "tests/testutil/wait.h"

namespace pgfleet::testutil {
namespace {

// default_pool_size of the agents' local ini and of the fleet's base config: large enough that
// the pgbench loads below never queue, so a queue means the config under test caused it.
constexpr int kBasePoolSize = 20;

// Every agent's pool is on pgbench's tables.
[[maybe_unused]] auto* const kCluster = RegisterSharedPostgres(
    [] {
      PostgresOptions options;
      options.max_connections = 200;
      return options;
    }(),
    [](PostgresEnv& pg) -> absl::Status {
      PGF_RETURN_IF_ERROR(CreateAppDatabase(pg));
      return InitPgbench(pg);
    });

// The repository root (CMake passes it: __FILE__ is relative under ccache's base_dir).
std::string RepoRoot() { return PGFLEET_SOURCE_DIR; }

// --- the admin console --------------------------------------------------------------------------

// The value of one SHOW CONFIG key.
absl::StatusOr<std::string> ShowConfig(int port, const std::string& key) {
  absl::StatusOr<std::vector<NamedRow>> rows = AdminShow(port, "SHOW CONFIG");
  if (!rows.ok()) return rows.status();
  for (NamedRow& row : *rows) {
    if (row["key"] == key) return row["value"];
  }
  return absl::NotFoundError(absl::StrCat("SHOW CONFIG has no ", key));
}

// A SHOW POOLS column of the appdb/app pool (0 when that pool does not exist yet).
absl::StatusOr<int64_t> PoolColumn(int port, const std::string& column) {
  absl::StatusOr<std::vector<NamedRow>> rows = AdminShow(port, "SHOW POOLS");
  if (!rows.ok()) return rows.status();
  for (NamedRow& row : *rows) {
    if (row["database"] != kAppDb || row["user"] != kAppUser) continue;
    int64_t value = 0;
    if (!absl::SimpleAtoi(row[column], &value)) {
      return absl::InternalError(absl::StrCat("SHOW POOLS ", column, " = '", row[column], "'"));
    }
    return value;
  }
  return 0;
}

// One query as app through the agent.
absl::Status QueryThrough(int port) {
  absl::StatusOr<PgConn> conn = Connect(TcpConnString(port, kAppDb, kAppUser, kAppPassword));
  if (!conn.ok()) return conn.status();
  absl::StatusOr<int64_t> value = ScalarInt(conn->get(), "select count(*) from pgbench_branches");
  if (!value.ok()) return value.status();
  if (*value != 1)
    return absl::InternalError(absl::StrCat("pgbench_branches has ", *value, " rows"));
  return absl::OkStatus();
}

// The rows of a fleetctl table whose first column is `first`, split on runs of spaces (empty
// cells vanish, so tests compare the leading columns).
std::vector<std::string> TableRow(const std::string& table, const std::string& first) {
  for (absl::string_view line : absl::StrSplit(table, '\n')) {
    std::vector<std::string> cells = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (!cells.empty() && cells[0] == first) return cells;
  }
  return {};
}

// When the agent's log says it applied `version` (the timestamp at the start of that line).
absl::StatusOr<absl::Time> AckTime(const std::string& log, uint64_t version) {
  const std::string needle = absl::StrCat("config version ", version, " applied (ACK)");
  for (absl::string_view line : absl::StrSplit(log, '\n')) {
    if (!absl::StrContains(line, needle)) continue;
    return LogLineTime(line);
  }
  return absl::NotFoundError(absl::StrCat("no '", needle, "' in the log"));
}

// --- the fixture --------------------------------------------------------------------------------

class FleetTest : public FleetFixture {
 protected:
  FleetTest() : FleetFixture("pgfleet-fleet") {}

  void SetUp() override {
    ASSERT_NE(g_pg, nullptr) << "the shared PostgreSQL cluster did not start";
    ASSERT_NO_FATAL_FAILURE(FleetFixture::SetUp());
  }

  // Starts a controller with the bootstrap token; the first one becomes controller_, the one
  // fleetctl talks to unless the test points it elsewhere.
  void StartController(std::vector<std::string> extra_args = {},
                       ControllerProcess** out = nullptr) {
    ControllerOptions options;
    options.extra_args = std::move(extra_args);
    FleetFixture::StartController(std::move(options), out);
  }

  AgentOptions AgentOptionsFor(const std::string& id, const std::string& env,
                               const std::string& controller_address,
                               const std::vector<std::string>& more_args = {}) const {
    AgentOptions options = AppAgentOptions({{"auth_type", "scram-sha-256"},
                                            {"pool_mode", "transaction"},
                                            {"default_pool_size", absl::StrCat(kBasePoolSize)},
                                            {"max_client_conn", "300"},
                                            {"admin_users", kAdminUser}});
    options.extra_args = LinkArgs(id, env, controller_address);
    // Pushed configs name the fleet-wide auth_file in dir_.
    options.extra_args.push_back(absl::StrCat("--allow-path=", dir_));
    // Every agent of an environment runs on this host: each keeps its own port.
    options.extra_args.push_back("--local-listeners");
    options.extra_args.insert(options.extra_args.end(), more_args.begin(), more_args.end());
    return options;
  }

  // Starts agent `id` in `env`, linked to controller_ (or `controller_address`).
  void StartAgent(const std::string& id, const std::string& env,
                  const std::vector<std::string>& more_args = {},
                  const std::string& controller_address = "") {
    ASSERT_NO_FATAL_FAILURE(StartLinkedAgent(
        id, AgentOptionsFor(
                id, env, controller_address.empty() ? controller_->address() : controller_address,
                more_args)));
  }

  absl::StatusOr<pgfleet::v1::ListAgentsResponse> ListAgents(const std::string& env = "") const {
    std::vector<std::string> args = {"agents", "list", "--output", "json"};
    if (!env.empty()) args.insert(args.end(), {"--env", env});
    FleetctlResult result = Ctl(args);
    if (result.exit_code != 0) return absl::InternalError(result.Describe());
    return ParseJson<pgfleet::v1::ListAgentsResponse>(result.stdout_text);
  }

  static const pgfleet::v1::Agent* FindAgent(const pgfleet::v1::ListAgentsResponse& list,
                                             const std::string& id) {
    for (const auto& agent : list.agents()) {
      if (agent.agent_id() == id) return &agent;
    }
    return nullptr;
  }

  static std::string Summary(const pgfleet::v1::ListAgentsResponse& list) {
    std::vector<std::string> parts;
    for (const auto& a : list.agents()) {
      parts.push_back(absl::StrCat(a.agent_id(), "(", a.environment(), ",",
                                   a.connected() ? "up" : "down", ",applied=", a.applied_version(),
                                   ",desired=", a.desired_version(),
                                   a.last_error().empty() ? "" : ",error=" + a.last_error(), ")"));
    }
    return absl::StrJoin(parts, " ");
  }

  // Polls `agents list` until `condition` holds for every agent in `ids`.
  absl::Status WaitForAgents(const std::vector<std::string>& ids, const std::string& what,
                             const std::function<bool(const pgfleet::v1::Agent&)>& condition,
                             absl::Duration timeout = absl::Seconds(30)) const {
    return PollUntil(
        [&](std::string* note) -> absl::StatusOr<bool> {
          absl::StatusOr<pgfleet::v1::ListAgentsResponse> list = ListAgents();
          if (!list.ok()) {
            *note = std::string(list.status().message());
            return false;  // The controller may be restarting.
          }
          *note = Summary(*list);
          for (const std::string& id : ids) {
            const pgfleet::v1::Agent* agent = FindAgent(*list, id);
            if (agent == nullptr || !condition(*agent)) return false;
          }
          return true;
        },
        timeout, what, absl::Milliseconds(100));
  }

  absl::Status WaitConnected(const std::vector<std::string>& ids) const {
    return WaitForAgents(ids, absl::StrCat(absl::StrJoin(ids, ","), " connected"),
                         [](const pgfleet::v1::Agent& a) { return a.connected(); });
  }

  absl::Status WaitApplied(const std::vector<std::string>& ids, uint64_t version) const {
    return WaitForAgents(ids, absl::StrCat(absl::StrJoin(ids, ","), " on v", version),
                         [version](const pgfleet::v1::Agent& a) {
                           return a.connected() && a.applied_version() == version;
                         });
  }

  // A full pgbouncer.ini as the fleet pushes it: the same text for every agent of an
  // environment. listen_port only matters to an agent that restarts from it (a reload keeps
  // the listener); logfile is left out so each agent keeps its own.
  std::string FleetIni(int listen_port, const std::map<std::string, std::string>& overrides) const {
    std::map<std::string, std::string> settings = {
        {"listen_addr", "127.0.0.1"}, {"listen_port", absl::StrCat(listen_port)},
        {"unix_socket_dir", ""},      {"auth_type", "scram-sha-256"},
        {"auth_file", users_path_},   {"admin_users", kAdminUser},
        {"pool_mode", "transaction"}, {"default_pool_size", absl::StrCat(kBasePoolSize)},
        {"max_client_conn", "300"},
    };
    for (const auto& [key, value] : overrides) settings[key] = value;
    std::string ini = absl::StrCat("[databases]\n", kAppDb, " = host=127.0.0.1 port=", g_pg->port(),
                                   " dbname=", kAppDb, "\n\n[pgbouncer]\n");
    for (const auto& [key, value] : settings) absl::StrAppend(&ini, key, " = ", value, "\n");
    return ini;
  }

  // Writes `ini` to a file and `fleetctl config push`es it; returns the new version.
  absl::StatusOr<uint64_t> Push(const std::string& env, const std::string& ini,
                                const std::string& message = "e2e") {
    const std::string path = absl::StrCat(dir_, "/push-", ++pushes_, ".ini");
    if (absl::Status written = WriteFile(path, ini); !written.ok()) return written;
    FleetctlResult result =
        Ctl({"config", "push", "--env", env, "-f", path, "-m", message, "--output", "json"});
    if (result.exit_code != 0) return absl::InternalError(result.Describe());
    absl::StatusOr<pgfleet::v1::ConfigVersion> version =
        ParseJson<pgfleet::v1::ConfigVersion>(result.stdout_text);
    if (!version.ok()) return version.status();
    if (version->version() == 0 || version->environment() != env) {
      return absl::InternalError(absl::StrCat("odd push answer:\n", result.Describe()));
    }
    return version->version();
  }

  FleetctlResult ApplyWait(const std::string& env, uint64_t version) const {
    return Ctl(
        {"config", "apply", "--env", env, "--version", absl::StrCat("v", version), "--wait"});
  }

  // `rollout status <selector> --output json` (exit 5 is a failed rollout, still printed).
  absl::StatusOr<pgfleet::v1::Rollout> RolloutStatus(
      const std::vector<std::string>& selector) const {
    std::vector<std::string> args = {"rollout", "status"};
    args.insert(args.end(), selector.begin(), selector.end());
    args.insert(args.end(), {"--output", "json"});
    FleetctlResult result = Ctl(args);
    if (result.exit_code != 0 && result.exit_code != 5) {
      return absl::InternalError(result.Describe());
    }
    return ParseJson<pgfleet::v1::Rollout>(result.stdout_text);
  }

  static const pgfleet::v1::RolloutAgent* FindRolloutAgent(const pgfleet::v1::Rollout& rollout,
                                                           const std::string& id) {
    for (const auto& agent : rollout.agents()) {
      if (agent.agent_id() == id) return &agent;
    }
    return nullptr;
  }

  // Everything each agent says SHOW CONFIG `key` is.
  void ExpectConfigValue(const std::vector<std::string>& ids, const std::string& key,
                         const std::string& value) {
    for (const std::string& id : ids) {
      absl::StatusOr<std::string> seen = ShowConfig(port(id), key);
      ASSERT_TRUE(seen.ok()) << id << ": " << seen.status();
      EXPECT_EQ(*seen, value) << "agent " << id << " SHOW CONFIG " << key;
    }
  }

  // Polls SHOW CONFIG until it shows `value` (for changes the test cannot wait for otherwise,
  // such as a rollback's reconcile).
  absl::Status WaitConfigValue(const std::string& id, const std::string& key,
                               const std::string& value) {
    const int agent_port = port(id);
    return PollUntil(
        [&](std::string* note) -> absl::StatusOr<bool> {
          absl::StatusOr<std::string> seen = ShowConfig(agent_port, key);
          if (!seen.ok()) return seen.status();
          *note = absl::StrCat(key, " = ", *seen);
          return *seen == value;
        },
        absl::Seconds(20), absl::StrCat(id, " SHOW CONFIG ", key, " = ", value));
  }

  int pushes_ = 0;
};

// --- a. push + apply ----------------------------------------------------------------------------

TEST_F(FleetTest, PushAndApplyReachEveryAgent) {
  ASSERT_NO_FATAL_FAILURE(StartController());
  const std::vector<std::string> ids = {"dev-1", "dev-2", "dev-3"};
  for (const std::string& id : ids) ASSERT_NO_FATAL_FAILURE(StartAgent(id, "dev"));
  PGF_ASSERT_OK(WaitConnected(ids));
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ListAgentsResponse before, ListAgents("dev"));
  ASSERT_EQ(before.agents_size(), 3) << Summary(before);
  for (const auto& a : before.agents()) {
    EXPECT_TRUE(a.connected()) << a.agent_id();
    EXPECT_EQ(a.environment(), "dev");
    EXPECT_EQ(a.applied_version(), 0u) << a.agent_id() << " runs its local file before any push";
  }
  ExpectConfigValue(ids, "default_pool_size", absl::StrCat(kBasePoolSize));

  PGF_ASSERT_OK_AND_ASSIGN(uint64_t version,
                           Push("dev", FleetIni(port("dev-1"), {{"default_pool_size", "7"},
                                                                {"max_client_conn", "250"}})));
  // A push stores; it deploys nothing.
  ExpectConfigValue(ids, "default_pool_size", absl::StrCat(kBasePoolSize));

  FleetctlResult apply = ApplyWait("dev", version);
  ASSERT_EQ(apply.exit_code, 0) << apply.Describe();
  // --wait returned 0: every agent has already reloaded.
  ExpectConfigValue(ids, "default_pool_size", "7");
  ExpectConfigValue(ids, "max_client_conn", "250");
  ExpectConfigValue(ids, "auth_file", users_path_);

  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ListAgentsResponse after, ListAgents("dev"));
  ASSERT_EQ(after.agents_size(), 3) << Summary(after);
  for (const auto& a : after.agents()) {
    EXPECT_TRUE(a.connected()) << a.agent_id();
    EXPECT_EQ(a.desired_version(), version) << a.agent_id();
    EXPECT_EQ(a.applied_version(), a.desired_version()) << a.agent_id();
    EXPECT_EQ(a.last_error(), "") << a.agent_id();
  }
  for (const std::string& id : ids) {
    PGF_EXPECT_OK(QueryThrough(port(id)));
    // The agent kept the pushed text in its state dir, for a restart without the controller.
    absl::StatusOr<std::string> stored = ReadFile(StateDir(id) + "/applied.ini");
    ASSERT_TRUE(stored.ok()) << id << ": " << stored.status();
    EXPECT_TRUE(absl::StrContains(*stored, "default_pool_size = 7")) << *stored;
  }
}

// --- b. an invalid config is NACKed -------------------------------------------------------------

TEST_F(FleetTest, MissingAuthFileIsNackedAndAgentsKeepTheOldConfig) {
  ASSERT_NO_FATAL_FAILURE(StartController());
  const std::vector<std::string> ids = {"dev-1", "dev-2", "dev-3"};
  for (const std::string& id : ids) ASSERT_NO_FATAL_FAILURE(StartAgent(id, "dev"));
  PGF_ASSERT_OK(WaitConnected(ids));
  PGF_ASSERT_OK_AND_ASSIGN(uint64_t good,
                           Push("dev", FleetIni(port("dev-1"), {{"default_pool_size", "9"}})));
  FleetctlResult apply_good = ApplyWait("dev", good);
  ASSERT_EQ(apply_good.exit_code, 0) << apply_good.Describe();

  // Valid syntax, so the controller stores it; the file it names exists on no agent.
  const std::string missing = dir_ + "/no-such-users.txt";
  PGF_ASSERT_OK_AND_ASSIGN(
      uint64_t bad,
      Push("dev", FleetIni(port("dev-1"), {{"default_pool_size", "3"}, {"auth_file", missing}})));
  FleetctlResult apply_bad = ApplyWait("dev", bad);
  EXPECT_EQ(apply_bad.exit_code, 5) << apply_bad.Describe();
  EXPECT_TRUE(absl::StrContains(apply_bad.stderr_text, "NACK")) << apply_bad.Describe();
  EXPECT_TRUE(absl::StrContains(apply_bad.stderr_text, missing)) << apply_bad.Describe();
  bool names_an_agent = false;
  for (const std::string& id : ids) {
    names_an_agent |= absl::StrContains(apply_bad.stderr_text, absl::StrCat(id, ": "));
  }
  EXPECT_TRUE(names_an_agent) << apply_bad.Describe();

  // Every agent refused it, says why, and still runs the good version.
  PGF_EXPECT_OK(WaitForAgents(ids, "every agent to NACK", [&](const pgfleet::v1::Agent& a) {
    return a.connected() && absl::StrContains(a.last_error(), missing);
  }));
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ListAgentsResponse list, ListAgents("dev"));
  for (const auto& a : list.agents()) {
    EXPECT_EQ(a.applied_version(), good) << a.agent_id();
    EXPECT_EQ(a.desired_version(), bad) << a.agent_id();
  }
  // The table shows the drift and why, per agent.
  FleetctlResult table = Ctl({"agents", "list", "--env", "dev"});
  ASSERT_EQ(table.exit_code, 0) << table.Describe();
  EXPECT_TRUE(absl::StartsWith(table.stdout_text, "AGENT")) << table.stdout_text;
  for (const std::string& id : ids) {
    std::vector<std::string> row = TableRow(table.stdout_text, id);
    ASSERT_GE(row.size(), 6u) << table.stdout_text;
    EXPECT_EQ(row[1], "dev");
    EXPECT_EQ(row[2], "up");
    EXPECT_EQ(row[3], absl::StrCat("v", good));
    EXPECT_EQ(row[4], absl::StrCat("v", bad));
    EXPECT_EQ(row[5], "DRIFT");
    EXPECT_TRUE(absl::StrContains(absl::StrJoin(row, " "), missing)) << table.stdout_text;
  }
  for (const std::string& id : ids) {
    PGF_EXPECT_OK(QueryThrough(port(id)));
    ExpectConfigValue({id}, "default_pool_size", "9");
    ExpectConfigValue({id}, "auth_file", users_path_);
    EXPECT_TRUE(absl::StrContains(agent(id).LogContents(), "refused (NACK)"))
        << agent(id).Diagnostics();
    absl::StatusOr<std::string> stored = ReadFile(StateDir(id) + "/applied.ini");
    ASSERT_TRUE(stored.ok()) << stored.status();
    EXPECT_FALSE(absl::StrContains(*stored, missing)) << "a refused config reached the state dir";
  }

  // Fixing it with a new version converges the environment again.
  PGF_ASSERT_OK_AND_ASSIGN(uint64_t fixed,
                           Push("dev", FleetIni(port("dev-1"), {{"default_pool_size", "11"}})));
  FleetctlResult apply_fixed =
      Ctl({"config", "apply", "--env", "dev", "--version", absl::StrCat("v", fixed)});
  ASSERT_EQ(apply_fixed.exit_code, 0) << apply_fixed.Describe();
  PGF_EXPECT_OK(WaitApplied(ids, fixed));
  for (const std::string& id : ids) PGF_EXPECT_OK(WaitConfigValue(id, "default_pool_size", "11"));
}

// Regression: `config apply --wait` used to report the previous version's NACK at once,
// because an agent's last_error did not say which version it was about.
TEST_F(FleetTest, ApplyWaitAfterANackWaitsForTheNewVersion) {
  ASSERT_NO_FATAL_FAILURE(StartController());
  const std::vector<std::string> ids = {"dev-1", "dev-2", "dev-3"};
  for (const std::string& id : ids) ASSERT_NO_FATAL_FAILURE(StartAgent(id, "dev"));
  PGF_ASSERT_OK(WaitConnected(ids));
  const std::string missing = dir_ + "/no-such-users.txt";
  PGF_ASSERT_OK_AND_ASSIGN(uint64_t bad,
                           Push("dev", FleetIni(port("dev-1"), {{"auth_file", missing}})));
  FleetctlResult apply_bad = ApplyWait("dev", bad);
  ASSERT_EQ(apply_bad.exit_code, 5) << apply_bad.Describe();
  PGF_ASSERT_OK(WaitForAgents(ids, "every agent to NACK", [&](const pgfleet::v1::Agent& a) {
    return absl::StrContains(a.last_error(), missing);
  }));

  PGF_ASSERT_OK_AND_ASSIGN(uint64_t fixed,
                           Push("dev", FleetIni(port("dev-1"), {{"default_pool_size", "11"}})));
  FleetctlResult apply_fixed = ApplyWait("dev", fixed);
  EXPECT_EQ(apply_fixed.exit_code, 0) << apply_fixed.Describe();
  EXPECT_FALSE(absl::StrContains(apply_fixed.stderr_text, missing)) << apply_fixed.Describe();
  PGF_EXPECT_OK(WaitApplied(ids, fixed));
}

// --- c. PAUSE / RESUME from the controller ------------------------------------------------------

TEST_F(FleetTest, PauseAndResumeFromTheController) {
  ASSERT_NO_FATAL_FAILURE(StartController());
  const std::vector<std::string> ids = {"dev-1", "dev-2"};
  for (const std::string& id : ids) ASSERT_NO_FATAL_FAILURE(StartAgent(id, "dev"));
  PGF_ASSERT_OK(WaitConnected(ids));

  PGF_ASSERT_OK_AND_ASSIGN(PgConn client,
                           Connect(TcpConnString(port("dev-1"), kAppDb, kAppUser, kAppPassword)));
  PGF_ASSERT_OK_AND_ASSIGN(int64_t warm, ScalarInt(client.get(), "select 1"));
  ASSERT_EQ(warm, 1);

  FleetctlResult pause = Ctl({"pause", "--env", "dev", "--db", kAppDb});
  ASSERT_EQ(pause.exit_code, 0) << pause.Describe();
  // Every agent of the environment got it.
  for (const std::string& id : ids) {
    PGF_EXPECT_OK(PollUntil(
        [&](std::string*) -> absl::StatusOr<bool> {
          return absl::StrContains(agent(id).LogContents(), "controller: PAUSE appdb");
        },
        absl::Seconds(10), absl::StrCat(id, " to log the controller's PAUSE")));
  }

  ASSERT_EQ(PQsendQuery(client.get(), "select 42"), 1) << PQerrorMessage(client.get());
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        absl::StatusOr<int64_t> waiting = PoolColumn(port("dev-1"), "cl_waiting");
        if (!waiting.ok()) return waiting.status();
        *note = absl::StrCat("cl_waiting ", *waiting);
        return *waiting >= 1;
      },
      absl::Seconds(10), "the query to queue behind the PAUSE"));
  ASSERT_EQ(PQconsumeInput(client.get()), 1) << PQerrorMessage(client.get());
  EXPECT_EQ(PQisBusy(client.get()), 1) << "the query completed while appdb was paused";

  FleetctlResult resume = Ctl({"resume", "--env", "dev", "--db", kAppDb});
  ASSERT_EQ(resume.exit_code, 0) << resume.Describe();
  PGF_ASSERT_OK_AND_ASSIGN(PgResult result, GetResultWithin(client.get(), absl::Seconds(10)));
  ASSERT_NE(result, nullptr);
  ASSERT_EQ(PQresultStatus(result.get()), PGRES_TUPLES_OK) << PQresultErrorMessage(result.get());
  EXPECT_EQ(std::string(PQgetvalue(result.get(), 0, 0)), "42");
  PGF_ASSERT_OK_AND_ASSIGN(PgResult end, GetResultWithin(client.get(), absl::Seconds(10)));
  EXPECT_EQ(end, nullptr);
  for (const std::string& id : ids) PGF_EXPECT_OK(QueryThrough(port(id)));

  for (const std::string& id : ids) {
    EXPECT_TRUE(absl::StrContains(agent(id).LogContents(), "controller: RESUME appdb")) << id;
  }
  // Resuming what is not paused is refused.
  FleetctlResult again = Ctl({"resume", "--env", "dev", "--db", kAppDb});
  EXPECT_NE(again.exit_code, 0) << again.Describe();
}

// --- d. kill -9 of the controller under load ----------------------------------------------------

TEST_F(FleetTest, ControllerKill9UnderLoadLosesNoTransactions) {
  ASSERT_NO_FATAL_FAILURE(StartController());
  ASSERT_NO_FATAL_FAILURE(StartAgent("dev-1", "dev"));
  PGF_ASSERT_OK(WaitConnected({"dev-1"}));
  const int controller_port = controller_->port();

  BackgroundPgbench bench(port("dev-1"), {"-c", "8", "-j", "2", "-T", "8", "-S"});
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        absl::StatusOr<int64_t> active = PoolColumn(port("dev-1"), "cl_active");
        if (!active.ok()) return active.status();
        *note = absl::StrCat("cl_active ", *active);
        return *active >= 8;
      },
      absl::Seconds(10), "pgbench's clients to connect"));

  PGF_ASSERT_OK(controller_->Kill9());
  PGF_ASSERT_OK(PollUntil(
      [&](std::string*) -> absl::StatusOr<bool> {
        return absl::StrContains(agent("dev-1").LogContents(), "unreachable or stream closed");
      },
      absl::Seconds(15), "the agent to notice the controller is gone"));
  // Fail-static: the data path does not care.
  PGF_EXPECT_OK(QueryThrough(port("dev-1")));

  PGF_ASSERT_OK(controller_->Restart());
  EXPECT_EQ(controller_->port(), controller_port);
  PGF_EXPECT_OK(WaitConnected({"dev-1"}));
  EXPECT_GE(CountOccurrences(agent("dev-1").LogContents(), "connected to controller"), 2)
      << agent("dev-1").Diagnostics();

  bench.ExpectClean("pgbench through the agent while the controller was killed");
  EXPECT_TRUE(agent("dev-1").IsRunning());
}

// --- e. an agent restarted while the controller is down -----------------------------------------

TEST_F(FleetTest, AgentRestartedWithoutControllerServesLastAppliedConfig) {
  ASSERT_NO_FATAL_FAILURE(StartController());
  const std::vector<std::string> ids = {"dev-1", "dev-2"};
  for (const std::string& id : ids) ASSERT_NO_FATAL_FAILURE(StartAgent(id, "dev"));
  PGF_ASSERT_OK(WaitConnected(ids));
  // The pushed text names dev-1's port: it is dev-1 that restarts from it below.
  PGF_ASSERT_OK_AND_ASSIGN(uint64_t version,
                           Push("dev", FleetIni(port("dev-1"), {{"default_pool_size", "7"}})));
  FleetctlResult apply = ApplyWait("dev", version);
  ASSERT_EQ(apply.exit_code, 0) << apply.Describe();
  ExpectConfigValue(ids, "default_pool_size", "7");

  PGF_ASSERT_OK_AND_ASSIGN(int controller_exit, controller_->Stop());
  EXPECT_TRUE(WIFEXITED(controller_exit) && WEXITSTATUS(controller_exit) == 0)
      << DescribeWaitStatus(controller_exit);
  AgentProcess& dev1 = agent("dev-1");
  PGF_ASSERT_OK_AND_ASSIGN(int agent_exit, dev1.Stop());
  EXPECT_TRUE(WIFEXITED(agent_exit) && WEXITSTATUS(agent_exit) == 0)
      << DescribeWaitStatus(agent_exit);
  // The local file still says the old size: what the agent serves next comes from its state.
  PGF_ASSERT_OK_AND_ASSIGN(std::string local, ReadFile(dev1.ini_path()));
  ASSERT_TRUE(absl::StrContains(local, absl::StrCat("default_pool_size = ", kBasePoolSize)))
      << local;

  // Same binary, same flags, same --state-dir, the ORIGINAL ini path.
  AgentOptions options = AgentOptionsFor("dev-1", "dev", controller_->address());
  std::vector<std::string> argv = {options.binary};
  argv.insert(argv.end(), options.extra_args.begin(), options.extra_args.end());
  argv.push_back(dev1.ini_path());
  const std::string restart_log = dev1.dir() + "/restart.stderr";
  SpawnOptions spawn;
  spawn.working_dir = dev1.dir();
  spawn.stdout_path = restart_log;
  spawn.stderr_path = restart_log;
  PGF_ASSERT_OK_AND_ASSIGN(pid_t pid, Spawn(argv, spawn));
  struct Reaper {
    pid_t pid;
    ~Reaper() {
      kill(pid, SIGTERM);
      if (!WaitPid(pid, absl::Seconds(10)).ok()) {
        kill(pid, SIGKILL);
        (void)WaitPid(pid, absl::Seconds(10));
      }
    }
  } reaper{pid};
  PGF_ASSERT_OK(PollUntil(
      [&](std::string*) -> absl::StatusOr<bool> {
        if (WaitPid(pid, absl::ZeroDuration()).ok()) {
          return absl::InternalError(
              absl::StrCat("restarted agent exited:\n", ReadFileTail(restart_log)));
        }
        return CanConnect(dev1.port());
      },
      absl::Seconds(10), "the restarted agent to listen"));

  PGF_EXPECT_OK(QueryThrough(dev1.port()));
  absl::StatusOr<std::string> size = ShowConfig(dev1.port(), "default_pool_size");
  ASSERT_TRUE(size.ok()) << size.status() << "\n" << ReadFileTail(restart_log);
  EXPECT_EQ(*size, "7") << "the restarted agent does not serve the last applied config\n"
                        << ReadFileTail(restart_log);
  const std::string restarted_output = ReadFileTail(restart_log, 65536) + dev1.LogContents();
  EXPECT_TRUE(absl::StrContains(restarted_output, "starting from the last applied config"))
      << restarted_output;

  // When the controller is back, the agent reports the version it runs; nothing is resent.
  PGF_ASSERT_OK(controller_->Restart());
  PGF_EXPECT_OK(WaitApplied({"dev-1", "dev-2"}, version));
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ListAgentsResponse list, ListAgents("dev"));
  const pgfleet::v1::Agent* restarted = FindAgent(list, "dev-1");
  ASSERT_NE(restarted, nullptr);
  EXPECT_EQ(restarted->desired_version(), version);
  const std::string restarted_log = controller_->CurrentRunLog();
  EXPECT_TRUE(absl::StrContains(restarted_log, absl::StrCat("agent dev-1 connected (env dev, ")))
      << restarted_log;
  EXPECT_TRUE(absl::StrContains(restarted_log, absl::StrCat("config version ", version, ")")))
      << restarted_log;
  EXPECT_FALSE(absl::StrContains(restarted_log, "sending config version"))
      << "the restarted agent did not report the version it serves:\n"
      << restarted_log;
}

// --- f. security --------------------------------------------------------------------------------

TEST_F(FleetTest, TokensAndRoles) {
  ASSERT_NO_FATAL_FAILURE(StartController());
  ASSERT_NO_FATAL_FAILURE(StartAgent("dev-1", "dev"));
  PGF_ASSERT_OK(WaitConnected({"dev-1"}));
  const std::string cfg = dir_ + "/viewer.ini";
  PGF_ASSERT_OK(WriteFile(cfg, FleetIni(port("dev-1"), {{"default_pool_size", "5"}})));

  FleetctlResult wrong = CtlAs("pgf-not-a-token", {"agents", "list"});
  EXPECT_EQ(wrong.exit_code, 4) << wrong.Describe();
  FleetctlResult none = CtlAs("", {"agents", "list"});
  EXPECT_EQ(none.exit_code, 4) << none.Describe();
  // A token with a newline inside (a copy-paste of two lines) is refused with a reason; gRPC
  // aborted the process on such a header value before.
  FleetctlResult two_lines = CtlAs("the\npgf-not-a-token", {"agents", "list"});
  EXPECT_EQ(two_lines.exit_code, 4) << two_lines.Describe();
  EXPECT_TRUE(absl::StrContains(two_lines.stderr_text, "control character"))
      << two_lines.Describe();
  FleetctlResult wrong_push =
      CtlAs("pgf-not-a-token", {"config", "push", "--env", "dev", "-f", cfg});
  EXPECT_EQ(wrong_push.exit_code, 4) << wrong_push.Describe();

  // Minted straight into the running controller's SQLite file.
  PGF_ASSERT_OK_AND_ASSIGN(
      RunResult minted,
      RunCommand({PGFLEET_CONTROLLER_BINARY, "token", "create",
                  absl::StrCat("--db=", controller_->db_path()), "--name=v", "--role=viewer"}));
  ASSERT_TRUE(minted.Succeeded()) << minted.Describe();
  const std::string viewer = std::string(absl::StripAsciiWhitespace(minted.stdout_text));
  ASSERT_FALSE(viewer.empty());

  FleetctlResult push = CtlAs(viewer, {"config", "push", "--env", "dev", "-f", cfg});
  EXPECT_EQ(push.exit_code, 4) << push.Describe();
  EXPECT_TRUE(absl::StrContains(push.stderr_text, "viewer")) << push.Describe();
  FleetctlResult pause = CtlAs(viewer, {"pause", "--env", "dev", "--db", kAppDb});
  EXPECT_EQ(pause.exit_code, 4) << pause.Describe();
  FleetctlResult list = CtlAs(viewer, {"agents", "list", "--output", "json"});
  EXPECT_EQ(list.exit_code, 0) << list.Describe();
  absl::StatusOr<pgfleet::v1::ListAgentsResponse> parsed =
      ParseJson<pgfleet::v1::ListAgentsResponse>(list.stdout_text);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_NE(FindAgent(*parsed, "dev-1"), nullptr) << list.Describe();

  // Nothing was stored by the refused pushes.
  FleetctlResult configs = Ctl({"config", "list", "--env", "dev", "--output", "json"});
  ASSERT_EQ(configs.exit_code, 0) << configs.Describe();
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ListConfigsResponse versions,
                           ParseJson<pgfleet::v1::ListConfigsResponse>(configs.stdout_text));
  EXPECT_EQ(versions.versions_size(), 0) << configs.Describe();
  // And PAUSE never reached the agent.
  PGF_EXPECT_OK(QueryThrough(port("dev-1")));
}

TEST_F(FleetTest, MutualTlsAgentsSpeakOnlyForThemselves) {
  const std::string certs = dir_ + "/certs";
  PGF_ASSERT_OK_AND_ASSIGN(
      RunResult made,
      RunCommand({"bash", RepoRoot() + "/scripts/make-test-certs.sh", certs, "a1", "intruder"}));
  ASSERT_TRUE(made.Succeeded()) << made.Describe();
  ASSERT_NO_FATAL_FAILURE(StartController({absl::StrCat("--tls-cert=", certs, "/controller.pem"),
                                           absl::StrCat("--tls-key=", certs, "/controller-key.pem"),
                                           absl::StrCat("--tls-ca=", certs, "/ca.pem")}));
  // The controller's certificate names localhost and 127.0.0.1; agents and fleetctl verify it
  // with the CA. They dial the IP: "localhost" would go through gRPC's c-ares resolver, whose
  // Debian build leaks a few bytes per lookup and so fails every process under LeakSanitizer.
  const std::string tls_address = controller_->address();
  ctl_address_ = tls_address;
  ctl_options_.tls_ca = certs + "/ca.pem";
  auto tls_args = [&](const std::string& name) -> std::vector<std::string> {
    return {absl::StrCat("--tls-ca=", certs, "/ca.pem"),
            absl::StrCat("--tls-cert=", certs, "/", name, ".pem"),
            absl::StrCat("--tls-key=", certs, "/", name, "-key.pem")};
  };

  ASSERT_NO_FATAL_FAILURE(StartAgent("a1", "dev", tls_args("a1"), tls_address));
  PGF_ASSERT_OK(WaitConnected({"a1"}));

  // The intruder's certificate is valid (same CA) but it claims to be a1.
  AgentOptions intruder_options = AgentOptionsFor("a1", "dev", tls_address, tls_args("intruder"));
  intruder_options.extra_args[3] = absl::StrCat("--state-dir=", StateDir("intruder"));
  PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<AgentProcess> intruder,
                           AgentProcess::Start(intruder_options));
  agents_["intruder"] = std::move(intruder);
  // No certificate at all: a plaintext link to a TLS port.
  ASSERT_NO_FATAL_FAILURE(StartAgent("nocert", "dev", {}, tls_address));

  PGF_ASSERT_OK(PollUntil(
      [&](std::string*) -> absl::StatusOr<bool> {
        return CountOccurrences(controller_->LogContents(),
                                "certificate intruder tried to speak for agent a1") >= 2;
      },
      absl::Seconds(20), "the controller to refuse the intruder (twice)"));
  PGF_ASSERT_OK(PollUntil(
      [&](std::string*) -> absl::StatusOr<bool> {
        return CountOccurrences(agent("nocert").LogContents(), "retrying in") >= 2;
      },
      absl::Seconds(20), "the agent without a certificate to fail twice"));

  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ListAgentsResponse list, ListAgents());
  EXPECT_EQ(list.agents_size(), 1) << Summary(list);
  const pgfleet::v1::Agent* a1 = FindAgent(list, "a1");
  ASSERT_NE(a1, nullptr) << Summary(list);
  EXPECT_TRUE(a1->connected());
  EXPECT_EQ(FindAgent(list, "nocert"), nullptr) << Summary(list);
  const std::string log = controller_->LogContents();
  EXPECT_FALSE(absl::StrContains(log, "agent a1 reconnected")) << "the intruder replaced a1";
  EXPECT_EQ(CountOccurrences(log, "agent a1 connected"), 1) << log;
  EXPECT_EQ(CountOccurrences(agent("a1").LogContents(), "connected to controller"), 1);
  EXPECT_FALSE(absl::StrContains(agent("intruder").LogContents(), "connected to controller"))
      << agent("intruder").Diagnostics();
  EXPECT_FALSE(absl::StrContains(agent("nocert").LogContents(), "connected to controller"))
      << agent("nocert").Diagnostics();

  // fleetctl must verify the controller too: without the CA it cannot connect.
  FleetctlOptions plaintext;
  PGF_ASSERT_OK_AND_ASSIGN(FleetctlResult no_ca,
                           RunFleetctl({"agents", "list"}, token_, tls_address, plaintext));
  EXPECT_EQ(no_ca.exit_code, 3) << no_ca.Describe();

  // What a1's stream carries still works over mTLS: a command reaches the real a1 only.
  FleetctlResult reload = Ctl({"reload", "--agent", "a1"});
  EXPECT_EQ(reload.exit_code, 0) << reload.Describe();
  EXPECT_TRUE(absl::StrContains(agent("a1").LogContents(), "controller: RELOAD"));
  EXPECT_FALSE(absl::StrContains(agent("intruder").LogContents(), "controller: RELOAD"));
}

// --- g. rollouts --------------------------------------------------------------------------------

class RolloutTest : public FleetTest {
 protected:
  const std::vector<std::string> dev_ = {"dev-1", "dev-2"};
  const std::vector<std::string> staging_ = {"staging-1", "staging-2"};

  // A controller, 2 agents in dev and 2 in staging, each environment on a base version (the
  // agents' own settings, pushed and applied).
  void StartFleet() {
    ASSERT_NO_FATAL_FAILURE(StartController());
    for (const std::string& id : dev_) ASSERT_NO_FATAL_FAILURE(StartAgent(id, "dev"));
    for (const std::string& id : staging_) ASSERT_NO_FATAL_FAILURE(StartAgent(id, "staging"));
    PGF_ASSERT_OK(WaitConnected({"dev-1", "dev-2", "staging-1", "staging-2"}));
    PGF_ASSERT_OK_AND_ASSIGN(dev_base_, Push("dev", FleetIni(port("dev-1"), {})));
    FleetctlResult dev_apply = ApplyWait("dev", dev_base_);
    ASSERT_EQ(dev_apply.exit_code, 0) << dev_apply.Describe();
    PGF_ASSERT_OK_AND_ASSIGN(staging_base_, Push("staging", FleetIni(port("staging-1"), {})));
    FleetctlResult staging_apply = ApplyWait("staging", staging_base_);
    ASSERT_EQ(staging_apply.exit_code, 0) << staging_apply.Describe();
  }

  // Clients through dev-2 for the whole test: pgbench -S -c 4 for `seconds`.
  void StartClients(int seconds) {
    clients_ = std::make_unique<BackgroundPgbench>(
        port("dev-2"),
        std::vector<std::string>{"-S", "-c", "4", "-j", "2", "-T", absl::StrCat(seconds)});
  }

  std::string Version(uint64_t v) const { return absl::StrCat("v", v); }

  uint64_t dev_base_ = 0;
  uint64_t staging_base_ = 0;
  std::unique_ptr<BackgroundPgbench> clients_;
};

TEST_F(RolloutTest, GoodVersionRollsOutInWaves) {
  ASSERT_NO_FATAL_FAILURE(StartFleet());
  StartClients(8);
  PGF_ASSERT_OK_AND_ASSIGN(uint64_t next,
                           Push("dev", FleetIni(port("dev-1"), {{"default_pool_size", "15"}})));
  FleetctlResult start = Ctl({"rollout", "start", "--env", "dev", "--version", Version(next),
                              "--waves", "1,100%", "--bake", "2s", "--watch"});
  ASSERT_EQ(start.exit_code, 0) << start.Describe();

  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::Rollout rollout, RolloutStatus({"--env", "dev"}));
  EXPECT_EQ(rollout.state(), "succeeded");
  EXPECT_EQ(rollout.from_version(), dev_base_);
  EXPECT_EQ(rollout.to_version(), next);
  ASSERT_EQ(rollout.agents_size(), 2);
  for (const auto& a : rollout.agents()) EXPECT_EQ(a.state(), "applied") << a.agent_id();
  // Canary first: the first agent by id is alone in wave 1.
  ASSERT_NE(FindRolloutAgent(rollout, "dev-1"), nullptr);
  EXPECT_EQ(FindRolloutAgent(rollout, "dev-1")->wave(), 0);
  EXPECT_EQ(FindRolloutAgent(rollout, "dev-2")->wave(), 1);

  ExpectConfigValue(dev_, "default_pool_size", "15");
  ExpectConfigValue(staging_, "default_pool_size", absl::StrCat(kBasePoolSize));
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ListAgentsResponse list, ListAgents("dev"));
  for (const auto& a : list.agents()) {
    EXPECT_EQ(a.desired_version(), next) << a.agent_id();
    EXPECT_EQ(a.applied_version(), next) << a.agent_id();
  }
  // The canary went first, and the second wave waited for its bake (2 s).
  PGF_ASSERT_OK_AND_ASSIGN(absl::Time canary_ack, AckTime(agent("dev-1").LogContents(), next));
  PGF_ASSERT_OK_AND_ASSIGN(absl::Time rest_ack, AckTime(agent("dev-2").LogContents(), next));
  EXPECT_GE(rest_ack - canary_ack, absl::Seconds(2))
      << "dev-1 applied at " << canary_ack << ", dev-2 at " << rest_ack;

  // The same in table form.
  FleetctlResult status_table = Ctl({"rollout", "status", "--env", "dev"});
  ASSERT_EQ(status_table.exit_code, 0) << status_table.Describe();
  EXPECT_TRUE(absl::StartsWith(
      status_table.stdout_text,
      absl::StrCat("rollout ", rollout.id(), ": dev v", dev_base_, " -> v", next, "  succeeded")))
      << status_table.stdout_text;
  using Row = std::vector<std::string>;
  EXPECT_EQ(TableRow(status_table.stdout_text, "AGENT"), (Row{"AGENT", "WAVE", "STATE", "ERROR"}));
  EXPECT_EQ(TableRow(status_table.stdout_text, "dev-1"), (Row{"dev-1", "1", "applied"}));
  EXPECT_EQ(TableRow(status_table.stdout_text, "dev-2"), (Row{"dev-2", "2", "applied"}));
  FleetctlResult agents_table = Ctl({"agents", "list", "--env", "dev"});
  ASSERT_EQ(agents_table.exit_code, 0) << agents_table.Describe();
  for (const std::string& id : dev_) {
    std::vector<std::string> row = TableRow(agents_table.stdout_text, id);
    // AGENT ENV LINK APPLIED DESIRED PINNED CLIENTS VERSION: no DRIFT, no pin ("-"), no
    // labels, nothing pending, no error.
    ASSERT_EQ(row.size(), 8u) << agents_table.stdout_text;
    EXPECT_EQ(row[5], "-") << agents_table.stdout_text;
    EXPECT_EQ(row[3], Version(next));
    EXPECT_EQ(row[4], Version(next));
  }
  FleetctlResult list_table = Ctl({"rollout", "list"});
  ASSERT_EQ(list_table.exit_code, 0) << list_table.Describe();
  std::vector<std::string> listed_row =
      TableRow(list_table.stdout_text, absl::StrCat(rollout.id()));
  ASSERT_GE(listed_row.size(), 7u) << list_table.stdout_text;
  EXPECT_EQ(listed_row[1], "dev");
  EXPECT_EQ(absl::StrJoin(listed_row.begin() + 2, listed_row.begin() + 7, " "),
            absl::StrCat(Version(dev_base_), " -> ", Version(next), " succeeded 1,100%"))
      << list_table.stdout_text;

  FleetctlResult listed = Ctl({"rollout", "list", "--output", "json"});
  ASSERT_EQ(listed.exit_code, 0) << listed.Describe();
  EXPECT_TRUE(absl::StartsWith(listed.stdout_text, "{")) << listed.stdout_text;
  EXPECT_TRUE(absl::StrContains(listed.stdout_text, "\"rollouts\"")) << listed.stdout_text;
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ListRolloutsResponse rollouts,
                           ParseJson<pgfleet::v1::ListRolloutsResponse>(listed.stdout_text));
  ASSERT_EQ(rollouts.rollouts_size(), 1);
  EXPECT_EQ(rollouts.rollouts(0).state(), "succeeded");

  clients_->ExpectClean("pgbench through dev-2 during the rollout");
}

TEST_F(RolloutTest, NackRollsBackAgentsAlreadyMoved) {
  ASSERT_NO_FATAL_FAILURE(StartFleet());
  StartClients(6);
  // A relative auth_file resolves against each agent's working directory; only the canary's
  // has the file, as when one server of a fleet differs from the rest.
  const std::string host_file = "canary-only-users.txt";
  PGF_ASSERT_OK(WriteFile(agent("dev-1").dir() + "/" + host_file, UsersText()));
  PGF_ASSERT_OK_AND_ASSIGN(
      uint64_t bad, Push("dev", FleetIni(port("dev-1"),
                                         {{"auth_file", host_file}, {"default_pool_size", "12"}})));
  FleetctlResult start = Ctl({"rollout", "start", "--env", "dev", "--version", Version(bad),
                              "--waves", "1,100%", "--bake", "1s", "--watch"});
  EXPECT_EQ(start.exit_code, 5) << start.Describe();

  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::Rollout rollout, RolloutStatus({"--env", "dev"}));
  EXPECT_EQ(rollout.state(), "failed");
  EXPECT_EQ(rollout.failed_agent(), "dev-2");
  EXPECT_TRUE(absl::StrContains(rollout.reason(), "dev-2")) << rollout.reason();
  EXPECT_TRUE(absl::StrContains(rollout.reason(), host_file)) << rollout.reason();
  ASSERT_NE(FindRolloutAgent(rollout, "dev-2"), nullptr);
  EXPECT_EQ(FindRolloutAgent(rollout, "dev-2")->state(), "failed");
  EXPECT_TRUE(absl::StrContains(FindRolloutAgent(rollout, "dev-2")->error(), host_file));
  ASSERT_NE(FindRolloutAgent(rollout, "dev-1"), nullptr);
  EXPECT_EQ(FindRolloutAgent(rollout, "dev-1")->state(), "rolled_back");

  // The canary had really moved, and is back.
  EXPECT_TRUE(absl::StrContains(agent("dev-1").LogContents(),
                                absl::StrCat("config version ", bad, " applied (ACK)")))
      << agent("dev-1").Diagnostics();
  PGF_EXPECT_OK(WaitApplied(dev_, dev_base_));
  PGF_EXPECT_OK(WaitConfigValue("dev-1", "auth_file", users_path_));
  ExpectConfigValue(dev_, "default_pool_size", absl::StrCat(kBasePoolSize));
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ListAgentsResponse list, ListAgents("dev"));
  for (const auto& a : list.agents()) {
    EXPECT_EQ(a.desired_version(), dev_base_) << a.agent_id() << ": " << Summary(list);
  }
  for (const std::string& id : dev_) PGF_EXPECT_OK(QueryThrough(port(id)));
  clients_->ExpectClean("pgbench through dev-2 during the refused rollout");
}

TEST_F(RolloutTest, HealthGateRollsBackTheCanary) {
  ASSERT_NO_FATAL_FAILURE(StartFleet());
  StartClients(10);
  PGF_ASSERT_OK_AND_ASSIGN(uint64_t tiny,
                           Push("dev", FleetIni(port("dev-1"), {{"default_pool_size", "1"}})));
  // The canary has no server connection yet: under the new config its load can only get one.
  // (Checked so the gate sees the new size at once; a reload also closes surplus servers, see
  // PushedSmallerPoolClosesSurplusServers.)
  PGF_ASSERT_OK_AND_ASSIGN(int64_t canary_idle, PoolColumn(port("dev-1"), "sv_idle"));
  PGF_ASSERT_OK_AND_ASSIGN(int64_t canary_active, PoolColumn(port("dev-1"), "sv_active"));
  ASSERT_EQ(canary_idle + canary_active, 0);

  FleetctlResult start =
      Ctl({"rollout", "start", "--env", "dev", "--version", Version(tiny), "--waves", "1,100%",
           "--bake", "4s", "--max-cl-waiting", "2", "--output", "json"});
  ASSERT_EQ(start.exit_code, 0) << start.Describe();
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::Rollout started,
                           ParseJson<pgfleet::v1::Rollout>(start.stdout_text));
  // As soon as the canary runs the new config, its clients arrive: pgbench -c 10.
  PGF_ASSERT_OK(WaitConfigValue("dev-1", "default_pool_size", "1"));
  BackgroundPgbench canary_load(port("dev-1"), {"-S", "-c", "10", "-j", "2", "-T", "10"});

  FleetctlResult watch = Ctl({"rollout", "status", absl::StrCat(started.id()), "--watch"});
  EXPECT_EQ(watch.exit_code, 5) << watch.Describe();
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::Rollout rollout, RolloutStatus({"--env", "dev"}));
  EXPECT_EQ(rollout.state(), "failed");
  EXPECT_TRUE(absl::StrContains(rollout.reason(), "health gate")) << rollout.reason();
  EXPECT_TRUE(absl::StrContains(rollout.reason(), "waiting")) << rollout.reason();
  EXPECT_EQ(rollout.failed_agent(), "dev-1");
  ASSERT_NE(FindRolloutAgent(rollout, "dev-1"), nullptr);
  EXPECT_TRUE(absl::StrContains(FindRolloutAgent(rollout, "dev-1")->error(), "health gate"));

  EXPECT_TRUE(absl::StrContains(agent("dev-1").LogContents(),
                                absl::StrCat("config version ", tiny, " applied (ACK)")));
  PGF_EXPECT_OK(WaitApplied(dev_, dev_base_));
  PGF_EXPECT_OK(WaitConfigValue("dev-1", "default_pool_size", absl::StrCat(kBasePoolSize)));
  // The second wave never started.
  EXPECT_FALSE(absl::StrContains(agent("dev-2").LogContents(),
                                 absl::StrCat("config version ", tiny, " applied")));
  ExpectConfigValue({"dev-2"}, "default_pool_size", absl::StrCat(kBasePoolSize));
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ListAgentsResponse list, ListAgents("dev"));
  for (const auto& a : list.agents()) EXPECT_EQ(a.desired_version(), dev_base_) << a.agent_id();

  canary_load.ExpectClean("pgbench through the canary");
  clients_->ExpectClean("pgbench through dev-2");
}

// Regression: lowering default_pool_size (pushed by the controller, or RELOAD) once left a
// pool's surplus server connections open until server_lifetime (1 h) while SHOW CONFIG showed
// the new size, which also hid a pool-size regression from a rollout's health gate. Now the
// surplus is closed ("too many servers in the pool"), as PgBouncer's janitor does.
TEST_F(FleetTest, PushedSmallerPoolClosesSurplusServers) {
  ASSERT_NO_FATAL_FAILURE(StartController());
  ASSERT_NO_FATAL_FAILURE(StartAgent("dev-1", "dev"));
  PGF_ASSERT_OK(WaitConnected({"dev-1"}));
  BackgroundPgbench load(port("dev-1"), {"-S", "-c", "10", "-j", "2", "-T", "8"});
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        absl::StatusOr<int64_t> active = PoolColumn(port("dev-1"), "sv_active");
        absl::StatusOr<int64_t> idle = PoolColumn(port("dev-1"), "sv_idle");
        if (!active.ok()) return active.status();
        if (!idle.ok()) return idle.status();
        *note = absl::StrCat(*active + *idle, " servers");
        return *active + *idle >= 5;
      },
      absl::Seconds(10), "the load to open several server connections"));
  PGF_ASSERT_OK_AND_ASSIGN(uint64_t tiny,
                           Push("dev", FleetIni(port("dev-1"), {{"default_pool_size", "1"}})));
  FleetctlResult apply = ApplyWait("dev", tiny);
  ASSERT_EQ(apply.exit_code, 0) << apply.Describe();
  const absl::Status shrunk = PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        absl::StatusOr<int64_t> active = PoolColumn(port("dev-1"), "sv_active");
        absl::StatusOr<int64_t> idle = PoolColumn(port("dev-1"), "sv_idle");
        absl::StatusOr<int64_t> used = PoolColumn(port("dev-1"), "sv_used");
        if (!active.ok()) return active.status();
        if (!idle.ok()) return idle.status();
        if (!used.ok()) return used.status();
        *note = absl::StrCat(*active + *idle + *used, " servers under pool size 1");
        return *active + *idle + *used <= 1;
      },
      absl::Seconds(5), "the pool to shrink to default_pool_size = 1");
  EXPECT_TRUE(shrunk.ok()) << shrunk << "\nthe agent keeps the connections of the old pool";
  load.ExpectClean("pgbench through dev-1");
}

TEST_F(RolloutTest, RolloutResumesAfterControllerKill9) {
  ASSERT_NO_FATAL_FAILURE(StartFleet());
  StartClients(18);
  PGF_ASSERT_OK_AND_ASSIGN(uint64_t next,
                           Push("dev", FleetIni(port("dev-1"), {{"default_pool_size", "16"}})));
  FleetctlResult start = Ctl({"rollout", "start", "--env", "dev", "--version", Version(next),
                              "--waves", "1,100%", "--bake", "6s", "--output", "json"});
  ASSERT_EQ(start.exit_code, 0) << start.Describe();
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::Rollout started,
                           ParseJson<pgfleet::v1::Rollout>(start.stdout_text));
  const std::string id = absl::StrCat(started.id());
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        absl::StatusOr<pgfleet::v1::Rollout> rollout = RolloutStatus({id});
        if (!rollout.ok()) return rollout.status();
        *note = absl::StrCat(rollout->state(), " wave ", rollout->current_wave(), " ",
                             rollout->phase());
        return rollout->state() == "running" && rollout->current_wave() == 0 &&
               rollout->phase() == "baking";
      },
      absl::Seconds(15), "wave 1 to bake"));

  PGF_ASSERT_OK(controller_->Kill9());
  PGF_ASSERT_OK(controller_->Restart());
  PGF_ASSERT_OK(WaitConnected({"dev-1", "dev-2", "staging-1", "staging-2"}));
  FleetctlResult watch = Ctl({"rollout", "status", id, "--watch"});
  EXPECT_EQ(watch.exit_code, 0) << watch.Describe();

  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::Rollout rollout, RolloutStatus({id}));
  EXPECT_EQ(rollout.state(), "succeeded") << rollout.reason();
  for (const auto& a : rollout.agents()) EXPECT_EQ(a.state(), "applied") << a.agent_id();
  // Resumed where it was: the restarted controller ran wave 2 and did not redo wave 1.
  const std::string resumed_log = controller_->CurrentRunLog();
  EXPECT_TRUE(absl::StrContains(resumed_log, "wave 2/2 started")) << resumed_log;
  EXPECT_FALSE(absl::StrContains(resumed_log, "wave 1/2 started")) << resumed_log;
  PGF_ASSERT_OK_AND_ASSIGN(absl::Time canary_ack, AckTime(agent("dev-1").LogContents(), next));
  PGF_ASSERT_OK_AND_ASSIGN(absl::Time rest_ack, AckTime(agent("dev-2").LogContents(), next));
  EXPECT_GE(rest_ack - canary_ack, absl::Seconds(6)) << "wave 2 started before wave 1 baked";
  PGF_EXPECT_OK(WaitApplied(dev_, next));
  ExpectConfigValue(dev_, "default_pool_size", "16");
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ListAgentsResponse list, ListAgents("dev"));
  for (const auto& a : list.agents()) EXPECT_EQ(a.desired_version(), next) << a.agent_id();
  clients_->ExpectClean("pgbench through dev-2 across the controller crash");
}

TEST_F(RolloutTest, ConnectionBudgetRefusesPoolsThePostgresServerCannotHold) {
  ASSERT_NO_FATAL_FAILURE(StartFleet());
  // An agent learns its server's max_connections at its first login there.
  PGF_ASSERT_OK(QueryThrough(port("dev-1")));
  const std::string server = absl::StrCat("127.0.0.1:", g_pg->port());
  int max_connections = 0, superuser_reserved = 0;
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* last) -> absl::StatusOr<bool> {
        absl::StatusOr<pgfleet::v1::ListAgentsResponse> list = ListAgents("dev");
        if (!list.ok()) return list.status();
        const pgfleet::v1::Agent* dev1 = FindAgent(*list, "dev-1");
        if (dev1 == nullptr) return false;
        *last = dev1->last_metrics().DebugString();
        for (const auto& limits : dev1->last_metrics().server_limits()) {
          if (limits.address() != server) continue;
          max_connections = limits.max_connections();
          superuser_reserved = limits.superuser_reserved_connections();
          return true;
        }
        return false;
      },
      absl::Seconds(20), "dev-1 to report the server's max_connections"));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn direct, Connect(g_pg->SuperuserConnString()));
  PGF_ASSERT_OK_AND_ASSIGN(std::string shown, ScalarText(direct.get(), "show max_connections"));
  EXPECT_EQ(absl::StrCat(max_connections), shown);
  EXPECT_EQ(superuser_reserved, 3);
  // The basic view (the table's) carries the metrics' counters without their lists.
  FleetctlResult basic =
      Ctl({"agents", "list", "--env", "dev", "--output", "json", "--view", "basic"});
  ASSERT_EQ(basic.exit_code, 0) << basic.Describe();
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ListAgentsResponse basic_list,
                           ParseJson<pgfleet::v1::ListAgentsResponse>(basic.stdout_text));
  const pgfleet::v1::Agent* basic_dev1 = FindAgent(basic_list, "dev-1");
  ASSERT_NE(basic_dev1, nullptr) << basic.stdout_text;
  EXPECT_GT(basic_dev1->last_metrics().timestamp_unix_ms(), 0) << basic.stdout_text;
  EXPECT_EQ(basic_dev1->last_metrics().server_limits_size(), 0) << basic.stdout_text;
  FleetctlResult bad_view = Ctl({"agents", "list", "--view", "wide"});
  EXPECT_EQ(bad_view.exit_code, 2) << bad_view.Describe();
  EXPECT_TRUE(absl::StrContains(bad_view.stderr_text, "--view must be basic or full"))
      << bad_view.Describe();

  // 2 agents x (max_connections / 2 + 10 reserve) > max_connections - 3 superuser-reserved
  // - 10% kept free.
  const int pool_size = max_connections / 2;
  const int available = max_connections - superuser_reserved - std::max(5, max_connections / 10);
  PGF_ASSERT_OK_AND_ASSIGN(
      uint64_t greedy,
      Push("dev", FleetIni(port("dev-1"), {{"default_pool_size", absl::StrCat(pool_size)},
                                           {"reserve_pool_size", "10"}})));
  FleetctlResult refused = Ctl({"rollout", "start", "--env", "dev", "--version", Version(greedy),
                                "--waves", "100%", "--bake", "1s"});
  EXPECT_EQ(refused.exit_code, 1) << refused.Describe();
  EXPECT_TRUE(absl::StrContains(refused.stderr_text,
                                absl::StrCat("connection budget of ", server, " exceeded")))
      << refused.Describe();
  EXPECT_TRUE(absl::StrContains(refused.stderr_text,
                                absl::StrCat("2 agents x ", pool_size + 10, " server connections")))
      << refused.Describe();
  EXPECT_TRUE(absl::StrContains(refused.stderr_text, absl::StrCat(available, " available")))
      << refused.Describe();
  ExpectConfigValue(dev_, "default_pool_size", absl::StrCat(kBasePoolSize));
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ListAgentsResponse list, ListAgents("dev"));
  for (const auto& a : list.agents()) EXPECT_EQ(a.desired_version(), dev_base_) << a.agent_id();

  // Forcing takes a reason, which the rollout keeps with what it overrode.
  // A bake long enough that the abort below always finds it running (a 1 s bake could end
  // first on a fast store).
  FleetctlResult forced = Ctl({"rollout", "start", "--env", "dev", "--version", Version(greedy),
                               "--waves", "100%", "--bake", "10m", "--force", "--reason",
                               "DBA raised max_connections tonight", "--output", "json"});
  ASSERT_EQ(forced.exit_code, 0) << forced.Describe();
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::Rollout rollout,
                           ParseJson<pgfleet::v1::Rollout>(forced.stdout_text));
  EXPECT_TRUE(absl::StrContains(rollout.force_reason(), "DBA raised max_connections tonight"));
  EXPECT_TRUE(absl::StrContains(rollout.force_reason(), "connection budget"))
      << rollout.force_reason();
  FleetctlResult aborted = Ctl({"rollout", "abort", absl::StrCat(rollout.id())});
  EXPECT_EQ(aborted.exit_code, 0) << aborted.Describe();
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::Rollout after, RolloutStatus({"--env", "dev"}));
  EXPECT_EQ(after.state(), "aborted");
}

TEST_F(RolloutTest, PromotionNeedsTheUpstreamToComplete) {
  ASSERT_NO_FATAL_FAILURE(StartFleet());
  StartClients(8);
  FleetctlResult upstream = Ctl({"env", "set-upstream", "--env", "staging", "--upstream", "dev"});
  ASSERT_EQ(upstream.exit_code, 0) << upstream.Describe();

  // A text that never went through dev.
  PGF_ASSERT_OK_AND_ASSIGN(
      uint64_t unvetted,
      Push("staging", FleetIni(port("staging-1"), {{"default_pool_size", "17"}})));
  FleetctlResult refused = Ctl({"rollout", "start", "--env", "staging", "--version",
                                Version(unvetted), "--waves", "100%", "--bake", "1s"});
  EXPECT_NE(refused.exit_code, 0) << refused.Describe();
  EXPECT_TRUE(absl::StrContains(refused.stderr_text, "upstream")) << refused.Describe();
  ExpectConfigValue(staging_, "default_pool_size", absl::StrCat(kBasePoolSize));

  // Complete a version in dev, then promote it.
  PGF_ASSERT_OK_AND_ASSIGN(uint64_t vetted,
                           Push("dev", FleetIni(port("dev-1"), {{"default_pool_size", "18"}})));
  FleetctlResult dev_rollout = Ctl({"rollout", "start", "--env", "dev", "--version",
                                    Version(vetted), "--waves", "100%", "--bake", "1s", "--watch"});
  ASSERT_EQ(dev_rollout.exit_code, 0) << dev_rollout.Describe();
  FleetctlResult promote = Ctl({"promote", "--from", "dev", "--to", "staging", "--waves", "100%",
                                "--bake", "1s", "--watch"});
  ASSERT_EQ(promote.exit_code, 0) << promote.Describe();

  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::Rollout rollout, RolloutStatus({"--env", "staging"}));
  EXPECT_EQ(rollout.state(), "succeeded");
  EXPECT_EQ(rollout.from_version(), staging_base_);
  ExpectConfigValue(staging_, "default_pool_size", "18");
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ListAgentsResponse list, ListAgents("staging"));
  ASSERT_EQ(list.agents_size(), 2);
  for (const auto& a : list.agents()) {
    EXPECT_EQ(a.applied_version(), rollout.to_version()) << a.agent_id();
    EXPECT_EQ(a.desired_version(), rollout.to_version()) << a.agent_id();
  }
  // The promoted copy is staging's own version with dev's text.
  FleetctlResult shown = Ctl({"config", "show", Version(rollout.to_version()), "--output", "json"});
  ASSERT_EQ(shown.exit_code, 0) << shown.Describe();
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ConfigVersion copy,
                           ParseJson<pgfleet::v1::ConfigVersion>(shown.stdout_text));
  EXPECT_EQ(copy.environment(), "staging");
  EXPECT_TRUE(absl::StrContains(copy.ini_text(), "default_pool_size = 18"));

  FleetctlResult listed = Ctl({"rollout", "list", "--output", "json"});
  ASSERT_EQ(listed.exit_code, 0) << listed.Describe();
  EXPECT_TRUE(absl::StartsWith(listed.stdout_text, "{")) << listed.stdout_text;
  EXPECT_TRUE(absl::StrContains(listed.stdout_text, "rollouts")) << listed.stdout_text;
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ListRolloutsResponse rollouts,
                           ParseJson<pgfleet::v1::ListRolloutsResponse>(listed.stdout_text));
  EXPECT_EQ(rollouts.rollouts_size(), 2) << listed.stdout_text;
  clients_->ExpectClean("pgbench through dev-2");
}

// Regression: a refused promotion (the source version never completed a rollout upstream)
// once stored a copy of the config as a new version of the target environment, creating that
// environment. RolloutApi::Promote checks HasSucceededRollout() before it writes anything.
TEST_F(FleetTest, RefusedPromotionStoresNothing) {
  ASSERT_NO_FATAL_FAILURE(StartController());
  PGF_ASSERT_OK_AND_ASSIGN(uint64_t version, Push("dev", FleetIni(6432, {})));
  // Desired in dev, but never completed there through a rollout.
  FleetctlResult apply =
      Ctl({"config", "apply", "--env", "dev", "--version", absl::StrCat("v", version)});
  ASSERT_EQ(apply.exit_code, 0) << apply.Describe();
  FleetctlResult promote =
      Ctl({"promote", "--from", "dev", "--to", "staging", "--waves", "100%", "--bake", "1s"});
  EXPECT_NE(promote.exit_code, 0) << promote.Describe();
  EXPECT_TRUE(absl::StrContains(promote.stderr_text, "has not completed a rollout"))
      << promote.Describe();
  FleetctlResult configs = Ctl({"config", "list", "--env", "staging", "--output", "json"});
  ASSERT_EQ(configs.exit_code, 0) << configs.Describe();
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ListConfigsResponse versions,
                           ParseJson<pgfleet::v1::ListConfigsResponse>(configs.stdout_text));
  EXPECT_EQ(versions.versions_size(), 0) << "a refused promotion left a config version behind:\n"
                                         << configs.stdout_text;
}

}  // namespace
}  // namespace pgfleet::testutil
