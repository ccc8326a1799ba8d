// Moves an environment from one config version to another in waves: canary first, then
// percentages. Each wave: pin its agents to the new version, wait for every ACK, bake while
// watching health, then go on. A NACK, a failed gate or an abort unpins the agents already
// moved, so they converge back to the old version. All state is in the store: after a
// controller restart a new engine's Tick() picks up where the old one was.
//
// The engine knows nothing of callers, roles or protos (controller/api/ maps those): it reads
// and writes its RolloutStore, looks at and talks to agents through an AgentDirectory, and
// takes the time from a Clock (or Tick's argument). Messages to agents are decided under the
// engine's lock and sent after it is released, in the order they were decided (SendQueue); ACKs
// and NACKs arrive through OnConfigResult, which only queues them for the next Tick.
#pragma once

#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "controller/clock.h"
#include "controller/periodic.h"
#include "controller/registry/agent_directory.h"
#include "controller/rollout/rollout_store.h"
#include "controller/send_queue.h"
#include "pgfleet/v1/agent.pb.h"

namespace pgfleet::controller {

// Assigns agents (sorted) to waves: "N" is a count, "P%" a share of all agents; each entry is
// cumulative ("1,25%,100%" = one canary, then up to a quarter, then everyone). The last wave
// always takes whoever is left. InvalidArgument for a malformed spec.
absl::StatusOr<std::vector<int>> AssignWaves(const std::vector<std::string>& spec, size_t agents);

// Why an agent fails the health gate, or empty if it passes.
struct HealthCounters {
  int64_t server_errors = 0;
  int64_t login_failures = 0;
};
HealthCounters CountersOf(const pgfleet::v1::MetricsReport& report);
std::string CheckHealth(const pgfleet::v1::MetricsReport& report, const HealthCounters& baseline,
                        const HealthLimits& limits);

// How long a wave's agents have to ACK (or, in a restart rollout, come back as a new process
// that reports its metrics) before the rollout fails.
inline constexpr absl::Duration kRolloutApplyTimeout = absl::Minutes(2);

// Whether an agent's binary on disk is `version`: its embedded version ("0.1.0") or a prefix of
// its build id (with or without "sha256:").
bool OnDiskBinaryIs(const LiveAgent& agent, const std::string& version);

// What to roll out, and how.
struct RolloutSpec {
  std::string environment;
  uint64_t version = 0;
  std::vector<std::string> waves;  // Empty: 1, 25%, 100%.
  absl::Duration bake = absl::Seconds(60);
  int max_unavailable = 0;
  HealthLimits limits;
  // Start despite pre-flight refusals; needs a reason, which is recorded.
  bool force = false;
  std::string force_reason;
  int connection_reserve = 0;  // Server connections left free by the budget check.
  // kubectl syntax. Non-empty: only the matching agents move (waves are taken among them), they
  // stay pinned to the version afterwards and the environment's desired version is unchanged.
  // InvalidArgument when it does not parse; FailedPrecondition when it matches no agent.
  std::string selector;
  // kRestart: `version` is ignored; each wave's agents are sent a RestartCommand and the wave
  // waits until each came back as a new process (its hello names the command, or its pid
  // changed) and reported metrics, then bakes. A failed hand-over stops the rollout.
  RolloutKind kind = RolloutKind::kConfig;
  bool only_outdated = false;  // Only agents whose binary on disk differs from the running one.
  std::string binary_version;  // Only agents whose binary on disk is this (OnDiskBinaryIs).
};

struct StartedRollout {
  RolloutRow rollout;
  std::vector<std::string> warnings;  // Pre-flight findings that did not refuse it.
};

class RolloutEngine {
 public:
  RolloutEngine(RolloutStore& store, AgentDirectory& agents, const Clock& clock);
  ~RolloutEngine();
  RolloutEngine(const RolloutEngine&) = delete;
  RolloutEngine& operator=(const RolloutEngine&) = delete;

  // Ticks every `interval` (with the clock's time) on a thread of its own until destroyed.
  // With `may_tick`, a tick runs only while it says so (only the leader of several controllers
  // runs the engines; see controller/leader/leadership.h).
  void StartTicking(absl::Duration interval, std::function<bool()> may_tick = nullptr);
  // One pass over every running rollout, after applying the queued config results.
  void Tick(absl::Time now);

