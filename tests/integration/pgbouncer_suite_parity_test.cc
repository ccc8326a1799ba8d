// The behaviours PgBouncer's own regression suite (upstream test/*.py) checks, from the groups
// where pgfleet-agent differed, each against a real PostgreSQL 15 and the real agent binary:
//   - the words and SQLSTATE of every refused login (test_no_user.py, test_no_database.py,
//     test_auth.py): the authentication failure comes before "no such database";
//   - the console's KILL/DISABLE of a database that does not exist, and a disabled database
//     (test_admin.py, test_misc.py);
//   - the `*` auto-database: PostgreSQL's own refusal passed through, md5 and SCRAM logins, and
//     autodb_idle_timeout (test_no_database.py, test_auth.py);
//   - waiting instead of failing when PostgreSQL cannot be reached: server_login_retry,
//     server_connect_timeout, query_timeout and query_wait_timeout (test_timeouts.py);
//   - idle_transaction_timeout, which does not count a running query (test_timeouts.py, GH #125);
//   - max_db_connections closing another pool's idle server, min_pool_size under lower limits,
//     a reserve pool set online (test_limits.py).
//
// One PostgreSQL cluster serves the binary; every test starts its own agent.

#include <libpq-fe.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <future>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/auth_crypto.h"
#include "common/status_macros.h"
#include "gtest/gtest.h"
#include "tests/testutil/agent_process.h"
#include "tests/testutil/console.h"
#include "tests/testutil/fixtures.h"
#include "tests/testutil/free_port.h"
#include "tests/testutil/postgres_env.h"
#include "tests/testutil/pq.h"
#include "tests/testutil/raw_client.h"
#include "tests/testutil/status_testing.h"
#include "tests/testutil/wait.h"

namespace pgfleet::testutil {
namespace {

// auth_file users; the [databases] entries log in to PostgreSQL as kAppUser.
constexpr char kPlainUser[] = "plainuser";
constexpr char kPlainPassword[] = "plain-Secret-5";
constexpr char kOtherUser[] = "otheruser";
constexpr char kOtherPassword[] = "other-Secret-8";
constexpr char kScramUser[] = "scramuser";
constexpr char kScramPassword[] = "scram-Secret-6";

[[maybe_unused]] auto* const kCluster = RegisterSharedPostgres();

std::string ScramSecretFor(const std::string& password) {
  return crypto::FormatScramSecret(
      crypto::ScramKeysFromPassword(password, "fixed-test-salt!", 4096));
}

// A TCP port that completes the handshake (the kernel's backlog) and then never says a word: a
// PostgreSQL that is "slow to accept" (PgBouncer's test uses pre_auth_delay).
class SilentListener {
 public:
  SilentListener() {
    absl::StatusOr<LoopbackListener> listener = ListenOnLoopback();
    if (!listener.ok()) return;
    fd_ = listener->fd;
    port_ = listener->port;
  }
  ~SilentListener() {
    if (fd_ >= 0) close(fd_);
  }
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = -1;
};

class PgbouncerSuiteParityTest : public AgentTest {
 protected:
  AgentOptions Options(const std::map<std::string, std::string>& settings,
                       int server_port = 0) const {
    std::map<std::string, std::string> merged = {
        {"auth_type", "md5"},       {"pool_mode", "transaction"}, {"default_pool_size", "2"},
        {"max_client_conn", "100"}, {"admin_users", kAdminUser},  {"log_disconnections", "1"},
        {"log_pooler_errors", "1"}};
    // Every failure answered at once (pgfleet's throttling of repeated failures is not
    // PgBouncer's and not what these tests are about).
    if (!UsingForeignAgentBinary()) merged["auth_failure_burst"] = "0";
    for (const auto& [key, value] : settings) merged[key] = value;
    AgentOptions options = AppAgentOptions(merged);
    options.databases_section = DatabaseLine(kAppDb, server_port == 0 ? g_pg->port() : server_port);
    options.userlist = {{kAppUser, kAppPassword},
                        {kAdminUser, kAdminPassword},
                        {kPlainUser, kPlainPassword},
                        {kOtherUser, kOtherPassword},
                        {kScramUser, ScramSecretFor(kScramPassword)}};
    return options;
  }

