// Startup and RELOAD errors (issue 17, item 0). The real pgfleet-agent binary is started with
// one broken file per error class a PgBouncer user meets first: a missing file, a syntax
// error, an unknown value, a per-database or per-user key pgfleet does not know, a missing or
// broken auth_file, a missing or unreadable TLS file, an address it cannot bind, a logfile or
// pidfile it cannot write. Each must end with exit code 1 (never a signal: the half-built agent
// used to crash in its destructor) and a message naming the file, the line where there is one,
// the key and the reason. The same broken files given to a running agent (RELOAD and SIGHUP)
// must be refused with the reason logged, and the old config kept.
//
// Nothing here needs PostgreSQL: every error happens before a server connection is opened.
// Nothing waits with a bare sleep: waits poll a condition with a deadline.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "tests/testutil/agent_process.h"
#include "tests/testutil/console.h"
#include "tests/testutil/fixtures.h"
#include "tests/testutil/free_port.h"
#include "tests/testutil/pq.h"
#include "tests/testutil/process.h"
#include "tests/testutil/status_testing.h"
#include "tests/testutil/wait.h"

namespace pgfleet::testutil {
namespace {

// Text a sanitizer or a crash leaves on stderr.
bool LooksLikeACrash(const std::string& text) {
  return absl::StrContains(text, "AddressSanitizer") || absl::StrContains(text, "LeakSanitizer") ||
         absl::StrContains(text, "runtime error:") || absl::StrContains(text, "Segmentation fault");
}

// A TCP socket listening on 127.0.0.1:port, so the agent's own bind fails.
class PortSquatter {
 public:
  explicit PortSquatter(int port) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ok_ = fd_ >= 0 && bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0 &&
          listen(fd_, 1) == 0;
  }
  ~PortSquatter() {
    if (fd_ >= 0) close(fd_);
  }
  bool ok() const { return ok_; }

 private:
  int fd_ = -1;
  bool ok_ = false;
};

class AgentStartupTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PGF_ASSERT_OK(temp_dir_.Create("pgfleet-startup"));
    dir_ = temp_dir_.path();
    PGF_ASSERT_OK(WriteFile(dir_ + "/users.txt", UserlistLine(kAdminUser, kAdminPassword) + "\n"));
    PGF_ASSERT_OK_AND_ASSIGN(port_, PickFreePort());
  }
  // A valid config, one line per entry, so tests know the line number of what they change
  // (entry i is line i + 1) and of what they append.
  std::vector<std::string> BaseLines() const {
    return {
        "[databases]",                                     // 1
        "appdb = host=127.0.0.1 port=1 dbname=appdb",      // 2
        "",                                                // 3
        "[pgbouncer]",                                     // 4
        "listen_addr = 127.0.0.1",                         // 5
        absl::StrCat("listen_port = ", port_),             // 6
        "unix_socket_dir =",                               // 7
        "auth_type = md5",                                 // 8
        absl::StrCat("auth_file = ", dir_, "/users.txt"),  // 9
        "admin_users = admin",                             // 10
    };
  }

  std::string WriteIni(const std::vector<std::string>& lines,
                       const std::string& name = "agent.ini") const {
    const std::string path = absl::StrCat(dir_, "/", name);
    absl::Status written = WriteFile(path, absl::StrJoin(lines, "\n") + "\n");
    EXPECT_TRUE(written.ok()) << written;
    return path;
  }

  // Runs the agent to completion. A working config makes it serve until the timeout kills it,
  // which the checks below report as "started despite the error".
  RunResult RunAgent(const std::vector<std::string>& args) const {
    std::vector<std::string> argv = {PGFLEET_AGENT_BINARY};
    argv.insert(argv.end(), args.begin(), args.end());
    RunOptions options;
    options.timeout = absl::Seconds(10);
    absl::StatusOr<RunResult> result = RunCommand(argv, options);
    EXPECT_TRUE(result.ok()) << result.status();
    return result.ok() ? *result : RunResult{};
  }

  // Exit code 1, no signal, no sanitizer report, and every `needle` in the message on stderr.
  static void ExpectStartupError(const RunResult& result, const std::vector<std::string>& needles) {
    ASSERT_FALSE(result.timed_out) << "the agent started despite the error:\n" << result.Describe();
    EXPECT_FALSE(WIFSIGNALED(result.wait_status))
        << "the agent died of a signal instead of exiting with an error:\n"
        << result.Describe();
    EXPECT_EQ(result.ExitCode(), std::optional<int>(1)) << result.Describe();
    for (const std::string& needle : needles) {
      EXPECT_TRUE(absl::StrContains(result.stderr_text, needle))
          << "stderr does not say '" << needle << "':\n"
          << result.Describe();
    }
    EXPECT_FALSE(LooksLikeACrash(result.stderr_text)) << result.Describe();
  }

  TempDir temp_dir_;
  std::string dir_;
  int port_ = 0;
};

