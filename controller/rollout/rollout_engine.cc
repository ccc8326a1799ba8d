#include "controller/rollout/rollout_engine.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "common/config/config.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "controller/rollout/connection_budget.h"

namespace pgfleet::controller {
namespace {

constexpr absl::Duration kApplyTimeout = absl::Minutes(2);

HealthLimits LimitsFrom(const pgfleet::v1::HealthThresholds& in) {
  HealthLimits limits;
  if (in.max_cl_waiting() > 0) limits.max_cl_waiting = in.max_cl_waiting();
  if (in.max_maxwait_ms() > 0) limits.max_maxwait_ms = in.max_maxwait_ms();
  if (in.max_new_server_errors() > 0) limits.max_new_server_errors = in.max_new_server_errors();
  if (in.max_new_login_failures() > 0) limits.max_new_login_failures = in.max_new_login_failures();
  return limits;
}

}  // namespace

absl::StatusOr<std::vector<int>> AssignWaves(const std::vector<std::string>& spec, size_t agents) {
  if (spec.empty()) return absl::InvalidArgumentError("at least one wave is needed");
  std::vector<size_t> targets;
  for (const std::string& raw : spec) {
    absl::string_view entry = absl::StripAsciiWhitespace(raw);
    size_t target = 0;
    if (absl::ConsumeSuffix(&entry, "%")) {
      double percent = 0;
      if (!absl::SimpleAtod(entry, &percent) || percent <= 0 || percent > 100) {
        return absl::InvalidArgumentError(absl::StrCat("bad wave '", raw, "' (want 1..100%)"));
      }
      target = static_cast<size_t>(std::ceil(percent / 100.0 * static_cast<double>(agents)));
    } else {
      int count = 0;
      if (!absl::SimpleAtoi(entry, &count) || count <= 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("bad wave '", raw, "' (want an agent count like 1 or a share like 25%)"));
      }
      target = static_cast<size_t>(count);
    }
    targets.push_back(std::min(target, agents));
  }
  std::vector<int> wave_of(agents, static_cast<int>(spec.size()) - 1);
  size_t assigned = 0;
  for (size_t wave = 0; wave < targets.size(); ++wave) {
    for (; assigned < targets[wave] && assigned < agents; ++assigned) {
      wave_of[assigned] = static_cast<int>(wave);
    }
  }
  return wave_of;
}

HealthCounters CountersOf(const pgfleet::v1::MetricsReport& report) {
  HealthCounters counters;
  for (const auto& db : report.databases()) {
    counters.server_errors += static_cast<int64_t>(db.server_errors() + db.server_login_failures());
    counters.login_failures += static_cast<int64_t>(db.client_login_failures());
  }
  return counters;
}

std::string CheckHealth(const pgfleet::v1::MetricsReport& report, const HealthCounters& baseline,
                        const HealthLimits& limits) {
  for (const auto& pool : report.pools()) {
    if (pool.cl_waiting() > limits.max_cl_waiting) {
      return absl::StrCat("pool ", pool.database(), "/", pool.user(), ": ", pool.cl_waiting(),
                          " clients waiting (limit ", limits.max_cl_waiting, ")");
    }
    if (pool.maxwait_us() / 1000 > limits.max_maxwait_ms) {
      return absl::StrCat("pool ", pool.database(), "/", pool.user(), ": a client waited ",
                          pool.maxwait_us() / 1000, " ms (limit ", limits.max_maxwait_ms, " ms)");
    }
  }
  HealthCounters now = CountersOf(report);
  if (now.server_errors - baseline.server_errors > limits.max_new_server_errors) {
    return absl::StrCat(now.server_errors - baseline.server_errors,
                        " new server connection failures (limit ", limits.max_new_server_errors,
                        ")");
  }
  if (now.login_failures - baseline.login_failures > limits.max_new_login_failures) {
    return absl::StrCat(now.login_failures - baseline.login_failures,
                        " new client login failures (limit ", limits.max_new_login_failures, ")");
  }
  return "";
}

RolloutEngine::RolloutEngine(Store& store, RolloutStore& rollouts, AgentRegistry& registry,
                             FleetApi& api)
    : store_(store), rollouts_(rollouts), registry_(registry), api_(api) {}

