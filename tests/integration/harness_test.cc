// Checks the integration-test harness itself against a real PostgreSQL, with no agent involved:
// if these fail, failures in the agent tests say nothing about the agent.

#include <libpq-fe.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "gtest/gtest.h"
#include "tests/testutil/fixtures.h"
#include "tests/testutil/free_port.h"
#include "tests/testutil/md5.h"
#include "tests/testutil/postgres_env.h"
#include "tests/testutil/pq.h"
#include "tests/testutil/process.h"
#include "tests/testutil/raw_client.h"
#include "tests/testutil/status_testing.h"
#include "tests/testutil/wait.h"

namespace pgfleet::testutil {
namespace {

constexpr char kUser[] = "harness";
constexpr char kPassword[] = "harness-pw";
constexpr char kMd5User[] = "harness_md5";
constexpr char kMd5Password[] = "harness-md5-pw";
constexpr char kDb[] = "harnessdb";

[[maybe_unused]] auto* const kCluster =
    RegisterSharedPostgres(PostgresWithMd5Role(kMd5User), [](PostgresEnv& pg) -> absl::Status {
      PGF_RETURN_IF_ERROR(pg.CreateUser(kUser, kPassword));
      PGF_RETURN_IF_ERROR(pg.CreateUser(kMd5User, kMd5Password, "md5"));
      return pg.CreateDatabase(kDb, kUser);
    });

class HarnessTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_NE(g_pg, nullptr) << "PostgreSQL did not start"; }
};

TEST(Md5Test, KnownVectors) {
  EXPECT_EQ(Md5Hex(""), "d41d8cd98f00b204e9800998ecf8427e");
  EXPECT_EQ(Md5Hex("abc"), "900150983cd24fb0d6963f7d28e17f72");
  EXPECT_EQ(Md5Hex("The quick brown fox jumps over the lazy dog"),
            "9e107d9d372bb6826bd81d3542a419d6");
  // Lengths around the 56-byte padding boundary.
  EXPECT_EQ(Md5Hex(std::string(55, 'a')), "ef1772b6dff9a122358552954ad0df65");
  EXPECT_EQ(Md5Hex(std::string(56, 'a')), "3b0c8ac703f828b04c6c197006d17218");
  EXPECT_EQ(Md5Hex(std::string(64, 'a')), "014842d480b571495a4a0363793f7367");
}

TEST(ProcessTest, RunCapturesOutputAndExitCode) {
  PGF_ASSERT_OK_AND_ASSIGN(RunResult ok, RunCommand({"sh", "-c", "echo out; echo err >&2"}));
  EXPECT_TRUE(ok.Succeeded()) << ok.Describe();
  EXPECT_EQ(ok.stdout_text, "out\n");
  EXPECT_EQ(ok.stderr_text, "err\n");

  PGF_ASSERT_OK_AND_ASSIGN(RunResult failed, RunCommand({"sh", "-c", "exit 3"}));
  EXPECT_FALSE(failed.Succeeded());
  EXPECT_EQ(failed.ExitCode(), 3);

  RunOptions env_options;
  env_options.env = {{"PGFLEET_HARNESS_VAR", "42"}};
  PGF_ASSERT_OK_AND_ASSIGN(RunResult env,
                           RunCommand({"sh", "-c", "echo $PGFLEET_HARNESS_VAR"}, env_options));
  EXPECT_EQ(env.stdout_text, "42\n");

  RunOptions short_timeout;
  short_timeout.timeout = absl::Milliseconds(200);
  PGF_ASSERT_OK_AND_ASSIGN(RunResult slow, RunCommand({"sleep", "30"}, short_timeout));
  EXPECT_TRUE(slow.timed_out);

  EXPECT_FALSE(RunCommand({"/nonexistent/program"}).ok());
}

TEST(FreePortTest, PortIsBindableAndNotListening) {
  PGF_ASSERT_OK_AND_ASSIGN(int port, PickFreePort());
  EXPECT_GT(port, 0);
  EXPECT_FALSE(CanConnect(port));
}

