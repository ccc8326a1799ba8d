#include "controller/api/maintenance_api.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace pgfleet::controller {

pgfleet::v1::MaintenanceWindow MaintenanceApi::Describe(const WindowRow& stored) {
  WindowRow window = stored;
  // Shows only the agents the window covers now (a selector is matched against current labels).
  const bool resolved = ResolveWindowSelector(store_, window).ok();
  pgfleet::v1::MaintenanceWindow out;
  out.set_selector(window.selector);
  out.set_id(window.id);
  out.set_environment(window.environment);
  out.set_database(window.database);
  out.set_starts_unix_ms(window.starts_unix_ms);
  out.set_ends_unix_ms(window.ends_unix_ms);
  out.set_reason(window.reason);
  out.set_state(WindowStateName(window.state));
  out.set_created_by(window.created_by);
  out.set_failure(window.failure);
  for (const std::string& skip : window.skip_agents) out.add_skip_agents(skip);
  for (const std::string& resumed : window.resumed_agents) out.add_resumed_agents(resumed);
  out.set_drain_timeout_seconds(window.drain_timeout_ms / 1000);
  absl::StatusOr<std::vector<AgentRow>> agents = store_.ListAgents(window.environment);
  if (!agents.ok()) return out;
  for (const AgentRow& agent : *agents) {
    if (!window.selector.empty() &&
        (!resolved || window.selected_agents->count(agent.agent_id) == 0)) {
      continue;  // Outside the selector: not part of this window at all.
    }
    pgfleet::v1::WindowAgent* row = out.add_agents();
    row->set_agent_id(agent.agent_id);
    if (std::find(window.resumed_agents.begin(), window.resumed_agents.end(), agent.agent_id) !=
        window.resumed_agents.end()) {
      row->set_state("resumed");
      continue;
    }
    if (SkipsAgent(window, agent.agent_id)) {
      row->set_state("skipped");
      continue;
    }
    std::optional<LiveAgent> live = agents_.FindLive(agent.agent_id);
    if (!live.has_value()) {
      row->set_state("offline");
      continue;
    }
    const pgfleet::v1::PauseState* pause =
        live->metrics != nullptr ? FindPause(*live->metrics, window.database) : nullptr;
    if (!IsActiveWindow(window.state)) {
      // The agent's last report may predate the RESUME by up to one metrics interval.
      row->set_state(pause == nullptr ? "resumed" : "resuming");
    } else if (pause == nullptr) {
      row->set_state("pausing");
    } else {
      row->set_state(pause->drained() ? "paused" : "pausing");
      row->set_servers_in_use(pause->servers_in_use());
      row->set_clients_waiting(pause->clients_waiting());
      row->set_oldest_client(pause->oldest_client());
      row->set_oldest_xact_age_ms(pause->oldest_xact_age_ms());
      row->set_oldest_query(pause->oldest_query());
    }
  }
  return out;
}

absl::Status MaintenanceApi::AuditSchedule(const Caller& caller, const WindowRow& window) {
  return store_.Audit(
      caller.actor, "maintenance.schedule", window.environment,
      absl::StrCat("window=", window.id, " db=", window.database, " from ",
                   absl::FormatTime(absl::FromUnixMillis(window.starts_unix_ms)), " for ",
                   (window.ends_unix_ms - window.starts_unix_ms) / 1000, "s reason=", window.reason,
                   window.selector.empty() ? "" : " selector=" + window.selector),
      UnixMillis(clock_.Now()));
}

absl::StatusOr<pgfleet::v1::MaintenanceWindow> MaintenanceApi::Pause(
    const Caller& caller, const pgfleet::v1::PauseWindowRequest& request) {
  PGF_RETURN_IF_ERROR(RequireRole(caller, Role::kOperator));
  WindowSpec spec;
  spec.environment = request.environment();
  spec.database = request.database();
  spec.starts = absl::InfinitePast();
  spec.duration = absl::Seconds(request.duration_seconds());
  spec.drain_timeout = absl::Seconds(request.drain_timeout_seconds());
  spec.reason = request.reason();
  spec.skip_agents.assign(request.skip_agents().begin(), request.skip_agents().end());
  spec.selector = request.selector();
  PGF_ASSIGN_OR_RETURN(WindowRow scheduled, engine_.Schedule(spec, caller.actor));
  PGF_RETURN_IF_ERROR(AuditSchedule(caller, scheduled));
  engine_.Tick(clock_.Now());  // Start it now rather than at the next tick.
  PGF_ASSIGN_OR_RETURN(WindowRow window, store_.GetWindow(scheduled.id));
  return Describe(window);
}

absl::StatusOr<pgfleet::v1::MaintenanceWindow> MaintenanceApi::Schedule(
    const Caller& caller, const pgfleet::v1::ScheduleWindowRequest& request) {
  PGF_RETURN_IF_ERROR(RequireRole(caller, Role::kOperator));
  WindowSpec spec;
  spec.environment = request.environment();
  spec.database = request.database();
  spec.starts = request.starts_unix_ms() > 0 ? absl::FromUnixMillis(request.starts_unix_ms())
                                             : absl::InfinitePast();
  spec.duration = absl::Seconds(request.duration_seconds());
  spec.drain_timeout = absl::Seconds(request.drain_timeout_seconds());
  spec.reason = request.reason();
  spec.skip_agents.assign(request.skip_agents().begin(), request.skip_agents().end());
  spec.selector = request.selector();
  PGF_ASSIGN_OR_RETURN(WindowRow window, engine_.Schedule(spec, caller.actor));
  PGF_RETURN_IF_ERROR(AuditSchedule(caller, window));
  return Describe(window);
}

absl::StatusOr<pgfleet::v1::MaintenanceWindow> MaintenanceApi::Resume(
    const Caller& caller, const pgfleet::v1::ResumeWindowRequest& request) {
  PGF_RETURN_IF_ERROR(RequireRole(caller, Role::kOperator));
  PGF_ASSIGN_OR_RETURN(WindowRow window, engine_.Resume(request.environment(), request.database(),
                                                        caller.actor, request.selector()));
  return Describe(window);
}

absl::StatusOr<pgfleet::v1::MaintenanceWindow> MaintenanceApi::GetWindow(
    const Caller& caller, const pgfleet::v1::GetWindowRequest& request) {
  PGF_RETURN_IF_ERROR(RequireRole(caller, Role::kViewer));
  PGF_ASSIGN_OR_RETURN(WindowRow window, store_.GetWindow(request.id()));
  return Describe(window);
}

absl::StatusOr<pgfleet::v1::ListWindowsResponse> MaintenanceApi::ListWindows(
    const Caller& caller, const pgfleet::v1::ListWindowsRequest& request) {
  PGF_RETURN_IF_ERROR(RequireRole(caller, Role::kViewer));
  PGF_ASSIGN_OR_RETURN(std::vector<WindowRow> windows,
                       store_.ListWindows(request.environment(), false));
  pgfleet::v1::ListWindowsResponse response;
  for (const WindowRow& window : windows) *response.add_windows() = Describe(window);
  return response;
}

absl::StatusOr<pgfleet::v1::MaintenanceWindow> MaintenanceApi::CancelWindow(
    const Caller& caller, const pgfleet::v1::CancelWindowRequest& request) {
  PGF_RETURN_IF_ERROR(RequireRole(caller, Role::kOperator));
  PGF_ASSIGN_OR_RETURN(WindowRow window, engine_.Cancel(request.id(), caller.actor));
  return Describe(window);
}

}  // namespace pgfleet::controller
