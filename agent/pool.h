// A pool: the server connections of one (database, user) pair and the clients that use
// them. All linking of clients to servers goes through here.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "agent/host_list.h"
#include "agent/intrusive_list.h"
#include "agent/stats.h"
#include "common/auth_crypto.h"
#include "common/config/config.h"

namespace pgfleet::agent {

class Agent;
class ClientConn;
class Pool;
class ServerConn;

using ParamList = std::vector<std::pair<std::string, std::string>>;

// PgBouncer's words for a server that logged in but fails its database's target_session_attrs.
inline constexpr char kTargetSessionAttrsMismatch[] =
    "server does not satisfy target_session_attrs";

// A query an agent component runs for itself on one of a pool's servers (auth_query's lookup),
// ahead of the pool's queued clients. The owner keeps it alive until OnDone, or withdraws it
// with Pool::CancelQuery; either way the pool and server forget it.
class ServerQuery {
 public:
  virtual ~ServerQuery() = default;
  // The messages to send (ending with one Sync or a simple Query: one ReadyForQuery).
  virtual std::string Messages() const = 0;
  // Each RowDescription ('T') and DataRow ('D') of the answer.
  virtual void OnMessage(char type, std::string_view body) = 0;
  // Once, at the end: OK after ReadyForQuery without error; otherwise why not (the server's
  // ErrorResponse, its login failing, the connection lost).
  virtual void OnDone(const absl::Status& status) = 0;

 private:
  friend class Pool;
  friend class ServerConn;
  void Detach() {
    pool_ = nullptr;
    server_ = nullptr;
  }
  Pool* pool_ = nullptr;          // Set while queued or running.
  ServerConn* server_ = nullptr;  // Set while running.
};

class Pool {
 public:
  Pool(Agent& agent, config::DatabaseConfig db, std::string user);
  ~Pool();

  const std::string& db_name() const { return db_.name; }
  const std::string& user() const { return user_; }
  const config::DatabaseConfig& db() const { return db_; }
  // The user the agent logs in to PostgreSQL as (the db entry's forced user, or the client's).
  const std::string& server_user() const { return db_.user.empty() ? user_ : db_.user; }

  // Effective settings: [users] entry, then [databases] entry, then [pgbouncer].
  config::PoolMode pool_mode() const;
  int pool_size() const;
  int min_pool_size() const;
  int reserve_pool_size() const;

  // Applies a reloaded database entry. Servers whose connection parameters changed are
  // closed when released (or now, if idle).
  void Reconfigure(const config::DatabaseConfig& db);

  // -- Client side --
  // A freshly authenticated client: welcomed now if the pool knows the server's parameters,
  // otherwise once the first server connection has logged in.
  void AddClient(ClientConn* client);
  // The client has a message to send and no server: link it, or queue it (FIFO).
  void RequestServer(ClientConn* client);
  // The client is closing: off its list, and its server released (or closed if mid-transaction).
  void DetachClient(ClientConn* client);

  // -- Server side --
  // The host the new server connection `server_id` goes to (load_balance_hosts, skipping hosts
  // that are down).
  HostPick PickHost(uint64_t server_id);
  void OnServerLoginDone(ServerConn* server, const ParamList& params);
  // `sqlstate` and `server_message`: PostgreSQL's ErrorResponse refusing the login (empty when
  // the connection itself failed: refused, timed out, TLS).
  void OnServerLoginFailed(ServerConn* server, const std::string& reason,
                           const std::string& sqlstate = {},
                           const std::string& server_message = {});
  // The server finished a transaction (transaction/statement mode) or its client left.
  void ReleaseServer(ServerConn* server);
  // The server is back to idle after a reset/check/param query.
  void OnServerIdle(ServerConn* server);
  // A server held back at release because cancel requests to it were in flight: they have
  // all reached PostgreSQL, so it can serve the next client.
  void OnCancelsDone(ServerConn* server);
  void DetachServer(ServerConn* server);

  // Called about once a second: timeouts, min_pool_size, idle server expiry.
  void Janitor(uint64_t now_us);
  // How long the pool has had no client and no server but idle ones, as the janitor saw it
  // (0 while in use). Pools with no config entry of their own are reclaimed after a while.
  uint64_t UnusedForMicros(uint64_t now_us);
  // How long the pool has had no client, no server (idle ones included) and no queued query,
  // as the janitor saw it (0 while not empty): PgBouncer's pool_idle_timeout measure.
  uint64_t EmptyForMicros(uint64_t now_us);
  // Before the agent drops the pool: closes its idle servers and launches no more. Afterwards
  // the pool has no connection left (UnusedForMicros > 0 said it had only idle servers).
  void Retire();
  void CloseAllServers(const char* reason, bool idle_only);
  // RECONNECT: servers are closed once released; idle ones now.
  void Reconnect();
  // The settings servers log in with changed (server TLS): as Reconnect, and a login that
  // failed under the old settings no longer holds the next one back for server_login_retry.
  void ReconnectWithNewSettings();
  // Servers from before the last RECONNECT or connection-parameter change.
  size_t OldServerCount() const;
  // Whether some server of the pool has prepared statement `id` (so its SQL is known good).
  bool HasPreparedStatement(uint64_t id) const;
  // Gives idle servers to queued clients and starts new connections when allowed.
  void AssignServers();

