// The agent's fleet state and what a pushed config may touch (issue 17, items 15 and 17), with
// real processes: a pgfleet-controller on its own SQLite file, pgfleet-agents started with
// --controller from ini files the test writes, and fleetctl to push and apply configs.
//
// - Two agents whose ini files sit in one directory (no --state-dir) each keep their own
//   applied config and restart onto it; a second agent on a state dir in use refuses to start.
// - A pushed config naming a logfile, pidfile, auth_file or TLS file outside the directories
//   the agent's command line allows is refused (NACK naming the key), and nothing is created;
//   one inside is applied.
//
// No PostgreSQL is needed: nothing here opens a server connection. Nothing waits with a bare
// sleep: waits poll a condition with a deadline.

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "pgfleet/v1/fleet.pb.h"
#include "tests/testutil/agent_process.h"
#include "tests/testutil/console.h"
#include "tests/testutil/controller_process.h"
#include "tests/testutil/fixtures.h"
#include "tests/testutil/free_port.h"
#include "tests/testutil/pq.h"
#include "tests/testutil/process.h"
#include "tests/testutil/status_testing.h"
#include "tests/testutil/wait.h"

namespace pgfleet::testutil {
namespace {

// A pgfleet-agent started from a command line the test controls (AgentProcess puts every
// agent's ini in a directory of its own; these tests need several in one). Stopping and reaping
// come from ChildProcess.
class SpawnedAgent : public ChildProcess {
 public:
  SpawnedAgent(std::vector<std::string> args, int port, std::string stderr_path)
      : ChildProcess("pgfleet-agent"),
        args_(std::move(args)),
        port_(port),
        stderr_path_(std::move(stderr_path)) {}

  // Spawns the agent (again, after a Stop) and waits until it listens.
  absl::Status Start() {
    std::vector<std::string> argv = {PGFLEET_AGENT_BINARY};
    argv.insert(argv.end(), args_.begin(), args_.end());
    SpawnOptions options;
    options.stderr_path = stderr_path_;
    return SpawnAndAwait(argv, options, absl::Seconds(15), absl::StrCat("listen on ", port_),
                         [this] { return CanConnect(port_); });
  }

  int port() const { return port_; }
  std::string Stderr() const { return ReadFileTail(stderr_path_, 1 << 20); }
  std::string Diagnostics() const override {
    return absl::StrCat(StateLine("agent"), "--- stderr (tail) ---\n", ReadFileTail(stderr_path_),
                        "\n");
  }

 private:
  std::vector<std::string> args_;
  int port_;
  std::string stderr_path_;
};

class FleetAgentStateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PGF_ASSERT_OK(temp_dir_.Create("pgfleet-fleetstate"));
    dir_ = temp_dir_.path();
    config_dir_ = dir_ + "/etc";
    ASSERT_EQ(mkdir(config_dir_.c_str(), 0700), 0);
    users_path_ = config_dir_ + "/users.txt";
    PGF_ASSERT_OK(WriteFile(users_path_, UserlistLine(kAdminUser, kAdminPassword) + "\n"));
    std::random_device random;
    token_ = absl::StrCat("pgf-state-", random(), random());
    ControllerOptions options;
    options.bootstrap_token = token_;
    PGF_ASSERT_OK_AND_ASSIGN(controller_, ControllerProcess::Start(options));
  }

  void TearDown() override {
    for (auto& [id, agent] : agents_) {
      if (agent->pid() <= 0) continue;
      absl::StatusOr<int> status = agent->Stop();
      EXPECT_TRUE(status.ok() && WIFEXITED(*status) && WEXITSTATUS(*status) == 0)
          << id << " did not exit cleanly: "
          << (status.ok() ? DescribeWaitStatus(*status) : status.status().ToString());
    }
    for (auto& [id, agent] : agents_) {
      const std::string text = agent->Stderr();
      EXPECT_FALSE(absl::StrContains(text, "AddressSanitizer") ||
                   absl::StrContains(text, "runtime error:"))
          << id;
      if (HasFailure())
        std::cerr << "=== agent " << id << "\n"
                  << text.substr(text.size() > 6000 ? text.size() - 6000 : 0);
    }
    if (HasFailure() && controller_ != nullptr) std::cerr << controller_->Diagnostics();
    agents_.clear();
    if (controller_ != nullptr) (void)controller_->Stop();
    controller_.reset();
  }