RolloutEngine::~RolloutEngine() { ticker_.Stop(); }

void RolloutEngine::StartTicking(absl::Duration interval) {
  ticker_.Start(interval, [this] { Tick(); });
}

void RolloutEngine::Reconcile(const std::string& agent_id) {
  // Forced: a rollout may deliberately retry a version this agent refused before.
  if (std::shared_ptr<AgentSession> session = registry_.Find(agent_id)) {
    api_.Reconcile(*session, /*force=*/true);
  }
}

void RolloutEngine::Tick() {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::vector<RolloutRow>> active = rollouts_.ListRollouts("", true);
  if (!active.ok()) {
    PGF_ERROR("rollout", "cannot read rollouts: %s", active.status().message());
    return;
  }
  for (RolloutRow& rollout : *active) {
    if (rollout.state != RolloutState::kRunning) continue;
    if (absl::Status stepped = Step(rollout); !stepped.ok()) {
      PGF_ERROR("rollout", "rollout %d: %s (will retry)", rollout.id, stepped.message());
    }
  }
}

absl::Status RolloutEngine::StartWave(RolloutRow& rollout, std::vector<RolloutAgentRow>& agents) {
  int in_wave = 0;
  for (RolloutAgentRow& agent : agents) {
    if (agent.wave != rollout.current_wave) continue;
    ++in_wave;
    PGF_RETURN_IF_ERROR(store_.SetAgentPin(agent.agent_id, rollout.to_version));
    agent.state = "applying";
    PGF_RETURN_IF_ERROR(rollouts_.UpdateRolloutAgent(agent));
    Reconcile(agent.agent_id);
  }
  rollout.wave_started_unix_ms = NowMillis();
  rollout.bake_started_unix_ms = 0;
  rollout.reason.clear();
  PGF_INFO("rollout", "rollout %d (%s v%d -> v%d): wave %d/%d started with %d agents", rollout.id,
           rollout.environment, rollout.from_version, rollout.to_version, rollout.current_wave + 1,
           rollout.waves.size(), in_wave);
  return rollouts_.UpdateRollout(rollout);
}