  // Runs `query` on the next free server of this pool (connecting one if allowed). Fails it at
  // once when the pool cannot log in to PostgreSQL right now (within server_login_retry of a
  // failed login), rather than letting it wait for a retry.
  void RunQuery(ServerQuery* query);
  // Withdraws a queued or running query: OnDone is not called. A running one's server finishes
  // the query and goes back to idle.
  static void CancelQuery(ServerQuery* query);

  // Recovered from a client's SCRAM login; lets the agent log in with a SCRAM auth_file secret.
  void set_scram_keys(const crypto::ScramKeys& keys) { scram_keys_ = keys; }
  const std::optional<crypto::ScramKeys>& scram_keys() const { return scram_keys_; }

  const ParamList& welcome_params() const { return welcome_params_; }
  bool has_welcome() const { return has_welcome_; }

  // Lists, exposed read-only for SHOW commands and metrics.
  const IntrusiveList<ClientConn>& active_clients() const { return active_clients_; }
  const IntrusiveList<ClientConn>& waiting_clients() const { return waiting_clients_; }
  const IntrusiveList<ClientConn>& login_waiting_clients() const { return login_waiting_clients_; }
  const IntrusiveList<ServerConn>& active_servers() const { return active_servers_; }
  const IntrusiveList<ServerConn>& idle_servers() const { return idle_servers_; }
  const IntrusiveList<ServerConn>& used_servers() const { return used_servers_; }
  const IntrusiveList<ServerConn>& login_servers() const { return login_servers_; }
  // Every client (active, waiting, waiting for a server's login) and every server (active,
  // idle, used, logging in), in the order PgBouncer's SHOW commands walk its lists.
  template <typename Fn>
  void ForEachClient(Fn&& fn) const {
    active_clients_.ForEach(fn);
    waiting_clients_.ForEach(fn);
    login_waiting_clients_.ForEach(fn);
  }
  template <typename Fn>
  void ForEachServer(Fn&& fn) const {
    active_servers_.ForEach(fn);
    idle_servers_.ForEach(fn);
    used_servers_.ForEach(fn);
    login_servers_.ForEach(fn);
  }
  size_t server_count() const;
  size_t client_count() const;
  // Age in microseconds of the oldest queued client (SHOW POOLS maxwait), 0 if none.
  uint64_t MaxWaitMicros(uint64_t now_us) const;

  PoolStats& stats() { return stats_; }
  const PoolStats& stats() const { return stats_; }
  uint64_t generation() const { return generation_; }
  Agent& agent() { return agent_; }

 private:
  friend class ServerConn;
  friend class ClientConn;
  friend struct ConnMover;
  void Link(ClientConn* client, ServerConn* server);
  // Ends the link between `client` and `server` on both sides; the client goes back to idle.
  void Unlink(ClientConn* client, ServerConn* server);
  void MaybeLaunchServers();
  // The idle server the next client or query gets (server_round_robin decides which end).
  // The idle list must not be empty.
  ServerConn* NextIdleServer() const;
  bool CanLaunchServer(bool use_reserve) const;
  // What keeps a new server connection from starting, if anything.
  enum class Blocker { kNone, kPoolSize, kDbLimit, kUserLimit };
  Blocker LaunchBlocker(bool use_reserve) const;
  // Closes the least recently used idle server of another pool under the same database
  // (kDbLimit) or user (kUserLimit) limit; false if there is none.
  bool EvictIdleServer(Blocker blocker);
  void LaunchServer();
  void WelcomeWaitingLogins();
  void FailQueuedQueries(const std::string& reason);
  // Whether a released server runs server_reset_query before going back to idle.
  bool NeedsResetQuery() const;
  // Runs DEALLOCATE ALL when SQL touched the agent's shared statements, then
  // server_reset_query when the mode asks for it; the server goes idle after the last one.
  void RunResetQueries(ServerConn* server);

  Agent& agent_;
  config::DatabaseConfig db_;
  std::string user_;
  uint64_t generation_ = 1;  // Bumped when connection parameters change.

  IntrusiveList<ClientConn> login_waiting_clients_;  // Authenticated, waiting for welcome.
  IntrusiveList<ClientConn> active_clients_;         // Logged in; linked or not.
  IntrusiveList<ClientConn> waiting_clients_;        // Queued for a server (FIFO).
  IntrusiveList<ServerConn> login_servers_;
  IntrusiveList<ServerConn> idle_servers_;
  IntrusiveList<ServerConn> active_servers_;  // Linked to a client.
  IntrusiveList<ServerConn> used_servers_;    // Running a reset/check query.
  std::deque<ServerQuery*> queued_queries_;   // Waiting for a server (FIFO).

  ParamList welcome_params_;
  bool has_welcome_ = false;
  std::optional<crypto::ScramKeys> scram_keys_;
  uint64_t last_login_failure_us_ = 0;
  // PgBouncer's rrcounter: where the host list's rotation stands (agent/host_list.h).
  size_t host_cursor_ = 0;
  // Hosts of the list whose servers failed this database's target_session_attrs: skipped by
  // this pool alone (the agent-wide HostHealth is for hosts that are down).
  HostHealth mismatched_hosts_;
  uint64_t unused_since_us_ = 0;  // 0: in use when the janitor last looked.
  uint64_t empty_since_us_ = 0;   // 0: not empty when the janitor last looked.
  bool retiring_ = false;
  bool evicting_ = false;  // One of its servers is being evicted for another pool.
  std::string last_login_error_;
  PoolStats stats_;
};

}  // namespace pgfleet::agent
