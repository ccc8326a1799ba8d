// Issue 22, SHOW parity with PgBouncer 1.23-1.25 (doc/usage.md, src/admin.c): the admin
// console's SHOW USERS, DATABASES, POOLS, CLIENTS, SERVERS and SOCKETS have the columns current
// PgBouncer sends, in its order and with its integer/text types, and the new columns carry
// the values the config and the live connections say: per-user pool_size / reserve_pool_size /
// pool_mode / max_user_connections / max_user_client_connections overrides and the user's
// server and client counts; per-database reserve_pool_size, server_lifetime,
// max_client_connections and client count; the clients' and servers' replication, id (which
// KILL_CLIENT takes) and prepared_statements; an idle client shown as "idle". The types are
// PgBouncer 1.25's (int4 counts, numeric statistics; admin_console_test checks every SHOW).
// The values too: local addresses as the sockets' own ends (PostgreSQL's inet_client_addr), unix
// sockets as PgBouncer's util.c fills them, the lists each SHOW walks (a client logging in only
// in SOCKETS and FDS), FDS' listener/client/server rows, SOCKETS' buffer columns and MEM's cache
// names. The real pgfleet-agent in front of a real PostgreSQL.

#include <libpq-fe.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/status_macros.h"
#include "gtest/gtest.h"
#include "tests/testutil/agent_process.h"
#include "tests/testutil/console.h"
#include "tests/testutil/fixtures.h"
#include "tests/testutil/pq.h"
#include "tests/testutil/raw_client.h"
#include "tests/testutil/status_testing.h"
#include "tests/testutil/temp_dir.h"
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

// The local port of a test-side socket (the agent sees it as the client's port).
int LocalPort(int fd) {
  sockaddr_storage local{};
  socklen_t length = sizeof(local);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &length) != 0) return -1;
  if (local.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&local)->sin_port);
  return -1;
}

uint64_t ToU64(const std::string& text) {
  uint64_t value = 0;
  EXPECT_TRUE(absl::SimpleAtoi(text, &value)) << "'" << text << "'";
  return value;
}

// local_addr/local_port of a server are its socket's own end, which PostgreSQL sees as the
// client's address (inet_client_addr / inet_client_port of that backend).
TEST_F(ShowParityTest, ServerLocalAddressIsWhatPostgresSeesAsItsClient) {
  StartParityAgent();  // The app user's pool is in session mode: the server stays linked.
  PGF_ASSERT_OK_AND_ASSIGN(PgConn app, ConnectApp());
  PGF_ASSERT_OK_AND_ASSIGN(
      Rows seen,
      Query(app.get(), "select pg_backend_pid(), host(inet_client_addr()), inet_client_port()"));
  ASSERT_EQ(seen.size(), 1u);
  PGF_ASSERT_OK_AND_ASSIGN(PgConn console, Console());
  PGF_ASSERT_OK_AND_ASSIGN(Table servers, Show(console.get(), "SHOW SERVERS"));
  Rows row = servers.Where({{"remote_pid", seen[0][0]}});
  ASSERT_EQ(row.size(), 1u) << servers.Dump();
  EXPECT_EQ(servers.At(row[0], "local_addr"), seen[0][1]) << servers.Dump();
  EXPECT_EQ(servers.At(row[0], "local_port"), seen[0][2]) << servers.Dump();

  // A client's local end is the listener it reached.
  PGF_ASSERT_OK_AND_ASSIGN(Table clients, Show(console.get(), "SHOW CLIENTS"));
  Rows app_client = clients.Where({{"user", kAppUser}});
  ASSERT_EQ(app_client.size(), 1u) << clients.Dump();
  EXPECT_EQ(clients.At(app_client[0], "local_addr"), "127.0.0.1") << clients.Dump();
  EXPECT_EQ(clients.At(app_client[0], "local_port"), std::to_string(agent_->port()));
}

