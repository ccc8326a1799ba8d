// Small agent edges (issue 17): a pidfile naming a running process is not taken over, and the
// admin console's SET logfile stays inside the directories the agent's command line allows
// (--allow-path), as a pushed config's files do. The real pgfleet-agent binary; nothing here
// needs PostgreSQL (the database points at a closed port).

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "tests/testutil/agent_process.h"
#include "tests/testutil/console.h"
#include "tests/testutil/free_port.h"
#include "tests/testutil/pq.h"
#include "tests/testutil/process.h"
#include "tests/testutil/status_testing.h"
#include "tests/testutil/wait.h"

namespace pgfleet::testutil {
namespace {

constexpr char kAdminUser[] = "admin";
constexpr char kAdminPassword[] = "admin-Edges-5";

// A minimal working config in `dir` listening on `port`, with `extra` lines in [pgbouncer].
std::string WriteAgentIni(const std::string& dir, int port, const std::vector<std::string>& extra) {
  std::vector<std::string> lines = {
      "[databases]",
      "appdb = host=127.0.0.1 port=1 dbname=appdb",
      "[pgbouncer]",
      "listen_addr = 127.0.0.1",
      absl::StrCat("listen_port = ", port),
      "unix_socket_dir =",
      "auth_type = md5",
      absl::StrCat("auth_file = ", dir, "/users.txt"),
      "admin_users = admin",
  };
  lines.insert(lines.end(), extra.begin(), extra.end());
  const std::string ini = dir + "/agent.ini";
  EXPECT_TRUE(WriteFile(dir + "/users.txt", UserlistLine(kAdminUser, kAdminPassword) + "\n").ok());
  EXPECT_TRUE(WriteFile(ini, absl::StrJoin(lines, "\n") + "\n").ok());
  return ini;
}

std::string PidfileText(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFile(path);
  return text.ok() ? std::string(absl::StripAsciiWhitespace(*text)) : "<unreadable>";
}

// --- pidfile --------------------------------------------------------------------------------

// PgBouncer refuses to start when its pidfile names a live process (kill(pid, 0)): two
// poolers sharing a pidfile would otherwise each believe the file is theirs, and the first to
// stop removes the other's. A second agent with its own port but the first one's pidfile must
// fail with a message that says why, and leave the running agent's pidfile alone.
TEST(AgentPidfileTest, APidfileNamingARunningAgentIsNotTakenOver) {
  TempDir first_dir, second_dir;
  PGF_ASSERT_OK(first_dir.Create("pgfleet-edges"));
  PGF_ASSERT_OK(second_dir.Create("pgfleet-edges"));
  const std::string pidfile = first_dir.path() + "/agent.pid";
  PGF_ASSERT_OK_AND_ASSIGN(int first_port, PickFreePort());
  const std::string first_ini =
      WriteAgentIni(first_dir.path(), first_port, {"pidfile = " + pidfile});
  PGF_ASSERT_OK_AND_ASSIGN(pid_t first, Spawn({AgentBinaryUnderTest(), first_ini}, {}));
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        *note = PidfileText(pidfile);
        return CanConnect(first_port) && *note == std::to_string(first);
      },
      absl::Seconds(10), "the first agent to listen and write its pidfile"));

  PGF_ASSERT_OK_AND_ASSIGN(int second_port, PickFreePort());
  const std::string second_ini =
      WriteAgentIni(second_dir.path(), second_port,
                    {"pidfile = " + pidfile, "logfile = " + second_dir.path() + "/agent.log"});
  RunOptions run;
  run.timeout = absl::Seconds(10);
  PGF_ASSERT_OK_AND_ASSIGN(RunResult second, RunCommand({AgentBinaryUnderTest(), second_ini}, run));
  EXPECT_FALSE(second.timed_out) << "a second agent started on a running agent's pidfile:\n"
                                 << second.Describe();
  EXPECT_EQ(second.ExitCode(), std::optional<int>(1)) << second.Describe();
  for (const std::string& needle :
       {std::string("pidfile"), pidfile, std::to_string(first), std::string("running")}) {
    EXPECT_TRUE(absl::StrContains(second.stderr_text, needle))
        << "stderr does not say '" << needle << "':\n"
        << second.Describe();
  }
  EXPECT_EQ(PidfileText(pidfile), std::to_string(first))
      << "the second agent overwrote the running agent's pidfile";

  kill(first, SIGTERM);
  PGF_ASSERT_OK_AND_ASSIGN(int status, WaitPid(first, absl::Seconds(10)));
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << DescribeWaitStatus(status);
  EXPECT_FALSE(std::filesystem::exists(pidfile)) << "the first agent keeps its pidfile on exit";
}

