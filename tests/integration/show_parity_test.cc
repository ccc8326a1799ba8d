// Issue 22, SHOW parity with PgBouncer 1.23-1.25 (doc/usage.md, src/admin.c): the admin
// console's SHOW USERS, DATABASES, POOLS, CLIENTS, SERVERS and SOCKETS have the columns current
// PgBouncer sends, in its order and with its integer/text types, and the new columns carry
// the values the config and the live connections say: per-user pool_size / reserve_pool_size /
// pool_mode / max_user_connections / max_user_client_connections overrides and the user's
// server and client counts; per-database reserve_pool_size, server_lifetime,
// max_client_connections and client count; the clients' and servers' replication, id (which
// KILL_CLIENT takes) and prepared_statements; an idle client shown as "idle". The types are
// PgBouncer 1.25's (int4 counts, numeric statistics; admin_console_test checks every SHOW). The
// real pgfleet-agent in front of a real PostgreSQL.

#include <libpq-fe.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/status_macros.h"
#include "gtest/gtest.h"
#include "tests/testutil/agent_process.h"
#include "tests/testutil/console.h"
#include "tests/testutil/fixtures.h"
#include "tests/testutil/pq.h"
#include "tests/testutil/status_testing.h"
#include "tests/testutil/wait.h"

namespace pgfleet::testutil {
namespace {

[[maybe_unused]] auto* const kCluster = RegisterSharedPostgres();

// Column name -> its type in PgBouncer's RowDescription letters (testutil ColumnMismatch).
using Columns = std::vector<std::pair<std::string, char>>;

void ExpectColumns(const Table& table, const Columns& expected, const std::string& what) {
  std::vector<std::string> names;
  std::string tupdesc;
  for (const auto& [name, type] : expected) {
    names.push_back(name);
    tupdesc.push_back(type);
  }
  EXPECT_EQ(ColumnMismatch(table, names, tupdesc), "") << what << "\n" << table.Dump();
}

const Columns kSocketColumns = {{"type", 's'},
                                {"user", 's'},
                                {"database", 's'},
                                {"replication", 's'},
                                {"state", 's'},
                                {"addr", 's'},
                                {"port", 'i'},
                                {"local_addr", 's'},
                                {"local_port", 'i'},
                                {"connect_time", 'T'},
                                {"request_time", 'T'},
                                {"wait", 'i'},
                                {"wait_us", 'i'},
                                {"close_needed", 'i'},
                                {"ptr", 's'},
                                {"link", 's'},
                                {"remote_pid", 'i'},
                                {"tls", 's'},
                                {"application_name", 's'},
                                {"prepared_statements", 'i'},
                                {"id", 'i'}};

class ShowParityTest : public AgentTest {
 protected:
  // appdb with per-database overrides; [users] overrides for the app user only.
  void StartParityAgent() {
    AgentOptions options = AppAgentOptions({{"auth_type", "scram-sha-256"},
                                            {"pool_mode", "transaction"},
                                            {"default_pool_size", "2"},
                                            {"max_user_connections", "40"},
                                            {"max_user_client_connections", "30"},
                                            {"server_lifetime", "1800"},
                                            {"admin_users", kAdminUser}});
    options.databases_section =
        absl::StrCat(kAppDb, " = host=127.0.0.1 port=", g_pg->port(), " dbname=", kAppDb,
                     " reserve_pool=1 max_db_client_connections=11\n");
    options.users_section =
        absl::StrCat(kAppUser,
                     " = pool_size=3 reserve_pool_size=1 pool_mode=session max_user_connections=7 "
                     "max_user_client_connections=9\n");
    StartAgentWith(options);
  }

  absl::StatusOr<PgConn> Console() const {
    return Connect(agent_->ConnString("pgbouncer", kAdminUser, kAdminPassword));
  }
};

TEST_F(ShowParityTest, ShowUsersHasTheOverridesAndCounts) {
  StartParityAgent();
  PGF_ASSERT_OK_AND_ASSIGN(PgConn app, ConnectApp());
  PGF_ASSERT_OK(Query(app.get(), "select 1").status());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn console, Console());

