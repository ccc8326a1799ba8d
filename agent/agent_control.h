// What the control plane may do to the pooler, and what the pooler shows of the control plane.
// The core (agent/*.h, admin console, metrics) knows nothing of the controller link; the link
// (agent/link/) knows the core only through AgentControl; agent/main.cc connects the two.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "agent/stats_snapshot.h"

namespace pgfleet::agent {

class EventLoop;

// How a hand-over ended: the new process's pid, or why it failed (the old one still serves).
using HandoverDone = std::function<void(absl::StatusOr<pid_t>)>;

// A password rotation in progress for `user`: besides its current secret (auth_file), the
// previous one is accepted for client logins and tried for server logins that PostgreSQL
// refuses, until `expires`.
struct CredentialOverlap {
  std::string user;
  std::string previous_secret;  // As an auth_file holds it: plaintext, md5..., SCRAM-SHA-256$...
  absl::Time expires;
};

// The pooler's control operations, as the controller link uses them. Loop thread only, except
// where a method says otherwise. Agent implements it; the admin console reaches the same
// operations through Agent, so a PAUSE from either behaves the same.
class AgentControl {
 public:
  virtual ~AgentControl() = default;

  // The loop the pooler runs on: Post() work to it from other threads, start Timers on it.
  virtual EventLoop& loop() = 0;

  // PAUSE/RESUME `db` ("" = every database); see Agent::Pause.
  virtual absl::Status Pause(const std::string& db, std::optional<absl::Duration> deadline) = 0;
  virtual absl::Status Resume(const std::string& db) = 0;
  // RELOAD: re-reads the current config file. On error nothing changes.
  virtual absl::Status Reload() = 0;
  // Makes `path` the config file (RELOAD and SIGHUP read it from now on) and loads it as
  // RELOAD does. On error nothing changes, the config file included.
  virtual absl::Status ReloadFrom(const std::string& path) = 0;

  // Zero-downtime restart into the binary now on disk (see Agent::BeginHandover). `command_id`
  // is the controller command asking for it (0: none); the new process reports it in its hello.
  virtual void BeginHandover(uint64_t command_id, HandoverDone done) = 0;

  // Replaces the open rotation overlaps (all of them: a user not in `overlaps` has none).
  // Expired ones are dropped. InvalidArgument (and nothing changes) if a secret is malformed.
  virtual absl::Status SetCredentialOverlaps(const std::vector<CredentialOverlap>& overlaps) = 0;

  // One reading of pools, counters and pauses (see stats_snapshot.h).
  virtual StatsSnapshot Snapshot() const = 0;
  // listen_port of the config in force. Safe from any thread.
  virtual int listen_port() const = 0;
  // Restart-only keys (common/config/restart_keys.h) whose new value the last reload could not
  // apply, sorted; empty when the running config is the file as written. Safe from any thread.
  virtual std::vector<std::string> restart_pending() const = 0;
};

// The control plane as the pooler shows it (/metrics): zeros when the agent runs alone.
struct ControlPlaneStatus {
  uint64_t applied_config_version = 0;  // 0: the local config file.
  bool link_up = false;
  bool configured = false;  // Started with --controller (fleet mode).
  // The link's state (LinkStateName: connecting, connected, backoff, stopped); empty when not
  // configured.
  std::string link_state;
};

}  // namespace pgfleet::agent
