// The daemons' command lines without starting them: flags in both forms, from PGFLEET_* variables
// and from a --config file, in that order of precedence; typos refused with a suggestion.

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "agent/agent_flags.h"
#include "controller/controller_flags.h"
#include "gtest/gtest.h"

namespace pgfleet {
namespace {

// argv for the parsers, which keep no pointer to it.
std::vector<const char*> Argv(const std::vector<std::string>& args) {
  std::vector<const char*> argv;
  for (const std::string& arg : args) argv.push_back(arg.c_str());
  return argv;
}

class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) { setenv(name, value, 1); }
  ~ScopedEnv() { unsetenv(name_); }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
};

std::string WriteTemp(const std::string& text) {
  char path[] = "/tmp/pgfleet-flags-XXXXXX";
  int fd = mkstemp(path);
  EXPECT_GE(fd, 0);
  close(fd);
  std::ofstream(path) << text;
  return path;
}

agent::AgentCommandLine ParseAgent(const std::vector<std::string>& args) {
  std::vector<const char*> argv = Argv(args);
  return agent::ParseAgentCommandLine(static_cast<int>(argv.size()), argv.data());
}

controller::ControllerCommandLine ParseController(const std::vector<std::string>& args) {
  std::vector<const char*> argv = Argv(args);
  return controller::ParseControllerCommandLine(static_cast<int>(argv.size()), argv.data());
}

TEST(AgentFlagsTest, BothFormsAndThePositionalIni) {
  agent::AgentCommandLine parsed =
      ParseAgent({"pgfleet-agent", "--controller", "c:7070", "--env=prod", "--allow-path=/a,/b",
                  "--allow-path", "/c", "--shutdown-timeout", "5s", "pgbouncer.ini"});
  ASSERT_FALSE(parsed.exit_code.has_value());
  EXPECT_EQ(parsed.options.config_path, "pgbouncer.ini");
  EXPECT_EQ(parsed.allowed_paths, (std::vector<std::string>{"/a", "/b", "/c"}));
  EXPECT_EQ(parsed.options.shutdown_timeout, absl::Seconds(5));
  ASSERT_TRUE(parsed.fleet.has_value());
  EXPECT_EQ(parsed.fleet->link.controller_address, "c:7070");
  EXPECT_EQ(parsed.fleet->link.environment, "prod");
}

TEST(AgentFlagsTest, EnvironmentThenConfigFileThenCommandLine) {
  ScopedEnv env("PGFLEET_AGENT_ENV", "from-env");
  ScopedEnv metrics("PGFLEET_AGENT_METRICS_LISTEN", "127.0.0.1:1");
  ScopedEnv controller("PGFLEET_AGENT_CONTROLLER", "env:7070");
  const std::string conf = WriteTemp("# agent flags\nmetrics-listen = \"127.0.0.1:2\"\n");
  agent::AgentCommandLine from_env = ParseAgent({"pgfleet-agent", "x.ini"});
  ASSERT_FALSE(from_env.exit_code.has_value());
  EXPECT_EQ(from_env.options.metrics_listen, "127.0.0.1:1");
  ASSERT_TRUE(from_env.fleet.has_value());
  EXPECT_EQ(from_env.fleet->link.environment, "from-env");
  agent::AgentCommandLine from_file = ParseAgent({"pgfleet-agent", "--config", conf, "x.ini"});
  ASSERT_FALSE(from_file.exit_code.has_value());
  EXPECT_EQ(from_file.options.metrics_listen, "127.0.0.1:2");
  agent::AgentCommandLine from_line =
      ParseAgent({"pgfleet-agent", "--config", conf, "--metrics-listen", "127.0.0.1:3", "x.ini"});
  ASSERT_FALSE(from_line.exit_code.has_value());
  EXPECT_EQ(from_line.options.metrics_listen, "127.0.0.1:3");
  unlink(conf.c_str());
}

TEST(AgentFlagsTest, UsageErrors) {
  EXPECT_EQ(ParseAgent({"pgfleet-agent", "--metric-listen=1", "x.ini"}).exit_code, 2);
  EXPECT_EQ(ParseAgent({"pgfleet-agent", "x.ini", "y.ini"}).exit_code, 2);
  EXPECT_EQ(ParseAgent({"pgfleet-agent"}).exit_code, 2);
  EXPECT_EQ(ParseAgent({"pgfleet-agent", "--controller=c:1", "x.ini"}).exit_code, 2);
  EXPECT_EQ(ParseAgent({"pgfleet-agent", "x.ini", "--env"}).exit_code, 2);
  const std::string conf = WriteTemp("metrics-lisen = 1\n");
  EXPECT_EQ(ParseAgent({"pgfleet-agent", "--config", conf, "x.ini"}).exit_code, 2);
  unlink(conf.c_str());
  EXPECT_EQ(ParseAgent({"pgfleet-agent", "-V"}).exit_code, 0);
}

TEST(ControllerFlagsTest, DbFromEnvironmentAndConfigFile) {
  ScopedEnv db("PGFLEET_CONTROLLER_DB", "/tmp/from-env.db");
  controller::ControllerCommandLine from_env = ParseController({"pgfleet-controller"});
  ASSERT_FALSE(from_env.exit_code.has_value());
  EXPECT_EQ(from_env.flags.db, "/tmp/from-env.db");
  EXPECT_FALSE(from_env.flags.http_listen_given);
  const std::string conf = WriteTemp(
      "db = \"/tmp/from-file.db\"\nmetrics-interval = \"2s\"\ninsecure-agents = true\n"
      "http-listen = \"127.0.0.1:0\"\n");
  controller::ControllerCommandLine from_file =
      ParseController({"pgfleet-controller", "--config", conf});
  ASSERT_FALSE(from_file.exit_code.has_value());
  EXPECT_EQ(from_file.flags.db, "/tmp/from-file.db");
  EXPECT_EQ(from_file.flags.metrics_interval, absl::Seconds(2));
  EXPECT_TRUE(from_file.flags.insecure_agents);
  EXPECT_TRUE(from_file.flags.http_listen_given);
  controller::ControllerCommandLine from_line =
      ParseController({"pgfleet-controller", "--config=" + conf, "--db", "/tmp/line.db"});
  ASSERT_FALSE(from_line.exit_code.has_value());
  EXPECT_EQ(from_line.flags.db, "/tmp/line.db");
  // token create shares --db with the server.
  controller::ControllerCommandLine token =
      ParseController({"pgfleet-controller", "token", "create", "--name", "ops", "--role=admin"});
  ASSERT_FALSE(token.exit_code.has_value());
  EXPECT_TRUE(token.flags.create_token);
  EXPECT_EQ(token.flags.db, "/tmp/from-env.db");
  EXPECT_EQ(token.flags.token_role, "admin");
  unlink(conf.c_str());
}

TEST(ControllerFlagsTest, UsageErrors) {
  EXPECT_EQ(ParseController({"pgfleet-controller", "--metrics-intervall=5s"}).exit_code, 2);
  EXPECT_EQ(ParseController({"pgfleet-controller", "--listen=0.0.0.0:7070"}).exit_code, 2);
  EXPECT_EQ(ParseController({"pgfleet-controller", "--max-pending-agent-streams=0"}).exit_code, 2);
  EXPECT_EQ(ParseController({"pgfleet-controller", "--db"}).exit_code, 2);
  EXPECT_EQ(ParseController({"pgfleet-controller", "token", "create", "--name=x"}).exit_code, 2);
  EXPECT_EQ(ParseController({"pgfleet-controller", "-h"}).exit_code, 0);
}

}  // namespace
}  // namespace pgfleet
