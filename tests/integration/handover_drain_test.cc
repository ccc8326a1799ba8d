// What happens around a hand-over (issue 19, agent/handover.h) besides the listeners moving:
// the old process's drain (handover_drain_timeout, the flag overriding it, transaction- and
// session-mode clients), a hand-over over a unix socket, PAUSE and DISABLE carried to the new
// process (SUSPEND refuses RESTART), a new process that cannot start, and no socket of the old
// process leaking into the new one.
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <functional>
#include <iostream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "common/status_macros.h"
#include "gtest/gtest.h"
#include "tests/testutil/agent_process.h"
#include "tests/testutil/fixtures.h"
#include "tests/testutil/handover.h"
#include "tests/testutil/postgres_env.h"
#include "tests/testutil/pq.h"
#include "tests/testutil/process.h"
#include "tests/testutil/status_testing.h"
#include "tests/testutil/temp_dir.h"
#include "tests/testutil/wait.h"

namespace pgfleet::testutil {
namespace {

[[maybe_unused]] auto* const kCluster = RegisterSharedPostgres(
    [] {
      PostgresOptions options;
      options.max_connections = 100;
      return options;
    }(),
    [](PostgresEnv& pg) -> absl::Status {
      PGF_RETURN_IF_ERROR(CreateAppDatabase(pg));
      PGF_RETURN_IF_ERROR(InitPgbench(pg));
      PGF_ASSIGN_OR_RETURN(PgConn conn, Connect(pg.ConnString(kAppDb, kAppUser, kAppPassword)));
      return Query(conn.get(), "create table drain_rows (id int primary key)").status();
    });

// A socket fd of a process: its number, its inode and whether it is close-on-exec.
struct SocketFd {
  int fd = -1;
  std::string inode;  // "socket:[N]"
  bool cloexec = false;
};

absl::StatusOr<std::vector<SocketFd>> SocketsOf(pid_t pid) {
  std::vector<SocketFd> sockets;
  std::error_code error;
  for (const auto& entry :
       std::filesystem::directory_iterator(absl::StrCat("/proc/", pid, "/fd"), error)) {
    std::error_code link_error;
    const std::string target = std::filesystem::read_symlink(entry.path(), link_error).string();
    if (link_error || !absl::StartsWith(target, "socket:")) continue;
    SocketFd socket;
    if (!absl::SimpleAtoi(entry.path().filename().string(), &socket.fd)) continue;
    socket.inode = target;
    absl::StatusOr<std::string> info = ReadFile(absl::StrCat("/proc/", pid, "/fdinfo/", socket.fd));
    if (!info.ok()) continue;  // Closed meanwhile.
    for (absl::string_view line : absl::StrSplit(*info, '\n')) {
      if (!absl::ConsumePrefix(&line, "flags:")) continue;
      // Octal; O_CLOEXEC is 02000000.
      const unsigned long flags =
          std::stoul(std::string(absl::StripAsciiWhitespace(line)), nullptr, 8);
      socket.cloexec = (flags & 02000000) != 0;
    }
    sockets.push_back(socket);
  }
  if (error) return absl::InternalError(absl::StrCat("/proc/", pid, "/fd: ", error.message()));
  return sockets;
}

class HandoverDrainTest : public AgentTest {
 protected:
  void SetUp() override {
    AgentTest::SetUp();
    PGF_ASSERT_OK(dir_.Create("handover-drain"));
    pidfile_ = dir_.path() + "/agent.pid";
  }
  void TearDown() override {
    new_agent_.Stop();
    AgentTest::TearDown();
  }

  AgentOptions Options(const std::string& pool_mode,
                       const std::map<std::string, std::string>& more = {}) const {
    std::map<std::string, std::string> settings = {
        {"auth_type", "scram-sha-256"}, {"pool_mode", pool_mode},    {"default_pool_size", "10"},
        {"max_client_conn", "200"},     {"admin_users", kAdminUser}, {"pidfile", pidfile_}};
    for (const auto& [key, value] : more) settings[key] = value;
    return AppAgentOptions(settings);
  }

  absl::StatusOr<PgConn> ConnectAdmin() const {
    return Connect(TcpConnString(agent_->port(), "pgbouncer", kAdminUser, kAdminPassword));
  }

