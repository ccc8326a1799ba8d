// Issue 22, last part: PgBouncer 1.25 keys pgfleet used to load with a warning and no effect,
// now with PgBouncer's semantics. The real pgfleet-agent in front of a real PostgreSQL.
//
//  * server_round_robin: on, successive transactions of one client go to the pool's idle
//    servers in turn (different pg_backend_pid()); off, they reuse the most recent one. SET and
//    RELOAD change it on a running agent, as in PgBouncer;
//  * listen_backlog: the backlog of every listening socket (TCP and unix), as `ss` reports it
//    (Send-Q of a listener), set anew on RELOAD and on a listener a hand-over passes on; SET
//    refuses it (CF_NO_RELOAD);
//  * application_name_add_host: pg_stat_activity shows "NAME - ADDR:PORT" of the client ("app"
//    when it sent no name; "unix(PID@HOST):PORT" over the unix socket); a later SET wins;
//  * per-database server_lifetime ([databases], PgBouncer 1.24): that database's servers are
//    recycled after it, others keep the [pgbouncer] value;
//  * user: an agent started as root runs as that user once it listens (-u wins over it); an
//    unknown user fails the start naming the key.

#include <arpa/inet.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "common/status_macros.h"
#include "gtest/gtest.h"
#include "tests/testutil/agent_process.h"
#include "tests/testutil/console.h"
#include "tests/testutil/fixtures.h"
#include "tests/testutil/free_port.h"
#include "tests/testutil/handover.h"
#include "tests/testutil/postgres_env.h"
#include "tests/testutil/pq.h"
#include "tests/testutil/process.h"
#include "tests/testutil/status_testing.h"
#include "tests/testutil/temp_dir.h"
#include "tests/testutil/wait.h"

