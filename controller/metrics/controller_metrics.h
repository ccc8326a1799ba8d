// The controller's Prometheus metrics (GET /metrics on its HTTP listener): the fleet as the
// store and the connected agents show it, gathered at scrape time, and the API's request
// counts and latencies, counted as ControlApi::Serve answers them (both wires, one place).
//
// Label cardinality is bounded by what an operator creates, never by traffic: environments,
// the config versions agents run right now (agents are counted per version, not listed), the
// API's method table and status codes. No agent id is a label: per-agent series come from the
// agents' own exporters.
#pragma once

#include <atomic>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "controller/api/control_api.h"
#include "controller/api/fleet_api.h"
#include "controller/clock.h"
#include "controller/metrics/prometheus.h"
#include "controller/registry/agent_registry.h"
#include "controller/store/store.h"

namespace pgfleet::controller {

class ControllerMetrics {
 public:
  ControllerMetrics(Store& store, FleetApi& fleet, const AgentRegistry& registry,
                    const Clock& clock);

  // ControlApi's observer (ControlApi::set_call_observer).
  void ObserveApiCall(Wire wire, const ApiMethod& method, absl::StatusCode code, double seconds);
  // Whether the controller serves (store open and migrated, listeners up); also what the
  // gRPC health service says.
  void set_ready(bool ready) { ready_.store(ready); }

  // The exposition text (format 0.0.4). An error when the store cannot be read.
  absl::StatusOr<std::string> Render();

 private:
  Store& store_;
  FleetApi& fleet_;
  const AgentRegistry& registry_;
  const Clock& clock_;
  std::atomic<bool> ready_{false};
  metrics::HistogramVec api_calls_;
};

}  // namespace pgfleet::controller
