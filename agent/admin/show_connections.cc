// SHOW CLIENTS, SERVERS, SOCKETS and ACTIVE_SOCKETS: PgBouncer 1.25's columns and types
// (src/admin.c socket_header: int4 numbers, text times): replication after database,
// prepared_statements and id after application_name, then SOCKETS' buffer columns. And SHOW
// FDS, which walks the same connections.
#include <event2/listener.h>
#include <sys/socket.h>

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

// SHOW SOCKETS' buffer columns. PgBouncer keeps one IOBuf per socket holding what it received,
// with three offsets into it: done_pos (sent on to the link), parse_pos (parsed) and recv_pos
// (received); pkt_avail = recv_pos - parse_pos, send_avail = parse_pos - done_pos, and
// pkt_remain is what is still to come of the packet being forwarded.
//
// pgfleet's buffers are evbuffers that drop bytes once they are passed on, so it answers the
// amounts, not the history:
//   pkt_avail   bytes received and not yet looked at (the socket's input buffer);
//   send_avail  bytes the forwarding passed on that the link's socket has not taken yet (the
//               link's output buffer: the forwarder moves them there instead of keeping them
//               in the sender's buffer; it also holds the few messages the agent itself sends
//               the link, such as a SET before a query);
//   pkt_remain  the rest of a message being streamed or skipped (ForwardState);
//   send_pos    0: bytes sent are gone from the buffer, which starts at the oldest unsent one;
//   pkt_pos     send_pos + send_avail, and recv_pos pkt_pos + pkt_avail, in that frame;
//   send_remain 0, as PgBouncer 1.25 always sends it.
struct BufferColumns {
  uint64_t pkt_avail = 0;
  uint64_t send_avail = 0;
  uint64_t pkt_remain = 0;

  // PgBouncer's sbuf_is_empty: what SHOW ACTIVE_SOCKETS lists is the rest.
  bool empty() const { return pkt_avail == 0 && send_avail == 0 && pkt_remain == 0; }
  void AppendTo(std::vector<std::optional<std::string>>& row) const {
    const uint64_t pkt_pos = send_avail;
    row.insert(row.end(),
               {show::Int4(pkt_pos + pkt_avail), show::Int4(pkt_pos), show::Int4(pkt_remain), "0",
                "0", show::Int4(pkt_avail), show::Int4(send_avail)});
  }
};

BufferColumns ClientBuffers(const ClientConn& client) {
  const ForwardState& forward = client.forward_state();
  return {client.net().input_length(),
          client.server() != nullptr ? client.server()->output_length() : 0,
          forward.forward_remaining + forward.skip_remaining};
}

BufferColumns ServerBuffers(const ServerConn& server) {
  const ForwardState& forward = server.forward_state();
  return {server.input_length(),
          server.client() != nullptr ? server.client()->net().output_length() : 0,
          forward.forward_remaining + forward.skip_remaining};
}

// SHOW FDS' text columns are NULL where PgBouncer's PgSocket has no value: no user or
// database before the startup packet named them, no tracked parameter it was never given.
std::optional<std::string> TextOrNull(const std::string& value) {
  return value.empty() ? std::nullopt : std::optional<std::string>(value);
}
std::optional<std::string> ParamOrNull(const ParamList& params, const char* name) {
  for (const auto& [key, value] : params) {
    if (key == name) return value;
  }
  return std::nullopt;
}

// remote_pid of a client on the unix socket: its process, from the kernel (SO_PEERCRED), as
// PgBouncer reads it at accept (getpeercreds). Asked at SHOW time rather than kept per client.
// 0 for TCP clients and when the kernel cannot say, as in PgBouncer.
std::string UnixPeerPid(int fd) {
  ucred credentials{};
  socklen_t length = sizeof(credentials);
  if (fd < 0 || getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &credentials, &length) != 0) return "0";
  return Num(static_cast<int>(credentials.pid));
}

