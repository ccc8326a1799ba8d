// More behaviours of PgBouncer's own regression suite (upstream test/test_no_database.py,
// test_limits.py, test_misc.py), against a real PostgreSQL 15 and the real agent binary, for
// what pgbouncer_suite_parity_test.cc does not already cover:
//   - the no-database paths with auth_user (auth_query) and with SCRAM, a configured database
//     PostgreSQL does not have, and the `*` auto-database's "registered new auto-database";
//   - pool limits: min_pool_size filled by the janitor (forced user) or once used, per-user,
//     per-database and global pool sizes (one set online), max_db_connections and
//     max_user_connections across pools, the reserve pool's count, max_client_conn set online.
#include <libpq-fe.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/status_macros.h"
#include "gtest/gtest.h"
#include "tests/testutil/agent_process.h"
#include "tests/testutil/console.h"
#include "tests/testutil/fixtures.h"
#include "tests/testutil/postgres_env.h"
#include "tests/testutil/pq.h"
#include "tests/testutil/status_testing.h"
#include "tests/testutil/wait.h"

namespace pgfleet::testutil {
namespace {

// auth_file users that PostgreSQL does not know: the entries they use force kAppUser.
constexpr char kUserA[] = "usera";
constexpr char kUserB[] = "userb";
constexpr char kUserC[] = "userc";
constexpr char kPassword[] = "pool-Secret-3";
// A role PostgreSQL knows, with a SCRAM secret, and one for auth_user lookups (a superuser, as
// the default auth_query reads pg_authid).
constexpr char kScramRole[] = "scramrole";
constexpr char kScramPassword[] = "scram-Secret-4";
constexpr char kLookupRole[] = "pswcheck";
constexpr char kLookupPassword[] = "lookup-Secret-9";

absl::Status PrepareRoles(PostgresEnv& pg) {
  PGF_RETURN_IF_ERROR(CreateAppDatabase(pg));
  PGF_RETURN_IF_ERROR(pg.CreateUser(kScramRole, kScramPassword));
  PGF_RETURN_IF_ERROR(pg.CreateUser(kLookupRole, kLookupPassword));
  return pg.Exec(absl::StrCat("ALTER ROLE ", kLookupRole, " SUPERUSER")).status();
}

[[maybe_unused]] auto* const kCluster = RegisterSharedPostgres({}, PrepareRoles);

// Clients that each run `select pg_sleep(seconds)` at the same time (PgBouncer's
// bouncer.asleep(seconds, times=N)), and then wait for their answers.
class SleepingClients {
 public:
  absl::Status Start(const std::string& conninfo, int count, double seconds) {
    for (int i = 0; i < count; ++i) {
      PGF_ASSIGN_OR_RETURN(PgConn conn, Connect(conninfo));
      if (PQsendQuery(conn.get(), absl::StrCat("select pg_sleep(", seconds, ")").c_str()) != 1) {
        return absl::InternalError(PQerrorMessage(conn.get()));
      }
      conns_.push_back(std::move(conn));
    }
    return absl::OkStatus();
  }
  // Every query's outcome: OK, or the first error.
  absl::Status Finish() {
    absl::Status outcome = absl::OkStatus();
    for (PgConn& conn : conns_) {
      while (true) {
        absl::StatusOr<PgResult> result = GetResultWithin(conn.get(), absl::Seconds(60));
        if (!result.ok()) {
          outcome.Update(result.status());
          break;
        }
        if (*result == nullptr) break;
        if (PQresultStatus(result->get()) != PGRES_TUPLES_OK) {
          outcome.Update(absl::InternalError(PQresultErrorMessage(result->get())));
        }
      }
    }
    conns_.clear();
    return outcome;
  }

