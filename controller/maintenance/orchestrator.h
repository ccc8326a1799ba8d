// Maintenance windows: pause a database across an environment, wait until every agent has
// drained, hold, resume. Each agent gets the window's end as its own PAUSE deadline, so the
// fleet resumes on time even if the controller dies or the network splits.
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "controller/api/fleet_api.h"
#include "controller/periodic.h"
#include "controller/maintenance/maintenance_store.h"
#include "controller/registry/agent_registry.h"
#include "controller/store/store.h"
#include "pgfleet/v1/fleet.pb.h"

namespace pgfleet::controller {

class MaintenanceOrchestrator {
 public:
  MaintenanceOrchestrator(Store& store, AgentRegistry& registry);
  ~MaintenanceOrchestrator();

  void StartTicking(absl::Duration interval);
  // One pass: starts due windows, follows drains, ends windows. Public for tests.
  void Tick();

  absl::StatusOr<pgfleet::v1::MaintenanceWindow> Pause(
      const Caller& caller, const pgfleet::v1::PauseWindowRequest& request);
  absl::StatusOr<pgfleet::v1::MaintenanceWindow> Resume(
      const Caller& caller, const pgfleet::v1::ResumeWindowRequest& request);
  absl::StatusOr<pgfleet::v1::MaintenanceWindow> Schedule(
      const Caller& caller, const pgfleet::v1::ScheduleWindowRequest& request);
  absl::StatusOr<pgfleet::v1::MaintenanceWindow> Get(const Caller& caller, uint64_t id);
  absl::StatusOr<pgfleet::v1::ListWindowsResponse> List(const Caller& caller,
                                                        const std::string& environment);
  absl::StatusOr<pgfleet::v1::MaintenanceWindow> Cancel(const Caller& caller, uint64_t id);

  // An agent (re)connected: if its environment is inside a window, it is paused too.
  void OnAgentConnected(AgentSession& session);

 private:
  absl::Status Begin(WindowRow& window) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Follow(WindowRow& window) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status End(WindowRow& window, const std::string& state, const std::string& failure)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SendPause(AgentSession& session, const WindowRow& window, const std::string& actor);
  void SendResume(AgentSession& session, const WindowRow& window, const std::string& actor);
  pgfleet::v1::MaintenanceWindow Describe(const WindowRow& window);
  bool Skipped(const WindowRow& window, const std::string& agent_id) const;

  Store& store_;
  AgentRegistry& registry_;
  absl::Mutex mu_;
  PeriodicThread ticker_;
};

}  // namespace pgfleet::controller