absl::Status RolloutEngine::Step(RolloutRow& rollout) {
  PGF_ASSIGN_OR_RETURN(std::vector<RolloutAgentRow> agents,
                       rollouts_.ListRolloutAgents(rollout.id));
  if (rollout.current_wave >= static_cast<int>(rollout.waves.size())) return Complete(rollout);
  if (rollout.wave_started_unix_ms == 0) {
    // No wave starts while the environment is inside a maintenance window.
    PGF_ASSIGN_OR_RETURN(std::vector<WindowRow> windows,
                         store_.ListWindows(rollout.environment, true));
    for (const WindowRow& window : windows) {
      if (!IsActiveWindow(window.state)) continue;
      std::string reason = absl::StrCat("holding: maintenance window ", window.id, " is active in ",
                                        rollout.environment);
      if (reason != rollout.reason) {
        rollout.reason = reason;
        PGF_INFO("rollout", "rollout %d %s", rollout.id, reason);
        PGF_RETURN_IF_ERROR(rollouts_.UpdateRollout(rollout));
      }
      return absl::OkStatus();
    }
    return StartWave(rollout, agents);
  }

  const int64_t now = NowMillis();
  int offline = 0, applying = 0;
  std::vector<std::pair<RolloutAgentRow*, std::shared_ptr<AgentSession>>> live;
  for (RolloutAgentRow& agent : agents) {
    if (agent.wave != rollout.current_wave) continue;
    if (agent.state == "failed") {
      return Finish(rollout, RolloutState::kFailed, agent.agent_id,
                    absl::StrCat("agent ", agent.agent_id, " refused v", rollout.to_version, ": ",
                                 agent.error));
    }
    std::shared_ptr<AgentSession> session = registry_.Find(agent.agent_id);
    if (session == nullptr) {
      ++offline;  // Pinned already: it converges when it comes back.
      continue;
    }
    if (session->applied_version() != rollout.to_version) {
      ++applying;
      continue;
    }
    if (agent.state != "applied") {
      agent.state = "applied";
      PGF_RETURN_IF_ERROR(rollouts_.UpdateRolloutAgent(agent));
    }
    live.emplace_back(&agent, session);
  }
  if (applying > 0) {
    if (now - rollout.wave_started_unix_ms > absl::ToInt64Milliseconds(kApplyTimeout)) {
      return Finish(rollout, RolloutState::kFailed, "",
                    absl::StrCat(applying, " agents did not apply v", rollout.to_version,
                                 " within ", absl::FormatDuration(kApplyTimeout)));
    }
    return absl::OkStatus();
  }
  if (offline > rollout.max_unavailable) {
    std::string reason =
        absl::StrCat("holding: ", offline, " agents of wave ", rollout.current_wave + 1,
                     " are offline (max_unavailable ", rollout.max_unavailable, ")");
    if (reason != rollout.reason) {
      rollout.reason = reason;
      PGF_WARN("rollout", "rollout %d %s", rollout.id, reason);
      PGF_RETURN_IF_ERROR(rollouts_.UpdateRollout(rollout));
    }
    return absl::OkStatus();
  }
  if (live.empty() && offline == 0) {
    // An empty wave (rounding, or agents gone) has nothing to apply or bake.
    rollout.current_wave++;
    rollout.wave_started_unix_ms = 0;
    rollout.bake_started_unix_ms = 0;
    if (rollout.current_wave >= static_cast<int>(rollout.waves.size())) return Complete(rollout);
    return StartWave(rollout, agents);
  }
  if (absl::StartsWith(rollout.reason, "holding")) {
    rollout.reason.clear();  // The agents are back: no longer holding.
    PGF_RETURN_IF_ERROR(rollouts_.UpdateRollout(rollout));
  }
  if (rollout.bake_started_unix_ms == 0) {
    rollout.bake_started_unix_ms = now;
    rollout.reason.clear();
    for (auto& [agent, session] : live) {
      std::optional<pgfleet::v1::MetricsReport> metrics = session->metrics();
      baselines_[{rollout.id, agent->agent_id}] =
          metrics.has_value() ? CountersOf(*metrics) : HealthCounters{};
    }
    return rollouts_.UpdateRollout(rollout);
  }
  for (auto& [agent, session] : live) {
    std::optional<pgfleet::v1::MetricsReport> metrics = session->metrics();
    if (!metrics.has_value()) continue;
    auto key = std::make_pair(rollout.id, agent->agent_id);
    if (baselines_.count(key) == 0) baselines_[key] = CountersOf(*metrics);  // After a restart.
    std::string unhealthy = CheckHealth(*metrics, baselines_[key], rollout.limits);
    if (!unhealthy.empty()) {
      agent->state = "failed";
      agent->error = absl::StrCat("health gate: ", unhealthy);
      PGF_RETURN_IF_ERROR(rollouts_.UpdateRolloutAgent(*agent));
      return Finish(rollout, RolloutState::kFailed, agent->agent_id,
                    absl::StrCat("health gate failed on ", agent->agent_id, ": ", unhealthy));
    }
  }
  if (now - rollout.bake_started_unix_ms < rollout.bake_ms) return absl::OkStatus();
  PGF_INFO("rollout", "rollout %d: wave %d/%d healthy after its bake", rollout.id,
           rollout.current_wave + 1, rollout.waves.size());
  rollout.current_wave++;
  rollout.wave_started_unix_ms = 0;
  rollout.bake_started_unix_ms = 0;
  if (rollout.current_wave >= static_cast<int>(rollout.waves.size())) return Complete(rollout);
  return StartWave(rollout, agents);
}

