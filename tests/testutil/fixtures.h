// Shared fixtures of the integration tests, so each test binary states only what is particular
// to it: the binary's one PostgreSQL cluster (with the standard app role and appdb), an agent in
// front of it that every test stops and checks for a clean exit, and the small readers several
// binaries need (SHOW rows by column name, pgbench's summary, a JSON reply).
#pragma once

#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "tests/testutil/agent_process.h"
#include "tests/testutil/controller_process.h"
#include "tests/testutil/postgres_env.h"
#include "tests/testutil/pq.h"
#include "tests/testutil/process.h"

namespace pgfleet::testutil {

// The role and database most tests use; the role owns the database.
inline constexpr char kAppUser[] = "app";
inline constexpr char kAppPassword[] = "app-Secret-42";
inline constexpr char kAppDb[] = "appdb";
// The agent's admin console user (in admin_users and the userlist where a test wants one).
inline constexpr char kAdminUser[] = "admin";
inline constexpr char kAdminPassword[] = "admin-Secret-1";
// Server connections on appdb (an agent's), seen from PostgreSQL itself.
inline constexpr char kAppdbBackendsSql[] =
    "select count(*) from pg_stat_activity where datname = 'appdb' and "
    "backend_type = 'client backend' and pid <> pg_backend_pid()";

// --- the binary's PostgreSQL cluster ------------------------------------------------------------

// The cluster of this test binary between its environment's SetUp and TearDown, else null.
extern PostgresEnv* g_pg;

// Options whose pg_hba makes PostgreSQL ask `role` for an md5 password (create the role with
// PostgresEnv::CreateUser(..., "md5")): an agent that knows only the md5 hash from its auth_file
// can still log in to the server as that role; everyone else uses SCRAM-SHA-256.
PostgresOptions PostgresWithMd5Role(const std::string& role);

// Creates kAppUser and kAppDb (owned by it): the preparation most binaries need.
absl::Status CreateAppDatabase(PostgresEnv& pg);

// Registers the gtest environment that starts g_pg before the first test, runs `prepare` on it
// and stops it after the last. Call once per binary, at namespace scope:
//   [[maybe_unused]] auto* const kCluster = RegisterSharedPostgres(options, prepare);
::testing::Environment* RegisterSharedPostgres(
    PostgresOptions options = {},
    std::function<absl::Status(PostgresEnv&)> prepare = CreateAppDatabase);

// Waits until PostgreSQL shows no client backend on appdb: a previous test's agent is gone, but
// PostgreSQL may not have noticed its connections closing yet.
absl::Status AwaitNoAppdbBackends(const PostgresEnv& pg);

// `pgbench -i -s 1` as kAppUser on kAppDb, straight against PostgreSQL: pgbench's tables for
// tests that then run pgbench through an agent.
absl::Status InitPgbench(const PostgresEnv& pg);
// How tests run pgbench as kAppUser: its password in the environment, no TLS, two minutes.
RunOptions PgbenchRunOptions();

// `pg_ctl restart -m fast`: the postmaster and every backend really go away and come back on the
// same port and data directory.
absl::Status RestartPostgres(const PostgresEnv& pg);

// --- agents -------------------------------------------------------------------------------------

// An agent for appdb on g_pg (or on 127.0.0.1:`server_port`) with kAppUser in its userlist and
// `settings` as its [pgbouncer] keys; when those make kAdminUser the admin (admin_users), the
// userlist has its password too.
AgentOptions AppAgentOptions(const std::map<std::string, std::string>& settings,
                             int server_port = 0);

// What ExpectCleanStop makes of an agent that has already exited: a single-agent test judges
// its exit status (a crash must fail the test); fleet tests stop agents on purpose mid-test.
enum class IfExited { kJudge, kSkip };
// SIGTERM, and expect a clean exit (status 0; a foreign pooler's status is not judged) and no
// sanitizer report on its stderr. `label` names the agent in failure messages.
void ExpectCleanStop(AgentProcess& agent, const std::string& label = "agent",
                     IfExited if_exited = IfExited::kJudge);
// The same for a controller, if it is still running; its log must report no sanitizer finding.
void ExpectCleanStop(ControllerProcess& controller);

// A test that runs one agent in front of g_pg. SetUp waits for appdb to be free of server
// connections; TearDown stops the agent and expects a clean exit (printing its diagnostics when
// the test failed).
class AgentTest : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;

  // The [pgbouncer] keys StartAgent begins from.
  virtual std::map<std::string, std::string> DefaultAgentSettings() const {
    return {{"auth_type", "scram-sha-256"},
            {"pool_mode", "transaction"},
            {"default_pool_size", "2"},
            {"max_client_conn", "200"}};
  }
  // Starts agent_ with DefaultAgentSettings() overridden by `settings`.
  void StartAgent(const std::map<std::string, std::string>& settings = {}, int server_port = 0);
  void StartAgentWith(const AgentOptions& options);

  absl::StatusOr<PgConn> ConnectApp() const;

  std::unique_ptr<AgentProcess> agent_;
};

// --- controllers --------------------------------------------------------------------------------

// Gives the controller an HTTP listener on a free port: `options` gains --http-listen=127.0.0.1:0
// and --http-port-file=`port_file`. After ControllerProcess::Start, AwaitHttpPort(port_file)
// returns the bound port (the file is written after the gRPC one, which Start waited for).
void AddHttpListener(ControllerOptions& options, const std::string& port_file);
absl::StatusOr<int> AwaitHttpPort(const std::string& port_file);

// --- readers ------------------------------------------------------------------------------------

using NamedRow = std::map<std::string, std::string>;

// Runs a SHOW command on an agent's admin console and returns its rows by column name.
absl::StatusOr<std::vector<NamedRow>> AdminShow(int port, const std::string& command,
                                                const std::string& user = kAdminUser,
                                                const std::string& password = kAdminPassword);

// pgbench's closing summary.
struct PgbenchSummary {
  int64_t processed = -1;
  int64_t failed = -1;  // -1: not printed.
};
PgbenchSummary ParsePgbench(const std::string& out);

// pgbench -n ... through an agent listening on 127.0.0.1:`port`, as the app user on the app
// database, on a thread of its own until it ends by itself (give it -T or -t).
class BackgroundPgbench {
 public:
  BackgroundPgbench(int port, const std::vector<std::string>& args);
  ~BackgroundPgbench() { Join(); }
  BackgroundPgbench(const BackgroundPgbench&) = delete;
  BackgroundPgbench& operator=(const BackgroundPgbench&) = delete;

  const absl::StatusOr<RunResult>& Join();
  // pgbench ran to its end and exited 0 (a refused or lost connection aborts a client, and
  // pgbench then exits 2), processed transactions and none failed. Returns what it counted.
  PgbenchSummary ExpectClean(const std::string& what);

 private:
  std::string command_;
  std::thread thread_;
  absl::StatusOr<RunResult> result_ = absl::UnknownError("pgbench has not finished");
};

int CountOccurrences(const std::string& text, const std::string& needle);

}  // namespace pgfleet::testutil
