#include "controller/maintenance/orchestrator.h"

#include <algorithm>
#include <map>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "controller/registry/label_selector.h"

namespace pgfleet::controller {

const pgfleet::v1::PauseState* FindPause(const pgfleet::v1::MetricsReport& report,
                                         const std::string& database) {
  for (const auto& pause : report.pauses()) {
    if (pause.database() == database) return &pause;
  }
  return nullptr;
}

bool SkipsAgent(const WindowRow& window, const std::string& agent_id) {
  if (!window.selector.empty() &&
      (!window.selected_agents.has_value() || window.selected_agents->count(agent_id) == 0)) {
    return true;
  }
  const auto listed = [&agent_id](const std::vector<std::string>& agents) {
    return std::find(agents.begin(), agents.end(), agent_id) != agents.end();
  };
  return listed(window.skip_agents) || listed(window.resumed_agents);
}

absl::Status ResolveWindowSelector(MaintenanceStore& store, WindowRow& window) {
  window.selected_agents.reset();
  if (window.selector.empty()) return absl::OkStatus();
  PGF_ASSIGN_OR_RETURN(LabelSelector selector, LabelSelector::Parse(window.selector));
  PGF_ASSIGN_OR_RETURN(std::vector<AgentRow> agents, store.ListAgents(window.environment));
  std::set<std::string> selected;
  for (const AgentRow& agent : agents) {
    if (selector.Matches(agent.labels)) selected.insert(agent.agent_id);
  }
  window.selected_agents = std::move(selected);
  return absl::OkStatus();
}

MaintenanceOrchestrator::MaintenanceOrchestrator(MaintenanceStore& store, AgentDirectory& agents,
                                                 const Clock& clock)
    : store_(store),
      agents_(agents),
      clock_(clock),
      sends_([this](const Message& message) { agents_.Send(message.agent_id, message.message); }) {}

MaintenanceOrchestrator::~MaintenanceOrchestrator() { ticker_.Stop(); }

void MaintenanceOrchestrator::StartTicking(absl::Duration interval,
                                           std::function<bool()> may_tick) {
  ticker_.Start(interval, [this, may_tick = std::move(may_tick)] {
    if (!may_tick || may_tick()) Tick(clock_.Now());
  });
}

void MaintenanceOrchestrator::ReleaseAndSend(Outbox out) {
  sends_.Push(std::move(out));
  mu_.Unlock();
  sends_.Drain();
}

void MaintenanceOrchestrator::QueuePause(const std::string& agent_id, const WindowRow& window,
                                         const std::string& actor, int64_t now, Outbox& out) {
  const int64_t remaining_s = std::max<int64_t>(1, (window.ends_unix_ms - now + 999) / 1000);
  Message message{agent_id, {}};
  pgfleet::v1::PauseCommand* pause = message.message.mutable_command()->mutable_pause();
  pause->set_database(window.database);
  pause->set_deadline_seconds(remaining_s);
  absl::StatusOr<uint64_t> id = store_.RecordCommand(
      agent_id, "pause",
      absl::StrCat("db=", window.database, " deadline=", remaining_s, "s window=", window.id),
      actor, now);
  if (!id.ok()) {
    // Not recorded, not sent: on a deposed leader the write is refused (fencing), and the
    // new leader decides what this agent is sent.
    PGF_ERROR("maintenance", "window %d: pause of %s not sent: %s", window.id, agent_id,
              id.status().message());
    return;
  }
  message.message.mutable_command()->set_command_id(*id);
  out.push_back(std::move(message));
}

void MaintenanceOrchestrator::QueueResume(const std::string& agent_id, const WindowRow& window,
                                          const std::string& actor, int64_t now, Outbox& out) {
  Message message{agent_id, {}};
  message.message.mutable_command()->mutable_resume()->set_database(window.database);
  absl::StatusOr<uint64_t> id = store_.RecordCommand(
      agent_id, "resume", absl::StrCat("db=", window.database, " window=", window.id), actor, now);
  if (!id.ok()) {
    PGF_ERROR("maintenance", "window %d: resume of %s not sent: %s", window.id, agent_id,
              id.status().message());
    return;
  }
  message.message.mutable_command()->set_command_id(*id);
  out.push_back(std::move(message));
}

absl::Status MaintenanceOrchestrator::Begin(WindowRow& window, int64_t now, Outbox& out) {
  // All or nothing: every agent of the environment must be there (or named as skipped).
  PGF_ASSIGN_OR_RETURN(std::vector<AgentRow> agents, store_.ListAgents(window.environment));
  std::vector<std::string> missing;
  for (const AgentRow& agent : agents) {
    if (!SkipsAgent(window, agent.agent_id) && !agents_.FindLive(agent.agent_id).has_value()) {
      missing.push_back(agent.agent_id);
    }
  }
  if (!missing.empty()) {
    return End(window, WindowState::kFailed,
               absl::StrCat("not started: agents offline: ", absl::StrJoin(missing, ", "),
                            " (bring them back or skip them)"),
               now, out);
  }
  window.state = WindowState::kPausing;
  window.pause_sent_unix_ms = now;
  PGF_RETURN_IF_ERROR(store_.UpdateWindow(window));
  for (const LiveAgent& agent : agents_.ListLive(window.environment)) {
    if (!SkipsAgent(window, agent.agent_id)) {
      QueuePause(agent.agent_id, window, window.created_by, now, out);
    }
  }
  PGF_INFO("maintenance", "window %d: pausing %s in %s until %s", window.id,
           window.database.empty() ? "all databases" : window.database, window.environment,
           absl::FormatTime(absl::FromUnixMillis(window.ends_unix_ms)));
  return absl::OkStatus();
}

absl::Status MaintenanceOrchestrator::End(WindowRow& window, WindowState state,
                                          const std::string& failure, int64_t now, Outbox& out) {
  const bool was_active = IsActiveWindow(window.state);
  window.state = state;
  window.failure = failure;
  if (!IsOpenWindow(state)) {
    window.ends_unix_ms = std::max(window.starts_unix_ms + 1, std::min(window.ends_unix_ms, now));
  }
  PGF_RETURN_IF_ERROR(store_.UpdateWindow(window));
  if (was_active) {
    for (const LiveAgent& agent : agents_.ListLive(window.environment)) {
      if (!SkipsAgent(window, agent.agent_id)) {
        QueueResume(agent.agent_id, window, window.created_by, now, out);
      }
    }
  }
  const char* name = WindowStateName(state);
  PGF_LOG_AT(state == WindowState::kFailed ? common::LogLevel::kWarning : common::LogLevel::kInfo,
             "maintenance", "window %d %s%s", window.id, name,
             failure.empty() ? "" : absl::StrCat(": ", failure));
  return store_.Audit("maintenance", absl::StrCat("maintenance.", name), window.environment,
                      absl::StrCat("window=", window.id, failure.empty() ? "" : " " + failure),
                      now);
}

absl::Status MaintenanceOrchestrator::Follow(WindowRow& window, int64_t now, Outbox& out) {
  if (now >= window.ends_unix_ms) return End(window, WindowState::kCompleted, "", now, out);
  if (window.state != WindowState::kPausing) return absl::OkStatus();
  std::vector<std::string> holding;
  for (const LiveAgent& agent : agents_.ListLive(window.environment)) {
    if (SkipsAgent(window, agent.agent_id)) continue;
    const pgfleet::v1::PauseState* pause =
        agent.metrics != nullptr ? FindPause(*agent.metrics, window.database) : nullptr;
    if (pause != nullptr && pause->drained()) continue;
    std::string detail = absl::StrCat(agent.agent_id, ": ");
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
    window.state = WindowState::kPaused;
    PGF_INFO("maintenance", "window %d: every agent of %s drained", window.id, window.environment);
    return store_.UpdateWindow(window);
  }
  if (now - window.pause_sent_unix_ms > window.drain_timeout_ms) {
    // All or nothing: one agent that cannot drain resumes everyone.
    return End(
        window, WindowState::kFailed,
        absl::StrCat("drain timed out after ", window.drain_timeout_ms / 1000,
                     "s; everything resumed. Holding it up: ", absl::StrJoin(holding, " | ")),
        now, out);
  }
  return absl::OkStatus();
}

void MaintenanceOrchestrator::TickLocked(int64_t now, Outbox& out) {
  absl::StatusOr<std::vector<WindowRow>> open = store_.ListWindows("", true);
  if (!open.ok()) {
    PGF_ERROR("maintenance", "cannot read windows: %s", open.status().message());
    return;
  }
  for (WindowRow& window : *open) {
    absl::Status status = ResolveWindowSelector(store_, window);
    if (!status.ok()) {
      PGF_ERROR("maintenance", "window %d: %s", window.id, status.message());
      continue;
    }
    if (window.state == WindowState::kScheduled) {
      if (now >= window.ends_unix_ms) {
        status = End(window, WindowState::kFailed,
                     "missed: the controller was down for the whole window", now, out);
      } else if (now >= window.starts_unix_ms) {
        status = Begin(window, now, out);
      }
    } else {
      status = Follow(window, now, out);
    }
    if (!status.ok()) {
      PGF_ERROR("maintenance", "window %d: %s", window.id, status.message());
    }
  }
}

void MaintenanceOrchestrator::Tick(absl::Time now) {
  mu_.Lock();
  Outbox out;
  TickLocked(UnixMillis(now), out);
  ReleaseAndSend(std::move(out));
}

void MaintenanceOrchestrator::OnAgentConnected(const std::string& agent_id,
                                               const std::string& environment) {
  mu_.Lock();
  Outbox out;
  const int64_t now = UnixMillis(clock_.Now());
  if (absl::StatusOr<std::vector<WindowRow>> open = store_.ListWindows(environment, true);
      open.ok()) {
    for (WindowRow& window : *open) {
      if (!ResolveWindowSelector(store_, window).ok()) continue;
      if (IsActiveWindow(window.state) && !SkipsAgent(window, agent_id) &&
          now < window.ends_unix_ms) {
        PGF_INFO("maintenance", "agent %s joined during window %d: pausing it too", agent_id,
                 window.id);
        QueuePause(agent_id, window, "maintenance", now, out);
      }
    }
  }
  ReleaseAndSend(std::move(out));
}

absl::StatusOr<WindowRow> MaintenanceOrchestrator::Schedule(const WindowSpec& spec,
                                                            const std::string& actor) {
  if (spec.environment.empty()) return absl::InvalidArgumentError("environment is required");
  PGF_RETURN_IF_ERROR(store_.GetEnvironment(spec.environment).status());
  const int64_t now = UnixMillis(clock_.Now());
  WindowRow window;
  if (!spec.selector.empty()) {
    PGF_ASSIGN_OR_RETURN(LabelSelector selector, LabelSelector::Parse(spec.selector));
    window.selector = selector.ToString();
    window.environment = spec.environment;
    PGF_RETURN_IF_ERROR(ResolveWindowSelector(store_, window));
    if (window.selected_agents->empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "selector \"", window.selector, "\" matches no agent of environment ", spec.environment));
    }
  }
  window.environment = spec.environment;
  window.database = spec.database;
  window.starts_unix_ms =
      spec.starts == absl::InfinitePast() ? now : std::max(UnixMillis(spec.starts), now);
  const absl::Duration duration =
      spec.duration > absl::ZeroDuration() ? spec.duration : kDefaultWindowDuration;
  window.ends_unix_ms = window.starts_unix_ms + absl::ToInt64Milliseconds(duration);
  window.drain_timeout_ms = absl::ToInt64Milliseconds(
      spec.drain_timeout > absl::ZeroDuration() ? spec.drain_timeout : kDefaultDrainTimeout);
  window.reason = spec.reason;
  window.skip_agents = spec.skip_agents;
  window.created_by = actor;
  window.created_unix_ms = now;
  absl::MutexLock lock(&mu_);
  return store_.CreateWindow(window);
}

