#include "agent/metrics/metrics_server.h"

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <initializer_list>
#include <map>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "agent/admin/list_counts.h"
#include "agent/agent.h"
#include "agent/build_info.h"
#include "agent/event_loop.h"
#include "agent/pool.h"
#include "agent/stats.h"
#include "agent/stats_snapshot.h"
#include "common/config/config.h"
#include "common/log.h"
#include "common/prometheus_text.h"
#include "common/status_macros.h"

namespace pgfleet::agent {
namespace {

using Labels = std::initializer_list<std::pair<absl::string_view, absl::string_view>>;

// Microseconds as exact decimal seconds ("12.5", "0.000001", "0"): no float rounding,
// so a large counter never appears to go backwards.
std::string MicrosAsSeconds(uint64_t us) {
  std::string out = absl::StrCat(us / 1000000);
  if (const uint64_t frac = us % 1000000; frac != 0) {
    std::string digits = absl::StrCat(frac + 1000000).substr(1);  // Zero-padded to 6.
    while (digits.back() == '0') digits.pop_back();
    absl::StrAppend(&out, ".", digits);
  }
  return out;
}

// Builds the exposition text. Samples of one family must be contiguous, so callers emit
// a family header and then all its samples.
class Exposition {
 public:
  void Family(absl::string_view name, absl::string_view type, absl::string_view help) {
    common::AppendFamilyHeader(&out_, name, type, help);
  }
  void Sample(absl::string_view name, Labels labels, absl::string_view value) {
    common::AppendSample(&out_, name, labels, value);
  }
  std::string Take() { return std::move(out_); }