  // A complete pgbouncer.ini; `pool_size` tells configs apart in SHOW CONFIG.
  std::string Ini(int port, int pool_size,
                  const std::map<std::string, std::string>& overrides = {}) const {
    std::map<std::string, std::string> settings = {
        {"listen_addr", "127.0.0.1"},
        {"listen_port", absl::StrCat(port)},
        {"unix_socket_dir", ""},
        {"auth_type", "md5"},
        {"auth_file", users_path_},
        {"admin_users", kAdminUser},
        {"default_pool_size", absl::StrCat(pool_size)},
    };
    for (const auto& [key, value] : overrides) settings[key] = value;
    std::string ini = "[databases]\nappdb = host=127.0.0.1 port=1 dbname=appdb\n\n[pgbouncer]\n";
    for (const auto& [key, value] : settings) absl::StrAppend(&ini, key, " = ", value, "\n");
    return ini;
  }

  // Writes <config_dir>/<id>.ini and starts an agent on it in `env`.
  SpawnedAgent* StartAgent(const std::string& id, const std::string& env,
                           const std::vector<std::string>& more_args = {}) {
    absl::StatusOr<int> port = PickFreePort();
    EXPECT_TRUE(port.ok()) << port.status();
    if (!port.ok()) return nullptr;
    const std::string ini = absl::StrCat(config_dir_, "/", id, ".ini");
    EXPECT_TRUE(WriteFile(ini, Ini(*port, 20)).ok());
    std::vector<std::string> args = {absl::StrCat("--controller=", controller_->address()),
                                     absl::StrCat("--env=", env), absl::StrCat("--agent-id=", id)};
    args.insert(args.end(), more_args.begin(), more_args.end());
    args.push_back(ini);
    auto agent =
        std::make_unique<SpawnedAgent>(args, *port, absl::StrCat(dir_, "/", id, ".stderr"));
    absl::Status started = agent->Start();
    EXPECT_TRUE(started.ok()) << id << ": " << started;
    SpawnedAgent* raw = agent.get();
    agents_[id] = std::move(agent);
    return started.ok() ? raw : nullptr;
  }

  FleetctlResult Ctl(const std::vector<std::string>& args) const {
    absl::StatusOr<FleetctlResult> result = RunFleetctl(args, token_, controller_->address());
    if (!result.ok()) {
      FleetctlResult failed;
      failed.exit_code = -2;
      failed.stderr_text = result.status().ToString();
      return failed;
    }
    return *result;
  }

  absl::Status WaitConnected(const std::vector<std::string>& ids) const {
    return PollUntil(
        [&](std::string* note) -> absl::StatusOr<bool> {
          FleetctlResult result = Ctl({"agents", "list", "--output", "json"});
          if (result.exit_code != 0) {
            *note = result.Describe();
            return false;
          }
          pgfleet::v1::ListAgentsResponse list;
          google::protobuf::util::JsonParseOptions options;
          options.ignore_unknown_fields = true;
          if (!google::protobuf::util::JsonStringToMessage(result.stdout_text, &list, options)
                   .ok()) {
            return absl::InternalError(result.Describe());
          }
          *note = result.stdout_text;
          for (const std::string& id : ids) {
            bool connected = false;
            for (const auto& agent : list.agents()) {
              connected |= agent.agent_id() == id && agent.connected();
            }
            if (!connected) return false;
          }
          return true;
        },
        absl::Seconds(30), absl::StrCat(absl::StrJoin(ids, ","), " connected"),
        absl::Milliseconds(100));
  }

  // Pushes `ini` to `env` and applies it with --wait: fleetctl's result (exit 0 applied
  // everywhere, 5 refused somewhere).
  FleetctlResult PushAndApply(const std::string& env, const std::string& ini) {
    const std::string path = absl::StrCat(dir_, "/push-", ++pushes_, ".ini");
    absl::Status written = WriteFile(path, ini);
    EXPECT_TRUE(written.ok()) << written;
    FleetctlResult push =
        Ctl({"config", "push", "--env", env, "-f", path, "-m", "test", "--output", "json"});
    EXPECT_EQ(push.exit_code, 0) << push.Describe();
    pgfleet::v1::ConfigVersion version;
    google::protobuf::util::JsonParseOptions options;
    options.ignore_unknown_fields = true;
    EXPECT_TRUE(
        google::protobuf::util::JsonStringToMessage(push.stdout_text, &version, options).ok())
        << push.Describe();
    return Ctl({"config", "apply", "--env", env, "--version", absl::StrCat("v", version.version()),
                "--wait"});
  }

  static absl::StatusOr<std::string> ShowConfig(int port, const std::string& key) {
    absl::StatusOr<PgConn> console =
        Connect(TcpConnString(port, "pgbouncer", kAdminUser, kAdminPassword));
    if (!console.ok()) return console.status();
    absl::StatusOr<Table> table = Show(console->get(), "SHOW CONFIG");
    if (!table.ok()) return table.status();
    Rows rows = table->Where({{"key", key}});
    if (rows.size() != 1) return absl::NotFoundError(table->Dump());
    return table->At(rows[0], "value");
  }