 private:
  std::vector<PgConn> conns_;
};

class PgbouncerSuiteParity2Test : public AgentTest {
 protected:
  AgentOptions Options(const std::map<std::string, std::string>& settings,
                       const std::string& databases) const {
    std::map<std::string, std::string> merged = {
        {"auth_type", "md5"},        {"pool_mode", "transaction"}, {"default_pool_size", "5"},
        {"max_client_conn", "100"},  {"admin_users", kAdminUser},  {"log_connections", "1"},
        {"log_disconnections", "1"}, {"log_pooler_errors", "1"}};
    if (!UsingForeignAgentBinary()) merged["auth_failure_burst"] = "0";
    for (const auto& [key, value] : settings) merged[key] = value;
    AgentOptions options = AppAgentOptions(merged);
    options.databases_section = databases;
    options.userlist = {{kAppUser, kAppPassword},      {kAdminUser, kAdminPassword},
                        {kUserA, kPassword},           {kUserB, kPassword},
                        {kUserC, kPassword},           {kScramRole, kScramPassword},
                        {kLookupRole, kLookupPassword}};
    return options;
  }

  // "name = host=... dbname=appdb `params`" (params: "user=... pool_size=...").
  static std::string Entry(const std::string& name, const std::string& params = "") {
    return absl::StrCat(name, " = host=127.0.0.1 port=", g_pg->port(), " dbname=", kAppDb, " ",
                        params, "\n");
  }
  static std::string Forced(const std::string& extra = "") {
    return absl::StrCat("user=", kAppUser, " password=", kAppPassword, " ", extra);
  }

  std::string ConnInfo(const std::string& db, const std::string& user,
                       const std::string& password) const {
    return TcpConnString(agent_->port(), db, user, password);
  }

  absl::StatusOr<PgConn> ConnectConsole() const {
    return Connect(agent_->ConnString("pgbouncer", kAdminUser, kAdminPassword));
  }

  size_t LogCount(const std::string& text) const {
    const std::string log = agent_->LogContents();
    size_t count = 0;
    for (size_t at = log.find(text); at != std::string::npos; at = log.find(text, at + 1)) ++count;
    return count;
  }

  absl::Status AwaitLog(const std::string& needle) const {
    return PollUntil(
        [&](std::string* note) -> absl::StatusOr<bool> {
          *note = agent_->LogContents();
          return absl::StrContains(*note, needle);
        },
        absl::Seconds(20), absl::StrCat("agent log line containing '", needle, "'"));
  }

  // PostgreSQL's client backends on appdb logged in as `role`.
  static absl::StatusOr<int64_t> Backends(const std::string& role) {
    PGF_ASSIGN_OR_RETURN(
        Rows rows, g_pg->Exec(absl::StrCat("select count(*) from pg_stat_activity where datname = "
                                           "'appdb' and backend_type = 'client backend' and "
                                           "usename = ",
                                           QuoteLiteral(role), " and pid <> pg_backend_pid()")));
    return std::stoll(rows.at(0).at(0));
  }
  static absl::Status AwaitBackends(const std::string& role, int64_t want) {
    return PollUntil(
        [&](std::string* note) -> absl::StatusOr<bool> {
          PGF_ASSIGN_OR_RETURN(int64_t now, Backends(role));
          *note = absl::StrCat(now, " backends as ", role);
          return now == want;
        },
        absl::Seconds(20), absl::StrCat(want, " backends as ", role));
  }
};

// ---- No database, auto-database -------------------------------------------------------------

// test_no_database_auth_user: with auth_user set, an unknown user's wrong password to a database
// nobody configured is an authentication failure, not "no such database".
TEST_F(PgbouncerSuiteParity2Test, NoDatabaseWithAuthUserIsAnAuthenticationFailure) {
  ASSERT_NO_FATAL_FAILURE(
      StartAgentWith(Options({{"auth_user", kLookupRole}}, Entry(kAppDb, Forced()))));
  absl::StatusOr<PgConn> refused = Connect(ConnInfo("nosuchdb", "someuser", "wrong"));
  ASSERT_FALSE(refused.ok());
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "password authentication failed"))
      << refused.status();
  PGF_EXPECT_OK(AwaitLog("closing because: password authentication failed"));
}

