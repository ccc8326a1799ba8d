// The agent's side of the fleet: applies desired configs pushed by the controller (validate,
// write atomically, reload through the same path as RELOAD, then ACK or NACK), runs its
// commands through the same control operations as the admin console, and reports metrics.
// It sees the pooler only through AgentControl; agent/main.cc wires the two together.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "agent/agent_control.h"
#include "agent/event_loop.h"
#include "agent/link/controller_link.h"
#include "agent/link/state_dir.h"
#include "agent/link/state_writer.h"
#include "pgfleet/v1/agent.pb.h"

namespace pgfleet::agent {

// What the agent last applied from the controller, persisted in its state dir so that a
// restart while the controller is down serves that config (fail-static).
struct AppliedConfig {
  uint64_t version = 0;
  std::string sha256;
  std::string path;  // <state_dir>/applied.ini
};
std::optional<AppliedConfig> ReadAppliedConfig(const std::string& state_dir);
// The rotation overlaps applied with that config (<state_dir>/applied.overlaps); none if the
// file is missing or unreadable.
std::vector<CredentialOverlap> ReadAppliedOverlaps(const std::string& state_dir);

// The [pgbouncer] keys a pushed file (DesiredConfig.files) may back.
bool IsPushableFileKey(const std::string& key);
// Where a pushed file is kept: <state_dir>/files/<key>.<first 12 hex digits of its name hash>
// (the controller's keyed fingerprint of the content, or its sha256 from an older controller), a
// name per content, so the files the running config uses are never written over before the
// reload that replaces them has succeeded.
std::string PushedFilePath(const std::string& state_dir, const std::string& key,
                           const std::string& name_hash);
// `ini_text` pointing the [pgbouncer] keys of `paths` (key -> path) at those paths: a
// [pgbouncer] section appended at the end, whose values win over any earlier (or %include'd)
// setting of the same keys.
std::string PointIniAtFiles(const std::string& ini_text,
                            const std::vector<std::pair<std::string, std::string>>& paths);
// Writes `contents` to `path` through a temp file of its own (a unique name, so concurrent
// writers never collide), fsync, rename and fsync of the directory: readers see the old or
// the new file, never half of one, and the new one survives a crash once this returns.
absl::Status WriteFileAtomically(const std::string& path, const std::string& contents);
// Files a pushed logfile or pidfile must never name: the state dir's own files and the
// local config file.
std::vector<std::string> ProtectedFiles(const std::string& state_dir,
                                        const std::string& local_config);
std::string Sha256Hex(const std::string& data);

// Fleet mode's command line: the link, and where pushed configs are kept.
struct FleetOptions {
  LinkOptions link;
  // Empty: <config dir>/pgfleet-state/<agent id>. Locked by one agent at a time.
  std::string state_dir;
  // Directories a pushed config may name files in (logfile, pidfile, auth_file, TLS files),
  // besides the local config file's directory and the state dir.
  std::vector<std::string> allowed_paths;
  // Set by a hand-over (agent/handover.h): the old process's state dir lock, shared with it,
  // and the controller command that asked for the restart (0: none).
  int inherited_state_lock_fd = -1;
  uint64_t handover_command_id = 0;
};

// What fleet mode settles before the pooler starts.
struct FleetSetup {
  LinkOptions link;  // agent_id filled in.
  std::string state_dir;
  std::unique_ptr<StateDirLock> state_lock;
  PathPolicy path_policy;
  std::optional<AppliedConfig> applied;
  // The rotation overlaps applied with it (only when starting from it).
  std::vector<CredentialOverlap> overlaps;
  // The config the pooler starts from: the last applied one (fail-static) if it is still
  // allowed, else the local file.
  std::string start_config_path;
  // Where pushed configs are applied (AgentOptions::pushed_config_path).
  std::string pushed_config_path;
  uint64_t handover_command_id = 0;
};

// The state dir the agent started with these options uses (--state-dir, else the default for
// its agent id); nothing is created.
absl::StatusOr<std::string> FleetStateDir(const FleetOptions& options,
                                          const std::string& local_config);

// Resolves the agent id (default hostname:listen_port of the local file), creates and locks
// the state dir, and picks the config to start from.
absl::StatusOr<FleetSetup> PrepareFleet(FleetOptions options, const std::string& local_config);

class FleetAgent {
 public:
  // Pushed configs must keep their files where `setup.path_policy` allows.
  FleetAgent(AgentControl& agent, FleetSetup setup);
  ~FleetAgent();

  void Start();
  void Stop();
  // For a hand-over: the state dir lock's fd (shared with the new process), and no
  // reconnect while the new process's stream takes this one's place.
  int state_lock_fd() const { return state_lock_ ? state_lock_->fd() : -1; }
  void HoldReconnects(bool hold) { link_->HoldReconnects(hold); }
  LinkState link_state() const { return link_->state(); }
  uint64_t applied_version() const { return applied_version_.load(); }
  ControlPlaneStatus status() const {
    const LinkState state = link_state();
    return {applied_version(), state == LinkState::kConnected, true, LinkStateName(state)};
  }

  // The metrics report of one snapshot (loop thread).
  static pgfleet::v1::MetricsReport BuildMetricsReport(const StatsSnapshot& snapshot);

 private:
  struct PendingApply;
  void OnMessage(pgfleet::v1::ControllerMessage message);
  // Desired configs are applied one at a time, in the order they came: each file write runs on
  // writer_ and the next step continues on the loop when it is durable.
  void ApplyNextDesiredConfig();
  // Validates and starts writing; false if it was refused at once (a NACK was sent).
  bool StartApply(std::shared_ptr<PendingApply> apply);
  void OnAppliedIniWritten(std::shared_ptr<PendingApply> apply, absl::Status written);
  // Validates the pushed files and overlaps of `apply` and makes the ini that names the files.
  absl::Status PrepareFilesAndOverlaps(PendingApply& apply);
  void FinishApply(const std::shared_ptr<PendingApply>& apply, const absl::Status& status);
  // `done` wrapped so it does nothing once this FleetAgent is gone.
  StateWriter::Done WhileAlive(absl::AnyInvocable<void(absl::Status)> done);
  void RunCommand(const pgfleet::v1::Command& command);
  void SendMetrics();

  AgentControl& agent_;
  std::string state_dir_;
  std::unique_ptr<StateDirLock> state_lock_;
  PathPolicy path_policy_;
  std::unique_ptr<ControllerLink> link_;
  std::unique_ptr<StateWriter> writer_;
  std::deque<pgfleet::v1::DesiredConfig> pending_configs_;
  bool applying_ = false;
  std::shared_ptr<char> alive_ = std::make_shared<char>();
  std::unique_ptr<Timer> metrics_timer_;
  absl::Duration metrics_interval_ = absl::Seconds(5);
  // Read by the link thread when it says hello.
  std::atomic<uint64_t> applied_version_{0};
  mutable std::mutex applied_mu_;
  std::string applied_sha256_;  // Guarded by applied_mu_.
};

}  // namespace pgfleet::agent