  TempDir temp_dir_;
  std::string dir_;
  std::string config_dir_;
  std::string users_path_;
  std::string token_;
  std::unique_ptr<ControllerProcess> controller_;
  std::map<std::string, std::unique_ptr<SpawnedAgent>> agents_;
  int pushes_ = 0;
};

// --- item 17: one state dir per agent ---------------------------------------------------------

TEST_F(FleetAgentStateTest, TwoAgentsConfiguredFromOneDirectoryKeepTheirOwnState) {
  SpawnedAgent* a = StartAgent("host-a", "env-a");
  SpawnedAgent* b = StartAgent("host-b", "env-b");
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  PGF_ASSERT_OK(WaitConnected({"host-a", "host-b"}));

  FleetctlResult apply_a = PushAndApply("env-a", Ini(a->port(), 11));
  ASSERT_EQ(apply_a.exit_code, 0) << apply_a.Describe();
  FleetctlResult apply_b = PushAndApply("env-b", Ini(b->port(), 12));
  ASSERT_EQ(apply_b.exit_code, 0) << apply_b.Describe();
  PGF_ASSERT_OK_AND_ASSIGN(std::string size_a, ShowConfig(a->port(), "default_pool_size"));
  PGF_ASSERT_OK_AND_ASSIGN(std::string size_b, ShowConfig(b->port(), "default_pool_size"));
  EXPECT_EQ(size_a, "11");
  EXPECT_EQ(size_b, "12");

  // With the controller gone, each restarts onto its own last applied config.
  PGF_ASSERT_OK(controller_->Stop().status());
  for (SpawnedAgent* agent : {a, b}) {
    PGF_ASSERT_OK_AND_ASSIGN(int status, agent->Stop());
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << DescribeWaitStatus(status);
  }
  PGF_ASSERT_OK(a->Start());
  PGF_ASSERT_OK(b->Start());
  PGF_ASSERT_OK_AND_ASSIGN(size_a, ShowConfig(a->port(), "default_pool_size"));
  PGF_ASSERT_OK_AND_ASSIGN(size_b, ShowConfig(b->port(), "default_pool_size"));
  EXPECT_EQ(size_a, "11") << "host-a restarted onto another agent's config";
  EXPECT_EQ(size_b, "12") << "host-b restarted onto another agent's config";
  EXPECT_TRUE(absl::StrContains(a->Stderr(), "starting from the last applied config"));
  EXPECT_TRUE(absl::StrContains(b->Stderr(), "starting from the last applied config"));

  // Each has a state dir of its own, named after its id, next to the config files.
  for (const auto& [id, size] : {std::pair<std::string, int>{"host-a", 11}, {"host-b", 12}}) {
    absl::StatusOr<std::string> applied =
        ReadFile(absl::StrCat(config_dir_, "/pgfleet-state/", id, "/applied.ini"));
    ASSERT_TRUE(applied.ok()) << id << ": " << applied.status();
    EXPECT_TRUE(absl::StrContains(*applied, absl::StrCat("default_pool_size = ", size))) << id;
  }
}

TEST_F(FleetAgentStateTest, ASecondAgentOnTheSameStateDirRefusesToStart) {
  const std::string state_dir = dir_ + "/shared-state";
  SpawnedAgent* first = StartAgent("first", "dev", {"--state-dir=" + state_dir});
  ASSERT_NE(first, nullptr);

  PGF_ASSERT_OK_AND_ASSIGN(int port, PickFreePort());
  const std::string ini = config_dir_ + "/second.ini";
  PGF_ASSERT_OK(WriteFile(ini, Ini(port, 20)));
  RunOptions options;
  options.timeout = absl::Seconds(10);
  PGF_ASSERT_OK_AND_ASSIGN(
      RunResult second,
      RunCommand({PGFLEET_AGENT_BINARY, "--controller=" + controller_->address(), "--env=dev",
                  "--agent-id=second", "--state-dir=" + state_dir, ini},
                 options));
  ASSERT_FALSE(second.timed_out) << "the second agent started on a state dir in use:\n"
                                 << second.Describe();
  EXPECT_FALSE(WIFSIGNALED(second.wait_status)) << second.Describe();
  EXPECT_EQ(second.ExitCode(), std::optional<int>(1)) << second.Describe();
  EXPECT_TRUE(absl::StrContains(second.stderr_text, "pgfleet-agent: ")) << second.Describe();
  EXPECT_TRUE(absl::StrContains(second.stderr_text, state_dir)) << second.Describe();
  EXPECT_TRUE(absl::StrContains(second.stderr_text, absl::StrCat("pid ", first->pid())))
      << second.Describe();
  EXPECT_FALSE(CanConnect(port));
  // The first one is unaffected.
  PGF_ASSERT_OK_AND_ASSIGN(std::string size, ShowConfig(first->port(), "default_pool_size"));
  EXPECT_EQ(size, "20");
}

