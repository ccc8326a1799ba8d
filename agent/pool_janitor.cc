// Pool's once-a-second work: the client and server timeouts, surplus and expired idle servers,
// server checks, and how long the pool has been unused or empty (for reclaiming it).
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
  // This database's server_lifetime, else the [pgbouncer] one (PgBouncer 1.24).
  const uint64_t server_lifetime = ToMicros(cfg.ServerLifetimeFor(db_));
  idle_servers_.ForEach([&](ServerConn* server) {
    if (server->generation() != generation_) {
      server->Close(kConfigurationChanged, false);
    } else if (now - server->connect_time_us() > server_lifetime && server_count() > min_size) {
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

}  // namespace pgfleet::agent
