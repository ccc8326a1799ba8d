// auth_user / auth_query / auth_dbname (issue 22) against a real PostgreSQL and the real agent:
// passwords of users not in auth_file are looked up in PostgreSQL at each login, so auth_file
// holds only the auth_user (or nothing at all when pg_hba trusts it).
//
//  * the default auth_query (a superuser auth_user), md5 and SCRAM roles, under auth_type md5
//    and scram-sha-256 (the agent then logs in to PostgreSQL with the client's SCRAM keys);
//  * PgBouncer's documented SECURITY DEFINER user_lookup() function with a non-superuser
//    auth_user, as a per-database auth_user/auth_query/auth_dbname override;
//  * ALTER ROLE ... PASSWORD counts at the next login, without RELOAD;
//  * an expired role (VALID UNTIL in the past), a NOLOGIN role and an unknown user are refused
//    with PgBouncer's words;
//  * a broken auth_query, an auth_user that cannot log in, and a lookup PostgreSQL cancels fail
//    that login with a clear error while another client's queries go on.

#include <atomic>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "gtest/gtest.h"
#include "tests/testutil/fixtures.h"
#include "tests/testutil/pq.h"
#include "tests/testutil/status_testing.h"
#include "tests/testutil/wait.h"

namespace pgfleet::testutil {
namespace {

constexpr char kLookupUser[] = "pgb_lookup";  // Superuser: the default auth_query reads pg_authid.
constexpr char kLookupPassword[] = "lookup-Secret-1";
constexpr char kFnUser[] = "pgb_fn";  // Not a superuser: may only call user_lookup().
constexpr char kFnPassword[] = "fn-Secret-2";
constexpr char kTrustedUser[] = "pgb_trusted";  // pg_hba trusts it: no password anywhere.
constexpr char kMd5Role[] = "md5_role";
constexpr char kMd5Password[] = "md5-Pass-3";
constexpr char kScramRole[] = "scram_role";
constexpr char kScramPassword[] = "scram-Pass-4";
constexpr char kExpiredRole[] = "expired_role";
constexpr char kNologinRole[] = "nologin_role";
constexpr char kChangingRole[] = "changing_role";

PostgresOptions AuthQueryPostgres() {
  PostgresOptions options;
  options.extra_hba_lines = {
      absl::StrCat("host all ", kMd5Role, " 127.0.0.1/32 md5"),
      absl::StrCat("host all ", kTrustedUser, " 127.0.0.1/32 trust"),
  };
  return options;
}

absl::Status PrepareRoles(PostgresEnv& pg) {
  PGF_RETURN_IF_ERROR(CreateAppDatabase(pg));
  PGF_RETURN_IF_ERROR(pg.CreateUser(kLookupUser, kLookupPassword));
  PGF_RETURN_IF_ERROR(pg.CreateUser(kFnUser, kFnPassword));
  PGF_RETURN_IF_ERROR(pg.CreateUser(kMd5Role, kMd5Password, "md5"));
  PGF_RETURN_IF_ERROR(pg.CreateUser(kScramRole, kScramPassword));
  PGF_RETURN_IF_ERROR(pg.CreateUser(kExpiredRole, "expired-Pass-5"));
  PGF_RETURN_IF_ERROR(pg.CreateUser(kNologinRole, "nologin-Pass-6"));
  PGF_RETURN_IF_ERROR(pg.CreateUser(kChangingRole, "changing-Old-7"));
  PGF_RETURN_IF_ERROR(
      pg.Exec(absl::StrCat("ALTER ROLE ", kLookupUser, " SUPERUSER; CREATE ROLE ", kTrustedUser,
                           " LOGIN SUPERUSER; ALTER ROLE ", kExpiredRole,
                           " VALID UNTIL '2001-01-01'; ALTER ROLE ", kNologinRole, " NOLOGIN"))
          .status());
  // PgBouncer's documented lookup function, in the database the lookup runs on.
  return pg
      .Exec(absl::StrCat(
                "CREATE SCHEMA pgbouncer;"
                "CREATE FUNCTION pgbouncer.user_lookup(in i_username text, out uname text, "
                "out phash text) RETURNS record AS $$ BEGIN "
                "SELECT usename, passwd FROM pg_catalog.pg_shadow WHERE usename = i_username "
                "INTO uname, phash; RETURN; END; $$ LANGUAGE plpgsql SECURITY DEFINER;"
                "REVOKE ALL ON FUNCTION pgbouncer.user_lookup(text) FROM public;"
                "GRANT USAGE ON SCHEMA pgbouncer TO ",
                kFnUser, "; GRANT EXECUTE ON FUNCTION pgbouncer.user_lookup(text) TO ", kFnUser),
            kAppDb)
      .status();
}

[[maybe_unused]] auto* const kCluster = RegisterSharedPostgres(AuthQueryPostgres(), PrepareRoles);

class AuthQueryTest : public AgentTest {
 protected:
  // [databases]: appdb with the [pgbouncer] auth_user, `extra` entries after it.
  AgentOptions Options(const std::map<std::string, std::string>& settings,
                       const std::string& extra_databases = "") const {
    AgentOptions options;
    options.databases_section = absl::StrCat(kAppDb, " = host=127.0.0.1 port=", g_pg->port(),
                                             " dbname=", kAppDb, "\n", extra_databases);
    options.pgbouncer_settings = {{"auth_type", "md5"},
                                  {"pool_mode", "transaction"},
                                  {"default_pool_size", "4"},
                                  {"auth_user", kLookupUser},
                                  {"admin_users", kLookupUser}};
    for (const auto& [key, value] : settings) options.pgbouncer_settings[key] = value;
    // auth_file holds the auth_user only.
    options.userlist = {{kLookupUser, kLookupPassword}};
    return options;
  }

