// pgfleet-agent: a PgBouncer-compatible connection pooler. Usage: pgfleet-agent [options] CONFIG
// main() only parses flags (agent/agent_flags.cc) and wires the pooler to the controller link.
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "agent/agent.h"
#include "agent/agent_flags.h"
#include "agent/link/fleet_agent.h"

namespace {

// Wiring: the pooler alone, or with the controller link attached through AgentControl.
int RunAgent(pgfleet::agent::AgentOptions options,
             std::optional<pgfleet::agent::FleetOptions> fleet_options,
             const std::vector<std::string>& allowed_paths) {
  auto fail = [](const absl::Status& status) {
    fprintf(stderr, "pgfleet-agent: %s\n", std::string(status.message()).c_str());
    return 1;
  };
  std::optional<pgfleet::agent::FleetSetup> fleet_setup;
  if (fleet_options.has_value()) {
    absl::StatusOr<pgfleet::agent::FleetSetup> setup =
        pgfleet::agent::PrepareFleet(std::move(*fleet_options), options.config_path);
    if (!setup.ok()) return fail(setup.status());
    options.config_path = setup->start_config_path;
    options.path_policy = setup->path_policy;
    fleet_setup = std::move(*setup);
  } else {
    // Nothing is pushed without a controller, but the console's SET logfile names a file to
    // write all the same: the same confinement, to the config's directory and --allow-path.
    absl::StatusOr<pgfleet::agent::PathPolicy> policy =
        pgfleet::agent::StandalonePathPolicy(options.config_path, allowed_paths);
    if (!policy.ok()) return fail(policy.status());
    options.path_policy = *std::move(policy);
  }
  absl::StatusOr<std::unique_ptr<pgfleet::agent::Agent>> agent =
      pgfleet::agent::Agent::Create(std::move(options));
  if (!agent.ok()) return fail(agent.status());
  // Declared after the agent, so destroyed first: the link's timers live on the agent's loop.
  std::unique_ptr<pgfleet::agent::FleetAgent> fleet;
  if (fleet_setup.has_value()) {
    fleet = std::make_unique<pgfleet::agent::FleetAgent>(**agent, std::move(*fleet_setup));
    pgfleet::agent::FleetAgent* link = fleet.get();
    (*agent)->set_control_plane_status([link] { return link->status(); });
    (*agent)->set_on_started([link] { link->Start(); });
  }
  const int exit_code = (*agent)->Run();
  (*agent)->set_control_plane_status(nullptr);
  fleet.reset();
  return exit_code;
}

}  // namespace

int main(int argc, char** argv) {
  pgfleet::agent::AgentCommandLine command_line = pgfleet::agent::ParseAgentCommandLine(argc, argv);
  if (command_line.exit_code.has_value()) return *command_line.exit_code;
  return RunAgent(std::move(command_line.options), std::move(command_line.fleet),
                  command_line.allowed_paths);
}
