// The edges of the real pgfleet-controller and fleetctl binaries: what each does when started
// or pointed at the wrong thing. Every case here was probed by hand first and either crashed,
// silently did something else, or answered with a message that did not say what was wrong.
//
// - Two controllers on one SQLite file both led (both ticked rollouts, both wrote); the second
//   is now refused at start, and a controller killed with -9 leaves nothing locked.
// - Two controllers on one --listen both bound it (gRPC's SO_REUSEPORT) and the kernel spread
//   the calls between them; the second now fails to listen.
// - --listen=HOST: listened on 443 and --listen=HOST:99999 on some other port.
// - A missing or non-PEM --tls-* file was reported only as "cannot listen on ADDR"; a
//   --secrets-key-file that is a directory was told to chmod 600.
// - An unwritable --port-file was ignored (whoever waited for it hung); an unwritable
//   --http-port-file hung the controller's exit (the HTTP loop was stopped before it ran).
// - A binary --config file had its bytes, terminal escapes included, echoed in the error.
// - fleetctl pushed a directory as an empty config, a binary file with an empty error message,
//   and read /dev/zero until memory ran out; it now names the file and the reason (exit 2).
// - fleetctl pointed at an HTTP server said "last error: OK"; it now says that what answers
//   is not a controller's gRPC port (exit 3, in bounded time). A --controller without a
//   usable port (empty, 99999) was dialled elsewhere; it is now a usage error.
//
// No PostgreSQL is needed: no agent is involved.

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/testutil/controller_process.h"
#include "tests/testutil/fixtures.h"
#include "tests/testutil/free_port.h"
#include "tests/testutil/process.h"
#include "tests/testutil/status_testing.h"
#include "tests/testutil/temp_dir.h"

namespace pgfleet::testutil {
namespace {

constexpr char kAdminToken[] = "controller-edges-admin-token";

// The controller run to completion: a start that must fail exits by itself, well before the
// timeout (a controller that started instead runs until killed, and the test sees timed_out).
RunResult RunController(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {PGFLEET_CONTROLLER_BINARY, "--http-listen="};
  argv.insert(argv.end(), args.begin(), args.end());
  RunOptions options;
  options.timeout = absl::Seconds(30);
  absl::StatusOr<RunResult> ran = RunCommand(argv, options);
  EXPECT_TRUE(ran.ok()) << ran.status();
  return ran.ok() ? *ran : RunResult{};
}

class ControllerEdgesTest : public ::testing::Test {
 protected:
  void SetUp() override { PGF_ASSERT_OK(dir_.Create("controller-edges")); }
  std::string Path(const std::string& name) const { return dir_.path() + "/" + name; }

  TempDir dir_;
};

TEST_F(ControllerEdgesTest, ASecondControllerOnTheSameSqliteFileIsRefused) {
  const std::string db = Path("fleet.db");
  ControllerOptions options;
  options.db_path = db;
  PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ControllerProcess> first,
                           ControllerProcess::Start(options));

  RunResult second = RunController({"--listen=127.0.0.1:0", "--db=" + db});
  EXPECT_FALSE(second.timed_out) << "a second controller serves the same file";
  EXPECT_EQ(second.ExitCode(), 1) << second.Describe();
  EXPECT_TRUE(absl::StrContains(second.stderr_text, "in use by another pgfleet-controller"))
      << second.Describe();
  EXPECT_TRUE(first->IsRunning()) << first->Diagnostics();

  // `token create` writes through SQLite's own locking: it still works beside the server.
  PGF_ASSERT_OK_AND_ASSIGN(RunResult minted,
                           RunCommand({PGFLEET_CONTROLLER_BINARY, "token", "create", "--db=" + db,
                                       "--name=beside", "--role=viewer"}));
  EXPECT_TRUE(minted.Succeeded()) << minted.Describe();

  // The kernel drops the lock with the process: after a kill -9 the file is usable again.
  PGF_ASSERT_OK(first->Kill9());
  PGF_ASSERT_OK(first->Restart());
  EXPECT_TRUE(first->IsRunning()) << first->Diagnostics();
}

TEST_F(ControllerEdgesTest, ASecondControllerOnTheSamePortFailsToListen) {
  PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ControllerProcess> first,
                           ControllerProcess::Start(ControllerOptions{}));
  RunResult second = RunController(
      {absl::StrCat("--listen=127.0.0.1:", first->port()), "--db=" + Path("other.db")});
  EXPECT_FALSE(second.timed_out) << "a second controller shares the port";
  EXPECT_EQ(second.ExitCode(), 1) << second.Describe();
  EXPECT_TRUE(absl::StrContains(second.stderr_text, "cannot listen on")) << second.Describe();
}