absl::Status RolloutEngine::Complete(RolloutRow& rollout) {
  // Compare-and-set: if someone changed the desired version meanwhile, do not overwrite it.
  absl::Status set =
      store_.SetDesiredVersion(rollout.environment, rollout.to_version, rollout.from_version);
  if (!set.ok()) {
    return Finish(rollout, RolloutState::kFailed, "",
                  absl::StrCat("could not make v", rollout.to_version,
                               " the desired version: ", set.message()));
  }
  PGF_ASSIGN_OR_RETURN(std::vector<RolloutAgentRow> agents,
                       rollouts_.ListRolloutAgents(rollout.id));
  for (const RolloutAgentRow& agent : agents) {
    PGF_RETURN_IF_ERROR(store_.SetAgentPin(agent.agent_id, std::nullopt));
  }
  // Agents that joined during the rollout follow the environment's new desired version.
  for (const std::shared_ptr<AgentSession>& session : registry_.List(rollout.environment)) {
    api_.Reconcile(*session);
  }
  rollout.state = RolloutState::kSucceeded;
  rollout.finished_unix_ms = NowMillis();
  rollout.reason.clear();
  PGF_RETURN_IF_ERROR(rollouts_.UpdateRollout(rollout));
  PGF_INFO("rollout", "rollout %d succeeded: %s now runs v%d", rollout.id, rollout.environment,
           rollout.to_version);
  return store_.Audit("rollout-engine", "rollout.succeeded", rollout.environment,
                      absl::StrCat("rollout=", rollout.id, " version=", rollout.to_version),
                      NowMillis());
}

absl::Status RolloutEngine::Finish(RolloutRow& rollout, RolloutState state,
                                   const std::string& agent, const std::string& reason) {
  // Roll back: unpinned agents follow the environment's desired version, which is still the
  // old one (it only changes when a rollout completes).
  PGF_ASSIGN_OR_RETURN(std::vector<RolloutAgentRow> agents,
                       rollouts_.ListRolloutAgents(rollout.id));
  for (RolloutAgentRow& row : agents) {
    if (row.wave > rollout.current_wave) continue;
    PGF_RETURN_IF_ERROR(store_.SetAgentPin(row.agent_id, std::nullopt));
    if (row.state != "failed") row.state = "rolled_back";
    PGF_RETURN_IF_ERROR(rollouts_.UpdateRolloutAgent(row));
    Reconcile(row.agent_id);
  }
  rollout.state = state;
  rollout.failed_agent = agent;
  rollout.reason = reason;
  rollout.finished_unix_ms = NowMillis();
  PGF_RETURN_IF_ERROR(rollouts_.UpdateRollout(rollout));
  PGF_WARN("rollout", "rollout %d %s, agents moved back to v%d: %s", rollout.id,
           RolloutStateName(state), rollout.from_version, reason);
  return store_.Audit("rollout-engine", absl::StrCat("rollout.", RolloutStateName(state)),
                      rollout.environment, absl::StrCat("rollout=", rollout.id, " ", reason),
                      NowMillis());
}

void RolloutEngine::OnConfigResult(const std::string& agent_id, uint64_t version, bool accepted,
                                   const std::string& error) {
  if (accepted) return;  // Progress is read from the sessions on the next tick.
  absl::MutexLock lock(&mu_);
  absl::StatusOr<std::vector<RolloutRow>> active = rollouts_.ListRollouts("", true);
  if (!active.ok()) return;
  for (const RolloutRow& rollout : *active) {
    if (rollout.to_version != version) continue;
    absl::StatusOr<std::vector<RolloutAgentRow>> agents = rollouts_.ListRolloutAgents(rollout.id);
    if (!agents.ok()) continue;
    for (RolloutAgentRow& agent : *agents) {
      if (agent.agent_id != agent_id) continue;
      agent.state = "failed";
      agent.error = error;
      (void)rollouts_.UpdateRolloutAgent(agent);
    }
  }
}

