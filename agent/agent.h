// The agent process: config, listeners, pools, the janitor and shutdown. Everything here
// runs on the loop thread; other threads reach it through loop().Post().
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "agent/admin/console.h"
#include "agent/agent_control.h"
#include "agent/auth_failure_limiter.h"
#include "agent/auth_query.h"
#include "agent/cancel_forwarder.h"
#include "agent/event_loop.h"
#include "agent/handover.h"
#include "agent/host_list.h"
#include "agent/intrusive_list.h"
#include "agent/path_policy.h"
#include "agent/pool.h"
#include "agent/ready_queue.h"
#include "agent/stats.h"
#include "agent/stats_snapshot.h"
#include "agent/tls/tls_context.h"
#include "common/auth_crypto.h"
#include "common/config/auth_file.h"
#include "common/config/config.h"
#include "common/config/hba.h"

struct evconnlistener;
struct event;
struct sockaddr;

namespace pgfleet::agent {

class ClientConn;
class ServerConn;
class MetricsServer;

struct AgentOptions {
  std::string config_path;
  absl::Duration shutdown_timeout = absl::Seconds(30);
  // Prometheus /metrics and /healthz; empty: off.
  std::string metrics_listen;
  // Where files named at run time (the console's SET logfile) may be: the config's directory,
  // --allow-path, and with a controller the state dir (main.cc builds it). Empty: nowhere.
  PathPolicy path_policy;
  // --local-listeners: listen_addr, listen_port and unix_socket_dir always come from this file
  // (the local config), whatever a pushed config says. Empty: from the config in force.
  std::string local_listeners_file;
  // The file pushed configs are applied to (under the state dir): whenever the agent reads
  // its config from there, it holds that config's files to `path_policy`. Empty: standalone.
  std::string pushed_config_path;
  // A process started by a hand-over (agent/handover.h) adopts these listening sockets where
  // its config listens on the same address, instead of binding (the agent owns them from
  // Create on; those it does not use are closed).
  std::vector<int> inherited_listeners;
  int inherited_metrics_fd = -1;
  // Paused and disabled databases of the process handing over, applied before accepting.
  CarriedState inherited_state;
  // The process handing over: its pid in the pidfile is not "another agent running".
  pid_t handover_parent_pid = 0;
  // After a hand-over, how long the old process's clients may go on; then each is closed at
  // its next transaction boundary (idle ones at once). --handover-drain-timeout; unset: the
  // config's handover_drain_timeout (which a RELOAD changes).
  std::optional<absl::Duration> handover_drain_timeout;
  // -v/--verbose. As PgBouncer's cf_verbose (a key with no default): the file's `verbose`,
  // when it sets one, wins at start and at each RELOAD; when it sets none the level in force
  // stays, so -v outlives RELOAD and SIGHUP.
  bool verbose_from_command_line = false;
};

// PgBouncer's tune_socket for a TCP socket (client or server): tcp_socket_buffer,
// tcp_user_timeout, SO_KEEPALIVE and tcp_keepcnt/keepidle/keepintvl from the config.
void ApplyKeepalive(int fd, const config::Config& cfg);
// auth_hba_file's rules (with auth_ident_file's maps) under auth_type = hba, else nullptr.
// Errors name the ini line that set auth_hba_file, then the hba file's own line. `confine`:
// @file includes outside that policy are refused before they are opened (a pushed config).
absl::StatusOr<std::shared_ptr<const config::HbaFile>> LoadHbaFor(
    const config::Config& cfg, const PathPolicy* confine = nullptr);

// The pooler. The controller link is no part of it: agent/main.cc attaches one through
// AgentControl (what the link may do) and the two hooks below (what the pooler shows of it).
class Agent final : public AgentControl {
 public:
  static absl::StatusOr<std::unique_ptr<Agent>> Create(AgentOptions options);
  ~Agent() override;

  // Listens and runs the loop until shutdown. Returns the process exit code.
  int Run();

  EventLoop& loop() override { return *loop_; }
  const config::Config& config() const { return *config_; }
  std::shared_ptr<const config::Config> config_ptr() const { return config_; }
  const config::AuthFile& auth_file() const { return auth_file_; }
  // auth_hba_file's rules under auth_type = hba; nullptr otherwise, or when a SET made the
  // agent use a file that did not load (every login is then refused, and the SET said why).
  const config::HbaFile* hba() const { return hba_.get(); }
  // Secrets of users not in auth_file, as auth_query last answered (auth_query.h).
  AuthQueryCache& auth_query_cache() { return auth_query_cache_; }
  // nullptr when TLS towards clients / servers is disabled. Connections hold their own
  // session, so a RELOAD that replaces these leaves established TLS connections alone.
  const TlsContext* client_tls() const { return client_tls_.get(); }
  const TlsContext* server_tls() const { return server_tls_.get(); }