 private:
  std::string out_;
};

struct PoolMetric {
  const char* name;
  const char* type;
  const char* help;
  std::string (*value)(const PoolSnapshot& pool);
};

// SHOW POOLS, as pgbouncer_exporter maps it (labels database, user).
const PoolMetric kPoolMetrics[] = {
    {"pgbouncer_pools_client_active_connections", "gauge",
     "Client connections linked to server connection and able to process queries, shown as "
     "connection",
     [](const PoolSnapshot& p) { return absl::StrCat(p.cl_active); }},
    {"pgbouncer_pools_client_waiting_connections", "gauge",
     "Client connections waiting on a server connection, shown as connection",
     [](const PoolSnapshot& p) { return absl::StrCat(p.cl_waiting); }},
    // Cancel requests are forwarded at once on a connection of their own, never queued
    // behind a client: no client is ever in PgBouncer's cancel_req lists.
    {"pgbouncer_pools_client_active_cancel_connections", "gauge",
     "Client connections that have forwarded query cancellations to the server and are waiting "
     "for the server response",
     [](const PoolSnapshot&) { return std::string("0"); }},
    {"pgbouncer_pools_client_waiting_cancel_connections", "gauge",
     "Client connections that have not forwarded query cancellations to the server yet",
     [](const PoolSnapshot&) { return std::string("0"); }},
    {"pgbouncer_pools_server_active_connections", "gauge",
     "Server connections linked to a client connection, shown as connection",
     [](const PoolSnapshot& p) { return absl::StrCat(p.sv_active); }},
    {"pgbouncer_pools_server_active_cancel_connections", "gauge",
     "Server connections that are currently forwarding a cancel request",
     [](const PoolSnapshot& p) { return absl::StrCat(p.sv_active_cancel); }},
    {"pgbouncer_pools_server_being_canceled_connections", "gauge",
     "Servers that normally could become idle but are waiting to do so until all in-flight "
     "cancel requests have completed that were sent to cancel a query on this server",
     [](const PoolSnapshot& p) { return absl::StrCat(p.sv_being_canceled); }},
    {"pgbouncer_pools_server_idle_connections", "gauge",
     "Server connections idle and ready for a client query, shown as connection",
     [](const PoolSnapshot& p) { return absl::StrCat(p.sv_idle); }},
    {"pgbouncer_pools_server_used_connections", "gauge",
     "Server connections idle more than server_check_delay, needing server_check_query, shown "
     "as connection",
     [](const PoolSnapshot& p) { return absl::StrCat(p.sv_used); }},
    {"pgbouncer_pools_server_testing_connections", "gauge",
     "Server connections currently running either server_reset_query or server_check_query, "
     "shown as connection",
     [](const PoolSnapshot&) { return std::string("0"); }},
    {"pgbouncer_pools_server_login_connections", "gauge",
     "Server connections currently in the process of logging in, shown as connection",
     [](const PoolSnapshot& p) { return absl::StrCat(p.sv_login); }},
    {"pgbouncer_pools_client_maxwait_seconds", "gauge",
     "Age of oldest unserved client connection, shown as second",
     [](const PoolSnapshot& p) { return MicrosAsSeconds(p.maxwait_us); }},
    // pgfleet's own per-pool counters.
    {"pgfleet_pool_client_login_failures_total", "counter",
     "Client logins to this pool that failed authentication",
     [](const PoolSnapshot& p) { return absl::StrCat(p.stats.client_login_failures); }},
    {"pgfleet_pool_server_login_failures_total", "counter",
     "Server connections of this pool that failed to log in to PostgreSQL",
     [](const PoolSnapshot& p) { return absl::StrCat(p.stats.server_login_failures); }},
    {"pgfleet_pool_server_errors_total", "counter",
     "Server connections of this pool lost or closed because of a fault",
     [](const PoolSnapshot& p) { return absl::StrCat(p.stats.server_errors); }},
};

struct StatsMetric {
  const char* name;
  const char* help;
  std::string (*value)(const PoolStats& stats);
};

// SHOW STATS_TOTALS, as current pgbouncer_exporter names it (label database).
const StatsMetric kStatsMetrics[] = {
    {"pgbouncer_stats_totals_sql_transactions_pooled_total",
     "Total number of SQL transactions pooled",
     [](const PoolStats& s) { return absl::StrCat(s.xact_count); }},
    {"pgbouncer_stats_totals_queries_pooled_total", "Total number of SQL queries pooled",
     [](const PoolStats& s) { return absl::StrCat(s.query_count); }},
    {"pgbouncer_stats_totals_received_bytes_total",
     "Total volume in bytes of network traffic received by pgbouncer, shown as bytes",
     [](const PoolStats& s) { return absl::StrCat(s.bytes_received); }},
    {"pgbouncer_stats_totals_sent_bytes_total",
     "Total volume in bytes of network traffic sent by pgbouncer, shown as bytes",
     [](const PoolStats& s) { return absl::StrCat(s.bytes_sent); }},
    {"pgbouncer_stats_totals_server_in_transaction_seconds_total",
     "Total number of seconds spent by pgbouncer when connected to PostgreSQL in a "
     "transaction, either idle in transaction or executing queries",
     [](const PoolStats& s) { return MicrosAsSeconds(s.xact_time_us); }},
    {"pgbouncer_stats_totals_queries_duration_seconds_total",
     "Total number of seconds spent by pgbouncer when actively connected to PostgreSQL, "
     "executing queries",
     [](const PoolStats& s) { return MicrosAsSeconds(s.query_time_us); }},
    {"pgbouncer_stats_totals_client_wait_seconds_total",
     "Time spent by clients waiting for a server in seconds",
     [](const PoolStats& s) { return MicrosAsSeconds(s.wait_time_us); }},
    // PgBouncer 1.23/1.24's counters (SHOW STATS_TOTALS server_assignment_count,
    // client_parse_count, server_parse_count, bind_count), as the exporter maps them.
    {"pgbouncer_stats_totals_server_assignments_total",
     "Total number of times a server was assigned to a client",
     [](const PoolStats& s) { return absl::StrCat(s.server_assignment_count); }},
    {"pgbouncer_stats_totals_client_parses_total",
     "Total number of prepared statement Parse messages received from clients",
     [](const PoolStats& s) { return absl::StrCat(s.client_parse_count); }},
    {"pgbouncer_stats_totals_server_parses_total",
     "Total number of prepared statement Parse messages sent by pgbouncer to PostgreSQL",
     [](const PoolStats& s) { return absl::StrCat(s.server_parse_count); }},
    {"pgbouncer_stats_totals_binds_total",
     "Total number of prepared statements readied for execution with a Bind message",
     [](const PoolStats& s) { return absl::StrCat(s.bind_count); }},
};

// One database as SHOW DATABASES / SHOW STATS_TOTALS see it.
struct DatabaseRow {
  config::DatabaseConfig db;
  PoolStats stats;
  size_t server_count = 0;
};

// Configured databases (not the "*" fallback) plus databases that only exist as pools
// (auto-databases from "*", or entries dropped by a RELOAD while their pools live on).
// Counts and counters come from `snapshot`; the pools only lend their database settings.
std::map<std::string, DatabaseRow> CollectDatabases(const Agent& agent,
                                                    const StatsSnapshot& snapshot) {
  std::map<std::string, DatabaseRow> rows;
  for (const auto& [name, db] : agent.config().databases) {
    if (name == "*") continue;
    rows[name].db = db;
  }
  for (const auto& [key, pool] : agent.pools()) {
    auto [it, inserted] = rows.try_emplace(pool->db_name());
    if (inserted) it->second.db = pool->db();
  }
  for (const PoolSnapshot& pool : snapshot.pools) {
    DatabaseRow& row = rows[pool.database];
    row.stats += pool.stats;
    row.server_count += pool.server_count;
  }
  return rows;
}

}  // namespace

std::string RenderPrometheusMetrics(const Agent& agent, const StatsSnapshot& snapshot) {
  const config::Config& cfg = agent.config();
  Exposition out;

  out.Family("pgbouncer_up", "gauge", "The pgbouncer scrape succeeded");
  out.Sample("pgbouncer_up", {}, "1");
  // SHOW VERSION's line, as the exporter labels it.
  out.Family("pgbouncer_version_info", "gauge", "The pgbouncer version info");
  out.Sample("pgbouncer_version_info", {{"version", kVersionLine}}, "1");

  // SHOW LISTS, under the exporter's names; it publishes no gauge for the other rows.
  struct ListMetric {
    const char* list;
    const char* name;
    const char* help;
  };
  static const ListMetric kListMetrics[] = {
      {"databases", "pgbouncer_databases", "Count of databases"},
      {"users", "pgbouncer_users", "Count of users"},
      {"pools", "pgbouncer_pools", "Count of pools"},
      {"free_clients", "pgbouncer_free_clients", "Count of free clients"},
      {"used_clients", "pgbouncer_used_clients", "Count of used clients"},
      {"login_clients", "pgbouncer_login_clients", "Count of clients in login state"},
      {"free_servers", "pgbouncer_free_servers", "Count of free servers"},
      {"used_servers", "pgbouncer_used_servers", "Count of used servers"},
      {"dns_names", "pgbouncer_cached_dns_names", "Count of DNS names in the cache"},
      {"dns_zones", "pgbouncer_cached_dns_zones", "Count of DNS zones in the cache"},
      {"dns_queries", "pgbouncer_in_flight_dns_queries", "Count of in-flight DNS queries"},
  };
  const std::vector<ListCount> lists = ListCounts(agent);
  for (const ListMetric& metric : kListMetrics) {
    for (const ListCount& row : lists) {
      if (absl::string_view(row.name) != metric.list) continue;
      out.Family(metric.name, "gauge", metric.help);
      out.Sample(metric.name, {}, absl::StrCat(row.items));
    }
  }

  out.Family("pgbouncer_config_max_client_connections", "gauge",
             "Configured maximum number of client connections");
  out.Sample("pgbouncer_config_max_client_connections", {}, absl::StrCat(cfg.max_client_conn));
  out.Family("pgbouncer_config_max_user_connections", "gauge",
             "Configured maximum number of server connections per user");
  out.Sample("pgbouncer_config_max_user_connections", {}, absl::StrCat(cfg.max_user_connections));

  for (const PoolMetric& metric : kPoolMetrics) {
    out.Family(metric.name, metric.type, metric.help);
    for (const PoolSnapshot& pool : snapshot.pools) {
      out.Sample(metric.name, {{"database", pool.database}, {"user", pool.user}},
                 metric.value(pool));
    }
  }

  const std::map<std::string, DatabaseRow> databases = CollectDatabases(agent, snapshot);

  for (const StatsMetric& metric : kStatsMetrics) {
    out.Family(metric.name, "counter", metric.help);
    for (const auto& [name, row] : databases) {
      out.Sample(metric.name, {{"database", name}}, metric.value(row.stats));
    }
  }

  // SHOW DATABASES, with pgbouncer_exporter's labels.
  struct DatabaseMetric {
    const char* name;
    const char* help;
    std::string (*value)(const Agent& agent, const std::string& name, const DatabaseRow& row);
  };
  static const DatabaseMetric kDatabaseMetrics[] = {
      {"pgbouncer_databases_pool_size", "Maximum number of server connections",
       [](const Agent& a, const std::string&, const DatabaseRow& row) {
         return absl::StrCat(row.db.pool_size.value_or(a.config().default_pool_size));
       }},
      {"pgbouncer_databases_reserve_pool",
       "Maximum number of additional connections for this database",
       [](const Agent& a, const std::string&, const DatabaseRow& row) {
         return absl::StrCat(row.db.reserve_pool.value_or(a.config().reserve_pool_size));
       }},
      {"pgbouncer_databases_max_connections",
       "Maximum number of allowed connections for this database",
       [](const Agent& a, const std::string&, const DatabaseRow& row) {
         return absl::StrCat(row.db.max_db_connections.value_or(a.config().max_db_connections));
       }},
      {"pgbouncer_databases_current_connections", "Current number of connections for this database",
       [](const Agent&, const std::string&, const DatabaseRow& row) {
         return absl::StrCat(row.server_count);
       }},
      {"pgbouncer_databases_paused", "1 if this database is currently paused, else 0",
       [](const Agent& a, const std::string& name, const DatabaseRow&) {
         return std::string(a.IsPaused(name) ? "1" : "0");
       }},
      {"pgbouncer_databases_disabled", "1 if this database is currently disabled, else 0",
       [](const Agent& a, const std::string& name, const DatabaseRow&) {
         return std::string(a.IsDisabled(name) ? "1" : "0");
       }},
  };
  for (const DatabaseMetric& metric : kDatabaseMetrics) {
    out.Family(metric.name, "gauge", metric.help);
    for (const auto& [name, row] : databases) {
      const std::string port = absl::StrCat(row.db.port);
      const char* pool_mode = row.db.pool_mode ? config::PoolModeName(*row.db.pool_mode) : "";
      out.Sample(metric.name,
                 {{"name", name},
                  {"host", row.db.host},
                  {"port", port},
                  {"database", row.db.dbname.empty() ? name : row.db.dbname},
                  {"force_user", row.db.user},
                  {"pool_mode", pool_mode}},
                 metric.value(agent, name, row));
    }
  }

  out.Family("pgfleet_agent_clients", "gauge",
             "Client connections open on the agent, logging in or logged in");
  out.Sample("pgfleet_agent_clients", {}, absl::StrCat(snapshot.client_count));

  out.Family("pgfleet_agent_paused", "gauge",
             "1 while the whole agent is paused (PAUSE without a database)");
  out.Sample("pgfleet_agent_paused", {}, agent.IsPausedExactly("") ? "1" : "0");
  out.Family("pgfleet_agent_suspended", "gauge", "1 while the agent is SUSPENDed");
  out.Sample("pgfleet_agent_suspended", {}, snapshot.suspended ? "1" : "0");
  out.Family("pgfleet_agent_auth_failures_total", "counter",
             "Failed client logins (wrong password, unknown user), every source address");
  out.Sample("pgfleet_agent_auth_failures_total", {},
             absl::StrCat(agent.auth_failures().failures_total()));
  out.Family("pgfleet_agent_auth_failures_delayed_total", "counter",
             "Failed logins answered late because their address was past auth_failure_burst");
  out.Sample("pgfleet_agent_auth_failures_delayed_total", {},
             absl::StrCat(agent.auth_failures().delayed_total()));
  // Fleet mode: which controller-pushed config version runs, and the link's state.
  const ControlPlaneStatus control_plane = agent.control_plane_status();
  out.Family("pgfleet_config_version", "gauge",
             "Config version pushed by the controller that the agent runs (0: its local file)");
  out.Sample("pgfleet_config_version", {}, absl::StrCat(control_plane.applied_config_version));
  out.Family("pgfleet_agent_controller_link_up", "gauge",
             "1 while the stream to pgfleet-controller is connected (0 also without --controller)");
  out.Sample("pgfleet_agent_controller_link_up", {}, control_plane.link_up ? "1" : "0");
  out.Family("pgfleet_agent_controller_configured", "gauge",
             "1 when the agent was started with --controller (fleet mode): link_up 0 is then a "
             "link down, not a standalone agent");
  out.Sample("pgfleet_agent_controller_configured", {}, control_plane.configured ? "1" : "0");
  // Without --controller there is no link: the family is left out (no empty families).
  if (control_plane.configured) {
    out.Family("pgfleet_agent_controller_link_state", "gauge",
               "1 for the state of the stream to pgfleet-controller (connecting, connected, "
               "backoff, stopped); only with --controller");
    for (const char* state : {"connecting", "connected", "backoff", "stopped"}) {
      out.Sample("pgfleet_agent_controller_link_state", {{"state", state}},
                 control_plane.link_state == state ? "1" : "0");
    }
  }
  out.Family("pgfleet_agent_restart_pending", "gauge",
             "Settings of the running config that take effect only after a restart (0: none)");
  out.Sample("pgfleet_agent_restart_pending", {}, absl::StrCat(agent.restart_pending().size()));

  return out.Take();
}

absl::StatusOr<MetricsListenAddress> ParseMetricsListen(absl::string_view listen) {
  MetricsListenAddress address;
  const size_t colon = listen.rfind(':');
  // A bare port ("9127") or ":9127" means loopback: the endpoint names every database and user,
  // so listening beyond this host must be asked for ("*:9127", "0.0.0.0:9127", an address).
  absl::string_view host = colon == absl::string_view::npos ? "" : listen.substr(0, colon);
  absl::string_view port = colon == absl::string_view::npos ? listen : listen.substr(colon + 1);
  if (!absl::SimpleAtoi(port, &address.port) || address.port < 0 || address.port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        "metrics listen address '", listen, "': expected [host:]port with a port of 0-65535"));
  }
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  } else if (absl::StrContains(host, ':')) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics listen address '", listen, "': write IPv6 addresses as [addr]:port"));
  }
  if (host.empty() || host == "localhost") {
    address.host = "127.0.0.1";
  } else if (host == "*") {
    address.host = "0.0.0.0";
  } else {
    address.host = std::string(host);
  }
  return address;
}

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(Agent& agent,
                                                                    const std::string& listen,
                                                                    int inherited_fd) {
  PGF_ASSIGN_OR_RETURN(MetricsListenAddress address, ParseMetricsListen(listen));
  const std::string& host = address.host;
  const int port = address.port;

  std::unique_ptr<MetricsServer> server(new MetricsServer(agent));
  server->http_ = evhttp_new(agent.loop().base());
  if (server->http_ == nullptr) return absl::InternalError("evhttp_new failed");
  // Accept every method so the handler answers 405, not libevent's 501.
  evhttp_set_allowed_methods(server->http_, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
                                                EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                                EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
                                                EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
  evhttp_set_gencb(server->http_, &MetricsServer::OnRequest, server.get());
  evhttp_set_timeout(server->http_, 30);
  evhttp_set_max_headers_size(server->http_, 16 * 1024);
  evhttp_set_max_body_size(server->http_, 64 * 1024);

  // A hand-over's new process serves the old one's socket (agent/handover.h); evhttp owns
  // and closes it from here on.
  evhttp_bound_socket* bound = inherited_fd >= 0
                                   ? evhttp_accept_socket_with_handle(server->http_, inherited_fd)
                                   : evhttp_bind_socket_with_handle(server->http_, host.c_str(),
                                                                    static_cast<uint16_t>(port));
  if (bound == nullptr && inherited_fd >= 0) close(inherited_fd);
  if (bound == nullptr) {
    return absl::UnavailableError(
        absl::StrCat("metrics: cannot listen on ", listen, ": ", strerror(errno)));
  }
  sockaddr_storage addr{};
  socklen_t len = sizeof(addr);
  if (getsockname(evhttp_bound_socket_get_fd(bound), reinterpret_cast<sockaddr*>(&addr), &len) !=
      0) {
    return absl::InternalError(absl::StrCat("metrics: getsockname: ", strerror(errno)));
  }
  if (addr.ss_family == AF_INET) {
    server->port_ = ntohs(reinterpret_cast<const sockaddr_in*>(&addr)->sin_port);
  } else if (addr.ss_family == AF_INET6) {
    server->port_ = ntohs(reinterpret_cast<const sockaddr_in6*>(&addr)->sin6_port);
  }
  server->fd_ = evhttp_bound_socket_get_fd(bound);
  PGF_INFO("metrics", "serving Prometheus metrics on %s:%d", host, server->port_);
  return server;
}

MetricsServer::~MetricsServer() {
  if (http_ != nullptr) evhttp_free(http_);
}

void MetricsServer::OnRequest(evhttp_request* request, void* arg) {
  static_cast<MetricsServer*>(arg)->HandleRequest(request);
}

void MetricsServer::HandleRequest(evhttp_request* request) {
  const evhttp_uri* uri = evhttp_request_get_evhttp_uri(request);
  const char* raw_path = uri != nullptr ? evhttp_uri_get_path(uri) : nullptr;
  const absl::string_view path = raw_path != nullptr ? raw_path : "";
  evkeyvalq* headers = evhttp_request_get_output_headers(request);

  const auto reply = [&](int code, const char* reason, absl::string_view content_type,
                         absl::string_view body) {
    evhttp_add_header(headers, "Content-Type", std::string(content_type).c_str());
    evbuffer* buf = evbuffer_new();
    // libevent writes whatever body it is given, even to HEAD.
    if (evhttp_request_get_command(request) != EVHTTP_REQ_HEAD) {
      evbuffer_add(buf, body.data(), body.size());
    }
    evhttp_send_reply(request, code, reason, buf);
    evbuffer_free(buf);
  };
  constexpr absl::string_view kTextPlain = "text/plain; charset=utf-8";

  if (path != "/metrics" && path != "/healthz") {
    reply(HTTP_NOTFOUND, "Not Found", kTextPlain, "not found\n");
    return;
  }
  const evhttp_cmd_type method = evhttp_request_get_command(request);
  if (method != EVHTTP_REQ_GET && method != EVHTTP_REQ_HEAD) {
    evhttp_add_header(headers, "Allow", "GET, HEAD");
    reply(HTTP_BADMETHOD, "Method Not Allowed", kTextPlain, "method not allowed\n");
    return;
  }
  if (path == "/healthz") {
    reply(HTTP_OK, "OK", kTextPlain, "ok\n");
    return;
  }
  reply(HTTP_OK, "OK", "text/plain; version=0.0.4; charset=utf-8",
        method == EVHTTP_REQ_HEAD ? std::string()
                                  : RenderPrometheusMetrics(agent_, agent_.Snapshot()));
}

}  // namespace pgfleet::agent