  static std::string DatabaseLine(const std::string& name, int port) {
    return absl::StrCat(name, " = host=127.0.0.1 port=", port, " dbname=", kAppDb,
                        " user=", kAppUser, " password=", kAppPassword, "\n");
  }

  // The ErrorResponse that ends a raw-protocol login (md5 or cleartext answered with
  // `password`; SCRAM answered with a wrong proof).
  ErrorFields RefusedLogin(const std::string& user, const std::string& db,
                           const std::string& password) const {
    absl::StatusOr<std::unique_ptr<RawClient>> client = RawClient::Connect(agent_->port());
    EXPECT_TRUE(client.ok()) << client.status();
    if (!client.ok()) return {};
    absl::StatusOr<LoginResult> login =
        (*client)->Login(user, db, password, absl::Seconds(20), /*scram_garbage_proof=*/true);
    EXPECT_TRUE(login.ok()) << login.status();
    if (!login.ok()) return {};
    EXPECT_FALSE(login->ok) << user << "@" << db << " logged in";
    EXPECT_TRUE(login->error.has_value()) << user << "@" << db;
    return login->error.value_or(ErrorFields{});
  }

  void ExpectRefused(const std::string& user, const std::string& db, const std::string& password,
                     const std::string& sqlstate, const std::string& message) const {
    const ErrorFields error = RefusedLogin(user, db, password);
    EXPECT_EQ(error.severity, "FATAL") << error.ToString();
    EXPECT_EQ(error.code, sqlstate) << user << "@" << db << ": " << error.ToString();
    EXPECT_EQ(error.message, message) << user << "@" << db << ": " << error.ToString();
  }

  absl::StatusOr<PgConn> ConnectConsole() const {
    return Connect(agent_->ConnString("pgbouncer", kAdminUser, kAdminPassword));
  }

  absl::Status AwaitLog(const std::string& needle, absl::Duration timeout = absl::Seconds(20)) {
    return PollUntil(
        [&](std::string* note) -> absl::StatusOr<bool> {
          *note = agent_->LogContents();
          return absl::StrContains(*note, needle);
        },
        timeout, absl::StrCat("agent log line containing '", needle, "'"));
  }

  absl::StatusOr<int64_t> AppdbBackends() const {
    PGF_ASSIGN_OR_RETURN(Rows rows, g_pg->Exec(kAppdbBackendsSql));
    return std::stoll(rows.at(0).at(0));
  }
};

// ---- Refused logins: PgBouncer's words and SQLSTATE, and their order -------------------------

// test_no_database.py: the password is checked first; a database nobody configured is named
// only to a client that logged in.
TEST_F(PgbouncerSuiteParityTest, UnknownDatabaseIsAnsweredAfterAuthentication) {
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(Options({})));
  // test_no_database_authfail: wrong password, unknown database.
  ExpectRefused(kPlainUser, "nosuchdb", "wrong", "08P01", "password authentication failed");
  // test_no_database_md5_auth_md5_pw_success: right password, unknown database.
  ExpectRefused(kPlainUser, "nosuchdb", kPlainPassword, "08P01", "no such database: nosuchdb");
  // An unknown user learns nothing about the database either.
  ExpectRefused("nosuchuser", "nosuchdb", "whatever", "08P01", "password authentication failed");
  // test_no_database_md5_auth_scram_pw_success: a SCRAM secret under md5, right password.
  absl::StatusOr<PgConn> scram =
      Connect(TcpConnString(agent_->port(), "nosuchdb", kScramUser, kScramPassword));
  ASSERT_FALSE(scram.ok());
  EXPECT_TRUE(absl::StrContains(scram.status().message(), "no such database: nosuchdb"))
      << scram.status();
  PGF_EXPECT_OK(AwaitLog("closing because: no such database: nosuchdb"));
  PGF_EXPECT_OK(AwaitLog("closing because: password authentication failed"));
}

// test_no_user.py: an unknown user, by auth_type.
TEST_F(PgbouncerSuiteParityTest, UnknownUserGetsTheWordsOfEachAuthType) {
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(Options({})));
  // md5 (test_no_user_md5), and a SCRAM secret under md5 (a SASL exchange).
  ExpectRefused("nosuchuser", kAppDb, "whatever", "08P01", "password authentication failed");
  ExpectRefused(kScramUser, kAppDb, "wrong", "08P01", "SASL authentication failed");
  ExpectRefused(kPlainUser, kAppDb, "wrong", "08P01", "password authentication failed");