absl::StatusOr<pgfleet::v1::Rollout> RolloutEngine::Describe(const RolloutRow& rollout) {
  pgfleet::v1::Rollout out;
  out.set_id(rollout.id);
  out.set_environment(rollout.environment);
  out.set_from_version(rollout.from_version);
  out.set_to_version(rollout.to_version);
  for (const std::string& wave : rollout.waves) out.add_waves(wave);
  out.set_bake_seconds(rollout.bake_ms / 1000);
  out.set_max_unavailable(rollout.max_unavailable);
  out.mutable_thresholds()->set_max_cl_waiting(rollout.limits.max_cl_waiting);
  out.mutable_thresholds()->set_max_maxwait_ms(rollout.limits.max_maxwait_ms);
  out.mutable_thresholds()->set_max_new_server_errors(rollout.limits.max_new_server_errors);
  out.mutable_thresholds()->set_max_new_login_failures(rollout.limits.max_new_login_failures);
  out.set_state(RolloutStateName(rollout.state));
  out.set_current_wave(rollout.current_wave);
  if (!IsActive(rollout.state)) {
    out.set_phase("done");
  } else if (absl::StartsWith(rollout.reason, "holding")) {
    out.set_phase("holding");
  } else {
    out.set_phase(rollout.bake_started_unix_ms != 0 ? "baking" : "applying");
  }
  out.set_failed_agent(rollout.failed_agent);
  out.set_reason(rollout.reason);
  out.set_created_by(rollout.created_by);
  out.set_created_unix_ms(rollout.created_unix_ms);
  out.set_finished_unix_ms(rollout.finished_unix_ms);
  out.set_force_reason(rollout.force_reason);
  PGF_ASSIGN_OR_RETURN(std::vector<RolloutAgentRow> agents,
                       rollouts_.ListRolloutAgents(rollout.id));
  for (const RolloutAgentRow& row : agents) {
    pgfleet::v1::RolloutAgent* agent = out.add_agents();
    agent->set_agent_id(row.agent_id);
    agent->set_wave(row.wave);
    std::string state = row.state;
    if (IsActive(rollout.state) && registry_.Find(row.agent_id) == nullptr && state != "failed") {
      state = "offline";
    }
    agent->set_state(state);
    agent->set_error(row.error);
  }
  return out;
}

absl::StatusOr<pgfleet::v1::Rollout> RolloutEngine::Start(
    const Caller& caller, const pgfleet::v1::StartRolloutRequest& request) {
  absl::MutexLock lock(&mu_);
  return StartLocked(caller, request);
}

