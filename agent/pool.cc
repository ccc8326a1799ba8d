#include "agent/pool.h"

#include <event2/event.h>

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "agent/agent.h"
#include "agent/client_conn.h"
#include "agent/conn_state.h"
#include "agent/event_loop.h"
#include "agent/server_conn.h"
#include "common/log.h"

namespace pgfleet::agent {
namespace {

// PgBouncer's words when a server made under older settings (RECONNECT, a RELOAD or SET that
// changes how servers are reached) is closed; log alerts match them.
constexpr char kConfigurationChanged[] = "database configuration changed";

uint64_t ToMicros(absl::Duration d) { return static_cast<uint64_t>(absl::ToInt64Microseconds(d)); }

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

bool SameServerTarget(const config::DatabaseConfig& a, const config::DatabaseConfig& b) {
  return a.host == b.host && a.port == b.port && a.ports == b.ports && a.dbname == b.dbname &&
         a.target_session_attrs == b.target_session_attrs && a.user == b.user &&
         a.password == b.password && a.connect_query == b.connect_query &&
         a.client_encoding == b.client_encoding && a.datestyle == b.datestyle &&
         a.timezone == b.timezone && a.application_name == b.application_name;
}

}  // namespace

Pool::Pool(Agent& agent, config::DatabaseConfig db, std::string user)
    : agent_(agent), db_(std::move(db)), user_(std::move(user)) {}

Pool::~Pool() {
  // Only at shutdown (a pool with queued queries is never reclaimed): their owners are going too.
  for (ServerQuery* query : queued_queries_) query->pool_ = nullptr;
}

config::PoolMode Pool::pool_mode() const { return agent_.config().PoolModeFor(db_, user_); }

// The pool's user as PgBouncer counts it for [users] limits: the forced user, else the client's.
int Pool::pool_size() const { return agent_.config().PoolSizeFor(db_, server_user()); }
int Pool::min_pool_size() const {
  return db_.min_pool_size.value_or(agent_.config().min_pool_size);
}
int Pool::reserve_pool_size() const {
  return agent_.config().ReservePoolSizeFor(db_, server_user());
}

size_t Pool::server_count() const {
  return login_servers_.size() + idle_servers_.size() + active_servers_.size() +
         used_servers_.size();
}

size_t Pool::client_count() const {
  return login_waiting_clients_.size() + active_clients_.size() + waiting_clients_.size();
}

uint64_t Pool::MaxWaitMicros(uint64_t now_us) const {
  const ClientConn* oldest = waiting_clients_.front();
  return oldest == nullptr ? 0 : now_us - oldest->wait_start_us();
}

void Pool::Reconfigure(const config::DatabaseConfig& db) {
  const bool target_changed = !SameServerTarget(db_, db);
  // A new host list (a switchover) starts its rotation from its first host.
  if (db.host != db_.host || db.ports != db_.ports) host_cursor_ = 0;
  db_ = db;
  if (target_changed) {
    ++generation_;
    mismatched_hosts_ = HostHealth();  // Judged against the old hosts or target_session_attrs.
    has_welcome_ = false;
    CloseAllServers(kConfigurationChanged, /*idle_only=*/true);
  }
  AssignServers();
}

void Pool::AddClient(ClientConn* client) {
  if (has_welcome_) {
    ConnMover::Move(client, ClientConn::State::kIdle);
    client->SendWelcome();
    return;
  }
  ConnMover::Move(client, ClientConn::State::kLoginWaiting);
  // Its wait counts for query_wait_timeout and query_timeout, as in PgBouncer.
  client->set_wait_start_us(MonotonicMicros());
  MaybeLaunchServers();
}

void Pool::WelcomeWaitingLogins() {
  while (ClientConn* client = login_waiting_clients_.front()) {
    ConnMover::Move(client, ClientConn::State::kIdle);
    client->SendWelcome();
    // What it sent while waiting is read from the loop, not from inside this server's login.
    agent_.ready_clients().Schedule(client);
  }
}

void Pool::RequestServer(ClientConn* client) {
  PGF_DCHECK(client->state() == ClientConn::State::kIdle);
  ConnMover::Move(client, ClientConn::State::kWaiting);
  client->set_wait_start_us(MonotonicMicros());
  // No server free: the message waits in the client's buffer until one is linked. Reading
  // stays armed (ClientConn bounds what a queued client may buffer), so a disconnect while
  // queued is seen at once and queueing costs no epoll_ctl.
  AssignServers();
}

void Pool::AssignServers() {
  // The agent's own queries first: a client login waits on each.
  while (!queued_queries_.empty() && !idle_servers_.empty() && !agent_.IsPaused(db_.name)) {
    ServerQuery* query = queued_queries_.front();
    queued_queries_.pop_front();
    ServerConn* server = idle_servers_.back();
    ConnMover::Move(server, ServerConn::State::kUsed);
    query->server_ = server;
    server->RunQuery(query);
  }
  while (!waiting_clients_.empty() && !idle_servers_.empty() && !agent_.IsPaused(db_.name)) {
    // Most recently used server first: it is warm, and the others can age out.
    Link(waiting_clients_.front(), idle_servers_.back());
  }
  MaybeLaunchServers();
}

void Pool::Link(ClientConn* client, ServerConn* server) {
  const uint64_t now = MonotonicMicros();
  const bool was_waiting = client->state() == ClientConn::State::kWaiting;
  ConnMover::Move(client, ClientConn::State::kActive);
  ConnMover::Move(server, ServerConn::State::kActive);
  stats_.server_assignment_count++;
  server->Link(client, now);
  client->OnLinked(server, now, was_waiting);
  // The client forwards from the loop (after this pool call returns), or once the server has
  // taken its parameters (ServerConn::HandleInternal).
  if (!server->SyncParams(client)) agent_.ready_clients().Schedule(client);
}

void Pool::Unlink(ClientConn* client, ServerConn* server) {
  server->Unlink();
  client->OnUnlinked();
  if (client->state() != ClientConn::State::kClosed) {
    ConnMover::Move(client, ClientConn::State::kIdle);
  }
}

void Pool::ReleaseServer(ServerConn* server) {
  ClientConn* client = server->client();
  if (client != nullptr) {
    Unlink(client, server);
  } else {
    server->Unlink();
  }
  // Back on the idle list first, so whatever happens next (close, reset, reuse) starts from
  // one consistent state: the list a server sits on is its state.
  ConnMover::Move(server, ServerConn::State::kIdle);

  const config::Config& cfg = agent_.config();
  const uint64_t now = MonotonicMicros();
  if (server->mid_client_message()) {
    // PostgreSQL is still reading a client message (a CopyData still streaming when COPY
    // failed, a client gone mid-message): whoever got the server next would have their bytes
    // read as the rest of it. Closed rather than kept linked until the message completes: that
    // would let a client that stops sending hold a server for as long as it likes, and a
    // reconnect after a failed COPY or a crashed client is cheap. The client, if still there,
    // has the rest of its message dropped (ClientConn::OnUnlinked).
    server->Close("released in the middle of a client message", /*is_error=*/false);
  } else if (server->generation() != generation_) {
    server->Close(kConfigurationChanged, /*is_error=*/false);
  } else if (now - server->connect_time_us() > ToMicros(cfg.server_lifetime) &&
             server_count() > static_cast<size_t>(min_pool_size())) {
    server->Close("server lifetime over", /*is_error=*/false);
  } else if (agent_.IsPaused(db_.name)) {
    // PAUSE closes released server connections so PostgreSQL can be worked on.
    server->Close("database paused", /*is_error=*/false);
  } else if (server_count() > static_cast<size_t>(pool_size() + reserve_pool_size())) {
    server->Close("too many servers in the pool", /*is_error=*/false);
  } else if (agent_.CancelInFlight(server)) {
    // A cancel for the client that just left is on its way to PostgreSQL: until it has landed
    // it could cancel whatever this backend runs next, so nobody gets it before (PgBouncer's
    // SV_BEING_CANCELED). OnCancelsDone puts it back.
    ConnMover::Move(server, ServerConn::State::kUsed);
    agent_.HoldUntilCancelled(server);
  } else if (server->statements().NeedsReset() || NeedsResetQuery()) {
    ConnMover::Move(server, ServerConn::State::kUsed);
    RunResetQueries(server);
  }
  AssignServers();
  // The client may already have sent its next query while this one finished: the loop reads
  // it once the server's handler that released this server has returned.
  if (client != nullptr && client->state() == ClientConn::State::kIdle) {
    if (agent_.shutting_down()) {
      client->Close("pooler shutting down: transaction finished");
    } else {
      agent_.ready_clients().Schedule(client);
    }
  }
}

void Pool::OnServerIdle(ServerConn* server) {
  if (agent_.IsPaused(db_.name) || server->generation() != generation_) {
    server->Close(agent_.IsPaused(db_.name) ? "database paused" : kConfigurationChanged,
                  /*is_error=*/false);
    return;
  }
  ConnMover::Move(server, ServerConn::State::kIdle);
  AssignServers();
}

bool Pool::NeedsResetQuery() const {
  const config::Config& cfg = agent_.config();
  return !cfg.server_reset_query.empty() &&
         (pool_mode() == config::PoolMode::kSession || cfg.server_reset_query_always);
}

void Pool::RunResetQueries(ServerConn* server) {
  if (server->statements().NeedsReset()) {
    // SQL changed the server's prepared statements behind the agent's back (a DEALLOCATE or
    // PREPARE it could not rewrite): empty them before anyone else binds to one.
    server->RunInternalQuery("DEALLOCATE ALL", ServerConn::AfterInternal::kBackToIdle);
  }
  if (NeedsResetQuery()) {
    server->RunInternalQuery(agent_.config().server_reset_query,
                             ServerConn::AfterInternal::kBackToIdle);
  }
}

void Pool::OnCancelsDone(ServerConn* server) {
  if (server->state() != ServerConn::State::kUsed) return;
  if (server->statements().NeedsReset() || NeedsResetQuery()) {
    RunResetQueries(server);
  } else {
    OnServerIdle(server);
  }
}

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

void Pool::DetachClient(ClientConn* client) {
  ConnMover::Move(client, ClientConn::State::kClosed);
  ServerConn* server = client->server();
  if (server == nullptr) return;
  Unlink(client, server);
  if (server->IsClean() && server->state() == ServerConn::State::kActive) {
    // Nothing in flight: the server goes back to the pool (after the reset query in
    // session mode).
    ReleaseServer(server);
  } else {
    // A transaction (or a result) is still open: closing is the only way to be sure
    // PostgreSQL rolls it back and nobody else inherits it.
    server->Close("client disconnected while server was not ready", /*is_error=*/false);
  }
}

void Pool::DetachServer(ServerConn* server) {
  // A probe closed before it knew (RELOAD, RECONNECT, pool reclaimed): another may go.
  if (server->host_probe()) agent_.host_health().EndProbe(server->address(), server->id());
  ConnMover::Move(server, ServerConn::State::kClosed);
  if (ClientConn* client = server->client()) Unlink(client, server);
  // Someone may be waiting for the capacity this server held.
  if (!agent_.shutting_down()) MaybeLaunchServers();
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
  const uint64_t now = MonotonicMicros();
  // After a failed login, wait server_login_retry before trying again (the janitor retries).
  if (last_login_failure_us_ != 0 &&
      now - last_login_failure_us_ < ToMicros(agent_.config().server_login_retry)) {
    return;
  }
  size_t wanted = waiting_clients_.size() + queued_queries_.size();
  if (!has_welcome_ && !login_waiting_clients_.empty()) wanted = std::max<size_t>(wanted, 1);
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

bool Pool::HasPreparedStatement(uint64_t id) const {
  bool found = false;
  auto check = [&](const ServerConn* server) {
    if (!found && server->statements().HasConfirmed(id)) found = true;
  };
  idle_servers_.ForEach(check);
  active_servers_.ForEach(check);
  used_servers_.ForEach(check);
  return found;
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

void Pool::Janitor(uint64_t now) {
  const config::Config& cfg = agent_.config();
  // During a pause with a deadline (a maintenance window) queued clients are kept until the
  // deadline instead of query_wait_timeout: the pause itself must not cut them off. Without a
  // deadline PgBouncer's rule applies.
  const bool window = agent_.IsPaused(db_.name) && (agent_.PauseDeadline(db_.name).has_value() ||
                                                    agent_.PauseDeadline("").has_value());
  // The client's [users] entry, then the [databases] entry, then [pgbouncer] (PgBouncer 1.24).
  const absl::Duration query_wait_timeout = cfg.QueryWaitTimeoutFor(db_, user_);
  if (!window) {
    // PgBouncer's pool_client_maint: a client waiting for a server (to log in or to run a
    // query) gets query_timeout, else query_wait_timeout, whichever is set and passed first.
    auto check_wait = [&](ClientConn* client) {
      const uint64_t waited = now - client->wait_start_us();
      if (cfg.query_timeout > absl::ZeroDuration() && waited > ToMicros(cfg.query_timeout)) {
        client->CloseWithError("08P01", "query_timeout");
      } else if (query_wait_timeout > absl::ZeroDuration() &&
                 waited > ToMicros(query_wait_timeout)) {
        client->CloseWithError("08P01", "query_wait_timeout");
      }
    };
    waiting_clients_.ForEach(check_wait);
    login_waiting_clients_.ForEach(check_wait);
  }
  // Clients waiting for the first server login: client_login_timeout counts from their connect.
  if (cfg.client_login_timeout > absl::ZeroDuration() && !has_welcome_) {
    login_waiting_clients_.ForEach([&](ClientConn* client) {
      if (now - client->connect_time_us() > ToMicros(cfg.client_login_timeout)) {
        client->CloseWithError("08P01", "client_login_timeout (server down)");
      }
    });
  }
  // PgBouncer 1.24's query_wait_notify: whole seconds queued past the setting (its compare).
  if (cfg.query_wait_notify > 0) {
    const uint64_t limit_seconds = static_cast<uint64_t>(cfg.query_wait_notify);
    waiting_clients_.ForEach([&](ClientConn* client) {
      if ((now - client->wait_start_us()) / 1000000 > limit_seconds) client->SendWaitNoticeOnce();
    });
  }
  // client_idle_timeout by the client's own [users] entry, as PgBouncer's janitor does.
  active_clients_.ForEach([&](ClientConn* client) {
    if (client->state() != ClientConn::State::kIdle) return;
    const absl::Duration client_idle_timeout = cfg.ClientIdleTimeoutFor(client->user());
    if (client_idle_timeout > absl::ZeroDuration() &&
        now - client->last_active_us() > ToMicros(client_idle_timeout)) {
      client->CloseWithError("08P01", "client_idle_timeout");
    }
  });
  // The server-side timeouts go by the user the servers log in as (PgBouncer: the server's
  // credentials), one lookup per pool.
  const absl::Duration query_timeout = cfg.QueryTimeoutFor(server_user());
  const absl::Duration idle_transaction_timeout = cfg.IdleTransactionTimeoutFor(server_user());
  const absl::Duration transaction_timeout = cfg.TransactionTimeoutFor(server_user());
  // PgBouncer's server_fast_close (session mode only; the other modes release servers at each
  // transaction's end anyway): a server from before a RECONNECT or a connection-settings change
  // is closed as soon as it is idle between transactions, and its client with it, so the client
  // notices its session ended.
  const bool fast_close = cfg.server_fast_close && pool_mode() == config::PoolMode::kSession;
  active_servers_.ForEach([&](ServerConn* server) {
    ClientConn* client = server->client();
    if (client == nullptr) return;
    if (fast_close && server->generation() != generation_ && server->pending_replies() == 0 &&
        !server->InTransaction()) {
      Unlink(client, server);
      server->Close("database configuration changed", /*is_error=*/false);
      client->CloseWithError("08P01", "database configuration changed");
      return;
    }
    if (query_timeout > absl::ZeroDuration() && server->pending_replies() > 0 &&
        client->query_start_us != 0 && now - client->query_start_us > ToMicros(query_timeout)) {
      // PgBouncer's words for a running query ("query_timeout" is for a queued one).
      Unlink(client, server);
      server->Close("query timeout", /*is_error=*/false);
      client->CloseWithError("08P01", "query timeout");
      return;
    }
    // Idle since the server's last ReadyForQuery (or the client's last message): the time a
    // query ran does not count, as in PgBouncer (GH #125).
    const uint64_t idle_since = std::max(client->last_active_us(), server->last_ready_us());
    if (idle_transaction_timeout > absl::ZeroDuration() && server->pending_replies() == 0 &&
        server->InTransaction() && now - idle_since > ToMicros(idle_transaction_timeout)) {
      client->CloseWithError("08P01", "idle transaction timeout");
      return;
    }
    // PgBouncer 1.25's transaction_timeout: from the transaction's first query, while the
    // server is not idle (a query running, or inside a transaction block), whatever the
    // client does meanwhile. PgBouncer closes the server with "transaction timeout" and the
    // client gets that reason with its default SQLSTATE, 08P01.
    if (transaction_timeout > absl::ZeroDuration() && client->xact_start_us != 0 &&
        (server->pending_replies() > 0 || server->InTransaction()) &&
        now - client->xact_start_us > ToMicros(transaction_timeout)) {
      Unlink(client, server);
      server->Close("transaction timeout", /*is_error=*/false);
      client->CloseWithError("08P01", "transaction timeout");
    }
  });
  const size_t min_size = static_cast<size_t>(min_pool_size());
  // A RELOAD or SET may have shrunk the pool: surplus idle servers go, as in PgBouncer.
  const size_t max_size = static_cast<size_t>(pool_size() + reserve_pool_size());
  while (server_count() > max_size && !idle_servers_.empty()) {
    idle_servers_.front()->Close("too many servers in the pool", false);
  }
  idle_servers_.ForEach([&](ServerConn* server) {
    if (server->generation() != generation_) {
      server->Close(kConfigurationChanged, false);
    } else if (now - server->connect_time_us() > ToMicros(cfg.server_lifetime) &&
               server_count() > min_size) {
      server->Close("server lifetime over", false);
    } else if (now - server->last_used_us() > ToMicros(cfg.server_idle_timeout) &&
               server_count() > min_size) {
      server->Close("server idle timeout", false);
    } else if (!cfg.server_check_query.empty() && cfg.server_check_delay > absl::ZeroDuration() &&
               now - server->last_used_us() > ToMicros(cfg.server_check_delay)) {
      // A server unused for a while is checked before anyone gets it.
      ConnMover::Move(server, ServerConn::State::kUsed);
      server->RunInternalQuery(cfg.server_check_query, ServerConn::AfterInternal::kBackToIdle);
    }
  });
  login_servers_.ForEach([&](ServerConn* server) {
    if (now - server->connect_time_us() > ToMicros(cfg.server_connect_timeout)) {
      OnServerLoginFailed(server, "connect timeout");
      server->Close("connect timeout", false);
    }
  });
  MaybeLaunchServers();
}

uint64_t Pool::UnusedForMicros(uint64_t now_us) {
  if (client_count() > 0 || !queued_queries_.empty() || server_count() != idle_servers_.size()) {
    unused_since_us_ = 0;
    return 0;
  }
  if (unused_since_us_ == 0) unused_since_us_ = now_us;
  // At least 1: "unused" is distinct from "in use" even on the first look.
  return std::max<uint64_t>(now_us - unused_since_us_, 1);
}

uint64_t Pool::EmptyForMicros(uint64_t now_us) {
  if (client_count() > 0 || !queued_queries_.empty() || server_count() > 0) {
    empty_since_us_ = 0;
    return 0;
  }
  if (empty_since_us_ == 0) empty_since_us_ = now_us;
  return std::max<uint64_t>(now_us - empty_since_us_, 1);
}

void Pool::RunQuery(ServerQuery* query) {
  query->pool_ = this;
  const uint64_t now = MonotonicMicros();
  if (idle_servers_.empty() && login_servers_.empty() && last_login_failure_us_ != 0 &&
      now - last_login_failure_us_ < ToMicros(agent_.config().server_login_retry)) {
    query->pool_ = nullptr;
    query->OnDone(absl::UnavailableError(absl::StrCat("server login failed: ", last_login_error_)));
    return;
  }
  queued_queries_.push_back(query);
  AssignServers();
}

void Pool::CancelQuery(ServerQuery* query) {
  if (query->server_ != nullptr) {
    query->server_->DropQuery();
  } else if (Pool* pool = query->pool_) {
    std::erase(pool->queued_queries_, query);
  }
  query->Detach();
}

void Pool::FailQueuedQueries(const std::string& reason) {
  while (!queued_queries_.empty()) {
    ServerQuery* query = queued_queries_.front();
    queued_queries_.pop_front();
    query->pool_ = nullptr;
    query->OnDone(absl::UnavailableError(reason));
  }
}

void Pool::Retire() {
  retiring_ = true;
  CloseAllServers("pool reclaimed: unused, and no config entry of its own", /*idle_only=*/true);
}

}  // namespace pgfleet::agent