  // RESTART on the console; returns the new pid once the pidfile names it.
  absl::StatusOr<pid_t> Restart() {
    const pid_t old_pid = agent_->pid();
    {
      PGF_ASSIGN_OR_RETURN(PgConn admin, ConnectAdmin());
      PGF_RETURN_IF_ERROR(Query(admin.get(), "RESTART").status());
    }
    PGF_ASSIGN_OR_RETURN(pid_t pid, ReadPidfile(pidfile_));
    if (pid == old_pid) return absl::InternalError("RESTART answered, pidfile names the old pid");
    new_agent_.Adopt(pid);
    return pid;
  }

  absl::Status AwaitLog(const std::string& text, absl::Duration timeout = absl::Seconds(15)) {
    return PollUntil(
        [&](std::string*) -> absl::StatusOr<bool> {
          return absl::StrContains(agent_->LogContents(), text);
        },
        timeout, absl::StrCat("the log to say '", text, "'"));
  }

  std::set<int> StoredRows() {
    std::set<int> ids;
    absl::StatusOr<PgConn> direct = Connect(g_pg->ConnString(kAppDb, kAppUser, kAppPassword));
    if (!direct.ok()) return ids;
    absl::StatusOr<Rows> rows = Query(direct->get(), "select id from drain_rows");
    if (!rows.ok()) return ids;
    for (const std::vector<std::string>& row : *rows) {
      int id = 0;
      if (absl::SimpleAtoi(row[0], &id)) ids.insert(id);
    }
    return ids;
  }

  TempDir dir_;
  std::string pidfile_;
  NewAgentProcess new_agent_;
};

// --- item 1: the drain ---------------------------------------------------------------------------

TEST_F(HandoverDrainTest, TransactionModeClientMidTransactionCommitsThenIsClosedAtTheBoundary) {
  // The bound from the ini (pgfleet's handover_drain_timeout), short: it passes while the
  // client is inside its transaction.
  ASSERT_NO_FATAL_FAILURE(
      StartAgentWith(Options("transaction", {{"handover_drain_timeout", "1"}})));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn client, ConnectApp());
  PGF_ASSERT_OK(Query(client.get(), "begin; insert into drain_rows values (101)").status());

  PGF_ASSERT_OK_AND_ASSIGN(pid_t new_pid, Restart());
  PGF_ASSERT_OK(AwaitLog("drain bound 1s"));
  PGF_ASSERT_OK(AwaitLog("hand-over drain bound passed"));
  // Past the bound, still in its transaction: not cut off.
  PGF_ASSERT_OK(Query(client.get(), "insert into drain_rows values (102)").status());
  PGF_ASSERT_OK(Query(client.get(), "commit").status());
  // The commit was the transaction boundary: the client goes there, told why.
  absl::Status after = Query(client.get(), "select 1").status();
  EXPECT_FALSE(after.ok());
  EXPECT_TRUE(absl::StrContains(after.message(), "agent restarted")) << after;
  const std::set<int> stored = StoredRows();
  EXPECT_TRUE(stored.contains(101) && stored.contains(102));
  // Its last client gone, the old process exits; the new one serves.
  absl::StatusOr<int> exited = agent_->WaitForExit(absl::Seconds(20));
  ASSERT_TRUE(exited.ok()) << exited.status() << agent_->Diagnostics();
  EXPECT_TRUE(WIFEXITED(*exited) && WEXITSTATUS(*exited) == 0) << DescribeWaitStatus(*exited);
  EXPECT_TRUE(ProcessRuns(new_pid));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn again, ConnectApp());
  PGF_EXPECT_OK(Query(again.get(), "select 1").status());
}

