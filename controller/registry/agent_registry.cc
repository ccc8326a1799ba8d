#include "controller/registry/agent_registry.h"

#include "common/log.h"
#include "controller/store/store.h"

namespace pgfleet::controller {

bool AgentSession::Send(const pgfleet::v1::ControllerMessage& message) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) return false;
  }
  std::lock_guard<std::mutex> lock(write_mu_);
  return writer_(message);
}

uint64_t AgentSession::applied_version() const {
  std::lock_guard<std::mutex> lock(mu_);
  return applied_version_;
}
void AgentSession::set_applied_version(uint64_t version) {
  std::lock_guard<std::mutex> lock(mu_);
  applied_version_ = version;
}
uint64_t AgentSession::sent_version() const {
  std::lock_guard<std::mutex> lock(mu_);
  return sent_version_;
}
void AgentSession::set_sent_version(uint64_t version) {
  std::lock_guard<std::mutex> lock(mu_);
  sent_version_ = version;
  if (version == 0) sent_sha256_.clear();
}

std::string AgentSession::applied_sha256() const {
  std::lock_guard<std::mutex> lock(mu_);
  return applied_sha256_;
}
void AgentSession::set_applied_sha256(std::string sha256) {
  std::lock_guard<std::mutex> lock(mu_);
  applied_sha256_ = std::move(sha256);
}
std::string AgentSession::sent_sha256() const {
  std::lock_guard<std::mutex> lock(mu_);
  return sent_sha256_;
}
void AgentSession::set_sent(uint64_t version, std::string sha256) {
  std::lock_guard<std::mutex> lock(mu_);
  sent_version_ = version;
  sent_sha256_ = std::move(sha256);
}
bool AgentSession::Runs(const RenderedConfig& rendered) const {
  std::lock_guard<std::mutex> lock(mu_);
  return applied_version_ == rendered.version &&
         (applied_sha256_.empty() || applied_sha256_ == rendered.sha256);
}

std::vector<std::string> AgentSession::restart_pending() const {
  std::lock_guard<std::mutex> lock(mu_);
  return restart_pending_;
}
void AgentSession::set_restart_pending(std::vector<std::string> keys) {
  std::lock_guard<std::mutex> lock(mu_);
  restart_pending_ = std::move(keys);
}

void AgentSession::SetMetrics(pgfleet::v1::MetricsReport report) {
  auto shared = std::make_shared<const pgfleet::v1::MetricsReport>(std::move(report));
  std::lock_guard<std::mutex> lock(mu_);
  metrics_ = std::move(shared);
}

std::shared_ptr<const pgfleet::v1::MetricsReport> AgentSession::metrics() const {
  std::lock_guard<std::mutex> lock(mu_);
  return metrics_;
}

int64_t AgentSession::metrics_timestamp_ms() const {
  std::lock_guard<std::mutex> lock(mu_);
  return metrics_ != nullptr ? metrics_->timestamp_unix_ms() : 0;
}

void AgentSession::ExpectResult(uint64_t command_id) {
  std::lock_guard<std::mutex> lock(mu_);
  results_[command_id] = std::nullopt;
}

void AgentSession::DeliverResult(const pgfleet::v1::CommandResult& result) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = results_.find(result.command_id());
    if (it == results_.end()) return;
    it->second = result;
  }
  cv_.notify_all();
}

std::optional<pgfleet::v1::CommandResult> AgentSession::WaitResult(uint64_t command_id,
                                                                   absl::Duration timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, absl::ToChronoMilliseconds(timeout), [&] {
    auto it = results_.find(command_id);
    return closed_ || (it != results_.end() && it->second.has_value());
  });
  auto it = results_.find(command_id);
  std::optional<pgfleet::v1::CommandResult> result;
  if (it != results_.end()) {
    result = it->second;
    results_.erase(it);
  }
  return result;
}

void AgentSession::Close() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
  }
  cv_.notify_all();
}

void AgentSession::SetBinary(std::string build_id, int32_t pid, bool binary_outdated) {
  std::lock_guard<std::mutex> lock(mu_);
  build_id_ = std::move(build_id);
  pid_ = pid;
  binary_outdated_ = binary_outdated;
}

std::string AgentSession::build_id() const {
  std::lock_guard<std::mutex> lock(mu_);
  return build_id_;
}

int32_t AgentSession::pid() const {
  std::lock_guard<std::mutex> lock(mu_);
  return pid_;
}

bool AgentSession::binary_outdated() const {
  std::lock_guard<std::mutex> lock(mu_);
  // The newest report wins over the hello: the binary can be upgraded while the agent runs.
  return metrics_ != nullptr ? metrics_->binary_outdated() : binary_outdated_;
}

