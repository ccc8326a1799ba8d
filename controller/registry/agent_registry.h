// The agents connected right now, each with its open stream. Durable facts about agents
// live in the Store; this holds what only exists while a stream is open.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "controller/config/overlays.h"
#include "controller/registry/agent_directory.h"
#include "pgfleet/v1/agent.pb.h"

namespace pgfleet::controller {

class AgentSession {
 public:
  // How messages reach the agent and how its stream is ended: the gRPC stream in production,
  // a recording fake in tests.
  using Writer = std::function<bool(const pgfleet::v1::ControllerMessage&)>;
  using Canceller = std::function<void()>;
  AgentSession(std::string agent_id, std::string environment, Writer writer, Canceller cancel)
      : agent_id_(std::move(agent_id)),
        environment_(std::move(environment)),
        writer_(std::move(writer)),
        cancel_(std::move(cancel)) {}

  const std::string& agent_id() const { return agent_id_; }
  const std::string& environment() const { return environment_; }

  // Thread-safe; false once the stream is gone.
  bool Send(const pgfleet::v1::ControllerMessage& message);
  // Ends the stream (a newer session for the same agent replaced it).
  void Cancel() { cancel_(); }

  // Config convergence bookkeeping.
  uint64_t applied_version() const;
  void set_applied_version(uint64_t version);
  // The desired version last sent on this stream (0: none), so it is not re-sent while the
  // agent works on it or after it NACKed it.
  uint64_t sent_version() const;
  void set_sent_version(uint64_t version);
  // The sha256 of the ini the agent reports running ("" when unknown), and of the render last
  // sent: an agent's render changes at the same version when its labels do, so "runs it" and
  // "was sent it" compare the render's sha256 as well as the version.
  std::string applied_sha256() const;
  void set_applied_sha256(std::string sha256);
  std::string sent_sha256() const;
  void set_sent(uint64_t version, std::string sha256);
  // Runs `rendered` (its version, and its sha256 when the agent reported one).
  bool Runs(const RenderedConfig& rendered) const;

  // Restart-only keys the agent's running config leaves pending (its hello, then each ACK):
  // kept with the stream, since a reconnecting agent says it again and a restarted one has none.
  std::vector<std::string> restart_pending() const;
  void set_restart_pending(std::vector<std::string> keys);
  // What the agent's hello said about its binary (issue 19): build id, pid, and whether the
  // binary on disk was already another one (later reports update binary_outdated).
  void SetBinary(std::string build_id, int32_t pid, bool binary_outdated);
  std::string build_id() const;
  int32_t pid() const;
  bool binary_outdated() const;
  // The RestartCommand this process took over after (its hello; 0: none), and the binary now
  // at its path (hello, then each report).
  void set_handover_command_id(uint64_t command_id);
  uint64_t handover_command_id() const;
  void SetOnDisk(std::string build_id, std::string version);
  std::string on_disk_build_id() const;
  std::string on_disk_version() const;

  void SetMetrics(pgfleet::v1::MetricsReport report);
  // The newest report (null before the first), shared: a report is never changed once stored.
  std::shared_ptr<const pgfleet::v1::MetricsReport> metrics() const;
  // The newest report's timestamp (0: none yet), without copying the report.
  int64_t metrics_timestamp_ms() const;

  // Command results: the caller registers the id before sending, then waits.
  void ExpectResult(uint64_t command_id);
  void DeliverResult(const pgfleet::v1::CommandResult& result);
  std::optional<pgfleet::v1::CommandResult> WaitResult(uint64_t command_id, absl::Duration timeout);
  void Close();  // Wakes waiters; the stream is over.

 private:
  const std::string agent_id_;
  const std::string environment_;
  Writer writer_;
  Canceller cancel_;
  std::mutex write_mu_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool closed_ = false;
  uint64_t applied_version_ = 0;
  uint64_t sent_version_ = 0;
  std::vector<std::string> restart_pending_;
  std::string build_id_;
  int32_t pid_ = 0;
  bool binary_outdated_ = false;
  uint64_t handover_command_id_ = 0;
  std::string on_disk_build_id_;
  std::string on_disk_version_;
  std::string applied_sha256_;
  std::string sent_sha256_;
  std::shared_ptr<const pgfleet::v1::MetricsReport> metrics_;
  std::map<uint64_t, std::optional<pgfleet::v1::CommandResult>> results_;
};

class AgentRegistry final : public AgentDirectory {
 public:
  // Registers `session`; returns the session it replaces (same agent id), if any.
  std::shared_ptr<AgentSession> Register(std::shared_ptr<AgentSession> session);
  // Removes `session` unless a newer one for the same agent took its place.
  void Unregister(const std::shared_ptr<AgentSession>& session);
  std::shared_ptr<AgentSession> Find(const std::string& agent_id) const;
  // environment empty: all.
  std::vector<std::shared_ptr<AgentSession>> List(const std::string& environment) const;

  // AgentDirectory, for the engines.
  std::optional<LiveAgent> FindLive(const std::string& agent_id) const override;
  std::vector<LiveAgent> ListLive(const std::string& environment) const override;
  bool OfferConfig(const std::string& agent_id, const ConfigVersionRow& version,
                   bool force) override;
  int OfferConfigs(const std::vector<std::string>& agent_ids, const ConfigVersionRow& version,
                   bool force) override;
  bool Send(const std::string& agent_id, const pgfleet::v1::ControllerMessage& message) override;
  // Sends `rendered` (one agent's render of `version`, with the version's files and rotation
  // overlaps) on a session the caller already holds (FleetApi's reconciliation), unless the
  // agent runs it or (without `force`) was sent it. A version whose secrets could not be
  // decrypted is never sent.
  static bool OfferConfigTo(AgentSession& session, const ConfigVersionRow& version,
                            const RenderedConfig& rendered, bool force);
  // The DesiredConfig message of `rendered` (with the version's files and rotation overlaps).
  static pgfleet::v1::ControllerMessage DesiredConfigMessage(const ConfigVersionRow& version,
                                                             const RenderedConfig& rendered);

  // How OfferConfig turns a version into the agent's own ini (FleetApi installs one that reads
  // the agent's current labels from the store). Unset: every agent gets the base.
  using Renderer = std::function<absl::StatusOr<RenderedConfig>(const std::string& agent_id,
                                                                const ConfigVersionRow& version)>;
  void set_renderer(Renderer renderer);

 private:
  // How OfferConfig renders `version` for one agent (the renderer, or the base without one).
  absl::StatusOr<RenderedConfig> Render(const std::string& agent_id,
                                        const ConfigVersionRow& version);
  // OfferConfigTo with the message built already (by DesiredConfigMessage).
  static bool OfferMessageTo(AgentSession& session, const ConfigVersionRow& version,
                             const RenderedConfig& rendered,
                             const pgfleet::v1::ControllerMessage& message, bool force);

  mutable absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<AgentSession>> sessions_ ABSL_GUARDED_BY(mu_);
  // The same sessions by environment, so an environment's agents are found without looking
  // at every other environment's (10,000 agents in a few environments).
  std::map<std::string, std::map<std::string, std::shared_ptr<AgentSession>>> by_environment_
      ABSL_GUARDED_BY(mu_);
  Renderer renderer_ ABSL_GUARDED_BY(mu_);
};

}  // namespace pgfleet::controller
