// The admin console: the virtual database "pgbouncer", spoken over the simple query
// protocol so psql and any driver work. Commands are a table (PgBouncer's admin.c cmd_list),
// and SHOW output matches PgBouncer 1.25's columns so existing tools read it unchanged.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"

namespace pgfleet::agent {

class Agent;
class ClientConn;

class AdminConsole {
 public:
  explicit AdminConsole(Agent& agent) : agent_(agent) {}

  // Runs one simple-protocol query from `client`. Answers at once, or later for commands
  // that wait (PAUSE, WAIT_CLOSE, SHUTDOWN WAIT_FOR_*): the client reads nothing meanwhile.
  void HandleQuery(ClientConn* client, std::string_view sql);
  // Re-checks waiting commands; cheap when none wait. Called when servers are released or
  // closed, and by the janitor.
  void CheckPending();
  // Ends every PAUSE still draining for `db` ("" = all) with `message` (RESUME, KILL...).
  void CancelPendingPauses(const std::string& db, const std::string& message);
  void OnClientClosed(ClientConn* client);
  bool has_pending() const { return !pending_.empty(); }

 private:
  struct Pending {
    enum class Kind { kPause, kWaitClose };
    Kind kind;
    ClientConn* client;
    std::string db;  // Empty: all databases.
    std::string tag;
  };
  using Args = std::vector<std::string>;

  // SHOW commands (show_commands.cc). Each returns the whole response minus ReadyForQuery.
  std::string Show(const std::string& what, ClientConn* client);
  std::string ShowHelp();
  std::string ShowPools();
  std::string ShowDatabases();
  // Which SHOW lists connections (show_connections.cc).
  enum class ConnectionList { kClients, kServers, kSockets, kActiveSockets };
  std::string ShowConnections(ConnectionList list);
  std::string ShowStats(bool totals, bool averages);
  std::string ShowTotals();
  std::string ShowLists();
  std::string ShowUsers();
  std::string ShowConfig();
  std::string ShowMem();
  std::string ShowFds();
  std::string ShowVersion();
  std::string ShowState();
  std::string ShowPeers();
  std::string ShowPeerPools();
  std::string ShowDnsHosts();
  std::string ShowDnsZones();

  // Control commands (console.cc). Return the CommandComplete tag, or an error; a command
  // that will finish later returns the empty string after registering a Pending.
  absl::Status RunCommand(ClientConn* client, const std::string& verb, const Args& args,
                          std::string* reply);
  absl::Status Pause(ClientConn* client, const Args& args, std::string* reply);
  absl::Status Resume(const Args& args, std::string* reply);
  absl::Status Set(const std::string& sql, std::string* reply);
  bool PendingDone(const Pending& pending) const;
  void Finish(ClientConn* client, const std::string& response);

  Agent& agent_;
  std::vector<Pending> pending_;
  // A NoticeResponse the command being run sends before its CommandComplete (RELOAD's
  // "restart pending: ..."); taken by HandleQuery.
  std::string reply_notice_;
};

}  // namespace pgfleet::agent