TEST_F(ControllerEdgesTest, AListenAddressWithoutAUsablePortIsAUsageError) {
  for (const char* listen : {"127.0.0.1:", "127.0.0.1:99999", "127.0.0.1:http", "127.0.0.1"}) {
    RunResult started = RunController({absl::StrCat("--listen=", listen), "--db=" + Path("a.db")});
    EXPECT_EQ(started.ExitCode(), 2) << started.Describe();
    EXPECT_TRUE(absl::StrContains(started.stderr_text, "expected HOST:PORT")) << started.Describe();
  }
  RunResult http =
      RunController({"--listen=127.0.0.1:0", "--http-listen=127.0.0.1:", "--db=" + Path("a.db")});
  EXPECT_EQ(http.ExitCode(), 2) << http.Describe();
  EXPECT_TRUE(absl::StrContains(http.stderr_text, "--http-listen")) << http.Describe();
}

TEST_F(ControllerEdgesTest, ADatabaseThatIsNotAControllersSqliteFileIsRefusedWithTheReason) {
  ASSERT_EQ(mkdir(Path("a-directory").c_str(), 0700), 0);
  PGF_ASSERT_OK(WriteFile(Path("garbage.db"), std::string(4096, 'x')));
  const std::vector<std::pair<std::string, std::string>> cases = {
      {Path("a-directory"), "is a directory"},
      {Path("garbage.db"), "file is not a database"},
      {Path("no-such-dir/fleet.db"), "No such file or directory"},
  };
  for (const auto& [db, reason] : cases) {
    RunResult started = RunController({"--listen=127.0.0.1:0", "--db=" + db});
    EXPECT_EQ(started.ExitCode(), 1) << started.Describe();
    EXPECT_TRUE(absl::StrContains(started.stderr_text, reason)) << started.Describe();
  }
}

// A file a newer controller migrated: refused, and left as it was (no downgrade).
TEST_F(ControllerEdgesTest, ADatabaseFromANewerControllerIsRefusedAndLeftAsItWas) {
  const std::string db = Path("fleet.db");
  {
    ControllerOptions options;
    options.db_path = db;
    PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ControllerProcess> controller,
                             ControllerProcess::Start(options));
    PGF_ASSERT_OK(controller->Stop().status());
  }
  PGF_ASSERT_OK_AND_ASSIGN(
      RunResult future,
      RunCommand({"sqlite3", db, "INSERT INTO schema_migrations VALUES (9999, 'future', 0)"}));
  ASSERT_TRUE(future.Succeeded()) << future.Describe();

  RunResult started = RunController({"--listen=127.0.0.1:0", "--db=" + db});
  EXPECT_EQ(started.ExitCode(), 1) << started.Describe();
  EXPECT_TRUE(absl::StrContains(started.stderr_text, "newer than this pgfleet-controller"))
      << started.Describe();
  PGF_ASSERT_OK_AND_ASSIGN(
      RunResult versions,
      RunCommand({"sqlite3", db, "SELECT MAX(version), COUNT(*) FROM schema_migrations"}));
  ASSERT_TRUE(versions.Succeeded()) << versions.Describe();
  EXPECT_TRUE(absl::StartsWith(versions.stdout_text, "9999|")) << versions.stdout_text;
}

TEST_F(ControllerEdgesTest, TlsFilesThatCannotBeUsedAreNamed) {
  PGF_ASSERT_OK(WriteFile(Path("junk.pem"), "not a certificate\n"));
  struct Case {
    std::string cert, key, ca, expected;
  };
  const std::vector<Case> cases = {
      {Path("missing.crt"), Path("junk.pem"), Path("junk.pem"),
       absl::StrCat("--tls-cert ", Path("missing.crt"), ": No such file or directory")},
      {Path("junk.pem"), Path("junk.pem"), Path("junk.pem"),
       absl::StrCat("--tls-cert ", Path("junk.pem"), ": not a PEM file")},
      {dir_.path(), Path("junk.pem"), Path("junk.pem"),
       absl::StrCat("--tls-cert ", dir_.path(), ": Is a directory")},
  };
  for (const Case& one : cases) {
    RunResult started =
        RunController({"--listen=127.0.0.1:0", "--db=" + Path("tls.db"), "--tls-cert=" + one.cert,
                       "--tls-key=" + one.key, "--tls-ca=" + one.ca});
    EXPECT_EQ(started.ExitCode(), 1) << started.Describe();
    EXPECT_TRUE(absl::StrContains(started.stderr_text, one.expected)) << started.Describe();
  }
}