// --- item 15: pushed file paths stay where the command line allows ----------------------------

TEST_F(FleetAgentStateTest, PushedFilePathsOutsideTheAllowedDirsAreRefused) {
  const std::string extra = dir_ + "/extra-logs";  // Allowed with --allow-path.
  const std::string outside = dir_ + "/outside";   // Allowed by nothing.
  ASSERT_EQ(mkdir(extra.c_str(), 0700), 0);
  ASSERT_EQ(mkdir(outside.c_str(), 0700), 0);
  std::filesystem::create_directory_symlink(outside, config_dir_ + "/escape");
  SpawnedAgent* agent = StartAgent("paths", "dev", {"--allow-path=" + extra});
  ASSERT_NE(agent, nullptr);
  PGF_ASSERT_OK(WaitConnected({"paths"}));
  const int port = agent->port();
  const std::string local_ini = config_dir_ + "/paths.ini";
  PGF_ASSERT_OK_AND_ASSIGN(std::string local_text, ReadFile(local_ini));

  struct Refused {
    std::map<std::string, std::string> settings;
    std::string key;
    std::string created;  // A file the push must not create ("" = none to check).
  };
  const std::vector<Refused> refused = {
      {{{"logfile", outside + "/agent.log"}}, "logfile", outside + "/agent.log"},
      {{{"pidfile", outside + "/agent.pid"}}, "pidfile", outside + "/agent.pid"},
      {{{"logfile", config_dir_ + "/escape/agent.log"}}, "logfile", outside + "/agent.log"},
      {{{"logfile", config_dir_ + "/../outside/agent.log"}}, "logfile", outside + "/agent.log"},
      {{{"auth_file", "/etc/passwd"}}, "auth_file", ""},
      {{{"server_tls_sslmode", "prefer"},
        {"server_tls_cert_file", "/etc/ssl/certs/ca-certificates.crt"},
        {"server_tls_key_file", outside + "/key.pem"}},
       "server_tls_cert_file",
       ""},
      {{{"pidfile", local_ini}}, "pidfile", ""},
  };
  for (const Refused& push : refused) {
    SCOPED_TRACE(absl::StrCat(push.key, " = ", push.settings.begin()->second));
    FleetctlResult apply = PushAndApply("dev", Ini(port, 7, push.settings));
    EXPECT_EQ(apply.exit_code, 5) << apply.Describe();
    EXPECT_TRUE(absl::StrContains(apply.stderr_text, "NACK")) << apply.Describe();
    EXPECT_TRUE(absl::StrContains(apply.stderr_text, push.key + ": ")) << apply.Describe();
    if (push.key != "pidfile" || push.settings.at("pidfile") != local_ini) {
      EXPECT_TRUE(absl::StrContains(apply.stderr_text, "outside the allowed paths (--allow-path)"))
          << apply.Describe();
    }
    EXPECT_FALSE(absl::StrContains(apply.stderr_text, "root:x:0:0")) << "a NACK leaked a file";
    if (!push.created.empty()) {
      EXPECT_FALSE(std::filesystem::exists(push.created)) << push.created << " was created";
    }
    PGF_ASSERT_OK_AND_ASSIGN(std::string size, ShowConfig(port, "default_pool_size"));
    EXPECT_EQ(size, "20") << "a refused config was applied";
  }
  PGF_ASSERT_OK_AND_ASSIGN(std::string local_after, ReadFile(local_ini));
  EXPECT_EQ(local_after, local_text) << "the local config file was written";

  // Inside the config file's directory, and inside --allow-path: applied.
  FleetctlResult inside =
      PushAndApply("dev", Ini(port, 8, {{"logfile", config_dir_ + "/pushed.log"}}));
  ASSERT_EQ(inside.exit_code, 0) << inside.Describe();
  PGF_ASSERT_OK_AND_ASSIGN(std::string logfile, ShowConfig(port, "logfile"));
  EXPECT_EQ(logfile, config_dir_ + "/pushed.log");
  EXPECT_TRUE(std::filesystem::exists(config_dir_ + "/pushed.log"));
  FleetctlResult allowed = PushAndApply("dev", Ini(port, 9, {{"logfile", extra + "/agent.log"}}));
  ASSERT_EQ(allowed.exit_code, 0) << allowed.Describe();
  PGF_ASSERT_OK_AND_ASSIGN(std::string size, ShowConfig(port, "default_pool_size"));
  EXPECT_EQ(size, "9");
  EXPECT_TRUE(std::filesystem::exists(extra + "/agent.log"));
}

}  // namespace
}  // namespace pgfleet::testutil