  const std::string& config_path() const { return options_.config_path; }
  // The file RELOAD reads; the fleet link points it at the config the controller pushed.
  void set_config_path(std::string path) { options_.config_path = std::move(path); }
  // Scopes currently paused: "" for all databases, then database names.
  std::vector<std::string> PausedScopes() const;
  // Server connections of `db` ("" = all) still open (a pause waits for these).
  int ServersInUse(const std::string& db) const;

  // Re-reads the config and auth_file. On error nothing changes and the error says why.
  absl::Status Reload() override;
  absl::Status ReloadFrom(const std::string& path) override;
  // Stops accepting, waits for transactions in flight (up to the shutdown timeout), exits.
  void BeginShutdown(const std::string& why);

  // Zero-downtime restart (agent/handover.h): starts the binary now at this executable's path
  // with the same arguments, hands it the listeners, the metrics socket and the state dir
  // lock, and once it says it is ready stops accepting, hands the pidfile and the controller
  // stream over, and drains (handover_drain_timeout) before exiting. `done` runs on the loop
  // with the new pid, or the reason it failed (this process then goes on serving as before).
  void BeginHandover(uint64_t command_id, HandoverDone done) override;
  // The same, to a process started with -R that waits for this one's listeners (SIGUSR2 with
  // a TakeoverRequest): nothing is forked, and a refusal is told to that process too.
  void BeginHandover(uint64_t command_id, HandoverDone done,
                     std::optional<TakeoverRequest> requester);
  bool handing_over() const { return handover_ != nullptr; }
  bool handed_over() const { return handed_over_; }
  // After a hand-over, once the drain bound has passed: a client at a transaction boundary is
  // closed there (its next query gets the error; the janitor closes idle ones).
  bool handover_drain_bound_passed() const { return handover_drain_bound_passed_; }
  // The 57P01 message such a client gets.
  std::string HandoverCloseMessage() const;
  // What the controller link adds to a hand-over (main.cc wires them; all optional).
  struct HandoverHooks {
    std::function<int()> state_lock_fd;    // -1: none.
    std::function<void(bool)> hold_link;   // true: no reconnect while the new one starts.
    std::function<void()> on_handed_over;  // The new process serves: stop the link.
  };
  void set_handover_hooks(HandoverHooks hooks) { handover_hooks_ = std::move(hooks); }
  // Why Run() returned 1 before serving (OK otherwise).
  const absl::Status& start_error() const { return start_error_; }
  bool shutting_down() const { return shutting_down_; }

  // PAUSE state: paused pools hand out no server connections (clients queue instead) and
  // close the ones they get back. `db` empty means every database.
  // Asked several times per transaction: no hashing while nothing is paused.
  bool IsPaused(const std::string& db) const {
    return pause_all_ || (!paused_dbs_.empty() && paused_dbs_.contains(db));
  }
  bool IsPausedExactly(const std::string& db) const {
    return db.empty() ? pause_all_ : paused_dbs_.contains(db);
  }
  // Starts a pause; with a deadline the agent resumes by itself when it passes, even if
  // whoever paused it is gone. FailedPrecondition if already paused.
  absl::Status Pause(const std::string& db, std::optional<absl::Duration> deadline) override;
  absl::Status Resume(const std::string& db) override;
  // True once no server connection of `db` ("" = all) remains open.
  bool IsDrained(const std::string& db) const;
  // When a pause with a deadline auto-resumes, as seconds left; nullopt without one.
  std::optional<absl::Time> PauseDeadline(const std::string& db) const;

