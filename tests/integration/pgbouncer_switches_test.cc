// Issue 22: PgBouncer's command-line switches mean what PgBouncer's mean, run through the real
// agent binary in front of a real PostgreSQL.
//  -q/--quiet: no log line on stderr; the logfile still gets every line, at the same level.
//  -v/--verbose: debug lines, still after a RELOAD/SIGHUP unless the file sets `verbose`.
//  -R/--reboot: `pgfleet-agent -R pgbouncer.ini` takes the listeners over from the agent the
//    config's pidfile names (the hand-over of agent/handover.h). A client connected through the
//    old process keeps its session, in the middle of a transaction; new connections (TCP and the
//    unix socket) are the new process's; the old one exits once its last client leaves. With -d
//    the command returns once the new process serves. Without a running agent -R starts
//    normally (as PgBouncer); without a pidfile it says what to do instead; a SUSPENDed agent
//    refuses and goes on serving. With a controller, -R finds the agent through the state dir
//    it holds (its pushed config's pidfile may differ from the local file's).
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <functional>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/status_macros.h"
#include "gtest/gtest.h"
#include "tests/testutil/agent_process.h"
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

// A pgfleet-agent the test starts beside agent_, on agent_'s own config (the -R one): its
// output goes to a file, it is reaped once, and stopped when the test ends if it still runs.
class SecondAgent {
 public:
  static absl::StatusOr<std::unique_ptr<SecondAgent>> Start(const std::vector<std::string>& args,
                                                            const std::string& output_path) {
    std::vector<std::string> argv = {AgentBinaryUnderTest()};
    argv.insert(argv.end(), args.begin(), args.end());
    SpawnOptions spawn;
    spawn.stdout_path = output_path;
    spawn.stderr_path = output_path;
    PGF_ASSIGN_OR_RETURN(pid_t pid, Spawn(argv, spawn));
    return std::unique_ptr<SecondAgent>(new SecondAgent(pid, output_path));
  }
  ~SecondAgent() {
    kill(pid_, SIGTERM);
    if (!WaitPid(pid_, absl::Seconds(15)).ok()) {
      kill(pid_, SIGKILL);
      (void)WaitPid(pid_, absl::Seconds(15));
    }
  }
  pid_t pid() const { return pid_; }
  std::string Output() const { return ReadFileTail(output_path_, 16384); }

 private:
  SecondAgent(pid_t pid, std::string output_path)
      : pid_(pid), output_path_(std::move(output_path)) {}
  pid_t pid_;
  std::string output_path_;
};

class SwitchesTest : public AgentTest {
 protected:
  void SetUp() override {
    AgentTest::SetUp();
    PGF_ASSERT_OK(dir_.Create("switches"));
    pidfile_ = dir_.path() + "/agent.pid";
  }

  // An agent with a pidfile and a unix socket, so -R has both to go by and to take over.
  AgentOptions RebootableOptions() const {
    AgentOptions options = AppAgentOptions({{"auth_type", "scram-sha-256"},
                                            {"pool_mode", "transaction"},
                                            {"default_pool_size", "4"},
                                            {"admin_users", kAdminUser},
                                            {"pidfile", pidfile_},
                                            {"unix_socket_dir", dir_.path()}});
    // The old process keeps its clients for as long as the test needs them.
    options.extra_args = {"--handover-drain-timeout=120s"};
    return options;
  }

  // The pidfile (or `pid_path`, a file holding a pid the same way) names `pid`.
  absl::Status AwaitPidfileNames(pid_t pid, const std::string& pid_path = "") {
    const std::string path = pid_path.empty() ? pidfile_ : pid_path;
    return PollUntil(
        [&](std::string* note) -> absl::StatusOr<bool> {
          absl::StatusOr<pid_t> named = ReadPidfile(path);
          *note = named.ok() ? absl::StrCat("pidfile says ", *named)
                             : std::string(named.status().message());
          return named.ok() && *named == pid;
        },
        absl::Seconds(30), absl::StrCat("the pidfile to name pid ", pid));
  }

