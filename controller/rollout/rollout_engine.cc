#include "controller/rollout/rollout_engine.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "common/config/config.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "controller/config/overlays.h"
#include "controller/registry/label_selector.h"
#include "controller/rollout/connection_budget.h"

namespace pgfleet::controller {
namespace {

const std::vector<std::string> kDefaultWaves = {"1", "25%", "100%"};

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

bool OnDiskBinaryIs(const LiveAgent& agent, const std::string& version) {
  if (version.empty()) return true;
  if (agent.on_disk_version == version) return true;
  absl::string_view id = agent.on_disk_build_id;
  absl::string_view wanted = version;
  absl::ConsumePrefix(&id, "sha256:");
  absl::ConsumePrefix(&wanted, "sha256:");
  // A build id is named by a prefix, as `agents list` shows 12 characters of it.
  return !id.empty() && wanted.size() >= 8 && absl::StartsWith(id, wanted);
}

RolloutEngine::RolloutEngine(RolloutStore& store, AgentDirectory& agents, const Clock& clock)
    : store_(store), agents_(agents), clock_(clock), sends_([this](const Outbox& offers) {
        // In order; consecutive config offers of one version (a wave) go as one batch.
        for (size_t i = 0; i < offers.size();) {
          const Offer& offer = offers[i];
          if (offer.command.has_value()) {
            if (!agents_.Send(offer.agent_id, *offer.command)) {
              PGF_WARN("rollout", "agent %s: restart command not sent (its stream is gone)",
                       offer.agent_id);
            }
            ++i;
            continue;
          }
          std::vector<std::string> batch;
          size_t next = i;
          while (next < offers.size() && !offers[next].command.has_value() &&
                 offers[next].version.version == offer.version.version &&
                 offers[next].force == offer.force) {
            batch.push_back(offers[next].agent_id);
            ++next;
          }
          agents_.OfferConfigs(batch, offer.version, offer.force);
          i = next;
        }
      }) {}

RolloutEngine::~RolloutEngine() { ticker_.Stop(); }

void RolloutEngine::StartTicking(absl::Duration interval, std::function<bool()> may_tick) {
  ticker_.Start(interval, [this, may_tick = std::move(may_tick)] {
    if (!may_tick || may_tick()) Tick(clock_.Now());
  });
}

absl::Status RolloutEngine::Queue(Outbox& out, const std::string& agent_id, uint64_t version,
                                  bool force) {
  if (version == 0) return absl::OkStatus();
  // From the back: a wave queues one version for each of its agents in a row.
  for (auto offer = out.rbegin(); offer != out.rend(); ++offer) {
    if (offer->version.version == version) {
      ConfigVersionRow row = offer->version;
      out.push_back(Offer{agent_id, std::move(row), force, std::nullopt});
      return absl::OkStatus();
    }
  }
  PGF_ASSIGN_OR_RETURN(ConfigVersionRow row, store_.GetConfigVersion(version));
  out.push_back(Offer{agent_id, std::move(row), force, std::nullopt});
  return absl::OkStatus();
}

void RolloutEngine::ReleaseAndSend(Outbox out) {
  std::vector<Outbox> batch;
  if (!out.empty()) batch.push_back(std::move(out));
  sends_.Push(std::move(batch));
  mu_.Unlock();
  sends_.Drain();
}

void RolloutEngine::OnConfigResult(const std::string& agent_id, uint64_t version, bool accepted,
                                   const std::string& error) {
  if (accepted) return;  // Progress is read from the agents' applied versions on the next tick.
  absl::MutexLock lock(&results_mu_);
  nacks_.push_back(ConfigResult{agent_id, version, error});
}

void RolloutEngine::OnCommandResult(const std::string& agent_id, uint64_t command_id, bool ok,
                                    const std::string& error) {
  if (ok) return;  // A restart's success is the new process's hello, read on the next tick.
  absl::MutexLock lock(&results_mu_);
  failed_commands_.push_back(FailedCommand{agent_id, command_id, error});
}

void RolloutEngine::ApplyConfigResults() {
  std::deque<ConfigResult> nacks;
  std::deque<FailedCommand> failed_commands;
  {
    absl::MutexLock lock(&results_mu_);
    nacks.swap(nacks_);
    failed_commands.swap(failed_commands_);
  }
  if (nacks.empty() && failed_commands.empty()) return;
  absl::StatusOr<std::vector<RolloutRow>> active = store_.ListRollouts("", true);
  if (!active.ok()) {
    PGF_ERROR("rollout", "cannot read rollouts: %s", active.status().message());
    absl::MutexLock lock(&results_mu_);
    nacks_.insert(nacks_.begin(), nacks.begin(), nacks.end());  // Next tick tries again.
    failed_commands_.insert(failed_commands_.begin(), failed_commands.begin(),
                            failed_commands.end());
    return;
  }
  for (const FailedCommand& failed : failed_commands) {
    for (const RolloutRow& rollout : *active) {
      if (rollout.kind != RolloutKind::kRestart) continue;
      absl::StatusOr<std::vector<RolloutAgentRow>> members = store_.ListRolloutAgents(rollout.id);
      if (!members.ok()) continue;
      for (RolloutAgentRow& member : *members) {
        if (member.agent_id != failed.agent_id || member.command_id != failed.command_id) continue;
        member.state = RolloutAgentState::kFailed;
        member.error = failed.error;
        if (absl::Status updated = store_.UpdateRolloutAgent(member); !updated.ok()) {
          PGF_ERROR("rollout", "rollout %d: failed restart of %s not recorded: %s", rollout.id,
                    failed.agent_id, updated.message());
        }
      }
    }
  }
  for (const ConfigResult& nack : nacks) {
    for (const RolloutRow& rollout : *active) {
      if (rollout.kind != RolloutKind::kConfig || rollout.to_version != nack.version) continue;
      absl::StatusOr<std::vector<RolloutAgentRow>> members = store_.ListRolloutAgents(rollout.id);
      if (!members.ok()) continue;
      for (RolloutAgentRow& member : *members) {
        if (member.agent_id != nack.agent_id) continue;
        member.state = RolloutAgentState::kFailed;
        member.error = nack.error;
        if (absl::Status updated = store_.UpdateRolloutAgent(member); !updated.ok()) {
          PGF_ERROR("rollout", "rollout %d: NACK of %s not recorded: %s", rollout.id, nack.agent_id,
                    updated.message());
        }
      }
    }
  }
}

void RolloutEngine::Tick(absl::Time now) {
  mu_.Lock();
  Outbox out;
  ApplyConfigResults();
  absl::StatusOr<std::vector<RolloutRow>> active = store_.ListRollouts("", true);
  if (!active.ok()) {
    PGF_ERROR("rollout", "cannot read rollouts: %s", active.status().message());
  } else {
    for (RolloutRow& rollout : *active) {
      if (rollout.state != RolloutState::kRunning) continue;
      if (absl::Status stepped = Step(rollout, UnixMillis(now), out); !stepped.ok()) {
        PGF_ERROR("rollout", "rollout %d: %s (will retry)", rollout.id, stepped.message());
      }
    }
  }
  ReleaseAndSend(std::move(out));
}

absl::Status RolloutEngine::SendRestart(const RolloutRow& rollout, RolloutAgentRow& agent,
                                        const LiveAgent& live, int64_t now, Outbox& out) {
  PGF_ASSIGN_OR_RETURN(
      uint64_t command_id,
      store_.RecordCommand(agent.agent_id, "restart", absl::StrCat("rollout=", rollout.id),
                           "rollout-engine", now));
  agent.command_id = command_id;
  agent.old_pid = live.pid;
  agent.new_pid = 0;
  agent.state = RolloutAgentState::kApplying;
  PGF_RETURN_IF_ERROR(store_.UpdateRolloutAgent(agent));
  pgfleet::v1::ControllerMessage message;
  message.mutable_command()->set_command_id(command_id);
  message.mutable_command()->mutable_restart();
  out.push_back(Offer{agent.agent_id, {}, false, std::move(message)});
  PGF_INFO("rollout", "rollout %d: restarting agent %s (pid %d, command %d)", rollout.id,
           agent.agent_id, live.pid, command_id);
  return absl::OkStatus();
}

absl::Status RolloutEngine::StartWave(RolloutRow& rollout, std::vector<RolloutAgentRow>& agents,
                                      int64_t now, Outbox& out) {
  int in_wave = 0;
  // The wave's pins and rows are written in one batch (one transaction), then sent.
  std::vector<RolloutStore::AgentPin> pins;
  std::vector<RolloutAgentRow> applying;
  for (RolloutAgentRow& agent : agents) {
    if (agent.wave != rollout.current_wave) continue;
    ++in_wave;
    if (rollout.kind == RolloutKind::kRestart) {
      // An agent that is offline now is sent its command when it is back (Step).
      if (std::optional<LiveAgent> live = agents_.FindLive(agent.agent_id)) {
        PGF_RETURN_IF_ERROR(SendRestart(rollout, agent, *live, now, out));
      }
      continue;
    }
    pins.push_back({agent.agent_id, rollout.to_version});
    RolloutAgentRow row = agent;
    row.state = RolloutAgentState::kApplying;
    applying.push_back(std::move(row));
  }
  PGF_RETURN_IF_ERROR(store_.UpdateRolloutAgents(pins, applying));
  for (RolloutAgentRow& agent : agents) {
    if (agent.wave != rollout.current_wave || rollout.kind == RolloutKind::kRestart) continue;
    agent.state = RolloutAgentState::kApplying;
    // Forced: a rollout may deliberately retry a version this agent refused before.
    PGF_RETURN_IF_ERROR(Queue(out, agent.agent_id, rollout.to_version, /*force=*/true));
  }
  rollout.wave_started_unix_ms = now;
  rollout.bake_started_unix_ms = 0;
  rollout.reason.clear();
  PGF_INFO("rollout", "rollout %d (%s v%d -> v%d): wave %d/%d started with %d agents", rollout.id,
           rollout.environment, rollout.from_version, rollout.to_version, rollout.current_wave + 1,
           rollout.waves.size(), in_wave);
  return store_.UpdateRollout(rollout);
}

absl::Status RolloutEngine::Step(RolloutRow& rollout, int64_t now, Outbox& out) {
  PGF_ASSIGN_OR_RETURN(std::vector<RolloutAgentRow> agents, store_.ListRolloutAgents(rollout.id));
  if (rollout.current_wave >= static_cast<int>(rollout.waves.size())) {
    return Complete(rollout, now, out);
  }
  if (rollout.wave_started_unix_ms == 0) return BeginWave(rollout, agents, now, out, false);

  int offline = 0, applying = 0;
  std::vector<std::string> not_back;  // Restart: agents not yet back as a new process.
  std::vector<std::pair<RolloutAgentRow*, LiveAgent>> live;
  // Config rollouts: agents seen on the new version this tick, stored after the loop (a
  // failure found in the loop rolls the wave back, which rewrites these rows anyway).
  std::vector<RolloutAgentRow> newly_applied;
  for (RolloutAgentRow& agent : agents) {
    if (agent.wave != rollout.current_wave) continue;
    if (rollout.kind == RolloutKind::kRestart) {
      if (agent.state == RolloutAgentState::kFailed) {
        return Finish(rollout, RolloutState::kFailed, agent.agent_id,
                      absl::StrCat("agent ", agent.agent_id, " could not restart: ", agent.error),
                      now, out);
      }
      std::optional<LiveAgent> connected = agents_.FindLive(agent.agent_id);
      if (!connected.has_value()) {
        ++offline;
        continue;
      }
      if (agent.state == RolloutAgentState::kWaiting) {
        PGF_RETURN_IF_ERROR(SendRestart(rollout, agent, *connected, now, out));
      }
      if (agent.state == RolloutAgentState::kApplying) {
        // Back as a new process: its hello names our command (or, after a restart by other
        // means, another pid), and it has reported its metrics (what the gates read).
        const bool new_process =
            connected->handover_command_id == agent.command_id ||
            (connected->pid != 0 && agent.old_pid != 0 && connected->pid != agent.old_pid);
        if (!new_process || connected->metrics == nullptr) {
          ++applying;
          not_back.push_back(agent.agent_id);
          continue;
        }
        agent.state = RolloutAgentState::kApplied;
        agent.new_pid = connected->pid;
        PGF_RETURN_IF_ERROR(store_.UpdateRolloutAgent(agent));
        PGF_INFO("rollout", "rollout %d: agent %s restarted (pid %d -> %d)", rollout.id,
                 agent.agent_id, agent.old_pid, agent.new_pid);
      }
      live.emplace_back(&agent, std::move(*connected));
      continue;
    }
    if (agent.state == RolloutAgentState::kFailed) {
      return Finish(rollout, RolloutState::kFailed, agent.agent_id,
                    absl::StrCat("agent ", agent.agent_id, " refused v", rollout.to_version, ": ",
                                 agent.error),
                    now, out);
    }
    std::optional<LiveAgent> connected = agents_.FindLive(agent.agent_id);
    if (!connected.has_value()) {
      ++offline;  // Pinned already: it converges when it comes back.
      continue;
    }
    if (connected->applied_version != rollout.to_version) {
      ++applying;
      continue;
    }
    if (agent.state != RolloutAgentState::kApplied) {
      agent.state = RolloutAgentState::kApplied;
      newly_applied.push_back(agent);
    }
    live.emplace_back(&agent, std::move(*connected));
  }
  // Written together (a wave of 10,000 ACKs in one tick is one transaction).
  PGF_RETURN_IF_ERROR(store_.UpdateRolloutAgents({}, newly_applied));
  if (applying > 0) {
    if (now - rollout.wave_started_unix_ms > absl::ToInt64Milliseconds(kRolloutApplyTimeout) &&
        rollout.kind == RolloutKind::kRestart) {
      return Finish(rollout, RolloutState::kFailed, not_back.front(),
                    absl::StrCat("agents ", absl::StrJoin(not_back, ", "),
                                 " did not come back as a new process within ",
                                 absl::FormatDuration(kRolloutApplyTimeout)),
                    now, out);
    }
    if (now - rollout.wave_started_unix_ms > absl::ToInt64Milliseconds(kRolloutApplyTimeout)) {
      return Finish(rollout, RolloutState::kFailed, "",
                    absl::StrCat(applying, " agents did not apply v", rollout.to_version,
                                 " within ", absl::FormatDuration(kRolloutApplyTimeout)),
                    now, out);
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
      PGF_RETURN_IF_ERROR(store_.UpdateRollout(rollout));
    }
    return absl::OkStatus();
  }
  if (live.empty() && offline == 0) {
    // An empty wave (rounding, or agents gone) has nothing to apply or bake.
    rollout.current_wave++;
    rollout.wave_started_unix_ms = 0;
    rollout.bake_started_unix_ms = 0;
    if (rollout.current_wave >= static_cast<int>(rollout.waves.size())) {
      return Complete(rollout, now, out);
    }
    return BeginWave(rollout, agents, now, out, /*advanced=*/true);
  }
  if (absl::StartsWith(rollout.reason, "holding")) {
    rollout.reason.clear();  // The agents are back: no longer holding.
    PGF_RETURN_IF_ERROR(store_.UpdateRollout(rollout));
  }
  if (rollout.bake_started_unix_ms == 0) {
    rollout.bake_started_unix_ms = now;
    rollout.reason.clear();
    for (auto& [agent, connected] : live) {
      baselines_[{rollout.id, agent->agent_id}] =
          connected.metrics != nullptr ? CountersOf(*connected.metrics) : HealthCounters{};
    }
    return store_.UpdateRollout(rollout);
  }
  for (auto& [agent, connected] : live) {
    if (connected.metrics == nullptr) continue;
    auto key = std::make_pair(rollout.id, agent->agent_id);
    if (baselines_.count(key) == 0) baselines_[key] = CountersOf(*connected.metrics);  // Restart.
    std::string unhealthy = CheckHealth(*connected.metrics, baselines_[key], rollout.limits);
    if (!unhealthy.empty()) {
      agent->state = RolloutAgentState::kFailed;
      agent->error = absl::StrCat("health gate: ", unhealthy);
      PGF_RETURN_IF_ERROR(store_.UpdateRolloutAgent(*agent));
      return Finish(rollout, RolloutState::kFailed, agent->agent_id,
                    absl::StrCat("health gate failed on ", agent->agent_id, ": ", unhealthy), now,
                    out);
    }
  }
  if (now - rollout.bake_started_unix_ms < rollout.bake_ms) return absl::OkStatus();
  PGF_INFO("rollout", "rollout %d: wave %d/%d healthy after its bake", rollout.id,
           rollout.current_wave + 1, rollout.waves.size());
  rollout.current_wave++;
  rollout.wave_started_unix_ms = 0;
  rollout.bake_started_unix_ms = 0;
  if (rollout.current_wave >= static_cast<int>(rollout.waves.size())) {
    return Complete(rollout, now, out);
  }
  return BeginWave(rollout, agents, now, out, /*advanced=*/true);
}

absl::Status RolloutEngine::BeginWave(RolloutRow& rollout, std::vector<RolloutAgentRow>& agents,
                                      int64_t now, Outbox& out, bool advanced) {
  // No wave starts while the environment is inside a maintenance window; the rollout holds
  // (with the wave it reached stored) and the next tick tries again.
  PGF_ASSIGN_OR_RETURN(std::vector<WindowRow> windows,
                       store_.ListWindows(rollout.environment, true));
  for (const WindowRow& window : windows) {
    if (!IsActiveWindow(window.state)) continue;
    std::string reason = absl::StrCat("holding: maintenance window ", window.id, " is active in ",
                                      rollout.environment);
    if (reason != rollout.reason || advanced) {
      if (reason != rollout.reason) PGF_INFO("rollout", "rollout %d %s", rollout.id, reason);
      rollout.reason = reason;
      PGF_RETURN_IF_ERROR(store_.UpdateRollout(rollout));
    }
    return absl::OkStatus();
  }
  return StartWave(rollout, agents, now, out);
}

absl::Status RolloutEngine::Complete(RolloutRow& rollout, int64_t now, Outbox& out) {
  if (rollout.kind == RolloutKind::kRestart) {
    rollout.state = RolloutState::kSucceeded;
    rollout.finished_unix_ms = now;
    rollout.reason.clear();
    PGF_RETURN_IF_ERROR(store_.UpdateRollout(rollout));
    PGF_INFO("rollout",
             "restart rollout %d succeeded: every agent of %s it took runs a new process",
             rollout.id, rollout.environment);
    return store_.Audit("rollout-engine", "rollout.succeeded", rollout.environment,
                        absl::StrCat("rollout=", rollout.id, " kind=restart"), now);
  }
  if (!rollout.selector.empty()) {
    // Some agents only: they keep their pin to the new version, and the environment's desired
    // version (what every other agent follows) stays as it was.
    rollout.state = RolloutState::kSucceeded;
    rollout.finished_unix_ms = now;
    rollout.reason.clear();
    PGF_RETURN_IF_ERROR(store_.UpdateRollout(rollout));
    PGF_INFO("rollout", "rollout %d succeeded: agents of %s matching %s are pinned to v%d",
             rollout.id, rollout.environment, rollout.selector, rollout.to_version);
    return store_.Audit("rollout-engine", "rollout.succeeded", rollout.environment,
                        absl::StrCat("rollout=", rollout.id, " version=", rollout.to_version,
                                     " selector=", rollout.selector),
                        now);
  }
  // Compare-and-set: if someone changed the desired version meanwhile, do not overwrite it.
  absl::Status set =
      store_.SetDesiredVersion(rollout.environment, rollout.to_version, rollout.from_version);
  if (!set.ok()) {
    return Finish(rollout, RolloutState::kFailed, "",
                  absl::StrCat("could not make v", rollout.to_version,
                               " the desired version: ", set.message()),
                  now, out);
  }
  PGF_ASSIGN_OR_RETURN(std::vector<RolloutAgentRow> agents, store_.ListRolloutAgents(rollout.id));
  std::vector<RolloutStore::AgentPin> unpins;
  unpins.reserve(agents.size());
  for (const RolloutAgentRow& agent : agents) unpins.push_back({agent.agent_id, std::nullopt});
  PGF_RETURN_IF_ERROR(store_.UpdateRolloutAgents(unpins, {}));
  // Agents that joined during the rollout follow the environment's new desired version.
  for (const LiveAgent& agent : agents_.ListLive(rollout.environment)) {
    PGF_RETURN_IF_ERROR(Queue(out, agent.agent_id, rollout.to_version, /*force=*/false));
  }
  rollout.state = RolloutState::kSucceeded;
  rollout.finished_unix_ms = now;
  rollout.reason.clear();
  PGF_RETURN_IF_ERROR(store_.UpdateRollout(rollout));
  PGF_INFO("rollout", "rollout %d succeeded: %s now runs v%d", rollout.id, rollout.environment,
           rollout.to_version);
  return store_.Audit("rollout-engine", "rollout.succeeded", rollout.environment,
                      absl::StrCat("rollout=", rollout.id, " version=", rollout.to_version), now);
}

absl::Status RolloutEngine::Finish(RolloutRow& rollout, RolloutState state,
                                   const std::string& agent, const std::string& reason, int64_t now,
                                   Outbox& out) {
  if (rollout.kind == RolloutKind::kRestart) {
    // Nothing to move back: restarted agents run the same config in a new process, and an
    // agent whose hand-over failed kept its old process serving.
    rollout.state = state;
    rollout.failed_agent = agent;
    rollout.reason = reason;
    rollout.finished_unix_ms = now;
    PGF_RETURN_IF_ERROR(store_.UpdateRollout(rollout));
    PGF_WARN("rollout", "restart rollout %d %s: %s", rollout.id, RolloutStateName(state), reason);
    return store_.Audit("rollout-engine", absl::StrCat("rollout.", RolloutStateName(state)),
                        rollout.environment, absl::StrCat("rollout=", rollout.id, " ", reason),
                        now);
  }
  // Roll back: unpinned agents follow the environment's desired version, which is still the
  // old one (it only changes when a rollout completes).
  PGF_ASSIGN_OR_RETURN(std::vector<RolloutAgentRow> agents, store_.ListRolloutAgents(rollout.id));
  PGF_ASSIGN_OR_RETURN(EnvironmentRow env, store_.GetEnvironment(rollout.environment));
  // An agent an earlier rollout of some agents had pinned goes back to that pin.
  std::vector<RolloutStore::AgentPin> pins;
  std::vector<RolloutAgentRow> rolled_back;
  for (RolloutAgentRow& row : agents) {
    if (row.wave > rollout.current_wave) continue;
    pins.push_back({row.agent_id, row.previous_pin});
    if (row.state != RolloutAgentState::kFailed) row.state = RolloutAgentState::kRolledBack;
    rolled_back.push_back(row);
  }
  PGF_RETURN_IF_ERROR(store_.UpdateRolloutAgents(pins, rolled_back));
  for (const RolloutAgentRow& row : rolled_back) {
    PGF_RETURN_IF_ERROR(Queue(out, row.agent_id, row.previous_pin.value_or(env.desired_version),
                              /*force=*/true));
  }
  rollout.state = state;
  rollout.failed_agent = agent;
  rollout.reason = reason;
  rollout.finished_unix_ms = now;
  PGF_RETURN_IF_ERROR(store_.UpdateRollout(rollout));
  PGF_WARN("rollout", "rollout %d %s, agents moved back to v%d: %s", rollout.id,
           RolloutStateName(state), rollout.from_version, reason);
  return store_.Audit("rollout-engine", absl::StrCat("rollout.", RolloutStateName(state)),
                      rollout.environment, absl::StrCat("rollout=", rollout.id, " ", reason), now);
}

absl::StatusOr<StartedRollout> RolloutEngine::Start(const RolloutSpec& spec,
                                                    const std::string& actor) {
  mu_.Lock();
  Outbox out;
  absl::StatusOr<StartedRollout> started = StartLocked(spec, actor, UnixMillis(clock_.Now()), out);
  ReleaseAndSend(std::move(out));
  return started;
}

// The row every rollout kind starts from: the spec's waves and gates, who and when.
static RolloutRow NewRolloutRow(const RolloutSpec& spec, const EnvironmentRow& env,
                                uint64_t to_version, const std::string& actor, int64_t now,
                                const LabelSelector& selector) {
  RolloutRow rollout;
  rollout.environment = env.name;
  rollout.from_version = env.desired_version;
  rollout.to_version = to_version;
  rollout.waves = spec.waves.empty() ? kDefaultWaves : spec.waves;
  rollout.bake_ms = absl::ToInt64Milliseconds(spec.bake);
  rollout.max_unavailable = std::max(0, spec.max_unavailable);
  rollout.limits = spec.limits;
  rollout.created_by = actor;
  rollout.created_unix_ms = now;
  rollout.selector = selector.ToString();
  return rollout;
}

absl::StatusOr<StartedRollout> RolloutEngine::StartLocked(const RolloutSpec& spec,
                                                          const std::string& actor, int64_t now,
                                                          Outbox& out) {
  if (spec.force && spec.force_reason.empty()) {
    return absl::InvalidArgumentError("--force needs a reason (--reason)");
  }
  if (spec.kind == RolloutKind::kRestart) return StartRestartLocked(spec, actor, now, out);
  PGF_ASSIGN_OR_RETURN(EnvironmentRow env, store_.GetEnvironment(spec.environment));
  PGF_ASSIGN_OR_RETURN(ConfigVersionRow version, store_.GetConfigVersion(spec.version));
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
  PGF_ASSIGN_OR_RETURN(LabelSelector selector, LabelSelector::Parse(spec.selector));
  PGF_ASSIGN_OR_RETURN(std::vector<AgentRow> env_agents, store_.ListAgents(env.name));
  // The agents that move: all of the environment's, or those the selector matches.
  std::vector<const AgentRow*> movers;
  bool all_there = true;  // Every mover already follows this version.
  for (const AgentRow& agent : env_agents) {
    if (!selector.Matches(agent.labels)) continue;
    movers.push_back(&agent);
    if (agent.pinned_version.value_or(env.desired_version) != version.version) all_there = false;
  }
  if (!selector.empty() && movers.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "selector \"", selector.ToString(), "\" matches no agent of environment ", env.name));
  }
  // A full rollout to the environment's own version still has work when some agents are pinned
  // elsewhere (an earlier rollout of some agents): it brings them back and unpins them.
  if (all_there && (!selector.empty() || env.desired_version == version.version)) {
    return absl::FailedPreconditionError(absl::StrCat(
        selector.empty() ? env.name : "every agent matching \"" + selector.ToString() + "\"",
        " already runs v", version.version));
  }
  // Pre-flight: refusals that --force (with a reason) may override.
  std::vector<std::string> refusals;
  std::vector<std::string> warnings;
  // Each agent runs its own render of the version (overlays by label and agent id): each render
  // must validate, and the budget sums each agent's own pool sizes. With a selector the others
  // stay where they are, so they count with the render of what they follow (their pin or the
  // environment's desired version), not with the new one.
  std::vector<const config::Config*> rendered_configs;
  rendered_configs.reserve(env_agents.size());
  // Parsed once per distinct render (10,000 agents without overlays share one).
  std::map<std::string, config::Config> parsed_renders;
  auto parse_render = [&parsed_renders](
                          const RenderedConfig& rendered,
                          const std::string& agent_id) -> absl::StatusOr<const config::Config*> {
    if (auto known = parsed_renders.find(rendered.sha256); known != parsed_renders.end()) {
      return &known->second;
    }
    absl::StatusOr<config::Config> parsed =
        config::ParseConfig(rendered.ini_text, absl::StrCat(agent_id, ".ini"));
    if (!parsed.ok()) return parsed.status();
    return &parsed_renders.emplace(rendered.sha256, *std::move(parsed)).first->second;
  };
  bool all_valid = true;
  if (absl::StatusOr<config::Config> parsed = config::ParseConfig(version.ini_text, "pushed.ini");
      !parsed.ok()) {
    refusals.push_back(absl::StrCat("config does not validate: ", parsed.status().message()));
    all_valid = false;
  }
  std::map<uint64_t, ConfigVersionRow> followed_versions;  // What the others run, read once.
  for (const AgentRow& agent : env_agents) {
    if (!all_valid) break;
    if (!selector.Matches(agent.labels)) {
      const uint64_t followed = agent.pinned_version.value_or(env.desired_version);
      if (followed == 0) {
        warnings.push_back(absl::StrCat(
            "agent ", agent.agent_id,
            " stays on its local config (no desired version): not in the connection budget"));
        continue;
      }
      if (followed != version.version && followed_versions.count(followed) == 0) {
        PGF_ASSIGN_OR_RETURN(followed_versions[followed], store_.GetConfigVersion(followed));
      }
      const ConfigVersionRow& runs =
          followed == version.version ? version : followed_versions.at(followed);
      PGF_ASSIGN_OR_RETURN(RenderedConfig rendered,
                           RenderForAgent(runs, agent.agent_id, agent.labels));
      absl::StatusOr<const config::Config*> parsed = parse_render(rendered, agent.agent_id);
      if (!parsed.ok()) {
        // Not this rollout's config: it cannot refuse it, only say the count is incomplete.
        warnings.push_back(absl::StrCat(
            "agent ", agent.agent_id, "'s v", followed,
            " does not validate here; not in the connection budget: ", parsed.status().message()));
        continue;
      }
      rendered_configs.push_back(*parsed);
      continue;
    }
    PGF_ASSIGN_OR_RETURN(RenderedConfig rendered,
                         RenderForAgent(version, agent.agent_id, agent.labels));
    absl::StatusOr<const config::Config*> parsed = parse_render(rendered, agent.agent_id);
    if (!parsed.ok()) {
      refusals.push_back(absl::StrCat("config as rendered for agent ", agent.agent_id,
                                      " does not validate: ", parsed.status().message()));
      all_valid = false;
      break;
    }
    rendered_configs.push_back(*parsed);
  }
  if (all_valid) {
    // Every agent of the environment counts, offline ones too: they converge when they return.
    std::map<std::string, pgfleet::v1::ServerLimits> limits;
    for (const LiveAgent& agent : agents_.ListLive(env.name)) {
      if (!agent.metrics) continue;
      for (const pgfleet::v1::ServerLimits& server : agent.metrics->server_limits()) {
        limits[server.address()] = server;
      }
    }
    BudgetCheck budget = CheckConnectionBudget(rendered_configs, limits, spec.connection_reserve);
    refusals.insert(refusals.end(), budget.refusals.begin(), budget.refusals.end());
    warnings.insert(warnings.end(), budget.warnings.begin(), budget.warnings.end());
  }
  PGF_ASSIGN_OR_RETURN(std::vector<WindowRow> windows, store_.ListWindows(env.name, true));
  for (const WindowRow& window : windows) {
    if (IsActiveWindow(window.state)) {
      refusals.push_back(absl::StrCat("maintenance window ", window.id, " is active"));
    }
  }
  PGF_ASSIGN_OR_RETURN(std::string upstream, store_.GetEnvironmentUpstream(env.name));
  if (!upstream.empty()) {
    PGF_ASSIGN_OR_RETURN(bool done_upstream, store_.HasSucceededRollout(upstream, version.sha256));
    if (!done_upstream) {
      refusals.push_back(absl::StrCat("this config (sha256 ", version.sha256.substr(0, 12),
                                      ") has not completed a rollout in upstream environment ",
                                      upstream));
    }
  }
  if (!refusals.empty() && !spec.force) {
    return absl::FailedPreconditionError(absl::StrCat("pre-flight refused the rollout:\n  - ",
                                                      absl::StrJoin(refusals, "\n  - "),
                                                      "\n(override with --force --reason TEXT)"));
  }
  RolloutRow rollout = NewRolloutRow(spec, env, version.version, actor, now, selector);
  if (spec.force) {
    rollout.force_reason = spec.force_reason;
    if (!refusals.empty()) {
      absl::StrAppend(&rollout.force_reason, " (overrode: ", absl::StrJoin(refusals, "; "), ")");
    }
  }
  PGF_ASSIGN_OR_RETURN(std::vector<int> waves, AssignWaves(rollout.waves, movers.size()));
  std::vector<RolloutAgentRow> members;
  for (size_t i = 0; i < movers.size(); ++i) {
    RolloutAgentRow member;
    member.agent_id = movers[i]->agent_id;
    member.wave = waves[i];
    member.previous_pin = movers[i]->pinned_version;
    members.push_back(member);
  }
  PGF_ASSIGN_OR_RETURN(RolloutRow created, store_.CreateRollout(rollout, members));
  PGF_RETURN_IF_ERROR(store_.Audit(
      actor, "rollout.start", env.name,
      absl::StrCat("rollout=", created.id, " v", created.from_version, "->v", created.to_version,
                   " waves=", absl::StrJoin(created.waves, ","),
                   created.selector.empty() ? "" : " selector=" + created.selector,
                   created.force_reason.empty() ? "" : " FORCED: " + created.force_reason),
      now));
  PGF_INFO("rollout", "%s started rollout %d: %s v%d -> v%d in waves %s", actor, created.id,
           env.name, created.from_version, created.to_version, absl::StrJoin(created.waves, ","));
  if (absl::Status stepped = Step(created, now, out); !stepped.ok()) {
    PGF_ERROR("rollout", "rollout %d first step: %s", created.id, stepped.message());
  }
  for (const std::string& warning : warnings) {
    PGF_WARN("rollout", "rollout %d pre-flight: %s", created.id, warning);
  }
  return StartedRollout{std::move(created), std::move(warnings)};
}