  // SUSPEND: stop reading from every socket and accepting new ones, until RESUME.
  void Suspend();
  bool suspended() const { return suspended_; }
  // DISABLE/ENABLE db: new logins to a disabled database are refused.
  bool IsDisabled(const std::string& db) const { return disabled_dbs_.contains(db); }
  void SetDisabled(const std::string& db, bool disabled);
  // KILL db: drops every client and server connection of db and leaves it paused.
  void Kill(const std::string& db);
  bool KillClient(uint64_t id);
  // RECONNECT: servers are closed as they are released ("" = all databases).
  void Reconnect(const std::string& db);
  // After a SET or RELOAD changed the server TLS settings: every pool's servers are replaced as
  // they are released, and the next login is tried at once, under the new settings, even within
  // server_login_retry of a login that failed under the old ones.
  void ReconnectForNewServerTls();
  // True once servers older than the last RECONNECT/RELOAD are gone (WAIT_CLOSE).
  bool OldServersClosed(const std::string& db) const;
  enum class ShutdownMode { kImmediate, kWaitForServers, kWaitForClients };
  void Shutdown(ShutdownMode mode, const std::string& who);
  // The config a console SET starts from: the running one, plus TLS keys set earlier that do
  // not form a working set yet (setting them one at a time passes through such states).
  config::Config ConfigForSet() const;
  // Replaces the config (SET from the console); the caller validated it. A side whose TLS
  // keys changed gets a new TLS context, and servers made under old server TLS settings close
  // once released. When the TLS keys set so far cannot build a context (a new key before its
  // certificate), they are kept for the next SET and the running TLS settings stay in force:
  // the result says why (a NOTICE for the console), empty otherwise.
  std::string ReplaceConfig(config::Config config);
  // A file the console's SET would make the agent write (logfile): it must be where a pushed
  // config's files may be (the config's directory, the state dir, --allow-path) and not a
  // file the agent depends on. The error names `key`.
  absl::Status CheckWritablePath(const std::string& key, const std::string& path) const;
  // The policy a config read from `path` is held to: the path policy for the pushed config,
  // nullptr for the operator's own file (read as PgBouncer would).
  const PathPolicy* ConfinementFor(const std::string& path) const {
    return !options_.pushed_config_path.empty() && path == options_.pushed_config_path
               ? &path_policy_
               : nullptr;
  }
  AdminConsole& admin() { return *admin_; }
  // The control plane's state for /metrics, from whoever attached a link (main.cc).
  void set_control_plane_status(std::function<ControlPlaneStatus()> status) {
    control_plane_status_ = std::move(status);
  }
  ControlPlaneStatus control_plane_status() const {
    return control_plane_status_ ? control_plane_status_() : ControlPlaneStatus{};
  }
  // Runs on the loop thread once Run() listens, wrote the pidfile and took its signals, before
  // the loop starts (the link starts here, -u drops privileges here, READY=1 is sent here); an
  // error ends Run() with exit code 1.
  void set_on_started(std::function<absl::Status()> on_started) {
    on_started_ = std::move(on_started);
  }
  // Where the agent reports to a service manager (main.cc: sd_notify): RELOADING=1 and READY=1
  // around every reload (SIGHUP, the console's RELOAD, a pushed config), STOPPING=1 when a
  // shutdown begins. Unset: nothing is reported.
  void set_service_notifier(std::function<void(const std::string& state)> notifier) {
    service_notifier_ = std::move(notifier);
  }
  // One line for the service manager's STATUS=: listeners, clients, pools.
  std::string ServiceStatus() const;
  StatsSnapshot Snapshot() const override;
  int listen_port() const override { return listen_port_.load(std::memory_order_relaxed); }
  // True if `client` is still an open admin connection with that id (for posted callbacks).
  bool IsLiveAdminClient(const ClientConn* client, uint64_t id) const;
  IntrusiveList<ClientConn>& admin_clients() { return admin_clients_; }
  const IntrusiveList<ClientConn>& admin_clients() const { return admin_clients_; }
  const IntrusiveList<ClientConn>& login_clients_view() const { return login_clients_; }
  uint64_t start_time_us() const { return start_time_us_; }
  // Totals per database (summed over its pools), for SHOW STATS and metrics.
  std::map<std::string, PoolStats> StatsByDatabase() const;
  const StatsHistory& stats_history() const { return stats_history_; }
  // Failed logins per source address (slows password guessing down; see the header).
  AuthFailureLimiter& auth_failures() { return auth_failures_; }
  const AuthFailureLimiter& auth_failures() const { return auth_failures_; }
  // One listening socket: TCP "HOST:PORT" ("[V6]:PORT") or a unix socket path.
  struct Listener {
    std::string address;
    evconnlistener* listener = nullptr;
    bool is_unix = false;
  };
  const std::vector<Listener>& listeners() const { return listeners_; }
  struct ListenSpec;  // Where one listener of a config binds (agent_listeners.cc).
  // Keys of the config file whose new value waits for a restart (config/restart_keys.h), as
  // the last reload left them; empty when the agent runs its file as written. Any thread.
  std::vector<std::string> restart_pending() const override;

