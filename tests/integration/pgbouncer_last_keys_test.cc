// Issue 22: the last PgBouncer 1.25 keys pgfleet loaded without acting on, now with PgBouncer's
// semantics, and PgBouncer's answer when auth_dbname's database is DISABLEd. The real
// pgfleet-agent in front of a real PostgreSQL throughout.
//
//  * disable_pqexec: a simple-protocol Query closes the client with "PQexec disallowed"
//    (08P01), whether or not it holds a server; the extended protocol works;
//  * login_notify_message: a NOTICE with the text at the end of every login;
//  * pool_idle_timeout: a pool with no client and no server for that long is dropped (SHOW
//    POOLS no longer lists it); a pool with a client stays;
//  * target_session_attrs: the host of a list whose reported status (default_transaction_
//    read_only, in_hot_standby) qualifies is used, the others are closed as failed logins; with
//    none qualifying the clients wait, as for a server that is down;
//  * a DISABLEd auth_dbname refuses the login with PgBouncer's words.

#include <libpq-fe.h>

#include <map>
#include <memory>
#include <string>
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
#include "tests/testutil/raw_client.h"
#include "tests/testutil/status_testing.h"
#include "tests/testutil/wait.h"

namespace pgfleet::testutil {
namespace {

// auth_query's lookup role (a superuser: the default auth_query reads pg_authid) and a role
// only PostgreSQL knows the password of.
constexpr char kLookupUser[] = "lk_lookup";
constexpr char kLookupPassword[] = "lk-Secret-1";
constexpr char kLookedUpUser[] = "lk_user";
constexpr char kLookedUpPassword[] = "lk-User-2";

absl::Status PrepareCluster(PostgresEnv& pg) {
  PGF_RETURN_IF_ERROR(CreateAppDatabase(pg));
  PGF_RETURN_IF_ERROR(pg.CreateUser(kLookupUser, kLookupPassword));
  PGF_RETURN_IF_ERROR(pg.CreateUser(kLookedUpUser, kLookedUpPassword));
  return pg.Exec(absl::StrCat("ALTER ROLE ", kLookupUser, " SUPERUSER")).status();
}

[[maybe_unused]] auto* const kCluster = RegisterSharedPostgres({}, PrepareCluster);

std::string Entry(const std::string& name, int port, const std::string& extra = "") {
  return absl::StrCat(name, " = host=127.0.0.1 port=", port, " dbname=", kAppDb, " ", extra, "\n");
}

class LastKeysTest : public AgentTest {
 protected:
  absl::Status AwaitLog(const std::string& needle, absl::Duration timeout = absl::Seconds(20)) {
    return PollUntil(
        [&](std::string* note) -> absl::StatusOr<bool> {
          *note = agent_->LogContents();
          return absl::StrContains(*note, needle);
        },
        timeout, absl::StrCat("agent log line containing '", needle, "'"));
  }

  absl::StatusOr<PgConn> ConnectConsole() const {
    return Connect(agent_->ConnString("pgbouncer", kAdminUser, kAdminPassword));
  }
};

// ---- disable_pqexec ----------------------------------------------------------------------------

// PgBouncer (client.c handle_client_work): any Query message from a logged-in client is
// answered with FATAL 08P01 "PQexec disallowed" and the client is closed; Parse/Bind/Execute
// go through.
TEST_F(LastKeysTest, DisablePqexecRefusesTheSimpleProtocolAndKeepsTheExtendedOne) {
  StartAgent({{"disable_pqexec", "1"}, {"admin_users", kAdminUser}});
  PGF_ASSERT_OK_AND_ASSIGN(PgConn conn, ConnectApp());
  PGF_ASSERT_OK_AND_ASSIGN(Rows rows, QueryParams(conn.get(), "select $1::int + 1", {"41"}));
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0][0], "42");

  absl::StatusOr<Rows> simple = Query(conn.get(), "select 1");
  ASSERT_FALSE(simple.ok()) << "a simple-protocol query ran";
  EXPECT_EQ(simple.status().message(), "08P01: PQexec disallowed");
  PGF_ASSERT_OK(AwaitLog("client used \"Query\" packet type"));
  PGF_ASSERT_OK(AwaitLog("closing because: PQexec disallowed"));
}

