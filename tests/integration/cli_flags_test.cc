// Command-line flags of the three real binaries. fleetctl refuses a misspelt flag (exit 2, with
// the nearest declared flag) before it calls the controller, so a typo on the command that moves
// production changes nothing; both `--k v` and `--k=v` work. The daemons take each flag from
// the command line, an environment variable (PGFLEET_CONTROLLER_*, PGFLEET_AGENT_*) or a
// `--config FILE` of `key = value` lines, in that order of precedence.
//
// No PostgreSQL is needed: the agents here are never asked for a server connection.

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "pgfleet/v1/fleet.pb.h"
#include "tests/testutil/agent_process.h"
#include "tests/testutil/controller_process.h"
#include "tests/testutil/fixtures.h"
#include "tests/testutil/free_port.h"
#include "tests/testutil/http.h"
#include "tests/testutil/process.h"
#include "tests/testutil/status_testing.h"
#include "tests/testutil/wait.h"

namespace pgfleet::testutil {
namespace {

constexpr char kAdminToken[] = "cli-flags-admin-token";

class FleetctlFlagsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ControllerOptions options;
    options.bootstrap_token = kAdminToken;
    PGF_ASSERT_OK_AND_ASSIGN(controller_, ControllerProcess::Start(options));
  }

  FleetctlResult Ctl(const std::vector<std::string>& args) {
    absl::StatusOr<FleetctlResult> result = RunFleetctl(args, kAdminToken, controller_->address());
    EXPECT_TRUE(result.ok()) << result.status();
    return result.ok() ? *result : FleetctlResult{};
  }

  // Stores a config for `env` (which creates the environment); returns its version, "v1".
  std::string PushConfig(const std::string& env) {
    const std::string path = controller_->dir() + "/pgbouncer.ini";
    EXPECT_TRUE(
        WriteFile(path, absl::StrCat("[databases]\napp = host=127.0.0.1 port=", ++pushes_,
                                     " dbname=app\n",
                                     "[pgbouncer]\nlisten_port = 6432\nauth_type = trust\n"))
            .ok());
    FleetctlResult pushed = Ctl({"config", "push", "--env", env, "-f", path, "--output", "json"});
    EXPECT_EQ(pushed.exit_code, 0) << pushed.Describe();
    pgfleet::v1::ConfigVersion version;
    EXPECT_TRUE(google::protobuf::util::JsonStringToMessage(pushed.stdout_text, &version).ok())
        << pushed.Describe();
    return absl::StrCat("v", version.version());
  }

  int RolloutCount() {
    FleetctlResult listed = Ctl({"rollout", "list", "--output", "json"});
    EXPECT_EQ(listed.exit_code, 0) << listed.Describe();
    pgfleet::v1::ListRolloutsResponse rollouts;
    EXPECT_TRUE(google::protobuf::util::JsonStringToMessage(listed.stdout_text, &rollouts).ok())
        << listed.Describe();
    return rollouts.rollouts_size();
  }

  std::unique_ptr<ControllerProcess> controller_;
  int pushes_ = 5000;  // Each push a different config, so a new version.
};

// The command: two typos on `rollout start`. Before, fleetctl dropped both and started
// the rollout with default waves and no max-unavailable.
TEST_F(FleetctlFlagsTest, MisspeltFlagIsAUsageErrorAndStartsNothing) {
  const std::string first = PushConfig("prod");
  FleetctlResult applied = Ctl({"config", "apply", "--env", "prod", "--version", first});
  ASSERT_EQ(applied.exit_code, 0) << applied.Describe();
  const std::string version = PushConfig("prod");
  FleetctlResult typo = Ctl({"rollout", "start", "--env", "prod", "--version", version,
                             "--max-unavalable", "2", "--wavs", "1"});
  EXPECT_EQ(typo.exit_code, 2) << typo.Describe();
  EXPECT_TRUE(absl::StrContains(typo.stderr_text, "--max-unavalable")) << typo.Describe();
  EXPECT_TRUE(absl::StrContains(typo.stderr_text, "did you mean --max-unavailable"))
      << typo.Describe();
  EXPECT_EQ(RolloutCount(), 0) << "the misspelt command started a rollout";
}

TEST_F(FleetctlFlagsTest, MissingValueIsAUsageError) {
  FleetctlResult missing = Ctl({"config", "list", "--env"});
  EXPECT_EQ(missing.exit_code, 2) << missing.Describe();
  EXPECT_TRUE(absl::StrContains(missing.stderr_text, "--env")) << missing.Describe();
}