  // Pre-flight checks, then the rollout's first step. FailedPrecondition when pre-flight
  // refuses it (unless forced) or the environment already has an active rollout.
  absl::StatusOr<StartedRollout> Start(const RolloutSpec& spec, const std::string& actor);
  // Back to the version the newest succeeded rollout of `environment` moved away from.
  absl::StatusOr<StartedRollout> Rollback(const std::string& environment,
                                          const std::vector<std::string>& waves,
                                          absl::Duration bake, const std::string& actor);
  // FailedPrecondition unless running.
  absl::StatusOr<RolloutRow> Pause(uint64_t id);
  // FailedPrecondition unless paused.
  absl::StatusOr<RolloutRow> Resume(uint64_t id);
  // Rolls the moved agents back. FailedPrecondition once finished.
  absl::StatusOr<RolloutRow> Abort(uint64_t id, const std::string& actor);

  // An agent's ACK or NACK of `version`. Only queued: the next Tick applies it.
  void OnConfigResult(const std::string& agent_id, uint64_t version, bool accepted,
                      const std::string& error);
  // An agent's answer to a command; a failed RestartCommand fails its restart rollout. Only
  // queued: the next Tick applies it.
  void OnCommandResult(const std::string& agent_id, uint64_t command_id, bool ok,
                       const std::string& error);

 private:
  struct ConfigResult {
    std::string agent_id;
    uint64_t version = 0;
    std::string error;
  };
  struct FailedCommand {
    std::string agent_id;
    uint64_t command_id = 0;
    std::string error;
  };
  // A config (or, when `command` is set, that command) to hand an agent once the engine's lock
  // is released.
  struct Offer {
    std::string agent_id;
    ConfigVersionRow version;
    bool force = false;
    std::optional<pgfleet::v1::ControllerMessage> command;
  };
  using Outbox = std::vector<Offer>;

  absl::Status Step(RolloutRow& rollout, int64_t now, Outbox& out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Starts the current wave unless a maintenance window holds it. `advanced`: the wave number
  // just moved on, so the row is written even when the hold reason did not change.
  absl::Status BeginWave(RolloutRow& rollout, std::vector<RolloutAgentRow>& agents, int64_t now,
                         Outbox& out, bool advanced) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status StartWave(RolloutRow& rollout, std::vector<RolloutAgentRow>& agents, int64_t now,
                         Outbox& out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Finish(RolloutRow& rollout, RolloutState state, const std::string& agent,
                      const std::string& reason, int64_t now, Outbox& out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Complete(RolloutRow& rollout, int64_t now, Outbox& out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<StartedRollout> StartLocked(const RolloutSpec& spec, const std::string& actor,
                                             int64_t now, Outbox& out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<StartedRollout> StartRestartLocked(const RolloutSpec& spec,
                                                    const std::string& actor, int64_t now,
                                                    Outbox& out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Records and queues a RestartCommand for `agent` (connected as `live`).
  absl::Status SendRestart(const RolloutRow& rollout, RolloutAgentRow& agent, const LiveAgent& live,
                           int64_t now, Outbox& out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Records the queued NACKs against the rollouts that sent those versions.
  void ApplyConfigResults() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Queues `version` for `agent_id` (read once per version).
  absl::Status Queue(Outbox& out, const std::string& agent_id, uint64_t version, bool force);
  // Queues what was decided under mu_ (held on entry), releases mu_, then sends.
  void ReleaseAndSend(Outbox out) ABSL_UNLOCK_FUNCTION(mu_);

  RolloutStore& store_;
  AgentDirectory& agents_;
  const Clock& clock_;

  absl::Mutex mu_;
  // Health baselines, taken when a wave starts baking (in memory: after a restart the bake
  // takes a fresh baseline).
  std::map<std::pair<uint64_t, std::string>, HealthCounters> baselines_ ABSL_GUARDED_BY(mu_);
  // Whole outboxes, so a wave's offers of one version go to the agents as one batch.
  SendQueue<Outbox> sends_;

  absl::Mutex results_mu_;
  std::deque<ConfigResult> nacks_ ABSL_GUARDED_BY(results_mu_);
  std::deque<FailedCommand> failed_commands_ ABSL_GUARDED_BY(results_mu_);

  PeriodicThread ticker_;
};

}  // namespace pgfleet::controller