// A server reached over PostgreSQL's unix socket: PgBouncer shows local_addr "unix" with its
// own listen_port (util.c fill_local_addr).
TEST_F(ShowParityTest, UnixSocketServerShowsUnixAndTheListenPort) {
  AgentOptions options = AppAgentOptions(
      {{"auth_type", "scram-sha-256"}, {"pool_mode", "session"}, {"admin_users", kAdminUser}});
  options.databases_section = absl::StrCat(kAppDb, " = host=", g_pg->dir(), " port=", g_pg->port(),
                                           " dbname=", kAppDb, "\n");
  StartAgentWith(options);
  PGF_ASSERT_OK_AND_ASSIGN(PgConn app, ConnectApp());
  PGF_ASSERT_OK_AND_ASSIGN(Rows seen, Query(app.get(), "select pg_backend_pid()"));
  ASSERT_EQ(seen.size(), 1u);
  PGF_ASSERT_OK_AND_ASSIGN(PgConn console, Console());
  PGF_ASSERT_OK_AND_ASSIGN(Table servers, Show(console.get(), "SHOW SERVERS"));
  Rows row = servers.Where({{"remote_pid", seen[0][0]}});
  ASSERT_EQ(row.size(), 1u) << servers.Dump();
  EXPECT_EQ(servers.At(row[0], "addr"), "unix") << servers.Dump();
  EXPECT_EQ(servers.At(row[0], "port"), std::to_string(g_pg->port())) << servers.Dump();
  EXPECT_EQ(servers.At(row[0], "local_addr"), "unix") << servers.Dump();
  EXPECT_EQ(servers.At(row[0], "local_port"), std::to_string(agent_->port())) << servers.Dump();
}

// A client on the agent's unix socket: PgBouncer shows addr and local_addr "unix" with
// listen_port, and remote_pid the client's process (SO_PEERCRED); SHOW FDS lists the unix
// listener as a "pooler" row.
TEST_F(ShowParityTest, UnixSocketClientShowsUnixTheListenPortAndItsPid) {
  TempDir socket_dir;
  PGF_ASSERT_OK(socket_dir.Create("show-unix"));
  StartAgent({{"admin_users", kAdminUser}, {"unix_socket_dir", socket_dir.path()}});
  PGF_ASSERT_OK_AND_ASSIGN(
      PgConn over_unix, Connect(absl::StrCat("host=", socket_dir.path(), " port=", agent_->port(),
                                             " dbname=", kAppDb, " user=", kAppUser, " password=",
                                             kAppPassword, " application_name=over_unix")));
  PGF_ASSERT_OK(Query(over_unix.get(), "select 1").status());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn console, Console());
  PGF_ASSERT_OK_AND_ASSIGN(Table clients, Show(console.get(), "SHOW CLIENTS"));
  Rows row = clients.Where({{"application_name", "over_unix"}});
  ASSERT_EQ(row.size(), 1u) << clients.Dump();
  const std::string listen_port = std::to_string(agent_->port());
  EXPECT_EQ(clients.At(row[0], "addr"), "unix") << clients.Dump();
  EXPECT_EQ(clients.At(row[0], "port"), listen_port) << clients.Dump();
  EXPECT_EQ(clients.At(row[0], "local_addr"), "unix") << clients.Dump();
  EXPECT_EQ(clients.At(row[0], "local_port"), listen_port) << clients.Dump();
  // libpq connects from this process.
  EXPECT_EQ(clients.At(row[0], "remote_pid"), std::to_string(getpid())) << clients.Dump();
  // The TCP console has no peer process to name.
  Rows console_row = clients.Where({{"user", kAdminUser}});
  ASSERT_EQ(console_row.size(), 1u) << clients.Dump();
  EXPECT_EQ(clients.At(console_row[0], "remote_pid"), "0") << clients.Dump();

  PGF_ASSERT_OK_AND_ASSIGN(Table fds, Show(console.get(), "SHOW FDS"));
  EXPECT_EQ(fds.Where({{"task", "pooler"}, {"addr", "unix"}, {"port", listen_port}}).size(), 1u)
      << fds.Dump();
  EXPECT_EQ(fds.Where({{"task", "pooler"}, {"addr", "127.0.0.1"}, {"port", listen_port}}).size(),
            1u)
      << fds.Dump();
  EXPECT_EQ(fds.Where({{"task", "client"}, {"addr", "unix"}, {"port", listen_port}}).size(), 1u)
      << fds.Dump();
}