TEST_F(HandoverDrainTest, SessionModeClientKeepsItsSessionUntilItEnds) {
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(Options("session", {{"handover_drain_timeout", "60"}})));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn session, ConnectApp());
  PGF_ASSERT_OK(Query(session.get(),
                      "create temp table kept (x int); insert into kept values (7); "
                      "set application_name = 'kept-session'")
                    .status());
  const pid_t old_pid = agent_->pid();
  PGF_ASSERT_OK_AND_ASSIGN(pid_t new_pid, Restart());
  EXPECT_NE(new_pid, old_pid);
  // New connections go to the new process; the session stays whole on the old one.
  PGF_ASSERT_OK_AND_ASSIGN(PgConn fresh, ConnectApp());
  PGF_EXPECT_OK(Query(fresh.get(), "select 1").status());
  PGF_ASSERT_OK_AND_ASSIGN(int64_t x, ScalarInt(session.get(), "select x from kept"));
  EXPECT_EQ(x, 7);
  PGF_ASSERT_OK_AND_ASSIGN(std::string name, ScalarText(session.get(), "show application_name"));
  EXPECT_EQ(name, "kept-session");
  EXPECT_TRUE(agent_->IsRunning());
  // The session ends: the old process has nobody left and exits.
  session.reset();
  absl::StatusOr<int> exited = agent_->WaitForExit(absl::Seconds(20));
  ASSERT_TRUE(exited.ok()) << exited.status() << agent_->Diagnostics();
  EXPECT_TRUE(WIFEXITED(*exited) && WEXITSTATUS(*exited) == 0) << DescribeWaitStatus(*exited);
  PGF_EXPECT_OK(Query(fresh.get(), "select 1").status());
}

TEST_F(HandoverDrainTest, IdleSessionPastTheReloadedBoundGetsAdminShutdownAndOldProcessExits) {
  AgentOptions options = Options("session", {{"handover_drain_timeout", "600"}});
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(options));
  // The key is reloadable: the bound in force when the hand-over starts is the one used.
  options.pgbouncer_settings["handover_drain_timeout"] = "1";
  PGF_ASSERT_OK(agent_->RewriteConfig(options));
  {
    PGF_ASSERT_OK_AND_ASSIGN(PgConn admin, ConnectAdmin());
    PGF_ASSERT_OK(Query(admin.get(), "RELOAD").status());
    PGF_ASSERT_OK_AND_ASSIGN(std::vector<NamedRow> config,
                             AdminShow(agent_->port(), "SHOW CONFIG"));
    bool found = false;
    for (const NamedRow& row : config) {
      if (row.at("key") != "handover_drain_timeout") continue;
      found = true;
      EXPECT_EQ(row.at("value"), "1");
    }
    EXPECT_TRUE(found) << "SHOW CONFIG has no handover_drain_timeout";
  }
  PGF_ASSERT_OK_AND_ASSIGN(PgConn session, ConnectApp());
  PGF_ASSERT_OK(Query(session.get(), "set application_name = 'idle'").status());
  PGF_ASSERT_OK(Restart().status());
  absl::StatusOr<int> exited = agent_->WaitForExit(absl::Seconds(20));
  ASSERT_TRUE(exited.ok()) << exited.status() << agent_->Diagnostics();
  EXPECT_TRUE(WIFEXITED(*exited) && WEXITSTATUS(*exited) == 0) << DescribeWaitStatus(*exited);
  absl::Status after = Query(session.get(), "select 1").status();
  EXPECT_EQ(SqlStateOf(after), "57P01") << after;
  EXPECT_TRUE(absl::StrContains(after.message(), "agent restarted")) << after;
}

TEST_F(HandoverDrainTest, TheFlagOverridesTheKey) {
  AgentOptions options = Options("transaction", {{"handover_drain_timeout", "1"}});
  options.extra_args = {"--handover-drain-timeout=10m"};
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(options));
  PGF_ASSERT_OK(Restart().status());
  PGF_EXPECT_OK(AwaitLog("drain bound 10m"));
}

// --- item 2: unix sockets ------------------------------------------------------------------------