  // Rows of SHOW CLIENTS for appdb on whichever process now accepts on the agent's port.
  absl::StatusOr<size_t> AppClientsOfTheAcceptingProcess() const {
    PGF_ASSIGN_OR_RETURN(std::vector<NamedRow> clients, AdminShow(agent_->port(), "SHOW CLIENTS"));
    size_t app = 0;
    for (const NamedRow& row : clients) app += row.at("database") == kAppDb;
    return app;
  }

  std::string UnixConnString() const {
    return absl::StrCat("host=", dir_.path(), " port=", agent_->port(), " dbname=", kAppDb,
                        " user=", kAppUser, " password=", kAppPassword);
  }

  // While `held` is inside a transaction on the old process, `take_over` makes another process
  // take the listeners over and returns its pid; then everything -R promises is checked.
  // `pid_path`: the file that names the serving process (default: the pidfile).
  void TakeOverWhileAClientIsInATransaction(const std::function<pid_t()>& take_over,
                                            const std::string& pid_path = "") {
    const pid_t old_pid = agent_->pid();
    PGF_ASSERT_OK_AND_ASSIGN(PgConn held, ConnectApp());
    PGF_ASSERT_OK(Query(held.get(), "begin").status());
    PGF_ASSERT_OK_AND_ASSIGN(std::string backend,
                             ScalarText(held.get(), "select pg_backend_pid()"));

    const pid_t new_pid = take_over();
    if (HasFatalFailure()) return;
    ASSERT_NE(new_pid, old_pid);
    PGF_ASSERT_OK(AwaitPidfileNames(new_pid, pid_path));
    // The old process stops accepting once the new one said it is ready.
    PGF_ASSERT_OK(PollUntil(
        [&](std::string*) -> absl::StatusOr<bool> {
          return absl::StrContains(agent_->LogContents(),
                                   absl::StrCat("RESTART (-R): pid ", new_pid, " took over"));
        },
        absl::Seconds(30), "the old process to hand over"));

    // The old process still serves its client, on the same server, inside its transaction.
    EXPECT_TRUE(agent_->IsRunning()) << agent_->Diagnostics();
    PGF_ASSERT_OK_AND_ASSIGN(std::string same_backend,
                             ScalarText(held.get(), "select pg_backend_pid()"));
    EXPECT_EQ(same_backend, backend);
    PGF_ASSERT_OK(Query(held.get(), "commit").status());

    // New connections, over TCP and over the unix socket, are the new process's: its console
    // knows only them, not the client the old process keeps.
    PGF_ASSERT_OK_AND_ASSIGN(PgConn fresh, ConnectApp());
    PGF_ASSERT_OK_AND_ASSIGN(std::string one, ScalarText(fresh.get(), "select 1"));
    EXPECT_EQ(one, "1");
    PGF_ASSERT_OK_AND_ASSIGN(PgConn over_unix, Connect(UnixConnString()));
    PGF_ASSERT_OK(Query(over_unix.get(), "select 1").status());
    PGF_ASSERT_OK_AND_ASSIGN(size_t app_clients, AppClientsOfTheAcceptingProcess());
    EXPECT_EQ(app_clients, 2u) << "the new process should have the TCP and unix clients only";

    // The old process leaves once its last client does; the new one goes on serving.
    held.reset();
    absl::StatusOr<int> exited = agent_->WaitForExit(absl::Seconds(30));
    ASSERT_TRUE(exited.ok()) << exited.status() << "\n" << agent_->Diagnostics();
    EXPECT_TRUE(WIFEXITED(*exited) && WEXITSTATUS(*exited) == 0) << DescribeWaitStatus(*exited);
    PGF_EXPECT_OK(Query(fresh.get(), "select 1").status());
    PGF_ASSERT_OK_AND_ASSIGN(PgConn later, ConnectApp());
    PGF_EXPECT_OK(Query(later.get(), "select 1").status());
    EXPECT_TRUE(ProcessRuns(new_pid));
  }

  TempDir dir_;
  std::string pidfile_;
};