// PgBouncer keeps a client that is still logging in on login_client_list, which SHOW SOCKETS
// walks and SHOW CLIENTS does not.
TEST_F(ShowParityTest, ClientStillLoggingInIsInSocketsNotInClients) {
  StartParityAgent();
  PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RawClient> stuck, RawClient::Connect(agent_->port()));
  PGF_ASSERT_OK(stuck->Send(StartupPacket({{"user", kAppUser}, {"database", kAppDb}})));
  // The agent asks for the password (SCRAM): the startup was read; it is never answered.
  PGF_ASSERT_OK_AND_ASSIGN(BackendMessage request, stuck->ReadMessage(absl::Seconds(10)));
  ASSERT_EQ(request.type, 'R');
  const std::string stuck_port = std::to_string(LocalPort(stuck->fd()));

  PGF_ASSERT_OK_AND_ASSIGN(PgConn console, Console());
  PGF_ASSERT_OK_AND_ASSIGN(Table clients, Show(console.get(), "SHOW CLIENTS"));
  EXPECT_TRUE(clients.Where({{"port", stuck_port}}).empty()) << clients.Dump();
  EXPECT_EQ(clients.Where({{"user", kAdminUser}}).size(), 1u) << clients.Dump();
  PGF_ASSERT_OK_AND_ASSIGN(Table sockets, Show(console.get(), "SHOW SOCKETS"));
  Rows row = sockets.Where({{"port", stuck_port}});
  ASSERT_EQ(row.size(), 1u) << sockets.Dump();
  EXPECT_EQ(sockets.At(row[0], "type"), "C");
  EXPECT_EQ(sockets.At(row[0], "state"), "cl_login") << sockets.Dump();
  EXPECT_EQ(sockets.At(row[0], "user"), kAppUser) << sockets.Dump();
  // SHOW FDS lists it too (PgBouncer's admin_show_fds walks login_client_list).
  PGF_ASSERT_OK_AND_ASSIGN(Table fds, Show(console.get(), "SHOW FDS"));
  EXPECT_EQ(fds.Where({{"task", "client"}, {"port", stuck_port}}).size(), 1u) << fds.Dump();
}

// SHOW FDS lists what PgBouncer's does: the listening sockets ("pooler"), then clients and
// servers, each with its link's fd and its 8-byte cancel key (pid, secret) as one number.
TEST_F(ShowParityTest, ShowFdsListsListenersClientsAndServers) {
  StartParityAgent();  // Session mode for the app user: its server stays linked.
  PGF_ASSERT_OK_AND_ASSIGN(PgConn app, ConnectApp());
  PGF_ASSERT_OK_AND_ASSIGN(Rows pid, Query(app.get(), "select pg_backend_pid()"));
  ASSERT_EQ(pid.size(), 1u);
  PGF_ASSERT_OK_AND_ASSIGN(PgConn console, Console());
  PGF_ASSERT_OK_AND_ASSIGN(Table fds, Show(console.get(), "SHOW FDS"));

  Rows pooler = fds.Where({{"task", "pooler"}, {"port", std::to_string(agent_->port())}});
  ASSERT_GE(pooler.size(), 1u) << fds.Dump();
  EXPECT_EQ(fds.At(pooler[0], "addr"), "127.0.0.1") << fds.Dump();
  EXPECT_EQ(fds.At(pooler[0], "link"), "0");
  EXPECT_EQ(fds.At(pooler[0], "user"), "");  // NULL

  Rows server = fds.Where({{"task", "server"}, {"database", kAppDb}});
  ASSERT_EQ(server.size(), 1u) << fds.Dump();
  EXPECT_EQ(fds.At(server[0], "user"), kAppUser);
  EXPECT_EQ(fds.At(server[0], "addr"), "127.0.0.1");
  EXPECT_EQ(fds.At(server[0], "port"), std::to_string(g_pg->port()));
  EXPECT_EQ(ToU64(fds.At(server[0], "cancel")) >> 32, ToU64(pid[0][0])) << fds.Dump();
  // The server's own parameters (ParameterStatus), as PgBouncer shows a server's vars.
  PGF_ASSERT_OK_AND_ASSIGN(Rows encoding, Query(app.get(), "show client_encoding"));
  ASSERT_EQ(encoding.size(), 1u);
  EXPECT_EQ(fds.At(server[0], "client_encoding"), encoding[0][0]) << fds.Dump();

  Rows client = fds.Where({{"task", "client"}, {"user", kAppUser}});
  ASSERT_EQ(client.size(), 1u) << fds.Dump();
  EXPECT_EQ(fds.At(client[0], "link"), fds.At(server[0], "fd")) << fds.Dump();
  EXPECT_EQ(fds.At(server[0], "link"), fds.At(client[0], "fd")) << fds.Dump();
  // The pid half of the client's key is the one the agent gave libpq in BackendKeyData.
  EXPECT_EQ(ToU64(fds.At(client[0], "cancel")) >> 32,
            static_cast<uint32_t>(PQbackendPID(app.get())))
      << fds.Dump();
  // The console's own connection is not listed (PgBouncer skips the admin pool).
  EXPECT_TRUE(fds.Where({{"user", kAdminUser}}).empty()) << fds.Dump();
}

