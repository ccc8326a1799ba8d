#include "controller/metrics/controller_metrics.h"

#include <map>
#include <set>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "controller/api/rollout_api.h"
#include "controller/maintenance/maintenance_store.h"
#include "controller/rollout/rollout_store.h"

namespace pgfleet::controller {
namespace {

using metrics::Exposition;
using metrics::LabelPairs;

constexpr const char* kRolloutStates[] = {"running", "paused", "succeeded", "failed", "aborted"};
constexpr const char* kRolloutPhases[] = {"applying", "baking", "holding", "done"};
constexpr WindowState kOpenWindowStates[] = {WindowState::kScheduled, WindowState::kPausing,
                                             WindowState::kPaused};

// Per environment, what the agents list says.
struct EnvironmentCounts {
  int total = 0;
  int connected = 0;
  int drifted = 0;
  int converged = 0;
  int restart_pending = 0;
  std::map<uint64_t, int> by_applied_version;
};

// One gauge family with a sample per environment.
template <typename Fn>
void PerEnvironment(Exposition& out, const char* name, const char* help,
                    const std::vector<std::string>& environments, Fn value) {
  out.Family(name, "gauge", help);
  for (const std::string& env : environments) {
    out.Sample(name, {{"environment", env}}, static_cast<double>(value(env)));
  }
}

}  // namespace

ControllerMetrics::ControllerMetrics(Store& store, FleetApi& fleet, const AgentRegistry& registry,
                                     const Clock& clock)
    : store_(store),
      fleet_(fleet),
      registry_(registry),
      clock_(clock),
      api_calls_({"wire", "method", "code"}, metrics::ApiLatencyBuckets()) {}

void ControllerMetrics::ObserveApiCall(Wire wire, const ApiMethod& method, absl::StatusCode code,
                                       double seconds) {
  api_calls_.Observe({WireName(wire), method.name, absl::StatusCodeToString(code)}, seconds);
}

absl::StatusOr<std::string> ControllerMetrics::Render() {
  // The agents as ListAgents shows them (drift is its desired render against the applied one),
  // read as an internal viewer.
  const Caller self{"metrics", Role::kViewer};
  PGF_ASSIGN_OR_RETURN(pgfleet::v1::ListAgentsResponse agents,
                       fleet_.ListAgents(self, pgfleet::v1::ListAgentsRequest()));
  PGF_ASSIGN_OR_RETURN(std::vector<EnvironmentRow> environment_rows, store_.ListEnvironments());
  std::map<std::string, uint64_t> desired;
  for (const EnvironmentRow& env : environment_rows) desired[env.name] = env.desired_version;
  std::map<std::string, EnvironmentCounts> counts;
  for (const EnvironmentRow& env : environment_rows) counts[env.name];
  for (const pgfleet::v1::Agent& agent : agents.agents()) {
    EnvironmentCounts& env = counts[agent.environment()];
    ++env.total;
    ++env.by_applied_version[agent.applied_version()];
    if (agent.connected()) ++env.connected;
    if (agent.drifted()) ++env.drifted;
    if (agent.applied_version() == agent.desired_version()) ++env.converged;
    if (agent.restart_pending_size() > 0) ++env.restart_pending;
  }
  std::vector<std::string> environments;
  for (const auto& [name, unused] : counts) environments.push_back(name);

  Exposition out;
  out.Family("pgfleet_controller_ready", "gauge",
             "1 while the controller serves: store open and migrated, listeners up");
  out.Sample("pgfleet_controller_ready", {}, ready_.load() ? 1 : 0);

  PerEnvironment(out, "pgfleet_controller_agents", "Agents known in the environment", environments,
                 [&](const std::string& env) { return counts[env].total; });
  PerEnvironment(out, "pgfleet_controller_agents_connected",
                 "Agents of the environment with a stream to this controller", environments,
                 [&](const std::string& env) { return counts[env].connected; });
  PerEnvironment(out, "pgfleet_controller_agents_drifted",
                 "Agents whose applied config (sha256 of the rendered ini) differs from the one "
                 "rendered for them from their desired version",
                 environments, [&](const std::string& env) { return counts[env].drifted; });
  PerEnvironment(out, "pgfleet_controller_agents_converged",
                 "Agents that run their desired config version", environments,
                 [&](const std::string& env) { return counts[env].converged; });
  PerEnvironment(out, "pgfleet_controller_agents_restart_pending",
                 "Agents with settings that take effect only after a restart", environments,
                 [&](const std::string& env) { return counts[env].restart_pending; });
  PerEnvironment(out, "pgfleet_controller_config_desired_version",
                 "The environment's desired config version (0: none yet)", environments,
                 [&](const std::string& env) { return desired[env]; });
  out.Family("pgfleet_controller_config_applied_agents", "gauge",
             "Agents by the config version they run (0: their local file); one series per "
             "version in use");
  for (const std::string& env : environments) {
    for (const auto& [version, agents_on_it] : counts[env].by_applied_version) {
      out.Sample("pgfleet_controller_config_applied_agents",
                 {{"environment", env}, {"version", absl::StrCat(version)}}, agents_on_it);
    }
  }

  // The newest rollout of each environment: its state and phase as 0/1 series (one per
  // possible value, so a change is a value change, not a new series), and its wave.
  std::map<std::string, RolloutRow> latest;
  for (const std::string& env : environments) {
    PGF_ASSIGN_OR_RETURN(std::vector<RolloutRow> rollouts, store_.ListRollouts(env, false));
    for (const RolloutRow& rollout : rollouts) {
      if (rollout.id > latest[env].id) latest[env] = rollout;
    }
  }
  out.Family("pgfleet_controller_rollout_state", "gauge",
             "1 for the state of the environment's newest rollout (running, paused, succeeded, "
             "failed, aborted)");
  for (const auto& [env, rollout] : latest) {
    if (rollout.id == 0) continue;
    for (const char* state : kRolloutStates) {
      out.Sample("pgfleet_controller_rollout_state", {{"environment", env}, {"state", state}},
                 std::string(RolloutStateName(rollout.state)) == state ? 1 : 0);
    }
  }
  out.Family("pgfleet_controller_rollout_phase", "gauge",
             "1 for the phase of the environment's newest rollout (applying, baking, holding, "
             "done)");
  for (const auto& [env, rollout] : latest) {
    if (rollout.id == 0) continue;
    const std::string phase = RolloutPhaseName(rollout);
    for (const char* name : kRolloutPhases) {
      out.Sample("pgfleet_controller_rollout_phase", {{"environment", env}, {"phase", name}},
                 phase == name ? 1 : 0);
    }
  }
  out.Family("pgfleet_controller_rollout_wave", "gauge",
             "The current wave (0-based) of the environment's newest rollout");
  for (const auto& [env, rollout] : latest) {
    if (rollout.id != 0) {
      out.Sample("pgfleet_controller_rollout_wave", {{"environment", env}}, rollout.current_wave);
    }
  }
  out.Family("pgfleet_controller_rollout_waves", "gauge",
             "How many waves the environment's newest rollout has");
  for (const auto& [env, rollout] : latest) {
    if (rollout.id != 0) {
      out.Sample("pgfleet_controller_rollout_waves", {{"environment", env}},
                 static_cast<double>(rollout.waves.size()));
    }
  }
  out.Family("pgfleet_controller_rollout_id", "gauge",
             "The id of the environment's newest rollout");
  for (const auto& [env, rollout] : latest) {
    if (rollout.id != 0) {
      out.Sample("pgfleet_controller_rollout_id", {{"environment", env}},
                 static_cast<double>(rollout.id));
    }
  }

  // Maintenance windows that still have something to do, by state; and those past their end
  // time that have not finished (agents still held paused, or a pause that never completed).
  const int64_t now_ms = UnixMillis(clock_.Now());
  std::map<std::string, std::map<WindowState, int>> windows;
  std::map<std::string, int> overdue;
  for (const std::string& env : environments) {
    PGF_ASSIGN_OR_RETURN(std::vector<WindowRow> open, store_.ListWindows(env, true));
    for (const WindowRow& window : open) {
      ++windows[env][window.state];
      if (window.state != WindowState::kScheduled && window.ends_unix_ms <= now_ms) ++overdue[env];
    }
  }
  out.Family("pgfleet_controller_maintenance_windows", "gauge",
             "Open maintenance windows by state (scheduled, pausing, paused)");
  for (const std::string& env : environments) {
    for (WindowState state : kOpenWindowStates) {
      out.Sample("pgfleet_controller_maintenance_windows",
                 {{"environment", env}, {"state", WindowStateName(state)}}, windows[env][state]);
    }
  }
  PerEnvironment(out, "pgfleet_controller_maintenance_windows_overdue",
                 "Maintenance windows past their end time that are still pausing or paused",
                 environments, [&](const std::string& env) { return overdue[env]; });

  out.Family("pgfleet_controller_agent_streams", "gauge",
             "Agent streams connected to this controller");
  out.Sample("pgfleet_controller_agent_streams", {},
             static_cast<double>(registry_.List("").size()));

  out.Family("pgfleet_controller_api_requests_total", "counter",
             "Operator API requests answered, by wire (grpc, http), method and status code");
  api_calls_.RenderCounts(out, "pgfleet_controller_api_requests_total");
  out.Family("pgfleet_controller_api_request_duration_seconds", "histogram",
             "Time to authenticate, parse and run an operator API request");
  api_calls_.RenderHistograms(out, "pgfleet_controller_api_request_duration_seconds");
  out.Family("pgfleet_controller_store_write_duration_seconds", "histogram",
             "Time each write transaction of the SQLite store held its write lock, BEGIN to "
             "COMMIT (fsync included)");
  metrics::StoreWriteLatency().Render(out, "pgfleet_controller_store_write_duration_seconds", {});
  return out.Take();
}

}  // namespace pgfleet::controller
