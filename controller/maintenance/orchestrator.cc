#include "controller/maintenance/orchestrator.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/log.h"
#include "common/status_macros.h"

namespace pgfleet::controller {
namespace {

constexpr int64_t kDefaultDurationSeconds = 900;
constexpr int64_t kDefaultDrainSeconds = 60;

// The agent's report of its pause on `database`, if it has one.
const pgfleet::v1::PauseState* FindPause(const pgfleet::v1::MetricsReport& report,
                                         const std::string& database) {
  for (const auto& pause : report.pauses()) {
    if (pause.database() == database) return &pause;
  }
  return nullptr;
}

}  // namespace

MaintenanceOrchestrator::MaintenanceOrchestrator(Store& store, AgentRegistry& registry)
    : store_(store), registry_(registry) {}

MaintenanceOrchestrator::~MaintenanceOrchestrator() { ticker_.Stop(); }

void MaintenanceOrchestrator::StartTicking(absl::Duration interval) {
  ticker_.Start(interval, [this] { Tick(); });
}

bool MaintenanceOrchestrator::Skipped(const WindowRow& window, const std::string& agent_id) const {
  return std::find(window.skip_agents.begin(), window.skip_agents.end(), agent_id) !=
         window.skip_agents.end();
}

void MaintenanceOrchestrator::SendPause(AgentSession& session, const WindowRow& window,
                                        const std::string& actor) {
  const int64_t remaining_s =
      std::max<int64_t>(1, (window.ends_unix_ms - NowMillis() + 999) / 1000);
  pgfleet::v1::ControllerMessage message;
  pgfleet::v1::PauseCommand* pause = message.mutable_command()->mutable_pause();
  pause->set_database(window.database);
  pause->set_deadline_seconds(remaining_s);
  absl::StatusOr<uint64_t> id =
      store_.RecordCommand(session.agent_id(), "pause",
                           absl::StrCat("db=", window.database, " deadline=", remaining_s,
                                        "s window=", window.id),
                           actor, NowMillis());
  if (id.ok()) message.mutable_command()->set_command_id(*id);
  session.Send(message);
}

void MaintenanceOrchestrator::SendResume(AgentSession& session, const WindowRow& window,
                                         const std::string& actor) {
  pgfleet::v1::ControllerMessage message;
  message.mutable_command()->mutable_resume()->set_database(window.database);
  absl::StatusOr<uint64_t> id =
      store_.RecordCommand(session.agent_id(), "resume",
                           absl::StrCat("db=", window.database, " window=", window.id), actor,
                           NowMillis());
  if (id.ok()) message.mutable_command()->set_command_id(*id);
  session.Send(message);
}

absl::Status MaintenanceOrchestrator::Begin(WindowRow& window) {
  // All or nothing: every agent of the environment must be there (or named as skipped).
  PGF_ASSIGN_OR_RETURN(std::vector<AgentRow> agents, store_.ListAgents(window.environment));
  std::vector<std::string> missing;
  for (const AgentRow& agent : agents) {
    if (!Skipped(window, agent.agent_id) && registry_.Find(agent.agent_id) == nullptr) {
      missing.push_back(agent.agent_id);
    }
  }
  if (!missing.empty()) {
    return End(window, "failed",
               absl::StrCat("not started: agents offline: ", absl::StrJoin(missing, ", "),
                            " (bring them back or skip them)"));
  }
  window.state = "pausing";
  window.pause_sent_unix_ms = NowMillis();
  PGF_RETURN_IF_ERROR(store_.UpdateWindow(window));
  for (const std::shared_ptr<AgentSession>& session : registry_.List(window.environment)) {
    if (!Skipped(window, session->agent_id())) SendPause(*session, window, window.created_by);
  }
  PGF_INFO("maintenance", "window %d: pausing %s in %s until %s", window.id,
           window.database.empty() ? "all databases" : window.database, window.environment,
           absl::FormatTime(absl::FromUnixMillis(window.ends_unix_ms)));
  return absl::OkStatus();
}

absl::Status MaintenanceOrchestrator::End(WindowRow& window, const std::string& state,
                                          const std::string& failure) {
  const bool was_active = IsActiveWindow(window.state);
  window.state = state;
  window.failure = failure;
  if (state == "completed" || state == "failed" || state == "cancelled") {
    window.ends_unix_ms = std::max(window.starts_unix_ms + 1, std::min(window.ends_unix_ms, NowMillis()));
  }
  PGF_RETURN_IF_ERROR(store_.UpdateWindow(window));
  if (was_active) {
    for (const std::shared_ptr<AgentSession>& session : registry_.List(window.environment)) {
      if (!Skipped(window, session->agent_id())) SendResume(*session, window, window.created_by);
    }
  }
  PGF_LOG_AT(state == "failed" ? common::LogLevel::kWarning : common::LogLevel::kInfo,
             "maintenance", "window %d %s%s", window.id, state,
             failure.empty() ? "" : absl::StrCat(": ", failure));
  return store_.Audit("maintenance", absl::StrCat("maintenance.", state), window.environment,
                      absl::StrCat("window=", window.id, failure.empty() ? "" : " " + failure),
                      NowMillis());
}

absl::Status MaintenanceOrchestrator::Follow(WindowRow& window) {
  const int64_t now = NowMillis();
  if (now >= window.ends_unix_ms) return End(window, "completed", "");
  if (window.state != "pausing") return absl::OkStatus();
  std::vector<std::string> holding;
  for (const std::shared_ptr<AgentSession>& session : registry_.List(window.environment)) {
    if (Skipped(window, session->agent_id())) continue;
    std::optional<pgfleet::v1::MetricsReport> metrics = session->metrics();
    const pgfleet::v1::PauseState* pause =
        metrics.has_value() ? FindPause(*metrics, window.database) : nullptr;
    if (pause != nullptr && pause->drained()) continue;
    std::string detail = absl::StrCat(session->agent_id(), ": ");
    if (pause == nullptr) {
      absl::StrAppend(&detail, "pause not confirmed yet");
    } else {
      absl::StrAppend(&detail, pause->servers_in_use(), " server connections in use");
      if (!pause->oldest_client().empty()) {
        absl::StrAppend(&detail, "; oldest transaction from ", pause->oldest_client(), ", ",
                        pause->oldest_xact_age_ms() / 1000, "s old",
                        pause->oldest_query().empty() ? "" : ": " + pause->oldest_query());
      }
    }
    holding.push_back(detail);
  }
  if (holding.empty()) {
    window.state = "paused";
    PGF_INFO("maintenance", "window %d: every agent of %s drained", window.id, window.environment);
    return store_.UpdateWindow(window);
  }
  if (now - window.pause_sent_unix_ms > window.drain_timeout_ms) {
    // All or nothing: one agent that cannot drain resumes everyone.
    return End(window, "failed",
               absl::StrCat("drain timed out after ", window.drain_timeout_ms / 1000,
                            "s; everything resumed. Holding it up: ",
                            absl::StrJoin(holding, " | ")));
  }
  return absl::OkStatus();
}

void MaintenanceOrchestrator::Tick() {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::vector<WindowRow>> open = store_.ListWindows("", true);
  if (!open.ok()) {
    PGF_ERROR("maintenance", "cannot read windows: %s", open.status().message());
    return;
  }
  const int64_t now = NowMillis();
  for (WindowRow& window : *open) {
    absl::Status status;
    if (window.state == "scheduled") {
      if (now >= window.ends_unix_ms) {
        status = End(window, "failed", "missed: the controller was down for the whole window");
      } else if (now >= window.starts_unix_ms) {
        status = Begin(window);
      }
    } else {
      status = Follow(window);
    }
    if (!status.ok()) {
      PGF_ERROR("maintenance", "window %d: %s", window.id, status.message());
    }
  }
}

void MaintenanceOrchestrator::OnAgentConnected(AgentSession& session) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::vector<WindowRow>> open = store_.ListWindows(session.environment(), true);
  if (!open.ok()) return;
  for (const WindowRow& window : *open) {
    if (IsActiveWindow(window.state) && !Skipped(window, session.agent_id()) &&
        NowMillis() < window.ends_unix_ms) {
      PGF_INFO("maintenance", "agent %s joined during window %d: pausing it too",
               session.agent_id(), window.id);
      SendPause(session, window, "maintenance");
    }
  }
}