  for (const auto& [auth_type, message] : std::vector<std::pair<std::string, std::string>>{
           {"plain", "password authentication failed"},
           {"scram-sha-256", "SASL authentication failed"},
           {"trust", "\"trust\" authentication failed"}}) {
    SCOPED_TRACE(auth_type);
    PGF_ASSERT_OK_AND_ASSIGN(PgConn console, ConnectConsole());
    PGF_ASSERT_OK(Command(console.get(), absl::StrCat("SET auth_type = '", auth_type, "'")));
    ExpectRefused("nosuchuser", kAppDb, "whatever", "08P01", message);
    PGF_EXPECT_OK(AwaitLog(absl::StrCat("closing because: ", message)));
  }
  // trust: a known user on an unknown database is told the database does not exist.
  ExpectRefused(kPlainUser, "nosuchdb", "", "08P01", "no such database: nosuchdb");
  // ... and logs in to a known one.
  PGF_EXPECT_OK(Connect(TcpConnString(agent_->port(), kAppDb, kPlainUser, "")).status());
}

// test_auth.py: a wrong SCRAM proof is a "SASL authentication failed".
TEST_F(PgbouncerSuiteParityTest, WrongScramPasswordIsASaslFailure) {
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(Options({{"auth_type", "scram-sha-256"}})));
  absl::StatusOr<PgConn> wrong =
      Connect(TcpConnString(agent_->port(), kAppDb, kScramUser, "wrong"));
  ASSERT_FALSE(wrong.ok());
  EXPECT_TRUE(absl::StrContains(wrong.status().message(), "SASL authentication failed"))
      << wrong.status();
  PGF_EXPECT_OK(
      Connect(TcpConnString(agent_->port(), kAppDb, kScramUser, kScramPassword)).status());
  PGF_EXPECT_OK(
      Connect(TcpConnString(agent_->port(), kAppDb, kPlainUser, kPlainPassword)).status());
}

// ---- The console: DISABLE, KILL --------------------------------------------------------------

TEST_F(PgbouncerSuiteParityTest, DisabledAndMissingDatabasesOnTheConsole) {
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(Options({})));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn console, ConnectConsole());
  // test_kill_db_nonexisting: ProtocolViolation, "no such database: dne".
  for (const char* command : {"KILL dne", "DISABLE dne", "ENABLE dne", "PAUSE dne"}) {
    absl::StatusOr<std::string> refused = Command(console.get(), command);
    ASSERT_FALSE(refused.ok()) << command;
    EXPECT_EQ(SqlStateOf(refused.status()), "08P01") << command << ": " << refused.status();
    EXPECT_TRUE(absl::StrContains(refused.status().message(), "no such database: dne"))
        << command << ": " << refused.status();
  }

  PGF_ASSERT_OK(Command(console.get(), "DISABLE appdb"));
  // Authentication first: a wrong password is a wrong password.
  ExpectRefused(kPlainUser, kAppDb, "wrong", "08P01", "password authentication failed");
  ExpectRefused(kPlainUser, kAppDb, kPlainPassword, "08P01", "database \"appdb\" is disabled");
  PGF_ASSERT_OK(Command(console.get(), "ENABLE appdb"));
  PGF_EXPECT_OK(
      Connect(TcpConnString(agent_->port(), kAppDb, kPlainUser, kPlainPassword)).status());
}