TEST_F(HandoverDrainTest, UnixSocketClientsConnectThroughoutAHandOver) {
  TempDir sockets;
  PGF_ASSERT_OK(sockets.Create("drain-sock"));
  ASSERT_NO_FATAL_FAILURE(
      StartAgentWith(Options("transaction", {{"unix_socket_dir", sockets.path()}})));
  const std::string socket_path = absl::StrCat(sockets.path(), "/.s.PGSQL.", agent_->port());
  struct stat before;
  ASSERT_EQ(stat(socket_path.c_str(), &before), 0);
  const pid_t old_pid = agent_->pid();
  {
    // pgbench's later -h wins: every connection through the unix socket, one per transaction.
    BackgroundPgbench unix_loop(agent_->port(),
                                {"-S", "-C", "-c", "4", "-T", "6", "-h", sockets.path()});
    BackgroundPgbench tcp_loop(agent_->port(), {"-S", "-C", "-c", "2", "-T", "6"});
    PGF_ASSERT_OK(PollUntil(
        [&](std::string* note) -> absl::StatusOr<bool> {
          PGF_ASSIGN_OR_RETURN(std::vector<NamedRow> stats,
                               AdminShow(agent_->port(), "SHOW STATS"));
          for (const NamedRow& row : stats) {
            if (row.at("database") != kAppDb) continue;
            int64_t transactions = 0;
            *note = row.at("total_xact_count");
            return absl::SimpleAtoi(row.at("total_xact_count"), &transactions) &&
                   transactions >= 50;
          }
          return false;
        },
        absl::Seconds(20), "pgbench under way"));
    PGF_ASSERT_OK(agent_->Signal(SIGUSR2));
    PGF_ASSERT_OK(PollUntil(
        [&](std::string*) -> absl::StatusOr<bool> {
          absl::StatusOr<pid_t> pid = ReadPidfile(pidfile_);
          return pid.ok() && *pid != old_pid;
        },
        absl::Seconds(20), "the new process"));
    new_agent_.Adopt(*ReadPidfile(pidfile_));
    unix_loop.ExpectClean("pgbench -C over the unix socket across the hand-over");
    tcp_loop.ExpectClean("pgbench -C over TCP across the hand-over");
  }
  ASSERT_TRUE(agent_->WaitForExit(absl::Seconds(20)).ok()) << agent_->Diagnostics();
  // The same socket file (its inode never changed), served by the new process.
  struct stat after;
  ASSERT_EQ(stat(socket_path.c_str(), &after), 0);
  EXPECT_EQ(after.st_ino, before.st_ino);
  PGF_ASSERT_OK_AND_ASSIGN(
      PgConn over_unix,
      Connect(absl::StrCat("host=", sockets.path(), " port=", agent_->port(), " dbname=", kAppDb,
                           " user=", kAppUser, " password=", kAppPassword)));
  PGF_EXPECT_OK(Query(over_unix.get(), "select 1").status());
}

// --- item 3: PAUSE, DISABLE, SUSPEND -------------------------------------------------------------

TEST_F(HandoverDrainTest, PauseAndDisableAreCarriedToTheNewProcess) {
  AgentOptions options = Options("transaction");
  options.databases_section +=
      absl::StrCat("closed_alias = host=127.0.0.1 port=", g_pg->port(), " dbname=", kAppDb, "\n");
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(options));
  {
    PGF_ASSERT_OK_AND_ASSIGN(PgConn admin, ConnectAdmin());
    PGF_ASSERT_OK(Query(admin.get(), "PAUSE appdb FOR 10m").status());
    PGF_ASSERT_OK(Query(admin.get(), "DISABLE closed_alias").status());
  }
  PGF_ASSERT_OK_AND_ASSIGN(pid_t new_pid, Restart());
  // The old process has no client left: once it is gone, whatever answers is the new one.
  ASSERT_TRUE(agent_->WaitForExit(absl::Seconds(20)).ok()) << agent_->Diagnostics();
  PGF_ASSERT_OK_AND_ASSIGN(std::vector<NamedRow> databases,
                           AdminShow(agent_->port(), "SHOW DATABASES"));
  for (const NamedRow& row : databases) {
    if (row.at("name") == kAppDb) {
      EXPECT_EQ(row.at("paused"), "1") << "appdb in pid " << new_pid;
    }
    if (row.at("name") == "closed_alias") {
      EXPECT_EQ(row.at("disabled"), "1");
    }
  }
  EXPECT_TRUE(absl::StrContains(agent_->LogContents(), "PAUSE appdb with deadline in"));
  // A client of the paused database queues in the new process (at login: this process has
  // not met the server yet, so it waits for the welcome parameters too)...
  std::atomic<bool> answered{false};
  absl::StatusOr<int64_t> answer = absl::UnknownError("no answer");
  std::thread client([&] {
    absl::StatusOr<PgConn> conn = ConnectApp();
    answer = conn.ok() ? ScalarInt(conn->get(), "select 42") : conn.status();
    answered = true;
  });
  absl::Status queued = PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        PGF_ASSIGN_OR_RETURN(std::vector<NamedRow> pools, AdminShow(agent_->port(), "SHOW POOLS"));
        for (const NamedRow& row : pools) {
          if (row.at("database") != kAppDb) continue;
          *note = absl::StrCat("cl_waiting ", row.at("cl_waiting"));
          return row.at("cl_waiting") == "1";
        }
        return false;
      },
      absl::Seconds(8), "the client to queue in the paused pool");
  EXPECT_TRUE(queued.ok()) << queued;
  EXPECT_FALSE(answered.load()) << "a client of a paused database was served";
  // ...until RESUME releases it.
  {
    absl::StatusOr<PgConn> admin = ConnectAdmin();
    PGF_EXPECT_OK(admin.status());
    if (admin.ok()) PGF_EXPECT_OK(Query(admin->get(), "RESUME appdb").status());
  }
  client.join();
  PGF_ASSERT_OK(answer.status());
  EXPECT_EQ(*answer, 42);
  // The disabled alias still refuses logins.
  absl::StatusOr<PgConn> refused =
      Connect(TcpConnString(agent_->port(), "closed_alias", kAppUser, kAppPassword));
  EXPECT_FALSE(refused.ok());
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "is disabled")) << refused.status();
  new_agent_.Stop();
}

