// In-memory stand-ins for what the rollout and maintenance engines depend on: their store, the
// agent directory and the clock. The engines' unit tests drive every transition with these, in
// microseconds and without threads.
#pragma once

#include <algorithm>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "controller/clock.h"
#include "controller/maintenance/maintenance_store.h"
#include "controller/registry/agent_directory.h"
#include "controller/rollout/rollout_store.h"

namespace pgfleet::controller::testing {

class FakeClock final : public Clock {
 public:
  explicit FakeClock(absl::Time start = absl::FromUnixSeconds(1'700'000'000)) : now_(start) {}
  absl::Time Now() const override { return now_; }
  void Advance(absl::Duration by) { now_ += by; }

 private:
  absl::Time now_;
};

// The connected agents, each a LiveAgent the test edits; records every config offer and
// message the engines hand over.
class FakeAgents final : public AgentDirectory {
 public:
  struct OfferRecord {
    std::string agent_id;
    uint64_t version;
    bool force;
  };
  struct MessageRecord {
    std::string agent_id;
    pgfleet::v1::ControllerMessage message;
  };

  void Connect(const std::string& agent_id, const std::string& environment,
               uint64_t applied_version) {
    LiveAgent& agent = live_[agent_id];
    agent.agent_id = agent_id;
    agent.environment = environment;
    agent.applied_version = applied_version;
  }
  void Disconnect(const std::string& agent_id) { live_.erase(agent_id); }
  LiveAgent& agent(const std::string& agent_id) { return live_.at(agent_id); }
  // A fresh metrics report for the agent, to fill in (the registry shares reports read-only).
  pgfleet::v1::MetricsReport& NewMetrics(const std::string& agent_id) {
    auto report = std::make_shared<pgfleet::v1::MetricsReport>();
    live_.at(agent_id).metrics = report;
    return *report;
  }

  std::optional<LiveAgent> FindLive(const std::string& agent_id) const override {
    auto it = live_.find(agent_id);
    if (it == live_.end()) return std::nullopt;
    return it->second;
  }
  std::vector<LiveAgent> ListLive(const std::string& environment) const override {
    std::vector<LiveAgent> out;
    for (const auto& [id, agent] : live_) {
      if (environment.empty() || agent.environment == environment) out.push_back(agent);
    }
    return out;
  }
  bool OfferConfig(const std::string& agent_id, const ConfigVersionRow& version,
                   bool force) override {
    offers.push_back({agent_id, version.version, force});
    if (on_send) on_send();
    return live_.count(agent_id) != 0;
  }
  bool Send(const std::string& agent_id, const pgfleet::v1::ControllerMessage& message) override {
    messages.push_back({agent_id, message});
    if (on_send) on_send();
    return live_.count(agent_id) != 0;
  }

  // The versions offered to `agent_id`, oldest first.
  std::vector<uint64_t> OffersTo(const std::string& agent_id) const {
    std::vector<uint64_t> out;
    for (const OfferRecord& offer : offers) {
      if (offer.agent_id == agent_id) out.push_back(offer.version);
    }
    return out;
  }
  // "pause:<agent>" / "resume:<agent>" for each command sent, in order.
  std::vector<std::string> Commands() const {
    std::vector<std::string> out;
    for (const MessageRecord& record : messages) {
      if (record.message.command().has_pause()) out.push_back("pause:" + record.agent_id);
      if (record.message.command().has_resume()) out.push_back("resume:" + record.agent_id);
    }
    return out;
  }

  std::vector<OfferRecord> offers;
  std::vector<MessageRecord> messages;
  std::function<void()> on_send;  // Runs inside every OfferConfig/Send.

 private:
  std::map<std::string, LiveAgent> live_;
};

// Both engines' store interfaces over plain maps, with the same contracts as SqliteStore.
class FakeStore final : public RolloutStore, public MaintenanceStore {
 public:
  // Test setup.
  void AddEnvironment(const std::string& name) { environments_[name].name = name; }
  uint64_t AddVersion(const std::string& environment, const std::string& ini_text) {
    ConfigVersionRow row;
    row.version = ++last_version_;
    row.environment = environment;
    row.ini_text = ini_text;
    row.sha256 = absl::StrCat("sha-", std::hash<std::string>()(ini_text));
    versions_[row.version] = row;
    return row.version;
  }
  void SetDesired(const std::string& environment, uint64_t version) {
    environments_[environment].desired_version = version;
  }
  void AddAgent(const std::string& agent_id, const std::string& environment) {
    AgentRow row;
    row.agent_id = agent_id;
    row.environment = environment;
    agents_[agent_id] = row;
  }
  void SetLabels(const std::string& agent_id, std::map<std::string, std::string> labels) {
    agents_.at(agent_id).labels = std::move(labels);
  }
  std::optional<uint64_t> PinOf(const std::string& agent_id) const {
    return agents_.at(agent_id).pinned_version;
  }
  std::vector<std::string> audit_actions;

  // RolloutStore.
  absl::StatusOr<RolloutRow> CreateRollout(const RolloutRow& rollout,
                                           const std::vector<RolloutAgentRow>& agents) override {
    for (const auto& [id, row] : rollouts_) {
      if (row.environment == rollout.environment && IsActive(row.state)) {
        return absl::FailedPreconditionError(
            absl::StrCat(rollout.environment, " already has rollout ", id, " in progress"));
      }
    }
    RolloutRow created = rollout;
    created.id = ++last_rollout_;
    rollouts_[created.id] = created;
    for (RolloutAgentRow agent : agents) {
      agent.rollout_id = created.id;
      rollout_agents_[created.id].push_back(agent);
    }
    return created;
  }
  absl::Status UpdateRollout(const RolloutRow& rollout) override {
    if (rollouts_.count(rollout.id) == 0) return absl::NotFoundError("no such rollout");
    rollouts_[rollout.id] = rollout;
    return absl::OkStatus();
  }
  absl::Status UpdateRolloutAgent(const RolloutAgentRow& agent) override {
    for (RolloutAgentRow& row : rollout_agents_[agent.rollout_id]) {
      if (row.agent_id == agent.agent_id) {
        row = agent;
        return absl::OkStatus();
      }
    }
    return absl::NotFoundError("no such rollout agent");
  }
  absl::StatusOr<RolloutRow> GetRollout(uint64_t id) override {
    auto it = rollouts_.find(id);
    if (it == rollouts_.end()) return absl::NotFoundError(absl::StrCat("no rollout ", id));
    return it->second;
  }
  absl::StatusOr<std::vector<RolloutRow>> ListRollouts(const std::string& environment,
                                                       bool active_only) override {
    std::vector<RolloutRow> out;
    for (auto it = rollouts_.rbegin(); it != rollouts_.rend(); ++it) {
      if (!environment.empty() && it->second.environment != environment) continue;
      if (active_only && !IsActive(it->second.state)) continue;
      out.push_back(it->second);
    }
    return out;
  }
  absl::StatusOr<std::vector<RolloutAgentRow>> ListRolloutAgents(uint64_t rollout_id) override {
    return rollout_agents_[rollout_id];
  }
  absl::StatusOr<bool> HasSucceededRollout(const std::string& environment,
                                           const std::string& sha256) override {
    for (const auto& [id, row] : rollouts_) {
      if (row.environment == environment && row.state == RolloutState::kSucceeded &&
          versions_[row.to_version].sha256 == sha256) {
        return true;
      }
    }
    return false;
  }
  absl::Status SetEnvironmentUpstream(const std::string& environment,
                                      const std::string& upstream) override {
    upstreams_[environment] = upstream;
    return absl::OkStatus();
  }
  absl::StatusOr<std::string> GetEnvironmentUpstream(const std::string& environment) override {
    return upstreams_[environment];
  }
  absl::Status SetDesiredVersion(const std::string& environment, uint64_t version,
                                 std::optional<uint64_t> expected_previous) override {
    auto it = environments_.find(environment);
    if (it == environments_.end()) return absl::NotFoundError("no such environment");
    if (expected_previous.has_value() && it->second.desired_version != *expected_previous) {
      return absl::AbortedError("the desired version changed meanwhile");
    }
    it->second.desired_version = version;
    return absl::OkStatus();
  }
  absl::StatusOr<ConfigVersionRow> GetConfigVersion(uint64_t version) override {
    auto it = versions_.find(version);
    if (it == versions_.end()) return absl::NotFoundError(absl::StrCat("no version ", version));
    return it->second;
  }
  absl::Status SetAgentPin(const std::string& agent_id, std::optional<uint64_t> version) override {
    agents_[agent_id].pinned_version = version;
    return absl::OkStatus();
  }

  // MaintenanceStore.
  absl::StatusOr<WindowRow> CreateWindow(const WindowRow& window) override {
    for (const auto& [id, row] : windows_) {
      if (row.environment == window.environment && IsOpenWindow(row.state) &&
          window.starts_unix_ms < row.ends_unix_ms && row.starts_unix_ms < window.ends_unix_ms &&
          WindowsMayShareAgents(window, row)) {
        return absl::FailedPreconditionError(absl::StrCat("overlaps window ", id));
      }
    }
    WindowRow created = window;
    created.id = ++last_window_;
    windows_[created.id] = created;
    return created;
  }
  absl::Status UpdateWindow(const WindowRow& window) override {
    if (windows_.count(window.id) == 0) return absl::NotFoundError("no such window");
    windows_[window.id] = window;
    return absl::OkStatus();
  }
  absl::StatusOr<WindowRow> GetWindow(uint64_t id) override {
    auto it = windows_.find(id);
    if (it == windows_.end()) return absl::NotFoundError(absl::StrCat("no window ", id));
    return it->second;
  }
  absl::StatusOr<uint64_t> RecordCommand(const std::string&, const std::string&, const std::string&,
                                         const std::string&, int64_t) override {
    return ++last_command_;
  }

  // Both.
  absl::StatusOr<std::vector<WindowRow>> ListWindows(const std::string& environment,
                                                     bool open_only) override {
    std::vector<WindowRow> out;
    for (auto it = windows_.rbegin(); it != windows_.rend(); ++it) {
      if (!environment.empty() && it->second.environment != environment) continue;
      if (open_only && !IsOpenWindow(it->second.state)) continue;
      out.push_back(it->second);
    }
    return out;
  }
  absl::StatusOr<EnvironmentRow> GetEnvironment(const std::string& name) override {
    auto it = environments_.find(name);
    if (it == environments_.end())
      return absl::NotFoundError(absl::StrCat("no environment ", name));
    return it->second;
  }
  absl::StatusOr<std::vector<AgentRow>> ListAgents(const std::string& environment) override {
    std::vector<AgentRow> out;
    for (const auto& [id, row] : agents_) {
      if (environment.empty() || row.environment == environment) out.push_back(row);
    }
    return out;
  }
  absl::Status Audit(const std::string&, const std::string& action, const std::string&,
                     const std::string&, int64_t) override {
    audit_actions.push_back(action);
    return absl::OkStatus();
  }

 private:
  std::map<std::string, EnvironmentRow> environments_;
  std::map<uint64_t, ConfigVersionRow> versions_;
  std::map<std::string, AgentRow> agents_;  // Sorted by id, like SqliteStore's ListAgents.
  std::map<uint64_t, RolloutRow> rollouts_;
  std::map<uint64_t, std::vector<RolloutAgentRow>> rollout_agents_;
  std::map<std::string, std::string> upstreams_;
  std::map<uint64_t, WindowRow> windows_;
  uint64_t last_version_ = 0, last_rollout_ = 0, last_window_ = 0, last_command_ = 0;
};

}  // namespace pgfleet::controller::testing