// ---- The `*` auto-database ---------------------------------------------------------------------

// test_no_database_auto_database: PostgreSQL's refusal reaches the client as PostgreSQL said it.
TEST_F(PgbouncerSuiteParityTest, AutoDatabasePassesPostgresRefusalThrough) {
  AgentOptions options = Options({{"autodb_idle_timeout", "1"}});
  options.databases_section = absl::StrCat("* = host=127.0.0.1 port=", g_pg->port(),
                                           " user=", kAppUser, " password=", kAppPassword, "\n");
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(options));

  ExpectRefused(kPlainUser, "nosuchdb_pg", kPlainPassword, "3D000",
                "database \"nosuchdb_pg\" does not exist");
  PGF_EXPECT_OK(AwaitLog("server login failed: FATAL database \"nosuchdb_pg\" does not exist"));
  PGF_EXPECT_OK(AwaitLog("closing because: database \"nosuchdb_pg\" does not exist"));
  // Wrong password: refused before any server is tried.
  ExpectRefused(kPlainUser, "nosuchdb_pg", "wrong", "08P01", "password authentication failed");

  // md5 and SCRAM clients through `*` to a database that exists.
  for (const auto& [user, password] : std::vector<std::pair<std::string, std::string>>{
           {kPlainUser, kPlainPassword}, {kScramUser, kScramPassword}}) {
    PGF_ASSERT_OK_AND_ASSIGN(PgConn conn,
                             Connect(TcpConnString(agent_->port(), kAppDb, user, password)));
    PGF_ASSERT_OK_AND_ASSIGN(int64_t one, ScalarInt(conn.get(), "select 1"));
    EXPECT_EQ(one, 1);
  }
  // The auto-created pools go once unused for autodb_idle_timeout.
  PGF_EXPECT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        PGF_ASSIGN_OR_RETURN(PgConn console, ConnectConsole());
        PGF_ASSIGN_OR_RETURN(Table pools, Show(console.get(), "SHOW POOLS"));
        *note = absl::StrCat(pools.rows.size(), " pools");
        return pools.Where({{"database", kAppDb}}).empty();
      },
      absl::Seconds(30), "the auto-database's pools reclaimed"));
}

// ---- PostgreSQL unreachable or slow: clients wait ----------------------------------------------

// test_server_login_retry: nothing listens yet; the client waits, and gets in once it does.
TEST_F(PgbouncerSuiteParityTest, ClientsWaitWhilePostgresIsUnreachable) {
  PGF_ASSERT_OK_AND_ASSIGN(int dead_port, PickFreePort());
  AgentOptions options =
      Options({{"server_login_retry", "1"}, {"query_wait_timeout", "60"}}, dead_port);
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(options));

  std::future<absl::StatusOr<int64_t>> query = std::async(std::launch::async, [&] {
    absl::StatusOr<int64_t> result = absl::UnknownError("not run");
    absl::StatusOr<PgConn> conn = Connect(absl::StrCat(
        TcpConnString(agent_->port(), kAppDb, kPlainUser, kPlainPassword), " connect_timeout=60"));
    if (!conn.ok()) return absl::StatusOr<int64_t>(conn.status());
    return ScalarInt(conn->get(), "select 7");
  });
  // At least two attempts failed (server_login_retry = 1 s) while the client stays queued.
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        *note = agent_->LogContents();
        return CountOccurrences(*note, "could not connect") >= 2;
      },
      absl::Seconds(20), "two failed connection attempts"));
  ASSERT_EQ(query.wait_for(std::chrono::seconds(0)), std::future_status::timeout)
      << "the client was failed at once: " << query.get().status();

  // PostgreSQL "comes back": the entry now points at it.
  options.databases_section = DatabaseLine(kAppDb, g_pg->port());
  PGF_ASSERT_OK(agent_->RewriteConfig(options));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn console, ConnectConsole());
  PGF_ASSERT_OK(Command(console.get(), "RELOAD"));
  absl::StatusOr<int64_t> seven = query.get();
  PGF_ASSERT_OK(seven.status());
  EXPECT_EQ(*seven, 7);
}