// The user and database columns, PgBouncer's "(nouser)" / "(nodb)" before the login named them.
std::string OrPlaceholder(const std::string& value, const char* placeholder) {
  return value.empty() ? std::string(placeholder) : value;
}

// A cancel key as SHOW FDS' int8 "cancel": the 8 bytes of BackendKeyData (pid, then secret)
// read as one big-endian number, as PgBouncer reads its cancel_key.
std::string CancelColumn(int32_t pid, int32_t secret) {
  return Num((static_cast<uint64_t>(static_cast<uint32_t>(pid)) << 32) |
             static_cast<uint32_t>(secret));
}

}  // namespace

std::string AdminConsole::ShowConnections(ConnectionList list) {
  const bool clients = list != ConnectionList::kServers;
  const bool servers = list != ConnectionList::kClients;
  const bool socket_columns =
      list == ConnectionList::kSockets || list == ConnectionList::kActiveSockets;
  const bool only_busy = list == ConnectionList::kActiveSockets;
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
  const int listen_port = agent_.config().listen_port;
  auto add_client = [&](const ClientConn* client) {
    const BufferColumns buffers = ClientBuffers(*client);
    if (only_busy && buffers.empty()) return;
    auto [addr, port] = SplitPeer(client->peer());
    if (addr == "unix") port = Num(listen_port);  // As PgBouncer's fill_remote_addr.
    // Asked of the kernel now rather than kept per client (every byte of a ClientConn is paid
    // per idle client); a listener on "*" shows the address the client actually reached.
    auto [local_addr, local_port] = show::LocalAddrColumns(client->fd(), listen_port);
    const uint64_t wait =
        client->state() == ClientConn::State::kWaiting ? now - client->wait_start_us() : 0;
    std::string state = ClientStateName(client->state());
    // PgBouncer 1.23+: a logged-in client that holds no server is "idle", not "active".
    if (state == "active" && client->server() == nullptr) state = "idle";
    // The client's named prepared statements.
    const size_t prepared = client->statement_count();
    std::vector<std::optional<std::string>> row = {
        "C", OrPlaceholder(client->user(), "(nouser)"), OrPlaceholder(client->database(), "(nodb)"),
        // pgfleet refuses replication connections (the replication startup parameter).
        "none", socket_columns ? absl::StrCat("cl_", ClientStateName(client->state())) : state,
        addr, port, local_addr, local_port, WallTime(client->connect_time_us()),
        WallTime(client->last_active_us()), Num(wait / 1000000), Num(wait % 1000000), "0",
        Ptr(client->id()),
        // The paired connection, or the empty string PgBouncer sends when there is none.
        client->server() ? Ptr(client->server()->id()) : std::string(),
        addr == "unix" ? UnixPeerPid(client->fd()) : "0", TlsColumn(client->net().ssl()),
        ParamOf(client->params(), "application_name"), Num(prepared, true), Num(client->id())};
    if (socket_columns) buffers.AppendTo(row);
    result.AddRow(row);
  };
  auto add_server = [&](const ServerConn* server) {
    const BufferColumns buffers = ServerBuffers(*server);
    if (only_busy && buffers.empty()) return;
    auto [addr, port] = SplitPeer(server->address());
    // Recorded once the connect completed; none yet while it is in progress.
    auto [local_addr, local_port] = server->local_address()
                                        ? show::AddrColumns(*server->local_address(), listen_port)
                                        : std::pair<std::string, std::string>("", "0");
    std::vector<std::optional<std::string>> row = {
        "S",
        server->pool().server_user(),
        server->pool().db_name(),
        "none",
        socket_columns ? absl::StrCat("sv_", ServerStateName(server->state()))
                       : ServerStateName(server->state()),
        addr,
        port,
        local_addr,
        local_port,
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
    if (socket_columns) buffers.AppendTo(row);
    result.AddRow(row);
  };
  // The lists PgBouncer walks (src/admin.c): CLIENTS the pools' active and waiting clients
  // (a client still logging in is in none of them: PgBouncer keeps it in login_client_list,
  // which only SOCKETS shows, last); the console's own clients are the admin pool's.
  if (clients) agent_.admin_clients().ForEach(add_client);
  for (const auto& [key, pool] : agent_.pools()) {
    // Clients waiting for a server to finish their login are PgBouncer's CL_WAITING_LOGIN, kept
    // in the pool's waiting_client_list.
    if (clients) pool->ForEachClient(add_client);
    if (servers) pool->ForEachServer(add_server);
  }
  if (clients && socket_columns) agent_.login_clients_view().ForEach(add_client);
  return result.Finish();
}

std::string AdminConsole::ShowFds() {
  ResultSet result({{"fd", kInt4},
                    {"task", kText},
                    {"user", kText},
                    {"database", kText},
                    {"addr", kText},
                    {"port", kInt4},
                    {"cancel", kInt8},
                    {"link", kInt4},
                    {"client_encoding", kText},
                    {"std_strings", kText},
                    {"datestyle", kText},
                    {"timezone", kText},
                    {"password", kText},
                    {"scram_client_key", kBytea},
                    {"scram_server_key", kBytea}});
  const int listen_port = agent_.config().listen_port;
  // What PgBouncer's admin_show_fds lists, in its order: the listening sockets ("pooler"), the
  // clients logging in, then per pool the active and waiting clients and the servers. The
  // console's own clients are not listed (PgBouncer skips the admin pool). A socket that is
  // TLS, or linked to one, is left out: its session cannot be handed over with the fd.
  // password and the SCRAM keys stay NULL: pgfleet never hands its secrets over this way.
  for (const Agent::Listener& listener : agent_.listeners()) {
    const int fd = evconnlistener_get_fd(listener.listener);
    auto [addr, port] = show::LocalAddrColumns(fd, listen_port);
    result.AddRow({Num(fd), "pooler", std::nullopt, std::nullopt, addr, port, "0", "0",
                   std::nullopt, std::nullopt, std::nullopt, std::nullopt, std::nullopt,
                   std::nullopt, std::nullopt});
  }
  auto add_client = [&](const ClientConn* client) {
    const ServerConn* server = client->server();
    if (client->fd() < 0) return;
    if (client->net().ssl() != nullptr || (server != nullptr && server->ssl() != nullptr)) return;
    auto [addr, port] = SplitPeer(client->peer());
    if (addr == "unix") port = Num(listen_port);
    const ParamList& params = client->params();
    result.AddRow(
        {Num(client->fd()), "client", TextOrNull(client->user()), TextOrNull(client->database()),
         addr, port, CancelColumn(client->cancel_pid(), client->cancel_key()),
         server != nullptr ? Num(server->fd()) : "0", ParamOrNull(params, "client_encoding"),
         ParamOrNull(params, "standard_conforming_strings"), ParamOrNull(params, "DateStyle"),
         ParamOrNull(params, "TimeZone"), std::nullopt, std::nullopt, std::nullopt});
  };
  auto add_server = [&](const ServerConn* server) {
    const ClientConn* client = server->client();
    if (server->fd() < 0) return;  // Still resolving its host: no socket yet.
    if (server->ssl() != nullptr || (client != nullptr && client->net().ssl() != nullptr)) return;
    auto [addr, port] = SplitPeer(server->address());
    const ParamList& params = server->params();
    result.AddRow(
        {Num(server->fd()), "server", server->pool().server_user(), server->pool().db_name(), addr,
         port, CancelColumn(server->backend_pid(), server->backend_key()),
         client != nullptr ? Num(client->fd()) : "0", ParamOrNull(params, "client_encoding"),
         ParamOrNull(params, "standard_conforming_strings"), ParamOrNull(params, "DateStyle"),
         ParamOrNull(params, "TimeZone"), std::nullopt, std::nullopt, std::nullopt});
  };
  agent_.login_clients_view().ForEach(add_client);
  for (const auto& [key, pool] : agent_.pools()) {
    pool->ForEachClient(add_client);
    pool->ForEachServer(add_server);
  }
  return result.Finish();
}

}  // namespace pgfleet::agent