// A client in the middle of a transaction (linked to its server) is refused the same way; its
// server goes with it, so PostgreSQL is left with no transaction open.
TEST_F(LastKeysTest, DisablePqexecRefusesAQueryInsideATransactionAndClosesItsServer) {
  StartAgent({{"disable_pqexec", "1"}, {"pool_mode", "session"}});
  PGF_ASSERT_OK_AND_ASSIGN(PgConn conn, ConnectApp());
  PGF_ASSERT_OK(QueryParams(conn.get(), "begin", {}).status());
  PGF_ASSERT_OK(QueryParams(conn.get(), "select txid_current()", {}).status());
  absl::StatusOr<Rows> simple = Query(conn.get(), "commit");
  ASSERT_FALSE(simple.ok()) << "a simple-protocol commit ran";
  EXPECT_EQ(simple.status().message(), "08P01: PQexec disallowed");
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        PGF_ASSIGN_OR_RETURN(
            Rows open, g_pg->Exec(absl::StrCat(kAppdbBackendsSql, " and state like 'idle in%'")));
        *note = absl::StrCat(open.at(0).at(0), " backends in a transaction");
        return open.at(0).at(0) == "0";
      },
      absl::Seconds(30), "the refused client's server to be closed"));
}

// pgfleet keeps the admin console usable (it speaks the simple protocol only); PgBouncer locks
// its operators out of it too.
TEST_F(LastKeysTest, DisablePqexecLeavesTheAdminConsoleUsable) {
  StartAgent({{"disable_pqexec", "1"}, {"admin_users", kAdminUser}});
  PGF_ASSERT_OK_AND_ASSIGN(std::vector<NamedRow> config, AdminShow(agent_->port(), "SHOW CONFIG"));
  bool shown = false;
  for (const NamedRow& row : config) {
    if (row.at("key") == "disable_pqexec") {
      shown = true;
      EXPECT_EQ(row.at("value"), "1");
      EXPECT_EQ(row.at("changeable"), "no");  // PgBouncer's CF_NO_RELOAD.
    }
  }
  EXPECT_TRUE(shown);
  EXPECT_FALSE(absl::StrContains(agent_->LogContents(), "'disable_pqexec' is not supported"));
}

// ---- login_notify_message ----------------------------------------------------------------------

// The messages of a login under auth_type trust, up to ReadyForQuery.
absl::StatusOr<std::vector<BackendMessage>> TrustLogin(int port, const std::string& user,
                                                       const std::string& database) {
  PGF_ASSIGN_OR_RETURN(std::unique_ptr<RawClient> client, RawClient::Connect(port));
  PGF_RETURN_IF_ERROR(client->Send(StartupPacket({{"user", user}, {"database", database}})));
  std::vector<BackendMessage> messages;
  while (true) {
    PGF_ASSIGN_OR_RETURN(BackendMessage message, client->ReadMessage(absl::Seconds(20)));
    messages.push_back(message);
    if (message.type == 'Z' || message.type == 'E') return messages;
  }
}

TEST_F(LastKeysTest, LoginNotifyMessageIsANoticeAtTheEndOfEveryLogin) {
  const std::string kWelcome = "you are connected to pgfleet, not to PostgreSQL";
  StartAgent(
      {{"auth_type", "trust"}, {"login_notify_message", kWelcome}, {"admin_users", kAdminUser}});
  for (const std::string& database : {std::string(kAppDb), std::string("pgbouncer")}) {
    SCOPED_TRACE(database);
    const std::string user = database == kAppDb ? kAppUser : kAdminUser;
    PGF_ASSERT_OK_AND_ASSIGN(std::vector<BackendMessage> messages,
                             TrustLogin(agent_->port(), user, database));
    ASSERT_FALSE(messages.empty());
    ASSERT_EQ(messages.back().type, 'Z');
    std::vector<ErrorFields> notices;
    for (const BackendMessage& message : messages) {
      if (message.type != 'N') continue;
      PGF_ASSERT_OK_AND_ASSIGN(ErrorFields notice, ParseErrorResponse(message.body));
      notices.push_back(notice);
    }
    ASSERT_EQ(notices.size(), 1u);
    EXPECT_EQ(notices[0].severity, "NOTICE");
    EXPECT_EQ(notices[0].code, "00000");
    EXPECT_EQ(notices[0].message, kWelcome);
  }
}

