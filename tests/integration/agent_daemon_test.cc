// PgBouncer's -d/--daemon and -u USER on pgfleet-agent (issue 23), so init scripts written for
// PgBouncer keep working: -d returns once the agent serves (exit 0, the pid in the pidfile, the
// agent in a session of its own), or 1 with the reason when it cannot start, and refuses to run
// without a pidfile; -u switches to USER after binding when started as root, refuses to switch
// when not root, and names an unknown user. Against the binary's shared PostgreSQL.

#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "tests/testutil/agent_process.h"
#include "tests/testutil/fixtures.h"
#include "tests/testutil/free_port.h"
#include "tests/testutil/pq.h"
#include "tests/testutil/process.h"
#include "tests/testutil/status_testing.h"
#include "tests/testutil/temp_dir.h"
#include "tests/testutil/wait.h"

namespace pgfleet::testutil {
namespace {

[[maybe_unused]] auto* const kCluster = RegisterSharedPostgres();

bool ServesAppdb(int port) {
  absl::StatusOr<PgConn> conn = Connect(TcpConnString(port, kAppDb, kAppUser, kAppPassword));
  if (!conn.ok()) return false;
  absl::StatusOr<Rows> rows = Query(conn->get(), "select 1");
  return rows.ok();
}

class AgentDaemonTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PGF_ASSERT_OK(dir_.Create("pgfleet-daemon"));
    PGF_ASSERT_OK(AwaitNoAppdbBackends(*g_pg));
    // The detached agent is re-parented to this process once its parent exits, so it is
    // reaped here.
    ASSERT_EQ(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    PGF_ASSERT_OK_AND_ASSIGN(port_, PickFreePort());
    pidfile_ = dir_.path() + "/agent.pid";
    PGF_ASSERT_OK(
        WriteFile(dir_.path() + "/userlist.txt", UserlistLine(kAppUser, kAppPassword) + "\n"));
  }
  void TearDown() override {
    // A daemon a failed test left behind is found through its pidfile.
    if (absl::StatusOr<std::string> pid = ReadFile(pidfile_); daemon_pid_ <= 0 && pid.ok()) {
      if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(*pid), &daemon_pid_)) daemon_pid_ = -1;
    }
    if (daemon_pid_ > 0) {
      kill(daemon_pid_, SIGKILL);
      waitpid(daemon_pid_, nullptr, 0);
    }
    prctl(PR_SET_CHILD_SUBREAPER, 0);
  }

  // A pgbouncer.ini for appdb on the shared cluster; `pidfile` false leaves the key out.
  std::string WriteIni(bool pidfile) {
    const std::string ini = dir_.path() + "/agent.ini";
    EXPECT_TRUE(
        WriteFile(ini, absl::StrCat("[databases]\n", kAppDb,
                                    " = host=127.0.0.1 port=", g_pg->port(), " dbname=", kAppDb,
                                    "\n[pgbouncer]\nlisten_addr = 127.0.0.1\n"
                                    "listen_port = ",
                                    port_,
                                    "\nunix_socket_dir =\nauth_type = scram-sha-256\n"
                                    "auth_file = ",
                                    dir_.path(), "/userlist.txt\nlogfile = ", dir_.path(),
                                    "/agent.log\n", pidfile ? "pidfile = " + pidfile_ + "\n" : ""))
            .ok());
    return ini;
  }

  absl::StatusOr<RunResult> RunAgent(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {AgentBinaryUnderTest()};
    argv.insert(argv.end(), args.begin(), args.end());
    RunOptions options;
    options.timeout = absl::Seconds(30);
    return RunCommand(argv, options);
  }

  TempDir dir_;
  int port_ = 0;
  std::string pidfile_;
  pid_t daemon_pid_ = -1;
};

TEST_F(AgentDaemonTest, DaemonReturnsOnceServingAndWritesThePidfile) {
  const std::string ini = WriteIni(/*pidfile=*/true);
  PGF_ASSERT_OK_AND_ASSIGN(RunResult run, RunAgent({"-d", ini}));
  ASSERT_TRUE(run.Succeeded()) << run.Describe();

  // Serving already when -d returned: no wait needed before the first query.
  PGF_ASSERT_OK_AND_ASSIGN(std::string pid_text, ReadFile(pidfile_));
  ASSERT_TRUE(absl::SimpleAtoi(absl::StripAsciiWhitespace(pid_text), &daemon_pid_)) << pid_text;
  EXPECT_EQ(kill(daemon_pid_, 0), 0);
  EXPECT_TRUE(ServesAppdb(port_));
  // Detached: a session of its own, away from the terminal that started it.
  EXPECT_EQ(getsid(daemon_pid_), daemon_pid_);
  EXPECT_NE(getsid(daemon_pid_), getsid(0));

  // An init script's stop: SIGTERM to the pid in the pidfile; the pidfile goes with it.
  ASSERT_EQ(kill(daemon_pid_, SIGTERM), 0);
  int status = 0;
  ASSERT_EQ(waitpid(daemon_pid_, &status, 0), daemon_pid_);
  daemon_pid_ = -1;
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << DescribeWaitStatus(status);
  EXPECT_FALSE(std::ifstream(pidfile_).good()) << "pidfile left behind";
}