absl::StatusOr<StartedRollout> RolloutEngine::StartRestartLocked(const RolloutSpec& spec,
                                                                 const std::string& actor,
                                                                 int64_t now, Outbox& out) {
  PGF_ASSIGN_OR_RETURN(EnvironmentRow env, store_.GetEnvironment(spec.environment));
  if (env.desired_version == 0) {
    // A rollout row names the config its agents run (to_version must be a stored version).
    return absl::FailedPreconditionError(
        absl::StrCat(env.name,
                     " has no desired version yet; restart its agents one by one (SIGUSR2 or the "
                     "console's RESTART) or set one with: fleetctl config apply --env ",
                     env.name));
  }
  PGF_ASSIGN_OR_RETURN(LabelSelector selector, LabelSelector::Parse(spec.selector));
  PGF_ASSIGN_OR_RETURN(std::vector<AgentRow> env_agents, store_.ListAgents(env.name));
  const bool filtered = spec.only_outdated || !spec.binary_version.empty();
  std::vector<std::string> warnings;
  std::vector<RolloutAgentRow> members;
  for (const AgentRow& agent : env_agents) {
    if (!selector.Matches(agent.labels)) continue;
    std::optional<LiveAgent> live = agents_.FindLive(agent.agent_id);
    if (filtered) {
      // Only a connected agent can say which binary is on its disk.
      if (!live.has_value()) {
        warnings.push_back(absl::StrCat("agent ", agent.agent_id,
                                        " is offline: its binary on disk is unknown, left out"));
        continue;
      }
      if (spec.only_outdated && !live->binary_outdated) continue;
      if (!OnDiskBinaryIs(*live, spec.binary_version)) continue;
    }
    RolloutAgentRow member;
    member.agent_id = agent.agent_id;
    member.old_pid = live.has_value() ? live->pid : 0;
    members.push_back(member);
  }
  if (members.empty()) {
    std::string which = "no agent";
    if (spec.only_outdated)
      absl::StrAppend(&which, " whose binary on disk differs from the running one");
    if (!spec.binary_version.empty()) {
      absl::StrAppend(&which, spec.only_outdated ? " and" : "", " whose binary on disk is ",
                      spec.binary_version);
    }
    if (!selector.empty()) absl::StrAppend(&which, " matching \"", selector.ToString(), "\"");
    return absl::FailedPreconditionError(
        absl::StrCat(which, " in environment ", env.name, ": nothing to restart"));
  }
  PGF_ASSIGN_OR_RETURN(std::vector<WindowRow> windows, store_.ListWindows(env.name, true));
  for (const WindowRow& window : windows) {
    if (IsActiveWindow(window.state) && !spec.force) {
      return absl::FailedPreconditionError(absl::StrCat("maintenance window ", window.id,
                                                        " is active in ", env.name,
                                                        "\n(override with --force --reason TEXT)"));
    }
  }
  RolloutRow rollout = NewRolloutRow(spec, env, env.desired_version, actor, now, selector);
  rollout.kind = RolloutKind::kRestart;
  rollout.only_outdated = spec.only_outdated;
  rollout.binary_version = spec.binary_version;
  if (spec.force) rollout.force_reason = spec.force_reason;
  PGF_ASSIGN_OR_RETURN(std::vector<int> waves, AssignWaves(rollout.waves, members.size()));
  for (size_t i = 0; i < members.size(); ++i) members[i].wave = waves[i];
  PGF_ASSIGN_OR_RETURN(RolloutRow created, store_.CreateRollout(rollout, members));
  std::vector<std::string> ids;
  for (const RolloutAgentRow& member : members) ids.push_back(member.agent_id);
  PGF_RETURN_IF_ERROR(store_.Audit(
      actor, "rollout.start", env.name,
      absl::StrCat("rollout=", created.id, " kind=restart waves=",
                   absl::StrJoin(created.waves, ","), " agents=", absl::StrJoin(ids, ","),
                   created.selector.empty() ? "" : " selector=" + created.selector,
                   created.only_outdated ? " only-outdated" : "",
                   created.binary_version.empty() ? "" : " version=" + created.binary_version),
      now));
  PGF_INFO("rollout", "%s started restart rollout %d: %d agents of %s in waves %s", actor,
           created.id, members.size(), env.name, absl::StrJoin(created.waves, ","));
  if (absl::Status stepped = Step(created, now, out); !stepped.ok()) {
    PGF_ERROR("rollout", "rollout %d first step: %s", created.id, stepped.message());
  }
  return StartedRollout{std::move(created), std::move(warnings)};
}

