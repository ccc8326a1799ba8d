// SHOW commands of the admin console. Column names, order and units follow PgBouncer 1.18
// (times in microseconds) so monitoring written for PgBouncer reads them unchanged.
#include <sys/resource.h>
#include <sys/time.h>

#include <algorithm>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "agent/admin/console.h"
#include "agent/admin/list_counts.h"
#include "agent/agent.h"
#include "agent/build_info.h"
#include "agent/client_conn.h"
#include "agent/pg/protocol.h"
#include "agent/server_conn.h"

namespace pgfleet::agent {
namespace {

constexpr int32_t kTextOid = 25;
constexpr int32_t kInt8Oid = 20;

struct Column {
  const char* name;
  bool numeric;
};

// Accumulates one result set: RowDescription, DataRows, CommandComplete "SHOW".
class ResultSet {
 public:
  explicit ResultSet(std::vector<Column> columns) : columns_(std::move(columns)) {
    pg::MessageBuilder builder('T');
    builder.Int16(static_cast<int16_t>(columns_.size()));
    for (const Column& column : columns_) {
      builder.CString(column.name).Int32(0).Int16(0);
      builder.Int32(column.numeric ? kInt8Oid : kTextOid).Int16(column.numeric ? 8 : -1);
      builder.Int32(-1).Int16(0);
    }
    out_ = builder.Finish();
  }
  // Values in column order; a value of nullopt is SQL NULL.
  void AddRow(const std::vector<std::optional<std::string>>& values) {
    pg::MessageBuilder builder('D');
    builder.Int16(static_cast<int16_t>(values.size()));
    for (const std::optional<std::string>& value : values) {
      if (!value.has_value()) {
        builder.Int32(-1);
      } else {
        builder.Int32(static_cast<int32_t>(value->size())).Bytes(*value);
      }
    }
    out_ += builder.Finish();
  }
  std::string Finish() { return out_ + pg::CommandComplete("SHOW"); }

