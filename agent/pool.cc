// Pool: its settings and counts, and the client side: clients joining, queueing for a server,
// being linked to one and released from it (server lifecycle and limits: pool_servers.cc;
// timeouts and expiry: pool_janitor.cc).
#include "agent/pool.h"

#include <event2/event.h>

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
    ServerConn* server = NextIdleServer();
    ConnMover::Move(server, ServerConn::State::kUsed);
    query->server_ = server;
    server->RunQuery(query);
  }
  while (!waiting_clients_.empty() && !idle_servers_.empty() && !agent_.IsPaused(db_.name)) {
    Link(waiting_clients_.front(), NextIdleServer());
  }
  MaybeLaunchServers();
}

ServerConn* Pool::NextIdleServer() const {
  // Servers join the idle list at its back as they are released, so the front is the one idle
  // the longest. PgBouncer's default takes the most recently used (it is warm, and the others
  // can age out under server_idle_timeout); server_round_robin takes them in turn, for a
  // round-robin address (DNS, a TCP balancer) behind the database that should see even load.
  return agent_.config().server_round_robin ? idle_servers_.front() : idle_servers_.back();
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
  } else if (now - server->connect_time_us() > ToMicros(cfg.ServerLifetimeFor(db_)) &&
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

}  // namespace pgfleet::agent
