// pgfleet-agent's command line: PgBouncer's `pgfleet-agent [options] pgbouncer.ini` with -v/-q/-V,
// -d/--daemon, -R/--reboot and -u USER, plus the fleet flags. Each flag also comes from
// PGFLEET_AGENT_<FLAG> or a --config file.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "agent/agent.h"
#include "agent/link/fleet_agent.h"

namespace pgfleet::agent {

struct AgentCommandLine {
  // Set when the agent must exit at once with this code: --help, --version, a usage error
  // (already printed).
  std::optional<int> exit_code;
  AgentOptions options;
  // --allow-path: where a pushed config, or the console's SET logfile, may name files.
  std::vector<std::string> allowed_paths;
  // PgBouncer's -d/--daemon: detach into the background (needs pidfile in the config).
  bool daemon = false;
  // PgBouncer's -R/--reboot: take the listeners over from the agent the config's pidfile names
  // (agent/handover.h RequestTakeover), or start normally when none runs.
  bool reboot = false;
  // PgBouncer's -u USER: switch to USER once the sockets are bound (when started as root).
  std::string run_as_user;
  // Fleet mode: set when --controller is given (with allowed_paths copied in).
  std::optional<FleetOptions> fleet;
};

// Parses argv (argv[0] is the program) and applies -v (log level) and -q (no log on stderr).
AgentCommandLine ParseAgentCommandLine(int argc, const char* const* argv);

}  // namespace pgfleet::agent