  // The pool for (db, user), created on first use; nullptr if the database is unknown.
  // Only for authenticated clients: a pool outlives the connection that created it.
  Pool* GetPool(const std::string& database, const std::string& user);
  // The existing pool for (db, user), or nullptr; never creates one.
  Pool* FindPool(const std::string& database, const std::string& user);
  // Whose pool a client of `database` logging in as `client_user` joins: PgBouncer keeps one
  // pool per database and server user, so every client of a database that forces its user
  // shares that user's pool (its pool_size, min_pool_size and servers).
  std::string PoolUserFor(const std::string& database, const std::string& client_user) const;
  const std::map<std::pair<std::string, std::string>, std::unique_ptr<Pool>>& pools() const {
    return pools_;
  }

  // Connection bookkeeping.
  uint64_t NextConnId() { return ++last_conn_id_; }
  void RegisterCancelKey(ClientConn* client);
  void UnregisterCancelKey(ClientConn* client);
  void HandleCancelRequest(int32_t pid, int32_t key);
  // Cancel requests forwarded to a server and not finished yet. A server released while one
  // is in flight is held (Pool::ReleaseServer) until they all have: until PostgreSQL has
  // closed the cancel connection the signal may still hit whatever the backend runs next.
  bool CancelInFlight(const ServerConn* server) const;
  void HoldUntilCancelled(ServerConn* server);
  // Servers of `pool` released by their client but held out of the pool until the cancel
  // requests sent to them have landed (SHOW POOLS sv_being_canceled).
  int ServersBeingCanceled(const Pool& pool) const;
  // Cancel requests for `pool`'s servers on their way to PostgreSQL, each on a connection of
  // its own (SHOW POOLS sv_active_cancel).
  int CancelsInFlight(const Pool& pool) const;
  // The server is closing: its cancels' outcome no longer matters.
  void ForgetCancelTarget(const ServerConn* server);
  IntrusiveList<ClientConn>& login_clients() { return login_clients_; }
  // Clients whose input the loop handles next (agent/ready_queue.h).
  ReadyQueue& ready_clients();
  size_t client_count() const { return client_count_; }
  void OnClientClosed(ClientConn* client);
  // Frees the object once the current callback has returned (PgBouncer's JUSTFREE).
  void DeferDelete(ClientConn* client);
  void DeferDelete(ServerConn* server);
  // Number of server connections to `db` across all users (max_db_connections), and of
  // `user` across all databases (max_user_connections).
  int ServerCountForDb(const std::string& db) const;
  int ServerCountForUser(const std::string& user) const;

  // What a PostgreSQL server allows, learnt by the first server connection to log in to it
  // (and again every few minutes): the controller checks rollouts' connection budgets
  // against it. Keyed by config::ServerAddress.
  struct ServerLimits {
    int max_connections = 0;
    int superuser_reserved_connections = 0;
    uint64_t learnt_us = 0;
  };
  bool ServerLimitsStale(const std::string& address, uint64_t now_us) const;
  void NoteServerLimits(const std::string& address, ServerLimits limits) {
    server_limits_[address] = limits;
  }
  const std::map<std::string, ServerLimits>& server_limits() const { return server_limits_; }

  // Hosts of multi-host databases left out after a failed login (agent/host_list.h).
  HostHealth& host_health() { return host_health_; }

  // Rotation overlaps (see CredentialOverlap). Loop thread.
  absl::Status SetCredentialOverlaps(const std::vector<CredentialOverlap>& overlaps) override;
  // The previous secret of `user` while its overlap is open, else nullptr. An overlap past its
  // expiry is dropped here, at login time, whether or not a controller is there to close it.
  const config::UserSecret* PreviousSecret(const std::string& user);
  // Open overlaps' expiry by user (SHOW USERS); never the secrets. Expired ones are left out.
  std::map<std::string, absl::Time> OverlapExpiries() const;
  // SCRAM keys for a plaintext password of `user` (during a rotation overlap: the previous one,
  // or the current one when the previous is a verifier) with the salt and iteration count of
  // `shown` (the keys the exchange shows the client), cached like ScramKeysForPlainPassword.
  // Only one of the two needs deriving per user, so one cache entry per user is enough.
  const crypto::ScramKeys& ScramKeysWithSalt(const std::string& user, const std::string& password,
                                             const crypto::ScramKeys& shown);

