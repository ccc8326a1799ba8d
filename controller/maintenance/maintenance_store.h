// What the maintenance engine needs from the controller's store: its windows
// (migrations/0003_maintenance.sql), the environment's agents, the commands it sends and the
// audit log. SqliteStore implements it; unit tests use an in-memory fake.
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "controller/store/rows.h"

namespace pgfleet::controller {

// Stored and shown as its name (WindowStateName): the SQLite column and the API keep the
// strings they always had.
enum class WindowState { kScheduled, kPausing, kPaused, kCompleted, kCancelled, kFailed };
const char* WindowStateName(WindowState state);
absl::StatusOr<WindowState> ParseWindowState(const std::string& name);

struct WindowRow {
  uint64_t id = 0;
  std::string environment;
  std::string database;  // Empty: all databases.
  int64_t starts_unix_ms = 0;
  int64_t ends_unix_ms = 0;
  int64_t drain_timeout_ms = 60000;
  std::string reason;
  WindowState state = WindowState::kScheduled;
  std::vector<std::string> skip_agents;
  std::string created_by;
  int64_t created_unix_ms = 0;
  int64_t pause_sent_unix_ms = 0;
  std::string failure;
  // Canonical label selector; empty: every agent. Agents it does not match are left alone,
  // like skip_agents.
  std::string selector;
  // Not stored: the agents the selector matches, filled by ResolveWindowSelector before the
  // engine looks at the window (labels can change, so they are read each time). Agents not in
  // it are treated as skipped; nullopt with a selector means unresolved and selects nobody.
  std::optional<std::set<std::string>> selected_agents;
  // Agents resumed early by `fleetctl resume -l` while the window goes on for the others: left
  // alone from then on, like skip_agents (not re-paused when they reconnect).
  std::vector<std::string> resumed_agents;
};

// Whether one agent could be covered by both windows: false only when their selectors provably
// cannot match the same labels (LabelSelector::MayOverlap). Skipped agents are not considered.
bool WindowsMayShareAgents(const WindowRow& a, const WindowRow& b);

// Scheduled or active: it still has something to do.
inline bool IsOpenWindow(WindowState state) {
  return state == WindowState::kScheduled || state == WindowState::kPausing ||
         state == WindowState::kPaused;
}
// The fleet is (being) paused.
inline bool IsActiveWindow(WindowState state) {
  return state == WindowState::kPausing || state == WindowState::kPaused;
}

class MaintenanceStore {
 public:
  virtual ~MaintenanceStore() = default;
  // FailedPrecondition, naming the other window, when it overlaps in time an open (scheduled or
  // active) window of the same environment that may cover the same agents
  // (WindowsMayShareAgents): windows whose selectors are disjoint may overlap in time.
  virtual absl::StatusOr<WindowRow> CreateWindow(const WindowRow& window) = 0;
  virtual absl::Status UpdateWindow(const WindowRow& window) = 0;
  virtual absl::StatusOr<WindowRow> GetWindow(uint64_t id) = 0;  // NotFound
  // Newest first; environment empty: all; open_only: scheduled, pausing or paused.
  virtual absl::StatusOr<std::vector<WindowRow>> ListWindows(const std::string& environment,
                                                             bool open_only) = 0;

  // Shared with the rest of the store (see store.h for their contracts).
  virtual absl::StatusOr<EnvironmentRow> GetEnvironment(const std::string& name) = 0;
  virtual absl::StatusOr<std::vector<AgentRow>> ListAgents(const std::string& environment) = 0;
  virtual absl::StatusOr<uint64_t> RecordCommand(const std::string& agent_id,
                                                 const std::string& kind, const std::string& args,
                                                 const std::string& actor, int64_t now_ms) = 0;
  virtual absl::Status Audit(const std::string& actor, const std::string& action,
                             const std::string& target, const std::string& details,
                             int64_t now_ms) = 0;
};

}  // namespace pgfleet::controller