TEST_F(HandoverDrainTest, RestartIsRefusedWhileSuspended) {
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(Options("transaction")));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn admin, ConnectAdmin());
  PGF_ASSERT_OK(Query(admin.get(), "SUSPEND").status());
  absl::Status restarted = Query(admin.get(), "RESTART").status();
  EXPECT_FALSE(restarted.ok());
  EXPECT_TRUE(absl::StrContains(restarted.message(), "suspended")) << restarted;
  PGF_ASSERT_OK(Query(admin.get(), "RESUME").status());
  PGF_ASSERT_OK_AND_ASSIGN(pid_t pid, ReadPidfile(pidfile_));
  EXPECT_EQ(pid, agent_->pid());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn app, ConnectApp());
  PGF_EXPECT_OK(Query(app.get(), "select 1").status());
}

// --- item 4: a new process that cannot start -----------------------------------------------------

TEST_F(HandoverDrainTest, NewProcessThatCannotBindLeavesTheOldOneServingUnderLoad) {
  AgentOptions options = Options("transaction");
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(options));
  const pid_t old_pid = agent_->pid();
  // The ini on disk (what the new process reads) now asks for a socket it cannot bind.
  options.pgbouncer_settings["unix_socket_dir"] = dir_.path() + "/no/such/dir";
  PGF_ASSERT_OK(agent_->RewriteConfig(options));
  {
    BackgroundPgbench connect_loop(agent_->port(), {"-S", "-C", "-c", "4", "-T", "4"});
    PGF_ASSERT_OK_AND_ASSIGN(PgConn admin, ConnectAdmin());
    absl::Status restarted = Query(admin.get(), "RESTART").status();
    ASSERT_FALSE(restarted.ok());
    EXPECT_TRUE(absl::StrContains(restarted.message(), "RESTART failed")) << restarted;
    EXPECT_TRUE(absl::StrContains(restarted.message(), "no/such/dir")) << restarted;
    connect_loop.ExpectClean("pgbench -C across a failed hand-over");
  }
  EXPECT_TRUE(absl::StrContains(agent_->LogContents(), "RESTART failed")) << agent_->Diagnostics();
  PGF_ASSERT_OK_AND_ASSIGN(pid_t pid, ReadPidfile(pidfile_));
  EXPECT_EQ(pid, old_pid);
  PGF_ASSERT_OK_AND_ASSIGN(PgConn app, ConnectApp());
  PGF_EXPECT_OK(Query(app.get(), "select 1").status());
}