TEST_F(ControllerEdgesTest, ASecretsKeyFileThatIsADirectoryIsNamedSo) {
  ASSERT_EQ(mkdir(Path("keys").c_str(), 0700), 0);
  RunResult started = RunController(
      {"--listen=127.0.0.1:0", "--db=" + Path("keys.db"), "--secrets-key-file=" + Path("keys")});
  EXPECT_EQ(started.ExitCode(), 1) << started.Describe();
  EXPECT_TRUE(absl::StrContains(started.stderr_text, "is not a regular file but a directory"))
      << started.Describe();
}

// A binary file given as --config by mistake: refused, without writing its bytes (terminal
// escapes) to the operator's terminal.
TEST_F(ControllerEdgesTest, ABinaryConfigFileIsRefusedWithoutEchoingControlCharacters) {
  PGF_ASSERT_OK(WriteFile(Path("binary.conf"), "listen = 127.0.0.1:0\n\x1b]0;title\x07\x01 = 1\n"));
  RunResult started = RunController({"--config=" + Path("binary.conf"), "--db=" + Path("c.db")});
  EXPECT_EQ(started.ExitCode(), 2) << started.Describe();
  EXPECT_TRUE(absl::StrContains(started.stderr_text, "unknown key")) << started.Describe();
  for (char control : {'\x1b', '\x07', '\x01'}) {
    EXPECT_EQ(started.stderr_text.find(control), std::string::npos) << started.Describe();
  }
}

// Whoever waits for a port file would wait forever for one that cannot be written.
TEST_F(ControllerEdgesTest, APortFileThatCannotBeWrittenStopsTheStart) {
  for (const char* flag : {"--port-file=", "--http-port-file="}) {
    RunResult started =
        RunController({"--listen=127.0.0.1:0", "--http-listen=127.0.0.1:0",
                       "--db=" + Path("ports.db"), absl::StrCat(flag, Path("no-such-dir/port"))});
    EXPECT_FALSE(started.timed_out) << flag << " unwritable, and the controller went on";
    EXPECT_EQ(started.ExitCode(), 1) << started.Describe();
    EXPECT_TRUE(absl::StrContains(started.stderr_text,
                                  absl::StrCat(Path("no-such-dir/port"), ": No such file")))
        << started.Describe();
  }
}

// ---- fleetctl -------------------------------------------------------------------------------

class FleetctlEdgesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ControllerOptions options;
    options.bootstrap_token = kAdminToken;
    PGF_ASSERT_OK_AND_ASSIGN(controller_, ControllerProcess::Start(options));
  }

  FleetctlResult Ctl(const std::vector<std::string>& args, const std::string& controller = "") {
    FleetctlOptions options;
    options.timeout = absl::Seconds(60);
    absl::StatusOr<FleetctlResult> result = RunFleetctl(
        args, kAdminToken, controller.empty() ? controller_->address() : controller, options);
    EXPECT_TRUE(result.ok()) << result.status();
    return result.ok() ? *result : FleetctlResult{};
  }
  std::string Path(const std::string& name) const { return controller_->dir() + "/" + name; }

  std::unique_ptr<ControllerProcess> controller_;
};