TEST_F(AgentStartupTest, TheBaseConfigStarts) {
  // The control case: without this, every test below could pass for the wrong reason.
  const std::string ini = WriteIni(BaseLines());
  PGF_ASSERT_OK_AND_ASSIGN(pid_t pid, Spawn({PGFLEET_AGENT_BINARY, ini}, {}));
  PGF_ASSERT_OK(PollUntil([&](std::string*) -> absl::StatusOr<bool> { return CanConnect(port_); },
                          absl::Seconds(10), "the agent to listen"));
  kill(pid, SIGTERM);
  PGF_ASSERT_OK_AND_ASSIGN(int status, WaitPid(pid, absl::Seconds(10)));
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << DescribeWaitStatus(status);
}

TEST_F(AgentStartupTest, MissingConfigFile) {
  const std::string missing = dir_ + "/missing.ini";
  ExpectStartupError(RunAgent({missing}),
                     {"pgfleet-agent: ", missing, "No such file or directory"});
}

TEST_F(AgentStartupTest, SyntaxError) {
  std::vector<std::string> lines = BaseLines();
  lines[3] = "[pgbouncer";
  const std::string ini = WriteIni(lines);
  ExpectStartupError(RunAgent({ini}),
                     {"pgfleet-agent: ", ini + ":4:", "syntax error", "missing ']'"});
}

TEST_F(AgentStartupTest, UnknownPoolMode) {
  std::vector<std::string> lines = BaseLines();
  lines.push_back("pool_mode = bogus");  // Line 11.
  const std::string ini = WriteIni(lines);
  ExpectStartupError(RunAgent({ini}),
                     {"pgfleet-agent: ", ini + ":11:", "pool_mode", "'bogus'", "session"});
}

TEST_F(AgentStartupTest, UnknownPerDatabaseKey) {
  std::vector<std::string> lines = BaseLines();
  // query_wait_timeout is a per-database key since PgBouncer 1.23; server_check_delay is not.
  lines[1] += " server_check_delay=30";
  const std::string ini = WriteIni(lines);
  ExpectStartupError(RunAgent({ini}),
                     {"pgfleet-agent: ", ini + ":2:", "appdb", "server_check_delay"});
}

TEST_F(AgentStartupTest, UnknownPerUserKey) {
  std::vector<std::string> lines = BaseLines();
  lines.push_back("[users]");
  lines.push_back("app = default_pool_size=2");  // Line 12. ([users] pool_size is valid: 1.23.)
  const std::string ini = WriteIni(lines);
  ExpectStartupError(RunAgent({ini}),
                     {"pgfleet-agent: ", ini + ":12:", "'app'", "default_pool_size"});
}

TEST_F(AgentStartupTest, MissingAuthFile) {
  std::vector<std::string> lines = BaseLines();
  lines[8] = absl::StrCat("auth_file = ", dir_, "/missing-users.txt");
  const std::string ini = WriteIni(lines);
  ExpectStartupError(RunAgent({ini}), {"pgfleet-agent: ", ini + ":9:", "auth_file",
                                       "missing-users.txt", "No such file or directory"});
}

TEST_F(AgentStartupTest, BrokenAuthFileLine) {
  PGF_ASSERT_OK(WriteFile(dir_ + "/broken-users.txt", "\"app\"\n"));
  std::vector<std::string> lines = BaseLines();
  lines[8] = absl::StrCat("auth_file = ", dir_, "/broken-users.txt");
  const std::string ini = WriteIni(lines);
  ExpectStartupError(RunAgent({ini}),
                     {"pgfleet-agent: ", ini + ":9:", "auth_file", dir_ + "/broken-users.txt:1:"});
}

TEST_F(AgentStartupTest, AuthTypeWithoutAuthFile) {
  std::vector<std::string> lines = BaseLines();
  lines.erase(lines.begin() + 8);  // auth_file; auth_type stays on line 8.
  const std::string ini = WriteIni(lines);
  ExpectStartupError(RunAgent({ini}), {"pgfleet-agent: ", ini + ":8:", "auth_type", "auth_file"});
}