absl::StatusOr<StartedRollout> RolloutEngine::Rollback(const std::string& environment,
                                                       const std::vector<std::string>& waves,
                                                       absl::Duration bake,
                                                       const std::string& actor) {
  mu_.Lock();
  Outbox out;
  absl::StatusOr<StartedRollout> started = [&]() -> absl::StatusOr<StartedRollout> {
    PGF_ASSIGN_OR_RETURN(std::vector<RolloutRow> rows, store_.ListRollouts(environment, false));
    // The previous good version: what the newest succeeded rollout moved away from.
    uint64_t target = 0;
    for (const RolloutRow& row : rows) {
      // A rollout of some agents (selector) did not move the environment's version.
      // Nor did a restart rollout.
      if (row.state == RolloutState::kSucceeded && row.selector.empty() &&
          row.kind == RolloutKind::kConfig) {
        target = row.from_version;
        break;
      }
    }
    if (target == 0) {
      return absl::FailedPreconditionError(absl::StrCat("no previous good version in ", environment,
                                                        " (no succeeded rollout from one)"));
    }
    RolloutSpec spec;
    spec.environment = environment;
    spec.version = target;
    spec.waves = waves.empty() ? std::vector<std::string>{"100%"} : waves;
    spec.bake = bake;
    // Going back to a version the environment already ran needs no upstream check.
    spec.force = true;
    spec.force_reason = "rollback to the previous good version";
    return StartLocked(spec, actor, UnixMillis(clock_.Now()), out);
  }();
  ReleaseAndSend(std::move(out));
  return started;
}