void AgentSession::set_handover_command_id(uint64_t command_id) {
  std::lock_guard<std::mutex> lock(mu_);
  handover_command_id_ = command_id;
}

uint64_t AgentSession::handover_command_id() const {
  std::lock_guard<std::mutex> lock(mu_);
  return handover_command_id_;
}

void AgentSession::SetOnDisk(std::string build_id, std::string version) {
  std::lock_guard<std::mutex> lock(mu_);
  on_disk_build_id_ = std::move(build_id);
  on_disk_version_ = std::move(version);
}

std::string AgentSession::on_disk_build_id() const {
  std::lock_guard<std::mutex> lock(mu_);
  // A report that names the binary on disk wins over the hello, like binary_outdated.
  return metrics_ != nullptr && !metrics_->on_disk_build_id().empty()
             ? metrics_->on_disk_build_id()
             : on_disk_build_id_;
}

std::string AgentSession::on_disk_version() const {
  std::lock_guard<std::mutex> lock(mu_);
  return metrics_ != nullptr && !metrics_->on_disk_build_id().empty() ? metrics_->on_disk_version()
                                                                       : on_disk_version_;
}

std::shared_ptr<AgentSession> AgentRegistry::Register(std::shared_ptr<AgentSession> session) {
  absl::MutexLock lock(&mu_);
  std::shared_ptr<AgentSession>& slot = sessions_[session->agent_id()];
  std::shared_ptr<AgentSession> previous = std::move(slot);
  if (previous != nullptr) {
    // The same agent may come back in another environment.
    auto env = by_environment_.find(previous->environment());
    if (env != by_environment_.end()) {
      env->second.erase(previous->agent_id());
      if (env->second.empty()) by_environment_.erase(env);
    }
  }
  by_environment_[session->environment()][session->agent_id()] = session;
  slot = std::move(session);
  return previous;
}

void AgentRegistry::Unregister(const std::shared_ptr<AgentSession>& session) {
  absl::MutexLock lock(&mu_);
  auto it = sessions_.find(session->agent_id());
  if (it == sessions_.end() || it->second != session) return;
  sessions_.erase(it);
  auto env = by_environment_.find(session->environment());
  if (env != by_environment_.end()) {
    env->second.erase(session->agent_id());
    if (env->second.empty()) by_environment_.erase(env);
  }
}

std::shared_ptr<AgentSession> AgentRegistry::Find(const std::string& agent_id) const {
  absl::MutexLock lock(&mu_);
  auto it = sessions_.find(agent_id);
  return it == sessions_.end() ? nullptr : it->second;
}

std::vector<std::shared_ptr<AgentSession>> AgentRegistry::List(
    const std::string& environment) const {
  absl::MutexLock lock(&mu_);
  std::vector<std::shared_ptr<AgentSession>> result;
  if (environment.empty()) {
    result.reserve(sessions_.size());
    for (const auto& [id, session] : sessions_) result.push_back(session);
    return result;
  }
  auto env = by_environment_.find(environment);
  if (env == by_environment_.end()) return result;
  result.reserve(env->second.size());
  for (const auto& [id, session] : env->second) result.push_back(session);
  return result;
}

namespace {

LiveAgent Snapshot(const AgentSession& session) {
  LiveAgent live;
  live.agent_id = session.agent_id();
  live.environment = session.environment();
  live.applied_version = session.applied_version();
  live.metrics = session.metrics();
  live.pid = session.pid();
  live.handover_command_id = session.handover_command_id();
  live.binary_outdated = session.binary_outdated();
  live.on_disk_build_id = session.on_disk_build_id();
  live.on_disk_version = session.on_disk_version();
  return live;
}

}  // namespace

std::optional<LiveAgent> AgentRegistry::FindLive(const std::string& agent_id) const {
  std::shared_ptr<AgentSession> session = Find(agent_id);
  if (session == nullptr) return std::nullopt;
  return Snapshot(*session);
}

std::vector<LiveAgent> AgentRegistry::ListLive(const std::string& environment) const {
  std::vector<LiveAgent> live;
  for (const std::shared_ptr<AgentSession>& session : List(environment)) {
    live.push_back(Snapshot(*session));
  }
  return live;
}