TEST_F(AgentStartupTest, MissingTlsCertificate) {
  std::vector<std::string> lines = BaseLines();
  lines.push_back("client_tls_sslmode = require");                            // 11
  lines.push_back(absl::StrCat("client_tls_cert_file = ", dir_, "/no.crt"));  // 12
  lines.push_back(absl::StrCat("client_tls_key_file = ", dir_, "/no.key"));   // 13
  const std::string ini = WriteIni(lines);
  ExpectStartupError(RunAgent({ini}),
                     {"pgfleet-agent: ", ini + ":12:", "client_tls_cert_file", dir_ + "/no.crt"});
}

TEST_F(AgentStartupTest, UnreadableTlsKey) {
  // A real certificate, so the key is what fails; a directory stands for an unreadable file
  // (the tests run as root, which reads files whatever their mode).
  PGF_ASSERT_OK_AND_ASSIGN(
      RunResult certs, RunCommand({std::string(PGFLEET_SOURCE_DIR) + "/scripts/make-test-certs.sh",
                                   dir_ + "/certs"}));
  ASSERT_TRUE(certs.Succeeded()) << certs.Describe();
  ASSERT_EQ(mkdir((dir_ + "/key-dir").c_str(), 0700), 0);
  std::vector<std::string> lines = BaseLines();
  lines.push_back("server_tls_sslmode = prefer");                                           // 11
  lines.push_back(absl::StrCat("server_tls_cert_file = ", dir_, "/certs/controller.pem"));  // 12
  lines.push_back(absl::StrCat("server_tls_key_file = ", dir_, "/key-dir"));                // 13
  const std::string ini = WriteIni(lines);
  ExpectStartupError(RunAgent({ini}),
                     {"pgfleet-agent: ", ini + ":13:", "server_tls_key_file", dir_ + "/key-dir"});
}

TEST_F(AgentStartupTest, PortAlreadyInUse) {
  PortSquatter squatter(port_);
  ASSERT_TRUE(squatter.ok());
  const std::string ini = WriteIni(BaseLines());
  ExpectStartupError(RunAgent({ini}),
                     {"pgfleet-agent: ", ini + ":5:", "listen_addr",
                      absl::StrCat("127.0.0.1:", port_), "Address already in use"});
}

TEST_F(AgentStartupTest, AddressNotOnThisHost) {
  std::vector<std::string> lines = BaseLines();
  lines[4] = "listen_addr = 192.0.2.1";  // TEST-NET-1: on no host.
  const std::string ini = WriteIni(lines);
  ExpectStartupError(RunAgent({ini}), {"pgfleet-agent: ", ini + ":5:", "listen_addr", "192.0.2.1",
                                       "Cannot assign requested address"});
}

TEST_F(AgentStartupTest, UnwritableLogfile) {
  std::vector<std::string> lines = BaseLines();
  lines.push_back(absl::StrCat("logfile = ", dir_, "/no-such-dir/agent.log"));  // 11
  const std::string ini = WriteIni(lines);
  ExpectStartupError(RunAgent({ini}), {"pgfleet-agent: ", ini + ":11:", "logfile",
                                       "no-such-dir/agent.log", "No such file or directory"});
}

TEST_F(AgentStartupTest, UnwritablePidfile) {
  std::vector<std::string> lines = BaseLines();
  lines.push_back(absl::StrCat("pidfile = ", dir_, "/no-such-dir/agent.pid"));  // 11
  const std::string ini = WriteIni(lines);
  ExpectStartupError(RunAgent({ini}), {"pgfleet-agent: ", ini + ":11:", "pidfile",
                                       "no-such-dir/agent.pid", "No such file or directory"});
}

TEST_F(AgentStartupTest, ASecondInstanceThatCannotListenLeavesTheFirstOnesPidfile) {
  // The first agent runs with a pidfile; a second one with the same file and port fails to
  // listen after a successful start-up. Its exit must neither crash nor remove the pidfile
  // of the agent that is running.
  const std::string pidfile = dir_ + "/agent.pid";
  std::vector<std::string> lines = BaseLines();
  lines.push_back("pidfile = " + pidfile);
  const std::string ini = WriteIni(lines);
  PGF_ASSERT_OK_AND_ASSIGN(pid_t first, Spawn({PGFLEET_AGENT_BINARY, ini}, {}));
  PGF_ASSERT_OK(PollUntil(
      [&](std::string*) -> absl::StatusOr<bool> {
        absl::StatusOr<std::string> text = ReadFile(pidfile);
        return CanConnect(port_) && text.ok() &&
               absl::StripAsciiWhitespace(*text) == std::to_string(first);
      },
      absl::Seconds(10), "the first agent to listen and write its pidfile"));

  ExpectStartupError(RunAgent({ini}), {"listen_addr", "Address already in use"});
  absl::StatusOr<std::string> still = ReadFile(pidfile);
  EXPECT_TRUE(still.ok()) << "the failed second agent removed the running agent's pidfile";
  if (still.ok()) {
    EXPECT_EQ(absl::StripAsciiWhitespace(*still), std::to_string(first));
  }

  kill(first, SIGTERM);
  PGF_ASSERT_OK_AND_ASSIGN(int status, WaitPid(first, absl::Seconds(10)));
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << DescribeWaitStatus(status);
  EXPECT_FALSE(std::filesystem::exists(pidfile)) << "the first agent keeps its pidfile on exit";
}