 private:
  std::vector<Column> columns_;
  std::string out_;
};

// SHOW CLIENTS/SERVERS' tls column: "TLSv1.3/TLS_AES_256_GCM_SHA384", NULL for plain text.
std::optional<std::string> TlsColumn(bufferevent* bev) {
  std::string description = DescribeTls(bev);
  if (description.empty()) return std::nullopt;
  return description;
}

std::string Num(uint64_t value) { return absl::StrCat(value); }
std::string Num(int64_t value) { return absl::StrCat(value); }
std::string Num(int value) { return absl::StrCat(value); }
std::string Num(size_t value, bool) { return absl::StrCat(value); }

// A monotonic timestamp shown as wall-clock time, the way PgBouncer prints it.
std::string WallTime(uint64_t mono_us) {
  const uint64_t now_mono = MonotonicMicros();
  absl::Time wall = absl::Now() - absl::Microseconds(static_cast<int64_t>(now_mono - mono_us));
  return absl::FormatTime("%Y-%m-%d %H:%M:%S UTC", wall, absl::UTCTimeZone());
}

std::string Ptr(uint64_t id) { return absl::StrCat("0x", absl::Hex(id)); }

// Splits "host:port" / "[v6]:port" / "unix" into address and port.
std::pair<std::string, std::string> SplitPeer(const std::string& peer) {
  size_t colon = peer.rfind(':');
  if (colon == std::string::npos) return {peer, "0"};
  std::string host = peer.substr(0, colon);
  if (host.size() > 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  return {host, peer.substr(colon + 1)};
}

std::string ParamOf(const ParamList& params, const char* name) {
  for (const auto& [key, value] : params) {
    if (key == name) return value;
  }
  return "";
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

std::string AdminConsole::Show(const std::string& what, ClientConn*) {
  if (what == "HELP") return ShowHelp();
  if (what == "POOLS") return ShowPools();
  if (what == "DATABASES") return ShowDatabases();
  if (what == "CLIENTS") return ShowConnections(true, false, false);
  if (what == "SERVERS") return ShowConnections(false, true, false);
  if (what == "SOCKETS" || what == "ACTIVE_SOCKETS") return ShowConnections(true, true, true);
  if (what == "STATS") return ShowStats(true, true);
  if (what == "STATS_TOTALS") return ShowStats(true, false);
  if (what == "STATS_AVERAGES") return ShowStats(false, true);
  if (what == "TOTALS") return ShowTotals();
  if (what == "LISTS") return ShowLists();
  if (what == "USERS") return ShowUsers();
  if (what == "CONFIG") return ShowConfig();
  if (what == "MEM") return ShowMem();
  if (what == "FDS") return ShowFds();
  if (what == "VERSION") return ShowVersion();
  if (what == "STATE") return ShowState();
  return pg::ErrorResponse("ERROR", "42601",
                           absl::StrCat("invalid command 'SHOW ", what, "', use SHOW HELP;"));
}

std::string AdminConsole::ShowHelp() {
  pg::MessageBuilder notice('N');
  notice.Byte('S').CString("NOTICE").Byte('C').CString("00000").Byte('M').CString("Console usage");
  notice.Byte('D').CString(
      "\n\tSHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|USERS|VERSION|STATE"
      "\n\tSHOW FDS|SOCKETS|ACTIVE_SOCKETS|LISTS|MEM"
      "\n\tSHOW STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS"
      "\n\tSET key = arg"
      "\n\tRELOAD"
      "\n\tPAUSE [<db>] [FOR <duration>]"
      "\n\tRESUME [<db>]"
      "\n\tDISABLE <db>"
      "\n\tENABLE <db>"
      "\n\tRECONNECT [<db>]"
      "\n\tKILL [<db>]"
      "\n\tKILL_CLIENT <id>"
      "\n\tSUSPEND"
      "\n\tRESTART"
      "\n\tSHUTDOWN"
      "\n\tSHUTDOWN WAIT_FOR_SERVERS|WAIT_FOR_CLIENTS"
      "\n\tWAIT_CLOSE [<db>]");
  notice.Byte(0);
  return notice.Finish() + pg::CommandComplete("SHOW");
}

std::string AdminConsole::ShowPools() {
  ResultSet result({{"database", false},
                    {"user", false},
                    {"cl_active", true},
                    {"cl_waiting", true},
                    {"cl_active_cancel_req", true},
                    {"cl_waiting_cancel_req", true},
                    {"sv_active", true},
                    {"sv_active_cancel", true},
                    {"sv_being_canceled", true},
                    {"sv_idle", true},
                    {"sv_used", true},
                    {"sv_tested", true},
                    {"sv_login", true},
                    {"maxwait", true},
                    {"maxwait_us", true},
                    {"pool_mode", false}});
  result.AddRow({"pgbouncer", "pgbouncer", Num(agent_.admin_clients().size(), true), "0", "0", "0",
                 "0", "0", "0", "0", "0", "0", "0", "0", "0", "statement"});
  for (const PoolSnapshot& pool : agent_.Snapshot().pools) {
    result.AddRow({pool.database, pool.user, Num(pool.cl_active, true), Num(pool.cl_waiting, true),
                   "0", "0", Num(pool.sv_active, true), Num(pool.sv_active_cancel, true),
                   Num(pool.sv_being_canceled, true), Num(pool.sv_idle, true),
                   Num(pool.sv_used, true), "0", Num(pool.sv_login, true),
                   Num(pool.maxwait_us / 1000000), Num(pool.maxwait_us % 1000000),
                   config::PoolModeName(pool.pool_mode)});
  }
  return result.Finish();
}

std::string AdminConsole::ShowDatabases() {
  ResultSet result({{"name", false},
                    {"host", false},
                    {"port", true},
                    {"database", false},
                    {"force_user", false},
                    {"pool_size", true},
                    {"min_pool_size", true},
                    {"reserve_pool", true},
                    {"pool_mode", false},
                    {"max_connections", true},
                    {"current_connections", true},
                    {"paused", true},
                    {"disabled", true}});
  const config::Config& cfg = agent_.config();
  result.AddRow({"pgbouncer", std::nullopt, Num(cfg.listen_port), "pgbouncer", "pgbouncer", "2",
                 "0", "0", "statement", "0", "0", "0", "0"});
  for (const auto& [name, db] : cfg.databases) {
    if (name == "*") continue;
    result.AddRow({name, db.host.empty() ? std::nullopt : std::optional<std::string>(db.host),
                   Num(db.port), db.dbname.empty() ? name : db.dbname,
                   db.user.empty() ? std::nullopt : std::optional<std::string>(db.user),
                   Num(db.pool_size.value_or(cfg.default_pool_size)),
                   Num(db.min_pool_size.value_or(cfg.min_pool_size)),
                   Num(db.reserve_pool.value_or(cfg.reserve_pool_size)),
                   db.pool_mode ? std::optional<std::string>(config::PoolModeName(*db.pool_mode))
                                : std::nullopt,
                   Num(db.max_db_connections.value_or(cfg.max_db_connections)),
                   Num(agent_.ServerCountForDb(name)), agent_.IsPaused(name) ? "1" : "0",
                   agent_.IsDisabled(name) ? "1" : "0"});
  }
  // Databases reached through the "*" entry show up once they have a pool.
  std::set<std::string> shown;
  for (const auto& [key, pool] : agent_.pools()) {
    if (cfg.databases.count(key.first) > 0 || !shown.insert(key.first).second) continue;
    const config::DatabaseConfig& db = pool->db();
    result.AddRow({key.first, db.host.empty() ? std::nullopt : std::optional<std::string>(db.host),
                   Num(db.port), db.dbname.empty() ? key.first : db.dbname, std::nullopt,
                   Num(pool->pool_size()), Num(pool->min_pool_size()),
                   Num(pool->reserve_pool_size()), std::nullopt, "0",
                   Num(agent_.ServerCountForDb(key.first)), agent_.IsPaused(key.first) ? "1" : "0",
                   agent_.IsDisabled(key.first) ? "1" : "0"});
  }
  return result.Finish();
}

std::string AdminConsole::ShowConnections(bool clients, bool servers, bool socket_columns) {
  std::vector<Column> columns = {
      {"type", false},         {"user", false},      {"database", false},
      {"state", false},        {"addr", false},      {"port", true},
      {"local_addr", false},   {"local_port", true}, {"connect_time", false},
      {"request_time", false}, {"wait", true},       {"wait_us", true},
      {"close_needed", true},  {"ptr", false},       {"link", false},
      {"remote_pid", true},    {"tls", false},       {"application_name", false}};
  if (socket_columns) {
    for (const char* name : {"recv_pos", "pkt_pos", "pkt_remain", "send_pos", "send_remain",
                             "pkt_avail", "send_avail"}) {
      columns.push_back({name, true});
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
    std::vector<std::optional<std::string>> row = {
        "C",
        client->user(),
        client->database(),
        socket_columns ? absl::StrCat("cl_", ClientStateName(client->state()))
                       : ClientStateName(client->state()),
        addr,
        port,
        listen_addr,
        listen_port,
        WallTime(client->connect_time_us()),
        WallTime(client->last_active_us()),
        Num(wait / 1000000),
        Num(wait % 1000000),
        "0",
        Ptr(client->id()),
        client->server() ? std::optional<std::string>(Ptr(client->server()->id())) : std::nullopt,
        "0",
        TlsColumn(client->bev()),
        ParamOf(client->params(), "application_name")};
    if (socket_columns) row.insert(row.end(), 7, "0");
    result.AddRow(row);
  };
  auto add_server = [&](const ServerConn* server) {
    auto [addr, port] = SplitPeer(server->address());
    std::vector<std::optional<std::string>> row = {
        "S",
        server->pool().server_user(),
        server->pool().db_name(),
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
        server->client() ? std::optional<std::string>(Ptr(server->client()->id())) : std::nullopt,
        Num(server->backend_pid()),
        TlsColumn(server->bev()),
        ParamOf(server->params(), "application_name")};
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

std::string AdminConsole::ShowStats(bool totals, bool averages) {
  std::vector<Column> columns = {{"database", false}};
  const char* total_names[] = {"xact_count", "query_count", "bytes_received", "bytes_sent",
                               "xact_time",  "query_time",  "wait_time"};
  // SHOW STATS prefixes its columns; STATS_TOTALS / STATS_AVERAGES do not.
  const bool both = totals && averages;
  std::vector<std::string> names;
  if (totals) {
    for (const char* name : total_names) {
      names.push_back(
          both ? (std::string("total_") + (std::string(name) == "bytes_received" ? "received"
                                           : std::string(name) == "bytes_sent"   ? "sent"
                                                                                 : name))
               : name);
    }
  }
  if (averages) {
    const char* avg_both[] = {"avg_xact_count", "avg_query_count", "avg_recv",     "avg_sent",
                              "avg_xact_time",  "avg_query_time",  "avg_wait_time"};
    for (int i = 0; i < 7; ++i) names.push_back(both ? avg_both[i] : total_names[i]);
  }
  for (const std::string& name : names) columns.push_back({name.c_str(), true});
  ResultSet result(columns);
  std::map<std::string, PoolStats> by_db = agent_.Snapshot().database_totals;
  by_db.emplace("pgbouncer", PoolStats{});
  for (const auto& [db, stats] : by_db) {
    std::vector<std::optional<std::string>> row = {db};
    if (totals) {
      for (uint64_t value :
           {stats.xact_count, stats.query_count, stats.bytes_received, stats.bytes_sent,
            stats.xact_time_us, stats.query_time_us, stats.wait_time_us}) {
        row.push_back(Num(value));
      }
    }
    if (averages) {
      StatsAverages avg = agent_.stats_history().Averages(db);
      for (uint64_t value : {avg.xact_count, avg.query_count, avg.bytes_received, avg.bytes_sent,
                             avg.xact_time_us, avg.query_time_us, avg.wait_time_us}) {
        row.push_back(Num(value));
      }
    }
    result.AddRow(row);
  }
  return result.Finish();
}

std::string AdminConsole::ShowTotals() {
  ResultSet result({{"name", false}, {"value", true}});
  PoolStats total;
  StatsAverages avg_total;
  for (const auto& [db, stats] : agent_.StatsByDatabase()) {
    total += stats;
    StatsAverages avg = agent_.stats_history().Averages(db);
    avg_total.xact_count += avg.xact_count;
    avg_total.query_count += avg.query_count;
    avg_total.bytes_received += avg.bytes_received;
    avg_total.bytes_sent += avg.bytes_sent;
    avg_total.xact_time_us = std::max(avg_total.xact_time_us, avg.xact_time_us);
    avg_total.query_time_us = std::max(avg_total.query_time_us, avg.query_time_us);
    avg_total.wait_time_us += avg.wait_time_us;
  }
  std::vector<std::pair<const char*, uint64_t>> rows = {
      {"total_xact_count", total.xact_count},       {"total_query_count", total.query_count},
      {"total_client_bytes", total.bytes_received}, {"total_server_bytes", total.bytes_sent},
      {"total_xact_time", total.xact_time_us},      {"total_query_time", total.query_time_us},
      {"total_wait_time", total.wait_time_us},      {"avg_xact_count", avg_total.xact_count},
      {"avg_query_count", avg_total.query_count},   {"avg_client_bytes", avg_total.bytes_received},
      {"avg_server_bytes", avg_total.bytes_sent},   {"avg_xact_time", avg_total.xact_time_us},
      {"avg_query_time", avg_total.query_time_us},  {"avg_wait_time", avg_total.wait_time_us}};
  for (const auto& [name, value] : rows) result.AddRow({name, Num(value)});
  return result.Finish();
}

std::string AdminConsole::ShowLists() {
  ResultSet result({{"list", false}, {"items", true}});
  for (const ListCount& row : ListCounts(agent_)) result.AddRow({row.name, Num(row.items, true)});
  return result.Finish();
}

std::string AdminConsole::ShowUsers() {
  ResultSet result({{"name", false}, {"pool_mode", false}});
  const config::Config& cfg = agent_.config();
  std::set<std::string> names;
  for (const auto& [name, secret] : agent_.auth_file()) names.insert(name);
  for (const auto& [name, user] : cfg.users) names.insert(name);
  for (const std::string& name : names) {
    const config::UserConfig* user = cfg.FindUser(name);
    result.AddRow({name, user && user->pool_mode
                             ? std::optional<std::string>(config::PoolModeName(*user->pool_mode))
                             : std::nullopt});
  }
  return result.Finish();
}

std::string AdminConsole::ShowConfig() {
  ResultSet result({{"key", false}, {"value", false}, {"default", false}, {"changeable", false}});
  for (const config::ConfigEntry& entry : config::DescribeConfig(agent_.config())) {
    result.AddRow({entry.key, entry.value, entry.default_value, entry.changeable ? "yes" : "no"});
  }
  return result.Finish();
}

std::string AdminConsole::ShowMem() {
  // pgfleet has no slab caches; it reports its live objects in PgBouncer's columns.
  ResultSet result(
      {{"name", false}, {"size", true}, {"used", true}, {"free", true}, {"memtotal", true}});
  size_t clients = agent_.admin_clients().size() + agent_.login_clients_view().size();
  size_t servers = 0;
  for (const auto& [key, pool] : agent_.pools()) {
    clients += pool->client_count();
    servers += pool->server_count();
  }
  auto row = [&](const char* name, size_t size, size_t used) {
    result.AddRow({name, Num(size, true), Num(used, true), "0", Num(size * used, true)});
  };
  row("user_cache", sizeof(config::UserSecret), agent_.auth_file().size());
  row("db_cache", sizeof(config::DatabaseConfig), agent_.config().databases.size());
  row("pool_cache", sizeof(Pool), agent_.pools().size());
  row("server_cache", sizeof(ServerConn), servers);
  row("client_cache", sizeof(ClientConn), clients);
  rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  result.AddRow({"max_rss", "1024", Num(static_cast<int64_t>(usage.ru_maxrss)), "0",
                 Num(static_cast<int64_t>(usage.ru_maxrss) * 1024)});
  return result.Finish();
}

std::string AdminConsole::ShowFds() {
  ResultSet result({{"fd", true},
                    {"task", false},
                    {"user", false},
                    {"database", false},
                    {"addr", false},
                    {"port", true},
                    {"cancel", true},
                    {"link", true},
                    {"client_encoding", false},
                    {"std_strings", false},
                    {"datestyle", false},
                    {"timezone", false},
                    {"password", false},
                    {"scram_client_key", false},
                    {"scram_server_key", false}});
  for (const auto& [key, pool] : agent_.pools()) {
    auto add_client = [&](const ClientConn* client) {
      auto [addr, port] = SplitPeer(client->peer());
      const ParamList& params = client->params();
      result.AddRow({Num(client->fd()), "client", client->user(), client->database(), addr, port,
                     Num(static_cast<uint64_t>(static_cast<uint32_t>(client->cancel_key()))),
                     client->server() ? Num(client->server()->id()) : "0",
                     ParamOf(params, "client_encoding"),
                     ParamOf(params, "standard_conforming_strings"), ParamOf(params, "DateStyle"),
                     ParamOf(params, "TimeZone"), std::nullopt, std::nullopt, std::nullopt});
    };
    pool->active_clients().ForEach(add_client);
    pool->waiting_clients().ForEach(add_client);
  }
  return result.Finish();
}

std::string AdminConsole::ShowVersion() {
  ResultSet result({{"version", false}});
  // Tools parse "PgBouncer X.Y.Z"; pgfleet answers as the PgBouncer version it matches.
  result.AddRow({kVersionLine});
  return result.Finish();
}

std::string AdminConsole::ShowState() {
  ResultSet result({{"key", false}, {"value", false}});
  const bool paused_all = agent_.IsPausedExactly("");
  result.AddRow({"active", (!paused_all && !agent_.suspended()) ? "yes" : "no"});
  result.AddRow({"paused", paused_all ? "yes" : "no"});
  result.AddRow({"suspended", agent_.suspended() ? "yes" : "no"});
  std::vector<std::string> paused_dbs;
  for (const auto& [name, db] : agent_.config().databases) {
    if (name != "*" && agent_.IsPausedExactly(name)) paused_dbs.push_back(name);
  }
  result.AddRow({"paused_databases", absl::StrJoin(paused_dbs, ",")});
  if (std::optional<absl::Time> deadline = agent_.PauseDeadline("")) {
    result.AddRow({"pause_deadline",
                   absl::FormatTime("%Y-%m-%d %H:%M:%S UTC", *deadline, absl::UTCTimeZone())});
  }
  // Open password-rotation overlaps: who and until when, never the secret.
  for (const auto& [user, expires] : agent_.OverlapExpiries()) {
    result.AddRow({absl::StrCat("credential_overlap:", user),
                   absl::FormatTime("%Y-%m-%d %H:%M:%S UTC", expires, absl::UTCTimeZone())});
  }
  return result.Finish();
}

}  // namespace pgfleet::agent