TEST_F(SwitchesTest, QuietWritesNothingToStderrAndEveryLineToTheLogfile) {
  AgentOptions options = AppAgentOptions({{"auth_type", "scram-sha-256"}});
  options.extra_args = {"-q"};
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(options));
  {
    PGF_ASSERT_OK_AND_ASSIGN(PgConn conn, ConnectApp());
    PGF_ASSERT_OK(Query(conn.get(), "select 1").status());
  }
  // The login line is a LOG line: -q lowers no level, the logfile has it.
  PGF_ASSERT_OK(PollUntil(
      [&](std::string*) -> absl::StatusOr<bool> {
        return absl::StrContains(agent_->LogContents(), "login attempt");
      },
      absl::Seconds(10), "the login line in the logfile"));
  EXPECT_TRUE(absl::StrContains(agent_->LogContents(), "pgfleet-agent started"));
  EXPECT_EQ(agent_->StderrContents(), "");
}

// The control: without -q the same lines go to stderr too (so the test above can fail).
TEST_F(SwitchesTest, WithoutQuietTheLinesGoToStderrToo) {
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(AppAgentOptions({{"auth_type", "scram-sha-256"}})));
  {
    PGF_ASSERT_OK_AND_ASSIGN(PgConn conn, ConnectApp());
    PGF_ASSERT_OK(Query(conn.get(), "select 1").status());
  }
  PGF_ASSERT_OK(PollUntil(
      [&](std::string*) -> absl::StatusOr<bool> {
        return absl::StrContains(agent_->StderrContents(), "login attempt");
      },
      absl::Seconds(10), "the login line on stderr"));
  EXPECT_TRUE(absl::StrContains(agent_->LogContents(), "login attempt"));
}

// In transaction mode an SQL PREPARE is refused with a DEBUG line that quotes it, so whether
// the line for a given statement name is in the log says whether debug logging was on.
std::string RefusedPrepareLine(const std::string& name) {
  return absl::StrCat("SQL prepared statement refused: prepare ", name);
}

absl::Status AwaitLog(const AgentProcess& agent, const std::string& text) {
  return PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        *note = agent.LogContents();
        return absl::StrContains(*note, text);
      },
      absl::Seconds(10), absl::StrCat("'", text, "' in the log"));
}

// -v outlives SIGHUP as in PgBouncer (its verbose key has no default a reload resets to): a
// DEBUG line is still written after the reload.
TEST_F(SwitchesTest, VerboseFromTheCommandLineOutlivesAReload) {
  AgentOptions options =
      AppAgentOptions({{"auth_type", "scram-sha-256"}, {"pool_mode", "transaction"}});
  options.extra_args = {"-v"};
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(options));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn conn, ConnectApp());
  EXPECT_FALSE(Query(conn.get(), "prepare before_reload as select 1").ok());
  PGF_ASSERT_OK(AwaitLog(*agent_, RefusedPrepareLine("before_reload")));

  PGF_ASSERT_OK(agent_->Signal(SIGHUP));
  PGF_ASSERT_OK(AwaitLog(*agent_, "RELOAD: configuration"));
  EXPECT_FALSE(Query(conn.get(), "prepare after_reload as select 1").ok());
  PGF_ASSERT_OK(AwaitLog(*agent_, RefusedPrepareLine("after_reload")));
}

// The other half of PgBouncer's rule: a `verbose` the file sets wins over -v.
TEST_F(SwitchesTest, VerboseInTheFileWinsOverTheCommandLine) {
  AgentOptions options = AppAgentOptions({{"auth_type", "scram-sha-256"},
                                          {"pool_mode", "transaction"},
                                          {"verbose", "0"},
                                          {"admin_users", kAdminUser}});
  options.extra_args = {"-v"};
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(options));
  {
    PGF_ASSERT_OK_AND_ASSIGN(PgConn conn, ConnectApp());
    EXPECT_FALSE(Query(conn.get(), "prepare quiet_one as select 1").ok());
  }
  // The disconnection's LOG line comes after the refusal would have been logged.
  PGF_ASSERT_OK(AwaitLog(*agent_, "client close request"));
  EXPECT_FALSE(absl::StrContains(agent_->LogContents(), RefusedPrepareLine("quiet_one")))
      << agent_->LogContents();
  PGF_ASSERT_OK_AND_ASSIGN(std::vector<NamedRow> config, AdminShow(agent_->port(), "SHOW CONFIG"));
  size_t verbose_rows = 0;
  for (const NamedRow& row : config) {
    if (row.at("key") != "verbose") continue;
    ++verbose_rows;
    EXPECT_EQ(row.at("value"), "0");
  }
  EXPECT_EQ(verbose_rows, 1u);
}