TEST_F(LastKeysTest, NoLoginNoticeWithoutLoginNotifyMessage) {
  StartAgent({{"auth_type", "trust"}});
  PGF_ASSERT_OK_AND_ASSIGN(std::vector<BackendMessage> messages,
                           TrustLogin(agent_->port(), kAppUser, kAppDb));
  ASSERT_EQ(messages.back().type, 'Z');
  for (const BackendMessage& message : messages) EXPECT_NE(message.type, 'N');
}

// ---- pool_idle_timeout -------------------------------------------------------------------------

bool HasPool(const std::vector<NamedRow>& pools, const std::string& database) {
  for (const NamedRow& row : pools) {
    if (row.at("database") == database) return true;
  }
  return false;
}

TEST_F(LastKeysTest, PoolIdleTimeoutDropsAPoolWithNoConnectionsLeft) {
  AgentOptions options = AppAgentOptions({{"auth_type", "scram-sha-256"},
                                          {"pool_mode", "transaction"},
                                          {"admin_users", kAdminUser},
                                          {"server_idle_timeout", "1"},
                                          {"pool_idle_timeout", "1"}});
  options.databases_section += Entry("otherdb", g_pg->port());
  StartAgentWith(options);

  // appdb keeps a client (its server goes after server_idle_timeout): its pool stays.
  PGF_ASSERT_OK_AND_ASSIGN(PgConn holder, ConnectApp());
  PGF_ASSERT_OK(Query(holder.get(), "select 1").status());
  {
    PGF_ASSERT_OK_AND_ASSIGN(PgConn passing,
                             Connect(agent_->ConnString("otherdb", kAppUser, kAppPassword)));
    for (int i = 0; i < 3; ++i) PGF_ASSERT_OK(Query(passing.get(), "select 1").status());
  }
  std::vector<NamedRow> pools;
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        PGF_ASSIGN_OR_RETURN(pools, AdminShow(agent_->port(), "SHOW POOLS"));
        *note = absl::StrCat(pools.size(), " pools");
        return !HasPool(pools, "otherdb");
      },
      absl::Seconds(30), "otherdb's pool to be dropped"));
  EXPECT_TRUE(HasPool(pools, kAppDb)) << "the pool with a client was dropped";
  EXPECT_TRUE(absl::StrContains(agent_->LogContents(), "(pool_idle_timeout)"));

  // Its counters stay in SHOW STATS (pgfleet's totals never go down; PgBouncer's would).
  PGF_ASSERT_OK_AND_ASSIGN(std::vector<NamedRow> stats, AdminShow(agent_->port(), "SHOW STATS"));
  bool counted = false;
  for (const NamedRow& row : stats) {
    if (row.at("database") == "otherdb") counted = std::stoll(row.at("total_query_count")) >= 3;
  }
  EXPECT_TRUE(counted);

  // The next client gets a new pool.
  PGF_ASSERT_OK_AND_ASSIGN(PgConn again,
                           Connect(agent_->ConnString("otherdb", kAppUser, kAppPassword)));
  PGF_ASSERT_OK_AND_ASSIGN(int64_t one, ScalarInt(again.get(), "select 1"));
  EXPECT_EQ(one, 1);
  PGF_ASSERT_OK_AND_ASSIGN(pools, AdminShow(agent_->port(), "SHOW POOLS"));
  EXPECT_TRUE(HasPool(pools, "otherdb"));
}

// ---- target_session_attrs ----------------------------------------------------------------------

