// Persistent maintenance windows (migrations/0003_maintenance.sql).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace pgfleet::controller {

struct WindowRow {
  uint64_t id = 0;
  std::string environment;
  std::string database;  // Empty: all databases.
  int64_t starts_unix_ms = 0;
  int64_t ends_unix_ms = 0;
  int64_t drain_timeout_ms = 60000;
  std::string reason;
  std::string state = "scheduled";  // scheduled, pausing, paused, completed, cancelled, failed
  std::vector<std::string> skip_agents;
  std::string created_by;
  int64_t created_unix_ms = 0;
  int64_t pause_sent_unix_ms = 0;
  std::string failure;
};

inline bool IsOpenWindow(const std::string& state) {
  return state == "scheduled" || state == "pausing" || state == "paused";
}
inline bool IsActiveWindow(const std::string& state) {
  return state == "pausing" || state == "paused";
}

class MaintenanceStore {
 public:
  virtual ~MaintenanceStore() = default;
  // FailedPrecondition when it overlaps an open (scheduled or active) window of the same
  // environment.
  virtual absl::StatusOr<WindowRow> CreateWindow(const WindowRow& window) = 0;
  virtual absl::Status UpdateWindow(const WindowRow& window) = 0;
  virtual absl::StatusOr<WindowRow> GetWindow(uint64_t id) = 0;  // NotFound
  // Newest first; environment empty: all; open_only: scheduled, pausing or paused.
  virtual absl::StatusOr<std::vector<WindowRow>> ListWindows(const std::string& environment,
                                                            bool open_only) = 0;
};

}  // namespace pgfleet::controller