  PGF_ASSERT_OK_AND_ASSIGN(Table users, Show(console.get(), "SHOW USERS"));
  ExpectColumns(users,
                {{"name", 's'},
                 {"pool_size", 's'},
                 {"reserve_pool_size", 's'},
                 {"pool_mode", 's'},
                 {"max_user_connections", 'i'},
                 {"current_connections", 'i'},
                 {"max_user_client_connections", 'i'},
                 {"current_client_connections", 'i'}},
                "SHOW USERS");
  Rows app_rows = users.Where({{"name", kAppUser}});
  ASSERT_EQ(app_rows.size(), 1u) << users.Dump();
  // PgBouncer prints the two overrides with "%9d".
  EXPECT_EQ(users.At(app_rows[0], "pool_size"), "        3");
  EXPECT_EQ(users.At(app_rows[0], "reserve_pool_size"), "        1");
  EXPECT_EQ(users.At(app_rows[0], "pool_mode"), "session");
  EXPECT_EQ(users.At(app_rows[0], "max_user_connections"), "7");
  // Session mode: the app client holds its server, so it is open now.
  EXPECT_EQ(users.At(app_rows[0], "current_connections"), "1");
  EXPECT_EQ(users.At(app_rows[0], "max_user_client_connections"), "9");
  EXPECT_EQ(users.At(app_rows[0], "current_client_connections"), "1");

  // A user without a [users] entry: no overrides, the [pgbouncer] limits.
  Rows admin_rows = users.Where({{"name", kAdminUser}});
  ASSERT_EQ(admin_rows.size(), 1u) << users.Dump();
  EXPECT_EQ(users.At(admin_rows[0], "pool_size"), "");
  EXPECT_EQ(users.At(admin_rows[0], "reserve_pool_size"), "");
  EXPECT_EQ(users.At(admin_rows[0], "pool_mode"), "");
  EXPECT_EQ(users.At(admin_rows[0], "max_user_connections"), "40");
  EXPECT_EQ(users.At(admin_rows[0], "current_connections"), "0");
  EXPECT_EQ(users.At(admin_rows[0], "max_user_client_connections"), "30");

  // The counts follow the connections: the app client gone, none left.
  app.reset();
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        PGF_ASSIGN_OR_RETURN(Table now, Show(console.get(), "SHOW USERS"));
        Rows rows = now.Where({{"name", kAppUser}});
        if (rows.size() != 1) return absl::InternalError(now.Dump());
        *note = now.Dump();
        return now.At(rows[0], "current_client_connections") == "0";
      },
      absl::Seconds(10), "app's client count back to 0"));
}

TEST_F(ShowParityTest, ShowDatabasesHasPgBouncer125Columns) {
  StartParityAgent();
  PGF_ASSERT_OK_AND_ASSIGN(PgConn app, ConnectApp());
  PGF_ASSERT_OK(Query(app.get(), "select 1").status());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn console, Console());

  PGF_ASSERT_OK_AND_ASSIGN(Table databases, Show(console.get(), "SHOW DATABASES"));
  ExpectColumns(databases,
                {{"name", 's'},
                 {"host", 's'},
                 {"port", 'i'},
                 {"database", 's'},
                 {"force_user", 's'},
                 {"pool_size", 'i'},
                 {"min_pool_size", 'i'},
                 {"reserve_pool_size", 'i'},
                 {"server_lifetime", 'i'},
                 {"pool_mode", 's'},
                 {"load_balance_hosts", 's'},
                 {"max_connections", 'i'},
                 {"current_connections", 'i'},
                 {"max_client_connections", 'i'},
                 {"current_client_connections", 'i'},
                 {"paused", 'i'},
                 {"disabled", 'i'}},
                "SHOW DATABASES");
  Rows appdb = databases.Where({{"name", kAppDb}});
  ASSERT_EQ(appdb.size(), 1u) << databases.Dump();
  EXPECT_EQ(databases.At(appdb[0], "reserve_pool_size"), "1");
  EXPECT_EQ(databases.At(appdb[0], "server_lifetime"), "1800");
  EXPECT_EQ(databases.At(appdb[0], "load_balance_hosts"), "");  // One host: NULL.
  EXPECT_EQ(databases.At(appdb[0], "max_client_connections"), "11");
  EXPECT_EQ(databases.At(appdb[0], "current_client_connections"), "1");
  EXPECT_EQ(databases.At(appdb[0], "current_connections"), "1");
}