TEST_F(FleetctlFlagsTest, SpaceAndEqualsFormsBothWork) {
  const std::string version = PushConfig("staging");
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"config", "list", "--env", "staging"},
        std::vector<std::string>{"config", "list", "--env=staging"},
        std::vector<std::string>{"--output=json", "config", "list", "--env=staging"},
        std::vector<std::string>{"config", "list", "-o", "json", "--env", "staging"}}) {
    FleetctlResult listed = Ctl(args);
    EXPECT_EQ(listed.exit_code, 0) << listed.Describe();
    EXPECT_TRUE(absl::StrContains(listed.stdout_text, version.substr(1))) << listed.Describe();
  }
}

TEST_F(FleetctlFlagsTest, CompletionScriptNamesTheCommands) {
  for (const char* shell : {"bash", "zsh"}) {
    FleetctlResult script = Ctl({"completion", shell});
    EXPECT_EQ(script.exit_code, 0) << script.Describe();
    for (const char* word : {"rollout", "maintenance", "--max-unavailable", "set-upstream"}) {
      EXPECT_TRUE(absl::StrContains(script.stdout_text, word)) << shell << " lacks " << word;
    }
  }
  // The bash script is valid bash.
  FleetctlResult script = Ctl({"completion", "bash"});
  PGF_ASSERT_OK_AND_ASSIGN(RunResult checked, RunCommand({"bash", "-n", "-c", script.stdout_text}));
  EXPECT_TRUE(checked.Succeeded()) << checked.Describe();
}

// ---- The daemons ----------------------------------------------------------------------------

// Sets an environment variable for one scope (the child processes inherit it).
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    setenv(name, value.c_str(), 1);
  }
  ~ScopedEnv() { unsetenv(name_); }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
};

TEST(ControllerFlagsTest, FlagsFromEnvironmentVariables) {
  TempDir dir;
  PGF_ASSERT_OK(dir.Create("pgfleet-cli-flags"));
  const std::string http_port_file = dir.path() + "/http-port";
  ScopedEnv listen("PGFLEET_CONTROLLER_HTTP_LISTEN", "127.0.0.1:0");
  ScopedEnv port_file("PGFLEET_CONTROLLER_HTTP_PORT_FILE", http_port_file);
  PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ControllerProcess> controller,
                           ControllerProcess::Start({}));
  PGF_ASSERT_OK_AND_ASSIGN(int http_port, AwaitHttpPort(http_port_file));
  PGF_ASSERT_OK_AND_ASSIGN(HttpResponse index, HttpGet(http_port, "/api/WhoAmI"));
  EXPECT_EQ(index.status, 401) << index.body;  // Served, and asks for a token.
}

TEST(ControllerFlagsTest, FlagsFromConfigFileAndCommandLineWins) {
  TempDir temp_dir;
  PGF_ASSERT_OK(temp_dir.Create("pgfleet-cli-flags"));
  const std::string& dir = temp_dir.path();
  const std::string conf = dir + "/controller.conf";
  ASSERT_TRUE(WriteFile(conf, absl::StrCat("# pgfleet-controller flags\n"
                                           "http-listen = \"127.0.0.1:0\"\n"
                                           "http-port-file = \"",
                                           dir, "/http-port\"\n",
                                           // The harness's --db on the command line wins.
                                           "db = \"/nonexistent/dir/fleet.db\"\n"))
                  .ok());
  ControllerOptions options;
  options.extra_args = {"--config", conf};
  PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ControllerProcess> controller,
                           ControllerProcess::Start(options));
  PGF_ASSERT_OK_AND_ASSIGN(int http_port, AwaitHttpPort(dir + "/http-port"));
  PGF_ASSERT_OK_AND_ASSIGN(HttpResponse index, HttpGet(http_port, "/api/WhoAmI"));
  EXPECT_EQ(index.status, 401) << index.body;
  EXPECT_TRUE(std::filesystem::exists(controller->db_path()));

  // A misspelt key in the file is refused, naming it.
  ASSERT_TRUE(WriteFile(conf, "http-lisen = \"127.0.0.1:0\"\n").ok());
  PGF_ASSERT_OK_AND_ASSIGN(RunResult refused, RunCommand({PGFLEET_CONTROLLER_BINARY, "--config",
                                                          conf, "--db=" + dir + "/x.db"}));
  EXPECT_EQ(refused.ExitCode(), 2) << refused.Describe();
  EXPECT_TRUE(absl::StrContains(refused.stderr_text, "http-lisen")) << refused.Describe();
}

// "--http-listen=" is the empty value (no dashboard), not "take the next word": CLI11 alone
// would have served the dashboard on "--metrics-interval=1s" (and refused to, over plain HTTP).
TEST(ControllerFlagsTest, EmptyValueAfterEqualsIsEmptyNotTheNextFlag) {
  ControllerOptions options;
  options.extra_args = {"--http-listen=", "--metrics-interval=1s"};
  absl::StatusOr<std::unique_ptr<ControllerProcess>> controller = ControllerProcess::Start(options);
  ASSERT_TRUE(controller.ok()) << controller.status();
  EXPECT_TRUE((*controller)->IsRunning());
}

