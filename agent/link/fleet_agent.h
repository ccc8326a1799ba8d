// The agent's side of the fleet: applies desired configs pushed by the controller (validate,
// write atomically, reload through the same path as RELOAD, then ACK or NACK), runs its
// commands through the same control operations as the admin console, and reports metrics.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "agent/event_loop.h"
#include "agent/link/controller_link.h"
#include "agent/link/state_dir.h"
#include "pgfleet/v1/agent.pb.h"

namespace pgfleet::agent {

class Agent;

// What the agent last applied from the controller, persisted in its state dir so that a
// restart while the controller is down serves that config (fail-static).
struct AppliedConfig {
  uint64_t version = 0;
  std::string sha256;
  std::string path;  // <state_dir>/applied.ini
};
std::optional<AppliedConfig> ReadAppliedConfig(const std::string& state_dir);
// Writes `contents` to `path` through a temp file of its own (a unique name, so concurrent
// writers never collide), fsync, rename and fsync of the directory: readers see the old or
// the new file, never half of one, and the new one survives a crash once this returns.
absl::Status WriteFileAtomically(const std::string& path, const std::string& contents);
// Files a pushed logfile or pidfile must never name: the state dir's own files and the
// local config file.
std::vector<std::string> ProtectedFiles(const std::string& state_dir,
                                        const std::string& local_config);
std::string Sha256Hex(const std::string& data);

class FleetAgent {
 public:
  // Pushed configs must keep their files where `path_policy` allows.
  FleetAgent(Agent& agent, LinkOptions link_options, std::string state_dir,
             std::optional<AppliedConfig> applied, PathPolicy path_policy);
  ~FleetAgent();

  void Start();
  void Stop();
  LinkState link_state() const { return link_->state(); }
  uint64_t applied_version() const { return applied_version_.load(); }

  // Builds the metrics report from the pools (loop thread).
  pgfleet::v1::MetricsReport BuildMetricsReport() const;

 private:
  void OnMessage(pgfleet::v1::ControllerMessage message);
  void ApplyDesiredConfig(const pgfleet::v1::DesiredConfig& desired);
  void RunCommand(const pgfleet::v1::Command& command);
  void SendMetrics();

  Agent& agent_;
  std::string state_dir_;
  PathPolicy path_policy_;
  std::unique_ptr<ControllerLink> link_;
  std::unique_ptr<Timer> metrics_timer_;
  absl::Duration metrics_interval_ = absl::Seconds(5);
  // Read by the link thread when it says hello.
  std::atomic<uint64_t> applied_version_{0};
  mutable std::mutex applied_mu_;
  std::string applied_sha256_;  // Guarded by applied_mu_.
};

}  // namespace pgfleet::agent