  std::string Entry(const std::string& name, const std::string& params) const {
    return absl::StrCat(name, " = host=127.0.0.1 port=", g_pg->port(), " dbname=", kAppDb, " ",
                        params, "\n");
  }

  absl::StatusOr<PgConn> Login(const std::string& user, const std::string& password,
                               const std::string& db = kAppDb) const {
    return Connect(agent_->ConnString(db, user, password));
  }

  // Logs in and checks PostgreSQL sees the session as `user`: the agent logged in to the server
  // as that user with what auth_query returned (or the client's SCRAM keys).
  void ExpectLoginAs(const std::string& user, const std::string& password,
                     const std::string& db = kAppDb) const {
    absl::StatusOr<PgConn> conn = Login(user, password, db);
    ASSERT_TRUE(conn.ok()) << user << ": " << conn.status() << "\n" << agent_->LogContents();
    absl::StatusOr<std::string> who = ScalarText(conn->get(), "select current_user");
    ASSERT_TRUE(who.ok()) << who.status();
    EXPECT_EQ(*who, user);
  }

  void ExpectRefused(const std::string& user, const std::string& password,
                     const std::string& message, const std::string& db = kAppDb) const {
    absl::StatusOr<PgConn> conn = Login(user, password, db);
    ASSERT_FALSE(conn.ok()) << user << " logged in";
    EXPECT_TRUE(absl::StrContains(conn.status().message(), message))
        << user << ": " << conn.status();
  }
};

TEST_F(AuthQueryTest, DefaultAuthQueryLogsInMd5AndScramRolesWithOnlyTheAuthUserInAuthFile) {
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(Options({})));
  ExpectLoginAs(kMd5Role, kMd5Password);      // md5 exchange, md5 hash to PostgreSQL.
  ExpectLoginAs(kScramRole, kScramPassword);  // SCRAM (the secret is a verifier), pass-through.
  ExpectRefused(kMd5Role, "wrong", "password authentication failed");
  ExpectRefused(kScramRole, "wrong", "SASL authentication failed");
  // The auth_file user still logs in from auth_file.
  ExpectLoginAs(kLookupUser, kLookupPassword);

  // SHOW CONFIG lists the keys with their values.
  absl::StatusOr<std::vector<NamedRow>> config =
      AdminShow(agent_->port(), "SHOW CONFIG", kLookupUser, kLookupPassword);
  ASSERT_TRUE(config.ok()) << config.status();
  std::map<std::string, std::string> values;
  for (const NamedRow& row : *config) values[row.at("key")] = row.at("value");
  EXPECT_EQ(values["auth_user"], kLookupUser);
  EXPECT_TRUE(absl::StrContains(values["auth_query"], "pg_authid")) << values["auth_query"];
  EXPECT_EQ(values["auth_dbname"], "");
  EXPECT_FALSE(absl::StrContains(agent_->LogContents(), "auth_query")) << agent_->LogContents();
}

TEST_F(AuthQueryTest, ScramAuthTypeLogsInToPostgresWithTheClientsKeys) {
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(Options({{"auth_type", "scram-sha-256"}})));
  ExpectLoginAs(kScramRole, kScramPassword);
  // Several sessions at once: new server connections log in with the same keys.
  std::vector<PgConn> held;
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<PgConn> conn = Login(kScramRole, kScramPassword);
    ASSERT_TRUE(conn.ok()) << conn.status();
    PGF_ASSERT_OK(Query(conn->get(), "begin; select 1").status());
    held.push_back(*std::move(conn));
  }
  // An md5 hash cannot answer SCRAM: refused as a wrong password, as PgBouncer.
  ExpectRefused(kMd5Role, kMd5Password, "SASL authentication failed");
}

