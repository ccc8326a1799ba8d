#include "controller/api/fleet_api.h"

#include <map>
#include <optional>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "common/config/config.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "controller/api/secrets_api.h"
#include "controller/auth/tokens.h"
#include "controller/config/ini_passwords.h"
#include "controller/config/overlay_proto.h"
#include "controller/config/overlays.h"
#include "controller/maintenance/orchestrator.h"
#include "controller/registry/label_selector.h"
#include "controller/rollout/rollout_engine.h"

namespace pgfleet::controller {
namespace {

// AGENT_VIEW_BASIC's metrics: the report's scalars, without its lists. Listed by hand because
// this runs for every agent of a list; fleet_api_test checks through the descriptor that every
// scalar field of MetricsReport is copied, so a field added later cannot be forgotten here.
void CopyMetricsScalars(const pgfleet::v1::MetricsReport& from, pgfleet::v1::MetricsReport* to) {
  to->set_timestamp_unix_ms(from.timestamp_unix_ms());
  to->set_client_count(from.client_count());
  to->set_suspended(from.suspended());
  to->set_binary_outdated(from.binary_outdated());
  to->set_on_disk_build_id(from.on_disk_build_id());
  to->set_on_disk_version(from.on_disk_version());
}

absl::Status RefuseIncludes(const std::string& text, const std::string& what) {
  // A pushed config is the whole file: %include would read files on whichever host parses it
  // (the controller here), so it is refused.
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (absl::StartsWith(absl::StripLeadingAsciiWhitespace(line), "%include")) {
      return absl::InvalidArgumentError(
          absl::StrCat("pushed configs must be self-contained: %include is not allowed", what,
                       " (push the whole file)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

pgfleet::v1::ConfigVersion VersionToProto(const ConfigVersionRow& row) {
  pgfleet::v1::ConfigVersion out;
  out.set_version(row.version);
  out.set_environment(row.environment);
  out.set_sha256(row.sha256);
  // Passwords written in the ini are secret material too: shown redacted, to every role.
  out.set_ini_text(RedactIniPasswords(row.ini_text));
  out.set_author(row.author);
  out.set_message(row.message);
  out.set_created_unix_ms(row.created_unix_ms);
  out.set_parent_version(row.parent_version);
  // Secret material as fingerprints only (issue 18): never the contents.
  for (const ConfigFileRow& file : row.files) *out.add_files() = FileInfoToProto(file);
  for (const CredentialOverlapRow& overlap : row.credential_overlaps) {
    pgfleet::v1::CredentialOverlapInfo* info = out.add_credential_overlaps();
    info->set_user(overlap.user);
    info->set_expires_unix_ms(overlap.expires_unix_ms);
  }
  out.set_secrets_error(row.secrets_error);
  for (const config::ConfigOverlay& overlay : RedactOverlayPasswords(row.overlays)) {
    *out.add_overlays() = OverlayToProto(overlay);
  }
  return out;
}

pgfleet::v1::ConfigFileInfo FileInfoToProto(const ConfigFileRow& file) {
  pgfleet::v1::ConfigFileInfo info;
  info.set_key(file.key);
  info.set_fingerprint(file.fingerprint.substr(0, 12));
  info.set_size(file.size);
  info.set_cert_subject(file.cert_subject);
  info.set_cert_not_after_unix_ms(file.cert_not_after_unix_ms);
  return info;
}

FleetApi::FleetApi(Store& store, AgentRegistry& registry, const Clock& clock,
                   FleetApiOptions options)
    : store_(store), registry_(registry), clock_(clock), options_(options) {
  // The engines offer versions through the registry: each agent gets its own render, with
  // the labels the store has for it at that moment.
  registry_.set_renderer([this](const std::string& agent_id, const ConfigVersionRow& version) {
    absl::StatusOr<AgentRow> agent = store_.GetAgent(agent_id);
    if (!agent.ok()) return absl::StatusOr<RenderedConfig>(agent.status());
    return RenderFor(*agent, version);
  });
}

FleetApi::~FleetApi() { registry_.set_renderer(nullptr); }

absl::StatusOr<RenderedConfig> FleetApi::RenderFor(const AgentRow& agent,
                                                   const ConfigVersionRow& version) {
  return RenderForAgent(version, agent.agent_id, agent.labels);
}

absl::Status RequireRole(const Caller& caller, Role role) {
  if (static_cast<int>(caller.role) < static_cast<int>(role)) {
    return absl::PermissionDeniedError(
        absl::StrCat("role ", RoleName(caller.role), " may not do this; needs ", RoleName(role)));
  }
  return absl::OkStatus();
}

absl::StatusOr<pgfleet::v1::ConfigVersion> FleetApi::PushConfig(
    const Caller& caller, const pgfleet::v1::PushConfigRequest& request) {
  PGF_RETURN_IF_ERROR(RequireRole(caller, Role::kOperator));
  // Secret material is admin's alone; an ini push inherits the newest version's files.
  const SecretChanges changes = SecretChangesFromPush(request);
  if (!changes.empty()) PGF_RETURN_IF_ERROR(RequireRole(caller, Role::kAdmin));
  if (request.environment().empty()) return absl::InvalidArgumentError("environment is required");
  PGF_RETURN_IF_ERROR(RefuseIncludes(request.ini_text(), ""));
  // Catch what can be caught centrally; host-specific problems (a missing auth_file on one
  // server) come back as that agent's NACK.
  absl::StatusOr<config::Config> parsed = config::ParseConfig(request.ini_text(), "pushed.ini");
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("invalid config: ", parsed.status().message()));
  }
  ConfigVersionRow candidate;
  candidate.environment = request.environment();
  candidate.ini_text = request.ini_text();
  for (const pgfleet::v1::ConfigOverlay& overlay : request.overlays()) {
    candidate.overlays.push_back(OverlayFromProto(overlay));
  }
  PGF_RETURN_IF_ERROR(CanonicalizeAndCheckOverlays(candidate.overlays));
  // Every agent the environment knows runs its own render: each must validate too.
  PGF_ASSIGN_OR_RETURN(std::vector<AgentRow> agents, store_.ListAgents(request.environment()));
  for (const AgentRow& agent : agents) {
    PGF_ASSIGN_OR_RETURN(RenderedConfig rendered, RenderFor(agent, candidate));
    if (rendered.applied_overlays.empty()) continue;  // The base, checked above.
    PGF_RETURN_IF_ERROR(RefuseIncludes(rendered.ini_text, " (from an overlay)"));
    absl::StatusOr<config::Config> agent_config =
        config::ParseConfig(rendered.ini_text, absl::StrCat(agent.agent_id, ".ini"));
    if (!agent_config.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "invalid config as rendered for agent ", agent.agent_id, " (with ",
          absl::StrJoin(rendered.applied_overlays, ", "), "): ", agent_config.status().message()));
    }
  }
  std::vector<std::string> warnings;
  PGF_ASSIGN_OR_RETURN(
      ConfigVersionRow row,
      AddDerivedVersion(store_, NowMillis(), request.environment(), request.ini_text(),
                        &candidate.overlays, changes, caller.actor, request.message(), &warnings));
  for (const std::string& warning : warnings) PGF_WARN("api", "config push: %s", warning);
  PGF_RETURN_IF_ERROR(store_.Audit(
      caller.actor, "config.push", request.environment(),
      absl::StrCat("version=", row.version, " sha256=", row.sha256, DescribeSecrets(row)),
      NowMillis()));
  PGF_INFO("api", "%s pushed config version %d to %s", caller.actor, row.version,
           request.environment());
  return VersionToProto(row);
}

absl::StatusOr<pgfleet::v1::ListConfigsResponse> FleetApi::ListConfigs(
    const Caller& caller, const pgfleet::v1::ListConfigsRequest& request) {
  PGF_RETURN_IF_ERROR(RequireRole(caller, Role::kViewer));
  PGF_ASSIGN_OR_RETURN(std::vector<ConfigVersionRow> rows,
                       store_.ListConfigVersions(request.environment()));
  pgfleet::v1::ListConfigsResponse response;
  for (const ConfigVersionRow& row : rows) *response.add_versions() = VersionToProto(row);
  return response;
}

absl::StatusOr<pgfleet::v1::ConfigVersion> FleetApi::GetConfig(
    const Caller& caller, const pgfleet::v1::GetConfigRequest& request) {
  PGF_RETURN_IF_ERROR(RequireRole(caller, Role::kViewer));
  PGF_ASSIGN_OR_RETURN(ConfigVersionRow row, store_.GetConfigVersion(request.version()));
  return VersionToProto(row);
}

absl::StatusOr<pgfleet::v1::RenderedConfig> FleetApi::RenderConfig(
    const Caller& caller, const pgfleet::v1::RenderConfigRequest& request) {
  PGF_RETURN_IF_ERROR(RequireRole(caller, Role::kViewer));
  if (request.agent_id().empty()) return absl::InvalidArgumentError("agent id is required");
  PGF_ASSIGN_OR_RETURN(AgentRow agent, store_.GetAgent(request.agent_id()));
  if (!request.environment().empty() && request.environment() != agent.environment) {
    return absl::InvalidArgumentError(absl::StrCat(
        "agent ", agent.agent_id, " is in ", agent.environment, ", not ", request.environment()));
  }
  uint64_t version = request.version();
  if (version == 0) {
    PGF_ASSIGN_OR_RETURN(version, DesiredVersionFor(agent));
    if (version == 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("agent ", agent.agent_id, " has no desired version; name one"));
    }
  }
  PGF_ASSIGN_OR_RETURN(ConfigVersionRow row, store_.GetConfigVersion(version));
  if (row.environment != agent.environment) {
    return absl::InvalidArgumentError(absl::StrCat("v", version, " belongs to ", row.environment,
                                                   ", agent ", agent.agent_id, " to ",
                                                   agent.environment));
  }
  PGF_ASSIGN_OR_RETURN(RenderedConfig rendered, RenderFor(agent, row));
  pgfleet::v1::RenderedConfig out;
  out.set_version(rendered.version);
  out.set_agent_id(agent.agent_id);
  out.set_ini_text(RedactIniPasswords(rendered.ini_text));
  out.set_sha256(rendered.sha256);
  for (const std::string& name : rendered.applied_overlays) out.add_applied_overlays(name);
  return out;
}

absl::StatusOr<pgfleet::v1::Environment> FleetApi::SetDesiredConfig(
    const Caller& caller, const pgfleet::v1::SetDesiredConfigRequest& request) {
  PGF_RETURN_IF_ERROR(RequireRole(caller, Role::kOperator));
  PGF_RETURN_IF_ERROR(
      store_.SetDesiredVersion(request.environment(), request.version(), std::nullopt));
  PGF_RETURN_IF_ERROR(store_.Audit(caller.actor, "config.set_desired", request.environment(),
                                   absl::StrCat("version=", request.version()), NowMillis()));
  PGF_INFO("api", "%s set desired config of %s to version %d", caller.actor, request.environment(),
           request.version());
  // The environment's agents read once (not one query per agent), and the version once.
  PGF_ASSIGN_OR_RETURN(std::vector<AgentRow> rows, store_.ListAgents(request.environment()));
  std::map<std::string, const AgentRow*> by_id;
  for (const AgentRow& row : rows) by_id.emplace(row.agent_id, &row);
  ReadOnce once;
  for (const std::shared_ptr<AgentSession>& session : registry_.List(request.environment())) {
    if (auto row = by_id.find(session->agent_id()); row != by_id.end()) {
      Reconcile(*session, *row->second, once, /*force=*/false);
    }
  }
  PGF_ASSIGN_OR_RETURN(EnvironmentRow env, store_.GetEnvironment(request.environment()));
  return DescribeEnvironment(env);
}

absl::StatusOr<pgfleet::v1::Environment> FleetApi::DescribeEnvironment(const EnvironmentRow& env) {
  pgfleet::v1::Environment out;
  out.set_name(env.name);
  out.set_desired_version(env.desired_version);
  PGF_ASSIGN_OR_RETURN(std::vector<AgentRow> agents, store_.ListAgents(env.name));
  int connected = 0, converged = 0;
  ReadOnce once;
  // A follower has no agent streams: the leader's record says which agents are linked and
  // what they run (as in ToProto).
  const bool follower = streams_here_ != nullptr && !streams_here_();
  for (const AgentRow& agent : agents) {
    std::shared_ptr<AgentSession> session = registry_.Find(agent.agent_id);
    if (session == nullptr && !(follower && agent.connected)) continue;
    ++connected;
    PGF_ASSIGN_OR_RETURN(uint64_t desired, DesiredVersionFor(agent, &once));
    const uint64_t applied =
        session != nullptr ? session->applied_version() : agent.applied_version;
    if (applied != desired) continue;
    // The right version may still be the wrong render (its labels changed and the new render
    // is not applied yet): where both sides' render sha256 are known, they must match too.
    const std::string applied_sha256 =
        session != nullptr ? session->applied_sha256() : agent.applied_sha256;
    const std::string desired_sha256 = DesiredSha256(agent, desired, &once);
    if (!applied_sha256.empty() && !desired_sha256.empty() && applied_sha256 != desired_sha256) {
      continue;
    }
    ++converged;
  }
  if (rollouts_ != nullptr) {
    PGF_ASSIGN_OR_RETURN(std::string upstream, rollouts_->GetEnvironmentUpstream(env.name));
    out.set_upstream(upstream);
    PGF_ASSIGN_OR_RETURN(std::vector<RolloutRow> active, rollouts_->ListRollouts(env.name, true));
    if (!active.empty()) out.set_active_rollout(active.front().id);
  }
  out.set_agents_total(static_cast<int32_t>(agents.size()));
  out.set_agents_connected(connected);
  out.set_agents_converged(converged);
  return out;
}

absl::StatusOr<pgfleet::v1::ListEnvironmentsResponse> FleetApi::ListEnvironments(
    const Caller& caller) {
  PGF_RETURN_IF_ERROR(RequireRole(caller, Role::kViewer));
  PGF_ASSIGN_OR_RETURN(std::vector<EnvironmentRow> envs, store_.ListEnvironments());
  pgfleet::v1::ListEnvironmentsResponse response;
  for (const EnvironmentRow& env : envs) {
    PGF_ASSIGN_OR_RETURN(*response.add_environments(), DescribeEnvironment(env));
  }
  return response;
}

absl::StatusOr<uint64_t> FleetApi::DesiredVersionFor(const AgentRow& agent, ReadOnce* once) {
  if (agent.pinned_version.has_value()) return *agent.pinned_version;
  if (once != nullptr) {
    auto known = once->desired_by_environment.find(agent.environment);
    if (known != once->desired_by_environment.end()) return known->second;
  }
  absl::StatusOr<EnvironmentRow> env = store_.GetEnvironment(agent.environment);
  uint64_t desired = 0;
  if (env.ok()) {
    desired = env->desired_version;
  } else if (!absl::IsNotFound(env.status())) {
    return env.status();
  }
  if (once != nullptr) once->desired_by_environment[agent.environment] = desired;
  return desired;
}

pgfleet::v1::Agent FleetApi::ToProto(const AgentRow& row, uint64_t desired, ReadOnce* once,
                                     pgfleet::v1::AgentView view) {
  pgfleet::v1::Agent out;
  out.set_agent_id(row.agent_id);
  out.set_environment(row.environment);
  for (const auto& [key, value] : row.labels) (*out.mutable_labels())[key] = value;
  for (const auto& [key, value] : row.reported_labels) {
    (*out.mutable_reported_labels())[key] = value;
  }
  for (const auto& [key, value] : row.label_overrides) {
    if (value.has_value()) {
      (*out.mutable_operator_labels())[key] = *value;
    } else {
      out.add_removed_labels(key);
    }
  }
  out.set_pinned_version(row.pinned_version.value_or(0));
  out.set_agent_version(row.agent_version);
  out.set_hostname(row.hostname);
  std::shared_ptr<AgentSession> session = registry_.Find(row.agent_id);
  // A follower has no agent streams: the leader's record says whether the agent is linked.
  out.set_connected(session != nullptr ||
                    (streams_here_ != nullptr && !streams_here_() && row.connected));
  out.set_first_seen_unix_ms(row.first_seen_unix_ms);
  out.set_last_seen_unix_ms(row.last_seen_unix_ms);
  out.set_applied_version(session != nullptr ? session->applied_version() : row.applied_version);
  out.set_desired_version(desired);
  out.set_last_error(row.last_error);
  out.set_applied_sha256(row.applied_sha256);
  out.set_desired_sha256(DesiredSha256(row, desired, once));
  out.set_drifted(!out.applied_sha256().empty() && !out.desired_sha256().empty() &&
                  out.applied_sha256() != out.desired_sha256());
  if (session != nullptr) {
    out.set_build_id(session->build_id());
    out.set_pid(session->pid());
    out.set_binary_outdated(session->binary_outdated());
    out.set_on_disk_build_id(session->on_disk_build_id());
    out.set_on_disk_version(session->on_disk_version());
    if (std::shared_ptr<const pgfleet::v1::MetricsReport> metrics = session->metrics()) {
      if (view == pgfleet::v1::AGENT_VIEW_BASIC) {
        CopyMetricsScalars(*metrics, out.mutable_last_metrics());
      } else {
        *out.mutable_last_metrics() = *metrics;
      }
    }
    for (const std::string& key : session->restart_pending()) out.add_restart_pending(key);
  }
  return out;
}

std::string FleetApi::DesiredSha256(const AgentRow& row, uint64_t desired, ReadOnce* once) {
  if (desired == 0) return "";
  if (once == nullptr) {
    absl::StatusOr<ConfigVersionRow> version = store_.GetConfigVersion(desired);
    if (!version.ok()) return "";
    absl::StatusOr<RenderedConfig> rendered = RenderFor(row, *version);
    return rendered.ok() ? rendered->sha256 : "";
  }
  auto cached = once->versions.find(desired);
  if (cached == once->versions.end()) {
    absl::StatusOr<ConfigVersionRow> version = store_.GetConfigVersion(desired);
    cached =
        once->versions
            .emplace(desired, version.ok() ? std::optional<ConfigVersionRow>(*std::move(version))
                                           : std::nullopt)
            .first;
  }
  if (!cached->second.has_value()) return "";
  const ConfigVersionRow& version = *cached->second;
  const bool same_for_all = version.overlays.empty();
  if (same_for_all) {
    if (auto base = once->base_sha256.find(desired); base != once->base_sha256.end()) {
      return base->second;
    }
  }
  absl::StatusOr<RenderedConfig> rendered = RenderFor(row, version);
  if (!rendered.ok()) return "";
  if (same_for_all) once->base_sha256[desired] = rendered->sha256;
  return rendered->sha256;
}

absl::StatusOr<pgfleet::v1::ListAgentsResponse> FleetApi::ListAgents(
    const Caller& caller, const pgfleet::v1::ListAgentsRequest& request) {
  PGF_RETURN_IF_ERROR(RequireRole(caller, Role::kViewer));
  PGF_ASSIGN_OR_RETURN(LabelSelector selector, LabelSelector::Parse(request.selector()));
  PGF_ASSIGN_OR_RETURN(std::vector<AgentRow> rows, store_.ListAgents(request.environment()));
  pgfleet::v1::ListAgentsResponse response;
  ReadOnce once;
  for (const AgentRow& row : rows) {
    if (!selector.Matches(row.labels)) continue;
    PGF_ASSIGN_OR_RETURN(uint64_t desired, DesiredVersionFor(row, &once));
    *response.add_agents() = ToProto(row, desired, &once, request.view());
  }
  return response;
}

absl::StatusOr<pgfleet::v1::Agent> FleetApi::GetAgent(const Caller& caller,
                                                      const pgfleet::v1::GetAgentRequest& request) {
  PGF_RETURN_IF_ERROR(RequireRole(caller, Role::kViewer));
  PGF_ASSIGN_OR_RETURN(AgentRow row, store_.GetAgent(request.agent_id()));
  PGF_ASSIGN_OR_RETURN(uint64_t desired, DesiredVersionFor(row));
  return ToProto(row, desired);
}

absl::StatusOr<pgfleet::v1::SendCommandResponse> FleetApi::SendCommand(
    const Caller& caller, const pgfleet::v1::SendCommandRequest& request) {
  PGF_RETURN_IF_ERROR(RequireRole(caller, Role::kOperator));
  std::string kind, args;
  switch (request.command().kind_case()) {
    case pgfleet::v1::Command::kPause:
      kind = "pause";
      args = absl::StrCat("db=", request.command().pause().database(),
                          " deadline=", request.command().pause().deadline_seconds(), "s");
      break;
    case pgfleet::v1::Command::kResume:
      kind = "resume";
      args = absl::StrCat("db=", request.command().resume().database());
      break;
    case pgfleet::v1::Command::kReload:
      kind = "reload";
      break;
    case pgfleet::v1::Command::kRestart:
      // A zero-downtime restart: the agent's new process completes it (its hello names the
      // command); the fleet-wide rollout of restarts builds on this.
      kind = "restart";
      break;
    case pgfleet::v1::Command::KIND_NOT_SET:
      return absl::InvalidArgumentError("command is empty (pause, resume or reload)");
  }
  PGF_ASSIGN_OR_RETURN(LabelSelector selector, LabelSelector::Parse(request.selector()));
  if (!selector.empty() && (request.environment().empty() || !request.agent_id().empty())) {
    return absl::InvalidArgumentError("a selector picks agents of an environment: give --env");
  }
  std::vector<std::shared_ptr<AgentSession>> targets;
  if (!request.agent_id().empty()) {
    std::shared_ptr<AgentSession> session = registry_.Find(request.agent_id());
    if (session == nullptr) {
      return absl::UnavailableError(
          absl::StrCat("agent ", request.agent_id(), " is not connected"));
    }
    targets.push_back(session);
  } else if (!request.environment().empty()) {
    targets = registry_.List(request.environment());
    if (!selector.empty()) {
      PGF_ASSIGN_OR_RETURN(std::vector<AgentRow> agents, store_.ListAgents(request.environment()));
      std::set<std::string> matching;
      for (const AgentRow& agent : agents) {
        if (selector.Matches(agent.labels)) matching.insert(agent.agent_id);
      }
      if (matching.empty()) {
        return absl::FailedPreconditionError(absl::StrCat("selector \"", selector.ToString(),
                                                          "\" matches no agent of environment ",
                                                          request.environment()));
      }
      std::erase_if(targets, [&](const std::shared_ptr<AgentSession>& session) {
        return matching.count(session->agent_id()) == 0;
      });
      absl::StrAppend(&args, args.empty() ? "" : " ", "selector=", selector.ToString());
    }
  } else {
    return absl::InvalidArgumentError("name an environment or an agent");
  }
  PGF_RETURN_IF_ERROR(store_.Audit(
      caller.actor, absl::StrCat("command.", kind),
      request.agent_id().empty() ? request.environment() : request.agent_id(), args, NowMillis()));
  // Send to every agent first, then collect: the fleet acts at once, not one by one.
  std::vector<std::pair<std::shared_ptr<AgentSession>, uint64_t>> sent;
  pgfleet::v1::SendCommandResponse response;
  for (const std::shared_ptr<AgentSession>& session : targets) {
    PGF_ASSIGN_OR_RETURN(uint64_t id, store_.RecordCommand(session->agent_id(), kind, args,
                                                           caller.actor, NowMillis()));
    pgfleet::v1::ControllerMessage message;
    *message.mutable_command() = request.command();
    message.mutable_command()->set_command_id(id);
    session->ExpectResult(id);
    if (!session->Send(message)) {
      pgfleet::v1::CommandOutcome* outcome = response.add_outcomes();
      outcome->set_agent_id(session->agent_id());
      outcome->set_error("stream closed before the command could be sent");
      (void)store_.RecordCommandResult(id, false, outcome->error(), NowMillis());
      session->WaitResult(id, absl::ZeroDuration());  // Forget the registration.
      continue;
    }
    sent.emplace_back(session, id);
  }
  const absl::Time deadline = absl::Now() + options_.command_timeout;
  for (auto& [session, id] : sent) {
    std::optional<pgfleet::v1::CommandResult> result =
        session->WaitResult(id, std::max(deadline - absl::Now(), absl::ZeroDuration()));
    pgfleet::v1::CommandOutcome* outcome = response.add_outcomes();
    outcome->set_agent_id(session->agent_id());
    if (!result.has_value()) {
      outcome->set_error("no answer from the agent in time");
      (void)store_.RecordCommandResult(id, false, outcome->error(), NowMillis());
      continue;
    }
    outcome->set_ok(result->ok());
    outcome->set_error(result->error());
  }
  return response;
}

absl::StatusOr<pgfleet::v1::Agent> FleetApi::SetAgentLabels(
    const Caller& caller, const pgfleet::v1::SetAgentLabelsRequest& request) {
  PGF_RETURN_IF_ERROR(RequireRole(caller, Role::kOperator));
  if (request.agent_id().empty()) return absl::InvalidArgumentError("agent_id is required");
  if (request.set().empty() && request.remove().empty()) {
    return absl::InvalidArgumentError("no label to set or remove");
  }
  PGF_ASSIGN_OR_RETURN(AgentRow row, store_.GetAgent(request.agent_id()));
  std::map<std::string, std::optional<std::string>> overrides = row.label_overrides;
  std::vector<std::string> changes;
  // Sorted, so the first refused key is the same every time.
  std::map<std::string, std::string> set(request.set().begin(), request.set().end());
  for (const auto& [key, value] : set) {
    PGF_RETURN_IF_ERROR(ValidateLabelKey(key));
    PGF_RETURN_IF_ERROR(ValidateLabelValue(value));
    auto current = row.labels.find(key);
    if (current != row.labels.end() && current->second != value && !request.overwrite()) {
      return absl::InvalidArgumentError(absl::StrCat("label '", key, "' already has a value (",
                                                     current->second,
                                                     "), and --overwrite is false"));
    }
    overrides[key] = value;
    changes.push_back(absl::StrCat(key, "=", value));
  }
  for (const std::string& key : request.remove()) {
    PGF_RETURN_IF_ERROR(ValidateLabelKey(key));
    if (set.count(key) != 0) {
      return absl::InvalidArgumentError(absl::StrCat("label '", key, "' is both set and removed"));
    }
    // A label the agent reports stays removed across its reconnects; an operator-only one just
    // goes away.
    if (row.reported_labels.count(key) != 0) {
      overrides[key] = std::nullopt;
    } else {
      overrides.erase(key);
    }
    changes.push_back(absl::StrCat(key, "-"));
  }
  PGF_RETURN_IF_ERROR(store_.SetAgentLabelOverrides(request.agent_id(), overrides));
  PGF_RETURN_IF_ERROR(store_.Audit(caller.actor, "agent.label", request.agent_id(),
                                   absl::StrJoin(changes, " "), NowMillis()));
  PGF_INFO("api", "%s labelled agent %s: %s", caller.actor, request.agent_id(),
           absl::StrJoin(changes, " "));
  // Its rendered config may depend on its labels (overlays): bring it up to date now.
  if (std::shared_ptr<AgentSession> session = registry_.Find(request.agent_id())) {
    Reconcile(*session);
  }
  PGF_ASSIGN_OR_RETURN(AgentRow updated, store_.GetAgent(request.agent_id()));
  PGF_ASSIGN_OR_RETURN(uint64_t desired, DesiredVersionFor(updated));
  return ToProto(updated, desired);
}

absl::StatusOr<TokenRow> FleetApi::AuthenticateJoinToken(const std::string& authorization) {
  return controller::AuthenticateJoinToken(store_, authorization, clock_.Now());
}

absl::Status FleetApi::OnAgentHello(const pgfleet::v1::AgentHello& hello) {
  // Labels decide which overlays render into the agent's config and which rollouts, windows
  // and commands pick it: an agent registered without a mistyped label would match selectors
  // meant to exclude it (zone!=a, !canary) and could be sent the wrong render. So it is not
  // registered until its --labels are fixed; it keeps serving with the config it has.
  std::map<std::string, std::string> labels(hello.labels().begin(), hello.labels().end());
  for (const auto& [key, value] : labels) {
    absl::Status valid = ValidateLabelKey(key);
    if (valid.ok()) valid = ValidateLabelValue(value);
    if (!valid.ok()) {
      PGF_WARN("agents", "agent %s refused: --labels %s=%s: %s", hello.agent_id(), key, value,
               valid.message());
      return absl::InvalidArgumentError(
          absl::StrCat("--labels ", key, "=", value, ": ", valid.message(),
                       " (kubectl's label rules); fix the agent's --labels and restart it"));
    }
  }
  AgentRow row;
  row.agent_id = hello.agent_id();
  row.environment = hello.environment();
  for (const auto& [key, value] : hello.labels()) row.labels[key] = value;
  row.agent_version = hello.agent_version();
  row.hostname = hello.hostname();
  row.applied_version = hello.applied_config_version();
  row.applied_sha256 = hello.applied_config_sha256();
  PGF_RETURN_IF_ERROR(store_.EnsureEnvironment(hello.environment(), NowMillis()));
  return store_.RecordAgentHello(row, NowMillis());
}

void FleetApi::OnAgentMessage(AgentSession& session, const pgfleet::v1::AgentMessage& message) {
  switch (message.body_case()) {
    case pgfleet::v1::AgentMessage::kMetrics:
      session.SetMetrics(message.metrics());
      if (absl::Status recorded = store_.RecordMetrics(session.agent_id(), NowMillis(),
                                                       message.metrics().SerializeAsString());
          !recorded.ok()) {
        PGF_WARN("api", "agent %s: metrics not stored: %s", session.agent_id(), recorded.message());
      }
      (void)store_.TouchAgent(session.agent_id(), NowMillis());
      break;
    case pgfleet::v1::AgentMessage::kConfigResult: {
      const pgfleet::v1::ConfigResult& result = message.config_result();
      if (result.accepted()) {
        // Before the applied version, so whoever sees the new version sees what it left pending.
        session.set_restart_pending(
            {result.restart_pending().begin(), result.restart_pending().end()});
        session.set_applied_version(result.version());
        session.set_applied_sha256(result.sha256());
        PGF_INFO("api", "agent %s ACKed config version %d%s", session.agent_id(), result.version(),
                 result.restart_pending().empty()
                     ? ""
                     : absl::StrCat(" (restart pending: ",
                                    absl::StrJoin(result.restart_pending(), ", "), ")"));
      } else {
        PGF_WARN("api", "agent %s NACKed config version %d: %s", session.agent_id(),
                 result.version(), result.error());
      }
      // An ACK closes the delivery; after a NACK the version stays marked as sent so it is not
      // pushed again until someone forces it (a new rollout of it).
      if (result.accepted()) session.set_sent_version(0);
      if (rollout_engine_ != nullptr) {
        rollout_engine_->OnConfigResult(session.agent_id(), result.version(), result.accepted(),
                                        result.error());
      }
      if (absl::Status recorded = store_.RecordAgentConfigResult(
              session.agent_id(), result.version(), result.sha256(),
              // Prefixed with the version, so readers know which version was refused.
              result.accepted() ? "" : absl::StrCat("v", result.version(), ": ", result.error()),
              NowMillis());
          !recorded.ok()) {
        PGF_WARN("api", "agent %s: config result not stored: %s", session.agent_id(),
                 recorded.message());
      }
      break;
    }
    case pgfleet::v1::AgentMessage::kCommandResult:
      session.DeliverResult(message.command_result());
      if (rollout_engine_ != nullptr) {
        // A restart rollout's RestartCommand fails on the old stream (success is the new
        // process's hello).
        rollout_engine_->OnCommandResult(session.agent_id(), message.command_result().command_id(),
                                         message.command_result().ok(),
                                         message.command_result().error());
      }
      (void)store_.RecordCommandResult(message.command_result().command_id(),
                                       message.command_result().ok(),
                                       message.command_result().error(), NowMillis());
      break;
    case pgfleet::v1::AgentMessage::kHello:
    case pgfleet::v1::AgentMessage::BODY_NOT_SET:
      break;
  }
}

void FleetApi::OnAgentGone(const std::shared_ptr<AgentSession>& session) {
  session->Close();
  registry_.Unregister(session);
  if (registry_.Find(session->agent_id()) == nullptr) {
    (void)store_.MarkAgentDisconnected(session->agent_id(), NowMillis());
  }
}

void FleetApi::OnAgentConnected(AgentSession& session) {
  Reconcile(session);
  if (maintenance_engine_ != nullptr) {
    maintenance_engine_->OnAgentConnected(session.agent_id(), session.environment());
  }
}

void FleetApi::Reconcile(AgentSession& session, bool force) {
  // Read now, not cached: an operator may just have changed the agent's labels.
  absl::StatusOr<AgentRow> agent = store_.GetAgent(session.agent_id());
  if (!agent.ok()) return;
  ReadOnce once;
  Reconcile(session, *agent, once, force);
}

void FleetApi::Reconcile(AgentSession& session, const AgentRow& agent, ReadOnce& once, bool force) {
  absl::StatusOr<uint64_t> desired = DesiredVersionFor(agent, &once);
  if (!desired.ok() || *desired == 0) return;
  auto cached = once.versions.find(*desired);
  if (cached == once.versions.end()) {
    absl::StatusOr<ConfigVersionRow> read = store_.GetConfigVersion(*desired);
    if (!read.ok()) {
      PGF_ERROR("api", "desired version %d of agent %s unreadable: %s", *desired,
                session.agent_id(), read.status().message());
      return;
    }
    cached = once.versions.emplace(*desired, *std::move(read)).first;
  }
  if (!cached->second.has_value()) return;
  const ConfigVersionRow& version = *cached->second;
  absl::StatusOr<RenderedConfig> rendered = RenderFor(agent, version);
  if (!rendered.ok()) {
    PGF_ERROR("api", "desired version %d not rendered for agent %s: %s", *desired,
              session.agent_id(), rendered.status().message());
    return;
  }
  AgentRegistry::OfferConfigTo(session, version, *rendered, force);
}

}  // namespace pgfleet::controller