namespace pgfleet::testutil {
namespace {

[[maybe_unused]] auto* const kCluster = RegisterSharedPostgres();

std::string Entry(const std::string& name, const std::string& extra = "") {
  return absl::StrCat(name, " = host=127.0.0.1 port=", g_pg->port(), " dbname=", kAppDb, " ", extra,
                      "\n");
}

// The backend pid each of `count` transactions (one statement each, transaction pooling) ran on.
absl::StatusOr<std::vector<int64_t>> BackendPids(PGconn* conn, int count) {
  std::vector<int64_t> pids;
  for (int i = 0; i < count; ++i) {
    PGF_ASSIGN_OR_RETURN(int64_t pid, ScalarInt(conn, "select pg_backend_pid()"));
    pids.push_back(pid);
  }
  return pids;
}

size_t Distinct(const std::vector<int64_t>& pids) {
  return std::set<int64_t>(pids.begin(), pids.end()).size();
}

std::string Join(const std::vector<int64_t>& pids) { return absl::StrJoin(pids, ","); }

// The value of `key` in SHOW CONFIG.
absl::StatusOr<NamedRow> ConfigRow(int port, const std::string& key) {
  PGF_ASSIGN_OR_RETURN(std::vector<NamedRow> rows, AdminShow(port, "SHOW CONFIG"));
  for (const NamedRow& row : rows) {
    if (row.at("key") == key) return row;
  }
  return absl::NotFoundError(absl::StrCat("SHOW CONFIG has no ", key));
}

class RemainingKeysTest : public AgentTest {
 protected:
  absl::StatusOr<PgConn> ConnectConsole() const {
    return Connect(agent_->ConnString("pgbouncer", kAdminUser, kAdminPassword));
  }
};

// ---- server_round_robin ----------------------------------------------------------------------

TEST_F(RemainingKeysTest, ServerRoundRobinSpreadsTransactionsAndChangesOnline) {
  AgentOptions options = AppAgentOptions({{"auth_type", "scram-sha-256"},
                                          {"pool_mode", "transaction"},
                                          {"default_pool_size", "3"},
                                          {"admin_users", kAdminUser},
                                          {"server_round_robin", "1"}});
  StartAgentWith(options);
  // Three servers in the pool: three clients each hold one inside a transaction at once.
  std::vector<PgConn> holders;
  for (int i = 0; i < 3; ++i) {
    PGF_ASSERT_OK_AND_ASSIGN(PgConn conn, ConnectApp());
    PGF_ASSERT_OK(Query(conn.get(), "begin").status());
    PGF_ASSERT_OK(Query(conn.get(), "select 1").status());
    holders.push_back(std::move(conn));
  }
  for (PgConn& conn : holders) PGF_ASSERT_OK(Query(conn.get(), "commit").status());

  PGF_ASSERT_OK_AND_ASSIGN(PgConn client, ConnectApp());
  PGF_ASSERT_OK_AND_ASSIGN(std::vector<int64_t> pids, BackendPids(client.get(), 6));
  EXPECT_EQ(Distinct(pids), 3u) << "round robin should use every idle server: " << Join(pids);
  // In turn: the same rotation twice.
  EXPECT_EQ(std::vector<int64_t>(pids.begin(), pids.begin() + 3),
            std::vector<int64_t>(pids.begin() + 3, pids.end()))
      << Join(pids);

  // PgBouncer's default (and SET on a running agent): the most recently used server again.
  PGF_ASSERT_OK_AND_ASSIGN(PgConn console, ConnectConsole());
  PGF_ASSERT_OK(Command(console.get(), "SET server_round_robin = 0").status());
  PGF_ASSERT_OK_AND_ASSIGN(pids, BackendPids(client.get(), 6));
  EXPECT_EQ(Distinct(pids), 1u) << "LIFO should reuse one server: " << Join(pids);
  PGF_ASSERT_OK_AND_ASSIGN(NamedRow row, ConfigRow(agent_->port(), "server_round_robin"));
  EXPECT_EQ(row.at("value"), "0");
  EXPECT_EQ(row.at("changeable"), "yes");

  // RELOAD of a file that turns it on again.
  options.pgbouncer_settings["server_round_robin"] = "1";
  PGF_ASSERT_OK(agent_->RewriteConfig(options));
  PGF_ASSERT_OK(Command(console.get(), "RELOAD").status());
  PGF_ASSERT_OK_AND_ASSIGN(pids, BackendPids(client.get(), 6));
  EXPECT_EQ(Distinct(pids), 3u) << Join(pids);
  EXPECT_FALSE(absl::StrContains(agent_->LogContents(), "'server_round_robin' is not supported"));
}

// ---- listen_backlog --------------------------------------------------------------------------

// Send-Q of the listening socket `ss` finds with `filter` (`-t` or `-x` and its address): the
// kernel's backlog for it.
absl::StatusOr<std::string> ListenBacklog(const std::vector<std::string>& filter) {
  std::vector<std::string> argv = {"ss", "-Hln"};
  argv.insert(argv.end(), filter.begin(), filter.end());
  PGF_ASSIGN_OR_RETURN(RunResult run, RunCommand(argv));
  if (!run.Succeeded()) return absl::InternalError(run.Describe());
  std::vector<std::string> fields =
      absl::StrSplit(absl::StripAsciiWhitespace(run.stdout_text), ' ', absl::SkipEmpty());
  // TCP: State Recv-Q Send-Q ...; unix: Netid State Recv-Q Send-Q ...
  const size_t send_q = filter.front() == "-x" ? 3 : 2;
  if (fields.size() <= send_q || absl::StrContains(run.stdout_text, "\n" + fields[0])) {
    return absl::NotFoundError(absl::StrCat("no single listener in: ", run.stdout_text));
  }
  return fields[send_q];
}

TEST_F(RemainingKeysTest, ListenBacklogIsTheListenersBacklogAndReloadSetsIt) {
  TempDir socket_dir;
  PGF_ASSERT_OK(socket_dir.Create("pgfleet-backlog"));
  AgentOptions options = AppAgentOptions({{"auth_type", "scram-sha-256"},
                                          {"admin_users", kAdminUser},
                                          {"unix_socket_dir", socket_dir.path()},
                                          {"listen_backlog", "7"}});
  StartAgentWith(options);
  const std::vector<std::string> tcp = {"-t", "src", absl::StrCat("127.0.0.1:", agent_->port())};
  const std::vector<std::string> unix_socket = {
      "-x", "src", absl::StrCat(socket_dir.path(), "/.s.PGSQL.", agent_->port())};
  PGF_ASSERT_OK_AND_ASSIGN(std::string backlog, ListenBacklog(tcp));
  EXPECT_EQ(backlog, "7");
  PGF_ASSERT_OK_AND_ASSIGN(backlog, ListenBacklog(unix_socket));
  EXPECT_EQ(backlog, "7");
  PGF_ASSERT_OK_AND_ASSIGN(NamedRow row, ConfigRow(agent_->port(), "listen_backlog"));
  EXPECT_EQ(row.at("value"), "7");
  EXPECT_EQ(row.at("default"), "128");
  EXPECT_EQ(row.at("changeable"), "no");

  PGF_ASSERT_OK_AND_ASSIGN(PgConn console, ConnectConsole());
  absl::StatusOr<std::string> set = Command(console.get(), "SET listen_backlog = 9");
  EXPECT_FALSE(set.ok());
  EXPECT_TRUE(absl::StrContains(set.status().message(), "cannot be changed online"))
      << set.status();

  // A RELOAD keeps the listeners (same addresses) and gives them the new backlog.
  options.pgbouncer_settings["listen_backlog"] = "3";
  PGF_ASSERT_OK(agent_->RewriteConfig(options));
  PGF_ASSERT_OK(Command(console.get(), "RELOAD").status());
  PGF_ASSERT_OK_AND_ASSIGN(backlog, ListenBacklog(tcp));
  EXPECT_EQ(backlog, "3");
  PGF_ASSERT_OK_AND_ASSIGN(backlog, ListenBacklog(unix_socket));
  EXPECT_EQ(backlog, "3");
}

// A hand-over (SIGUSR2) passes the listening socket itself to the new process, which reads the
// config again: its listen_backlog is set on the socket it adopted.
TEST_F(RemainingKeysTest, ListenBacklogOfANewConfigReachesTheHandedOverListener) {
  TempDir dir;
  PGF_ASSERT_OK(dir.Create("pgfleet-backlog-handover"));
  const std::string pidfile = dir.path() + "/agent.pid";
  AgentOptions options = AppAgentOptions(
      {{"auth_type", "scram-sha-256"}, {"pidfile", pidfile}, {"listen_backlog", "7"}});
  StartAgentWith(options);
  const std::vector<std::string> tcp = {"-t", "src", absl::StrCat("127.0.0.1:", agent_->port())};
  PGF_ASSERT_OK_AND_ASSIGN(std::string backlog, ListenBacklog(tcp));
  EXPECT_EQ(backlog, "7");

  options.pgbouncer_settings["listen_backlog"] = "5";
  PGF_ASSERT_OK(agent_->RewriteConfig(options));
  const pid_t old_pid = agent_->pid();
  PGF_ASSERT_OK(agent_->Signal(SIGUSR2));
  NewAgentProcess new_agent;
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        absl::StatusOr<pid_t> pid = ReadPidfile(pidfile);
        *note =
            pid.ok() ? absl::StrCat("pidfile says ", *pid) : std::string(pid.status().message());
        if (!pid.ok() || *pid == old_pid) return false;
        new_agent.Adopt(*pid);
        return true;
      },
      absl::Seconds(30), "the pidfile to name the new process"));
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        PGF_ASSIGN_OR_RETURN(backlog, ListenBacklog(tcp));
        *note = absl::StrCat("backlog ", backlog);
        return backlog == "5";
      },
      absl::Seconds(30), "the handed-over listener's backlog to be the new config's"));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn conn, ConnectApp());
  PGF_ASSERT_OK_AND_ASSIGN(int64_t one, ScalarInt(conn.get(), "select 1"));
  EXPECT_EQ(one, 1);
  // The old process, with no client, exits by itself once the new one serves.
  absl::StatusOr<int> exited = agent_->WaitForExit(absl::Seconds(30));
  ASSERT_TRUE(exited.ok()) << exited.status() << "\n" << agent_->Diagnostics();
  EXPECT_TRUE(WIFEXITED(*exited) && WEXITSTATUS(*exited) == 0) << DescribeWaitStatus(*exited);
}