absl::StatusOr<pgfleet::v1::Rollout> RolloutEngine::StartLocked(
    const Caller& caller, const pgfleet::v1::StartRolloutRequest& request) {
  PGF_RETURN_IF_ERROR(RequireRole(caller, Role::kOperator));
  if (request.force() && request.force_reason().empty()) {
    return absl::InvalidArgumentError("--force needs a reason (--reason)");
  }
  PGF_ASSIGN_OR_RETURN(EnvironmentRow env, store_.GetEnvironment(request.environment()));
  PGF_ASSIGN_OR_RETURN(ConfigVersionRow version, store_.GetConfigVersion(request.version()));
  if (version.environment != env.name) {
    return absl::InvalidArgumentError(absl::StrCat("v", version.version, " belongs to ",
                                                   version.environment, ", not ", env.name,
                                                   " (use promote to copy it)"));
  }
  if (env.desired_version == 0) {
    // A failed rollout moves agents back to the old desired version; with none there is
    // nothing to go back to.
    return absl::FailedPreconditionError(
        absl::StrCat(env.name,
                     " has no desired version yet, so a rollout could not roll back; set the first "
                     "one with: fleetctl config apply --env ",
                     env.name, " --version v", version.version));
  }
  if (env.desired_version == version.version) {
    return absl::FailedPreconditionError(
        absl::StrCat(env.name, " already runs v", version.version));
  }
  // Pre-flight: refusals that --force (with a reason) may override.
  std::vector<std::string> refusals;
  std::vector<std::string> warnings;
  PGF_ASSIGN_OR_RETURN(std::vector<AgentRow> env_agents, store_.ListAgents(env.name));
  if (absl::StatusOr<config::Config> parsed = config::ParseConfig(version.ini_text, "pushed.ini");
      !parsed.ok()) {
    refusals.push_back(absl::StrCat("config does not validate: ", parsed.status().message()));
  } else {
    // Every agent of the environment counts, offline ones too: they converge when they return.
    std::map<std::string, pgfleet::v1::ServerLimits> limits;
    for (const std::shared_ptr<AgentSession>& session : registry_.List(env.name)) {
      std::optional<pgfleet::v1::MetricsReport> report = session->metrics();
      if (!report) continue;
      for (const pgfleet::v1::ServerLimits& server : report->server_limits()) {
        limits[server.address()] = server;
      }
    }
    BudgetCheck budget = CheckConnectionBudget(*parsed, static_cast<int>(env_agents.size()), limits,
                                               request.connection_reserve());
    refusals.insert(refusals.end(), budget.refusals.begin(), budget.refusals.end());
    warnings = std::move(budget.warnings);
  }
  PGF_ASSIGN_OR_RETURN(std::vector<WindowRow> windows, store_.ListWindows(env.name, true));
  for (const WindowRow& window : windows) {
    if (IsActiveWindow(window.state)) {
      refusals.push_back(absl::StrCat("maintenance window ", window.id, " is active"));
    }
  }
  PGF_ASSIGN_OR_RETURN(std::string upstream, rollouts_.GetEnvironmentUpstream(env.name));
  if (!upstream.empty()) {
    PGF_ASSIGN_OR_RETURN(bool done_upstream,
                         rollouts_.HasSucceededRollout(upstream, version.sha256));
    if (!done_upstream) {
      refusals.push_back(absl::StrCat("this config (sha256 ", version.sha256.substr(0, 12),
                                      ") has not completed a rollout in upstream environment ",
                                      upstream));
    }
  }
  if (!refusals.empty() && !request.force()) {
    return absl::FailedPreconditionError(absl::StrCat("pre-flight refused the rollout:\n  - ",
                                                      absl::StrJoin(refusals, "\n  - "),
                                                      "\n(override with --force --reason TEXT)"));
  }
  RolloutRow rollout;
  rollout.environment = env.name;
  rollout.from_version = env.desired_version;
  rollout.to_version = version.version;
  rollout.waves.assign(request.waves().begin(), request.waves().end());
  if (rollout.waves.empty()) rollout.waves = {"1", "25%", "100%"};
  rollout.bake_ms = request.bake_seconds() > 0 ? request.bake_seconds() * 1000 : 60000;
  rollout.max_unavailable = std::max(0, request.max_unavailable());
  rollout.limits = LimitsFrom(request.thresholds());
  rollout.created_by = caller.actor;
  rollout.created_unix_ms = NowMillis();
  if (request.force()) {
    rollout.force_reason = request.force_reason();
    if (!refusals.empty()) {
      absl::StrAppend(&rollout.force_reason, " (overrode: ", absl::StrJoin(refusals, "; "), ")");
    }
  }
  PGF_ASSIGN_OR_RETURN(std::vector<int> waves, AssignWaves(rollout.waves, env_agents.size()));
  std::vector<RolloutAgentRow> members;
  for (size_t i = 0; i < env_agents.size(); ++i) {
    RolloutAgentRow member;
    member.agent_id = env_agents[i].agent_id;
    member.wave = waves[i];
    members.push_back(member);
  }
  PGF_ASSIGN_OR_RETURN(RolloutRow created, rollouts_.CreateRollout(rollout, members));
  PGF_RETURN_IF_ERROR(store_.Audit(
      caller.actor, "rollout.start", env.name,
      absl::StrCat("rollout=", created.id, " v", created.from_version, "->v", created.to_version,
                   " waves=", absl::StrJoin(created.waves, ","),
                   created.force_reason.empty() ? "" : " FORCED: " + created.force_reason),
      NowMillis()));
  PGF_INFO("rollout", "%s started rollout %d: %s v%d -> v%d in waves %s", caller.actor, created.id,
           env.name, created.from_version, created.to_version, absl::StrJoin(created.waves, ","));
  if (absl::Status stepped = Step(created); !stepped.ok()) {
    PGF_ERROR("rollout", "rollout %d first step: %s", created.id, stepped.message());
  }
  for (const std::string& warning : warnings) {
    PGF_WARN("rollout", "rollout %d pre-flight: %s", created.id, warning);
  }
  PGF_ASSIGN_OR_RETURN(pgfleet::v1::Rollout described, Describe(created));
  for (std::string& warning : warnings) described.add_warnings(std::move(warning));
  return described;
}

absl::StatusOr<pgfleet::v1::Rollout> RolloutEngine::Get(
    const Caller& caller, const pgfleet::v1::GetRolloutRequest& request) {
  PGF_RETURN_IF_ERROR(RequireRole(caller, Role::kViewer));
  absl::MutexLock lock(&mu_);
  if (request.id() != 0) {
    PGF_ASSIGN_OR_RETURN(RolloutRow rollout, rollouts_.GetRollout(request.id()));
    return Describe(rollout);
  }
  PGF_ASSIGN_OR_RETURN(std::vector<RolloutRow> rows,
                       rollouts_.ListRollouts(request.environment(), false));
  if (rows.empty()) {
    return absl::NotFoundError(absl::StrCat("no rollout in ", request.environment().empty()
                                                                  ? "any environment"
                                                                  : request.environment()));
  }
  return Describe(rows.front());
}