// test_no_database_auto_database_auth_user: through `*` with auth_user, the lookup runs in the
// client's database, and PostgreSQL's refusal of that database is what the client hears.
TEST_F(PgbouncerSuiteParity2Test, AutoDatabaseWithAuthUserPassesPostgresRefusalThrough) {
  const std::string star = absl::StrCat("* = host=127.0.0.1 port=", g_pg->port(), "\n");
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(Options({{"auth_user", kLookupRole}}, star)));
  absl::StatusOr<PgConn> refused = Connect(ConnInfo("nosuchdb", "nonexistinguser", "whatever"));
  ASSERT_FALSE(refused.ok());
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "database \"nosuchdb\" does not exist"))
      << refused.status();
}

// test_no_database_pg: a configured database PostgreSQL does not have.
TEST_F(PgbouncerSuiteParity2Test, ConfiguredDatabaseMissingOnPostgres) {
  const std::string entry = absl::StrCat("missing = host=127.0.0.1 port=", g_pg->port(),
                                         " dbname=non_existing_pg_db ", Forced(), "\n");
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(Options({}, entry)));
  absl::StatusOr<PgConn> conn = Connect(ConnInfo("missing", kUserA, kPassword));
  absl::Status status = conn.ok() ? ScalarInt(conn->get(), "select 1").status() : conn.status();
  ASSERT_FALSE(status.ok());
  EXPECT_TRUE(absl::StrContains(status.message(), "database \"non_existing_pg_db\" does not exist"))
      << status;
  PGF_EXPECT_OK(
      AwaitLog("server login failed: FATAL database \"non_existing_pg_db\" does not exist"));
  PGF_EXPECT_OK(AwaitLog("closing because: database \"non_existing_pg_db\" does not exist"));
}

// test_no_database_scram_auth_scram_pw_success (and md5 with a SCRAM secret): a client that
// logged in learns the database does not exist.
TEST_F(PgbouncerSuiteParity2Test, ScramLoginToAnUnknownDatabase) {
  for (const char* auth_type : {"scram-sha-256", "md5"}) {
    SCOPED_TRACE(auth_type);
    ASSERT_NO_FATAL_FAILURE(
        StartAgentWith(Options({{"auth_type", auth_type}}, Entry(kAppDb, Forced()))));
    absl::StatusOr<PgConn> refused = Connect(ConnInfo("nosuchdb", kScramRole, kScramPassword));
    ASSERT_FALSE(refused.ok());
    EXPECT_TRUE(absl::StrContains(refused.status().message(), "no such database: nosuchdb"))
        << refused.status();
    PGF_EXPECT_OK(AwaitLog("closing because: no such database: nosuchdb"));
    ExpectCleanStop(*agent_);
    agent_.reset();
  }
}

// test_misc.py test_auto_database: the agent says when `*` makes a database.
TEST_F(PgbouncerSuiteParity2Test, AutoDatabaseIsRegisteredInTheLog) {
  const std::string star =
      absl::StrCat("* = host=127.0.0.1 port=", g_pg->port(), " ", Forced(), "\n");
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(Options({}, star)));
  for (const char* user : {kUserA, kUserB}) {
    PGF_ASSERT_OK_AND_ASSIGN(PgConn conn, Connect(ConnInfo(kAppDb, user, kPassword)));
    PGF_ASSERT_OK_AND_ASSIGN(std::string db, ScalarText(conn.get(), "select current_database()"));
    EXPECT_EQ(db, kAppDb);
  }
  // Once per database, however many users it serves.
  EXPECT_EQ(LogCount("registered new auto-database: db=appdb"), 1u) << agent_->LogContents();
}

// ---- Pool limits -------------------------------------------------------------------------------