// --- RELOAD and SIGHUP with the same broken files ------------------------------------------

class AgentReloadErrorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    good_.databases_section = "appdb = host=127.0.0.1 port=1 dbname=appdb\n";
    good_.pgbouncer_settings = {
        {"auth_type", "md5"}, {"admin_users", kAdminUser}, {"default_pool_size", "7"}};
    good_.userlist = {{kAdminUser, kAdminPassword}};
    PGF_ASSERT_OK_AND_ASSIGN(agent_, AgentProcess::Start(good_));
  }
  void TearDown() override {
    if (agent_ == nullptr) return;
    absl::StatusOr<int> exit_status = agent_->Stop(absl::Seconds(10));
    EXPECT_TRUE(exit_status.ok()) << exit_status.status();
    if (exit_status.ok()) {
      EXPECT_TRUE(WIFEXITED(*exit_status) && WEXITSTATUS(*exit_status) == 0)
          << DescribeWaitStatus(*exit_status);
    }
    EXPECT_EQ(agent_->SanitizerReport(), "");
    if (HasFailure()) std::cerr << agent_->Diagnostics();
  }

  absl::StatusOr<PgConn> ConnectConsole() const {
    return Connect(agent_->ConnString("pgbouncer", kAdminUser, kAdminPassword));
  }

  static absl::StatusOr<std::string> ConfigValue(PGconn* console, const std::string& key) {
    absl::StatusOr<Table> table = Show(console, "SHOW CONFIG");
    if (!table.ok()) return table.status();
    Rows rows = table->Where({{"key", key}});
    if (rows.size() != 1) return absl::NotFoundError(table->Dump());
    return table->At(rows[0], "value");
  }

  // `broken` with default_pool_size = 9 too, so a half-applied file would show.
  AgentOptions Broken(const std::function<void(AgentOptions&)>& change) const {
    AgentOptions broken = good_;
    broken.pgbouncer_settings["default_pool_size"] = "9";
    change(broken);
    return broken;
  }

  struct Case {
    std::string name;
    AgentOptions options;
    std::vector<std::string> needles;
  };

  std::vector<Case> Cases() const {
    const std::string dir = agent_->dir();
    return {
        {"syntax error",
         Broken([](AgentOptions& o) { o.extra_ini = "[pgbouncer\n"; }),
         {"syntax error"}},
        {"unknown value",
         Broken([](AgentOptions& o) { o.pgbouncer_settings["pool_mode"] = "bogus"; }),
         {"pool_mode", "bogus"}},
        {"per-database key",
         Broken([](AgentOptions& o) {
           o.databases_section = "appdb = host=127.0.0.1 port=1 server_check_delay=30\n";
         }),
         {"appdb", "server_check_delay"}},
        {"per-user key",
         Broken([](AgentOptions& o) { o.users_section = "app = default_pool_size=2\n"; }),
         {"'app'", "default_pool_size"}},
        {"missing auth_file",
         Broken([&](AgentOptions& o) {
           o.pgbouncer_settings["auth_file"] = dir + "/missing-users.txt";
         }),
         {"auth_file", "missing-users.txt", "No such file or directory"}},
        {"missing TLS certificate",
         Broken([&](AgentOptions& o) {
           o.pgbouncer_settings["client_tls_sslmode"] = "require";
           o.pgbouncer_settings["client_tls_cert_file"] = dir + "/no.crt";
           o.pgbouncer_settings["client_tls_key_file"] = dir + "/no.key";
         }),
         {"client_tls_cert_file", "no.crt"}},
        {"unwritable logfile",
         Broken([&](AgentOptions& o) {
           o.pgbouncer_settings["logfile"] = dir + "/no-such-dir/agent.log";
         }),
         {"logfile", "no-such-dir/agent.log", "No such file or directory"}},
    };
  }

  AgentOptions good_;
  std::unique_ptr<AgentProcess> agent_;
};

