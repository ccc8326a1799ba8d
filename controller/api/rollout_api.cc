#include "controller/api/rollout_api.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "controller/api/secrets_api.h"

namespace pgfleet::controller {

const char* RolloutPhaseName(const RolloutRow& rollout) {
  if (!IsActive(rollout.state)) return "done";
  if (absl::StartsWith(rollout.reason, "holding")) return "holding";
  return rollout.bake_started_unix_ms != 0 ? "baking" : "applying";
}

namespace {

HealthLimits LimitsFrom(const pgfleet::v1::HealthThresholds& in) {
  HealthLimits limits;
  if (in.max_cl_waiting() > 0) limits.max_cl_waiting = in.max_cl_waiting();
  if (in.max_maxwait_ms() > 0) limits.max_maxwait_ms = in.max_maxwait_ms();
  if (in.max_new_server_errors() > 0) limits.max_new_server_errors = in.max_new_server_errors();
  if (in.max_new_login_failures() > 0) limits.max_new_login_failures = in.max_new_login_failures();
  return limits;
}

}  // namespace

RolloutSpec SpecFromProto(const pgfleet::v1::StartRolloutRequest& request) {
  RolloutSpec spec;
  spec.environment = request.environment();
  spec.version = request.version();
  spec.waves.assign(request.waves().begin(), request.waves().end());
  spec.bake =
      request.bake_seconds() > 0 ? absl::Seconds(request.bake_seconds()) : absl::Seconds(60);
  spec.max_unavailable = request.max_unavailable();
  spec.limits = LimitsFrom(request.thresholds());
  spec.force = request.force();
  spec.force_reason = request.force_reason();
  spec.connection_reserve = request.connection_reserve();
  spec.selector = request.selector();
  if (request.restart()) {
    spec.kind = RolloutKind::kRestart;
    spec.only_outdated = request.only_outdated();
    spec.binary_version = request.binary_version();
  }
  return spec;
}

absl::StatusOr<pgfleet::v1::Rollout> RolloutApi::Describe(const RolloutRow& rollout) {
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
  out.set_phase(RolloutPhaseName(rollout));
  out.set_failed_agent(rollout.failed_agent);
  out.set_reason(rollout.reason);
  out.set_created_by(rollout.created_by);
  out.set_created_unix_ms(rollout.created_unix_ms);
  out.set_finished_unix_ms(rollout.finished_unix_ms);
  out.set_force_reason(rollout.force_reason);
  out.set_selector(rollout.selector);
  out.set_kind(RolloutKindName(rollout.kind));
  out.set_only_outdated(rollout.only_outdated);
  out.set_binary_version(rollout.binary_version);
  PGF_ASSIGN_OR_RETURN(std::vector<RolloutAgentRow> agents, store_.ListRolloutAgents(rollout.id));
  for (const RolloutAgentRow& row : agents) {
    pgfleet::v1::RolloutAgent* agent = out.add_agents();
    agent->set_agent_id(row.agent_id);
    agent->set_wave(row.wave);
    std::string state = RolloutAgentStateName(row.state);
    if (IsActive(rollout.state) && row.state != RolloutAgentState::kFailed &&
        !agents_.FindLive(row.agent_id).has_value()) {
      state = "offline";
    }
    agent->set_state(state);
    agent->set_error(row.error);
    agent->set_old_pid(row.old_pid);
    agent->set_new_pid(row.new_pid);
  }
  return out;
}

absl::StatusOr<pgfleet::v1::Rollout> RolloutApi::Describe(const StartedRollout& started) {
  PGF_ASSIGN_OR_RETURN(RolloutRow current, store_.GetRollout(started.rollout.id));
  PGF_ASSIGN_OR_RETURN(pgfleet::v1::Rollout described, Describe(current));
  for (const std::string& warning : started.warnings) described.add_warnings(warning);
  return described;
}

absl::StatusOr<pgfleet::v1::Rollout> RolloutApi::StartRollout(
    const Caller& caller, const pgfleet::v1::StartRolloutRequest& request) {
  PGF_RETURN_IF_ERROR(RequireRole(caller, Role::kOperator));
  PGF_ASSIGN_OR_RETURN(StartedRollout started, engine_.Start(SpecFromProto(request), caller.actor));
  return Describe(started);
}

absl::StatusOr<pgfleet::v1::Rollout> RolloutApi::GetRollout(
    const Caller& caller, const pgfleet::v1::GetRolloutRequest& request) {
  PGF_RETURN_IF_ERROR(RequireRole(caller, Role::kViewer));
  if (request.id() != 0) {
    PGF_ASSIGN_OR_RETURN(RolloutRow rollout, store_.GetRollout(request.id()));
    return Describe(rollout);
  }
  PGF_ASSIGN_OR_RETURN(std::vector<RolloutRow> rows,
                       store_.ListRollouts(request.environment(), false));
  if (rows.empty()) {
    return absl::NotFoundError(absl::StrCat("no rollout in ", request.environment().empty()
                                                                  ? "any environment"
                                                                  : request.environment()));
  }
  return Describe(rows.front());
}

absl::StatusOr<pgfleet::v1::ListRolloutsResponse> RolloutApi::ListRollouts(
    const Caller& caller, const pgfleet::v1::ListRolloutsRequest& request) {
  PGF_RETURN_IF_ERROR(RequireRole(caller, Role::kViewer));
  PGF_ASSIGN_OR_RETURN(std::vector<RolloutRow> rows,
                       store_.ListRollouts(request.environment(), false));
  pgfleet::v1::ListRolloutsResponse response;
  for (const RolloutRow& row : rows) {
    PGF_ASSIGN_OR_RETURN(*response.add_rollouts(), Describe(row));
  }
  return response;
}

absl::StatusOr<pgfleet::v1::Rollout> RolloutApi::PauseRollout(
    const Caller& caller, const pgfleet::v1::RolloutActionRequest& request) {
  PGF_RETURN_IF_ERROR(RequireRole(caller, Role::kOperator));
  PGF_ASSIGN_OR_RETURN(RolloutRow rollout, engine_.Pause(request.id()));
  PGF_RETURN_IF_ERROR(store_.Audit(caller.actor, "rollout.pause", rollout.environment,
                                   absl::StrCat("rollout=", rollout.id), NowMs()));
  return Describe(rollout);
}

absl::StatusOr<pgfleet::v1::Rollout> RolloutApi::ResumeRollout(
    const Caller& caller, const pgfleet::v1::RolloutActionRequest& request) {
  PGF_RETURN_IF_ERROR(RequireRole(caller, Role::kOperator));
  PGF_ASSIGN_OR_RETURN(RolloutRow rollout, engine_.Resume(request.id()));
  PGF_RETURN_IF_ERROR(store_.Audit(caller.actor, "rollout.resume", rollout.environment,
                                   absl::StrCat("rollout=", rollout.id), NowMs()));
  return Describe(rollout);
}

absl::StatusOr<pgfleet::v1::Rollout> RolloutApi::AbortRollout(
    const Caller& caller, const pgfleet::v1::RolloutActionRequest& request) {
  PGF_RETURN_IF_ERROR(RequireRole(caller, Role::kOperator));
  PGF_ASSIGN_OR_RETURN(RolloutRow rollout, engine_.Abort(request.id(), caller.actor));
  return Describe(rollout);
}

absl::StatusOr<pgfleet::v1::Rollout> RolloutApi::Rollback(
    const Caller& caller, const pgfleet::v1::RollbackRequest& request) {
  // Checked first, like every other call, so a viewer does not learn (from a non-permission
  // error) whether the environment has a previous good version.
  PGF_RETURN_IF_ERROR(RequireRole(caller, Role::kOperator));
  std::vector<std::string> waves(request.waves().begin(), request.waves().end());
  const absl::Duration bake =
      request.bake_seconds() > 0 ? absl::Seconds(request.bake_seconds()) : absl::Seconds(10);
  PGF_ASSIGN_OR_RETURN(StartedRollout started,
                       engine_.Rollback(request.environment(), waves, bake, caller.actor));
  return Describe(started);
}

absl::StatusOr<pgfleet::v1::Rollout> RolloutApi::Promote(
    const Caller& caller, const pgfleet::v1::PromoteRequest& request) {
  PGF_RETURN_IF_ERROR(RequireRole(caller, Role::kOperator));
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
  PGF_ASSIGN_OR_RETURN(bool done, store_.HasSucceededRollout(source.environment, source.sha256));
  if (!done && !request.rollout().force()) {
    return absl::FailedPreconditionError(
        absl::StrCat("v", source.version, " has not completed a rollout in ", source.environment,
                     "; promote it once it has, or use --force --reason TEXT"));
  }
  if (request.rollout().force() && request.rollout().force_reason().empty()) {
    return absl::InvalidArgumentError("--force needs a reason (--reason)");
  }
  PGF_RETURN_IF_ERROR(store_.EnsureEnvironment(request.to_environment(), NowMs()));
  // The ini and its overlays are promoted; the target keeps its own credentials and TLS files
  // (like any ini push).
  PGF_ASSIGN_OR_RETURN(
      ConfigVersionRow copy,
      AddDerivedVersion(store_, NowMs(), request.to_environment(), source.ini_text,
                        &source.overlays, SecretChanges{}, caller.actor,
                        absl::StrCat("promoted from ", source.environment, " v", source.version),
                        nullptr));
  RolloutSpec spec = SpecFromProto(request.rollout());
  spec.kind = RolloutKind::kConfig;  // A promotion moves a version, whatever the request says.
  spec.environment = request.to_environment();
  spec.version = copy.version;
  PGF_ASSIGN_OR_RETURN(StartedRollout started, engine_.Start(spec, caller.actor));
  return Describe(started);
}

absl::StatusOr<pgfleet::v1::Environment> RolloutApi::SetUpstream(
    const Caller& caller, const pgfleet::v1::SetUpstreamRequest& request) {
  PGF_RETURN_IF_ERROR(RequireRole(caller, Role::kAdmin));
  PGF_RETURN_IF_ERROR(store_.EnsureEnvironment(request.environment(), NowMs()));
  if (!request.upstream().empty()) {
    PGF_RETURN_IF_ERROR(store_.EnsureEnvironment(request.upstream(), NowMs()));
  }
  PGF_RETURN_IF_ERROR(store_.SetEnvironmentUpstream(request.environment(), request.upstream()));
  PGF_RETURN_IF_ERROR(store_.Audit(caller.actor, "environment.set_upstream", request.environment(),
                                   request.upstream(), NowMs()));
  pgfleet::v1::Environment env;
  env.set_name(request.environment());
  env.set_upstream(request.upstream());
  return env;
}

}  // namespace pgfleet::controller