// A second cluster whose sessions are read-only (default_transaction_read_only = on, as
// PgBouncer's own test sets on its replica): PostgreSQL reports it at login.
class TargetSessionAttrsTest : public LastKeysTest {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<std::unique_ptr<PostgresEnv>> pg = PostgresEnv::Start();
    ASSERT_TRUE(pg.ok()) << pg.status();
    read_only_ = pg->release();
    PGF_ASSERT_OK(CreateAppDatabase(*read_only_));
    PGF_ASSERT_OK(read_only_->Exec("ALTER SYSTEM SET default_transaction_read_only = on").status());
    PGF_ASSERT_OK(read_only_->Exec("SELECT pg_reload_conf()").status());
    // The postmaster reads the file on its own time: new sessions have it once it has.
    PGF_ASSERT_OK(PollUntil(
        [](std::string* note) -> absl::StatusOr<bool> {
          PGF_ASSIGN_OR_RETURN(Rows rows, read_only_->Exec("show default_transaction_read_only"));
          *note = rows.at(0).at(0);
          return *note == "on";
        },
        absl::Seconds(10), "new sessions of the second cluster to be read-only"));
  }
  static void TearDownTestSuite() {
    delete read_only_;
    read_only_ = nullptr;
  }

  // appdb over the host list `ports` (in order) with `attrs`, hosts taken in list order.
  void StartWithHosts(const std::vector<int>& ports, const std::string& attrs,
                      const std::map<std::string, std::string>& extra = {}) {
    ASSERT_NE(read_only_, nullptr);
    std::map<std::string, std::string> settings = DefaultAgentSettings();
    settings["server_login_retry"] = "1";
    for (const auto& [key, value] : extra) settings[key] = value;
    AgentOptions options = AppAgentOptions(settings);
    std::string hosts, port_list;
    for (int port : ports) {
      absl::StrAppend(&hosts, hosts.empty() ? "" : ",", "127.0.0.1");
      absl::StrAppend(&port_list, port_list.empty() ? "" : ",", port);
    }
    options.databases_section =
        absl::StrCat(kAppDb, " = host=", hosts, " port=", port_list, " dbname=", kAppDb,
                     " load_balance_hosts=disable target_session_attrs=", attrs, "\n");
    StartAgentWith(options);
  }

  // The port of the PostgreSQL the agent's server connection is on.
  absl::StatusOr<int64_t> ServedByPort() const {
    PGF_ASSIGN_OR_RETURN(PgConn conn, ConnectApp());
    return ScalarInt(conn.get(), "select current_setting('port')::int");
  }

  static PostgresEnv* read_only_;
};

PostgresEnv* TargetSessionAttrsTest::read_only_ = nullptr;

TEST_F(TargetSessionAttrsTest, ReadWriteSkipsAReadOnlyHostFirstInTheList) {
  ASSERT_NO_FATAL_FAILURE(StartWithHosts({read_only_->port(), g_pg->port()}, "read-write"));
  PGF_ASSERT_OK_AND_ASSIGN(int64_t port, ServedByPort());
  EXPECT_EQ(port, g_pg->port());
  PGF_ASSERT_OK(AwaitLog("closing because: server does not satisfy target_session_attrs"));
  // And every later connection stays on the read-write host.
  PGF_ASSERT_OK_AND_ASSIGN(PgConn conn, ConnectApp());
  PGF_ASSERT_OK_AND_ASSIGN(std::string read_only,
                           ScalarText(conn.get(), "show default_transaction_read_only"));
  EXPECT_EQ(read_only, "off");
}

TEST_F(TargetSessionAttrsTest, ReadOnlySkipsAReadWriteHostFirstInTheList) {
  ASSERT_NO_FATAL_FAILURE(StartWithHosts({g_pg->port(), read_only_->port()}, "read-only"));
  PGF_ASSERT_OK_AND_ASSIGN(int64_t port, ServedByPort());
  EXPECT_EQ(port, read_only_->port());
}

// Both clusters are primaries (in_hot_standby off): "primary" takes the first host even though
// its sessions are read-only, as PgBouncer's documentation says.
TEST_F(TargetSessionAttrsTest, PrimaryAcceptsAReadOnlyPrimary) {
  ASSERT_NO_FATAL_FAILURE(StartWithHosts({read_only_->port(), g_pg->port()}, "primary"));
  PGF_ASSERT_OK_AND_ASSIGN(int64_t port, ServedByPort());
  EXPECT_EQ(port, read_only_->port());
}

