// The real pgfleet-controller on a PostgreSQL store (--db=postgres://...): `token create` mints
// into it, fleetctl pushes and lists through it, the data survives a kill -9 and restart, and
// the log never shows the database password.

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "tests/testutil/controller_process.h"
#include "tests/testutil/process.h"
#include "tests/testutil/shared_postgres.h"
#include "tests/testutil/status_testing.h"
#include "tests/testutil/temp_dir.h"

namespace pgfleet::testutil {
namespace {

constexpr char kPassword[] = "Fleet-Store-Pw-7";

PostgresEnv* g_pg = nullptr;
const auto* const kEnvironment = ::testing::AddGlobalTestEnvironment(new SharedPostgres(
    PostgresOptions{},
    [](PostgresEnv& pg) -> absl::Status {
      absl::Status status = pg.CreateUser("fleet", kPassword);
      if (!status.ok()) return status;
      return pg.CreateDatabase("fleet", "fleet");
    },
    &g_pg));

TEST(ControllerPostgresStoreTest, PushListAndSurviveKill9) {
  ASSERT_NE(g_pg, nullptr);
  const std::string db = absl::StrCat("postgres://fleet:", kPassword, "@127.0.0.1:", g_pg->port(),
                                      "/fleet?sslmode=disable");
  // A token minted straight into the database, as on SQLite.
  PGF_ASSERT_OK_AND_ASSIGN(RunResult minted,
                           RunCommand({PGFLEET_CONTROLLER_BINARY, "token", "create",
                                       absl::StrCat("--db=", db), "--name=ops", "--role=admin"}));
  ASSERT_TRUE(minted.Succeeded()) << minted.Describe();
  const std::string token(absl::StripAsciiWhitespace(minted.stdout_text));
  ASSERT_FALSE(token.empty());

  ControllerOptions options;
  options.db_path = db;
  PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ControllerProcess> controller,
                           ControllerProcess::Start(options));
  TempDir dir;
  PGF_ASSERT_OK(dir.Create("pgfleet_pgstore"));
  const std::string path = dir.path() + "/pgbouncer.ini";
  {
    FILE* f = fopen(path.c_str(), "w");
    ASSERT_NE(f, nullptr);
    fputs("[databases]\n* = host=127.0.0.1\n[pgbouncer]\npool_mode = transaction\n", f);
    fclose(f);
  }
  PGF_ASSERT_OK_AND_ASSIGN(FleetctlResult pushed, RunFleetctl({"config", "push", "--env", "prod",
                                                               "-f", path, "-m", "on postgres"},
                                                              token, controller->address()));
  ASSERT_EQ(pushed.exit_code, 0) << pushed.Describe();

  // kill -9 and start again on the same database: the version is there.
  PGF_ASSERT_OK(controller->Kill9());
  PGF_ASSERT_OK(controller->Restart());
  PGF_ASSERT_OK_AND_ASSIGN(FleetctlResult listed, RunFleetctl({"config", "list", "--env", "prod"},
                                                              token, controller->address()));
  ASSERT_EQ(listed.exit_code, 0) << listed.Describe();
  EXPECT_TRUE(absl::StrContains(listed.stdout_text, "on postgres")) << listed.Describe();

  // The rows are in PostgreSQL, where another controller would read them.
  PGF_ASSERT_OK_AND_ASSIGN(Rows rows, g_pg->Exec("SELECT message FROM config_versions", "fleet"));
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0][0], "on postgres");

  // What the controller itself logged (the harness's own "=== test harness: argv" lines are
  // not its doing).
  std::string log;
  for (absl::string_view line : absl::StrSplit(controller->LogContents(), '\n')) {
    if (!absl::StartsWith(line, "=== test harness")) absl::StrAppend(&log, line, "\n");
  }
  EXPECT_TRUE(absl::StrContains(log, "postgres://fleet:***@")) << log;
  EXPECT_FALSE(absl::StrContains(log, kPassword)) << "the password reached the log:\n" << log;
}

}  // namespace
}  // namespace pgfleet::testutil