absl::StatusOr<pgfleet::v1::ListRolloutsResponse> RolloutEngine::List(
    const Caller& caller, const pgfleet::v1::ListRolloutsRequest& request) {
  PGF_RETURN_IF_ERROR(RequireRole(caller, Role::kViewer));
  absl::MutexLock lock(&mu_);
  PGF_ASSIGN_OR_RETURN(std::vector<RolloutRow> rows,
                       rollouts_.ListRollouts(request.environment(), false));
  pgfleet::v1::ListRolloutsResponse response;
  for (const RolloutRow& row : rows) {
    PGF_ASSIGN_OR_RETURN(*response.add_rollouts(), Describe(row));
  }
  return response;
}

absl::StatusOr<pgfleet::v1::Rollout> RolloutEngine::Pause(const Caller& caller, uint64_t id) {
  PGF_RETURN_IF_ERROR(RequireRole(caller, Role::kOperator));
  absl::MutexLock lock(&mu_);
  PGF_ASSIGN_OR_RETURN(RolloutRow rollout, rollouts_.GetRollout(id));
  if (rollout.state != RolloutState::kRunning) {
    return absl::FailedPreconditionError(
        absl::StrCat("rollout ", id, " is ", RolloutStateName(rollout.state), ", not running"));
  }
  rollout.state = RolloutState::kPaused;
  PGF_RETURN_IF_ERROR(rollouts_.UpdateRollout(rollout));
  PGF_RETURN_IF_ERROR(store_.Audit(caller.actor, "rollout.pause", rollout.environment,
                                   absl::StrCat("rollout=", id), NowMillis()));
  return Describe(rollout);
}

absl::StatusOr<pgfleet::v1::Rollout> RolloutEngine::Resume(const Caller& caller, uint64_t id) {
  PGF_RETURN_IF_ERROR(RequireRole(caller, Role::kOperator));
  absl::MutexLock lock(&mu_);
  PGF_ASSIGN_OR_RETURN(RolloutRow rollout, rollouts_.GetRollout(id));
  if (rollout.state != RolloutState::kPaused) {
    return absl::FailedPreconditionError(
        absl::StrCat("rollout ", id, " is ", RolloutStateName(rollout.state), ", not paused"));
  }
  rollout.state = RolloutState::kRunning;
  PGF_RETURN_IF_ERROR(rollouts_.UpdateRollout(rollout));
  PGF_RETURN_IF_ERROR(store_.Audit(caller.actor, "rollout.resume", rollout.environment,
                                   absl::StrCat("rollout=", id), NowMillis()));
  return Describe(rollout);
}

absl::StatusOr<pgfleet::v1::Rollout> RolloutEngine::Abort(const Caller& caller, uint64_t id) {
  PGF_RETURN_IF_ERROR(RequireRole(caller, Role::kOperator));
  absl::MutexLock lock(&mu_);
  PGF_ASSIGN_OR_RETURN(RolloutRow rollout, rollouts_.GetRollout(id));
  if (!IsActive(rollout.state)) {
    return absl::FailedPreconditionError(
        absl::StrCat("rollout ", id, " already ", RolloutStateName(rollout.state)));
  }
  PGF_RETURN_IF_ERROR(
      Finish(rollout, RolloutState::kAborted, "", absl::StrCat("aborted by ", caller.actor)));
  return Describe(rollout);
}