// test_server_connect_timeout_establish: the server never answers; its connection is closed
// with "connect timeout" and the client, still waiting, gets query_timeout.
TEST_F(PgbouncerSuiteParityTest, ServerConnectTimeoutLeavesTheClientToQueryTimeout) {
  SilentListener silent;
  ASSERT_GT(silent.port(), 0);
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(Options(
      {{"server_connect_timeout", "1"}, {"query_timeout", "4"}, {"server_login_retry", "1"}},
      silent.port())));
  const ErrorFields error = RefusedLogin(kPlainUser, kAppDb, kPlainPassword);
  EXPECT_EQ(error.code, "08P01") << error.ToString();
  EXPECT_EQ(error.message, "query_timeout") << error.ToString();
  EXPECT_TRUE(absl::StrContains(agent_->LogContents(), "closing because: connect timeout"))
      << agent_->LogContents();
}

// A client waiting for the first server login is bound by query_wait_timeout too.
TEST_F(PgbouncerSuiteParityTest, LoginWaitingClientGetsQueryWaitTimeout) {
  PGF_ASSERT_OK_AND_ASSIGN(int dead_port, PickFreePort());
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(
      Options({{"query_wait_timeout", "2"}, {"server_login_retry", "1"}}, dead_port)));
  const ErrorFields error = RefusedLogin(kPlainUser, kAppDb, kPlainPassword);
  EXPECT_EQ(error.code, "08P01") << error.ToString();
  EXPECT_EQ(error.message, "query_wait_timeout") << error.ToString();
}

// ---- idle_transaction_timeout ------------------------------------------------------------------

TEST_F(PgbouncerSuiteParityTest, IdleTransactionTimeoutWordsAndRunningQueries) {
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(Options({{"idle_transaction_timeout", "3"}})));
  // GH #125: a query that runs longer than the timeout, then a short pause, is not idleness.
  {
    PGF_ASSERT_OK_AND_ASSIGN(
        PgConn conn, Connect(TcpConnString(agent_->port(), kAppDb, kPlainUser, kPlainPassword)));
    PGF_ASSERT_OK(Query(conn.get(), "begin").status());
    PGF_ASSERT_OK(Query(conn.get(), "select pg_sleep(4)").status());
    // Idle for less than the timeout, but more than it since the client last spoke.
    absl::SleepFor(absl::Milliseconds(1500));
    PGF_EXPECT_OK(Query(conn.get(), "select 1").status());
    PGF_EXPECT_OK(Query(conn.get(), "commit").status());
  }
  // Idle in a transaction past the timeout: PgBouncer's words, SQLSTATE 08P01.
  PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RawClient> client, RawClient::Connect(agent_->port()));
  PGF_ASSERT_OK_AND_ASSIGN(LoginResult login, client->Login(kPlainUser, kAppDb, kPlainPassword));
  ASSERT_TRUE(login.ok);
  PGF_ASSERT_OK(client->SimpleQuery("begin").status());
  PGF_ASSERT_OK_AND_ASSIGN(std::string rest, client->ReadUntilClose(absl::Seconds(20)));
  std::optional<ErrorFields> error = FirstError(rest);
  ASSERT_TRUE(error.has_value());
  EXPECT_EQ(error->code, "08P01") << error->ToString();
  EXPECT_EQ(error->message, "idle transaction timeout") << error->ToString();
  PGF_EXPECT_OK(AwaitLog("closing because: idle transaction timeout"));
}

