// SHOW CLIENTS, SERVERS, SOCKETS and ACTIVE_SOCKETS: PgBouncer 1.25's columns and types
// (src/admin.c socket_header: int4 numbers, text times): replication after database,
// prepared_statements and id after application_name, then SOCKETS' buffer columns.
#include <string>
#include <vector>

#include "agent/admin/console.h"
#include "agent/admin/result_set.h"
#include "agent/agent.h"
#include "agent/client_conn.h"
#include "agent/pool.h"
#include "agent/server_conn.h"
#include "agent/tls/tls_context.h"

namespace pgfleet::agent {
namespace {

using show::Column;
using show::kBytea;
using show::kInt4;
using show::kInt8;
using show::kNumeric;
using show::kText;
using show::Num;
using show::ParamOf;
using show::Ptr;
using show::ResultSet;
using show::SplitPeer;
using show::WallTime;

// SHOW CLIENTS/SERVERS' tls column: "TLSv1.3/TLS_AES_256_GCM_SHA384", and for plain text the
// empty string PgBouncer sends (not NULL).
template <typename TlsHandle>
std::string TlsColumn(TlsHandle* handle) {
  return DescribeTls(handle);
}

const char* ServerStateName(ServerConn::State state) {
  switch (state) {
    case ServerConn::State::kLogin:
      return "new";
    case ServerConn::State::kIdle:
      return "idle";
    case ServerConn::State::kActive:
      return "active";
    case ServerConn::State::kUsed:
      return "used";
    case ServerConn::State::kClosed:
      return "closed";
  }
  return "?";
}

const char* ClientStateName(ClientConn::State state) {
  switch (state) {
    case ClientConn::State::kStartup:
    case ClientConn::State::kAuth:
      return "login";
    case ClientConn::State::kLoginWaiting:
    case ClientConn::State::kWaiting:
      return "waiting";
    case ClientConn::State::kIdle:
    case ClientConn::State::kActive:
    case ClientConn::State::kAdmin:
      return "active";
    case ClientConn::State::kClosed:
      return "closed";
  }
  return "?";
}

}  // namespace

std::string AdminConsole::ShowConnections(bool clients, bool servers, bool socket_columns) {
  std::vector<Column> columns = {{"type", kText},
                                 {"user", kText},
                                 {"database", kText},
                                 {"replication", kText},
                                 {"state", kText},
                                 {"addr", kText},
                                 {"port", kInt4},
                                 {"local_addr", kText},
                                 {"local_port", kInt4},
                                 {"connect_time", kText},
                                 {"request_time", kText},
                                 {"wait", kInt4},
                                 {"wait_us", kInt4},
                                 {"close_needed", kInt4},
                                 {"ptr", kText},
                                 {"link", kText},
                                 {"remote_pid", kInt4},
                                 {"tls", kText},
                                 {"application_name", kText},
                                 {"prepared_statements", kInt4},
                                 {"id", kInt4}};
  if (socket_columns) {
    for (const char* name : {"recv_pos", "pkt_pos", "pkt_remain", "send_pos", "send_remain",
                             "pkt_avail", "send_avail"}) {
      columns.push_back({name, kInt4});
    }
  }
  ResultSet result(columns);
  const uint64_t now = MonotonicMicros();
  const std::string listen_addr = agent_.config().listen_addr;
  const std::string listen_port = Num(agent_.config().listen_port);
  auto add_client = [&](const ClientConn* client) {
    auto [addr, port] = SplitPeer(client->peer());
    const uint64_t wait =
        client->state() == ClientConn::State::kWaiting ? now - client->wait_start_us() : 0;
    std::string state = ClientStateName(client->state());
    // PgBouncer 1.23+: a logged-in client that holds no server is "idle", not "active".
    if (state == "active" && client->server() == nullptr) state = "idle";
    // The client's named prepared statements.
    const size_t prepared = client->statement_count();
    std::vector<std::optional<std::string>> row = {
        "C", client->user(), client->database(),
        // pgfleet refuses replication connections (the replication startup parameter).
        "none", socket_columns ? absl::StrCat("cl_", ClientStateName(client->state())) : state,
        addr, port, listen_addr, listen_port, WallTime(client->connect_time_us()),
        WallTime(client->last_active_us()), Num(wait / 1000000), Num(wait % 1000000), "0",
        Ptr(client->id()),
        // The paired connection, or the empty string PgBouncer sends when there is none.
        client->server() ? Ptr(client->server()->id()) : std::string(), "0",
        TlsColumn(client->net().ssl()), ParamOf(client->params(), "application_name"),
        Num(prepared, true), Num(client->id())};
    if (socket_columns) row.insert(row.end(), 7, "0");
    result.AddRow(row);
  };
  auto add_server = [&](const ServerConn* server) {
    auto [addr, port] = SplitPeer(server->address());
    std::vector<std::optional<std::string>> row = {
        "S",
        server->pool().server_user(),
        server->pool().db_name(),
        "none",
        socket_columns ? absl::StrCat("sv_", ServerStateName(server->state()))
                       : ServerStateName(server->state()),
        addr,
        port,
        "127.0.0.1",
        Num(server->local_port()),
        WallTime(server->connect_time_us()),
        WallTime(server->last_used_us()),
        "0",
        "0",
        server->generation() != server->pool().generation() ? "1" : "0",
        Ptr(server->id()),
        server->client() ? Ptr(server->client()->id()) : std::string(),
        Num(server->backend_pid()),
        TlsColumn(server->ssl()),
        ParamOf(server->params(), "application_name"),
        Num(server->statements().size(), true),
        Num(server->id())};
    if (socket_columns) row.insert(row.end(), 7, "0");
    result.AddRow(row);
  };
  if (clients) {
    agent_.login_clients_view().ForEach(add_client);
    agent_.admin_clients().ForEach(add_client);
  }
  for (const auto& [key, pool] : agent_.pools()) {
    if (clients) {
      pool->active_clients().ForEach(add_client);
      pool->waiting_clients().ForEach(add_client);
      pool->login_waiting_clients().ForEach(add_client);
    }
    if (servers) {
      pool->active_servers().ForEach(add_server);
      pool->idle_servers().ForEach(add_server);
      pool->used_servers().ForEach(add_server);
      pool->login_servers().ForEach(add_server);
    }
  }
  return result.Finish();
}

}  // namespace pgfleet::agent
