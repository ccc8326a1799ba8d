// pgfleet-agent: a PgBouncer-compatible connection pooler. Usage: pgfleet-agent [options] CONFIG
// main() only parses flags (agent/agent_flags.cc) and wires the pooler to the controller link.
#include <event2/event.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "agent/agent.h"
#include "agent/agent_flags.h"
#include "agent/daemon.h"
#include "agent/handover.h"
#include "agent/link/fleet_agent.h"
#include "agent/link/state_dir.h"
#include "agent/reboot.h"
#include "common/config/config.h"
#include "common/log.h"
#include "common/service_notify.h"
#include "common/status_macros.h"

namespace {

// How long a process started by a hand-over waits for its controller stream before it says it
// is ready anyway: the controller being down must not block a restart (fail-static), but when
// it is up the new stream supersedes the old one without a gap.
constexpr absl::Duration kReadyWaitForController = absl::Seconds(5);
// How long -R waits for the running agent to answer and send its sockets (it does so as soon
// as its loop handles the SIGUSR2).
constexpr absl::Duration kTakeoverAnswerTimeout = absl::Seconds(15);
// How often systemd's STATUS= line is refreshed (when it changed) under a Type=notify unit.
constexpr absl::Duration kServiceStatusInterval = absl::Seconds(5);

// What the process does around the pooler: PgBouncer's -d and -u.
struct ProcessOptions {
  bool daemon = false;
  std::optional<pgfleet::agent::RunAsUser> run_as;
};

// -u with --controller: the state dir was made by root before the switch; the agent writes
// pushed configs there afterwards.
absl::Status GiveStateDirTo(const std::string& state_dir, const pgfleet::agent::RunAsUser& user) {
  std::error_code error;
  auto give = [&](const std::filesystem::path& path) -> absl::Status {
    if (lchown(path.c_str(), user.uid, user.gid) != 0) {
      return absl::ErrnoToStatus(errno, "-u: chown " + path.string());
    }
    return absl::OkStatus();
  };
  PGF_RETURN_IF_ERROR(give(state_dir));
  for (const auto& entry : std::filesystem::recursive_directory_iterator(state_dir, error)) {
    PGF_RETURN_IF_ERROR(give(entry.path()));
  }
  if (error) return absl::InternalError("-u: " + state_dir + ": " + error.message());
  return absl::OkStatus();
}

// PgBouncer's -R: the sockets of the agent the config's pidfile names, or nullopt to start
// normally when none runs (as PgBouncer: "old process not found, try to continue normally").
// -R: the running agent to take over from. With a controller, the one holding the state dir
// (it serves the pushed config, whose pidfile need not be the local file's); else the one the
// config's pidfile names, as PgBouncer.
absl::StatusOr<std::optional<pid_t>> FindRunningAgent(
    const std::string& config_path, const std::optional<pgfleet::agent::FleetOptions>& fleet,
    std::string* where) {
  if (fleet.has_value()) {
    PGF_ASSIGN_OR_RETURN(std::string state_dir, pgfleet::agent::FleetStateDir(*fleet, config_path));
    *where = absl::StrCat("state dir ", state_dir);
    PGF_ASSIGN_OR_RETURN(std::optional<pid_t> holder, pgfleet::agent::StateDirHolder(state_dir));
    if (!holder.has_value()) return std::nullopt;
    return pgfleet::agent::CheckAgentToTakeOver(*holder, absl::StrCat(state_dir, "/lock"));
  }
  PGF_ASSIGN_OR_RETURN(pgfleet::config::Config config, pgfleet::config::LoadConfig(config_path));
  *where = absl::StrCat("pidfile ", config.pidfile);
  return pgfleet::agent::FindAgentToTakeOver(config.pidfile);
}

absl::StatusOr<std::optional<pgfleet::agent::InheritedSockets>> TakeOverFromRunningAgent(
    const std::string& config_path, const std::optional<pgfleet::agent::FleetOptions>& fleet) {
  std::string where;
  absl::StatusOr<std::optional<pid_t>> old_pid = FindRunningAgent(config_path, fleet, &where);
  if (!old_pid.ok()) return old_pid.status();
  if (!old_pid->has_value()) {
    PGF_INFO("agent", "-R: no running agent (%s), starting normally", where);
    return std::nullopt;
  }
  PGF_INFO("agent", "-R: taking the listeners over from pid %d", **old_pid);
  absl::StatusOr<pgfleet::agent::InheritedSockets> taken =
      pgfleet::agent::RequestTakeover(**old_pid, kTakeoverAnswerTimeout);
  if (!taken.ok()) return taken.status();
  return std::optional<pgfleet::agent::InheritedSockets>(*std::move(taken));
}

// Wiring: the pooler alone, or with the controller link attached through AgentControl.
// `inherited`: what the old process handed over when this one was started by a RESTART.
int RunAgent(pgfleet::agent::AgentOptions options,
             std::optional<pgfleet::agent::FleetOptions> fleet_options,
             const std::vector<std::string>& allowed_paths, const ProcessOptions& process,
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
    if (process.run_as.has_value() && process.run_as->switch_needed) {
      if (absl::Status given = GiveStateDirTo(setup->state_dir, *process.run_as); !given.ok()) {
        for (int fd : options.inherited_listeners) close(fd);
        if (options.inherited_metrics_fd >= 0) close(options.inherited_metrics_fd);
        return fail(given);
      }
    }
    options.config_path = setup->start_config_path;
    options.path_policy = setup->path_policy;
    options.pushed_config_path = setup->pushed_config_path;
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
  // PgBouncer's `user` key, when -u (which wins, as in PgBouncer) did not name one: resolved
  // now, so an unknown user fails the start before anything serves.
  std::optional<pgfleet::agent::RunAsUser> run_as = process.run_as;
  if (const pgfleet::config::Config& cfg = (*agent)->config();
      !run_as && !cfg.run_as_user.empty()) {
    absl::StatusOr<pgfleet::agent::RunAsUser> user = pgfleet::agent::ResolveRunAsUser(
        cfg.run_as_user, absl::StrCat(cfg.Where("user"), ": key 'user' = '", cfg.run_as_user, "'"));
    if (!user.ok()) return fail(user.status());
    if (fleet_setup.has_value() && user->switch_needed) {
      if (absl::Status given = GiveStateDirTo(fleet_setup->state_dir, *user); !given.ok()) {
        return fail(given);
      }
    }
    run_as = *std::move(user);
  }
  // -d, before anything starts a thread (the link starts in on_started). A process forked by a
  // hand-over is in the background already (its parent was): it stays the process it is, so
  // the pid it reports is the one that serves. One started with -R -d detaches (it sends its
  // "ready" from the background, where it serves).
  int detached_ready_fd = -1;
  if (process.daemon && (inherited == nullptr || inherited->requested)) {
    if ((*agent)->config().pidfile.empty()) {
      return fail(absl::FailedPreconditionError(
          "-d/--daemon needs pidfile set in the config (as PgBouncer), so the agent can be "
          "found and stopped"));
    }
    if ((*agent)->config().logfile.empty()) {
      PGF_WARN("agent",
               "-d/--daemon without a logfile in the config: once detached, the log "
               "goes nowhere");
    }
    absl::StatusOr<int> ready_fd = pgfleet::agent::DetachIntoBackground();
    if (!ready_fd.ok()) return fail(ready_fd.status());
    detached_ready_fd = *ready_fd;
    event_reinit((*agent)->loop().base());
  }
  // systemd (Type=notify): a no-op unless NOTIFY_SOCKET is set.
  (*agent)->set_service_notifier(
      [](const std::string& state) { pgfleet::common::NotifyServiceManager(state); });
  // Declared after the agent, so destroyed first: the link's timers live on the agent's loop.
  std::unique_ptr<pgfleet::agent::FleetAgent> fleet;
  std::unique_ptr<pgfleet::agent::Timer> ready_timer;
  std::unique_ptr<pgfleet::agent::Timer> status_timer;
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
  (*agent)->set_on_started([link, inherited, pooler, &ready_timer, &status_timer, run_as,
                            detached_ready_fd]() -> absl::Status {
    // -u or `user`: bound and the pidfile written as root; nothing after this needs root.
    if (run_as.has_value()) {
      PGF_RETURN_IF_ERROR(pgfleet::agent::SwitchToUser(*run_as));
      if (run_as->switch_needed) {
        PGF_INFO("agent", "running as user %s (uid %d)", run_as->name,
                 static_cast<int>(run_as->uid));
      }
    }
    if (detached_ready_fd >= 0) pgfleet::agent::DetachedChildReady(detached_ready_fd);
    if (link != nullptr) link->Start();
    if (pgfleet::common::ServiceManagerListening()) {
      auto last_status = std::make_shared<std::string>(pooler->ServiceStatus());
      if (inherited == nullptr) {
        pgfleet::common::NotifyServiceManager("READY=1\nSTATUS=" + *last_status);
      }
      status_timer = std::make_unique<pgfleet::agent::Timer>(pooler->loop(), [pooler, last_status] {
        std::string status = pooler->ServiceStatus();
        if (status == *last_status) return;
        *last_status = status;
        pgfleet::common::NotifyServiceManager("STATUS=" + status);
      });
      status_timer->Start(kServiceStatusInterval, /*repeat=*/true);
    }
    if (inherited == nullptr) return absl::OkStatus();
    // Accepting on the handed-over listeners from the moment the loop runs; "ready" tells the
    // old process to let go of them, once the controller stream is up (or a bound passed).
    const absl::Time started = absl::Now();
    ready_timer = std::make_unique<pgfleet::agent::Timer>(
        pooler->loop(), [link, inherited, pooler, started, &ready_timer] {
          const bool linked =
              link == nullptr || link->link_state() == pgfleet::agent::LinkState::kConnected;
          if (!linked && absl::Now() - started < kReadyWaitForController) return;
          if (!linked) {
            PGF_WARN("agent", "hand-over: no controller stream after %s; serving without it",
                     absl::FormatDuration(kReadyWaitForController));
          }
          pgfleet::agent::ReportHandoverReady(*inherited);
          // Under systemd this process is the service from now on (the unit's
          // NotifyAccess=all lets it say so): the old one exits once drained.
          pgfleet::common::NotifyServiceManager(
              absl::StrCat("MAINPID=", getpid(), "\nREADY=1\nSTATUS=", pooler->ServiceStatus()));
          ready_timer->Cancel();
        });
    ready_timer->Start(absl::Milliseconds(20), /*repeat=*/true);
    return absl::OkStatus();
  });
  const int exit_code = (*agent)->Run();
  ready_timer.reset();
  status_timer.reset();
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
  // A reload (SIGHUP) or restart (SIGUSR2) sent while the agent starts, before Agent::Run
  // handles them, would take their default action and kill it: they are held until then (a
  // SIGHUP then reloads). SIGINT and SIGTERM keep theirs: stopping a start is what they ask.
  sigset_t held;
  sigemptyset(&held);
  sigaddset(&held, SIGHUP);
  sigaddset(&held, SIGUSR2);
  sigprocmask(SIG_BLOCK, &held, nullptr);
  pgfleet::agent::SetProcessArguments(argc, argv);
  pgfleet::agent::AgentCommandLine command_line = pgfleet::agent::ParseAgentCommandLine(argc, argv);
  if (command_line.exit_code.has_value()) return *command_line.exit_code;
  ProcessOptions process;
  process.daemon = command_line.daemon;
  if (!command_line.run_as_user.empty()) {
    absl::StatusOr<pgfleet::agent::RunAsUser> user =
        pgfleet::agent::ResolveRunAsUser(command_line.run_as_user);
    if (!user.ok()) {
      fprintf(stderr, "pgfleet-agent: %s\n", std::string(user.status().message()).c_str());
      return 1;
    }
    process.run_as = *std::move(user);
  }
  // A process started by a RESTART finds the old one's sockets waiting (agent/handover.h).
  absl::StatusOr<std::optional<pgfleet::agent::InheritedSockets>> inherited =
      pgfleet::agent::ReceiveHandover(absl::Seconds(10));
  if (!inherited.ok()) {
    fprintf(stderr, "pgfleet-agent: hand-over: %s\n",
            std::string(inherited.status().message()).c_str());
    return 1;
  }
  // -R asks the running agent for its sockets. Not in a process forked by a hand-over: that one
  // has its sockets already (and the same argv, -R included, as the process that forked it).
  if (command_line.reboot && !inherited->has_value()) {
    absl::StatusOr<std::optional<pgfleet::agent::InheritedSockets>> taken =
        TakeOverFromRunningAgent(command_line.options.config_path, command_line.fleet);
    if (!taken.ok()) {
      fprintf(stderr, "pgfleet-agent: %s\n", std::string(taken.status().message()).c_str());
      return 1;
    }
    *inherited = *std::move(taken);
  }
  const int exit_code = RunAgent(std::move(command_line.options), std::move(command_line.fleet),
                                 command_line.allowed_paths, process,
                                 inherited->has_value() ? &**inherited : nullptr);
  if (inherited->has_value()) pgfleet::agent::CloseUnusedInherited(**inherited);
  return exit_code;
}
