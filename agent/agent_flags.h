// pgfleet-agent's command line: PgBouncer's `pgfleet-agent [options] pgbouncer.ini` with -v/-q/-V,
// plus the fleet flags. Each flag also comes from PGFLEET_AGENT_<FLAG> or a --config file.
#pragma once

#include <optional>
#include <string>

#include "agent/agent.h"
#include "agent/link/controller_link.h"

namespace pgfleet::agent {

struct AgentCommandLine {
  // Set when the agent must exit at once with this code: --help, --version, a usage error
  // (already printed).
  std::optional<int> exit_code;
  AgentOptions options;
  // Fleet mode: set when --controller is given.
  std::optional<LinkOptions> link;
};

// Parses argv (argv[0] is the program) and applies -v/-q to the log level.
AgentCommandLine ParseAgentCommandLine(int argc, const char* const* argv);

}  // namespace pgfleet::agent