// -q outlives a reload too: stderr stays empty while the logfile records the reload.
TEST_F(SwitchesTest, QuietOutlivesAReload) {
  AgentOptions options = AppAgentOptions({{"auth_type", "scram-sha-256"}});
  options.extra_args = {"-q"};
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(options));
  PGF_ASSERT_OK(agent_->Signal(SIGHUP));
  PGF_ASSERT_OK(AwaitLog(*agent_, "RELOAD: configuration"));
  {
    PGF_ASSERT_OK_AND_ASSIGN(PgConn conn, ConnectApp());
    PGF_ASSERT_OK(Query(conn.get(), "select 1").status());
  }
  PGF_ASSERT_OK(AwaitLog(*agent_, "login attempt"));
  EXPECT_EQ(agent_->StderrContents(), "");
}

TEST_F(SwitchesTest, RebootTakesTheListenersOverAndTheOldProcessKeepsItsClients) {
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(RebootableOptions()));
  std::unique_ptr<SecondAgent> rebooted;
  TakeOverWhileAClientIsInATransaction([&]() -> pid_t {
    absl::StatusOr<std::unique_ptr<SecondAgent>> started =
        SecondAgent::Start({"-R", agent_->ini_path()}, dir_.path() + "/rebooted.out");
    EXPECT_TRUE(started.ok()) << started.status();
    if (!started.ok()) return -1;
    rebooted = *std::move(started);
    return rebooted->pid();
  });
  if (HasFailure() && rebooted != nullptr) std::cerr << "-R process:\n" << rebooted->Output();
}

// With a controller the agent serves the config it pushed, whose pidfile need not be the local
// file's (here the local file sets none): -R finds the running agent as the holder of the
// fleet state dir, and the new process holds it after. The controller is down the whole time
// (the agent serves fail-static), which -R does not need either; the new process says it is
// ready once its controller stream is up or, as here, after 5 s without one.
TEST_F(SwitchesTest, RebootWithAControllerFindsTheAgentThroughItsStateDir) {
  AgentOptions options = RebootableOptions();
  options.pgbouncer_settings.erase("pidfile");
  const std::string state_dir = dir_.path() + "/state";
  PGF_ASSERT_OK_AND_ASSIGN(int no_controller_port, PickFreePort());
  const std::vector<std::string> link = {
      absl::StrCat("--controller=127.0.0.1:", no_controller_port), "--env=dev",
      "--agent-id=reboot-1", absl::StrCat("--state-dir=", state_dir)};
  options.extra_args.insert(options.extra_args.end(), link.begin(), link.end());
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(options));
  std::unique_ptr<SecondAgent> rebooted;
  TakeOverWhileAClientIsInATransaction(
      [&]() -> pid_t {
        std::vector<std::string> args = {"-R"};
        args.insert(args.end(), link.begin(), link.end());
        args.push_back(agent_->ini_path());
        absl::StatusOr<std::unique_ptr<SecondAgent>> started =
            SecondAgent::Start(args, dir_.path() + "/rebooted.out");
        EXPECT_TRUE(started.ok()) << started.status();
        if (!started.ok()) return -1;
        rebooted = *std::move(started);
        return rebooted->pid();
      },
      state_dir + "/lock");
  if (HasFailure() && rebooted != nullptr) std::cerr << "-R process:\n" << rebooted->Output();
}

TEST_F(SwitchesTest, RebootWithDaemonReturnsOnceTheNewProcessServes) {
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(RebootableOptions()));
  NewAgentProcess detached;
  TakeOverWhileAClientIsInATransaction([&]() -> pid_t {
    absl::StatusOr<RunResult> ran =
        RunCommand({AgentBinaryUnderTest(), "-R", "-d", agent_->ini_path()});
    EXPECT_TRUE(ran.ok() && ran->Succeeded())
        << (ran.ok() ? ran->Describe() : ran.status().ToString());
    // -d returned 0: the detached process serves, and its pid is in the pidfile already.
    absl::StatusOr<pid_t> pid = ReadPidfile(pidfile_);
    EXPECT_TRUE(pid.ok()) << pid.status();
    if (!pid.ok()) return -1;
    detached.Adopt(*pid);
    return *pid;
  });
}