TEST(ControllerFlagsTest, MisspeltFlagIsRefusedWithASuggestion) {
  PGF_ASSERT_OK_AND_ASSIGN(RunResult refused,
                           RunCommand({PGFLEET_CONTROLLER_BINARY, "--metrics-intervall=5s"}));
  EXPECT_EQ(refused.ExitCode(), 2) << refused.Describe();
  EXPECT_TRUE(absl::StrContains(refused.stderr_text, "did you mean --metrics-interval"))
      << refused.Describe();
}

AgentOptions LoneAgent() {
  AgentOptions options;
  options.databases_section = "app = host=127.0.0.1 port=1 dbname=app\n";
  options.pgbouncer_settings["auth_type"] = "trust";
  return options;
}

TEST(AgentFlagsTest, MetricsListenFromEnvironmentVariable) {
  PGF_ASSERT_OK_AND_ASSIGN(int metrics_port, PickFreePort());
  ScopedEnv metrics("PGFLEET_AGENT_METRICS_LISTEN", absl::StrCat("127.0.0.1:", metrics_port));
  PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<AgentProcess> agent, AgentProcess::Start(LoneAgent()));
  absl::Status healthy = PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        absl::StatusOr<HttpResponse> health = HttpGet(metrics_port, "/healthz");
        *note = health.ok() ? health->body : std::string(health.status().message());
        return health.ok() && health->status == 200;
      },
      absl::Seconds(10), "the agent's /healthz");
  ASSERT_TRUE(healthy.ok()) << healthy << "\n" << agent->Diagnostics();
}

TEST(AgentFlagsTest, MetricsListenFromConfigFileWithSpaceSeparatedFlags) {
  PGF_ASSERT_OK_AND_ASSIGN(int metrics_port, PickFreePort());
  TempDir dir;
  PGF_ASSERT_OK(dir.Create("pgfleet-cli-flags"));
  const std::string conf = dir.path() + "/agent.conf";
  ASSERT_TRUE(
      WriteFile(conf, absl::StrCat("metrics-listen = \"127.0.0.1:", metrics_port, "\"\n")).ok());
  AgentOptions options = LoneAgent();
  // `--config FILE` (space form), -q, then the positional pgbouncer.ini the harness appends.
  options.extra_args = {"--config", conf, "-q", "--shutdown-timeout", "5s"};
  PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<AgentProcess> agent, AgentProcess::Start(options));
  absl::Status healthy = PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        absl::StatusOr<HttpResponse> health = HttpGet(metrics_port, "/healthz");
        *note = health.ok() ? health->body : std::string(health.status().message());
        return health.ok() && health->status == 200;
      },
      absl::Seconds(10), "the agent's /healthz");
  ASSERT_TRUE(healthy.ok()) << healthy << "\n" << agent->Diagnostics();
}

TEST(AgentFlagsTest, MisspeltFlagIsRefusedWithASuggestion) {
  PGF_ASSERT_OK_AND_ASSIGN(RunResult refused,
                           RunCommand({PGFLEET_AGENT_BINARY, "--metric-listen=:9127", "x.ini"}));
  EXPECT_EQ(refused.ExitCode(), 2) << refused.Describe();
  EXPECT_TRUE(absl::StrContains(refused.stderr_text, "did you mean --metrics-listen"))
      << refused.Describe();
}

// A binary file given as --config by mistake: the error names the key it could not use, with
// control characters (here a terminal escape) shown as '?', not written to the terminal.
TEST(AgentFlagsTest, ABinaryConfigFileIsRefusedWithoutEchoingControlCharacters) {
  TempDir dir;
  PGF_ASSERT_OK(dir.Create("pgfleet-cli-flags"));
  const std::string conf = dir.path() + "/agent.conf";
  PGF_ASSERT_OK(WriteFile(conf, "a\x1b[31mb = \x01\x02\n"));
  PGF_ASSERT_OK_AND_ASSIGN(RunResult refused,
                           RunCommand({PGFLEET_AGENT_BINARY, "--config", conf, "x.ini"}));
  EXPECT_EQ(refused.ExitCode(), 2) << refused.Describe();
  EXPECT_TRUE(absl::StrContains(refused.stderr_text, "unknown key 'a?[31mb'"))
      << refused.Describe();
  for (char c : refused.stderr_text) {
    EXPECT_TRUE(c == '\n' || static_cast<unsigned char>(c) >= 0x20) << refused.Describe();
  }
}

}  // namespace
}  // namespace pgfleet::testutil
