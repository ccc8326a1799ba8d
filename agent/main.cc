// pgfleet-agent: a PgBouncer-compatible connection pooler. Usage: pgfleet-agent [options] CONFIG
// main() only parses flags (agent/agent_flags.cc) and wires the pooler to the controller link.
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "agent/agent.h"
#include "agent/agent_flags.h"
#include "agent/handover.h"
#include "agent/link/fleet_agent.h"
#include "common/log.h"

namespace {

// How long a process started by a hand-over waits for its controller stream before it says it
// is ready anyway: the controller being down must not block a restart (fail-static), but when
// it is up the new stream supersedes the old one without a gap.
constexpr absl::Duration kReadyWaitForController = absl::Seconds(5);

// Wiring: the pooler alone, or with the controller link attached through AgentControl.
// `inherited`: what the old process handed over when this one was started by a RESTART.
int RunAgent(pgfleet::agent::AgentOptions options,
             std::optional<pgfleet::agent::FleetOptions> fleet_options,
             const std::vector<std::string>& allowed_paths,
             pgfleet::agent::InheritedSockets* inherited) {
  auto fail = [inherited](const absl::Status& status) {
    fprintf(stderr, "pgfleet-agent: %s\n", std::string(status.message()).c_str());
    if (inherited != nullptr) {
      pgfleet::agent::ReportHandoverFailed(*inherited, std::string(status.message()));
    }
    return 1;
  };
  if (inherited != nullptr) {
    // The agent owns the sockets from here on (Create's failure closes them too).
    options.inherited_listeners = std::move(inherited->listeners);
    inherited->listeners.clear();
    options.inherited_metrics_fd = inherited->metrics_fd;
    inherited->metrics_fd = -1;
    options.handover_parent_pid = inherited->parent_pid;
    options.inherited_state = std::move(inherited->state);
    if (fleet_options.has_value()) {
      fleet_options->inherited_state_lock_fd = inherited->state_lock_fd;
      inherited->state_lock_fd = -1;
      fleet_options->handover_command_id = inherited->command_id;
    }
    pgfleet::agent::CloseUnusedInherited(*inherited);
  }
  std::optional<pgfleet::agent::FleetSetup> fleet_setup;
  if (fleet_options.has_value()) {
    absl::StatusOr<pgfleet::agent::FleetSetup> setup =
        pgfleet::agent::PrepareFleet(std::move(*fleet_options), options.config_path);
    if (!setup.ok()) {
      for (int fd : options.inherited_listeners) close(fd);
      if (options.inherited_metrics_fd >= 0) close(options.inherited_metrics_fd);
      return fail(setup.status());
    }
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
  std::unique_ptr<pgfleet::agent::Timer> ready_timer;
  pgfleet::agent::FleetAgent* link = nullptr;
  if (fleet_setup.has_value()) {
    fleet = std::make_unique<pgfleet::agent::FleetAgent>(**agent, std::move(*fleet_setup));
    link = fleet.get();
    (*agent)->set_control_plane_status([link] { return link->status(); });
    pgfleet::agent::Agent::HandoverHooks hooks;
    hooks.state_lock_fd = [link] { return link->state_lock_fd(); };
    hooks.hold_link = [link](bool hold) { link->HoldReconnects(hold); };
    hooks.on_handed_over = [link] { link->Stop(); };
    (*agent)->set_handover_hooks(std::move(hooks));
  }
  pgfleet::agent::Agent* pooler = agent->get();
  (*agent)->set_on_started([link, inherited, pooler, &ready_timer] {
    if (link != nullptr) link->Start();
    if (inherited == nullptr) return;
    // Accepting on the handed-over listeners from the moment the loop runs; "ready" tells the
    // old process to let go of them, once the controller stream is up (or a bound passed).
    const absl::Time started = absl::Now();
    ready_timer = std::make_unique<pgfleet::agent::Timer>(
        pooler->loop(), [link, inherited, started, &ready_timer] {
          const bool linked =
              link == nullptr || link->link_state() == pgfleet::agent::LinkState::kConnected;
          if (!linked && absl::Now() - started < kReadyWaitForController) return;
          if (!linked) {
            PGF_WARN("agent", "hand-over: no controller stream after %s; serving without it",
                     absl::FormatDuration(kReadyWaitForController));
          }
          pgfleet::agent::ReportHandoverReady(*inherited);
          ready_timer->Cancel();
        });
    ready_timer->Start(absl::Milliseconds(20), /*repeat=*/true);
  });
  const int exit_code = (*agent)->Run();
  ready_timer.reset();
  if (inherited != nullptr && !(*agent)->start_error().ok()) {
    pgfleet::agent::ReportHandoverFailed(*inherited,
                                         std::string((*agent)->start_error().message()));
  }
  (*agent)->set_control_plane_status(nullptr);
  fleet.reset();
  return exit_code;
}

}  // namespace

int main(int argc, char** argv) {
  pgfleet::agent::SetProcessArguments(argc, argv);
  pgfleet::agent::AgentCommandLine command_line = pgfleet::agent::ParseAgentCommandLine(argc, argv);
  if (command_line.exit_code.has_value()) return *command_line.exit_code;
  // A process started by a RESTART finds the old one's sockets waiting (agent/handover.h).
  absl::StatusOr<std::optional<pgfleet::agent::InheritedSockets>> inherited =
      pgfleet::agent::ReceiveHandover(absl::Seconds(10));
  if (!inherited.ok()) {
    fprintf(stderr, "pgfleet-agent: hand-over: %s\n",
            std::string(inherited.status().message()).c_str());
    return 1;
  }
  const int exit_code =
      RunAgent(std::move(command_line.options), std::move(command_line.fleet),
               command_line.allowed_paths, inherited->has_value() ? &**inherited : nullptr);
  if (inherited->has_value()) pgfleet::agent::CloseUnusedInherited(**inherited);
  return exit_code;
}