pgfleet::v1::ControllerMessage AgentRegistry::DesiredConfigMessage(const ConfigVersionRow& version,
                                                                   const RenderedConfig& rendered) {
  pgfleet::v1::ControllerMessage message;
  pgfleet::v1::DesiredConfig* config = message.mutable_desired_config();
  config->set_version(rendered.version);
  // The render's own sha256 (the version's content address also covers overlays and files).
  config->set_sha256(rendered.sha256);
  config->set_ini_text(rendered.ini_text);
  for (const ConfigFileRow& file : version.files) {
    pgfleet::v1::ConfigFile* out = config->add_files();
    out->set_key(file.key);
    out->set_content(file.content);
    // The plain sha256 only travels with the content (a transfer check); the agent names the
    // file by the keyed fingerprint, which is what its console and logs may show.
    out->set_sha256(Sha256Hex(file.content));
    out->set_fingerprint(file.fingerprint);
  }
  for (const CredentialOverlapRow& overlap : version.credential_overlaps) {
    pgfleet::v1::CredentialOverlap* out = config->add_credential_overlaps();
    out->set_user(overlap.user);
    out->set_previous_secret(overlap.previous_secret);
    out->set_expires_unix_ms(overlap.expires_unix_ms);
  }
  return message;
}

bool AgentRegistry::OfferConfigTo(AgentSession& session, const ConfigVersionRow& version,
                                  const RenderedConfig& rendered, bool force) {
  if (session.Runs(rendered)) return true;
  if (!force && rendered.version == session.sent_version() &&
      rendered.sha256 == session.sent_sha256()) {
    return true;
  }
  return OfferMessageTo(session, version, rendered, DesiredConfigMessage(version, rendered), force);
}

bool AgentRegistry::OfferMessageTo(AgentSession& session, const ConfigVersionRow& version,
                                   const RenderedConfig& rendered,
                                   const pgfleet::v1::ControllerMessage& message, bool force) {
  if (session.Runs(rendered)) return true;
  if (!force && rendered.version == session.sent_version() &&
      rendered.sha256 == session.sent_sha256()) {
    return true;
  }
  if (!version.secrets_error.empty()) {
    // Sending it without its files would make the agent drop its credentials.
    PGF_ERROR("api", "not sending config version %d to agent %s: %s", version.version,
              session.agent_id(), version.secrets_error);
    return false;
  }
  session.set_sent(rendered.version, rendered.sha256);
  PGF_INFO("api", "sending config version %d (render %s) to agent %s (runs %d)", rendered.version,
           rendered.sha256.substr(0, 12), session.agent_id(), session.applied_version());
  return session.Send(message);
}

void AgentRegistry::set_renderer(Renderer renderer) {
  absl::MutexLock lock(&mu_);
  renderer_ = std::move(renderer);
}

absl::StatusOr<RenderedConfig> AgentRegistry::Render(const std::string& agent_id,
                                                     const ConfigVersionRow& version) {
  Renderer renderer;
  {
    absl::MutexLock lock(&mu_);
    renderer = renderer_;
  }
  if (renderer) return renderer(agent_id, version);
  return RenderedConfig{version.version, version.ini_text, Sha256Hex(version.ini_text), {}};
}

bool AgentRegistry::OfferConfig(const std::string& agent_id, const ConfigVersionRow& version,
                                bool force) {
  std::shared_ptr<AgentSession> session = Find(agent_id);
  if (session == nullptr) return false;
  absl::StatusOr<RenderedConfig> rendered = Render(agent_id, version);
  if (!rendered.ok()) {
    PGF_ERROR("api", "config version %d not rendered for agent %s: %s", version.version, agent_id,
              rendered.status().message());
    return false;
  }
  return OfferConfigTo(*session, version, *rendered, force);
}

int AgentRegistry::OfferConfigs(const std::vector<std::string>& agent_ids,
                                const ConfigVersionRow& version, bool force) {
  if (!version.overlays.empty()) return AgentDirectory::OfferConfigs(agent_ids, version, force);
  // Without overlays every agent's render is the base: rendered, hashed and made into a
  // message once for the whole wave, not once per agent.
  std::optional<RenderedConfig> rendered;
  std::optional<pgfleet::v1::ControllerMessage> message;
  int offered = 0;
  for (const std::string& agent_id : agent_ids) {
    std::shared_ptr<AgentSession> session = Find(agent_id);
    if (session == nullptr) continue;
    if (!rendered.has_value()) {
      absl::StatusOr<RenderedConfig> render = Render(agent_id, version);
      if (!render.ok()) {
        PGF_ERROR("api", "config version %d not rendered for agent %s: %s", version.version,
                  agent_id, render.status().message());
        return offered;
      }
      rendered = *std::move(render);
      message = DesiredConfigMessage(version, *rendered);
    }
    offered += OfferMessageTo(*session, version, *rendered, *message, force) ? 1 : 0;
  }
  return offered;
}

bool AgentRegistry::Send(const std::string& agent_id,
                         const pgfleet::v1::ControllerMessage& message) {
  std::shared_ptr<AgentSession> session = Find(agent_id);
  return session != nullptr && session->Send(message);
}

}  // namespace pgfleet::controller
