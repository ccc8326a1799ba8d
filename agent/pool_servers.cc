// Pool's server side: where a new server connection goes, when one may be launched (pool
// size, max_db_connections, max_user_connections, eviction), what a login's success or failure
// does to the pool's clients, and closing servers in bulk (RECONNECT, retirement).
#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "agent/agent.h"
#include "agent/client_conn.h"
#include "agent/conn_state.h"
#include "agent/event_loop.h"
#include "agent/pool_detail.h"
#include "agent/server_conn.h"
#include "common/log.h"

namespace pgfleet::agent {
using namespace pool_detail;
namespace {

// PostgreSQL could not be reached or did not answer in time: ServerConn's "could not connect
// to ..." for a refused, reset or closed connection, the janitor's "connect timeout". A TLS
// handshake that failed is a configuration problem, not something to wait out.
bool PostgresUnreachable(const std::string& reason) {
  return reason == "connect timeout" || (absl::StartsWith(reason, "could not connect to ") &&
                                         !absl::StrContains(reason, "TLS error"));
}

// A failed login the clients wait out, as PgBouncer's: PostgreSQL unreachable, or no server of
// the kind target_session_attrs asks for (yet: a switchover may bring one).
bool ClientsWaitOut(const std::string& reason) {
  return PostgresUnreachable(reason) || reason == kTargetSessionAttrsMismatch;
}

}  // namespace

HostPick Pool::PickHost(uint64_t server_id) {
  return agent::PickHost(config::Endpoints(db_), db_.load_balance_hosts, host_cursor_,
                         agent_.host_health(), server_id, MonotonicMicros(), &mismatched_hosts_);
}

void Pool::OnServerLoginDone(ServerConn* server, const ParamList& params) {
  if (server->host_probe() && agent_.host_health().MarkUp(server->address())) {
    PGF_INFO("pool", "db=%s host %s is back: it logged in and answered server_check_query",
             db_.name, server->address());
  }
  mismatched_hosts_.MarkUp(server->address());  // It qualifies (again): a failover.
  if (!has_welcome_) {
    welcome_params_ = params;
    has_welcome_ = true;
  }
  last_login_error_.clear();
  if (agent_.config().log_connections) {
    // PgBouncer's words ("new connection to server"), which log alerts and its tests count.
    PGF_INFO("server", "s=%d %s@%s new connection to server (db=%s, backend pid %d)", server->id(),
             server_user(), server->address(), db_.name, server->backend_pid());
  }
  OnServerIdle(server);
  WelcomeWaitingLogins();
}

void Pool::OnServerLoginFailed(ServerConn* server, const std::string& reason,
                               const std::string& sqlstate, const std::string& server_message) {
  if (server != nullptr && config::Endpoints(db_).size() > 1) {
    // One host of a list failed: it is left out for a while, and if another host may be tried
    // the clients keep waiting for that one instead of failing or waiting server_login_retry.
    const uint64_t now = MonotonicMicros();
    HostHealth& health = agent_.host_health();
    // A host that answered but is not of the kind this database asks for is left out by this
    // pool only; one that failed to log in is down for every pool.
    const bool mismatch = reason == kTargetSessionAttrsMismatch;
    HostHealth& marked = mismatch ? mismatched_hosts_ : health;
    // A probe that logged in (and answered server_check_query) found its host back, whatever
    // kind of server it is.
    if (mismatch && server->host_probe()) health.MarkUp(server->address());
    const absl::Duration out =
        marked.MarkFailed(server->address(), server->id(), now, agent_.config().server_login_retry);
    PGF_WARN("pool", "db=%s host %s skipped for %ds after a failed login%s", db_.name,
             server->address(), absl::ToInt64Seconds(absl::Ceil(out, absl::Seconds(1))),
             mismatch ? " (target_session_attrs)" : "");
    bool other_host_usable = false;
    for (const config::ServerEndpoint& endpoint : config::Endpoints(db_)) {
      const std::string address = config::EndpointAddress(endpoint);
      if (address != server->address() && health.Usable(address, now) &&
          mismatched_hosts_.Usable(address, now)) {
        other_host_usable = true;
      }
    }
    if (other_host_usable) {
      stats_.server_login_failures++;
      last_login_error_ = reason;
      return;  // Closing the server relaunches (DetachServer), on another host.
    }
  }
  stats_.server_login_failures++;
  last_login_failure_us_ = MonotonicMicros();
  last_login_error_ = reason;
  // The agent's own queries (auth_query's lookups) fail at once whatever the cause: a lookup
  // that cannot run is a clear error for that login, never a stall (RunQuery does the same
  // within server_login_retry).
  FailQueuedQueries(absl::StrCat("server login failed: ", reason));
  // As PgBouncer (kill_pool_logins_server_error): a connection that could not be made (refused,
  // timed out) or a server still starting up (57P03) leaves the clients queued, and a new
  // connection is tried after server_login_retry; query_wait_timeout, query_timeout and
  // client_login_timeout bound their wait.
  if (sqlstate == "57P03" || (sqlstate.empty() && ClientsWaitOut(reason))) return;
  // PostgreSQL's refusal goes to the clients as it said it; a failure of the agent's own
  // (TLS verification, no password known, an unsupported method) as "server login failed".
  const std::string code = sqlstate.empty() ? "08P01" : sqlstate;
  const std::string answer =
      sqlstate.empty() ? absl::StrCat("server login failed: ", reason) : server_message;
  if (!sqlstate.empty()) {
    PGF_WARN("pool", "db=%s user=%s server login failed: FATAL %s", db_.name, user_,
             server_message);
  }
  // Clients queued on a pool that still has a connected server keep waiting for it.
  if (has_welcome_ && idle_servers_.size() + active_servers_.size() + used_servers_.size() > 0) {
    return;
  }
  // The others would hit the same error: they get PostgreSQL's own SQLSTATE and message.
  while (ClientConn* client = login_waiting_clients_.front()) {
    ConnMover::Move(client, ClientConn::State::kIdle);
    client->CloseWithError(code, answer);
  }
  while (ClientConn* client = waiting_clients_.front()) client->CloseWithError(code, answer);
}

bool Pool::CanLaunchServer(bool use_reserve) const {
  return LaunchBlocker(use_reserve) == Blocker::kNone;
}

Pool::Blocker Pool::LaunchBlocker(bool use_reserve) const {
  const config::Config& cfg = agent_.config();
  const int limit = pool_size() + (use_reserve ? reserve_pool_size() : 0);
  if (static_cast<int>(server_count()) >= limit) return Blocker::kPoolSize;
  const int max_db = db_.max_db_connections.value_or(cfg.max_db_connections);
  if (max_db > 0 && agent_.ServerCountForDb(db_.name) >= max_db) return Blocker::kDbLimit;
  int max_user = cfg.max_user_connections;
  if (const config::UserConfig* user = cfg.FindUser(user_); user && user->max_user_connections) {
    max_user = *user->max_user_connections;
  }
  if (max_user > 0 && agent_.ServerCountForUser(server_user()) >= max_user) {
    return Blocker::kUserLimit;
  }
  return Blocker::kNone;
}

bool Pool::EvictIdleServer(Blocker blocker) {
  // PgBouncer's evict_connection / evict_user_connection: the least recently used idle server
  // of another pool of this database (or of this user) makes room for a client that waits.
  ServerConn* oldest = nullptr;
  Pool* owner = nullptr;
  for (const auto& [key, pool] : agent_.pools()) {
    if (pool.get() == this) continue;
    const bool shares_limit = blocker == Blocker::kDbLimit ? pool->db_name() == db_.name
                                                           : pool->server_user() == server_user();
    if (!shares_limit) continue;
    // The front of the idle list is the least recently used (AssignServers takes the back).
    ServerConn* candidate = pool->idle_servers_.front();
    if (candidate != nullptr &&
        (oldest == nullptr || candidate->last_used_us() < oldest->last_used_us())) {
      oldest = candidate;
      owner = pool.get();
    }
  }
  if (oldest == nullptr) return false;
  // The pool losing it must not refill it (min_pool_size) in the same breath.
  owner->evicting_ = true;
  oldest->Close("evicted", /*is_error=*/false);
  owner->evicting_ = false;
  return true;
}

void Pool::MaybeLaunchServers() {
  if (retiring_ || evicting_ || agent_.shutting_down() || agent_.IsPaused(db_.name)) return;
  size_t wanted = waiting_clients_.size() + queued_queries_.size();
  if (!has_welcome_ && !login_waiting_clients_.empty()) wanted = std::max<size_t>(wanted, 1);
  // Runs at every link and release: when no launch is wanted, no clock and no config lookup.
  if (login_servers_.size() >= wanted &&
      server_count() >= static_cast<size_t>(std::max(min_pool_size(), 0))) {
    return;
  }
  const uint64_t now = MonotonicMicros();
  // After a failed login, wait server_login_retry before trying again (the janitor retries).
  if (last_login_failure_us_ != 0 &&
      now - last_login_failure_us_ < ToMicros(agent_.config().server_login_retry)) {
    return;
  }
  const bool use_reserve = MaxWaitMicros(now) > ToMicros(agent_.config().reserve_pool_timeout);
  while (login_servers_.size() < wanted) {
    Blocker blocker = LaunchBlocker(use_reserve);
    // At max_db_connections or max_user_connections, an idle server elsewhere gives way.
    if ((blocker == Blocker::kDbLimit || blocker == Blocker::kUserLimit) &&
        EvictIdleServer(blocker)) {
      blocker = LaunchBlocker(use_reserve);
    }
    if (blocker != Blocker::kNone) break;
    if (use_reserve && static_cast<int>(server_count()) >= pool_size()) {
      PGF_WARN("pool", "db=%s user=%s taking connection from reserve_pool", db_.name, user_);
    }
    LaunchServer();
  }
  while (static_cast<int>(server_count()) < min_pool_size() && CanLaunchServer(false)) {
    LaunchServer();
  }
}

void Pool::LaunchServer() {
  auto* server = new ServerConn(agent_, *this, agent_.NextConnId());
  login_servers_.PushBack(server);
  server->Connect();
}

void Pool::ReconnectWithNewSettings() {
  last_login_failure_us_ = 0;
  Reconnect();
  AssignServers();
}

void Pool::Reconnect() {
  ++generation_;
  idle_servers_.ForEach([](ServerConn* server) { server->Close(kConfigurationChanged, false); });
}

size_t Pool::OldServerCount() const {
  size_t count = 0;
  auto old = [&](const ServerConn* server) {
    if (server->generation() != generation_) ++count;
  };
  login_servers_.ForEach(old);
  idle_servers_.ForEach(old);
  active_servers_.ForEach(old);
  used_servers_.ForEach(old);
  return count;
}

void Pool::CloseAllServers(const char* reason, bool idle_only) {
  // Front-first, one at a time: closing a server can run other code (pending admin commands,
  // launches) that changes these lists, so no iterator is held across a Close().
  while (ServerConn* server = idle_servers_.front()) server->Close(reason, false);
  if (idle_only) return;
  while (ServerConn* server = login_servers_.front()) server->Close(reason, false);
  while (ServerConn* server = used_servers_.front()) server->Close(reason, false);
  while (ServerConn* server = active_servers_.front()) server->Close(reason, true);
}

void Pool::Retire() {
  retiring_ = true;
  CloseAllServers("pool reclaimed: unused, and no config entry of its own", /*idle_only=*/true);
}

}  // namespace pgfleet::agent