TEST_F(AuthQueryTest, SecurityDefinerFunctionAsAPerDatabaseOverrideWithANonSuperuser) {
  AgentOptions options =
      Options({}, Entry("fn_db", absl::StrCat("auth_user=", kFnUser,
                                              " auth_query='SELECT uname, phash FROM "
                                              "pgbouncer.user_lookup($1)'")));
  options.userlist.push_back({kFnUser, kFnPassword});
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(options));
  ExpectLoginAs(kMd5Role, kMd5Password, "fn_db");
  ExpectLoginAs(kScramRole, kScramPassword, "fn_db");
  // The function answers an unknown user with a row of NULLs.
  ExpectRefused("nobody_here", "x", "no such user", "fn_db");
  // The lookup ran as the non-superuser pgb_fn on fn_db: its pool is in SHOW POOLS.
  absl::StatusOr<std::vector<NamedRow>> pools =
      AdminShow(agent_->port(), "SHOW POOLS", kLookupUser, kLookupPassword);
  ASSERT_TRUE(pools.ok()) << pools.status();
  bool fn_pool = false;
  for (const NamedRow& row : *pools) {
    if (row.at("database") == "fn_db" && row.at("user") == kFnUser) fn_pool = true;
  }
  EXPECT_TRUE(fn_pool);
}

TEST_F(AuthQueryTest, AuthDbnameRunsTheLookupOnAnotherDatabaseEntry) {
  // lookupdb holds the function; the client's database "other" does not need it (it points at
  // postgres, where pgbouncer.user_lookup does not exist).
  AgentOptions options = Options(
      {}, Entry("lookupdb", "") + absl::StrCat("other = host=127.0.0.1 port=", g_pg->port(),
                                               " dbname=postgres auth_user=", kFnUser,
                                               " auth_dbname=lookupdb auth_query='SELECT uname, "
                                               "phash FROM pgbouncer.user_lookup($1)'\n"));
  options.userlist.push_back({kFnUser, kFnPassword});
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(options));
  ExpectLoginAs(kScramRole, kScramPassword, "other");
}

TEST_F(AuthQueryTest, PasswordChangedOnPostgresCountsWithoutReload) {
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(Options({})));
  ExpectLoginAs(kChangingRole, "changing-Old-7");
  // A session of the old password stays, holding its server connection.
  absl::StatusOr<PgConn> old_session = Login(kChangingRole, "changing-Old-7");
  ASSERT_TRUE(old_session.ok()) << old_session.status();
  PGF_ASSERT_OK(Query(old_session->get(), "begin; select 1").status());

  PGF_ASSERT_OK(g_pg->Exec(absl::StrCat("ALTER ROLE ", kChangingRole, " PASSWORD 'changing-New-8'"))
                    .status());
  ExpectLoginAs(kChangingRole, "changing-New-8");
  ExpectRefused(kChangingRole, "changing-Old-7", "authentication failed");
  PGF_ASSERT_OK(Query(old_session->get(), "commit").status());
  // And back, for reruns.
  PGF_ASSERT_OK(g_pg->Exec(absl::StrCat("ALTER ROLE ", kChangingRole, " PASSWORD 'changing-Old-7'"))
                    .status());
  ExpectLoginAs(kChangingRole, "changing-Old-7");
}

TEST_F(AuthQueryTest, ExpiredNologinAndUnknownRolesAreRefused) {
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(Options({{"auth_type", "scram-sha-256"}})));
  ExpectRefused(kExpiredRole, "expired-Pass-5", "authentication failed");
  ExpectRefused(kNologinRole, "nologin-Pass-6", "no such user");
  ExpectRefused("no_such_role", "x", "no such user");
  const std::string log = agent_->LogContents();
  EXPECT_TRUE(absl::StrContains(log, "auth_query returned no password")) << log;
  EXPECT_TRUE(absl::StrContains(log, "auth_query returned no row")) << log;
}