// A pidfile left by an agent that died (kill -9, a crash) names a process that is gone: it is
// stale and the new agent takes it over, as PgBouncer does.
TEST(AgentPidfileTest, AStalePidfileIsTakenOver) {
  TempDir dir;
  PGF_ASSERT_OK(dir.Create("pgfleet-edges"));
  // A pid that surely names no process: a child that has exited and been reaped.
  PGF_ASSERT_OK_AND_ASSIGN(pid_t gone, Spawn({"/bin/true"}, {}));
  PGF_ASSERT_OK(WaitPid(gone, absl::Seconds(10)).status());
  const std::string pidfile = dir.path() + "/agent.pid";
  PGF_ASSERT_OK(WriteFile(pidfile, absl::StrCat(gone, "\n")));
  PGF_ASSERT_OK_AND_ASSIGN(int port, PickFreePort());
  const std::string ini = WriteAgentIni(dir.path(), port, {"pidfile = " + pidfile});
  PGF_ASSERT_OK_AND_ASSIGN(pid_t agent, Spawn({AgentBinaryUnderTest(), ini}, {}));
  absl::Status written = PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        *note = PidfileText(pidfile);
        return CanConnect(port) && *note == std::to_string(agent);
      },
      absl::Seconds(10), "the agent to take the stale pidfile over");
  EXPECT_TRUE(written.ok()) << written;
  kill(agent, SIGTERM);
  PGF_ASSERT_OK_AND_ASSIGN(int status, WaitPid(agent, absl::Seconds(10)));
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << DescribeWaitStatus(status);
}

// --- SET logfile ------------------------------------------------------------------------------

// The console's SET logfile makes the agent append to whatever file it names, as root if the
// agent runs as root: it is confined the way a pushed config's logfile is, to the config's
// directory and the --allow-path directories, and never to a file the agent depends on.
TEST(AgentSetLogfileTest, SetLogfileStaysInsideTheAllowedPaths) {
  TempDir dir, allowed, outside;
  for (TempDir* each : {&dir, &allowed, &outside}) PGF_ASSERT_OK(each->Create("pgfleet-edges"));
  PGF_ASSERT_OK_AND_ASSIGN(int port, PickFreePort());
  const std::string ini =
      WriteAgentIni(dir.path(), port, {"logfile = " + dir.path() + "/agent.log"});
  PGF_ASSERT_OK_AND_ASSIGN(
      pid_t agent, Spawn({AgentBinaryUnderTest(), "--allow-path=" + allowed.path(), ini}, {}));
  absl::Cleanup stop = [agent] {
    kill(agent, SIGTERM);
    (void)WaitPid(agent, absl::Seconds(10));
  };
  PGF_ASSERT_OK(PollUntil([&](std::string*) -> absl::StatusOr<bool> { return CanConnect(port); },
                          absl::Seconds(10), "the agent to listen"));
  PGF_ASSERT_OK_AND_ASSIGN(
      PgConn console,
      Connect(absl::StrCat("host=127.0.0.1 port=", port, " dbname=pgbouncer user=", kAdminUser,
                           " password=", kAdminPassword, " connect_timeout=10")));

  const std::string escaped = outside.path() + "/escaped.log";
  for (const std::string& target :
       {escaped,
        allowed.path() + "/../" + std::filesystem::path(outside.path()).filename().string() +
            "/escaped.log",
        ini, std::string("/etc/pgfleet-edges-escaped.log")}) {
    SCOPED_TRACE(target);
    absl::StatusOr<std::string> set = Command(console.get(), "SET logfile = '" + target + "'");
    ASSERT_FALSE(set.ok()) << "SET logfile accepted " << target;
    EXPECT_TRUE(absl::StrContains(set.status().message(), "logfile")) << set.status();
    PGF_ASSERT_OK_AND_ASSIGN(Table config, Show(console.get(), "SHOW CONFIG"));
    Rows row = config.Where({{"key", "logfile"}});
    ASSERT_EQ(row.size(), 1u) << config.Dump();
    EXPECT_EQ(config.At(row[0], "value"), dir.path() + "/agent.log");
  }
  EXPECT_FALSE(std::filesystem::exists(escaped));
  EXPECT_FALSE(std::filesystem::exists("/etc/pgfleet-edges-escaped.log"));
  absl::StatusOr<std::string> outside_message =
      Command(console.get(), "SET logfile = '" + escaped + "'");
  ASSERT_FALSE(outside_message.ok());
  EXPECT_TRUE(absl::StrContains(outside_message.status().message(), "--allow-path"))
      << outside_message.status();

  // Inside an allowed directory it works, and the log goes there from then on.
  const std::string moved = allowed.path() + "/moved.log";
  PGF_ASSERT_OK_AND_ASSIGN(std::string tag,
                           Command(console.get(), "SET logfile = '" + moved + "'"));
  EXPECT_EQ(tag, "SET");
  PGF_ASSERT_OK(Command(console.get(), "RECONNECT").status());
  PGF_EXPECT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        absl::StatusOr<std::string> text = ReadFile(moved);
        *note = text.ok() ? *text : std::string(text.status().message());
        return text.ok() && absl::StrContains(*text, "RECONNECT");
      },
      absl::Seconds(10), "the agent to log to the new logfile"));
}

}  // namespace
}  // namespace pgfleet::testutil
