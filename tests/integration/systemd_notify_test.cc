// systemd integration (issue 23): the real pgfleet-agent and pgfleet-controller report to a
// real NOTIFY_SOCKET (a datagram unix socket this test binds, as systemd does for a
// Type=notify unit): READY=1 once they serve, RELOADING=1 then READY=1 around a SIGHUP reload,
// STOPPING=1 on SIGTERM, with a STATUS= line; a zero-downtime restart's new process reports
// MAINPID=. And `systemd-analyze verify` accepts the packaged units (packaging/systemd/*.in with
// their paths pointed at this build's binaries; no systemd as PID 1 is needed for that).

#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "tests/testutil/agent_process.h"
#include "tests/testutil/controller_process.h"
#include "tests/testutil/fixtures.h"
#include "tests/testutil/process.h"
#include "tests/testutil/status_testing.h"
#include "tests/testutil/temp_dir.h"

namespace pgfleet::testutil {
namespace {

// The service manager's end of sd_notify(3): a bound SOCK_DGRAM socket, NOTIFY_SOCKET pointing
// at it for the processes started while it lives.
class NotifySocket {
 public:
  NotifySocket() {
    if (!dir_.Create("pgfleet-notify").ok()) return;
    path_ = dir_.path() + "/notify";
    fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path_.c_str());
    bound_ = fd_ >= 0 && bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
    if (bound_) setenv("NOTIFY_SOCKET", path_.c_str(), 1);
  }
  ~NotifySocket() {
    unsetenv("NOTIFY_SOCKET");
    if (fd_ >= 0) close(fd_);
  }
  bool bound() const { return bound_; }

  // The next message that contains `needle`, skipping (and keeping, for failure messages)
  // the others; an error if none comes within `timeout`.
  absl::StatusOr<std::string> Await(const std::string& needle,
                                    absl::Duration timeout = absl::Seconds(15)) {
    const absl::Time deadline = absl::Now() + timeout;
    while (true) {
      const absl::Duration left = deadline - absl::Now();
      if (left <= absl::ZeroDuration()) {
        return absl::DeadlineExceededError(absl::StrCat(
            "no notification with '", needle, "'; received: [", absl::StrJoin(seen_, "] ["), "]"));
      }
      pollfd waiting{fd_, POLLIN, 0};
      if (poll(&waiting, 1, static_cast<int>(absl::ToInt64Milliseconds(left)) + 1) <= 0) continue;
      char buffer[4096];
      const ssize_t got = recv(fd_, buffer, sizeof(buffer), 0);
      if (got <= 0) continue;
      std::string message(buffer, static_cast<size_t>(got));
      seen_.push_back(message);
      if (absl::StrContains(message, needle)) return message;
    }
  }

 private:
  TempDir dir_;
  std::string path_;
  int fd_ = -1;
  bool bound_ = false;
  std::vector<std::string> seen_;
};

// An agent that needs no PostgreSQL: nothing here opens a server connection.
AgentOptions StandaloneAgent() {
  AgentOptions options;
  options.databases_section = "appdb = host=127.0.0.1 port=1 dbname=appdb\n";
  options.userlist = {{kAppUser, kAppPassword}};
  return options;
}

TEST(SystemdNotifyTest, AgentSendsReadyReloadingReadyAndStopping) {
  NotifySocket notify;
  ASSERT_TRUE(notify.bound());
  AgentOptions options = StandaloneAgent();
  PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<AgentProcess> agent, AgentProcess::Start(options));

  PGF_ASSERT_OK_AND_ASSIGN(std::string ready, notify.Await("READY=1"));
  EXPECT_TRUE(absl::StrContains(ready, absl::StrCat("STATUS=serving on 127.0.0.1:", agent->port())))
      << ready;

  // SIGHUP (systemctl reload): RELOADING=1, then READY=1 again.
  PGF_ASSERT_OK(agent->Signal(SIGHUP));
  PGF_ASSERT_OK(notify.Await("RELOADING=1").status());
  PGF_ASSERT_OK_AND_ASSIGN(std::string reloaded, notify.Await("READY=1"));
  EXPECT_TRUE(absl::StrContains(reloaded, "STATUS=serving on")) << reloaded;