TEST_F(AgentDaemonTest, DaemonWithoutPidfileRefusesToStart) {
  const std::string ini = WriteIni(/*pidfile=*/false);
  PGF_ASSERT_OK_AND_ASSIGN(RunResult run, RunAgent({"--daemon", ini}));
  EXPECT_EQ(run.ExitCode(), 1) << run.Describe();
  EXPECT_TRUE(absl::StrContains(run.stderr_text, "-d/--daemon needs pidfile")) << run.Describe();
  EXPECT_FALSE(ServesAppdb(port_));
}

TEST_F(AgentDaemonTest, DaemonThatCannotStartExitsOneWithTheReason) {
  // The pidfile is written by the detached child, after the fork: its failure must still reach
  // the command's exit code and stderr.
  pidfile_ = dir_.path() + "/no-such-dir/agent.pid";
  const std::string ini = WriteIni(/*pidfile=*/true);
  PGF_ASSERT_OK_AND_ASSIGN(RunResult run, RunAgent({"-d", ini}));
  EXPECT_EQ(run.ExitCode(), 1) << run.Describe();
  EXPECT_TRUE(absl::StrContains(run.stderr_text, "pidfile")) << run.Describe();
  EXPECT_TRUE(absl::StrContains(run.stderr_text, "no-such-dir/agent.pid")) << run.Describe();
  EXPECT_FALSE(ServesAppdb(port_));
}

TEST_F(AgentDaemonTest, UserSwitchesAfterBindingWhenStartedAsRoot) {
  if (geteuid() != 0) GTEST_SKIP() << "-u switches users only when started as root";
  PGF_ASSERT_OK_AND_ASSIGN(RunResult id, RunCommand({"id", "-u", "postgres"}));
  ASSERT_TRUE(id.Succeeded()) << id.Describe();
  const std::string postgres_uid(absl::StripAsciiWhitespace(id.stdout_text));

  AgentOptions options = AppAgentOptions({});
  options.extra_args = {"-u", "postgres"};
  PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<AgentProcess> agent, AgentProcess::Start(options));
  EXPECT_TRUE(ServesAppdb(agent->port()));
  // Real, effective, saved and filesystem uid: all of them, so root cannot come back.
  EXPECT_EQ(ProcessUids(agent->pid()), std::vector<std::string>(4, postgres_uid));
  EXPECT_TRUE(absl::StrContains(agent->LogContents(), "running as user postgres"))
      << agent->Diagnostics();
  ExpectCleanStop(*agent);
}

TEST_F(AgentDaemonTest, UserGetsTheFleetStateDir) {
  if (geteuid() != 0) GTEST_SKIP() << "-u switches users only when started as root";
  // Made by root before the switch; pushed configs are written there after it.
  const passwd* postgres = getpwnam("postgres");
  ASSERT_NE(postgres, nullptr);
  const uid_t postgres_uid = postgres->pw_uid;
  const std::string state_dir = dir_.path() + "/state";
  AgentOptions options = AppAgentOptions({});
  // No controller listens there: the agent serves from its local config meanwhile.
  options.extra_args = {"-u", "postgres", "--controller=127.0.0.1:1", "--env=dev",
                        "--state-dir=" + state_dir};
  PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<AgentProcess> agent, AgentProcess::Start(options));
  EXPECT_TRUE(ServesAppdb(agent->port()));
  struct stat info {};
  ASSERT_EQ(stat(state_dir.c_str(), &info), 0);
  EXPECT_EQ(info.st_uid, postgres_uid);
  ExpectCleanStop(*agent);
}

TEST_F(AgentDaemonTest, UserNamingTheCurrentUserIsAccepted) {
  // A restarted agent (SIGUSR2) runs its own command line again, -u included, as that user.
  PGF_ASSERT_OK_AND_ASSIGN(RunResult whoami, RunCommand({"id", "-un"}));
  AgentOptions options = AppAgentOptions({});
  options.extra_args = {"-u", std::string(absl::StripAsciiWhitespace(whoami.stdout_text))};
  PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<AgentProcess> agent, AgentProcess::Start(options));
  EXPECT_TRUE(ServesAppdb(agent->port()));
  ExpectCleanStop(*agent);
}

TEST_F(AgentDaemonTest, UserErrors) {
  const std::string ini = WriteIni(/*pidfile=*/false);
  PGF_ASSERT_OK_AND_ASSIGN(RunResult unknown, RunAgent({"-u", "no-such-user-pgfleet", ini}));
  EXPECT_EQ(unknown.ExitCode(), 1) << unknown.Describe();
  EXPECT_TRUE(absl::StrContains(unknown.stderr_text, "-u no-such-user-pgfleet: no such user"))
      << unknown.Describe();

  if (geteuid() != 0) return;
  // Not root: switching to someone else is refused before anything starts.
  PGF_ASSERT_OK_AND_ASSIGN(
      RunResult not_root,
      RunCommand({"runuser", "-u", "postgres", "--", AgentBinaryUnderTest(), "-u", "root", ini}));
  EXPECT_EQ(not_root.ExitCode(), 1) << not_root.Describe();
  EXPECT_TRUE(absl::StrContains(not_root.stderr_text, "needs the agent started as root"))
      << not_root.Describe();
}

}  // namespace
}  // namespace pgfleet::testutil