// ---- Pool limits -------------------------------------------------------------------------------

// test_min_pool_size_with_lower_max_db_connections / _max_user_connections: the lower limit
// wins, and nothing is evicted to reach min_pool_size.
TEST_F(PgbouncerSuiteParityTest, MinPoolSizeStopsAtLowerLimits) {
  for (const char* limit : {"max_db_connections", "max_user_connections"}) {
    SCOPED_TRACE(limit);
    PGF_ASSERT_OK(AwaitNoAppdbBackends(*g_pg));
    ASSERT_NO_FATAL_FAILURE(StartAgentWith(
        Options({{"min_pool_size", "5"}, {"default_pool_size", "5"}, {limit, "2"}})));
    PGF_ASSERT_OK_AND_ASSIGN(
        PgConn conn, Connect(TcpConnString(agent_->port(), kAppDb, kPlainUser, kPlainPassword)));
    PGF_ASSERT_OK(Query(conn.get(), "select 1").status());
    PGF_ASSERT_OK(PollUntil(
        [&](std::string* note) -> absl::StatusOr<bool> {
          PGF_ASSIGN_OR_RETURN(int64_t backends, AppdbBackends());
          *note = absl::StrCat(backends, " backends");
          return backends == 2;
        },
        absl::Seconds(20), "min_pool_size filled up to the limit"));
    const std::string log = agent_->LogContents();
    EXPECT_FALSE(absl::StrContains(log, "evicted")) << log;
    PGF_ASSERT_OK_AND_ASSIGN(PgConn console, ConnectConsole());
    PGF_ASSERT_OK_AND_ASSIGN(Table pools, Show(console.get(), "SHOW POOLS"));
    int servers = 0;
    for (const auto& row : pools.Where({{"database", kAppDb}})) {
      servers += std::stoi(pools.At(row, "sv_idle")) + std::stoi(pools.At(row, "sv_active")) +
                 std::stoi(pools.At(row, "sv_used")) + std::stoi(pools.At(row, "sv_login"));
    }
    EXPECT_EQ(servers, 2);
    ExpectCleanStop(*agent_);
    agent_.reset();
  }
}

// test_reserve_pool_size: reserve_pool_size and reserve_pool_timeout set online take effect.
TEST_F(PgbouncerSuiteParityTest, ReservePoolSetOnline) {
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(Options(
      {{"default_pool_size", "1"}, {"reserve_pool_size", "0"}, {"query_wait_timeout", "30"}})));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn console, ConnectConsole());
  PGF_ASSERT_OK(Command(console.get(), "SET reserve_pool_size = 1"));
  PGF_ASSERT_OK(Command(console.get(), "SET reserve_pool_timeout = 1"));
  PGF_ASSERT_OK_AND_ASSIGN(
      PgConn holder, Connect(TcpConnString(agent_->port(), kAppDb, kPlainUser, kPlainPassword)));
  PGF_ASSERT_OK(Query(holder.get(), "begin").status());  // Holds the pool's one server.
  PGF_ASSERT_OK_AND_ASSIGN(
      PgConn waiter, Connect(TcpConnString(agent_->port(), kAppDb, kPlainUser, kPlainPassword)));
  PGF_ASSERT_OK_AND_ASSIGN(int64_t five, ScalarInt(waiter.get(), "select 5"));
  EXPECT_EQ(five, 5);
  PGF_EXPECT_OK(AwaitLog("taking connection from reserve_pool"));
  PGF_EXPECT_OK(Query(holder.get(), "commit").status());
}

// ---- SHOW STATS (PgBouncer 1.23 columns) -------------------------------------------------------