absl::StatusOr<WindowRow> MaintenanceOrchestrator::Resume(const std::string& environment,
                                                          const std::string& database,
                                                          const std::string& actor,
                                                          const std::string& selector_text) {
  PGF_ASSIGN_OR_RETURN(LabelSelector selector, LabelSelector::Parse(selector_text));
  mu_.Lock();
  Outbox out;
  absl::StatusOr<WindowRow> resumed = [&]() -> absl::StatusOr<WindowRow> {
    const int64_t now = UnixMillis(clock_.Now());
    PGF_ASSIGN_OR_RETURN(std::vector<WindowRow> open, store_.ListWindows(environment, true));
    std::map<std::string, AgentRow> agents;
    if (!selector.empty()) {
      PGF_ASSIGN_OR_RETURN(std::vector<AgentRow> rows, store_.ListAgents(environment));
      for (AgentRow& row : rows) agents.emplace(row.agent_id, std::move(row));
    }
    // Windows whose selectors are disjoint may be active together: each one is resumed.
    std::optional<WindowRow> first;
    for (WindowRow& window : open) {
      if (!IsActiveWindow(window.state) || window.database != database) continue;
      PGF_RETURN_IF_ERROR(ResolveWindowSelector(store_, window));
      if (selector.empty()) {
        PGF_RETURN_IF_ERROR(
            End(window, WindowState::kCompleted, absl::StrCat("resumed by ", actor), now, out));
        if (!first.has_value()) first = window;
        continue;
      }
      // Only the agents the window covers and the selector matches; the window goes on for the
      // others, and ends once it covers nobody.
      std::vector<std::string> matching;
      bool others_left = false;
      for (const auto& [id, agent] : agents) {
        if (SkipsAgent(window, id)) continue;
        if (selector.Matches(agent.labels)) {
          matching.push_back(id);
        } else {
          others_left = true;
        }
      }
      if (matching.empty()) continue;
      window.resumed_agents.insert(window.resumed_agents.end(), matching.begin(), matching.end());
      if (!others_left) {
        PGF_RETURN_IF_ERROR(
            End(window, WindowState::kCompleted,
                absl::StrCat("resumed by ", actor, " (-l ", selector.ToString(), ")"), now, out));
      } else {
        PGF_RETURN_IF_ERROR(store_.UpdateWindow(window));
        PGF_INFO("maintenance", "window %d: %s resumed %s (-l %s); it goes on for the others",
                 window.id, actor, absl::StrJoin(matching, ", "), selector.ToString());
        PGF_RETURN_IF_ERROR(
            store_.Audit(actor, "maintenance.resume", window.environment,
                         absl::StrCat("window=", window.id, " selector=", selector.ToString(),
                                      " agents=", absl::StrJoin(matching, ",")),
                         now));
      }
      for (const std::string& id : matching) QueueResume(id, window, actor, now, out);
      if (!first.has_value()) first = window;
    }
    if (first.has_value()) return *first;
    return absl::NotFoundError(absl::StrCat(
        "no active maintenance window for ", database.empty() ? "all databases" : database, " in ",
        environment,
        selector.empty()
            ? ""
            : absl::StrCat(" pauses an agent matching \"", selector.ToString(), "\"")));
  }();
  ReleaseAndSend(std::move(out));
  return resumed;
}

absl::StatusOr<WindowRow> MaintenanceOrchestrator::Cancel(uint64_t id, const std::string& actor) {
  mu_.Lock();
  Outbox out;
  absl::StatusOr<WindowRow> cancelled = [&]() -> absl::StatusOr<WindowRow> {
    PGF_ASSIGN_OR_RETURN(WindowRow window, store_.GetWindow(id));
    PGF_RETURN_IF_ERROR(ResolveWindowSelector(store_, window));
    if (!IsOpenWindow(window.state)) {
      return absl::FailedPreconditionError(
          absl::StrCat("window ", id, " is already ", WindowStateName(window.state)));
    }
    PGF_RETURN_IF_ERROR(End(window, WindowState::kCancelled, absl::StrCat("cancelled by ", actor),
                            UnixMillis(clock_.Now()), out));
    return window;
  }();
  ReleaseAndSend(std::move(out));
  return cancelled;
}

}  // namespace pgfleet::controller