  // A refused reload ends the "reloading" state too (systemd would wait otherwise), and says so.
  options.databases_section = "appdb = host=127.0.0.1 port=not-a-port dbname=appdb\n";
  PGF_ASSERT_OK(agent->RewriteConfig(options));
  PGF_ASSERT_OK(agent->Signal(SIGHUP));
  PGF_ASSERT_OK(notify.Await("RELOADING=1").status());
  PGF_ASSERT_OK_AND_ASSIGN(std::string refused, notify.Await("READY=1"));
  EXPECT_TRUE(absl::StrContains(refused, "STATUS=RELOAD refused")) << refused;
  EXPECT_TRUE(agent->IsRunning());

  PGF_ASSERT_OK(agent->Signal(SIGTERM));
  PGF_ASSERT_OK_AND_ASSIGN(std::string stopping, notify.Await("STOPPING=1"));
  EXPECT_TRUE(absl::StrContains(stopping, "SIGTERM")) << stopping;
  PGF_ASSERT_OK_AND_ASSIGN(int status, agent->WaitForExit(absl::Seconds(15)));
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << DescribeWaitStatus(status);
  EXPECT_EQ(agent->SanitizerReport(), "");
}

TEST(SystemdNotifyTest, AgentRestartHandsTheServiceToTheNewProcess) {
  // The new process of a zero-downtime restart is a child of the old one; once the old one
  // exits it is re-parented here, so the test can reap it.
  ASSERT_EQ(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  NotifySocket notify;
  ASSERT_TRUE(notify.bound());
  PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<AgentProcess> agent,
                           AgentProcess::Start(StandaloneAgent()));
  PGF_ASSERT_OK(notify.Await("READY=1").status());

  PGF_ASSERT_OK(agent->Signal(SIGUSR2));
  PGF_ASSERT_OK_AND_ASSIGN(std::string handed_over, notify.Await("MAINPID="));
  EXPECT_TRUE(absl::StrContains(handed_over, "READY=1")) << handed_over;
  const size_t start = handed_over.find("MAINPID=") + 8;
  int new_pid = 0;
  ASSERT_TRUE(
      absl::SimpleAtoi(handed_over.substr(start, handed_over.find('\n', start) - start), &new_pid))
      << handed_over;
  EXPECT_NE(new_pid, agent->pid());

  // The old process drains (no clients) and exits 0 without claiming the service is stopping.
  PGF_ASSERT_OK_AND_ASSIGN(int old_status, agent->WaitForExit(absl::Seconds(30)));
  EXPECT_TRUE(WIFEXITED(old_status) && WEXITSTATUS(old_status) == 0)
      << DescribeWaitStatus(old_status);
  ASSERT_EQ(kill(new_pid, SIGTERM), 0);
  // The first STOPPING=1 is the new process's, for this SIGTERM: the old one said none.
  PGF_ASSERT_OK_AND_ASSIGN(std::string stopping, notify.Await("STOPPING=1"));
  EXPECT_TRUE(absl::StrContains(stopping, "SIGTERM")) << stopping;
  int new_status = 0;
  ASSERT_EQ(waitpid(new_pid, &new_status, 0), new_pid);
  EXPECT_TRUE(WIFEXITED(new_status) && WEXITSTATUS(new_status) == 0)
      << DescribeWaitStatus(new_status);
  ASSERT_EQ(prctl(PR_SET_CHILD_SUBREAPER, 0), 0);
}

