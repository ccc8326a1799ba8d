// Loading a config and the files it names (auth_file, hba, TLS), for start-up and RELOAD,
// and applying a reloaded config to the running agent.

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "agent/agent.h"
#include "agent/agent_detail.h"
#include "common/config/restart_keys.h"
#include "common/config/tls_settings.h"
#include "common/log.h"
#include "common/status_macros.h"

namespace pgfleet::agent {
namespace {

absl::StatusOr<config::AuthFile> LoadAuthFileFor(const config::Config& cfg) {
  if (cfg.auth_file.empty()) {
    // With auth_user set, passwords come from PostgreSQL (auth_query); the auth_user's own
    // password is then empty, as in PgBouncer (pg_hba must trust it).
    if (cfg.auth_type == config::AuthType::kAny || cfg.UsesAuthQuery()) return config::AuthFile{};
    return absl::InvalidArgumentError(absl::StrCat(cfg.Where("auth_type"), ": auth_type ",
                                                   config::AuthTypeName(cfg.auth_type),
                                                   " needs an auth_file"));
  }
  absl::StatusOr<config::AuthFile> users = config::LoadAuthFile(cfg.auth_file);
  if (!users.ok()) return AtKey(cfg, "auth_file", users.status());
  return users;
}

}  // namespace

absl::StatusOr<std::shared_ptr<const config::HbaFile>> LoadHbaFor(const config::Config& cfg,
                                                                  const PathPolicy* confine) {
  if (cfg.auth_type != config::AuthType::kHba) return std::shared_ptr<const config::HbaFile>();
  absl::StatusOr<config::HbaFile> hba =
      config::LoadHbaFile(cfg.auth_hba_file, cfg.auth_ident_file,
                          confine != nullptr ? PushedHbaIncludeReader(*confine) : nullptr);
  if (!hba.ok()) return AtKey(cfg, "auth_hba_file", hba.status());
  return std::make_shared<const config::HbaFile>(*std::move(hba));
}

namespace {

// TlsContext's errors start with the key they are about ("client_tls_cert_file /x: cannot
// load certificate: ..."); this puts the line that set it in front.
absl::Status LocateTlsError(const config::Config& cfg, const absl::Status& status) {
  static const char* const kTlsKeys[] = {
      "client_tls_cert_file", "client_tls_key_file",  "client_tls_ca_file",
      "client_tls_protocols", "client_tls_ciphers",   "server_tls_cert_file",
      "server_tls_key_file",  "server_tls_ca_file",   "server_tls_protocols",
      "server_tls_ciphers",   "client_tls13_ciphers", "client_tls_ecdhcurve",
      "client_tls_dheparams", "server_tls13_ciphers"};
  for (const char* key : kTlsKeys) {
    if (absl::StartsWith(status.message(), absl::StrCat(key, " "))) {
      return absl::Status(status.code(), absl::StrCat(cfg.Where(key), ": ", status.message()));
    }
  }
  return absl::Status(status.code(), absl::StrCat(cfg.path, ": ", status.message()));
}

// Whether the logfile can be opened for appending (creating it, as the logger will), so a bad
// path is an error at start and a refused RELOAD rather than a silently lost log.
absl::Status CheckLogFile(const config::Config& cfg) {
  if (cfg.logfile.empty()) return absl::OkStatus();
  const int fd = open(cfg.logfile.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0666);
  if (fd < 0) {
    return AtKey(cfg, "logfile",
                 absl::ErrnoToStatus(errno, absl::StrCat("cannot open '", cfg.logfile, "'")));
  }
  close(fd);
  return absl::OkStatus();
}
}  // namespace

absl::StatusOr<LoadedConfig> LoadConfigAndFiles(const std::string& path,
                                                const PathPolicy* confine) {
  LoadedConfig loaded;
  PGF_ASSIGN_OR_RETURN(loaded.cfg, confine != nullptr
                                       ? config::LoadConfig(path, PushedIncludeCheck(*confine))
                                       : config::LoadConfig(path));
  if (confine != nullptr) PGF_RETURN_IF_ERROR(CheckPushedPaths(loaded.cfg, *confine));
  PGF_ASSIGN_OR_RETURN(loaded.users, LoadAuthFileFor(loaded.cfg));
  PGF_ASSIGN_OR_RETURN(loaded.hba, LoadHbaFor(loaded.cfg, confine));
  if (loaded.hba != nullptr && (loaded.cfg.client_tls_sslmode == config::TlsMode::kDisable ||
                                loaded.cfg.client_tls_ca_file.empty())) {
    // Such a line can never log anyone in: the agent does not ask for client certificates.
    for (const config::HbaRule& rule : loaded.hba->rules) {
      if (rule.method != config::HbaMethod::kCert) continue;
      loaded.cfg.warnings.push_back(absl::StrCat(
          loaded.hba->path, ":", rule.line,
          ": cert needs client TLS with client_tls_ca_file; this line refuses every login"));
      break;
    }
  }
  absl::StatusOr<std::shared_ptr<const TlsContext>> client_tls = TlsContext::ForClients(loaded.cfg);
  if (!client_tls.ok()) return LocateTlsError(loaded.cfg, client_tls.status());
  loaded.client_tls = std::move(*client_tls);
  absl::StatusOr<std::shared_ptr<const TlsContext>> server_tls = TlsContext::ForServers(loaded.cfg);
  if (!server_tls.ok()) return LocateTlsError(loaded.cfg, server_tls.status());
  loaded.server_tls = std::move(*server_tls);
  PGF_RETURN_IF_ERROR(CheckLogFile(loaded.cfg));
  return loaded;
}

absl::Status Agent::Reload() {
  // systemd shows the unit as "reloading" until READY=1 comes again, refused or not.
  if (service_notifier_) service_notifier_("RELOADING=1");
  absl::Status reloaded = ReloadConfig();
  if (service_notifier_) {
    service_notifier_(absl::StrCat(
        "READY=1\nSTATUS=", reloaded.ok()
                                ? ServiceStatus()
                                : absl::StrCat("RELOAD refused (", reloaded.message(),
                                               "), previous config kept; ", ServiceStatus())));
  }
  return reloaded;
}

std::string Agent::ServiceStatus() const {
  std::string listening;
  for (const Listener& listener : listeners_) {
    absl::StrAppend(&listening, listening.empty() ? "" : ", ", listener.address);
  }
  if (shutting_down_) return absl::StrCat("shutting down; ", client_count_, " clients left");
  return absl::StrCat("serving on ", listening.empty() ? "(no listener)" : listening, "; ",
                      client_count_, " clients, ", pools_.size(), " pools",
                      PausedScopes().empty() ? "" : "; paused", suspended_ ? "; suspended" : "");
}

absl::Status Agent::ReloadConfig() {
  // Certificates and keys are read again, so a renewed certificate needs only a RELOAD; the
  // logfile is opened first, so a path the agent cannot write refuses the RELOAD.
  PGF_ASSIGN_OR_RETURN(
      LoadedConfig loaded,
      LoadConfigAndFiles(options_.config_path, ConfinementFor(options_.config_path)));
  config::Config& cfg = loaded.cfg;
  PinListeners(cfg);
  config::AuthFile& users = loaded.users;
  std::shared_ptr<const TlsContext>& client_tls = loaded.client_tls;
  std::shared_ptr<const TlsContext>& server_tls = loaded.server_tls;
  for (const std::string& warning : cfg.warnings) PGF_WARN("config", "%s", warning);
  // What only a restart can change keeps its running value; the rest is applied below.
  std::vector<std::string> pending = config::KeepRestartOnlyValues(*config_, cfg);
  // The last step that can fail: new listeners are bound before old ones close, and a bind
  // failure leaves the listeners and (returning here) the whole config as they were.
  PGF_RETURN_IF_ERROR(ApplyListeners(cfg, /*at_start=*/false));
  const bool new_stats_period = cfg.stats_period != config_->stats_period;
  // A file without `verbose` keeps the level in force (-v, or a console SET), as PgBouncer,
  // whose verbose has no default a reload would reset it to.
  if (!cfg.locations.contains("verbose")) cfg.verbose = config_->verbose;
  // Servers connected under other server TLS settings are replaced as they are released
  // (PgBouncer: "database configuration changed").
  const bool server_tls_changed = config::ServerTlsDiffers(*config_, cfg);
  tls_staged_.reset();
  SetConfig(std::make_shared<const config::Config>(std::move(cfg)));
  auth_file_ = std::move(users);
  hba_ = std::move(loaded.hba);
  client_tls_ = std::move(client_tls);
  server_tls_ = std::move(server_tls);
  scram_cache_.clear();
  common::SetLogLevel(config_->verbose ? common::LogLevel::kDebug : common::LogLevel::kInfo);
  if (!config_->logfile.empty()) common::SetLogFile(config_->logfile);
  for (auto& [key, pool] : pools_) {
    if (std::optional<config::DatabaseConfig> db = config_->FindDatabase(key.first)) {
      pool->Reconfigure(*db);
    }
  }
  if (new_stats_period && stats_timer_ != nullptr) {
    stats_timer_->Start(config_->stats_period, /*repeat=*/true);
  }
  if (server_tls_changed) ReconnectForNewServerTls();
  PGF_INFO("agent", "RELOAD: configuration %s loaded%s", config_->path,
           server_tls_changed ? " (server TLS settings changed: servers close as released)" : "");
  if (!pending.empty()) {
    PGF_WARN("agent", "RELOAD: %s (the running values of these keys stay until the agent restarts)",
             config::RestartPendingText(pending));
  }
  {
    absl::MutexLock lock(&restart_pending_mu_);
    restart_pending_ = std::move(pending);
  }
  return absl::OkStatus();
}

void Agent::PinListeners(config::Config& cfg) const {
  if (!local_listeners_.has_value()) return;
  const config::Config& local = *local_listeners_;
  cfg.listen_addr = local.listen_addr;
  cfg.listen_port = local.listen_port;
  cfg.unix_socket_dir = local.unix_socket_dir;
  for (const char* key : {"listen_addr", "listen_port", "unix_socket_dir"}) {
    cfg.locations[key] = local.Where(key);
  }
}

std::vector<std::string> Agent::restart_pending() const {
  absl::MutexLock lock(&restart_pending_mu_);
  return restart_pending_;
}

absl::Status Agent::ReloadFrom(const std::string& path) {
  std::string previous = std::move(options_.config_path);
  options_.config_path = path;
  absl::Status reloaded = Reload();
  if (!reloaded.ok()) options_.config_path = std::move(previous);
  return reloaded;
}

void Agent::SetConfig(std::shared_ptr<const config::Config> config) {
  config_ = std::move(config);
  listen_port_.store(config_->listen_port, std::memory_order_relaxed);
  // Start, RELOAD, SET and pushed configs all land here.
  common::SetSyslog(config_->syslog, config_->syslog_ident, config_->syslog_facility);
  common::SetLogFormat(
      common::ParseLogFormat(config_->log_format).value_or(common::LogFormat::kText));
}

}  // namespace pgfleet::agent