// test_min_pool_size: a database with a forced user gets min_pool_size servers from the janitor
// before any client comes; one without waits for a client, then fills up to min_pool_size.
TEST_F(PgbouncerSuiteParity2Test, MinPoolSizeFilledForForcedUsersAndOnceUsed) {
  PGF_ASSERT_OK(AwaitNoAppdbBackends(*g_pg));
  ASSERT_NO_FATAL_FAILURE(
      StartAgentWith(Options({}, Entry("forced", Forced("min_pool_size=3")) +
                                     Entry("perclient", "min_pool_size=4 pool_size=5"))));
  PGF_ASSERT_OK(AwaitBackends(kAppUser, 3));
  PGF_ASSERT_OK_AND_ASSIGN(int64_t scram_backends, Backends(kScramRole));
  EXPECT_EQ(scram_backends, 0);
  PGF_ASSERT_OK_AND_ASSIGN(PgConn conn, Connect(ConnInfo("perclient", kScramRole, kScramPassword)));
  PGF_ASSERT_OK(ScalarInt(conn.get(), "select 1").status());
  PGF_ASSERT_OK(AwaitBackends(kScramRole, 4));
}

// test_pool_size: per-user pool_size ([users]), ignored where the database forces its user;
// per-database pool_size; default_pool_size, and a SET of it applied to the running pools.
TEST_F(PgbouncerSuiteParity2Test, PoolSizesPerUserPerDatabaseAndGlobal) {
  PGF_ASSERT_OK(AwaitNoAppdbBackends(*g_pg));
  AgentOptions options =
      Options({{"default_pool_size", "3"}, {"query_wait_timeout", "30"}},
              Entry("byuser") + Entry("forced", Forced("pool_size=2")) + Entry("global"));
  options.users_section = absl::StrCat(kScramRole, " = pool_size=1\n", kUserA, " = pool_size=1\n");
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(options));

  // The user's pool_size: 1 server for 5 clients.
  SleepingClients by_user;
  PGF_ASSERT_OK(by_user.Start(ConnInfo("byuser", kScramRole, kScramPassword), 5, 1));
  PGF_ASSERT_OK(by_user.Finish());
  // Forced user: the database's pool_size (2), not the client's [users] pool_size (1).
  SleepingClients forced;
  PGF_ASSERT_OK(forced.Start(ConnInfo("forced", kUserA, kPassword), 5, 2));
  PGF_EXPECT_OK(AwaitBackends(kAppUser, 2));
  PGF_ASSERT_OK(forced.Finish());
  PGF_ASSERT_OK_AND_ASSIGN(int64_t scram, Backends(kScramRole));
  EXPECT_EQ(scram, 1) << "byuser's pool kept its one server";

  PGF_ASSERT_OK_AND_ASSIGN(PgConn console, ConnectConsole());
  // default_pool_size for the rest, and SET of it applies to the running pool (GH #248).
  SleepingClients global;
  PGF_ASSERT_OK(global.Start(ConnInfo("global", kLookupRole, kLookupPassword), 6, 2));
  PGF_EXPECT_OK(AwaitBackends(kLookupRole, 3));
  PGF_ASSERT_OK(global.Finish());
  PGF_ASSERT_OK(Command(console.get(), "SET default_pool_size = 5").status());
  PGF_ASSERT_OK(global.Start(ConnInfo("global", kLookupRole, kLookupPassword), 6, 2));
  PGF_EXPECT_OK(AwaitBackends(kLookupRole, 5));
  PGF_ASSERT_OK(global.Finish());
}

// PgBouncer keeps one pool per database and server user: clients of several users on a
// database that forces its user share that pool and its pool_size (test_pool_size's p0).
TEST_F(PgbouncerSuiteParity2Test, ForcedUserDatabaseSharesOnePoolAcrossClientUsers) {
  PGF_ASSERT_OK(AwaitNoAppdbBackends(*g_pg));
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(
      Options({{"query_wait_timeout", "30"}}, Entry("forced", Forced("pool_size=2")))));
  std::vector<SleepingClients> clients(3);
  const std::vector<std::string> users = {kUserA, kUserB, kUserC};
  for (size_t i = 0; i < users.size(); ++i) {
    PGF_ASSERT_OK(clients[i].Start(ConnInfo("forced", users[i], kPassword), 2, 2));
  }
  PGF_EXPECT_OK(AwaitBackends(kAppUser, 2));
  for (SleepingClients& group : clients) PGF_EXPECT_OK(group.Finish());
  PGF_ASSERT_OK_AND_ASSIGN(int64_t backends, Backends(kAppUser));
  EXPECT_EQ(backends, 2);
  PGF_ASSERT_OK_AND_ASSIGN(PgConn console, ConnectConsole());
  PGF_ASSERT_OK_AND_ASSIGN(Table pools, Show(console.get(), "SHOW POOLS"));
  Rows forced = pools.Where({{"database", "forced"}});
  ASSERT_EQ(forced.size(), 1u) << pools.Dump();
  EXPECT_EQ(pools.At(forced[0], "user"), kAppUser) << pools.Dump();
}