// ---- application_name_add_host ---------------------------------------------------------------

// This connection's own pg_stat_activity.application_name, as PostgreSQL has it.
absl::StatusOr<std::string> ServerApplicationName(PGconn* conn) {
  return ScalarText(conn,
                    "select application_name from pg_stat_activity where pid = pg_backend_pid()");
}

// The client's side of a TCP connection: "127.0.0.1:PORT".
std::string LocalAddress(PGconn* conn) {
  sockaddr_storage local{};
  socklen_t length = sizeof(local);
  if (getsockname(PQsocket(conn), reinterpret_cast<sockaddr*>(&local), &length) != 0) return "?";
  return absl::StrCat("127.0.0.1:", ntohs(reinterpret_cast<sockaddr_in*>(&local)->sin_port));
}

TEST_F(RemainingKeysTest, ApplicationNameAddHostAppendsTheClientAddress) {
  TempDir socket_dir;
  PGF_ASSERT_OK(socket_dir.Create("pgfleet-appname"));
  StartAgent({{"application_name_add_host", "1"}, {"unix_socket_dir", socket_dir.path()}});
  const std::string conninfo = agent_->ConnString(kAppDb, kAppUser, kAppPassword);

  PGF_ASSERT_OK_AND_ASSIGN(PgConn named, Connect(conninfo + " application_name=billing"));
  PGF_ASSERT_OK_AND_ASSIGN(std::string name, ServerApplicationName(named.get()));
  EXPECT_EQ(name, absl::StrCat("billing - ", LocalAddress(named.get())));
  // Only at login: a SET afterwards is the client's to make.
  PGF_ASSERT_OK(Query(named.get(), "set application_name = 'later'").status());
  PGF_ASSERT_OK_AND_ASSIGN(name, ServerApplicationName(named.get()));
  EXPECT_EQ(name, "later");

  // No name sent: PgBouncer calls it "app".
  PGF_ASSERT_OK_AND_ASSIGN(PgConn unnamed, Connect(conninfo));
  PGF_ASSERT_OK_AND_ASSIGN(name, ServerApplicationName(unnamed.get()));
  EXPECT_EQ(name, absl::StrCat("app - ", LocalAddress(unnamed.get())));

  // Over the unix socket: the client's pid (this process: libpq runs in it) and the host name.
  char hostname[256] = "";
  ASSERT_EQ(gethostname(hostname, sizeof(hostname) - 1), 0);
  PGF_ASSERT_OK_AND_ASSIGN(
      PgConn local, Connect(absl::StrCat("host=", socket_dir.path(), " port=", agent_->port(),
                                         " dbname=", kAppDb, " user=", kAppUser,
                                         " password=", kAppPassword, " application_name=local")));
  PGF_ASSERT_OK_AND_ASSIGN(name, ServerApplicationName(local.get()));
  EXPECT_EQ(name, absl::StrCat("local - unix(", getpid(), "@", hostname, "):", agent_->port()));
}