TEST_F(HandoverDrainTest, NewProcessThatNeverGetsReadyIsKilledAndTheOldOneServesUnderLoad) {
  // A broken upgrade that hangs: the file at the agent's path sleeps instead of serving.
  const std::string binary = dir_.path() + "/pgfleet-agent";
  {
    std::error_code error;
    std::filesystem::copy_file(AgentBinaryUnderTest(), binary, error);
    ASSERT_FALSE(error) << error.message();
    chmod(binary.c_str(), 0755);
  }
  AgentOptions options = Options("transaction");
  options.binary = binary;
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(options));
  const pid_t old_pid = agent_->pid();
  PGF_ASSERT_OK(WriteFile(binary + ".new", "#!/bin/sh\nexec sleep 600\n"));
  chmod((binary + ".new").c_str(), 0755);
  ASSERT_EQ(rename((binary + ".new").c_str(), binary.c_str()), 0);
  {
    // Longer than the 30 s the old process waits for "ready".
    BackgroundPgbench connect_loop(agent_->port(), {"-S", "-C", "-c", "2", "-T", "34"});
    PGF_ASSERT_OK_AND_ASSIGN(PgConn admin, ConnectAdmin());
    absl::Status restarted = Query(admin.get(), "RESTART").status();
    ASSERT_FALSE(restarted.ok());
    EXPECT_TRUE(absl::StrContains(restarted.message(), "not ready in time")) << restarted;
    EXPECT_TRUE(absl::StrContains(restarted.message(), "killed by signal 9")) << restarted;
    connect_loop.ExpectClean("pgbench -C while the new process hung");
  }
  EXPECT_TRUE(absl::StrContains(agent_->LogContents(), "RESTART failed")) << agent_->Diagnostics();
  PGF_ASSERT_OK_AND_ASSIGN(pid_t pid, ReadPidfile(pidfile_));
  EXPECT_EQ(pid, old_pid);
  PGF_ASSERT_OK_AND_ASSIGN(PgConn app, ConnectApp());
  PGF_EXPECT_OK(Query(app.get(), "select 1").status());
}

// --- item 5: no socket leaks into the new process ------------------------------------------------

TEST_F(HandoverDrainTest, EverySocketIsCloseOnExecAndNoneLeaksIntoTheNewProcess) {
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(Options("transaction")));
  const pid_t old_pid = agent_->pid();
  // A server connection in use and an idle one, a client, a console.
  PGF_ASSERT_OK_AND_ASSIGN(PgConn busy, ConnectApp());
  PGF_ASSERT_OK(Query(busy.get(), "begin; select 1").status());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn other, ConnectApp());
  PGF_ASSERT_OK(Query(other.get(), "select 1").status());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn admin, ConnectAdmin());
  PGF_ASSERT_OK_AND_ASSIGN(std::vector<SocketFd> old_sockets, SocketsOf(old_pid));
  EXPECT_GE(old_sockets.size(), 5u);  // Listener, 2 clients, console, 2 servers.
  for (const SocketFd& socket : old_sockets) {
    EXPECT_TRUE(socket.cloexec) << "fd " << socket.fd << " (" << socket.inode
                                << ") of the agent is not close-on-exec";
  }

  PGF_ASSERT_OK(Query(admin.get(), "RESTART").status());
  PGF_ASSERT_OK_AND_ASSIGN(pid_t new_pid, ReadPidfile(pidfile_));
  new_agent_.Adopt(new_pid);
  ASSERT_NE(new_pid, old_pid);
  PGF_ASSERT_OK_AND_ASSIGN(std::vector<SocketFd> new_sockets, SocketsOf(new_pid));
  std::set<std::string> old_inodes;
  for (const SocketFd& socket : old_sockets) old_inodes.insert(socket.inode);
  int shared = 0;
  for (const SocketFd& socket : new_sockets) {
    if (old_inodes.contains(socket.inode)) ++shared;
    EXPECT_TRUE(socket.cloexec) << "fd " << socket.fd << " of the new process";
  }
  // Only the one listener was handed over.
  EXPECT_EQ(shared, 1);
  PGF_ASSERT_OK(Query(busy.get(), "commit").status());
}

}  // namespace
}  // namespace pgfleet::testutil