TEST(SystemdNotifyTest, ControllerSendsReadyReloadingReadyAndStopping) {
  NotifySocket notify;
  ASSERT_TRUE(notify.bound());
  PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ControllerProcess> controller,
                           ControllerProcess::Start(ControllerOptions{}));
  PGF_ASSERT_OK_AND_ASSIGN(std::string ready, notify.Await("READY=1"));
  EXPECT_TRUE(absl::StrContains(ready, "STATUS=gRPC on 127.0.0.1:0 (port ")) << ready;
  EXPECT_TRUE(absl::StrContains(ready, "0 agents connected")) << ready;

  // SIGHUP used to kill the controller (the default action); now it is a reload.
  PGF_ASSERT_OK(controller->Signal(SIGHUP));
  PGF_ASSERT_OK(notify.Await("RELOADING=1").status());
  PGF_ASSERT_OK(notify.Await("READY=1").status());
  EXPECT_TRUE(controller->IsRunning()) << controller->Diagnostics();

  PGF_ASSERT_OK(controller->Signal(SIGTERM));
  PGF_ASSERT_OK(notify.Await("STOPPING=1").status());
  PGF_ASSERT_OK_AND_ASSIGN(int status, controller->WaitForExit(absl::Seconds(15)));
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << DescribeWaitStatus(status);
}

// ---- systemd-analyze verify -------------------------------------------------------------------

class UnitVerifyTest : public ::testing::Test {
 protected:
  void SetUp() override { PGF_ASSERT_OK(dir_.Create("pgfleet-units")); }

  // packaging/systemd/NAME.in as the build would configure it, with ExecStart= naming this
  // build's binaries (verify checks that the program exists).
  void WriteUnit(const std::string& name, const std::string& bindir) {
    PGF_ASSERT_OK_AND_ASSIGN(
        std::string text,
        ReadFile(absl::StrCat(PGFLEET_SOURCE_DIR, "/packaging/systemd/", name, ".in")));
    text = absl::StrReplaceAll(
        text, {{"@PGFLEET_BINDIR@", bindir}, {"@PGFLEET_SYSCONFDIR@", "/etc/pgfleet"}});
    PGF_ASSERT_OK(WriteFile(dir_.path() + "/" + name, text));
  }

  // `systemd-analyze verify` prints problems and still exits 0 for most of them: both count.
  RunResult Verify(const std::vector<std::string>& units) {
    std::vector<std::string> argv = {"systemd-analyze", "verify", "--man=no"};
    argv.insert(argv.end(), units.begin(), units.end());
    RunOptions options;
    options.working_dir = dir_.path();
    absl::StatusOr<RunResult> result = RunCommand(argv, options);
    EXPECT_TRUE(result.ok()) << result.status() << " (systemd-analyze comes with systemd)";
    return result.ok() ? *result : RunResult{};
  }

  TempDir dir_;
};

TEST_F(UnitVerifyTest, PackagedUnitsPass) {
  const std::string agent_bindir = std::filesystem::path(PGFLEET_AGENT_BINARY).parent_path();
  const std::string controller_bindir =
      std::filesystem::path(PGFLEET_CONTROLLER_BINARY).parent_path();
  WriteUnit("pgfleet-agent.service", agent_bindir);
  WriteUnit("pgfleet-agent@.service", agent_bindir);
  WriteUnit("pgfleet-controller.service", controller_bindir);
  // The template is verified as an instance, so %i is expanded.
  RunResult result =
      Verify({"pgfleet-agent.service", "pgfleet-agent@east.service", "pgfleet-controller.service"});
  EXPECT_TRUE(result.Succeeded()) << result.Describe();
  EXPECT_EQ(result.stdout_text + result.stderr_text, "") << result.Describe();
}

TEST_F(UnitVerifyTest, AMistakeInAUnitIsReported) {
  // The check above can fail: the same unit with a misspelt key and a missing binary.
  WriteUnit("pgfleet-agent.service", "/nonexistent/bin");
  PGF_ASSERT_OK_AND_ASSIGN(std::string text, ReadFile(dir_.path() + "/pgfleet-agent.service"));
  PGF_ASSERT_OK(WriteFile(dir_.path() + "/pgfleet-agent.service",
                          absl::StrReplaceAll(text, {{"ProtectHome=", "ProtectHom="}})));
  RunResult result = Verify({"pgfleet-agent.service"});
  EXPECT_TRUE(absl::StrContains(result.stderr_text, "ProtectHom")) << result.Describe();
  EXPECT_TRUE(absl::StrContains(result.stderr_text, "/nonexistent/bin/pgfleet-agent"))
      << result.Describe();
}

}  // namespace
}  // namespace pgfleet::testutil