TEST_F(RemainingKeysTest, ApplicationNamePassesThroughWithoutAddHost) {
  StartAgent({});
  PGF_ASSERT_OK_AND_ASSIGN(PgConn conn, Connect(agent_->ConnString(kAppDb, kAppUser, kAppPassword) +
                                                " application_name=billing"));
  PGF_ASSERT_OK_AND_ASSIGN(std::string name, ServerApplicationName(conn.get()));
  EXPECT_EQ(name, "billing");
}

// ---- per-database server_lifetime -------------------------------------------------------------

TEST_F(RemainingKeysTest, PerDatabaseServerLifetimeRecyclesThatDatabasesServers) {
  AgentOptions options = AppAgentOptions({{"auth_type", "scram-sha-256"},
                                          {"pool_mode", "transaction"},
                                          {"admin_users", kAdminUser},
                                          {"server_lifetime", "3600"}});
  options.databases_section = Entry(kAppDb, "server_lifetime=1") + Entry("steady");
  StartAgentWith(options);
  PGF_ASSERT_OK_AND_ASSIGN(PgConn short_lived, ConnectApp());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn steady,
                           Connect(agent_->ConnString("steady", kAppUser, kAppPassword)));
  PGF_ASSERT_OK_AND_ASSIGN(int64_t first_pid,
                           ScalarInt(short_lived.get(), "select pg_backend_pid()"));
  PGF_ASSERT_OK_AND_ASSIGN(int64_t steady_pid, ScalarInt(steady.get(), "select pg_backend_pid()"));

  PGF_ASSERT_OK_AND_ASSIGN(std::vector<NamedRow> databases,
                           AdminShow(agent_->port(), "SHOW DATABASES"));
  for (const NamedRow& row : databases) {
    if (row.at("name") == kAppDb) {
      EXPECT_EQ(row.at("server_lifetime"), "1");
    } else if (row.at("name") == "steady") {
      EXPECT_EQ(row.at("server_lifetime"), "3600");
    }
  }

  // appdb's server is closed once a second old (released or idle), so a later transaction
  // lands on a new backend.
  int64_t pid = first_pid;
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        PGF_ASSIGN_OR_RETURN(pid, ScalarInt(short_lived.get(), "select pg_backend_pid()"));
        *note = absl::StrCat("backend ", pid);
        return pid != first_pid;
      },
      absl::Seconds(20), "appdb's server to be recycled after its server_lifetime"));
  EXPECT_TRUE(absl::StrContains(agent_->LogContents(), "server lifetime over"))
      << agent_->Diagnostics();
  // The other database's server, as old, is kept under the [pgbouncer] hour.
  PGF_ASSERT_OK_AND_ASSIGN(int64_t steady_again,
                           ScalarInt(steady.get(), "select pg_backend_pid()"));
  EXPECT_EQ(steady_again, steady_pid);
  EXPECT_FALSE(absl::StrContains(agent_->LogContents(), "parameter 'server_lifetime'"));
}