TEST_F(HarnessTest, DirectQueriesWork) {
  PGF_ASSERT_OK_AND_ASSIGN(Rows rows, g_pg->Exec("select 1, 'two'"));
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0], (std::vector<std::string>{"1", "two"}));

  PGF_ASSERT_OK_AND_ASSIGN(PgConn conn, Connect(g_pg->ConnString(kDb, kUser, kPassword)));
  PGF_ASSERT_OK_AND_ASSIGN(std::string user, ScalarText(conn.get(), "select current_user"));
  EXPECT_EQ(user, kUser);
  PGF_ASSERT_OK_AND_ASSIGN(int64_t n,
                           ScalarInt(conn.get(), "select count(*) from generate_series(1, 10)"));
  EXPECT_EQ(n, 10);
  PGF_ASSERT_OK_AND_ASSIGN(Rows params, QueryParams(conn.get(), "select $1::int + 1", {"41"}));
  EXPECT_EQ(params[0][0], "42");

  absl::StatusOr<Rows> bad = Query(conn.get(), "select * from no_such_table");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(SqlStateOf(bad.status()), "42P01") << bad.status();
  // The connection survives an error.
  PGF_EXPECT_OK(Query(conn.get(), "select 1"));

  EXPECT_FALSE(Connect(g_pg->ConnString(kDb, kUser, "wrong")).ok());
}

TEST_F(HarnessTest, GetResultWithinTimesOutThenDelivers) {
  PGF_ASSERT_OK_AND_ASSIGN(PgConn conn, Connect(g_pg->ConnString(kDb, kUser, kPassword)));
  ASSERT_EQ(PQsendQuery(conn.get(), "select pg_sleep(0.5), 7"), 1);
  absl::StatusOr<PgResult> early = GetResultWithin(conn.get(), absl::Milliseconds(50));
  EXPECT_TRUE(absl::IsDeadlineExceeded(early.status())) << early.status();
  PGF_ASSERT_OK_AND_ASSIGN(PgResult result, GetResultWithin(conn.get(), absl::Seconds(10)));
  ASSERT_NE(result, nullptr);
  EXPECT_STREQ(PQgetvalue(result.get(), 0, 1), "7");
  PGF_ASSERT_OK_AND_ASSIGN(PgResult end, GetResultWithin(conn.get(), absl::Seconds(10)));
  EXPECT_EQ(end, nullptr);
}

TEST_F(HarnessTest, Md5SecretMatchesPostgres) {
  PGF_ASSERT_OK_AND_ASSIGN(
      Rows stored, g_pg->Exec(absl::StrCat("select rolpassword from pg_authid where rolname = ",
                                           QuoteLiteral(kMd5User))));
  ASSERT_EQ(stored.size(), 1u);
  EXPECT_EQ(stored[0][0], PgMd5Secret(kMd5Password, kMd5User));
}

TEST_F(HarnessTest, RawClientMd5LoginAndQueryAgainstPostgres) {
  PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RawClient> raw, RawClient::Connect(g_pg->port()));
  PGF_ASSERT_OK_AND_ASSIGN(LoginResult login, raw->Login(kMd5User, kDb, kMd5Password));
  ASSERT_TRUE(login.ok) << (login.error ? login.error->ToString() : "no ReadyForQuery");
  EXPECT_EQ(login.auth_requests.front(), 5);
  EXPECT_TRUE(login.got_backend_key);
  EXPECT_EQ(login.parameters.count("server_version"), 1u);
  PGF_ASSERT_OK_AND_ASSIGN(std::vector<BackendMessage> messages, raw->SimpleQuery("select 6 * 7"));
  bool saw_row = false;
  for (const BackendMessage& m : messages) {
    if (m.type == 'D') {
      saw_row = true;
      EXPECT_EQ(m.body.substr(6), "42");
    }
  }
  EXPECT_TRUE(saw_row);
}

