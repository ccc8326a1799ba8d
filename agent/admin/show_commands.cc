// SHOW commands of the admin console. Column names, order, types and units are PgBouncer
// 1.25's (src/admin.c, src/stats.c; times in microseconds) so monitoring written for PgBouncer
// reads them unchanged. CLIENTS/SERVERS/SOCKETS and FDS are in show_connections.cc.
#include <sys/resource.h>
#include <sys/time.h>

#include <algorithm>
#include <map>
#include <set>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "agent/admin/console.h"
#include "agent/admin/list_counts.h"
#include "agent/admin/result_set.h"
#include "agent/agent.h"
#include "agent/build_info.h"
#include "agent/client_conn.h"
#include "agent/net/buffer_pool.h"
#include "agent/pg/protocol.h"
#include "agent/server_conn.h"

namespace pgfleet::agent {
namespace {

using show::Column;
using show::kInt4;
using show::kInt8;
using show::kNumeric;
using show::kText;
using show::Num;
using show::ParamOf;
using show::ResultSet;
using show::SplitPeer;

}  // namespace

std::string AdminConsole::Show(const std::string& what, ClientConn*) {
  if (what == "HELP") return ShowHelp();
  if (what == "POOLS") return ShowPools();
  if (what == "DATABASES") return ShowDatabases();
  if (what == "CLIENTS") return ShowConnections(ConnectionList::kClients);
  if (what == "SERVERS") return ShowConnections(ConnectionList::kServers);
  if (what == "SOCKETS") return ShowConnections(ConnectionList::kSockets);
  if (what == "ACTIVE_SOCKETS") return ShowConnections(ConnectionList::kActiveSockets);
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
  if (what == "PEERS") return ShowPeers();
  if (what == "PEER_POOLS") return ShowPeerPools();
  if (what == "DNS_HOSTS") return ShowDnsHosts();
  if (what == "DNS_ZONES") return ShowDnsZones();
  return pg::ErrorResponse("ERROR", "42601",
                           absl::StrCat("invalid command 'SHOW ", what, "', use SHOW HELP;"));
}

std::string AdminConsole::ShowHelp() {
  pg::MessageBuilder notice('N');
  notice.Byte('S').CString("NOTICE").Byte('C').CString("00000").Byte('M').CString("Console usage");
  notice.Byte('D').CString(
      "\n\tSHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|USERS|VERSION"
      "\n\tSHOW PEERS|PEER_POOLS"
      "\n\tSHOW FDS|SOCKETS|ACTIVE_SOCKETS|LISTS|MEM|STATE"
      "\n\tSHOW DNS_HOSTS|DNS_ZONES"
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

// PgBouncer's load_balance_hosts column: the mode for a database whose host is a list, else
// NULL.
static std::optional<std::string> LoadBalanceHostsColumn(const config::DatabaseConfig& db) {
  if (db.host.find(',') == std::string::npos) return std::nullopt;
  return std::string(config::LoadBalanceHostsName(db.load_balance_hosts));
}

std::string AdminConsole::ShowPools() {
  ResultSet result({{"database", kText},
                    {"user", kText},
                    {"cl_active", kInt4},
                    {"cl_waiting", kInt4},
                    {"cl_active_cancel_req", kInt4},
                    {"cl_waiting_cancel_req", kInt4},
                    {"sv_active", kInt4},
                    {"sv_active_cancel", kInt4},
                    {"sv_being_canceled", kInt4},
                    {"sv_idle", kInt4},
                    {"sv_used", kInt4},
                    {"sv_tested", kInt4},
                    {"sv_login", kInt4},
                    {"maxwait", kInt4},
                    {"maxwait_us", kInt4},
                    {"pool_mode", kText},
                    {"load_balance_hosts", kText}});
  result.AddRow({"pgbouncer", "pgbouncer", Num(agent_.admin_clients().size(), true), "0", "0", "0",
                 "0", "0", "0", "0", "0", "0", "0", "0", "0", "statement", std::nullopt});
  for (const PoolSnapshot& pool : agent_.Snapshot().pools) {
    const Pool* live = nullptr;
    if (auto it = agent_.pools().find({pool.database, pool.user}); it != agent_.pools().end()) {
      live = it->second.get();
    }
    result.AddRow({pool.database, pool.user, Num(pool.cl_active, true), Num(pool.cl_waiting, true),
                   "0", "0", Num(pool.sv_active, true), Num(pool.sv_active_cancel, true),
                   Num(pool.sv_being_canceled, true), Num(pool.sv_idle, true),
                   Num(pool.sv_used, true), "0", Num(pool.sv_login, true),
                   Num(pool.maxwait_us / 1000000), Num(pool.maxwait_us % 1000000),
                   config::PoolModeName(pool.pool_mode),
                   live != nullptr ? LoadBalanceHostsColumn(live->db()) : std::nullopt});
  }
  return result.Finish();
}

std::string AdminConsole::ShowDatabases() {
  // PgBouncer 1.25's columns (src/admin.c admin_show_databases); reserve_pool became
  // reserve_pool_size in 1.24.
  ResultSet result({{"name", kText},
                    {"host", kText},
                    {"port", kInt4},
                    {"database", kText},
                    {"force_user", kText},
                    {"pool_size", kInt4},
                    {"min_pool_size", kInt4},
                    {"reserve_pool_size", kInt4},
                    {"server_lifetime", kInt4},
                    {"pool_mode", kText},
                    {"load_balance_hosts", kText},
                    {"max_connections", kInt4},
                    {"current_connections", kInt4},
                    {"max_client_connections", kInt4},
                    {"current_client_connections", kInt4},
                    {"paused", kInt4},
                    {"disabled", kInt4}});
  const config::Config& cfg = agent_.config();
  std::map<std::string, size_t> clients_by_db;
  for (const auto& [key, pool] : agent_.pools()) clients_by_db[key.first] += pool->client_count();
  // Whole seconds, as PgBouncer prints it: the database's own value, else the [pgbouncer] one.
  const std::string server_lifetime = Num(absl::ToInt64Seconds(cfg.server_lifetime));
  auto lifetime_of = [&cfg](const config::DatabaseConfig& db) {
    return Num(absl::ToInt64Seconds(cfg.ServerLifetimeFor(db)));
  };
  auto optional_text = [](const std::string& value) {
    return value.empty() ? std::nullopt : std::optional<std::string>(value);
  };
  // The console's own entry, as PgBouncer's admin_setup makes it: pool_size 2, statement mode,
  // the global limits for everything else.
  result.AddRow({"pgbouncer", std::nullopt, Num(cfg.listen_port), "pgbouncer", "pgbouncer", "2",
                 Num(cfg.min_pool_size), Num(cfg.reserve_pool_size), server_lifetime, "statement",
                 std::nullopt, Num(cfg.max_db_connections), "0", Num(cfg.max_db_client_connections),
                 Num(agent_.admin_clients().size(), true), "0", "0"});
  for (const auto& [name, db] : cfg.databases) {
    if (name == "*") continue;
    result.AddRow({name, optional_text(db.host), Num(db.port), db.dbname.empty() ? name : db.dbname,
                   optional_text(db.user), Num(db.pool_size.value_or(cfg.default_pool_size)),
                   Num(db.min_pool_size.value_or(cfg.min_pool_size)),
                   Num(db.reserve_pool.value_or(cfg.reserve_pool_size)), lifetime_of(db),
                   db.pool_mode ? std::optional<std::string>(config::PoolModeName(*db.pool_mode))
                                : std::nullopt,
                   LoadBalanceHostsColumn(db),
                   Num(db.max_db_connections.value_or(cfg.max_db_connections)),
                   Num(agent_.ServerCountForDb(name)), Num(cfg.MaxDbClientConnectionsFor(db)),
                   Num(clients_by_db[name], true), agent_.IsPaused(name) ? "1" : "0",
                   agent_.IsDisabled(name) ? "1" : "0"});
  }
  // Databases reached through the "*" entry show up once they have a pool.
  std::set<std::string> shown;
  for (const auto& [key, pool] : agent_.pools()) {
    if (cfg.databases.count(key.first) > 0 || !shown.insert(key.first).second) continue;
    const config::DatabaseConfig& db = pool->db();
    result.AddRow({key.first, optional_text(db.host), Num(db.port),
                   db.dbname.empty() ? key.first : db.dbname, std::nullopt, Num(pool->pool_size()),
                   Num(pool->min_pool_size()), Num(pool->reserve_pool_size()), lifetime_of(db),
                   std::nullopt, LoadBalanceHostsColumn(db), "0",
                   Num(agent_.ServerCountForDb(key.first)), Num(cfg.MaxDbClientConnectionsFor(db)),
                   Num(clients_by_db[key.first], true), agent_.IsPaused(key.first) ? "1" : "0",
                   agent_.IsDisabled(key.first) ? "1" : "0"});
  }
  return result.Finish();
}

// The statistics columns' short names, as STATS_TOTALS and STATS_AVERAGES print them.
constexpr const char* kStatsColumns[] = {"server_assignment_count",
                                         "xact_count",
                                         "query_count",
                                         "bytes_received",
                                         "bytes_sent",
                                         "xact_time",
                                         "query_time",
                                         "wait_time",
                                         "client_parse_count",
                                         "server_parse_count",
                                         "bind_count"};

// A statistics column's name in one of the three SHOWs. SHOW STATS prefixes the short name
// with total_ / avg_, and STATS_TOTALS and STATS_AVERAGES print it bare, apart from
// PgBouncer's irregular names (src/stats.c), listed here:
//  - SHOW STATS calls the byte counts total_received / total_sent and avg_recv / avg_sent;
//  - STATS_AVERAGES keeps the avg_ prefix on the prepared-statement counts.
static std::string StatsColumnName(const char* short_name, bool totals, bool both) {
  static const std::map<std::string_view, std::string_view> kStatsExceptions = {
      {"bytes_received", "total_received"},
      {"bytes_sent", "total_sent"},
  };
  static const std::map<std::string_view, std::string_view> kAvgExceptions = {
      {"bytes_received", "avg_recv"},
      {"bytes_sent", "avg_sent"},
  };
  static const std::set<std::string_view> kAveragesKeepPrefix = {
      "client_parse_count", "server_parse_count", "bind_count"};
  if (both) {
    const auto& exceptions = totals ? kStatsExceptions : kAvgExceptions;
    if (auto it = exceptions.find(short_name); it != exceptions.end()) {
      return std::string(it->second);
    }
    return absl::StrCat(totals ? "total_" : "avg_", short_name);
  }
  if (!totals && kAveragesKeepPrefix.count(short_name) > 0) {
    return absl::StrCat("avg_", short_name);
  }
  return std::string(short_name);
}

std::string AdminConsole::ShowStats(bool totals, bool averages) {
  // PgBouncer 1.25's columns, all numeric. (client_connect_count came after 1.25.)
  const bool both = totals && averages;
  // The names outlive `result`, whose Column holds a pointer to each.
  std::vector<std::string> names;
  for (bool total_columns : {true, false}) {
    if (total_columns ? !totals : !averages) continue;
    for (const char* short_name : kStatsColumns) {
      names.push_back(StatsColumnName(short_name, total_columns, both));
    }
  }
  std::vector<Column> columns = {{"database", kText}};
  for (const std::string& name : names) columns.push_back({name.c_str(), kNumeric});
  ResultSet result(columns);
  std::map<std::string, PoolStats> by_db = agent_.Snapshot().database_totals;
  by_db.emplace("pgbouncer", PoolStats{});
  for (const auto& [db, stats] : by_db) {
    std::vector<std::optional<std::string>> row = {db};
    if (totals) {
      for (uint64_t value : {stats.server_assignment_count, stats.xact_count, stats.query_count,
                             stats.bytes_received, stats.bytes_sent, stats.xact_time_us,
                             stats.query_time_us, stats.wait_time_us, stats.client_parse_count,
                             stats.server_parse_count, stats.bind_count}) {
        row.push_back(Num(value));
      }
    }
    if (averages) {
      StatsAverages avg = agent_.stats_history().Averages(db);
      for (uint64_t value :
           {avg.server_assignment_count, avg.xact_count, avg.query_count, avg.bytes_received,
            avg.bytes_sent, avg.xact_time_us, avg.query_time_us, avg.wait_time_us,
            avg.client_parse_count, avg.server_parse_count, avg.bind_count}) {
        row.push_back(Num(value));
      }
    }
    result.AddRow(row);
  }
  return result.Finish();
}

std::string AdminConsole::ShowTotals() {
  ResultSet result({{"name", kText}, {"value", kNumeric}});
  PoolStats total;
  for (const auto& [db, stats] : agent_.StatsByDatabase()) total += stats;
  // As PgBouncer's show_stat_totals: the averages of the sum over every database (per-query
  // and per-assignment times weighted by their counts, not the largest database's).
  const StatsAverages& avg_total = agent_.stats_history().TotalAverages();
  // PgBouncer's order and names (stats.c show_stat_totals prints each PgStats field with a
  // total_/avg_ prefix, hence total_client_bytes and total_ps_bind_count).
  std::vector<std::pair<const char*, uint64_t>> rows = {
      {"total_server_assignment_count", total.server_assignment_count},
      {"total_xact_count", total.xact_count},
      {"total_query_count", total.query_count},
      {"total_client_bytes", total.bytes_received},
      {"total_server_bytes", total.bytes_sent},
      {"total_xact_time", total.xact_time_us},
      {"total_query_time", total.query_time_us},
      {"total_wait_time", total.wait_time_us},
      {"total_ps_client_parse_count", total.client_parse_count},
      {"total_ps_server_parse_count", total.server_parse_count},
      {"total_ps_bind_count", total.bind_count},
      {"avg_server_assignment_count", avg_total.server_assignment_count},
      {"avg_xact_count", avg_total.xact_count},
      {"avg_query_count", avg_total.query_count},
      {"avg_client_bytes", avg_total.bytes_received},
      {"avg_server_bytes", avg_total.bytes_sent},
      {"avg_xact_time", avg_total.xact_time_us},
      {"avg_query_time", avg_total.query_time_us},
      {"avg_wait_time", avg_total.wait_time_us},
      {"avg_ps_client_parse_count", avg_total.client_parse_count},
      {"avg_ps_server_parse_count", avg_total.server_parse_count},
      {"avg_ps_bind_count", avg_total.bind_count}};
  for (const auto& [name, value] : rows) result.AddRow({name, Num(value)});
  return result.Finish();
}

std::string AdminConsole::ShowLists() {
  ResultSet result({{"list", kText}, {"items", kInt4}});
  for (const ListCount& row : ListCounts(agent_)) result.AddRow({row.name, Num(row.items, true)});
  return result.Finish();
}

std::string AdminConsole::ShowUsers() {
  // PgBouncer 1.25's columns (src/admin.c admin_show_users): the [users] overrides, the
  // effective limits and the live counts.
  ResultSet result({{"name", kText},
                    {"pool_size", kText},
                    {"reserve_pool_size", kText},
                    {"pool_mode", kText},
                    {"max_user_connections", kInt4},
                    {"current_connections", kInt4},
                    {"max_user_client_connections", kInt4},
                    {"current_client_connections", kInt4}});
  const config::Config& cfg = agent_.config();
  const std::set<std::string> names = ListedUserNames(agent_);
  std::map<std::string, size_t> clients_by_user;
  for (const auto& [key, pool] : agent_.pools())
    clients_by_user[key.second] += pool->client_count();
  // PgBouncer prints these two overrides with "%9d" into text columns, and sends an empty
  // string (not NULL) when the user has none; matched byte for byte.
  auto override_text = [](const std::optional<int>& value) {
    return value ? absl::StrFormat("%9d", *value) : std::string();
  };
  for (const std::string& name : names) {
    const config::UserConfig* user = cfg.FindUser(name);
    const int max_connections = user != nullptr && user->max_user_connections
                                    ? *user->max_user_connections
                                    : cfg.max_user_connections;
    result.AddRow({name, user != nullptr ? override_text(user->pool_size) : std::string(),
                   user != nullptr ? override_text(user->reserve_pool_size) : std::string(),
                   user && user->pool_mode
                       ? std::optional<std::string>(config::PoolModeName(*user->pool_mode))
                       : std::nullopt,
                   Num(max_connections), Num(agent_.ServerCountForUser(name)),
                   Num(cfg.MaxUserClientConnectionsFor(name)), Num(clients_by_user[name], true)});
  }
  return result.Finish();
}

std::string AdminConsole::ShowConfig() {
  ResultSet result({{"key", kText}, {"value", kText}, {"default", kText}, {"changeable", kText}});
  for (const config::ConfigEntry& entry : config::DescribeConfig(agent_.config())) {
    result.AddRow({entry.key, entry.value, entry.default_value, entry.changeable ? "yes" : "no"});
  }
  return result.Finish();
}

// The bytes every connection's buffers hold now: received and not read, queued and not sent.
static uint64_t BufferedBytes(const Agent& agent) {
  uint64_t bytes = 0;
  auto add_client = [&](const ClientConn* client) {
    bytes += client->net().input_length() + client->net().output_length();
  };
  auto add_server = [&](const ServerConn* server) {
    bytes += server->input_length() + server->output_length();
  };
  agent.admin_clients().ForEach(add_client);
  agent.login_clients_view().ForEach(add_client);
  for (const auto& [key, pool] : agent.pools()) {
    pool->ForEachClient(add_client);
    pool->ForEachServer(add_server);
  }
  return bytes;
}

std::string AdminConsole::ShowMem() {
  // pgfleet has no slab caches; it reports its live objects in PgBouncer's columns.
  ResultSet result(
      {{"name", kText}, {"size", kInt4}, {"used", kInt4}, {"free", kInt4}, {"memtotal", kInt4}});
  size_t clients = agent_.admin_clients().size() + agent_.login_clients_view().size();
  size_t servers = 0;
  for (const auto& [key, pool] : agent_.pools()) {
    clients += pool->client_count();
    servers += pool->server_count();
  }
  auto row = [&](const char* name, size_t size, size_t used) {
    result.AddRow({name, Num(size, true), Num(used, true), "0", Num(size * used, true)});
  };
  // PgBouncer's columns are int4; a value past its range is shown as the largest int4 rather
  // than one a client parsing int4 would reject.
  auto int4 = [](int64_t value) { return Num(std::min<int64_t>(value, INT32_MAX)); };
  row("user_cache", sizeof(config::UserSecret), agent_.auth_file().size());
  row("db_cache", sizeof(config::DatabaseConfig), agent_.config().databases.size());
  row("pool_cache", sizeof(Pool), agent_.pools().size());
  row("server_cache", sizeof(ServerConn), servers);
  row("client_cache", sizeof(ClientConn), clients);
  // iobuf_cache: PgBouncer's I/O buffers are fixed-size slab objects; pgfleet's are the
  // loop's pooled evbuffers (agent/net/buffer_pool.h), held by a connection only while bytes
  // are in flight. An evbuffer has no fixed size (its chains follow what it holds), so size
  // is 0 and memtotal is the bytes the connections' buffers hold now.
  const net::BufferPool& buffers = net::BufferPool::Local();
  result.AddRow({"iobuf_cache", "0", Num(buffers.in_use(), true), Num(buffers.free_count(), true),
                 show::Int4(BufferedBytes(agent_))});
  rusage usage;
  getrusage(RUSAGE_SELF, &usage);
  // pgfleet's own row (PgBouncer has none): the peak resident size, in KiB units of 1024.
  result.AddRow({"max_rss", "1024", int4(usage.ru_maxrss), "0", int4(usage.ru_maxrss * 1024)});
  return result.Finish();
}

// pgfleet runs as one process per host and has no [peers] (the key loads with a warning), so
// PEERS and PEER_POOLS are PgBouncer's answer without peers: the columns, no rows.
std::string AdminConsole::ShowPeers() {
  return ResultSet({{"peer_id", kInt4}, {"host", kText}, {"port", kInt4}, {"pool_size", kInt4}})
      .Finish();
}

std::string AdminConsole::ShowPeerPools() {
  return ResultSet({{"peer_id", kInt4},
                    {"cl_active_cancel_req", kInt4},
                    {"cl_waiting_cancel_req", kInt4},
                    {"sv_active_cancel", kInt4},
                    {"sv_login", kInt4}})
      .Finish();
}

// pgfleet resolves host names when it connects and keeps no DNS cache of its own (PgBouncer's
// c-ares cache), so DNS_HOSTS and DNS_ZONES have PgBouncer's columns and no rows, as
// PgBouncer's own do with an empty cache.
std::string AdminConsole::ShowDnsHosts() {
  return ResultSet({{"hostname", kText}, {"ttl", kInt8}, {"addrs", kText}}).Finish();
}

std::string AdminConsole::ShowDnsZones() {
  return ResultSet({{"zonename", kText}, {"serial", kInt8}, {"count", kInt4}}).Finish();
}

std::string AdminConsole::ShowVersion() {
  ResultSet result({{"version", kText}});
  // Tools parse "PgBouncer X.Y.Z"; pgfleet answers as the PgBouncer version it matches.
  result.AddRow({kVersionLine});
  return result.Finish();
}

std::string AdminConsole::ShowState() {
  ResultSet result({{"key", kText}, {"value", kText}});
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