  // SCRAM keys derived from a plaintext auth_file password, cached per user so a new
  // connection does not pay for PBKDF2 each time. The salt is the user's mock salt, so it is
  // the same on every attempt (and after the cache is cleared), as for a user not in auth_file.
  const crypto::ScramKeys& ScramKeysForPlainPassword(const std::string& user,
                                                     const std::string& password);
  // Keys that show `user` the same salt and iteration count on every attempt and match no
  // password: for users not in auth_file and md5 entries, so SCRAM does not reveal who exists.
  crypto::ScramKeys ScramMockKeysFor(const std::string& user) const {
    crypto::ScramKeys keys = crypto::ScramMockKeys(mock_auth_secret_, user);
    // The same count as a real user's plain-text password gets, so it gives nobody away.
    keys.iterations = config_->scram_iterations;
    return keys;
  }

 private:
  explicit Agent(AgentOptions options);
  // Makes the listeners those of `cfg`: binds the new ones first and, if any cannot bind,
  // releases them and fails naming the address, the current ones untouched; otherwise closes
  // the current ones `cfg` no longer names (taking the connections already queued on them
  // first). Listeners in both stay open. `at_start`: a unix socket file left behind is
  // replaced without asking whether a process still serves it (as PgBouncer at start).
  absl::Status ApplyListeners(const config::Config& cfg, bool at_start);
  absl::StatusOr<evconnlistener*> BindListener(const ListenSpec& spec, bool at_start);
  // Accepts what is queued on `listener` (clients the kernel has connected), then frees it.
  void CloseListener(const Listener& listener, bool remove_socket_file);
  // A listening socket the previous process handed over bound to `spec`'s address (null: none).
  evconnlistener* AdoptInheritedListener(const ListenSpec& spec);
  void OnHandoverOutcome(absl::StatusOr<pid_t> outcome, const HandoverDone& done);
  // After the drain bound: clients not inside a transaction are closed (run by the janitor).
  void CloseClientsAtTransactionBoundary();
  // Writes the pidfile (if the config names one); an error names the key and why.
  absl::Status WritePidfile();
  void CloseListeners();
  static void OnAccept(evconnlistener* listener, int fd, ::sockaddr* addr, int socklen, void* arg);
  static void OnSignal(int signal, short what, void* arg);
  void Janitor();
  // How long an unused pool of (db, user) is kept: nullopt for pools the config names (an
  // explicit [databases] entry and a user in auth_file or [users]), which are kept.
  std::optional<absl::Duration> PoolReclaimDelay(const std::string& db,
                                                 const std::string& user) const;
  // Drops pools that have been unused for longer than their PoolReclaimDelay.
  void ReclaimUnusedPools(uint64_t now_us);
  void RunDeferredDeletes();
  void MaybeFinishShutdown();
  // Closes every connection, then stops the loop.
  void StopLoop();
  void RequestShutdownCheck();

  AgentOptions options_;
  std::unique_ptr<EventLoop> loop_;
  std::shared_ptr<const config::Config> config_;
  config::AuthFile auth_file_;
  std::shared_ptr<const config::HbaFile> hba_;
  AuthQueryCache auth_query_cache_;
  std::shared_ptr<const TlsContext> client_tls_;
  std::shared_ptr<const TlsContext> server_tls_;
  // TLS keys SET but not in force yet (see ConfigForSet); cleared by a SET that builds and by
  // RELOAD (the file is the truth again).
  std::optional<config::Config> tls_staged_;
  std::vector<Listener> listeners_;
  // The local file's listener keys, with --local-listeners.
  std::optional<config::Config> local_listeners_;
  // Puts local_listeners_'s listener keys into `cfg` (nothing without --local-listeners).
  void PinListeners(config::Config& cfg) const;
  // Reload() without the service manager's RELOADING=1/READY=1 around it.
  absl::Status ReloadConfig();
  mutable absl::Mutex restart_pending_mu_;
  std::vector<std::string> restart_pending_ ABSL_GUARDED_BY(restart_pending_mu_);
  std::vector<event*> signal_events_;
  std::unique_ptr<Timer> janitor_timer_;
  std::unique_ptr<Timer> shutdown_timer_;
  event* deferred_delete_event_ = nullptr;
  std::unique_ptr<ReadyQueue> ready_clients_;  // After loop_: freed while its base exists.
  std::vector<ClientConn*> deferred_clients_;
  std::vector<ServerConn*> deferred_servers_;

