// pgfleet-agent: a PgBouncer-compatible connection pooler. Usage: pgfleet-agent [options] CONFIG
#include <cstdio>
#include <string>

#include "agent/agent.h"
#include "agent/agent_flags.h"

int main(int argc, char** argv) {
  pgfleet::agent::AgentCommandLine command_line = pgfleet::agent::ParseAgentCommandLine(argc, argv);
  if (command_line.exit_code.has_value()) return *command_line.exit_code;
  pgfleet::agent::AgentOptions options = std::move(command_line.options);
  options.link = std::move(command_line.link);
  absl::StatusOr<std::unique_ptr<pgfleet::agent::Agent>> agent =
      pgfleet::agent::Agent::Create(std::move(options));
  if (!agent.ok()) {
    fprintf(stderr, "pgfleet-agent: %s\n", std::string(agent.status().message()).c_str());
    return 1;
  }
  return (*agent)->Run();
}