TEST_F(HarnessTest, RawClientSeesPostgresErrors) {
  {
    PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RawClient> raw, RawClient::Connect(g_pg->port()));
    PGF_ASSERT_OK_AND_ASSIGN(LoginResult login, raw->Login(kMd5User, kDb, "wrong"));
    EXPECT_FALSE(login.ok);
    ASSERT_TRUE(login.error.has_value());
    EXPECT_EQ(login.error->code, "28P01") << login.error->ToString();
    EXPECT_EQ(login.error->severity, "FATAL");
  }
  {
    // SCRAM with a wrong proof.
    PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RawClient> raw, RawClient::Connect(g_pg->port()));
    PGF_ASSERT_OK_AND_ASSIGN(LoginResult login, raw->Login(kUser, kDb, kPassword, absl::Seconds(10),
                                                           /*scram_garbage_proof=*/true));
    EXPECT_EQ(login.auth_requests.front(), 10);
    ASSERT_TRUE(login.error.has_value());
    EXPECT_EQ(login.error->code, "28P01") << login.error->ToString();
  }
  {
    // What PostgreSQL itself says to protocol 4.0: the agent tests expect the same shape.
    PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RawClient> raw, RawClient::Connect(g_pg->port()));
    PGF_ASSERT_OK(raw->Send(StartupPacket({{"user", kUser}, {"database", kDb}}, 0x00040000)));
    PGF_ASSERT_OK_AND_ASSIGN(BackendMessage reply, raw->ReadMessage(absl::Seconds(5)));
    ASSERT_EQ(reply.type, 'E');
    PGF_ASSERT_OK_AND_ASSIGN(ErrorFields error, ParseErrorResponse(reply.body));
    EXPECT_EQ(error.code, "0A000") << error.ToString();
    EXPECT_TRUE(absl::StrContains(absl::AsciiStrToLower(error.message), "protocol"));
    PGF_EXPECT_OK(raw->ReadUntilClose(absl::Seconds(5)));
  }
  {
    // SSLRequest: this cluster has no TLS, so 'N'.
    PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RawClient> raw, RawClient::Connect(g_pg->port()));
    PGF_ASSERT_OK(raw->Send(BigEndian32(8) + BigEndian32(kSslRequestCode)));
    PGF_ASSERT_OK_AND_ASSIGN(std::string answer, raw->ReadExactly(1, absl::Seconds(5)));
    EXPECT_EQ(answer, "N");
  }
}

TEST_F(HarnessTest, KillSocketLeavesNoOpenTransaction) {
  PGF_ASSERT_OK(g_pg->Exec(absl::StrCat("create table if not exists harness_kill(a int); "
                                        "alter table harness_kill owner to ",
                                        kUser),
                           kDb));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn conn, Connect(g_pg->ConnString(kDb, kUser, kPassword)));
  PGF_ASSERT_OK_AND_ASSIGN(std::string pid, ScalarText(conn.get(), "select pg_backend_pid()"));
  PGF_ASSERT_OK(Query(conn.get(), "begin; insert into harness_kill values (1)"));
  PGF_ASSERT_OK(KillSocket(conn.get()));
  PGF_EXPECT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        absl::StatusOr<Rows> rows =
            g_pg->Exec(absl::StrCat("select count(*) from pg_stat_activity where pid = ", pid));
        if (!rows.ok()) return rows.status();
        *note = absl::StrCat((*rows)[0][0], " backends with pid ", pid);
        return (*rows)[0][0] == "0";
      },
      absl::Seconds(10), "the killed client's backend to exit"));
  PGF_ASSERT_OK_AND_ASSIGN(Rows count, g_pg->Exec("select count(*) from harness_kill", kDb));
  EXPECT_EQ(count[0][0], "0");
}

TEST_F(HarnessTest, PgbenchInitWorks) {
  RunOptions run;
  run.env = {{"PGPASSWORD", kPassword}};
  run.timeout = absl::Seconds(120);
  PGF_ASSERT_OK_AND_ASSIGN(
      RunResult init,
      RunCommand({g_pg->BinPath("pgbench"), "-i", "-s", "1", "-q", "-h", "127.0.0.1", "-p",
                  std::to_string(g_pg->port()), "-U", kUser, kDb},
                 run));
  ASSERT_TRUE(init.Succeeded()) << init.Describe();
  PGF_ASSERT_OK_AND_ASSIGN(Rows rows, g_pg->Exec("select count(*) from pgbench_accounts", kDb));
  EXPECT_EQ(rows[0][0], "100000");
}

}  // namespace
}  // namespace pgfleet::testutil
