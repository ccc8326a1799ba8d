// The agent's control operations: PAUSE/RESUME, SUSPEND, DISABLE/ENABLE, KILL, RECONNECT,
// SHUTDOWN. The admin console and (later) the controller link both call these, so a pause
// from either behaves the same.
#include <event2/event.h>
#include <event2/listener.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "agent/agent.h"
#include "agent/client_conn.h"
#include "agent/server_conn.h"
#include "agent/tls/tls_context.h"
#include "common/config/tls_settings.h"
#include "common/log.h"

namespace pgfleet::agent {
namespace {

template <typename Fn>
void ForEachPoolOf(
    const std::map<std::pair<std::string, std::string>, std::unique_ptr<Pool>>& pools,
    const std::string& db, Fn&& fn) {
  for (const auto& [key, pool] : pools) {
    if (db.empty() || key.first == db) fn(*pool);
  }
}

std::vector<ClientConn*> ClientsOf(const Pool& pool) {
  std::vector<ClientConn*> clients;
  pool.ForEachClient(
      [&](const ClientConn* client) { clients.push_back(const_cast<ClientConn*>(client)); });
  return clients;
}

}  // namespace

absl::Status Agent::Pause(const std::string& db, std::optional<absl::Duration> deadline) {
  if (handover_ != nullptr) {
    // The new process was started with this process's pauses: a change now would be lost.
    return absl::UnavailableError("a RESTART is in progress: PAUSE again once it has ended");
  }
  if (!db.empty() && !config_->FindDatabase(db).has_value()) {
    return absl::NotFoundError(absl::StrCat("no such database: ", db));
  }
  if (IsPausedExactly(db)) {
    return absl::FailedPreconditionError(
        db.empty() ? "already paused" : absl::StrCat("database ", db, " is already paused"));
  }
  if (db.empty()) {
    pause_all_ = true;
  } else {
    paused_dbs_.insert(db);
  }
  if (deadline.has_value()) {
    pause_deadlines_[db] = absl::Now() + *deadline;
    if (auto it = pause_timers_.find(db); it != pause_timers_.end()) {
      RetireTimer(std::move(it->second));
    }
    auto timer = std::make_unique<Timer>(*loop_, [this, db] {
      PGF_WARN("agent", "PAUSE %s: deadline reached, resuming by itself",
               db.empty() ? "(all)" : db);
      if (absl::Status resumed = ResumeNow(db); !resumed.ok()) {
        PGF_ERROR("agent", "automatic RESUME failed: %s", resumed.message());
      }
    });
    timer->Start(*deadline, /*repeat=*/false);
    pause_timers_[db] = std::move(timer);
  }
  PGF_INFO("agent", "PAUSE %s%s", db.empty() ? "(all databases)" : db,
           deadline ? absl::StrCat(" with deadline in ", absl::FormatDuration(*deadline)) : "");
  ApplyPauseToPools(db);
  return absl::OkStatus();
}

void Agent::ApplyPauseToPools(const std::string& db) {
  // Idle servers go now; the others as their transactions (session mode: clients) finish.
  ForEachPoolOf(pools_, db, [](Pool& pool) { pool.CloseAllServers("database paused", true); });
  admin_->CheckPending();
}

void Agent::RetireTimer(std::unique_ptr<Timer> timer) {
  // The deadline timer may be the caller (auto-resume runs inside its callback): destroying
  // it here would free the running callback. Cancel now, free from the loop later.
  timer->Cancel();
  retired_timers_.push_back(std::move(timer));
  loop_->Post([this] { retired_timers_.clear(); });
}

absl::Status Agent::Resume(const std::string& db) {
  if (handover_ != nullptr) {
    return absl::UnavailableError("a RESTART is in progress: RESUME again once it has ended");
  }
  return ResumeNow(db);
}

absl::Status Agent::ResumeNow(const std::string& db) {
  if (!IsPausedExactly(db) && !(db.empty() && (!paused_dbs_.empty() || suspended_))) {
    return absl::FailedPreconditionError(db.empty()
                                             ? "pooler is not paused/suspended"
                                             : absl::StrCat("database ", db, " is not paused"));
  }
  if (db.empty()) {
    // A bare RESUME ends every pause and a SUSPEND: nobody is left waiting by accident.
    pause_all_ = false;
    paused_dbs_.clear();
    for (auto& [scope, timer] : pause_timers_) RetireTimer(std::move(timer));
    pause_timers_.clear();
    pause_deadlines_.clear();
    if (suspended_) {
      suspended_ = false;
      for (const Listener& listener : listeners_) evconnlistener_enable(listener.listener);
      for (auto& [key, pool] : pools_) {
        // Queued clients read too: they bound their own buffered input.
        for (ClientConn* client : ClientsOf(*pool)) client->net().EnableRead();
        pool->ForEachServer([](const ServerConn* server) { server->EnableRead(); });
      }
    }
  } else {
    paused_dbs_.erase(db);
    if (auto it = pause_timers_.find(db); it != pause_timers_.end()) {
      RetireTimer(std::move(it->second));
      pause_timers_.erase(it);
    }
    pause_deadlines_.erase(db);
  }
  admin_->CancelPendingPauses(db, "PAUSE canceled by RESUME");
  // Clients that queued during the pause start their query_wait_timeout afresh: the pause
  // was planned, their wait should not count against them.
  const uint64_t now = MonotonicMicros();
  ForEachPoolOf(pools_, db, [now](Pool& pool) {
    pool.waiting_clients().ForEach([now](const ClientConn* client) {
      const_cast<ClientConn*>(client)->set_wait_start_us(now);
    });
  });
  PGF_INFO("agent", "RESUME %s", db.empty() ? "(all databases)" : db);
  ForEachPoolOf(pools_, db, [](Pool& pool) { pool.AssignServers(); });
  return absl::OkStatus();
}

bool Agent::IsDrained(const std::string& db) const {
  bool drained = true;
  ForEachPoolOf(pools_, db, [&](Pool& pool) {
    if (pool.server_count() > 0) drained = false;
  });
  return drained;
}

std::vector<std::string> Agent::PausedScopes() const {
  std::vector<std::string> scopes;
  if (pause_all_) scopes.push_back("");
  for (const std::string& db : paused_dbs_) scopes.push_back(db);
  std::sort(scopes.begin(), scopes.end());
  return scopes;
}

int Agent::ServersInUse(const std::string& db) const {
  int count = 0;
  ForEachPoolOf(pools_, db, [&](Pool& pool) { count += static_cast<int>(pool.server_count()); });
  return count;
}

std::optional<absl::Time> Agent::PauseDeadline(const std::string& db) const {
  auto it = pause_deadlines_.find(db);
  if (it == pause_deadlines_.end()) return std::nullopt;
  return it->second;
}

void Agent::Suspend() {
  suspended_ = true;
  for (const Listener& listener : listeners_) evconnlistener_disable(listener.listener);
  for (auto& [key, pool] : pools_) {
    for (ClientConn* client : ClientsOf(*pool)) client->net().DisableRead();
    auto disable = [](const ServerConn* server) { server->DisableRead(); };
    pool->active_servers().ForEach(disable);
    pool->idle_servers().ForEach(disable);
  }
  PGF_INFO("agent", "SUSPEND: not reading from any socket until RESUME");
}

void Agent::SetDisabled(const std::string& db, bool disabled) {
  if (disabled) {
    disabled_dbs_.insert(db);
  } else {
    disabled_dbs_.erase(db);
  }
  PGF_INFO("agent", "%s %s", disabled ? "DISABLE" : "ENABLE", db);
}

void Agent::Kill(const std::string& db) {
  PGF_INFO("agent", "KILL %s: dropping all its client and server connections", db);
  if (!IsPausedExactly(db)) {
    if (db.empty()) {
      pause_all_ = true;
    } else {
      paused_dbs_.insert(db);
    }
  }
  ForEachPoolOf(pools_, db, [](Pool& pool) {
    for (ClientConn* client : ClientsOf(pool)) {
      client->CloseWithError("08P01", "database killed by admin (KILL)");
    }
    pool.CloseAllServers("KILL", /*idle_only=*/false);
  });
  admin_->CheckPending();
}

bool Agent::KillClient(uint64_t id) {
  ClientConn* found = nullptr;
  auto match = [&](const ClientConn* client) {
    if (client->id() == id) found = const_cast<ClientConn*>(client);
  };
  login_clients_.ForEach(match);
  admin_clients_.ForEach(match);
  for (auto& [key, pool] : pools_) {
    for (ClientConn* client : ClientsOf(*pool)) match(client);
  }
  if (found == nullptr) return false;
  found->CloseWithError("08P01", "client killed by admin (KILL_CLIENT)");
  return true;
}

void Agent::Reconnect(const std::string& db) {
  PGF_INFO("agent", "RECONNECT %s", db.empty() ? "(all databases)" : db);
  ForEachPoolOf(pools_, db, [](Pool& pool) { pool.Reconnect(); });
}

void Agent::ReconnectForNewServerTls() {
  for (auto& [key, pool] : pools_) pool->ReconnectWithNewSettings();
}

bool Agent::OldServersClosed(const std::string& db) const {
  bool closed = true;
  ForEachPoolOf(pools_, db, [&](Pool& pool) {
    if (pool.OldServerCount() > 0) closed = false;
  });
  return closed;
}

void Agent::Shutdown(ShutdownMode mode, const std::string& who) {
  // WAIT_FOR_SERVERS goes through BeginShutdown, which tells the service manager itself.
  if (service_notifier_ && mode != ShutdownMode::kWaitForServers) {
    service_notifier_(absl::StrCat("STOPPING=1\nSTATUS=stopping (SHUTDOWN by ", who, ")"));
  }
  switch (mode) {
    case ShutdownMode::kImmediate:
      PGF_INFO("agent", "SHUTDOWN by %s: exiting now", who);
      StopLoop();
      return;
    case ShutdownMode::kWaitForServers:
      BeginShutdown(absl::StrCat("SHUTDOWN WAIT_FOR_SERVERS by ", who));
      return;
    case ShutdownMode::kWaitForClients:
      PGF_INFO("agent",
               "SHUTDOWN WAIT_FOR_CLIENTS by %s: no new clients; exiting when the last "
               "one leaves",
               who);
      wait_for_clients_ = true;
      CloseListeners();
      MaybeFinishShutdown();
      return;
  }
}

absl::Status Agent::CheckWritablePath(const std::string& key, const std::string& path) const {
  return CheckPushedPath(key, path, path_policy_, /*written=*/true);
}

config::Config Agent::ConfigForSet() const {
  config::Config cfg = *config_;
  if (tls_staged_.has_value()) config::CopyTlsSettings(*tls_staged_, cfg);
  return cfg;
}

std::string Agent::ReplaceConfig(config::Config cfg) {
  const bool client_tls_changed = config::ClientTlsDiffers(*config_, cfg);
  const bool server_tls_changed = config::ServerTlsDiffers(*config_, cfg);
  tls_staged_.reset();
  std::string note;
  bool reconnect_servers = false;
  if (client_tls_changed || server_tls_changed) {
    absl::StatusOr<std::shared_ptr<const TlsContext>> client =
        client_tls_changed ? TlsContext::ForClients(cfg) : client_tls_;
    absl::StatusOr<std::shared_ptr<const TlsContext>> server =
        server_tls_changed ? TlsContext::ForServers(cfg) : server_tls_;
    if (client.ok() && server.ok()) {
      client_tls_ = std::move(*client);
      server_tls_ = std::move(*server);
      reconnect_servers = server_tls_changed;
    } else {
      const absl::Status why = client.ok() ? server.status() : client.status();
      note = absl::StrCat("TLS settings not in force yet (", why.message(),
                          "); the running ones stay until the keys set so far work together");
      PGF_WARN("admin", "SET: %s", note);
      tls_staged_ = cfg;
      config::CopyTlsSettings(*config_, cfg);
    }
  }
  // SET auth_type = hba, auth_hba_file or auth_ident_file: the rules are read now. A file that
  // does not load refuses every login (no rules match) rather than keeping the old method.
  if (cfg.auth_type != config_->auth_type || cfg.auth_hba_file != config_->auth_hba_file ||
      cfg.auth_ident_file != config_->auth_ident_file) {
    absl::StatusOr<std::shared_ptr<const config::HbaFile>> hba =
        LoadHbaFor(cfg, ConfinementFor(options_.config_path));
    hba_ = hba.ok() ? std::move(*hba) : nullptr;
    if (!hba.ok()) {
      absl::StrAppend(&note, note.empty() ? "" : "; ", "auth_hba_file not loaded (",
                      hba.status().message(), "): logins are refused until it loads");
      PGF_WARN("admin", "SET: %s", note);
    }
  }
  SetConfig(std::make_shared<const config::Config>(std::move(cfg)));
  common::SetLogLevel(config_->verbose ? common::LogLevel::kDebug : common::LogLevel::kInfo);
  if (reconnect_servers) {
    PGF_INFO("admin", "SET: server TLS settings changed; servers close as they are released");
    ReconnectForNewServerTls();
  }
  for (auto& [key, pool] : pools_) pool->AssignServers();
  return note;
}

}  // namespace pgfleet::agent