  std::map<std::pair<std::string, std::string>, std::unique_ptr<Pool>> pools_;
  // What reclaimed pools of configured databases had counted, per database.
  std::map<std::string, PoolStats> reclaimed_stats_;
  IntrusiveList<ClientConn> login_clients_;
  absl::flat_hash_map<uint64_t, ClientConn*> cancel_keys_;
  void OnCancelForwarded(CancelForwarder* forwarder, CancelForwarder::Outcome outcome);
  struct CancelTarget {
    ServerConn* server = nullptr;
    int in_flight = 0;
    bool held = false;       // Released by its client, kept out of the pool until the cancels end.
    bool uncertain = false;  // A cancel may still land: close the server instead of reusing it.
  };
  absl::flat_hash_map<uint64_t, CancelTarget> cancel_targets_;  // By server id.
  // Declared after loop_, so destroyed (bufferevents freed) while the event base still exists.
  absl::flat_hash_map<CancelForwarder*, std::unique_ptr<CancelForwarder>> cancel_forwarders_;
  // Per-process secret behind the mock SCRAM salts (PostgreSQL's mock authentication nonce).
  const std::string mock_auth_secret_ = crypto::RandomBytes(32);
  struct CachedScram {
    std::string password;
    crypto::ScramKeys keys;
  };
  absl::flat_hash_map<std::string, CachedScram> scram_cache_;
  struct OpenOverlap {
    config::UserSecret previous;
    absl::Time expires;
  };
  absl::flat_hash_map<std::string, OpenOverlap> overlaps_;
  absl::flat_hash_map<std::string, CachedScram> previous_scram_cache_;
  std::map<std::string, ServerLimits> server_limits_;
  HostHealth host_health_;
  // Resume without the hand-over check: a PAUSE ... FOR ends on time whatever happens (the
  // new process got the time left and ends its copy by itself too).
  absl::Status ResumeNow(const std::string& db);
  void ApplyPauseToPools(const std::string& db);
  void RetireTimer(std::unique_ptr<Timer> timer);
  bool pause_all_ = false;
  absl::flat_hash_set<std::string> paused_dbs_;
  absl::flat_hash_map<std::string, std::unique_ptr<Timer>> pause_timers_;
  absl::flat_hash_map<std::string, absl::Time> pause_deadlines_;
  std::vector<std::unique_ptr<Timer>> retired_timers_;
  absl::flat_hash_set<std::string> disabled_dbs_;
  bool suspended_ = false;
  bool wait_for_clients_ = false;
  bool shutdown_check_pending_ = false;
  std::unique_ptr<AdminConsole> admin_;
  std::unique_ptr<MetricsServer> metrics_server_;
  std::function<ControlPlaneStatus()> control_plane_status_;
  std::function<absl::Status()> on_started_;
  std::function<void(const std::string&)> service_notifier_;
  // config_->listen_port, for other threads (the link's hello) that must not read config_.
  std::atomic<int> listen_port_{0};
  void SetConfig(std::shared_ptr<const config::Config> config);
  // Where files named at run time (SET logfile) may be; the same policy as pushed configs.
  PathPolicy path_policy_;
  // The pidfile this process wrote (removed at exit); empty if it wrote none, so an agent
  // that fails to start never removes the pidfile of one that runs.
  std::string written_pidfile_;
  IntrusiveList<ClientConn> admin_clients_;
  uint64_t start_time_us_ = 0;
  StatsHistory stats_history_;
  AuthFailureLimiter auth_failures_;
  std::unique_ptr<Timer> stats_timer_;
  size_t client_count_ = 0;
  uint64_t last_conn_id_ = 0;
  bool shutting_down_ = false;
  int exit_code_ = 0;
  absl::Status start_error_;
  std::unique_ptr<HandoverParent> handover_;
  HandoverHooks handover_hooks_;
  bool handed_over_ = false;
  bool handover_drain_bound_passed_ = false;
  absl::Duration handover_drain_bound_;
  pid_t handover_successor_pid_ = 0;
  std::unique_ptr<Timer> handover_drain_timer_;
};

}  // namespace pgfleet::agent
