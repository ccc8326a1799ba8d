// Maintenance windows: pause a database across an environment, wait until every agent has
// drained, hold, resume. Each agent gets the window's end as its own PAUSE deadline, so the
// fleet resumes on time even if the controller dies or the network splits.
//
// Like the rollout engine it knows nothing of callers or protos (controller/api/ maps those):
// it reads and writes its MaintenanceStore, looks at and talks to agents through an
// AgentDirectory, and takes the time from a Clock (or Tick's argument). PAUSE and RESUME
// commands are decided under the lock and sent after it is released, in decision order.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "controller/clock.h"
#include "controller/maintenance/maintenance_store.h"
#include "controller/periodic.h"
#include "controller/registry/agent_directory.h"
#include "controller/send_queue.h"
#include "pgfleet/v1/agent.pb.h"

namespace pgfleet::controller {

inline constexpr absl::Duration kDefaultWindowDuration = absl::Seconds(900);
inline constexpr absl::Duration kDefaultDrainTimeout = absl::Seconds(60);

struct WindowSpec {
  std::string environment;
  std::string database;          // Empty: all databases.
  absl::Time starts;             // Earlier than now (or InfinitePast): now.
  absl::Duration duration;       // Zero or less: kDefaultWindowDuration.
  absl::Duration drain_timeout;  // Zero or less: kDefaultDrainTimeout.
  std::string reason;
  std::vector<std::string> skip_agents;
  std::string selector;  // kubectl syntax; empty: every agent. Must match at least one agent.
};

class MaintenanceOrchestrator {
 public:
  MaintenanceOrchestrator(MaintenanceStore& store, AgentDirectory& agents, const Clock& clock);
  ~MaintenanceOrchestrator();
  MaintenanceOrchestrator(const MaintenanceOrchestrator&) = delete;
  MaintenanceOrchestrator& operator=(const MaintenanceOrchestrator&) = delete;

  // With `may_tick`, a tick runs only while it says so (only the leader of several controllers
  // runs the engines; see controller/leader/leadership.h).
  void StartTicking(absl::Duration interval, std::function<bool()> may_tick = nullptr);
  // One pass: starts due windows, follows drains, ends windows.
  void Tick(absl::Time now);

  // FailedPrecondition when it overlaps an open window of the environment; NotFound for an
  // unknown environment.
  absl::StatusOr<WindowRow> Schedule(const WindowSpec& spec, const std::string& actor);
  // Ends the active windows of `database` early (several may be active when their selectors
  // are disjoint); returns the newest. With a selector (kubectl syntax), resumes only the agents
  // it matches among those the windows pause: each window goes on for its other agents (the
  // resumed ones are left alone from then on, even when they reconnect) and ends once it
  // pauses nobody. NotFound when no active window pauses such an agent.
  absl::StatusOr<WindowRow> Resume(const std::string& environment, const std::string& database,
                                   const std::string& actor, const std::string& selector = "");
  // FailedPrecondition when it is already over.
  absl::StatusOr<WindowRow> Cancel(uint64_t id, const std::string& actor);

  // An agent's stream is up: if its environment is inside a window, it is paused too.
  void OnAgentConnected(const std::string& agent_id, const std::string& environment);

 private:
  struct Message {
    std::string agent_id;
    pgfleet::v1::ControllerMessage message;
  };
  using Outbox = std::vector<Message>;

  absl::Status Begin(WindowRow& window, int64_t now, Outbox& out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status Follow(WindowRow& window, int64_t now, Outbox& out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status End(WindowRow& window, WindowState state, const std::string& failure, int64_t now,
                   Outbox& out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void TickLocked(int64_t now, Outbox& out) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void QueuePause(const std::string& agent_id, const WindowRow& window, const std::string& actor,
                  int64_t now, Outbox& out);
  void QueueResume(const std::string& agent_id, const WindowRow& window, const std::string& actor,
                   int64_t now, Outbox& out);
  // Queues what was decided under mu_ (held on entry), releases mu_, then sends.
  void ReleaseAndSend(Outbox out) ABSL_UNLOCK_FUNCTION(mu_);

  MaintenanceStore& store_;
  AgentDirectory& agents_;
  const Clock& clock_;
  absl::Mutex mu_;
  SendQueue<Message> sends_;
  PeriodicThread ticker_;
};

// Whether `agent_id` is left out of the window: one of its skipped agents, or not matched by its
// selector (see ResolveWindowSelector).
bool SkipsAgent(const WindowRow& window, const std::string& agent_id);
// Fills window.selected_agents from the environment's agents' current labels.
absl::Status ResolveWindowSelector(MaintenanceStore& store, WindowRow& window);
// The agent's report of its pause on `database`, if it has one.
const pgfleet::v1::PauseState* FindPause(const pgfleet::v1::MetricsReport& report,
                                         const std::string& database);

}  // namespace pgfleet::controller