absl::StatusOr<RolloutRow> RolloutEngine::Pause(uint64_t id) {
  absl::MutexLock lock(&mu_);
  PGF_ASSIGN_OR_RETURN(RolloutRow rollout, store_.GetRollout(id));
  if (rollout.state != RolloutState::kRunning) {
    return absl::FailedPreconditionError(
        absl::StrCat("rollout ", id, " is ", RolloutStateName(rollout.state), ", not running"));
  }
  rollout.state = RolloutState::kPaused;
  PGF_RETURN_IF_ERROR(store_.UpdateRollout(rollout));
  return rollout;
}

absl::StatusOr<RolloutRow> RolloutEngine::Resume(uint64_t id) {
  absl::MutexLock lock(&mu_);
  PGF_ASSIGN_OR_RETURN(RolloutRow rollout, store_.GetRollout(id));
  if (rollout.state != RolloutState::kPaused) {
    return absl::FailedPreconditionError(
        absl::StrCat("rollout ", id, " is ", RolloutStateName(rollout.state), ", not paused"));
  }
  rollout.state = RolloutState::kRunning;
  PGF_RETURN_IF_ERROR(store_.UpdateRollout(rollout));
  return rollout;
}

absl::StatusOr<RolloutRow> RolloutEngine::Abort(uint64_t id, const std::string& actor) {
  mu_.Lock();
  Outbox out;
  absl::StatusOr<RolloutRow> aborted = [&]() -> absl::StatusOr<RolloutRow> {
    PGF_ASSIGN_OR_RETURN(RolloutRow rollout, store_.GetRollout(id));
    if (!IsActive(rollout.state)) {
      return absl::FailedPreconditionError(
          absl::StrCat("rollout ", id, " already ", RolloutStateName(rollout.state)));
    }
    PGF_RETURN_IF_ERROR(Finish(rollout, RolloutState::kAborted, "",
                               absl::StrCat("aborted by ", actor), UnixMillis(clock_.Now()), out));
    return rollout;
  }();
  ReleaseAndSend(std::move(out));
  return aborted;
}

}  // namespace pgfleet::controller