// test_max_db_connections: five users' pools on one database share its max_db_connections.
TEST_F(PgbouncerSuiteParity2Test, MaxDbConnectionsAcrossUsers) {
  PGF_ASSERT_OK(AwaitNoAppdbBackends(*g_pg));
  ASSERT_NO_FATAL_FAILURE(
      StartAgentWith(Options({{"query_wait_timeout", "30"}}, Entry("p2", "max_db_connections=4"))));
  std::vector<SleepingClients> clients(3);
  const std::vector<std::pair<std::string, std::string>> users = {
      {kAppUser, kAppPassword}, {kScramRole, kScramPassword}, {kLookupRole, kLookupPassword}};
  for (size_t i = 0; i < users.size(); ++i) {
    PGF_ASSERT_OK(clients[i].Start(ConnInfo("p2", users[i].first, users[i].second), 2, 2));
  }
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        PGF_ASSIGN_OR_RETURN(Rows rows, g_pg->Exec(kAppdbBackendsSql));
        *note = rows[0][0];
        return rows[0][0] == "4";
      },
      absl::Seconds(20), "4 backends on appdb"));
  for (SleepingClients& group : clients) PGF_EXPECT_OK(group.Finish());
  PGF_ASSERT_OK_AND_ASSIGN(Rows rows, g_pg->Exec(kAppdbBackendsSql));
  EXPECT_LE(std::stoi(rows[0][0]), 4);
}

// test_max_db_connections: at max_db_connections, another user's idle server gives way (each
// user has a pool of its own on a database that does not force one). Moved from
// pgbouncer_suite_parity_test.cc, whose appdb forces its user (one shared pool, nothing to evict).
TEST_F(PgbouncerSuiteParity2Test, MaxDbConnectionsEvictsAnotherPoolsIdleServer) {
  PGF_ASSERT_OK(AwaitNoAppdbBackends(*g_pg));
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(
      Options({{"max_db_connections", "1"}, {"query_wait_timeout", "10"}}, Entry(kAppDb))));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn first, Connect(ConnInfo(kAppDb, kAppUser, kAppPassword)));
  PGF_ASSERT_OK(Query(first.get(), "select 1").status());  // Its server is now idle.
  PGF_ASSERT_OK_AND_ASSIGN(PgConn second, Connect(ConnInfo(kAppDb, kScramRole, kScramPassword)));
  PGF_ASSERT_OK_AND_ASSIGN(int64_t two, ScalarInt(second.get(), "select 2"));
  EXPECT_EQ(two, 2);
  PGF_EXPECT_OK(AwaitLog("closing because: evicted"));
  PGF_ASSERT_OK_AND_ASSIGN(Rows rows, g_pg->Exec(kAppdbBackendsSql));
  EXPECT_LE(std::stoi(rows[0][0]), 1);
  // And back: the first user's next query evicts the second's idle server.
  PGF_ASSERT_OK_AND_ASSIGN(int64_t three, ScalarInt(first.get(), "select 3"));
  EXPECT_EQ(three, 3);
}