absl::StatusOr<pgfleet::v1::Rollout> RolloutEngine::Rollback(
    const Caller& caller, const pgfleet::v1::RollbackRequest& request) {
  // Checked first, like every other call: StartLocked checks again, but only once a previous
  // good version is found, so a viewer would otherwise learn (and be told in a non-permission
  // error) whether the environment has one.
  PGF_RETURN_IF_ERROR(RequireRole(caller, Role::kOperator));
  absl::MutexLock lock(&mu_);
  PGF_ASSIGN_OR_RETURN(std::vector<RolloutRow> rows,
                       rollouts_.ListRollouts(request.environment(), false));
  // The previous good version: what the newest succeeded rollout moved away from.
  uint64_t target = 0;
  for (const RolloutRow& row : rows) {
    if (row.state == RolloutState::kSucceeded) {
      target = row.from_version;
      break;
    }
  }
  if (target == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "no previous good version in ", request.environment(), " (no succeeded rollout from one)"));
  }
  pgfleet::v1::StartRolloutRequest start;
  start.set_environment(request.environment());
  start.set_version(target);
  for (const std::string& wave : request.waves()) start.add_waves(wave);
  if (request.waves().empty()) start.add_waves("100%");
  start.set_bake_seconds(request.bake_seconds() > 0 ? request.bake_seconds() : 10);
  // Going back to a version the environment already ran needs no upstream check.
  start.set_force(true);
  start.set_force_reason("rollback to the previous good version");
  return StartLocked(caller, start);
}

absl::StatusOr<pgfleet::v1::Rollout> RolloutEngine::Promote(
    const Caller& caller, const pgfleet::v1::PromoteRequest& request) {
  PGF_RETURN_IF_ERROR(RequireRole(caller, Role::kOperator));
  absl::MutexLock lock(&mu_);
  uint64_t source_version = request.version();
  if (source_version == 0) {
    PGF_ASSIGN_OR_RETURN(EnvironmentRow source, store_.GetEnvironment(request.from_environment()));
    source_version = source.desired_version;
    if (source_version == 0) {
      return absl::FailedPreconditionError(
          absl::StrCat(request.from_environment(), " has no desired version to promote"));
    }
  }
  PGF_ASSIGN_OR_RETURN(ConfigVersionRow source, store_.GetConfigVersion(source_version));
  if (source.environment != request.from_environment()) {
    return absl::InvalidArgumentError(
        absl::StrCat("v", source_version, " belongs to ", source.environment));
  }
  // Promotion means the source must have completed it, whatever upstream is configured;
  // checked before anything is written, so a refused promotion leaves no trace but the refusal.
  PGF_ASSIGN_OR_RETURN(bool done, rollouts_.HasSucceededRollout(source.environment, source.sha256));
  if (!done && !request.rollout().force()) {
    return absl::FailedPreconditionError(
        absl::StrCat("v", source.version, " has not completed a rollout in ", source.environment,
                     "; promote it once it has, or use --force --reason TEXT"));
  }
  if (request.rollout().force() && request.rollout().force_reason().empty()) {
    return absl::InvalidArgumentError("--force needs a reason (--reason)");
  }
  PGF_RETURN_IF_ERROR(store_.EnsureEnvironment(request.to_environment(), NowMillis()));
  PGF_ASSIGN_OR_RETURN(
      ConfigVersionRow copy,
      store_.AddConfigVersion(
          request.to_environment(), source.ini_text, caller.actor,
          absl::StrCat("promoted from ", source.environment, " v", source.version), NowMillis()));
  pgfleet::v1::StartRolloutRequest start = request.rollout();
  start.set_environment(request.to_environment());
  start.set_version(copy.version);
  return StartLocked(caller, start);
}

absl::StatusOr<pgfleet::v1::Environment> RolloutEngine::SetUpstream(
    const Caller& caller, const pgfleet::v1::SetUpstreamRequest& request) {
  PGF_RETURN_IF_ERROR(RequireRole(caller, Role::kAdmin));
  PGF_RETURN_IF_ERROR(store_.EnsureEnvironment(request.environment(), NowMillis()));
  if (!request.upstream().empty()) {
    PGF_RETURN_IF_ERROR(store_.EnsureEnvironment(request.upstream(), NowMillis()));
  }
  PGF_RETURN_IF_ERROR(rollouts_.SetEnvironmentUpstream(request.environment(), request.upstream()));
  PGF_RETURN_IF_ERROR(store_.Audit(caller.actor, "environment.set_upstream", request.environment(),
                                   request.upstream(), NowMillis()));
  pgfleet::v1::Environment env;
  env.set_name(request.environment());
  env.set_upstream(request.upstream());
  return env;
}

}  // namespace pgfleet::controller