pgfleet::v1::MaintenanceWindow MaintenanceOrchestrator::Describe(const WindowRow& window) {
  pgfleet::v1::MaintenanceWindow out;
  out.set_id(window.id);
  out.set_environment(window.environment);
  out.set_database(window.database);
  out.set_starts_unix_ms(window.starts_unix_ms);
  out.set_ends_unix_ms(window.ends_unix_ms);
  out.set_reason(window.reason);
  out.set_state(window.state);
  out.set_created_by(window.created_by);
  out.set_failure(window.failure);
  for (const std::string& skip : window.skip_agents) out.add_skip_agents(skip);
  out.set_drain_timeout_seconds(window.drain_timeout_ms / 1000);
  absl::StatusOr<std::vector<AgentRow>> agents = store_.ListAgents(window.environment);
  if (!agents.ok()) return out;
  for (const AgentRow& agent : *agents) {
    pgfleet::v1::WindowAgent* row = out.add_agents();
    row->set_agent_id(agent.agent_id);
    if (Skipped(window, agent.agent_id)) {
      row->set_state("skipped");
      continue;
    }
    std::shared_ptr<AgentSession> session = registry_.Find(agent.agent_id);
    if (session == nullptr) {
      row->set_state("offline");
      continue;
    }
    std::optional<pgfleet::v1::MetricsReport> metrics = session->metrics();
    const pgfleet::v1::PauseState* pause =
        metrics.has_value() ? FindPause(*metrics, window.database) : nullptr;
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

absl::StatusOr<pgfleet::v1::MaintenanceWindow> MaintenanceOrchestrator::Pause(
    const Caller& caller, const pgfleet::v1::PauseWindowRequest& request) {
  pgfleet::v1::ScheduleWindowRequest schedule;
  schedule.set_environment(request.environment());
  schedule.set_database(request.database());
  schedule.set_starts_unix_ms(NowMillis());
  schedule.set_duration_seconds(request.duration_seconds());
  schedule.set_reason(request.reason());
  *schedule.mutable_skip_agents() = request.skip_agents();
  schedule.set_drain_timeout_seconds(request.drain_timeout_seconds());
  absl::StatusOr<pgfleet::v1::MaintenanceWindow> window = Schedule(caller, schedule);
  if (!window.ok()) return window;
  Tick();  // Start it now rather than at the next tick.
  return Get(caller, window->id());
}

absl::StatusOr<pgfleet::v1::MaintenanceWindow> MaintenanceOrchestrator::Schedule(
    const Caller& caller, const pgfleet::v1::ScheduleWindowRequest& request) {
  PGF_RETURN_IF_ERROR(RequireRole(caller, Role::kOperator));
  if (request.environment().empty()) return absl::InvalidArgumentError("environment is required");
  PGF_RETURN_IF_ERROR(store_.GetEnvironment(request.environment()).status());
  WindowRow window;
  window.environment = request.environment();
  window.database = request.database();
  window.starts_unix_ms = std::max(request.starts_unix_ms(), NowMillis());
  const int64_t duration_s =
      request.duration_seconds() > 0 ? request.duration_seconds() : kDefaultDurationSeconds;
  window.ends_unix_ms = window.starts_unix_ms + duration_s * 1000;
  window.drain_timeout_ms =
      (request.drain_timeout_seconds() > 0 ? request.drain_timeout_seconds() : kDefaultDrainSeconds) *
      1000;
  window.reason = request.reason();
  window.skip_agents.assign(request.skip_agents().begin(), request.skip_agents().end());
  window.created_by = caller.actor;
  window.created_unix_ms = NowMillis();
  absl::MutexLock lock(&mu_);
  PGF_ASSIGN_OR_RETURN(WindowRow created, store_.CreateWindow(window));
  PGF_RETURN_IF_ERROR(store_.Audit(
      caller.actor, "maintenance.schedule", window.environment,
      absl::StrCat("window=", created.id, " db=", window.database, " from ",
                   absl::FormatTime(absl::FromUnixMillis(window.starts_unix_ms)), " for ",
                   duration_s, "s reason=", window.reason),
      NowMillis()));
  return Describe(created);
}

absl::StatusOr<pgfleet::v1::MaintenanceWindow> MaintenanceOrchestrator::Resume(
    const Caller& caller, const pgfleet::v1::ResumeWindowRequest& request) {
  PGF_RETURN_IF_ERROR(RequireRole(caller, Role::kOperator));
  absl::MutexLock lock(&mu_);
  PGF_ASSIGN_OR_RETURN(std::vector<WindowRow> open, store_.ListWindows(request.environment(), true));
  for (WindowRow& window : open) {
    if (!IsActiveWindow(window.state) || window.database != request.database()) continue;
    PGF_RETURN_IF_ERROR(End(window, "completed", absl::StrCat("resumed by ", caller.actor)));
    return Describe(window);
  }
  return absl::NotFoundError(absl::StrCat("no active maintenance window for ",
                                          request.database().empty() ? "all databases"
                                                                     : request.database(),
                                          " in ", request.environment()));
}

absl::StatusOr<pgfleet::v1::MaintenanceWindow> MaintenanceOrchestrator::Get(const Caller& caller,
                                                                            uint64_t id) {
  PGF_RETURN_IF_ERROR(RequireRole(caller, Role::kViewer));
  absl::MutexLock lock(&mu_);
  PGF_ASSIGN_OR_RETURN(WindowRow window, store_.GetWindow(id));
  return Describe(window);
}

absl::StatusOr<pgfleet::v1::ListWindowsResponse> MaintenanceOrchestrator::List(
    const Caller& caller, const std::string& environment) {
  PGF_RETURN_IF_ERROR(RequireRole(caller, Role::kViewer));
  absl::MutexLock lock(&mu_);
  PGF_ASSIGN_OR_RETURN(std::vector<WindowRow> windows, store_.ListWindows(environment, false));
  pgfleet::v1::ListWindowsResponse response;
  for (const WindowRow& window : windows) *response.add_windows() = Describe(window);
  return response;
}

absl::StatusOr<pgfleet::v1::MaintenanceWindow> MaintenanceOrchestrator::Cancel(
    const Caller& caller, uint64_t id) {
  PGF_RETURN_IF_ERROR(RequireRole(caller, Role::kOperator));
  absl::MutexLock lock(&mu_);
  PGF_ASSIGN_OR_RETURN(WindowRow window, store_.GetWindow(id));
  if (!IsOpenWindow(window.state)) {
    return absl::FailedPreconditionError(absl::StrCat("window ", id, " is already ", window.state));
  }
  PGF_RETURN_IF_ERROR(End(window, "cancelled", absl::StrCat("cancelled by ", caller.actor)));
  return Describe(window);
}

}  // namespace pgfleet::controller