// test_show_stats: session pooling, so one server assignment per client.
TEST_F(PgbouncerSuiteParityTest, ShowStatsCountsServerAssignments) {
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(Options({{"pool_mode", "session"}})));
  for (int i = 0; i < 5; ++i) {
    PGF_ASSERT_OK_AND_ASSIGN(
        PgConn conn, Connect(TcpConnString(agent_->port(), kAppDb, kPlainUser, kPlainPassword)));
    PGF_ASSERT_OK(Query(conn.get(), "select 1").status());
    PGF_ASSERT_OK(Query(conn.get(), "select 2").status());
  }
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        PGF_ASSIGN_OR_RETURN(PgConn console, ConnectConsole());
        PGF_ASSIGN_OR_RETURN(Table stats, Show(console.get(), "SHOW STATS"));
        Rows rows = stats.Where({{"database", kAppDb}});
        *note = stats.Dump();
        return !rows.empty() && stats.At(rows[0], "total_server_assignment_count") == "5";
      },
      absl::Seconds(20), "5 server assignments in SHOW STATS"));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn console, ConnectConsole());
  PGF_ASSERT_OK_AND_ASSIGN(Table stats, Show(console.get(), "SHOW STATS"));
  for (const char* column :
       {"total_client_parse_count", "total_server_parse_count", "total_bind_count",
        "avg_server_assignment_count", "avg_client_parse_count", "avg_server_parse_count",
        "avg_bind_count"}) {
    EXPECT_GE(stats.Col(column), 0) << column << "\n" << stats.Dump();
  }
  PGF_ASSERT_OK_AND_ASSIGN(Table totals, Show(console.get(), "SHOW STATS_TOTALS"));
  Rows total_rows = totals.Where({{"database", kAppDb}});
  ASSERT_EQ(total_rows.size(), 1u) << totals.Dump();
  EXPECT_EQ(totals.At(total_rows[0], "server_assignment_count"), "5") << totals.Dump();
  EXPECT_EQ(totals.At(total_rows[0], "xact_count"), "10") << totals.Dump();
  PGF_ASSERT_OK_AND_ASSIGN(Table all, Show(console.get(), "SHOW TOTALS"));
  EXPECT_FALSE(all.Where({{"name", "total_server_assignment_count"}, {"value", "5"}}).empty())
      << all.Dump();
}

// The prepared-statement counters: a named statement prepared once and executed twice.
TEST_F(PgbouncerSuiteParityTest, ShowStatsCountsPreparedStatements) {
  ASSERT_NO_FATAL_FAILURE(
      StartAgentWith(Options({{"pool_mode", "transaction"}, {"max_prepared_statements", "10"}})));
  PGF_ASSERT_OK_AND_ASSIGN(
      PgConn conn, Connect(TcpConnString(agent_->port(), kAppDb, kPlainUser, kPlainPassword)));
  PgResult prepared(PQprepare(conn.get(), "s1", "select $1::int", 1, nullptr));
  ASSERT_EQ(PQresultStatus(prepared.get()), PGRES_COMMAND_OK) << PQerrorMessage(conn.get());
  for (const char* value : {"1", "2"}) {
    const char* params[] = {value};
    PgResult executed(PQexecPrepared(conn.get(), "s1", 1, params, nullptr, nullptr, 0));
    ASSERT_EQ(PQresultStatus(executed.get()), PGRES_TUPLES_OK) << PQerrorMessage(conn.get());
  }
  PGF_ASSERT_OK_AND_ASSIGN(PgConn console, ConnectConsole());
  PGF_ASSERT_OK_AND_ASSIGN(Table stats, Show(console.get(), "SHOW STATS"));
  Rows rows = stats.Where({{"database", kAppDb}});
  ASSERT_EQ(rows.size(), 1u) << stats.Dump();
  EXPECT_EQ(stats.At(rows[0], "total_client_parse_count"), "1") << stats.Dump();
  EXPECT_EQ(stats.At(rows[0], "total_server_parse_count"), "1") << stats.Dump();
  EXPECT_EQ(stats.At(rows[0], "total_bind_count"), "2") << stats.Dump();
}

}  // namespace
}  // namespace pgfleet::testutil