// test_max_user_connections: one user's pools on three databases share max_user_connections.
TEST_F(PgbouncerSuiteParity2Test, MaxUserConnectionsAcrossDatabases) {
  PGF_ASSERT_OK(AwaitNoAppdbBackends(*g_pg));
  AgentOptions options =
      Options({{"query_wait_timeout", "30"}}, Entry("p7a") + Entry("p7b") + Entry("p7c"));
  options.users_section = absl::StrCat(kScramRole, " = max_user_connections=3\n");
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(options));
  std::vector<SleepingClients> clients(3);
  const std::vector<std::string> dbs = {"p7a", "p7b", "p7c"};
  for (size_t i = 0; i < dbs.size(); ++i) {
    PGF_ASSERT_OK(clients[i].Start(ConnInfo(dbs[i], kScramRole, kScramPassword), 3, 1));
  }
  PGF_EXPECT_OK(AwaitBackends(kScramRole, 3));
  for (SleepingClients& group : clients) PGF_EXPECT_OK(group.Finish());
  PGF_ASSERT_OK_AND_ASSIGN(int64_t backends, Backends(kScramRole));
  EXPECT_LE(backends, 3);
}

// test_min_pool_size_with_lower_max_user_connections / _max_db_connections, by the log:
// exactly two new server connections, none evicted.
TEST_F(PgbouncerSuiteParity2Test, MinPoolSizeUnderALowerLimitOpensOnlyThatMany) {
  for (const char* limit : {"max_db_connections", "max_user_connections"}) {
    SCOPED_TRACE(limit);
    PGF_ASSERT_OK(AwaitNoAppdbBackends(*g_pg));
    ASSERT_NO_FATAL_FAILURE(
        StartAgentWith(Options({{limit, "2"}}, Entry("p0x", "min_pool_size=5 pool_size=5"))));
    SleepingClients client;
    PGF_ASSERT_OK(client.Start(ConnInfo("p0x", kScramRole, kScramPassword), 1, 2));
    PGF_EXPECT_OK(AwaitBackends(kScramRole, 2));
    PGF_ASSERT_OK(client.Finish());
    EXPECT_EQ(LogCount("new connection to server"), 2u) << agent_->LogContents();
    EXPECT_EQ(LogCount("closing because: evicted"), 0u) << agent_->LogContents();
    ExpectCleanStop(*agent_);
    agent_.reset();
  }
}

// test_reserve_pool_size: reserve_pool_size and reserve_pool_timeout set online; the waiting
// clients get exactly the reserve's servers on top of the pool's, each logged.
TEST_F(PgbouncerSuiteParity2Test, ReservePoolSetOnlineAddsExactlyItsSize) {
  PGF_ASSERT_OK(AwaitNoAppdbBackends(*g_pg));
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(
      Options({{"default_pool_size", "2"}, {"query_wait_timeout", "60"}}, Entry("p1", Forced()))));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn console, ConnectConsole());
  PGF_ASSERT_OK(Command(console.get(), "SET reserve_pool_size = 2").status());
  PGF_ASSERT_OK(Command(console.get(), "SET reserve_pool_timeout = 1").status());
  SleepingClients clients;
  PGF_ASSERT_OK(clients.Start(ConnInfo("p1", kUserA, kPassword), 6, 4));
  PGF_EXPECT_OK(AwaitBackends(kAppUser, 4));
  PGF_ASSERT_OK(clients.Finish());
  EXPECT_EQ(LogCount("taking connection from reserve_pool"), 2u) << agent_->LogContents();
}

// test_max_client_conn: SET max_client_conn = N; the Nth client is let in, the next refused.
TEST_F(PgbouncerSuiteParity2Test, MaxClientConnSetOnline) {
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(Options({}, Entry("p1", Forced()))));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn console, ConnectConsole());  // Client 1.
  PGF_ASSERT_OK(Command(console.get(), "SET max_client_conn = 3").status());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn second, Connect(ConnInfo("p1", kUserA, kPassword)));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn last, Connect(ConnInfo("p1", kUserA, kPassword)));
  PGF_EXPECT_OK(ScalarInt(last.get(), "select 1").status());
  absl::StatusOr<PgConn> refused = Connect(ConnInfo("p1", kUserA, kPassword));
  ASSERT_FALSE(refused.ok());
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "max_client_conn")) << refused.status();
}

}  // namespace
}  // namespace pgfleet::testutil
