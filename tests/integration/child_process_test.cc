// ChildProcess, the base of AgentProcess, ControllerProcess and the tests' own spawned agents:
// a child is ready when its condition holds, an exit or a timeout during startup is reported
// with its diagnostics and leaves nothing running, Stop escalates to SIGKILL, and the temp dir
// goes with the object. LaunchOnFreePort retries only a lost port. Plain shell children: no
// PostgreSQL, no pgfleet binaries.

#include <signal.h>
#include <sys/wait.h>

#include <filesystem>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "tests/testutil/process.h"
#include "tests/testutil/status_testing.h"

namespace pgfleet::testutil {
namespace {

// `sh -c script` in a temp dir of its own, its stderr in <dir>/stderr.
class ShellChild : public ChildProcess {
 public:
  ShellChild() : ChildProcess("pgfleet-shell-child") {}

  absl::Status Start(const std::string& script, absl::Duration timeout,
                     const std::function<bool()>& ready) {
    if (dir().empty()) {
      if (absl::Status created = CreateDir(); !created.ok()) return created;
    }
    SpawnOptions options;
    options.working_dir = dir();
    options.stderr_path = dir() + "/stderr";
    return SpawnAndAwait({"sh", "-c", script}, options, timeout, "get ready", ready);
  }
  bool HasFile(const std::string& name) const {
    return std::filesystem::exists(dir() + "/" + name);
  }
  std::string Diagnostics() const override {
    return StateLine("shell") + ReadFileTail(dir() + "/stderr");
  }
};

TEST(ChildProcessTest, ReadyOnceTheConditionHoldsAndStoppedBySigterm) {
  std::string dir;
  {
    ShellChild child;
    PGF_ASSERT_OK(child.Start("touch ready; exec sleep 60", absl::Seconds(10),
                              [&] { return child.HasFile("ready"); }));
    dir = child.dir();
    EXPECT_TRUE(child.IsRunning());
    EXPECT_TRUE(absl::StrContains(child.Diagnostics(), "running")) << child.Diagnostics();
    PGF_ASSERT_OK_AND_ASSIGN(int status, child.Stop());
    EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM) << DescribeWaitStatus(status);
    EXPECT_FALSE(child.IsRunning());
    // Stopping again answers the same exit status.
    PGF_ASSERT_OK_AND_ASSIGN(int again, child.Stop());
    EXPECT_EQ(again, status);
    ASSERT_TRUE(std::filesystem::exists(dir));
  }
  if (!KeepTestDirs()) {
    EXPECT_FALSE(std::filesystem::exists(dir)) << "temp dir left behind";
  }
}

TEST(ChildProcessTest, AnExitDuringStartupIsReportedWithItsOutput) {
  ShellChild child;
  absl::Status started =
      child.Start("echo 'no config here' >&2; exit 3", absl::Seconds(10), [] { return false; });
  EXPECT_TRUE(absl::IsInternal(started)) << started;
  EXPECT_TRUE(absl::StrContains(started.message(), "pgfleet-shell-child exited during startup"))
      << started;
  EXPECT_TRUE(absl::StrContains(started.message(), "exit 3")) << started;
  EXPECT_TRUE(absl::StrContains(started.message(), "no config here")) << started;
  EXPECT_FALSE(child.IsRunning());
}

TEST(ChildProcessTest, AStartupTimeoutKillsAndReapsTheChild) {
  ShellChild child;
  absl::Status started =
      child.Start("exec sleep 60", absl::Milliseconds(200), [] { return false; });
  EXPECT_TRUE(absl::IsDeadlineExceeded(started)) << started;
  EXPECT_TRUE(absl::StrContains(started.message(), "did not get ready within")) << started;
  EXPECT_FALSE(child.IsRunning());
  PGF_ASSERT_OK_AND_ASSIGN(int status, child.WaitForExit(absl::ZeroDuration()));
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << DescribeWaitStatus(status);
}

TEST(ChildProcessTest, StopEscalatesToSigkillWhenSigtermIsIgnored) {
  ShellChild child;
  PGF_ASSERT_OK(child.Start("trap '' TERM; touch ready; while :; do sleep 0.05; done",
                            absl::Seconds(10), [&] { return child.HasFile("ready"); }));
  absl::StatusOr<int> stopped = child.Stop(absl::Milliseconds(300));
  EXPECT_TRUE(absl::IsDeadlineExceeded(stopped.status())) << stopped.status();
  EXPECT_FALSE(child.IsRunning());
  PGF_ASSERT_OK_AND_ASSIGN(int status, child.WaitForExit(absl::ZeroDuration()));
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << DescribeWaitStatus(status);
}

TEST(ChildProcessTest, Kill9AndSignalNeedARunningChild) {
  ShellChild child;
  EXPECT_TRUE(absl::IsFailedPrecondition(child.Stop().status()));
  EXPECT_TRUE(absl::IsFailedPrecondition(child.Kill9()));
  PGF_ASSERT_OK(child.Start("touch ready; exec sleep 60", absl::Seconds(10),
                            [&] { return child.HasFile("ready"); }));
  PGF_ASSERT_OK(child.Signal(0));
  PGF_ASSERT_OK(child.Kill9());
  EXPECT_FALSE(child.IsRunning());
  EXPECT_TRUE(absl::IsFailedPrecondition(child.Signal(SIGTERM)));
  EXPECT_TRUE(absl::IsFailedPrecondition(child.Kill9()));
}

TEST(LaunchOnFreePortTest, OnlyALostPortIsTriedAgain) {
  int calls = 0;
  PGF_EXPECT_OK(LaunchOnFreePort([&](int port) -> absl::Status {
    EXPECT_GT(port, 0);
    return ++calls == 1 ? absl::InternalError("bind: Address already in use") : absl::OkStatus();
  }));
  EXPECT_EQ(calls, 2);

  calls = 0;
  absl::Status refused = LaunchOnFreePort([&](int) -> absl::Status {
    ++calls;
    return absl::InternalError("invalid config");
  });
  EXPECT_EQ(refused.message(), "invalid config");
  EXPECT_EQ(calls, 1);

  calls = 0;
  absl::Status lost = LaunchOnFreePort([&](int) -> absl::Status {
    ++calls;
    return absl::InternalError("could not bind IPv4 address");
  });
  EXPECT_FALSE(lost.ok());
  EXPECT_EQ(calls, 3);
}

}  // namespace
}  // namespace pgfleet::testutil