TEST_F(AuthQueryTest, AFailedLookupFailsThatLoginOnlyWithAClearError) {
  AgentOptions options = Options(
      {}, Entry("broken", "auth_query='SELECT rolname, x FROM no_such_table WHERE rolname=$1'") +
              Entry("badauth", "auth_user=pgb_fn"));  // Not in auth_file: no password known.
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(options));
  // Another client, in the middle of a transaction, on the same agent.
  absl::StatusOr<PgConn> other = Login(kScramRole, kScramPassword);
  ASSERT_TRUE(other.ok()) << other.status();
  PGF_ASSERT_OK(Query(other->get(), "begin; select 1").status());

  ExpectRefused(kScramRole, kScramPassword, "bouncer config error", "broken");
  ExpectRefused(kScramRole, kScramPassword, "no_such_table", "broken");
  ExpectRefused(kScramRole, kScramPassword, "auth_query failed: server login failed", "badauth");

  absl::StatusOr<int64_t> still = ScalarInt(other->get(), "select 41 + 1");
  ASSERT_TRUE(still.ok()) << still.status();
  EXPECT_EQ(*still, 42);
  PGF_ASSERT_OK(Query(other->get(), "commit").status());
  const std::string log = agent_->LogContents();
  EXPECT_TRUE(absl::StrContains(log, "auth_query failed")) << log;
  // And the good database still works after the failures.
  ExpectLoginAs(kMd5Role, kMd5Password);
}

TEST_F(AuthQueryTest, OtherClientsGoOnWhileALookupWaits) {
  // The lookup on "slow" waits in PostgreSQL until the test cancels it.
  AgentOptions options =
      Options({}, Entry("slow",
                        "auth_query='SELECT rolname, rolpassword FROM pg_authid, pg_sleep(600) "
                        "WHERE rolname=$1'"));
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(options));
  absl::StatusOr<PgConn> other = Login(kScramRole, kScramPassword);
  ASSERT_TRUE(other.ok()) << other.status();

  absl::Status slow_login = absl::UnknownError("not finished");
  std::atomic<bool> slow_done{false};
  std::thread slow([&] {
    absl::StatusOr<PgConn> conn = Login(kMd5Role, kMd5Password, "slow");
    slow_login = conn.status();
    slow_done = true;
  });
  const std::string sleeping =
      "select count(*) from pg_stat_activity where query like '%pg_sleep(600)%' and "
      "state = 'active' and pid <> pg_backend_pid()";
  absl::Status waited = PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        PGF_ASSIGN_OR_RETURN(Rows rows, g_pg->Exec(sleeping));
        *note = rows.empty() ? "" : rows[0][0];
        return !rows.empty() && rows[0][0] == "1";
      },
      absl::Seconds(30), "the lookup running in PostgreSQL");
  EXPECT_TRUE(waited.ok()) << waited;

  // While the lookup runs: other clients log in (another lookup included) and query.
  ExpectLoginAs(kMd5Role, kMd5Password);
  absl::StatusOr<int64_t> answer = ScalarInt(other->get(), "select 6 * 7");
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(*answer, 42);
  EXPECT_FALSE(slow_done.load());

  // PostgreSQL cancels the lookup: that login fails, with the reason.
  PGF_ASSERT_OK(g_pg->Exec("select pg_cancel_backend(pid) from pg_stat_activity where query "
                           "like '%pg_sleep(600)%' and pid <> pg_backend_pid()")
                    .status());
  slow.join();
  EXPECT_FALSE(slow_login.ok());
  EXPECT_TRUE(absl::StrContains(slow_login.message(), "canceling statement")) << slow_login;
}

TEST_F(AuthQueryTest, WorksWithNoAuthFileAtAll) {
  AgentOptions options = Options({{"auth_file", ""}, {"auth_user", kTrustedUser}});
  options.pgbouncer_settings.erase("admin_users");
  options.userlist.clear();
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(options));
  ExpectLoginAs(kMd5Role, kMd5Password);
  ExpectLoginAs(kScramRole, kScramPassword);
  ExpectRefused(kScramRole, "wrong", "SASL authentication failed");
}

}  // namespace
}  // namespace pgfleet::testutil