TEST_F(FleetctlEdgesTest, APushOfAFileThatIsNotAConfigNamesTheFileAndTheReason) {
  const std::string binary = Path("binary.ini");
  PGF_ASSERT_OK(WriteFile(binary, "[databases]\napp = host=\xff\xfe dbname=app\n"));
  const std::string big = Path("big.ini");
  PGF_ASSERT_OK(WriteFile(big, "[databases]\n" + std::string(5 << 20, '#') + "\n"));
  const std::vector<std::pair<std::string, std::string>> cases = {
      {Path("missing.ini"), "No such file or directory"},
      {controller_->dir(), "Is a directory"},
      {binary, "not UTF-8 text (byte 0xff on line 2)"},
      {big, "larger than 4 MiB"},
      {"/dev/zero", "larger than 4 MiB"},  // Read in bounded memory, not until it runs out.
  };
  for (const auto& [file, reason] : cases) {
    FleetctlResult pushed =
        Ctl({"--output", "json", "config", "push", "--env", "edges", "-f", file});
    EXPECT_EQ(pushed.exit_code, 2) << pushed.Describe();
    EXPECT_TRUE(absl::StrContains(pushed.stderr_text, absl::StrCat(file, ": ", reason)))
        << pushed.Describe();
    EXPECT_EQ(pushed.stdout_text, "") << pushed.Describe();
  }
  // Attachments count toward the one call's size too.
  const std::string ini = Path("ok.ini");
  PGF_ASSERT_OK(WriteFile(ini,
                          "[databases]\napp = host=127.0.0.1 dbname=app\n"
                          "[pgbouncer]\nlisten_port = 6432\nauth_type = trust\n"));
  const std::string attachment = Path("three-mib");
  PGF_ASSERT_OK(WriteFile(attachment, std::string(3 << 20, 'a')));
  FleetctlResult attached =
      Ctl({"config", "push", "--env", "edges", "-f", ini, "--attach", "auth_hba_file=" + attachment,
           "--attach", "auth_file=" + attachment});
  EXPECT_EQ(attached.exit_code, 2) << attached.Describe();
  EXPECT_TRUE(absl::StrContains(attached.stderr_text, "at most 4 MiB in one call"))
      << attached.Describe();

  FleetctlResult listed = Ctl({"config", "list", "--env", "edges", "--output", "json"});
  EXPECT_FALSE(absl::StrContains(listed.stdout_text, "\"version\"")) << listed.Describe();
}

// gRPC would dial an empty port as 443 and 99999 as another port, and fleetctl then asked
// whether a controller ran at the address as typed.
TEST_F(FleetctlEdgesTest, AControllerAddressWithoutAUsablePortIsAUsageError) {
  for (const char* address :
       {"127.0.0.1:", "127.0.0.1:99999", "controller-host", "127.0.0.1:7070,127.0.0.1:x"}) {
    FleetctlResult listed = Ctl({"env", "list"}, address);
    EXPECT_EQ(listed.exit_code, 2) << listed.Describe();
    EXPECT_TRUE(absl::StrContains(listed.stderr_text, "expected HOST:PORT")) << listed.Describe();
  }
}

// A TCP server that accepts connections and closes each at once.
class ClosingServer {
 public:
  ClosingServer() {
    absl::StatusOr<LoopbackListener> listener = ListenOnLoopback();
    if (!listener.ok()) return;
    fd_ = listener->fd;
    port_ = listener->port;
    thread_ = std::thread([this] {
      while (true) {
        const int client = accept(fd_, nullptr, nullptr);
        if (client < 0 || stop_) break;
        close(client);
      }
    });
  }
  ~ClosingServer() {
    stop_ = true;
    shutdown(fd_, SHUT_RDWR);  // Wakes accept().
    if (thread_.joinable()) thread_.join();
    close(fd_);
  }
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

TEST_F(FleetctlEdgesTest, PointedAtSomethingThatIsNotAControllerItExits3) {
  // The controller's own dashboard port: an HTTP/1 server, the likeliest wrong port.
  const std::string http_port_file = Path("http.port");
  ControllerOptions options;
  options.bootstrap_token = kAdminToken;
  AddHttpListener(options, http_port_file);
  PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ControllerProcess> with_dashboard,
                           ControllerProcess::Start(options));
  PGF_ASSERT_OK_AND_ASSIGN(const int http_port, AwaitHttpPort(http_port_file));
  FleetctlResult http = Ctl({"env", "list"}, absl::StrCat("127.0.0.1:", http_port));
  EXPECT_EQ(http.exit_code, 3) << http.Describe();
  EXPECT_TRUE(absl::StrContains(http.stderr_text, "not a pgfleet-controller's gRPC port"))
      << http.Describe();

  ClosingServer closing;
  ASSERT_NE(closing.port(), 0);
  FleetctlResult closed =
      Ctl({"--output", "json", "env", "list"}, absl::StrCat("127.0.0.1:", closing.port()));
  EXPECT_EQ(closed.exit_code, 3) << closed.Describe();
  EXPECT_EQ(closed.stdout_text, "") << closed.Describe();
  EXPECT_TRUE(absl::StrContains(closed.stderr_text, absl::StrCat("127.0.0.1:", closing.port())))
      << closed.Describe();
}

}  // namespace
}  // namespace pgfleet::testutil
