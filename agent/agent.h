// The agent process: config, listeners, pools, the janitor and shutdown. Everything here
// runs on the loop thread; other threads reach it through loop().Post().
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "agent/config/auth_file.h"
#include "agent/config/config.h"
#include "agent/event_loop.h"
#include "agent/intrusive_list.h"
#include "agent/pg/auth_crypto.h"
#include "agent/pool.h"

struct evconnlistener;
struct event;
struct sockaddr;

namespace pgfleet::agent {

class ClientConn;
class ServerConn;

struct AgentOptions {
  std::string config_path;
  absl::Duration shutdown_timeout = absl::Seconds(30);
};

class Agent {
 public:
  static absl::StatusOr<std::unique_ptr<Agent>> Create(AgentOptions options);
  ~Agent();

  // Listens and runs the loop until shutdown. Returns the process exit code.
  int Run();

  EventLoop& loop() { return *loop_; }
  const config::Config& config() const { return *config_; }
  std::shared_ptr<const config::Config> config_ptr() const { return config_; }
  const config::AuthFile& auth_file() const { return auth_file_; }

  // Re-reads the config and auth_file. On error nothing changes and the error says why.
  absl::Status Reload();
  // Stops accepting, waits for transactions in flight (up to the shutdown timeout), exits.
  void BeginShutdown(const std::string& why);
  bool shutting_down() const { return shutting_down_; }

  // PAUSE state: paused pools hand out no server connections (clients queue instead).
  bool IsPaused(const std::string& db) const {
    return pause_all_ || paused_dbs_.contains(db);
  }

  // The pool for (db, user), created on first use; nullptr if the database is unknown.
  Pool* GetPool(const std::string& database, const std::string& user);
  const std::map<std::pair<std::string, std::string>, std::unique_ptr<Pool>>& pools() const {
    return pools_;
  }

  // Connection bookkeeping.
  uint64_t NextConnId() { return ++last_conn_id_; }
  void RegisterCancelKey(ClientConn* client);
  void UnregisterCancelKey(ClientConn* client);
  void HandleCancelRequest(int32_t pid, int32_t key);
  IntrusiveList<ClientConn>& login_clients() { return login_clients_; }
  size_t client_count() const { return client_count_; }
  void OnClientClosed(ClientConn* client);
  // Frees the object once the current callback has returned (PgBouncer's JUSTFREE).
  void DeferDelete(ClientConn* client);
  void DeferDelete(ServerConn* server);
  // Number of server connections to `db` across all users (max_db_connections), and of
  // `user` across all databases (max_user_connections).
  int ServerCountForDb(const std::string& db) const;
  int ServerCountForUser(const std::string& user) const;

  // SCRAM keys derived from a plaintext auth_file password, cached per user so a new
  // connection does not pay for PBKDF2 each time.
  const pg::ScramKeys& ScramKeysForPlainPassword(const std::string& user,
                                                 const std::string& password);

 private:
  explicit Agent(AgentOptions options);
  absl::Status Listen();
  void CloseListeners();
  static void OnAccept(evconnlistener* listener, int fd, ::sockaddr* addr, int socklen,
                       void* arg);
  static void OnSignal(int signal, short what, void* arg);
  void Janitor();
  void RunDeferredDeletes();
  void MaybeFinishShutdown();

  AgentOptions options_;
  std::unique_ptr<EventLoop> loop_;
  std::shared_ptr<const config::Config> config_;
  config::AuthFile auth_file_;
  std::vector<evconnlistener*> listeners_;
  std::vector<event*> signal_events_;
  std::unique_ptr<Timer> janitor_timer_;
  std::unique_ptr<Timer> shutdown_timer_;
  event* deferred_delete_event_ = nullptr;
  std::vector<ClientConn*> deferred_clients_;
  std::vector<ServerConn*> deferred_servers_;

  std::map<std::pair<std::string, std::string>, std::unique_ptr<Pool>> pools_;
  IntrusiveList<ClientConn> login_clients_;
  absl::flat_hash_map<uint64_t, ClientConn*> cancel_keys_;
  struct CachedScram {
    std::string password;
    pg::ScramKeys keys;
  };
  absl::flat_hash_map<std::string, CachedScram> scram_cache_;
  bool pause_all_ = false;
  absl::flat_hash_set<std::string> paused_dbs_;
  size_t client_count_ = 0;
  uint64_t last_conn_id_ = 0;
  bool shutting_down_ = false;
  int exit_code_ = 0;
};

}  // namespace pgfleet::agent