// A host left out for one database's target_session_attrs is still used by another database
// of the same host list (it is not down).
TEST_F(TargetSessionAttrsTest, AHostSkippedForOneDatabaseStillServesAnother) {
  ASSERT_NE(read_only_, nullptr);
  AgentOptions options = AppAgentOptions(DefaultAgentSettings());
  const std::string hosts =
      absl::StrCat("host=127.0.0.1,127.0.0.1 port=", read_only_->port(), ",", g_pg->port(),
                   " dbname=", kAppDb, " load_balance_hosts=disable");
  options.databases_section = absl::StrCat("rwdb = ", hosts, " target_session_attrs=read-write\n",
                                           kAppDb, " = ", hosts, "\n");
  StartAgentWith(options);
  {
    PGF_ASSERT_OK_AND_ASSIGN(PgConn rw,
                             Connect(agent_->ConnString("rwdb", kAppUser, kAppPassword)));
    PGF_ASSERT_OK_AND_ASSIGN(int64_t port,
                             ScalarInt(rw.get(), "select current_setting('port')::int"));
    EXPECT_EQ(port, g_pg->port());
  }
  PGF_ASSERT_OK_AND_ASSIGN(int64_t port, ServedByPort());
  EXPECT_EQ(port, read_only_->port());
}

// No host qualifies: the client waits, as for a server that is down, until client_login_timeout
// (PgBouncer's test_all_target_candidates_mismatch_times_out), and is not sent a server.
TEST_F(TargetSessionAttrsTest, NoQualifyingHostKeepsTheClientWaitingUntilItsTimeout) {
  ASSERT_NO_FATAL_FAILURE(
      StartWithHosts({g_pg->port()}, "standby", {{"client_login_timeout", "2"}}));
  absl::StatusOr<PgConn> conn = ConnectApp();
  ASSERT_FALSE(conn.ok()) << "a client got a primary for target_session_attrs=standby";
  EXPECT_TRUE(absl::StrContains(conn.status().message(), "client_login_timeout (server down)"))
      << conn.status();
  EXPECT_TRUE(absl::StrContains(agent_->LogContents(),
                                "closing because: server does not satisfy target_session_attrs"));
}

// ---- auth_dbname of a DISABLEd database --------------------------------------------------------

// PgBouncer (client.c prepare_auth_database): FATAL 08P01 'authentication database "x" is
// disabled' before any password exchange.
TEST_F(LastKeysTest, ADisabledAuthDbnameRefusesTheLoginWithPgBouncersWords) {
  AgentOptions options;
  options.databases_section =
      Entry(kAppDb, g_pg->port(), "auth_dbname=lookupdb") + Entry("lookupdb", g_pg->port());
  options.pgbouncer_settings = {{"auth_type", "scram-sha-256"},
                                {"pool_mode", "transaction"},
                                {"auth_user", kLookupUser},
                                {"admin_users", kAdminUser}};
  options.userlist = {{kLookupUser, kLookupPassword}, {kAdminUser, kAdminPassword}};
  StartAgentWith(options);
  // The lookup on lookupdb works while it is enabled.
  {
    PGF_ASSERT_OK_AND_ASSIGN(PgConn conn,
                             Connect(agent_->ConnString(kAppDb, kLookedUpUser, kLookedUpPassword)));
    PGF_ASSERT_OK_AND_ASSIGN(std::string who, ScalarText(conn.get(), "select current_user"));
    EXPECT_EQ(who, kLookedUpUser);
  }
  PGF_ASSERT_OK_AND_ASSIGN(PgConn console, ConnectConsole());
  PGF_ASSERT_OK(Command(console.get(), "DISABLE lookupdb").status());

  PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RawClient> client, RawClient::Connect(agent_->port()));
  PGF_ASSERT_OK_AND_ASSIGN(
      LoginResult login, client->Login(kLookedUpUser, kAppDb, kLookedUpPassword, absl::Seconds(20),
                                       /*scram_garbage_proof=*/true));
  EXPECT_FALSE(login.ok);
  ASSERT_TRUE(login.error.has_value());
  EXPECT_EQ(login.error->severity, "FATAL");
  EXPECT_EQ(login.error->code, "08P01");
  EXPECT_EQ(login.error->message, "authentication database \"lookupdb\" is disabled");
  // Before any password was asked for.
  EXPECT_TRUE(login.auth_requests.empty());

  PGF_ASSERT_OK(Command(console.get(), "ENABLE lookupdb").status());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn again,
                           Connect(agent_->ConnString(kAppDb, kLookedUpUser, kLookedUpPassword)));
  PGF_ASSERT_OK_AND_ASSIGN(int64_t one, ScalarInt(again.get(), "select 1"));
  EXPECT_EQ(one, 1);
}

}  // namespace
}  // namespace pgfleet::testutil