TEST_F(SwitchesTest, RebootWithNoAgentRunningStartsNormally) {
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(RebootableOptions()));
  ExpectCleanStop(*agent_);
  ASSERT_FALSE(ReadPidfile(pidfile_).ok()) << "a stopped agent removes its pidfile";
  PGF_ASSERT_OK_AND_ASSIGN(
      std::unique_ptr<SecondAgent> started,
      SecondAgent::Start({"-R", agent_->ini_path()}, dir_.path() + "/started.out"));
  PGF_ASSERT_OK(AwaitPidfileNames(started->pid()));
  const absl::Status serving = PollUntil(
      [&](std::string*) -> absl::StatusOr<bool> { return Connect(UnixConnString()).ok(); },
      absl::Seconds(10), "the -R process to serve");
  ASSERT_TRUE(serving.ok()) << serving << "\n" << started->Output();
  PGF_ASSERT_OK_AND_ASSIGN(PgConn conn, ConnectApp());
  PGF_EXPECT_OK(Query(conn.get(), "select 1").status());
  EXPECT_TRUE(absl::StrContains(started->Output(), "-R: no running agent")) << started->Output();
}

// SIGUSR2 would kill most programs: -R signals only a pgfleet-agent.
TEST_F(SwitchesTest, RebootNeverSignalsAProcessThatIsNotAnAgent) {
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(RebootableOptions()));
  ExpectCleanStop(*agent_);
  PGF_ASSERT_OK_AND_ASSIGN(pid_t stranger, Spawn({"sleep", "60"}, SpawnOptions{}));
  PGF_ASSERT_OK(WriteFile(pidfile_, absl::StrCat(stranger, "\n")));
  PGF_ASSERT_OK_AND_ASSIGN(RunResult ran,
                           RunCommand({AgentBinaryUnderTest(), "-R", agent_->ini_path()}));
  EXPECT_EQ(ran.ExitCode(), 1) << ran.Describe();
  EXPECT_TRUE(absl::StrContains(ran.stderr_text, "is not a pgfleet-agent")) << ran.Describe();
  EXPECT_TRUE(ProcessRuns(stranger));
  kill(stranger, SIGKILL);
  PGF_EXPECT_OK(WaitPid(stranger, absl::Seconds(10)).status());
}

TEST_F(SwitchesTest, RebootWithoutAPidfileSaysWhatToDoInstead) {
  ASSERT_NO_FATAL_FAILURE(StartAgent());
  PGF_ASSERT_OK_AND_ASSIGN(RunResult ran,
                           RunCommand({AgentBinaryUnderTest(), "-R", agent_->ini_path()}));
  EXPECT_EQ(ran.ExitCode(), 1) << ran.Describe();
  EXPECT_TRUE(absl::StrContains(ran.stderr_text, "pidfile")) << ran.Describe();
  EXPECT_TRUE(absl::StrContains(ran.stderr_text, "SIGUSR2")) << ran.Describe();
  PGF_ASSERT_OK_AND_ASSIGN(PgConn conn, ConnectApp());
  PGF_EXPECT_OK(Query(conn.get(), "select 1").status());
}

TEST_F(SwitchesTest, RebootOfASuspendedAgentIsRefusedAndItGoesOnServing) {
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(RebootableOptions()));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn admin, Connect(TcpConnString(agent_->port(), "pgbouncer",
                                                               kAdminUser, kAdminPassword)));
  PGF_ASSERT_OK(Query(admin.get(), "SUSPEND").status());
  PGF_ASSERT_OK_AND_ASSIGN(RunResult ran,
                           RunCommand({AgentBinaryUnderTest(), "-R", agent_->ini_path()}));
  EXPECT_EQ(ran.ExitCode(), 1) << ran.Describe();
  EXPECT_TRUE(absl::StrContains(ran.stderr_text, "SUSPEND")) << ran.Describe();
  PGF_ASSERT_OK(Query(admin.get(), "RESUME").status());
  PGF_ASSERT_OK_AND_ASSIGN(pid_t named, ReadPidfile(pidfile_));
  EXPECT_EQ(named, agent_->pid());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn conn, ConnectApp());
  PGF_EXPECT_OK(Query(conn.get(), "select 1").status());
}

}  // namespace
}  // namespace pgfleet::testutil