// ---- user --------------------------------------------------------------------------------------

TEST_F(RemainingKeysTest, UserKeySwitchesFromRootOnceListening) {
  if (geteuid() != 0) GTEST_SKIP() << "the user key switches users only when started as root";
  const passwd* postgres = getpwnam("postgres");
  ASSERT_NE(postgres, nullptr);
  const std::string postgres_uid = absl::StrCat(postgres->pw_uid);
  StartAgent({{"user", "postgres"}});
  PGF_ASSERT_OK_AND_ASSIGN(PgConn conn, ConnectApp());
  PGF_ASSERT_OK_AND_ASSIGN(int64_t one, ScalarInt(conn.get(), "select 1"));
  EXPECT_EQ(one, 1);
  EXPECT_EQ(ProcessUids(agent_->pid()), std::vector<std::string>(4, postgres_uid));
  EXPECT_TRUE(absl::StrContains(agent_->LogContents(), "running as user postgres"))
      << agent_->Diagnostics();
}

TEST_F(RemainingKeysTest, UserKeyYieldsToTheCommandLine) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root";
  // As PgBouncer: -u wins over the file; -u root leaves a root agent as it is.
  AgentOptions options = AppAgentOptions({{"user", "postgres"}});
  options.extra_args = {"-u", "root"};
  StartAgentWith(options);
  EXPECT_EQ(ProcessUids(agent_->pid()), std::vector<std::string>(4, "0"));
}

TEST_F(RemainingKeysTest, UnknownUserFailsTheStartNamingTheKey) {
  TempDir dir;
  PGF_ASSERT_OK(dir.Create("pgfleet-user"));
  PGF_ASSERT_OK_AND_ASSIGN(int port, PickFreePort());
  const std::string ini = dir.path() + "/agent.ini";
  PGF_ASSERT_OK(WriteFile(dir.path() + "/userlist.txt", UserlistLine(kAppUser, kAppPassword)));
  PGF_ASSERT_OK(WriteFile(
      ini, absl::StrCat("[databases]\n", Entry(kAppDb),
                        "[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = ", port,
                        "\nunix_socket_dir =\nauth_type = scram-sha-256\nauth_file = ", dir.path(),
                        "/userlist.txt\nuser = no-such-user-pgfleet\n")));
  RunOptions run_options;
  run_options.timeout = absl::Seconds(30);
  PGF_ASSERT_OK_AND_ASSIGN(RunResult run, RunCommand({AgentBinaryUnderTest(), ini}, run_options));
  EXPECT_EQ(run.ExitCode(), 1) << run.Describe();
  EXPECT_TRUE(absl::StrContains(run.stderr_text,
                                "agent.ini:9: key 'user' = 'no-such-user-pgfleet': no such user"))
      << run.Describe();
}

}  // namespace
}  // namespace pgfleet::testutil
