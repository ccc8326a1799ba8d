// The MaintenanceService as the operators see it, for both wires (gRPC and HTTP): roles, the
// audit log and the mapping between protos and the maintenance engine's windows.
#pragma once

#include "absl/status/statusor.h"
#include "controller/api/fleet_api.h"
#include "controller/clock.h"
#include "controller/maintenance/orchestrator.h"
#include "controller/registry/agent_directory.h"
#include "controller/store/store.h"
#include "pgfleet/v1/fleet.pb.h"

namespace pgfleet::controller {

class MaintenanceApi {
 public:
  MaintenanceApi(Store& store, MaintenanceOrchestrator& engine, AgentDirectory& agents,
                 const Clock& clock)
      : store_(store), engine_(engine), agents_(agents), clock_(clock) {}

  absl::StatusOr<pgfleet::v1::MaintenanceWindow> Pause(
      const Caller& caller, const pgfleet::v1::PauseWindowRequest& request);
  absl::StatusOr<pgfleet::v1::MaintenanceWindow> Resume(
      const Caller& caller, const pgfleet::v1::ResumeWindowRequest& request);
  absl::StatusOr<pgfleet::v1::MaintenanceWindow> Schedule(
      const Caller& caller, const pgfleet::v1::ScheduleWindowRequest& request);
  absl::StatusOr<pgfleet::v1::MaintenanceWindow> GetWindow(
      const Caller& caller, const pgfleet::v1::GetWindowRequest& request);
  absl::StatusOr<pgfleet::v1::ListWindowsResponse> ListWindows(
      const Caller& caller, const pgfleet::v1::ListWindowsRequest& request);
  absl::StatusOr<pgfleet::v1::MaintenanceWindow> CancelWindow(
      const Caller& caller, const pgfleet::v1::CancelWindowRequest& request);

 private:
  pgfleet::v1::MaintenanceWindow Describe(const WindowRow& window);
  absl::Status AuditSchedule(const Caller& caller, const WindowRow& window);

  Store& store_;
  MaintenanceOrchestrator& engine_;
  AgentDirectory& agents_;
  const Clock& clock_;
};

}  // namespace pgfleet::controller