TEST_F(AgentReloadErrorTest, ReloadRefusesEachBrokenFileAndKeepsTheOldConfig) {
  PGF_ASSERT_OK_AND_ASSIGN(PgConn console, ConnectConsole());
  for (const Case& c : Cases()) {
    SCOPED_TRACE(c.name);
    PGF_ASSERT_OK(agent_->RewriteConfig(c.options));
    absl::StatusOr<std::string> reload = Command(console.get(), "RELOAD");
    ASSERT_FALSE(reload.ok()) << "RELOAD accepted the broken file";
    for (const std::string& needle : c.needles) {
      EXPECT_TRUE(absl::StrContains(reload.status().message(), needle))
          << "the RELOAD error does not say '" << needle << "': " << reload.status();
      EXPECT_TRUE(absl::StrContains(agent_->LogContents(), needle))
          << "the log does not say '" << needle << "'";
    }
    PGF_ASSERT_OK_AND_ASSIGN(std::string pool_size,
                             ConfigValue(console.get(), "default_pool_size"));
    EXPECT_EQ(pool_size, "7");
    PGF_ASSERT_OK_AND_ASSIGN(std::string logfile, ConfigValue(console.get(), "logfile"));
    EXPECT_EQ(logfile, agent_->log_path());
    ASSERT_TRUE(agent_->IsRunning()) << agent_->Diagnostics();
  }
  // The config file itself gone.
  PGF_ASSERT_OK(agent_->RewriteConfig(good_));
  const std::string moved = agent_->ini_path() + ".moved";
  ASSERT_EQ(rename(agent_->ini_path().c_str(), moved.c_str()), 0);
  absl::StatusOr<std::string> reload = Command(console.get(), "RELOAD");
  ASSERT_FALSE(reload.ok());
  EXPECT_TRUE(absl::StrContains(reload.status().message(), agent_->ini_path()));
  EXPECT_TRUE(absl::StrContains(reload.status().message(), "No such file or directory"));
  ASSERT_EQ(rename(moved.c_str(), agent_->ini_path().c_str()), 0);

  // And a good file is still taken afterwards.
  AgentOptions fixed = good_;
  fixed.pgbouncer_settings["default_pool_size"] = "5";
  PGF_ASSERT_OK(agent_->RewriteConfig(fixed));
  PGF_ASSERT_OK_AND_ASSIGN(std::string tag, Command(console.get(), "RELOAD"));
  EXPECT_EQ(tag, "RELOAD");
  PGF_ASSERT_OK_AND_ASSIGN(std::string pool_size, ConfigValue(console.get(), "default_pool_size"));
  EXPECT_EQ(pool_size, "5");
}

TEST_F(AgentReloadErrorTest, SighupRefusesEachBrokenFileAndLogsWhy) {
  PGF_ASSERT_OK_AND_ASSIGN(PgConn console, ConnectConsole());
  int refusals = 0;
  for (const Case& c : Cases()) {
    SCOPED_TRACE(c.name);
    PGF_ASSERT_OK(agent_->RewriteConfig(c.options));
    PGF_ASSERT_OK(agent_->Signal(SIGHUP));
    ++refusals;
    // Each refusal is one log line; wait for this one, then check it names the reason.
    PGF_ASSERT_OK(PollUntil(
        [&](std::string* note) -> absl::StatusOr<bool> {
          const std::string log = agent_->LogContents();
          int seen = 0;
          for (size_t at = log.find("RELOAD (SIGHUP) refused"); at != std::string::npos;
               at = log.find("RELOAD (SIGHUP) refused", at + 1)) {
            ++seen;
          }
          *note = absl::StrCat(seen, " refusals logged");
          return seen >= refusals;
        },
        absl::Seconds(10), "the agent to log the refused SIGHUP reload"));
    const std::string log = agent_->LogContents();
    const std::string last_line = log.substr(log.rfind("RELOAD (SIGHUP) refused"));
    for (const std::string& needle : c.needles) {
      EXPECT_TRUE(absl::StrContains(last_line.substr(0, last_line.find('\n')), needle))
          << "the log line does not say '" << needle << "': " << last_line;
    }
    PGF_ASSERT_OK_AND_ASSIGN(std::string pool_size,
                             ConfigValue(console.get(), "default_pool_size"));
    EXPECT_EQ(pool_size, "7");
    ASSERT_TRUE(agent_->IsRunning()) << agent_->Diagnostics();
  }
}

}  // namespace
}  // namespace pgfleet::testutil