// SHOW SOCKETS' buffer columns: a client that sent the first 15 bytes of a 105-byte Query has
// it streaming to its server, with the rest to come (pkt_remain), and ACTIVE_SOCKETS lists it.
TEST_F(ShowParityTest, SocketsShowTheRestOfAMessageBeingStreamed) {
  // No prepared-statement tracking: a Query streams from its first bytes (with it, the first
  // kilobyte of the body is read before anything goes on, and would show as pkt_avail).
  StartAgent({{"auth_type", "md5"}, {"admin_users", kAdminUser}, {"max_prepared_statements", "0"}});
  PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<RawClient> raw, RawClient::Connect(agent_->port()));
  PGF_ASSERT_OK_AND_ASSIGN(LoginResult login, raw->Login(kAppUser, kAppDb, kAppPassword));
  ASSERT_TRUE(login.ok) << (login.error ? login.error->ToString() : "no ReadyForQuery");
  std::string sql = "select 1";
  sql.resize(99, ' ');
  const std::string query = QueryMessage(sql);  // 'Q', length 104, 99 bytes and the NUL.
  ASSERT_EQ(query.size(), 105u);
  PGF_ASSERT_OK(raw->Send(query.substr(0, 15)));
  const std::string raw_port = std::to_string(LocalPort(raw->fd()));

  PGF_ASSERT_OK_AND_ASSIGN(PgConn console, Console());
  Table sockets;
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        PGF_ASSIGN_OR_RETURN(sockets, Show(console.get(), "SHOW ACTIVE_SOCKETS"));
        *note = sockets.Dump();
        Rows row = sockets.Where({{"port", raw_port}});
        return row.size() == 1 && sockets.At(row[0], "pkt_remain") == "90";
      },
      absl::Seconds(10), "the client's Query streaming with 90 bytes to come"));
  Rows row = sockets.Where({{"port", raw_port}});
  ASSERT_EQ(row.size(), 1u);
  EXPECT_EQ(sockets.At(row[0], "state"), "cl_active") << sockets.Dump();
  EXPECT_EQ(sockets.At(row[0], "pkt_avail"), "0") << sockets.Dump();  // All passed on.
  // PgBouncer's identities: recv_pos - pkt_pos = pkt_avail, pkt_pos - send_pos = send_avail.
  const uint64_t recv_pos = ToU64(sockets.At(row[0], "recv_pos"));
  const uint64_t pkt_pos = ToU64(sockets.At(row[0], "pkt_pos"));
  const uint64_t send_pos = ToU64(sockets.At(row[0], "send_pos"));
  EXPECT_EQ(recv_pos - pkt_pos, ToU64(sockets.At(row[0], "pkt_avail"))) << sockets.Dump();
  EXPECT_EQ(pkt_pos - send_pos, ToU64(sockets.At(row[0], "send_avail"))) << sockets.Dump();
  EXPECT_EQ(sockets.At(row[0], "send_remain"), "0");
  // Its server is mid-message and idle otherwise: nothing buffered, so not an active socket.
  EXPECT_TRUE(sockets.Where({{"type", "S"}}).empty()) << sockets.Dump();

  // The rest arrives: the query runs and the client is no longer mid-message.
  PGF_ASSERT_OK(raw->Send(query.substr(15)));
  for (;;) {
    PGF_ASSERT_OK_AND_ASSIGN(BackendMessage message, raw->ReadMessage(absl::Seconds(10)));
    ASSERT_NE(message.type, 'E') << message.body;
    if (message.type == 'Z') break;
  }
  PGF_ASSERT_OK_AND_ASSIGN(Table after, Show(console.get(), "SHOW SOCKETS"));
  Rows done = after.Where({{"port", raw_port}});
  ASSERT_EQ(done.size(), 1u) << after.Dump();
  EXPECT_EQ(after.At(done[0], "pkt_remain"), "0") << after.Dump();
  EXPECT_EQ(after.At(done[0], "pkt_avail"), "0") << after.Dump();
}

// SHOW MEM: PgBouncer's slab cache names for the objects pgfleet has, with live counts.
TEST_F(ShowParityTest, ShowMemUsesPgBouncerCacheNames) {
  StartParityAgent();
  PGF_ASSERT_OK_AND_ASSIGN(PgConn app, ConnectApp());
  PGF_ASSERT_OK(Query(app.get(), "select 1").status());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn console, Console());
  PGF_ASSERT_OK_AND_ASSIGN(Table mem, Show(console.get(), "SHOW MEM"));
  for (const char* name :
       {"user_cache", "db_cache", "pool_cache", "server_cache", "client_cache", "iobuf_cache"}) {
    EXPECT_EQ(mem.Where({{"name", name}}).size(), 1u) << name << "\n" << mem.Dump();
  }
  // The app client and the console; the app's one server.
  EXPECT_EQ(mem.At(mem.Where({{"name", "client_cache"}})[0], "used"), "2") << mem.Dump();
  EXPECT_EQ(mem.At(mem.Where({{"name", "server_cache"}})[0], "used"), "1") << mem.Dump();
}

}  // namespace
}  // namespace pgfleet::testutil
