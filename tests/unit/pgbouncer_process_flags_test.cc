// PgBouncer's process flags on pgfleet-agent's command line (issue 23): -d/--daemon and
// -u/--user USER in PgBouncer's spellings, before or after the ini, so PgBouncer init scripts
// (`pgbouncer -d -u postgres /etc/pgbouncer/pgbouncer.ini`) work with the agent's binary.

#include <string>
#include <vector>

#include "agent/agent_flags.h"
#include "gtest/gtest.h"

namespace pgfleet {
namespace {

agent::AgentCommandLine Parse(std::vector<std::string> args) {
  args.insert(args.begin(), "pgfleet-agent");
  std::vector<const char*> argv;
  for (const std::string& arg : args) argv.push_back(arg.c_str());
  return agent::ParseAgentCommandLine(static_cast<int>(argv.size()), argv.data());
}

TEST(PgbouncerProcessFlagsTest, ShortFormsAsInitScriptsWriteThem) {
  agent::AgentCommandLine parsed = Parse({"-d", "-u", "postgres", "/etc/pgbouncer/pgbouncer.ini"});
  ASSERT_FALSE(parsed.exit_code.has_value());
  EXPECT_TRUE(parsed.daemon);
  EXPECT_EQ(parsed.run_as_user, "postgres");
  EXPECT_EQ(parsed.options.config_path, "/etc/pgbouncer/pgbouncer.ini");
}

TEST(PgbouncerProcessFlagsTest, LongFormsAndAfterTheIni) {
  agent::AgentCommandLine parsed = Parse({"pgbouncer.ini", "--daemon", "--user=pgfleet"});
  ASSERT_FALSE(parsed.exit_code.has_value());
  EXPECT_TRUE(parsed.daemon);
  EXPECT_EQ(parsed.run_as_user, "pgfleet");
  EXPECT_EQ(parsed.options.config_path, "pgbouncer.ini");
}

TEST(PgbouncerProcessFlagsTest, NeitherByDefault) {
  agent::AgentCommandLine parsed = Parse({"pgbouncer.ini"});
  ASSERT_FALSE(parsed.exit_code.has_value());
  EXPECT_FALSE(parsed.daemon);
  EXPECT_EQ(parsed.run_as_user, "");
}

TEST(PgbouncerProcessFlagsTest, UserWithoutANameIsAUsageError) {
  agent::AgentCommandLine parsed = Parse({"pgbouncer.ini", "-u"});
  ASSERT_TRUE(parsed.exit_code.has_value());
  EXPECT_EQ(*parsed.exit_code, 2);
}

}  // namespace
}  // namespace pgfleet