TEST_F(ShowParityTest, ShowPoolsEndsWithLoadBalanceHosts) {
  StartParityAgent();
  PGF_ASSERT_OK_AND_ASSIGN(PgConn console, Console());
  PGF_ASSERT_OK_AND_ASSIGN(Table pools, Show(console.get(), "SHOW POOLS"));
  ExpectColumns(pools,
                {{"database", 's'},
                 {"user", 's'},
                 {"cl_active", 'i'},
                 {"cl_waiting", 'i'},
                 {"cl_active_cancel_req", 'i'},
                 {"cl_waiting_cancel_req", 'i'},
                 {"sv_active", 'i'},
                 {"sv_active_cancel", 'i'},
                 {"sv_being_canceled", 'i'},
                 {"sv_idle", 'i'},
                 {"sv_used", 'i'},
                 {"sv_tested", 'i'},
                 {"sv_login", 'i'},
                 {"maxwait", 'i'},
                 {"maxwait_us", 'i'},
                 {"pool_mode", 's'},
                 {"load_balance_hosts", 's'}},
                "SHOW POOLS");
}

TEST_F(ShowParityTest, ClientsAndServersHaveReplicationIdAndPreparedStatements) {
  StartParityAgent();
  PGF_ASSERT_OK_AND_ASSIGN(PgConn app, ConnectApp());
  PGF_ASSERT_OK(Query(app.get(), "select 1").status());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn console, Console());

  PGF_ASSERT_OK_AND_ASSIGN(Table clients, Show(console.get(), "SHOW CLIENTS"));
  ExpectColumns(clients, kSocketColumns, "SHOW CLIENTS");
  PGF_ASSERT_OK_AND_ASSIGN(Table servers, Show(console.get(), "SHOW SERVERS"));
  ExpectColumns(servers, kSocketColumns, "SHOW SERVERS");
  PGF_ASSERT_OK_AND_ASSIGN(Table sockets, Show(console.get(), "SHOW SOCKETS"));
  Columns socket_columns = kSocketColumns;
  for (const char* name : {"recv_pos", "pkt_pos", "pkt_remain", "send_pos", "send_remain",
                           "pkt_avail", "send_avail"}) {
    socket_columns.push_back({name, 'i'});
  }
  ExpectColumns(sockets, socket_columns, "SHOW SOCKETS");

  Rows app_clients = clients.Where({{"user", kAppUser}});
  ASSERT_EQ(app_clients.size(), 1u) << clients.Dump();
  EXPECT_EQ(clients.At(app_clients[0], "replication"), "none");
  EXPECT_EQ(clients.At(app_clients[0], "prepared_statements"), "0");
  Rows app_servers = servers.Where({{"database", kAppDb}});
  ASSERT_EQ(app_servers.size(), 1u) << servers.Dump();
  EXPECT_EQ(servers.At(app_servers[0], "replication"), "none");
  EXPECT_NE(servers.At(app_servers[0], "id"), "");
  EXPECT_NE(servers.At(app_servers[0], "id"), clients.At(app_clients[0], "id"));

  // The id column is what KILL_CLIENT takes (PgBouncer 1.23).
  const std::string id = clients.At(app_clients[0], "id");
  ASSERT_FALSE(id.empty());
  PGF_ASSERT_OK(Command(console.get(), absl::StrCat("KILL_CLIENT ", id)).status());
  EXPECT_FALSE(Query(app.get(), "select 1").ok()) << "the killed client still answers";
}

TEST_F(ShowParityTest, ClientWithoutServerIsIdle) {
  // Transaction mode (no [users] override): between transactions the client has no server.
  StartAgent({{"admin_users", kAdminUser}});
  PGF_ASSERT_OK_AND_ASSIGN(PgConn app, ConnectApp());
  PGF_ASSERT_OK(Query(app.get(), "select 1").status());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn console, Console());
  PGF_ASSERT_OK_AND_ASSIGN(Table clients, Show(console.get(), "SHOW CLIENTS"));
  Rows app_clients = clients.Where({{"user", kAppUser}});
  ASSERT_EQ(app_clients.size(), 1u) << clients.Dump();
  EXPECT_EQ(clients.At(app_clients[0], "state"), "idle") << clients.Dump();
  EXPECT_EQ(clients.At(app_clients[0], "link"), "") << clients.Dump();
}

}  // namespace
}  // namespace pgfleet::testutil
