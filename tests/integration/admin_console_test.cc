// The admin console ("pgbouncer" virtual database) and the /metrics endpoint of a real
// pgfleet-agent in front of a real PostgreSQL 15: SHOW output as PgBouncer 1.18 prints it,
// access control, PAUSE/RESUME/KILL/DISABLE/RECONNECT/WAIT_CLOSE/KILL_CLIENT semantics, RELOAD
// and SET, Prometheus metrics, SHUTDOWN WAIT_FOR_CLIENTS.
//
// One PostgreSQL cluster serves the whole binary; every test starts its own agent. Nothing
// waits with a bare sleep: tests poll a condition with a deadline, and "still not answered"
// checks watch a connection for a bounded window after the agent demonstrably took the command.

#include <arpa/inet.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/status_macros.h"
#include "gtest/gtest.h"
#include "tests/testutil/agent_process.h"
#include "tests/testutil/console.h"
#include "tests/testutil/fixtures.h"
#include "tests/testutil/free_port.h"
#include "tests/testutil/http.h"
#include "tests/testutil/postgres_env.h"
#include "tests/testutil/pq.h"
#include "tests/testutil/process.h"
#include "tests/testutil/status_testing.h"
#include "tests/testutil/wait.h"

namespace pgfleet::testutil {
namespace {

constexpr char kStatsUser[] = "stats";
constexpr char kStatsPassword[] = "stats-Secret-2";
// In auth_file, but in neither admin_users nor stats_users.
constexpr char kOutsider[] = "outsider";
constexpr char kOutsiderPassword[] = "outsider-Secret-3";

[[maybe_unused]] auto* const kCluster = RegisterSharedPostgres();

constexpr int64_t kNotANumber = std::numeric_limits<int64_t>::min();

int64_t ToInt(const std::string& text) {
  int64_t value = 0;
  return absl::SimpleAtoi(text, &value) ? value : kNotANumber;
}

struct AsyncOutcome {
  std::string tag;
  Rows rows;
};

// Collects the outcome of a PQsendQuery within `timeout`: the tag and rows of the last result,
// or the first error. Reads up to the end of the results, so the connection is reusable.
absl::StatusOr<AsyncOutcome> AwaitResult(PGconn* conn, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  AsyncOutcome outcome;
  absl::Status error = absl::OkStatus();
  bool any = false;
  while (true) {
    absl::StatusOr<PgResult> result = GetResultWithin(conn, deadline - absl::Now());
    if (!result.ok()) return result.status();
    if (*result == nullptr) break;
    any = true;
    const ExecStatusType status = PQresultStatus(result->get());
    if (status == PGRES_TUPLES_OK || status == PGRES_COMMAND_OK) {
      outcome.tag = PQcmdStatus(result->get());
      outcome.rows.clear();
      for (int r = 0; r < PQntuples(result->get()); ++r) {
        std::vector<std::string> row;
        for (int i = 0; i < PQnfields(result->get()); ++i) {
          row.push_back(PQgetvalue(result->get(), r, i));
        }
        outcome.rows.push_back(std::move(row));
      }
    } else if (error.ok()) {
      error = ResultError(conn, result->get());
    }
    // A dead connection yields no terminating null result.
    if (PQstatus(conn) == CONNECTION_BAD) break;
  }
  if (!error.ok()) return error;
  if (!any) return absl::InternalError("no result at all");
  return outcome;
}

// A bounded "still not answered" check: the query sent on `conn` produces no result during
// `window`. Used only after the agent has demonstrably taken the command.
absl::Status StaysBusyFor(PGconn* conn, absl::Duration window) {
  const absl::Time end = absl::Now() + window;
  while (true) {
    if (PQconsumeInput(conn) != 1) return ResultError(conn, nullptr);
    if (PQisBusy(conn) == 0) {
      return absl::FailedPreconditionError("the command was answered while it should still wait");
    }
    const absl::Duration left = end - absl::Now();
    if (left <= absl::ZeroDuration()) return absl::OkStatus();
    pollfd pfd = {PQsocket(conn), POLLIN, 0};
    poll(&pfd, 1, static_cast<int>(std::min<int64_t>(absl::ToInt64Milliseconds(left) + 1, 20)));
  }
}

absl::StatusOr<int64_t> AppdbBackends() {
  absl::StatusOr<Rows> rows = g_pg->Exec(kAppdbBackendsSql);
  if (!rows.ok()) return rows.status();
  return ToInt((*rows)[0][0]);
}

absl::Status WaitForAppdbBackends(int64_t want) {
  return PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        absl::StatusOr<int64_t> n = AppdbBackends();
        if (!n.ok()) return n.status();
        *note = absl::StrCat(*n, " backends on appdb");
        return *n == want;
      },
      absl::Seconds(15), absl::StrCat("PostgreSQL to show ", want, " backends on appdb"));
}

absl::Status WaitForBackendState(const std::string& pid, const std::string& state) {
  return PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        absl::StatusOr<Rows> rows = g_pg->Exec(
            absl::StrCat("select coalesce(state, '') from pg_stat_activity where pid = ", pid));
        if (!rows.ok()) return rows.status();
        *note = rows->empty() ? "no such backend" : (*rows)[0][0];
        return !rows->empty() && (*rows)[0][0] == state;
      },
      absl::Seconds(10), absl::StrCat("backend ", pid, " to be '", state, "'"));
}

// Prometheus text: the value of the sample `name` whose labels include every `labels` pair.
std::optional<double> MetricValue(const std::string& body, const std::string& name,
                                  const std::vector<std::string>& labels) {
  for (absl::string_view line : absl::StrSplit(body, '\n')) {
    if (line.empty() || line[0] == '#') continue;
    if (!absl::StartsWith(line, name)) continue;
    absl::string_view rest = line.substr(name.size());
    if (rest.empty() || (rest[0] != '{' && rest[0] != ' ')) continue;  // Longer metric name.
    absl::string_view label_text;
    if (rest[0] == '{') {
      const size_t close = rest.find('}');
      if (close == absl::string_view::npos) continue;
      label_text = rest.substr(1, close - 1);
      rest = rest.substr(close + 1);
    }
    bool all = true;
    for (const std::string& label : labels) {
      if (!absl::StrContains(label_text, label)) all = false;
    }
    if (!all) continue;
    double value = 0;
    if (absl::SimpleAtod(absl::StripAsciiWhitespace(rest), &value)) return value;
  }
  return std::nullopt;
}

void CollectNotice(void* arg, const PGresult* result) {
  static_cast<std::vector<std::string>*>(arg)->push_back(PQresultErrorMessage(result));
}

class AdminConsoleTest : public AgentTest {
 protected:
  AgentOptions BaseOptions(const std::map<std::string, std::string>& settings) const {
    std::map<std::string, std::string> merged = {
        {"auth_type", "scram-sha-256"}, {"pool_mode", "transaction"}, {"default_pool_size", "2"},
        {"max_client_conn", "200"},     {"admin_users", kAdminUser},  {"stats_users", kStatsUser}};
    for (const auto& [key, value] : settings) merged[key] = value;
    AgentOptions options = AppAgentOptions(merged);
    options.userlist = {{kAppUser, kAppPassword},
                        {kAdminUser, kAdminPassword},
                        {kStatsUser, kStatsPassword},
                        {kOutsider, kOutsiderPassword}};
    return options;
  }

  void StartAgent(const std::map<std::string, std::string>& settings = {}) {
    StartAgentWith(BaseOptions(settings));
  }

  std::string AppConn(const std::string& application_name = "") const {
    std::string conninfo = agent_->ConnString(kAppDb, kAppUser, kAppPassword);
    if (!application_name.empty()) {
      absl::StrAppend(&conninfo, " application_name=", ConnInfoQuote(application_name));
    }
    return conninfo;
  }
  absl::StatusOr<PgConn> ConnectApp(const std::string& application_name = "") const {
    return Connect(AppConn(application_name));
  }
  absl::StatusOr<PgConn> ConnectConsole(const std::string& user = kAdminUser,
                                        const std::string& password = kAdminPassword) const {
    return Connect(agent_->ConnString("pgbouncer", user, password));
  }

  // The appdb/app row of SHOW POOLS.
  static absl::StatusOr<std::vector<std::string>> PoolRow(PGconn* console, Table* table_out) {
    absl::StatusOr<Table> pools = Show(console, "SHOW POOLS");
    if (!pools.ok()) return pools.status();
    Rows rows = pools->Where({{"database", kAppDb}, {"user", kAppUser}});
    if (rows.size() != 1) {
      return absl::NotFoundError(absl::StrCat("no single appdb/app pool row:\n", pools->Dump()));
    }
    *table_out = *pools;
    return rows[0];
  }
  static absl::StatusOr<int64_t> PoolInt(PGconn* console, const std::string& column) {
    Table table;
    absl::StatusOr<std::vector<std::string>> row = PoolRow(console, &table);
    if (!row.ok()) return row.status();
    return ToInt(table.At(*row, column));
  }
  // Polls SHOW POOLS until the appdb pool's `column` is at least `at_least`.
  static absl::Status WaitForPoolValue(PGconn* console, const std::string& column, int64_t at_least,
                                       absl::Duration timeout = absl::Seconds(10)) {
    return PollUntil(
        [&](std::string* note) -> absl::StatusOr<bool> {
          absl::StatusOr<int64_t> value = PoolInt(console, column);
          if (!value.ok()) {
            *note = value.status().ToString();
            return false;
          }
          *note = absl::StrCat(column, " = ", *value);
          return *value >= at_least;
        },
        timeout, absl::StrCat("SHOW POOLS ", column, " >= ", at_least));
  }
  // One column of the appdb row of SHOW DATABASES.
  static absl::StatusOr<std::string> DatabaseValue(PGconn* console, const std::string& column) {
    absl::StatusOr<Table> dbs = Show(console, "SHOW DATABASES");
    if (!dbs.ok()) return dbs.status();
    Rows rows = dbs->Where({{"name", kAppDb}});
    if (rows.size() != 1) return absl::NotFoundError(absl::StrCat("no appdb row:\n", dbs->Dump()));
    return dbs->At(rows[0], column);
  }
  static absl::StatusOr<std::string> ConfigValue(PGconn* console, const std::string& key) {
    absl::StatusOr<Table> config = Show(console, "SHOW CONFIG");
    if (!config.ok()) return config.status();
    Rows rows = config->Where({{"key", key}});
    if (rows.size() != 1) return absl::NotFoundError(absl::StrCat("no SHOW CONFIG row ", key));
    return config->At(rows[0], "value");
  }
  static absl::StatusOr<std::string> StateValue(PGconn* console, const std::string& key) {
    absl::StatusOr<Table> state = Show(console, "SHOW STATE");
    if (!state.ok()) return state.status();
    Rows rows = state->Where({{"key", key}});
    if (rows.size() != 1) return absl::NotFoundError(absl::StrCat("no SHOW STATE row ", key));
    return state->At(rows[0], "value");
  }

  // The agent is alive and serves a normal client.
  void ExpectAgentServes() {
    ASSERT_TRUE(agent_->IsRunning()) << "agent died\n" << agent_->Diagnostics();
    PGF_ASSERT_OK_AND_ASSIGN(PgConn conn, ConnectApp());
    PGF_ASSERT_OK_AND_ASSIGN(int64_t value, ScalarInt(conn.get(), "select 40 + 2"));
    EXPECT_EQ(value, 42);
  }
};

// --- 1. every SHOW: PgBouncer 1.25's columns and types, values that follow state -------------

// src/admin.c socket_header (1.23+: replication, prepared_statements, id).
const std::vector<std::string> kConnectionColumns = {"type",
                                                     "user",
                                                     "database",
                                                     "replication",
                                                     "state",
                                                     "addr",
                                                     "port",
                                                     "local_addr",
                                                     "local_port",
                                                     "connect_time",
                                                     "request_time",
                                                     "wait",
                                                     "wait_us",
                                                     "close_needed",
                                                     "ptr",
                                                     "link",
                                                     "remote_pid",
                                                     "tls",
                                                     "application_name",
                                                     "prepared_statements",
                                                     "id"};
constexpr char kConnectionTypes[] = "ssssssisiTTiiississii";

// One SHOW: PgBouncer 1.25's column names in order and their types, in PgBouncer's own
// RowDescription letters (testutil ColumnMismatch), copied from src/admin.c and src/stats.c.
struct ShowSpec {
  std::string command;
  std::vector<std::string> columns;
  std::string tupdesc;
  bool expect_rows = true;
};

std::vector<ShowSpec> ShowSpecs() {
  std::vector<std::string> socket_columns = kConnectionColumns;
  for (const char* name : {"recv_pos", "pkt_pos", "pkt_remain", "send_pos", "send_remain",
                           "pkt_avail", "send_avail"}) {
    socket_columns.push_back(name);
  }
  const std::string socket_types = absl::StrCat(kConnectionTypes, "iiiiiii");
  const std::vector<std::string> stats_totals = {"database",           "server_assignment_count",
                                                 "xact_count",         "query_count",
                                                 "bytes_received",     "bytes_sent",
                                                 "xact_time",          "query_time",
                                                 "wait_time",          "client_parse_count",
                                                 "server_parse_count", "bind_count"};
  // PgBouncer keeps the avg_ prefix on the last three columns of STATS_AVERAGES.
  const std::vector<std::string> stats_averages = {"database",
                                                   "server_assignment_count",
                                                   "xact_count",
                                                   "query_count",
                                                   "bytes_received",
                                                   "bytes_sent",
                                                   "xact_time",
                                                   "query_time",
                                                   "wait_time",
                                                   "avg_client_parse_count",
                                                   "avg_server_parse_count",
                                                   "avg_bind_count"};
  const std::vector<std::string> stats = {"database",
                                          "total_server_assignment_count",
                                          "total_xact_count",
                                          "total_query_count",
                                          "total_received",
                                          "total_sent",
                                          "total_xact_time",
                                          "total_query_time",
                                          "total_wait_time",
                                          "total_client_parse_count",
                                          "total_server_parse_count",
                                          "total_bind_count",
                                          "avg_server_assignment_count",
                                          "avg_xact_count",
                                          "avg_query_count",
                                          "avg_recv",
                                          "avg_sent",
                                          "avg_xact_time",
                                          "avg_query_time",
                                          "avg_wait_time",
                                          "avg_client_parse_count",
                                          "avg_server_parse_count",
                                          "avg_bind_count"};
  return {
      {"SHOW POOLS",
       {"database", "user", "cl_active", "cl_waiting", "cl_active_cancel_req",
        "cl_waiting_cancel_req", "sv_active", "sv_active_cancel", "sv_being_canceled", "sv_idle",
        "sv_used", "sv_tested", "sv_login", "maxwait", "maxwait_us", "pool_mode",
        "load_balance_hosts"},
       "ssiiiiiiiiiiiiiss"},
      {"SHOW DATABASES",
       {"name", "host", "port", "database", "force_user", "pool_size", "min_pool_size",
        "reserve_pool_size", "server_lifetime", "pool_mode", "load_balance_hosts",
        "max_connections", "current_connections", "max_client_connections",
        "current_client_connections", "paused", "disabled"},
       "ssissiiiissiiiiii"},
      {"SHOW CLIENTS", kConnectionColumns, kConnectionTypes},
      {"SHOW SERVERS", kConnectionColumns, kConnectionTypes},
      {"SHOW SOCKETS", socket_columns, socket_types},
      // Rows only for connections with bytes buffered: none here.
      {"SHOW ACTIVE_SOCKETS", socket_columns, socket_types, false},
      {"SHOW STATS", stats, "sNNNNNNNNNNNNNNNNNNNNNN"},
      {"SHOW STATS_TOTALS", stats_totals, "sNNNNNNNNNNN"},
      {"SHOW STATS_AVERAGES", stats_averages, "sNNNNNNNNNNN"},
      {"SHOW TOTALS", {"name", "value"}, "sN"},
      {"SHOW LISTS", {"list", "items"}, "si"},
      {"SHOW USERS",
       {"name", "pool_size", "reserve_pool_size", "pool_mode", "max_user_connections",
        "current_connections", "max_user_client_connections", "current_client_connections"},
       "ssssiiii"},
      {"SHOW CONFIG", {"key", "value", "default", "changeable"}, "ssss"},
      {"SHOW MEM", {"name", "size", "used", "free", "memtotal"}, "siiii"},
      {"SHOW FDS",
       {"fd", "task", "user", "database", "addr", "port", "cancel", "link", "client_encoding",
        "std_strings", "datestyle", "timezone", "password", "scram_client_key", "scram_server_key"},
       "issssiqisssssbb"},
      {"SHOW VERSION", {"version"}, "s"},
      {"SHOW STATE", {"key", "value"}, "ss"},
      // No [peers] and no DNS cache in pgfleet: PgBouncer's columns, no rows.
      {"SHOW PEERS", {"peer_id", "host", "port", "pool_size"}, "isii", false},
      {"SHOW PEER_POOLS",
       {"peer_id", "cl_active_cancel_req", "cl_waiting_cancel_req", "sv_active_cancel", "sv_login"},
       "iiiii",
       false},
      {"SHOW DNS_HOSTS", {"hostname", "ttl", "addrs"}, "sqs", false},
      {"SHOW DNS_ZONES", {"zonename", "serial", "count"}, "sqi", false},
  };
}

TEST_F(AdminConsoleTest, EveryShowHasPgBouncer125ColumnsAndTypes) {
  ASSERT_NO_FATAL_FAILURE(StartAgent());
  // A connected client with a server behind it, so every list has something to show.
  PGF_ASSERT_OK_AND_ASSIGN(PgConn app, ConnectApp("columns_test"));
  PGF_ASSERT_OK(Query(app.get(), "select 1"));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn console, ConnectConsole());

  for (const ShowSpec& spec : ShowSpecs()) {
    SCOPED_TRACE(spec.command);
    absl::StatusOr<Table> table = Show(console.get(), spec.command);
    ASSERT_TRUE(table.ok()) << table.status();
    EXPECT_EQ(ColumnMismatch(*table, spec.columns, spec.tupdesc), "") << table->Dump();
    // A number column holds numbers (or NULL): a client reading int4 or numeric can parse it.
    for (size_t i = 0; i < table->columns.size() && i < spec.tupdesc.size(); ++i) {
      if (std::string("iqN").find(spec.tupdesc[i]) == std::string::npos) continue;
      for (const std::vector<std::string>& row : table->rows) {
        if (row[i].empty()) continue;  // NULL
        EXPECT_NE(ToInt(row[i]), kNotANumber)
            << "column " << table->columns[i] << ": '" << row[i] << "'";
      }
    }
    if (spec.expect_rows) {
      EXPECT_FALSE(table->rows.empty()) << table->Dump();
    }
  }

  // Lower case works as in PgBouncer.
  absl::StatusOr<Table> lower = Show(console.get(), "show pools;");
  ASSERT_TRUE(lower.ok()) << lower.status();
  EXPECT_EQ(lower->Col("cl_active"), 2);

  // SHOW HELP answers with a NOTICE listing the commands and a "SHOW" tag.
  std::vector<std::string> notices;
  PQsetNoticeReceiver(console.get(), &CollectNotice, &notices);
  PgResult help(PQexec(console.get(), "SHOW HELP"));
  ASSERT_NE(help, nullptr);
  EXPECT_EQ(PQresultStatus(help.get()), PGRES_COMMAND_OK) << PQerrorMessage(console.get());
  EXPECT_STREQ(PQcmdStatus(help.get()), "SHOW");
  PQsetNoticeReceiver(console.get(), nullptr, nullptr);
  const std::string all_notices = absl::StrJoin(notices, "\n");
  EXPECT_TRUE(absl::StrContains(all_notices, "SHOW")) << all_notices;
  EXPECT_TRUE(absl::StrContains(all_notices, "PAUSE")) << all_notices;

  // SHOW VERSION: tools parse "PgBouncer X.Y".
  PGF_ASSERT_OK_AND_ASSIGN(Table version, Show(console.get(), "SHOW VERSION"));
  ASSERT_EQ(version.rows.size(), 1u);
  EXPECT_TRUE(absl::StartsWith(version.rows[0][0], "PgBouncer 1.25")) << version.rows[0][0];

  // SHOW LISTS rows in PgBouncer 1.25's order, peers and peer_pools (none in pgfleet) included.
  PGF_ASSERT_OK_AND_ASSIGN(Table lists, Show(console.get(), "SHOW LISTS"));
  std::vector<std::string> list_names;
  for (const std::vector<std::string>& row : lists.rows) list_names.push_back(row[0]);
  EXPECT_EQ(list_names, (std::vector<std::string>{
                            "databases", "users", "peers", "pools", "peer_pools", "free_clients",
                            "used_clients", "login_clients", "free_servers", "used_servers",
                            "dns_names", "dns_zones", "dns_queries", "dns_pending"}));
  EXPECT_EQ(lists.At(lists.Where({{"list", "peers"}})[0], "items"), "0");
  EXPECT_EQ(lists.At(lists.Where({{"list", "peer_pools"}})[0], "items"), "0");

  // SHOW TOTALS rows: PgBouncer's order and names (each PgStats field with total_/avg_).
  PGF_ASSERT_OK_AND_ASSIGN(Table totals, Show(console.get(), "SHOW TOTALS"));
  std::vector<std::string> total_names;
  for (const std::vector<std::string>& row : totals.rows) total_names.push_back(row[0]);
  std::vector<std::string> expected_totals;
  for (const char* prefix : {"total_", "avg_"}) {
    for (const char* field :
         {"server_assignment_count", "xact_count", "query_count", "client_bytes", "server_bytes",
          "xact_time", "query_time", "wait_time", "ps_client_parse_count", "ps_server_parse_count",
          "ps_bind_count"}) {
      expected_totals.push_back(absl::StrCat(prefix, field));
    }
  }
  EXPECT_EQ(total_names, expected_totals);

  // SHOW USERS lists the console's own user "pgbouncer", as PgBouncer's user list has it.
  PGF_ASSERT_OK_AND_ASSIGN(Table users, Show(console.get(), "SHOW USERS"));
  EXPECT_EQ(users.Where({{"name", "pgbouncer"}}).size(), 1u) << users.Dump();

  // SHOW FDS shows every cancel key: admin_users only, as in PgBouncer; other SHOWs are open to
  // stats_users.
  PGF_ASSERT_OK_AND_ASSIGN(PgConn stats_console, ConnectConsole(kStatsUser, kStatsPassword));
  absl::StatusOr<Table> stats_fds = Show(stats_console.get(), "SHOW FDS");
  EXPECT_FALSE(stats_fds.ok()) << stats_fds->Dump();
  if (!stats_fds.ok()) {
    EXPECT_TRUE(absl::StrContains(stats_fds.status().message(), "admin access needed"))
        << stats_fds.status();
  }
  PGF_EXPECT_OK(Show(stats_console.get(), "SHOW POOLS").status());

  // The empty string, not NULL, where PgBouncer sends one: a client without a server has no
  // link, a plain-text one no tls.
  PgResult clients(PQexec(console.get(), "SHOW CLIENTS"));
  ASSERT_EQ(PQresultStatus(clients.get()), PGRES_TUPLES_OK);
  const int link = PQfnumber(clients.get(), "link");
  const int tls = PQfnumber(clients.get(), "tls");
  const int user = PQfnumber(clients.get(), "user");
  for (int row = 0; row < PQntuples(clients.get()); ++row) {
    if (std::string(PQgetvalue(clients.get(), row, user)) != kAppUser) continue;
    EXPECT_FALSE(PQgetisnull(clients.get(), row, link));
    EXPECT_FALSE(PQgetisnull(clients.get(), row, tls));
    EXPECT_STREQ(PQgetvalue(clients.get(), row, tls), "");
  }
}

TEST_F(AdminConsoleTest, ShowValuesFollowPoolState) {
  ASSERT_NO_FATAL_FAILURE(StartAgent());
  constexpr int kQueries = 25;
  PGF_ASSERT_OK_AND_ASSIGN(PgConn counter, ConnectApp("counter"));
  for (int i = 0; i < kQueries; ++i) {
    PGF_ASSERT_OK_AND_ASSIGN(int64_t v, ScalarInt(counter.get(), absl::StrCat("select ", i)));
    ASSERT_EQ(v, i);
  }
  // A holds a server in an open transaction; B used the other one and gave it back.
  PGF_ASSERT_OK_AND_ASSIGN(PgConn a, ConnectApp("client_a"));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn b, ConnectApp("client_b"));
  PGF_ASSERT_OK(Query(a.get(), "BEGIN"));
  PGF_ASSERT_OK_AND_ASSIGN(std::string pid_a, ScalarText(a.get(), "select pg_backend_pid()"));
  PGF_ASSERT_OK(Query(b.get(), "BEGIN"));
  PGF_ASSERT_OK_AND_ASSIGN(std::string pid_b, ScalarText(b.get(), "select pg_backend_pid()"));
  PGF_ASSERT_OK(Query(b.get(), "COMMIT"));
  ASSERT_NE(pid_a, pid_b);

  PGF_ASSERT_OK_AND_ASSIGN(PgConn console, ConnectConsole());

  // SHOW POOLS agrees with what PostgreSQL sees.
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        absl::StatusOr<int64_t> sv_active = PoolInt(console.get(), "sv_active");
        absl::StatusOr<int64_t> sv_idle = PoolInt(console.get(), "sv_idle");
        if (!sv_active.ok()) return sv_active.status();
        if (!sv_idle.ok()) return sv_idle.status();
        absl::StatusOr<Rows> pg = g_pg->Exec(
            "select coalesce(sum((state = 'idle in transaction')::int), 0), "
            "coalesce(sum((state = 'idle')::int), 0) from pg_stat_activity "
            "where datname = 'appdb' and backend_type = 'client backend'");
        if (!pg.ok()) return pg.status();
        *note = absl::StrCat("SHOW POOLS sv_active=", *sv_active, " sv_idle=", *sv_idle,
                             "; pg_stat_activity idle in transaction=", (*pg)[0][0],
                             " idle=", (*pg)[0][1]);
        return *sv_active == ToInt((*pg)[0][0]) && *sv_idle == ToInt((*pg)[0][1]) &&
               *sv_active == 1 && *sv_idle == 1;
      },
      absl::Seconds(10), "SHOW POOLS sv_active/sv_idle to match pg_stat_activity"));
  {
    Table pools;
    PGF_ASSERT_OK_AND_ASSIGN(std::vector<std::string> row, PoolRow(console.get(), &pools));
    EXPECT_EQ(pools.At(row, "cl_active"), "3") << pools.Dump();
    EXPECT_EQ(pools.At(row, "cl_waiting"), "0") << pools.Dump();
    EXPECT_EQ(pools.At(row, "sv_used"), "0") << pools.Dump();
    EXPECT_EQ(pools.At(row, "sv_login"), "0") << pools.Dump();
    EXPECT_EQ(pools.At(row, "maxwait"), "0") << pools.Dump();
    EXPECT_EQ(pools.At(row, "pool_mode"), "transaction") << pools.Dump();
  }

  // SHOW SERVERS: exactly PostgreSQL's two backends; A's is active and linked to A.
  PGF_ASSERT_OK_AND_ASSIGN(Table servers, Show(console.get(), "SHOW SERVERS"));
  PGF_ASSERT_OK_AND_ASSIGN(Table clients, Show(console.get(), "SHOW CLIENTS"));
  Rows appdb_servers = servers.Where({{"database", kAppDb}});
  ASSERT_EQ(appdb_servers.size(), 2u) << servers.Dump();
  std::set<std::string> server_pids;
  for (const auto& row : appdb_servers) server_pids.insert(servers.At(row, "remote_pid"));
  EXPECT_EQ(server_pids, (std::set<std::string>{pid_a, pid_b})) << servers.Dump();
  Rows a_server = servers.Where({{"remote_pid", pid_a}});
  Rows b_server = servers.Where({{"remote_pid", pid_b}});
  ASSERT_EQ(a_server.size(), 1u);
  ASSERT_EQ(b_server.size(), 1u);
  EXPECT_EQ(servers.At(a_server[0], "state"), "active") << servers.Dump();
  EXPECT_EQ(servers.At(b_server[0], "state"), "idle") << servers.Dump();
  EXPECT_EQ(servers.At(a_server[0], "user"), kAppUser);
  EXPECT_EQ(servers.At(a_server[0], "port"), std::to_string(g_pg->port()));

  Rows a_client = clients.Where({{"application_name", "client_a"}});
  ASSERT_EQ(a_client.size(), 1u) << clients.Dump();
  EXPECT_EQ(clients.At(a_client[0], "user"), kAppUser);
  EXPECT_EQ(clients.At(a_client[0], "database"), kAppDb);
  EXPECT_EQ(clients.At(a_client[0], "state"), "active");
  EXPECT_EQ(clients.At(a_client[0], "link"), servers.At(a_server[0], "ptr"))
      << "A's client row does not link to A's server\n"
      << clients.Dump() << "\n"
      << servers.Dump();
  EXPECT_EQ(servers.At(a_server[0], "link"), clients.At(a_client[0], "ptr"));
  EXPECT_EQ(clients.Where({{"database", kAppDb}}).size(), 3u) << clients.Dump();
  Rows admin_client = clients.Where({{"user", kAdminUser}});
  ASSERT_EQ(admin_client.size(), 1u) << clients.Dump();
  EXPECT_EQ(clients.At(admin_client[0], "database"), "pgbouncer");

  // SHOW DATABASES: the appdb entry as configured, with its two connections.
  PGF_ASSERT_OK_AND_ASSIGN(Table dbs, Show(console.get(), "SHOW DATABASES"));
  Rows appdb = dbs.Where({{"name", kAppDb}});
  ASSERT_EQ(appdb.size(), 1u) << dbs.Dump();
  EXPECT_EQ(dbs.At(appdb[0], "host"), "127.0.0.1");
  EXPECT_EQ(dbs.At(appdb[0], "port"), std::to_string(g_pg->port()));
  EXPECT_EQ(dbs.At(appdb[0], "database"), kAppDb);
  EXPECT_EQ(dbs.At(appdb[0], "pool_size"), "2");
  EXPECT_EQ(dbs.At(appdb[0], "current_connections"), "2");
  EXPECT_EQ(dbs.At(appdb[0], "paused"), "0");
  EXPECT_EQ(dbs.At(appdb[0], "disabled"), "0");
  EXPECT_EQ(dbs.Where({{"name", "pgbouncer"}}).size(), 1u) << dbs.Dump();

  // Counters: at least the queries we ran.
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        absl::StatusOr<Table> stats = Show(console.get(), "SHOW STATS");
        if (!stats.ok()) return stats.status();
        Rows row = stats->Where({{"database", kAppDb}});
        if (row.size() != 1) return absl::NotFoundError(stats->Dump());
        *note = stats->Dump();
        return ToInt(stats->At(row[0], "total_query_count")) >= kQueries &&
               ToInt(stats->At(row[0], "total_xact_count")) >= kQueries &&
               ToInt(stats->At(row[0], "total_received")) > 0 &&
               ToInt(stats->At(row[0], "total_sent")) > 0;
      },
      absl::Seconds(10), "SHOW STATS to count the queries run through appdb"));
  PGF_ASSERT_OK_AND_ASSIGN(Table totals, Show(console.get(), "SHOW STATS_TOTALS"));
  Rows appdb_totals = totals.Where({{"database", kAppDb}});
  ASSERT_EQ(appdb_totals.size(), 1u) << totals.Dump();
  EXPECT_GE(ToInt(totals.At(appdb_totals[0], "query_count")), kQueries) << totals.Dump();
  EXPECT_GE(ToInt(totals.At(appdb_totals[0], "xact_count")), kQueries) << totals.Dump();
  PGF_ASSERT_OK_AND_ASSIGN(Table grand, Show(console.get(), "SHOW TOTALS"));
  Rows total_queries = grand.Where({{"name", "total_query_count"}});
  ASSERT_EQ(total_queries.size(), 1u) << grand.Dump();
  EXPECT_GE(ToInt(grand.At(total_queries[0], "value")), kQueries) << grand.Dump();

  // SHOW LISTS / USERS / CONFIG / FDS / STATE.
  PGF_ASSERT_OK_AND_ASSIGN(Table lists, Show(console.get(), "SHOW LISTS"));
  Rows used_servers = lists.Where({{"list", "used_servers"}});
  ASSERT_EQ(used_servers.size(), 1u) << lists.Dump();
  EXPECT_EQ(lists.At(used_servers[0], "items"), "2") << lists.Dump();
  Rows used_clients = lists.Where({{"list", "used_clients"}});
  ASSERT_EQ(used_clients.size(), 1u) << lists.Dump();
  EXPECT_GE(ToInt(lists.At(used_clients[0], "items")), 3) << lists.Dump();

  PGF_ASSERT_OK_AND_ASSIGN(Table users, Show(console.get(), "SHOW USERS"));
  for (const char* user : {kAppUser, kAdminUser, kStatsUser}) {
    EXPECT_EQ(users.Where({{"name", user}}).size(), 1u) << user << "\n" << users.Dump();
  }

  PGF_ASSERT_OK_AND_ASSIGN(Table config, Show(console.get(), "SHOW CONFIG"));
  Rows pool_size = config.Where({{"key", "default_pool_size"}});
  ASSERT_EQ(pool_size.size(), 1u);
  EXPECT_EQ(config.At(pool_size[0], "value"), "2");
  EXPECT_EQ(config.At(pool_size[0], "default"), "20");
  EXPECT_EQ(config.At(pool_size[0], "changeable"), "yes");
  Rows listen_port = config.Where({{"key", "listen_port"}});
  ASSERT_EQ(listen_port.size(), 1u);
  EXPECT_EQ(config.At(listen_port[0], "value"), std::to_string(agent_->port()));
  EXPECT_EQ(config.At(listen_port[0], "changeable"), "no");
  Rows mode = config.Where({{"key", "pool_mode"}});
  ASSERT_EQ(mode.size(), 1u);
  EXPECT_EQ(config.At(mode[0], "value"), "transaction");

  PGF_ASSERT_OK_AND_ASSIGN(Table fds, Show(console.get(), "SHOW FDS"));
  EXPECT_GE(fds.Where({{"task", "client"}, {"user", kAppUser}, {"database", kAppDb}}).size(), 3u)
      << fds.Dump();

  PGF_ASSERT_OK_AND_ASSIGN(std::string paused, StateValue(console.get(), "paused"));
  EXPECT_EQ(paused, "no");
  PGF_ASSERT_OK_AND_ASSIGN(std::string paused_dbs, StateValue(console.get(), "paused_databases"));
  EXPECT_EQ(paused_dbs, "");

  PGF_ASSERT_OK(Query(a.get(), "COMMIT"));
}

// --- 2. the tutorial's monitoring queries through psql as a stats_users member ------------------

TEST_F(AdminConsoleTest, PsqlMonitoringQueriesAsStatsUser) {
  ASSERT_NO_FATAL_FAILURE(StartAgent());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn app, ConnectApp());
  PGF_ASSERT_OK(Query(app.get(), "select 1"));

  RunOptions run;
  run.env = {{"PGPASSWORD", kStatsPassword},
             {"PGSSLMODE", "disable"},
             {"PGCONNECT_TIMEOUT", "10"},
             {"PSQLRC", "/dev/null"}};
  run.timeout = absl::Seconds(30);
  const std::string port = std::to_string(agent_->port());

  PGF_ASSERT_OK_AND_ASSIGN(RunResult pools,
                           RunCommand({g_pg->BinPath("psql"), "-h", "127.0.0.1", "-p", port, "-U",
                                       kStatsUser, "pgbouncer", "-c", "SHOW POOLS;"},
                                      run));
  ASSERT_TRUE(pools.Succeeded()) << pools.Describe();
  for (const char* column :
       {"cl_active", "cl_waiting", "sv_active", "sv_idle", "maxwait", "pool_mode"}) {
    EXPECT_TRUE(absl::StrContains(pools.stdout_text, column)) << column << "\n"
                                                              << pools.stdout_text;
  }
  EXPECT_TRUE(absl::StrContains(pools.stdout_text, kAppDb)) << pools.stdout_text;
  EXPECT_EQ(pools.stderr_text, "") << pools.Describe();

  PGF_ASSERT_OK_AND_ASSIGN(RunResult stats,
                           RunCommand({g_pg->BinPath("psql"), "-h", "127.0.0.1", "-p", port, "-U",
                                       kStatsUser, "pgbouncer", "-c", "SHOW STATS;"},
                                      run));
  ASSERT_TRUE(stats.Succeeded()) << stats.Describe();
  for (const char* column : {"avg_query_time", "total_xact_count", "total_query_count"}) {
    EXPECT_TRUE(absl::StrContains(stats.stdout_text, column)) << column << "\n"
                                                              << stats.stdout_text;
  }
  EXPECT_TRUE(absl::StrContains(stats.stdout_text, kAppDb)) << stats.stdout_text;

  // Unaligned, tuples-only output is what scripts parse: appdb's pool_mode, then PgBouncer
  // 1.24's load_balance_hosts (empty: one host).
  PGF_ASSERT_OK_AND_ASSIGN(
      RunResult script, RunCommand({g_pg->BinPath("psql"), "-h", "127.0.0.1", "-p", port, "-U",
                                    kStatsUser, "-At", "-F", ",", "pgbouncer", "-c", "SHOW POOLS;"},
                                   run));
  ASSERT_TRUE(script.Succeeded()) << script.Describe();
  bool found = false;
  for (absl::string_view line : absl::StrSplit(script.stdout_text, '\n')) {
    if (absl::StartsWith(line, "appdb,app,")) {
      found = true;
      EXPECT_TRUE(absl::EndsWith(line, ",transaction,")) << line;
    }
  }
  EXPECT_TRUE(found) << script.stdout_text;
}

// --- 3. access control and unknown commands ------------------------------------------------------

TEST_F(AdminConsoleTest, StatsUsersMayOnlyShowAndOthersAreRefused) {
  ASSERT_NO_FATAL_FAILURE(StartAgent());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn app, ConnectApp());
  PGF_ASSERT_OK(Query(app.get(), "select 1"));

  PGF_ASSERT_OK_AND_ASSIGN(PgConn stats, ConnectConsole(kStatsUser, kStatsPassword));
  PGF_EXPECT_OK(Show(stats.get(), "SHOW POOLS"));
  PGF_EXPECT_OK(Show(stats.get(), "SHOW STATS"));
  PGF_EXPECT_OK(Show(stats.get(), "SHOW SERVERS"));
  for (const char* command : {"PAUSE", "PAUSE appdb", "RELOAD", "KILL appdb", "DISABLE appdb",
                              "RECONNECT", "SET default_pool_size = 7", "SUSPEND", "SHUTDOWN"}) {
    SCOPED_TRACE(command);
    absl::StatusOr<std::string> result = Command(stats.get(), command);
    ASSERT_FALSE(result.ok()) << "a stats_users member ran " << command;
    EXPECT_TRUE(absl::StrContains(absl::AsciiStrToLower(result.status().message()), "admin"))
        << result.status();
  }
  // None of them took effect, and the agent still runs and serves.
  ASSERT_TRUE(agent_->IsRunning()) << agent_->Diagnostics();
  PGF_ASSERT_OK_AND_ASSIGN(PgConn admin, ConnectConsole());
  PGF_ASSERT_OK_AND_ASSIGN(std::string paused, DatabaseValue(admin.get(), "paused"));
  EXPECT_EQ(paused, "0");
  PGF_ASSERT_OK_AND_ASSIGN(std::string disabled, DatabaseValue(admin.get(), "disabled"));
  EXPECT_EQ(disabled, "0");
  PGF_ASSERT_OK_AND_ASSIGN(std::string pool_size, ConfigValue(admin.get(), "default_pool_size"));
  EXPECT_EQ(pool_size, "2");
  PGF_ASSERT_OK_AND_ASSIGN(int64_t v, ScalarInt(app.get(), "select 7"));
  EXPECT_EQ(v, 7);
  PGF_EXPECT_OK(Show(stats.get(), "SHOW VERSION"));

  // A user in neither list cannot log in to the console at all, even with the right password.
  absl::StatusOr<PgConn> outsider = ConnectConsole(kOutsider, kOutsiderPassword);
  ASSERT_FALSE(outsider.ok()) << "a user in neither admin_users nor stats_users got in";
  EXPECT_TRUE(absl::StrContains(outsider.status().message(), "not allowed")) << outsider.status();
  // And the admin with a wrong password is refused too.
  absl::StatusOr<PgConn> wrong = ConnectConsole(kAdminUser, "not-the-password");
  ASSERT_FALSE(wrong.ok());
  // PgBouncer's words for a failed SCRAM exchange (auth_type scram-sha-256).
  EXPECT_TRUE(absl::StrContains(wrong.status().message(), "SASL authentication failed"))
      << wrong.status();

  // An unknown command is an error, and the connection keeps working.
  absl::StatusOr<std::string> unknown = Command(admin.get(), "FROBNICATE appdb");
  ASSERT_FALSE(unknown.ok());
  EXPECT_TRUE(absl::StrContains(unknown.status().message(), "FROBNICATE")) << unknown.status();
  PGF_ASSERT_OK_AND_ASSIGN(Table version, Show(admin.get(), "SHOW VERSION"));
  ASSERT_EQ(version.rows.size(), 1u);
  EXPECT_TRUE(absl::StartsWith(version.rows[0][0], "PgBouncer 1.25")) << version.rows[0][0];
  absl::StatusOr<Table> bad_show = Show(admin.get(), "SHOW NOSUCHTHING");
  ASSERT_FALSE(bad_show.ok());
  PGF_EXPECT_OK(Show(admin.get(), "SHOW VERSION"));
  EXPECT_EQ(PQstatus(admin.get()), CONNECTION_OK);
  // The extended protocol is refused (the console speaks simple queries) without breaking it.
  absl::StatusOr<Rows> extended = QueryParams(admin.get(), "SHOW VERSION", {});
  EXPECT_FALSE(extended.ok());
  PGF_EXPECT_OK(Show(admin.get(), "SHOW VERSION"));
}

// --- 4. PAUSE semantics --------------------------------------------------------------------------

TEST_F(AdminConsoleTest, PauseWaitsForOpenTransactionsAndQueuesQueriesUntilResume) {
  ASSERT_NO_FATAL_FAILURE(StartAgent({{"pool_mode", "transaction"}}));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn a, ConnectApp("pause_a"));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn b, ConnectApp("pause_b"));
  PGF_ASSERT_OK(Query(b.get(), "select 1"));
  PGF_ASSERT_OK(Query(a.get(), "BEGIN"));
  PGF_ASSERT_OK_AND_ASSIGN(std::string pid_a, ScalarText(a.get(), "select pg_backend_pid()"));
  PGF_ASSERT_OK(WaitForBackendState(pid_a, "idle in transaction"));

  PGF_ASSERT_OK_AND_ASSIGN(PgConn pauser, ConnectConsole());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn observer, ConnectConsole());
  ASSERT_EQ(PQsendQuery(pauser.get(), "PAUSE"), 1) << PQerrorMessage(pauser.get());
  // The agent took the PAUSE (appdb shows paused) ...
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        absl::StatusOr<std::string> paused = DatabaseValue(observer.get(), "paused");
        if (!paused.ok()) return paused.status();
        *note = absl::StrCat("paused = ", *paused);
        return *paused == "1";
      },
      absl::Seconds(10), "SHOW DATABASES to show appdb paused"));
  // ... but must not answer it while A's transaction holds a server.
  PGF_ASSERT_OK(StaysBusyFor(pauser.get(), absl::Seconds(1)));

  // B's query during the pause waits instead of failing.
  ASSERT_EQ(PQsendQuery(b.get(), "select 'b-done'"), 1) << PQerrorMessage(b.get());
  PGF_ASSERT_OK(WaitForPoolValue(observer.get(), "cl_waiting", 1));
  PGF_ASSERT_OK(StaysBusyFor(b.get(), absl::Milliseconds(300)));
  PGF_ASSERT_OK(StaysBusyFor(pauser.get(), absl::Milliseconds(100)));
  {
    // B shows up as waiting, and the pool's maxwait counts its wait (>= the 300 ms above).
    PGF_ASSERT_OK_AND_ASSIGN(Table clients, Show(observer.get(), "SHOW CLIENTS"));
    Rows b_row = clients.Where({{"application_name", "pause_b"}});
    ASSERT_EQ(b_row.size(), 1u) << clients.Dump();
    EXPECT_EQ(clients.At(b_row[0], "state"), "waiting") << clients.Dump();
    Table pools;
    PGF_ASSERT_OK_AND_ASSIGN(std::vector<std::string> row, PoolRow(observer.get(), &pools));
    const int64_t maxwait_us =
        ToInt(pools.At(row, "maxwait")) * 1000000 + ToInt(pools.At(row, "maxwait_us"));
    EXPECT_GE(maxwait_us, 300000) << pools.Dump();
    EXPECT_LT(maxwait_us, 60000000) << pools.Dump();
  }

  // A commits: the last server goes and the PAUSE completes.
  PGF_ASSERT_OK(Query(a.get(), "COMMIT"));
  PGF_ASSERT_OK_AND_ASSIGN(AsyncOutcome paused, AwaitResult(pauser.get(), absl::Seconds(10)));
  EXPECT_EQ(paused.tag, "PAUSE");
  PGF_ASSERT_OK_AND_ASSIGN(Table servers, Show(observer.get(), "SHOW SERVERS"));
  EXPECT_TRUE(servers.Where({{"database", kAppDb}}).empty())
      << "server connections left after PAUSE returned:\n"
      << servers.Dump();
  PGF_ASSERT_OK(WaitForAppdbBackends(0));

  // A second PAUSE while paused is refused.
  absl::StatusOr<std::string> again = Command(pauser.get(), "PAUSE");
  ASSERT_FALSE(again.ok());
  EXPECT_TRUE(absl::StrContains(again.status().message(), "already paused")) << again.status();

  // B still waits; RESUME lets it through.
  PGF_ASSERT_OK(StaysBusyFor(b.get(), absl::Milliseconds(100)));
  PGF_ASSERT_OK_AND_ASSIGN(int64_t waiting, PoolInt(observer.get(), "cl_waiting"));
  EXPECT_GE(waiting, 1);
  PGF_ASSERT_OK_AND_ASSIGN(std::string resumed, Command(pauser.get(), "RESUME"));
  EXPECT_EQ(resumed, "RESUME");
  PGF_ASSERT_OK_AND_ASSIGN(AsyncOutcome b_result, AwaitResult(b.get(), absl::Seconds(10)));
  ASSERT_EQ(b_result.rows.size(), 1u);
  EXPECT_EQ(b_result.rows[0][0], "b-done");
  PGF_ASSERT_OK_AND_ASSIGN(int64_t v, ScalarInt(a.get(), "select 5"));
  EXPECT_EQ(v, 5);
  PGF_ASSERT_OK_AND_ASSIGN(std::string paused_after, DatabaseValue(observer.get(), "paused"));
  EXPECT_EQ(paused_after, "0");
}

TEST_F(AdminConsoleTest, QueuedClientsAreStillReadHangUpsLeaveAndBigQueriesSurvive) {
  // A client queued for a server keeps being read: hanging up leaves the queue at once
  // (not at RESUME), and a query bigger than what a queued client may buffer (64 KiB) is
  // held, not lost, and runs whole once the database is resumed.
  ASSERT_NO_FATAL_FAILURE(StartAgent({{"pool_mode", "transaction"}}));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn console, ConnectConsole());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn quitter, ConnectApp("queued_quitter"));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn big, ConnectApp("queued_big"));
  PGF_ASSERT_OK_AND_ASSIGN(std::string paused, Command(console.get(), "PAUSE appdb"));
  EXPECT_EQ(paused, "PAUSE");

  ASSERT_EQ(PQsendQuery(quitter.get(), "select 'never'"), 1) << PQerrorMessage(quitter.get());
  const std::string payload(300 * 1024, 'q');
  const std::string big_query = absl::StrCat("select length('", payload, "')");
  ASSERT_EQ(PQsendQuery(big.get(), big_query.c_str()), 1) << PQerrorMessage(big.get());
  PGF_ASSERT_OK(WaitForPoolValue(console.get(), "cl_waiting", 2));

  quitter.reset();  // Closes the socket while queued.
  // It leaves while still paused: awaited until it is gone (cl_waiting >= 1 holds already).
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        PGF_ASSIGN_OR_RETURN(Table clients, Show(console.get(), "SHOW CLIENTS"));
        *note = clients.Dump();
        return clients.Where({{"application_name", "queued_quitter"}}).empty();
      },
      absl::Seconds(10), "the hung-up queued client to leave SHOW CLIENTS"));
  PGF_ASSERT_OK_AND_ASSIGN(int64_t still_waiting, PoolInt(console.get(), "cl_waiting"));
  EXPECT_EQ(still_waiting, 1);
  PGF_ASSERT_OK(StaysBusyFor(big.get(), absl::Milliseconds(100)));

  PGF_ASSERT_OK_AND_ASSIGN(std::string resumed, Command(console.get(), "RESUME appdb"));
  EXPECT_EQ(resumed, "RESUME");
  PGF_ASSERT_OK_AND_ASSIGN(AsyncOutcome outcome, AwaitResult(big.get(), absl::Seconds(20)));
  ASSERT_EQ(outcome.rows.size(), 1u);
  EXPECT_EQ(outcome.rows[0][0], std::to_string(payload.size()));
  PGF_ASSERT_OK_AND_ASSIGN(int64_t after, ScalarInt(big.get(), "select 7"));
  EXPECT_EQ(after, 7);
}

TEST_F(AdminConsoleTest, ResumeEndsAPauseThatIsStillDraining) {
  ASSERT_NO_FATAL_FAILURE(StartAgent({{"pool_mode", "transaction"}}));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn a, ConnectApp("drain_a"));
  PGF_ASSERT_OK(Query(a.get(), "BEGIN"));
  PGF_ASSERT_OK_AND_ASSIGN(std::string pid_a, ScalarText(a.get(), "select pg_backend_pid()"));
  PGF_ASSERT_OK(WaitForBackendState(pid_a, "idle in transaction"));

  PGF_ASSERT_OK_AND_ASSIGN(PgConn pauser, ConnectConsole());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn observer, ConnectConsole());
  ASSERT_EQ(PQsendQuery(pauser.get(), "PAUSE appdb"), 1) << PQerrorMessage(pauser.get());
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        absl::StatusOr<std::string> paused = DatabaseValue(observer.get(), "paused");
        if (!paused.ok()) return paused.status();
        *note = absl::StrCat("paused = ", *paused);
        return *paused == "1";
      },
      absl::Seconds(10), "SHOW DATABASES to show appdb paused"));
  PGF_ASSERT_OK(StaysBusyFor(pauser.get(), absl::Milliseconds(500)));

  absl::StatusOr<std::string> again = Command(observer.get(), "PAUSE appdb");
  ASSERT_FALSE(again.ok());
  EXPECT_TRUE(absl::StrContains(again.status().message(), "already paused")) << again.status();

  PGF_ASSERT_OK_AND_ASSIGN(std::string resumed, Command(observer.get(), "RESUME appdb"));
  EXPECT_EQ(resumed, "RESUME");
  // The pending PAUSE ends with an error instead of hanging (PgBouncer issue #715).
  absl::StatusOr<AsyncOutcome> pause = AwaitResult(pauser.get(), absl::Seconds(10));
  ASSERT_FALSE(pause.ok()) << "PAUSE succeeded although RESUME came first";
  EXPECT_FALSE(absl::IsDeadlineExceeded(pause.status())) << "PAUSE still hangs after RESUME";
  EXPECT_TRUE(absl::StrContains(absl::AsciiStrToUpper(pause.status().message()), "RESUME"))
      << pause.status();
  // Both the console and A's transaction carry on.
  PGF_EXPECT_OK(Show(pauser.get(), "SHOW VERSION"));
  PGF_ASSERT_OK_AND_ASSIGN(std::string pid_again, ScalarText(a.get(), "select pg_backend_pid()"));
  EXPECT_EQ(pid_again, pid_a);
  PGF_ASSERT_OK(Query(a.get(), "COMMIT"));
  PGF_ASSERT_OK_AND_ASSIGN(std::string paused_after, DatabaseValue(observer.get(), "paused"));
  EXPECT_EQ(paused_after, "0");
}

// --- 5. PAUSE ... FOR <duration> -----------------------------------------------------------------

TEST_F(AdminConsoleTest, PauseForDurationResumesByItself) {
  ASSERT_NO_FATAL_FAILURE(StartAgent());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn waiter, ConnectApp("window_waiter"));
  PGF_ASSERT_OK(Query(waiter.get(), "select 1"));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn console, ConnectConsole());

  ASSERT_EQ(PQsendQuery(console.get(), "PAUSE appdb FOR 2"), 1) << PQerrorMessage(console.get());
  PGF_ASSERT_OK_AND_ASSIGN(AsyncOutcome paused, AwaitResult(console.get(), absl::Seconds(10)));
  const absl::Time paused_at = absl::Now();
  EXPECT_EQ(paused.tag, "PAUSE");
  PGF_ASSERT_OK_AND_ASSIGN(std::string paused_dbs, StateValue(console.get(), "paused_databases"));
  EXPECT_EQ(paused_dbs, kAppDb);

  ASSERT_EQ(PQsendQuery(waiter.get(), "select 'after-window'"), 1) << PQerrorMessage(waiter.get());
  PGF_ASSERT_OK(WaitForPoolValue(console.get(), "cl_waiting", 1, absl::Milliseconds(1500)));

  // Nobody sends RESUME: the agent resumes by itself.
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        absl::StatusOr<std::string> value = StateValue(console.get(), "paused_databases");
        if (!value.ok()) return value.status();
        *note = absl::StrCat("paused_databases = '", *value, "'");
        return value->empty();
      },
      absl::Seconds(10), "the pause window to end by itself"));
  EXPECT_GE(absl::Now() - paused_at, absl::Milliseconds(1500)) << "resumed before the window ended";
  PGF_ASSERT_OK_AND_ASSIGN(AsyncOutcome result, AwaitResult(waiter.get(), absl::Seconds(10)));
  ASSERT_EQ(result.rows.size(), 1u);
  EXPECT_EQ(result.rows[0][0], "after-window");
  PGF_ASSERT_OK_AND_ASSIGN(std::string paused_flag, DatabaseValue(console.get(), "paused"));
  EXPECT_EQ(paused_flag, "0");
}

TEST_F(AdminConsoleTest, PauseAllForDurationResumesByItself) {
  ASSERT_NO_FATAL_FAILURE(StartAgent());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn waiter, ConnectApp("window_waiter_all"));
  PGF_ASSERT_OK(Query(waiter.get(), "select 1"));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn console, ConnectConsole());

  ASSERT_EQ(PQsendQuery(console.get(), "PAUSE FOR 2s"), 1) << PQerrorMessage(console.get());
  PGF_ASSERT_OK_AND_ASSIGN(AsyncOutcome paused, AwaitResult(console.get(), absl::Seconds(10)));
  EXPECT_EQ(paused.tag, "PAUSE");
  PGF_ASSERT_OK_AND_ASSIGN(std::string paused_all, StateValue(console.get(), "paused"));
  EXPECT_EQ(paused_all, "yes");
  PGF_EXPECT_OK(StateValue(console.get(), "pause_deadline"));

  ASSERT_EQ(PQsendQuery(waiter.get(), "select 'after-global-window'"), 1)
      << PQerrorMessage(waiter.get());
  PGF_ASSERT_OK(WaitForPoolValue(console.get(), "cl_waiting", 1, absl::Milliseconds(1500)));
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        absl::StatusOr<std::string> value = StateValue(console.get(), "paused");
        if (!value.ok()) return value.status();
        *note = absl::StrCat("paused = ", *value);
        return *value == "no";
      },
      absl::Seconds(10), "the global pause window to end by itself"));
  PGF_ASSERT_OK_AND_ASSIGN(AsyncOutcome result, AwaitResult(waiter.get(), absl::Seconds(10)));
  ASSERT_EQ(result.rows.size(), 1u);
  EXPECT_EQ(result.rows[0][0], "after-global-window");
  ASSERT_NO_FATAL_FAILURE(ExpectAgentServes());
}

// --- 6. RELOAD -----------------------------------------------------------------------------------

TEST_F(AdminConsoleTest, ReloadUnderPgbenchRaisesPoolSizeAndSwitchesToTransactionMode) {
  const RunOptions run = PgbenchRunOptions();
  PGF_ASSERT_OK(InitPgbench(*g_pg));
  PGF_ASSERT_OK(WaitForAppdbBackends(0));

  AgentOptions options = BaseOptions({{"pool_mode", "session"}, {"default_pool_size", "2"}});
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(options));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn console, ConnectConsole());

  std::atomic<bool> done{false};
  std::atomic<bool> reloaded{false};
  std::atomic<int64_t> max_before{0};
  std::atomic<int64_t> max_after{0};
  std::thread monitor([&] {
    while (!done.load()) {
      absl::StatusOr<int64_t> n = AppdbBackends();
      if (n.ok()) {
        std::atomic<int64_t>& target = reloaded.load() ? max_after : max_before;
        int64_t prev = target.load();
        while (*n > prev && !target.compare_exchange_weak(prev, *n)) {
        }
      }
      absl::SleepFor(absl::Milliseconds(5));  // Sampling rate, not synchronisation.
    }
  });
  absl::StatusOr<RunResult> bench;
  std::thread bench_thread([&] {
    RunOptions bench_run = run;
    bench_run.timeout = absl::Seconds(90);
    bench = RunCommand({g_pg->BinPath("pgbench"), "-c", "8", "-j", "2", "-T", "6", "-S", "-h",
                        "127.0.0.1", "-p", std::to_string(agent_->port()), "-U", kAppUser, kAppDb},
                       bench_run);
  });
  auto stop_threads = [&] {
    if (bench_thread.joinable()) bench_thread.join();
    done.store(true);
    if (monitor.joinable()) monitor.join();
  };

  // Session mode, pool of 2: two pgbench clients hold the servers, the others queue.
  absl::Status queued = PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        Table pools;
        absl::StatusOr<std::vector<std::string>> row = PoolRow(console.get(), &pools);
        if (!row.ok()) {
          *note = row.status().ToString();
          return false;
        }
        *note = pools.Dump();
        return ToInt(pools.At(*row, "cl_waiting")) >= 1 &&
               ToInt(pools.At(*row, "sv_active")) == 2 && pools.At(*row, "pool_mode") == "session";
      },
      absl::Seconds(15), "pgbench to fill the session pool");
  if (!queued.ok()) {
    stop_threads();
    FAIL() << queued;
  }

  options.pgbouncer_settings["default_pool_size"] = "4";
  options.pgbouncer_settings["pool_mode"] = "transaction";
  absl::Status rewritten = agent_->RewriteConfig(options);
  reloaded.store(true);
  absl::StatusOr<std::string> reload = Command(console.get(), "RELOAD");
  // Under load, PostgreSQL gets up to the new pool size.
  absl::Status reached = PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        *note = absl::StrCat("max backends since RELOAD: ", max_after.load());
        return max_after.load() >= 4;
      },
      absl::Seconds(10), "4 server connections for appdb after RELOAD");
  stop_threads();
  PGF_ASSERT_OK(rewritten);
  ASSERT_TRUE(reload.ok()) << reload.status();
  EXPECT_EQ(*reload, "RELOAD");
  PGF_EXPECT_OK(reached);

  ASSERT_TRUE(bench.ok()) << bench.status();
  EXPECT_TRUE(bench->Succeeded()) << bench->Describe();
  const PgbenchSummary summary = ParsePgbench(bench->stdout_text);
  EXPECT_GT(summary.processed, 0) << bench->Describe();
  EXPECT_EQ(summary.failed, 0) << bench->Describe();
  EXPECT_LE(max_before.load(), 2) << "more than default_pool_size = 2 before RELOAD";
  EXPECT_LE(max_after.load(), 4) << "more than default_pool_size = 4 after RELOAD";

  Table pools;
  PGF_ASSERT_OK_AND_ASSIGN(std::vector<std::string> row, PoolRow(console.get(), &pools));
  EXPECT_EQ(pools.At(row, "pool_mode"), "transaction") << pools.Dump();
  PGF_ASSERT_OK_AND_ASSIGN(std::string pool_size, DatabaseValue(console.get(), "pool_size"));
  EXPECT_EQ(pool_size, "4");
  PGF_ASSERT_OK_AND_ASSIGN(std::string config_size,
                           ConfigValue(console.get(), "default_pool_size"));
  EXPECT_EQ(config_size, "4");
  PGF_ASSERT_OK_AND_ASSIGN(std::string config_mode, ConfigValue(console.get(), "pool_mode"));
  EXPECT_EQ(config_mode, "transaction");
}

TEST_F(AdminConsoleTest, ReloadWithBrokenConfigIsRefusedAndTheOldOneStays) {
  AgentOptions options = BaseOptions({{"default_pool_size", "2"}});
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(options));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn console, ConnectConsole());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn app, ConnectApp());
  PGF_ASSERT_OK(Query(app.get(), "select 1"));

  AgentOptions broken = options;
  broken.pgbouncer_settings["default_pool_size"] = "abc";
  broken.pgbouncer_settings["pool_mode"] = "session";
  PGF_ASSERT_OK(agent_->RewriteConfig(broken));
  absl::StatusOr<std::string> reload = Command(console.get(), "RELOAD");
  ASSERT_FALSE(reload.ok()) << "RELOAD accepted default_pool_size = abc";
  EXPECT_TRUE(absl::StrContains(reload.status().message(), "default_pool_size")) << reload.status();

  // Nothing of the broken file was applied, and everything keeps working.
  PGF_ASSERT_OK_AND_ASSIGN(std::string pool_size, ConfigValue(console.get(), "default_pool_size"));
  EXPECT_EQ(pool_size, "2");
  PGF_ASSERT_OK_AND_ASSIGN(std::string mode, ConfigValue(console.get(), "pool_mode"));
  EXPECT_EQ(mode, "transaction");
  PGF_ASSERT_OK_AND_ASSIGN(int64_t v, ScalarInt(app.get(), "select 6 * 7"));
  EXPECT_EQ(v, 42);
  ASSERT_NO_FATAL_FAILURE(ExpectAgentServes());
  PGF_EXPECT_OK(Show(console.get(), "SHOW VERSION"));

  // Fixing the file makes the next RELOAD work.
  options.pgbouncer_settings["default_pool_size"] = "3";
  PGF_ASSERT_OK(agent_->RewriteConfig(options));
  PGF_ASSERT_OK_AND_ASSIGN(std::string tag, Command(console.get(), "RELOAD"));
  EXPECT_EQ(tag, "RELOAD");
  PGF_ASSERT_OK_AND_ASSIGN(std::string fixed, ConfigValue(console.get(), "default_pool_size"));
  EXPECT_EQ(fixed, "3");
}

TEST_F(AdminConsoleTest, SighupWithBrokenConfigKeepsServingTheOldOne) {
  AgentOptions options = BaseOptions({{"default_pool_size", "2"}});
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(options));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn app, ConnectApp());
  PGF_ASSERT_OK(Query(app.get(), "select 1"));

  AgentOptions broken = options;
  broken.pgbouncer_settings["default_pool_size"] = "abc";
  PGF_ASSERT_OK(agent_->RewriteConfig(broken));
  PGF_ASSERT_OK(agent_->Signal(SIGHUP));
  if (!UsingForeignAgentBinary()) {
    PGF_ASSERT_OK(PollUntil(
        [&](std::string* note) -> absl::StatusOr<bool> {
          *note = ReadFileTail(agent_->log_path(), 512);
          return absl::StrContains(agent_->LogContents(), "SIGHUP") &&
                 absl::StrContains(agent_->LogContents(), "default_pool_size");
        },
        absl::Seconds(10), "the agent to log why the SIGHUP reload was refused"));
  }
  ASSERT_TRUE(agent_->IsRunning()) << agent_->Diagnostics();
  PGF_ASSERT_OK_AND_ASSIGN(int64_t v, ScalarInt(app.get(), "select 2 + 2"));
  EXPECT_EQ(v, 4);
  ASSERT_NO_FATAL_FAILURE(ExpectAgentServes());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn console, ConnectConsole());
  PGF_ASSERT_OK_AND_ASSIGN(std::string pool_size, ConfigValue(console.get(), "default_pool_size"));
  EXPECT_EQ(pool_size, "2");

  // A good file on the next SIGHUP is picked up.
  options.pgbouncer_settings["default_pool_size"] = "5";
  PGF_ASSERT_OK(agent_->RewriteConfig(options));
  PGF_ASSERT_OK(agent_->Signal(SIGHUP));
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        absl::StatusOr<std::string> value = ConfigValue(console.get(), "default_pool_size");
        if (!value.ok()) return value.status();
        *note = *value;
        return *value == "5";
      },
      absl::Seconds(10), "SIGHUP to load default_pool_size = 5"));
}

// --- 7. SET --------------------------------------------------------------------------------------

TEST_F(AdminConsoleTest, SetChangesOnlineSettingsAndRefusesRestartOnlyOnes) {
  ASSERT_NO_FATAL_FAILURE(StartAgent({{"default_pool_size", "2"}}));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn console, ConnectConsole());
  PGF_ASSERT_OK_AND_ASSIGN(std::string tag, Command(console.get(), "SET default_pool_size = 3"));
  EXPECT_EQ(tag, "SET");
  PGF_ASSERT_OK_AND_ASSIGN(std::string pool_size, ConfigValue(console.get(), "default_pool_size"));
  EXPECT_EQ(pool_size, "3");
  PGF_ASSERT_OK_AND_ASSIGN(std::string db_pool_size, DatabaseValue(console.get(), "pool_size"));
  EXPECT_EQ(db_pool_size, "3");

  // The new size is in force: three clients in transactions get three servers at once.
  std::vector<PgConn> clients;
  std::set<std::string> pids;
  for (int i = 0; i < 3; ++i) {
    PGF_ASSERT_OK_AND_ASSIGN(PgConn c, ConnectApp());
    ASSERT_EQ(PQsendQuery(c.get(), "BEGIN; select pg_backend_pid()"), 1) << PQerrorMessage(c.get());
    PGF_ASSERT_OK_AND_ASSIGN(AsyncOutcome outcome, AwaitResult(c.get(), absl::Seconds(10)));
    ASSERT_EQ(outcome.rows.size(), 1u);
    pids.insert(outcome.rows[0][0]);
    clients.push_back(std::move(c));
  }
  EXPECT_EQ(pids.size(), 3u);
  for (PgConn& c : clients) PGF_EXPECT_OK(Query(c.get(), "COMMIT"));

  absl::StatusOr<std::string> port = Command(console.get(), "SET listen_port = 1");
  ASSERT_FALSE(port.ok()) << "SET listen_port was accepted";
  EXPECT_TRUE(absl::StrContains(port.status().message(), "listen_port")) << port.status();
  PGF_ASSERT_OK_AND_ASSIGN(std::string listen_port, ConfigValue(console.get(), "listen_port"));
  EXPECT_EQ(listen_port, std::to_string(agent_->port()));
  absl::StatusOr<std::string> bad_value = Command(console.get(), "SET default_pool_size = many");
  EXPECT_FALSE(bad_value.ok());
  PGF_ASSERT_OK_AND_ASSIGN(std::string still, ConfigValue(console.get(), "default_pool_size"));
  EXPECT_EQ(still, "3");
  ASSERT_NO_FATAL_FAILURE(ExpectAgentServes());
}

// --- 8. KILL, DISABLE/ENABLE, RECONNECT + WAIT_CLOSE, KILL_CLIENT --------------------------------

TEST_F(AdminConsoleTest, KillDropsClientsAndNewQueriesWaitUntilResume) {
  ASSERT_NO_FATAL_FAILURE(StartAgent());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn idle_client, ConnectApp("kill_idle"));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn in_tx, ConnectApp("kill_tx"));
  PGF_ASSERT_OK(Query(idle_client.get(), "select 1"));
  PGF_ASSERT_OK(Query(in_tx.get(), "BEGIN"));
  PGF_ASSERT_OK(Query(in_tx.get(), "select 1"));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn console, ConnectConsole());

  PGF_ASSERT_OK_AND_ASSIGN(std::string tag, Command(console.get(), "KILL appdb"));
  EXPECT_EQ(tag, "KILL");
  EXPECT_FALSE(Query(idle_client.get(), "select 1").ok()) << "idle client survived KILL";
  EXPECT_FALSE(Query(in_tx.get(), "select 1").ok()) << "client in a transaction survived KILL";
  PGF_ASSERT_OK(WaitForAppdbBackends(0));

  // A new client's query waits until RESUME (whether its login or its query is held).
  struct Outcome {
    absl::Status status = absl::UnknownError("not run");
    std::string value;
  };
  Outcome outcome;
  std::atomic<bool> finished{false};
  const std::string conninfo = AppConn("after_kill");
  std::thread late([&] {
    absl::StatusOr<PgConn> conn = Connect(conninfo);
    if (!conn.ok()) {
      outcome.status = conn.status();
    } else if (PQsendQuery(conn->get(), "select 'after-kill'") != 1) {
      outcome.status = ResultError(conn->get(), nullptr);
    } else {
      absl::StatusOr<AsyncOutcome> result = AwaitResult(conn->get(), absl::Seconds(30));
      outcome.status = result.status();
      if (result.ok() && result->rows.size() == 1) outcome.value = result->rows[0][0];
    }
    finished.store(true);
  });
  absl::Status waiting = WaitForPoolValue(console.get(), "cl_waiting", 1);
  const bool finished_early = finished.load();
  absl::StatusOr<std::string> resume = Command(console.get(), "RESUME appdb");
  late.join();
  PGF_ASSERT_OK(waiting);
  EXPECT_FALSE(finished_early) << "the new client was served before RESUME: " << outcome.status;
  ASSERT_TRUE(resume.ok()) << resume.status();
  EXPECT_EQ(*resume, "RESUME");
  PGF_ASSERT_OK(outcome.status);
  EXPECT_EQ(outcome.value, "after-kill");
  ASSERT_NO_FATAL_FAILURE(ExpectAgentServes());
}

TEST_F(AdminConsoleTest, DisableRefusesNewLoginsUntilEnable) {
  ASSERT_NO_FATAL_FAILURE(StartAgent());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn existing, ConnectApp());
  PGF_ASSERT_OK(Query(existing.get(), "select 1"));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn console, ConnectConsole());

  PGF_ASSERT_OK_AND_ASSIGN(std::string tag, Command(console.get(), "DISABLE appdb"));
  EXPECT_EQ(tag, "DISABLE");
  PGF_ASSERT_OK_AND_ASSIGN(std::string disabled, DatabaseValue(console.get(), "disabled"));
  EXPECT_EQ(disabled, "1");
  absl::StatusOr<PgConn> refused = ConnectApp();
  ASSERT_FALSE(refused.ok()) << "a new login to a disabled database got in";
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "database \"appdb\" is disabled"))
      << refused.status();
  // Clients already connected keep working.
  PGF_ASSERT_OK_AND_ASSIGN(int64_t v, ScalarInt(existing.get(), "select 3"));
  EXPECT_EQ(v, 3);

  PGF_ASSERT_OK_AND_ASSIGN(std::string enabled, Command(console.get(), "ENABLE appdb"));
  EXPECT_EQ(enabled, "ENABLE");
  PGF_ASSERT_OK_AND_ASSIGN(std::string disabled_after, DatabaseValue(console.get(), "disabled"));
  EXPECT_EQ(disabled_after, "0");
  ASSERT_NO_FATAL_FAILURE(ExpectAgentServes());

  absl::StatusOr<std::string> unknown_db = Command(console.get(), "DISABLE nosuchdb");
  ASSERT_FALSE(unknown_db.ok());
  EXPECT_TRUE(absl::StrContains(unknown_db.status().message(), "nosuchdb")) << unknown_db.status();
}

TEST_F(AdminConsoleTest, ReconnectThenWaitCloseReturnsOnceOldServersAreGone) {
  ASSERT_NO_FATAL_FAILURE(StartAgent());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn a, ConnectApp("reconnect_a"));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn b, ConnectApp("reconnect_b"));
  PGF_ASSERT_OK(Query(a.get(), "BEGIN"));
  PGF_ASSERT_OK_AND_ASSIGN(std::string pid_a, ScalarText(a.get(), "select pg_backend_pid()"));
  PGF_ASSERT_OK_AND_ASSIGN(std::string pid_b, ScalarText(b.get(), "select pg_backend_pid()"));
  ASSERT_NE(pid_a, pid_b);
  PGF_ASSERT_OK(WaitForBackendState(pid_a, "idle in transaction"));
  PGF_ASSERT_OK(WaitForBackendState(pid_b, "idle"));

  PGF_ASSERT_OK_AND_ASSIGN(PgConn console, ConnectConsole());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn observer, ConnectConsole());
  PGF_ASSERT_OK_AND_ASSIGN(std::string tag, Command(console.get(), "RECONNECT appdb"));
  EXPECT_EQ(tag, "RECONNECT");
  // A's server is marked for closing; it stays while A's transaction runs.
  PGF_ASSERT_OK_AND_ASSIGN(Table servers, Show(observer.get(), "SHOW SERVERS"));
  Rows a_server = servers.Where({{"remote_pid", pid_a}});
  ASSERT_EQ(a_server.size(), 1u) << servers.Dump();
  EXPECT_EQ(servers.At(a_server[0], "close_needed"), "1") << servers.Dump();

  ASSERT_EQ(PQsendQuery(console.get(), "WAIT_CLOSE appdb"), 1) << PQerrorMessage(console.get());
  PGF_ASSERT_OK(StaysBusyFor(console.get(), absl::Milliseconds(700)));
  // The idle old server is gone already: B's next query runs on a new backend.
  PGF_ASSERT_OK_AND_ASSIGN(std::string pid_b2, ScalarText(b.get(), "select pg_backend_pid()"));
  EXPECT_NE(pid_b2, pid_b) << "B still runs on a server from before RECONNECT";
  PGF_ASSERT_OK(StaysBusyFor(console.get(), absl::Milliseconds(100)));

  PGF_ASSERT_OK(Query(a.get(), "COMMIT"));
  PGF_ASSERT_OK_AND_ASSIGN(AsyncOutcome done, AwaitResult(console.get(), absl::Seconds(10)));
  EXPECT_EQ(done.tag, "WAIT_CLOSE");
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        absl::StatusOr<Rows> rows = g_pg->Exec(absl::StrCat(
            "select count(*) from pg_stat_activity where pid in (", pid_a, ", ", pid_b, ")"));
        if (!rows.ok()) return rows.status();
        *note = absl::StrCat((*rows)[0][0], " old backends left");
        return (*rows)[0][0] == "0";
      },
      absl::Seconds(10), "the servers from before RECONNECT to disappear from PostgreSQL"));
  PGF_ASSERT_OK_AND_ASSIGN(std::string pid_a2, ScalarText(a.get(), "select pg_backend_pid()"));
  EXPECT_NE(pid_a2, pid_a);
}

TEST_F(AdminConsoleTest, KillClientClosesOnlyThatClient) {
  ASSERT_NO_FATAL_FAILURE(StartAgent());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn victim, ConnectApp("kill_me"));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn bystander, ConnectApp("keep_me"));
  PGF_ASSERT_OK(Query(victim.get(), "select 1"));
  PGF_ASSERT_OK(Query(bystander.get(), "select 1"));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn console, ConnectConsole());

  PGF_ASSERT_OK_AND_ASSIGN(Table clients, Show(console.get(), "SHOW CLIENTS"));
  Rows victim_row = clients.Where({{"application_name", "kill_me"}});
  ASSERT_EQ(victim_row.size(), 1u) << clients.Dump();
  const std::string ptr = clients.At(victim_row[0], "ptr");
  PGF_ASSERT_OK_AND_ASSIGN(std::string tag,
                           Command(console.get(), absl::StrCat("KILL_CLIENT ", ptr)));
  EXPECT_EQ(tag, "KILL_CLIENT");

  EXPECT_FALSE(Query(victim.get(), "select 1").ok()) << "the killed client still works";
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        absl::StatusOr<Table> now = Show(console.get(), "SHOW CLIENTS");
        if (!now.ok()) return now.status();
        *note = now->Dump();
        return now->Where({{"application_name", "kill_me"}}).empty() &&
               now->Where({{"application_name", "keep_me"}}).size() == 1;
      },
      absl::Seconds(10), "SHOW CLIENTS to drop the killed client"));
  PGF_ASSERT_OK_AND_ASSIGN(int64_t v, ScalarInt(bystander.get(), "select 9"));
  EXPECT_EQ(v, 9);

  absl::StatusOr<std::string> unknown = Command(console.get(), "KILL_CLIENT 0x7ffffff0");
  EXPECT_FALSE(unknown.ok()) << "KILL_CLIENT of an id nobody has succeeded";
  PGF_EXPECT_OK(Show(console.get(), "SHOW VERSION"));
}

// --- 9. /metrics ---------------------------------------------------------------------------------

// The IPv4 address a TCP socket listens on for `port`, from /proc/net/tcp (what the kernel
// holds, not what the agent logs).
absl::StatusOr<std::string> ListeningAddress(int port) {
  std::ifstream table("/proc/net/tcp");
  std::string line;
  std::getline(table, line);  // header
  while (std::getline(table, line)) {
    std::vector<std::string> fields = absl::StrSplit(line, ' ', absl::SkipEmpty());
    // "sl local_address rem_address st ...": local is HEXADDR:HEXPORT, st 0A is LISTEN.
    if (fields.size() < 4 || fields[3] != "0A") continue;
    std::vector<std::string> local = absl::StrSplit(fields[1], ':');
    if (local.size() != 2 || local[0].size() != 8) continue;
    char* end = nullptr;
    const unsigned long local_port = std::strtoul(local[1].c_str(), &end, 16);
    if (*end != '\0' || static_cast<int>(local_port) != port) continue;
    const uint32_t address = static_cast<uint32_t>(std::strtoul(local[0].c_str(), &end, 16));
    if (*end != '\0') continue;
    // The kernel prints the address as a host-order number of network-order bytes.
    in_addr in{};
    in.s_addr = address;
    char text[INET_ADDRSTRLEN] = {};
    inet_ntop(AF_INET, &in, text, sizeof(text));
    return std::string(text);
  }
  return absl::NotFoundError(absl::StrCat("no IPv4 socket listens on port ", port));
}

TEST_F(AdminConsoleTest, MetricsEndpointReportsPoolsAndQueryTotals) {
  PGF_ASSERT_OK_AND_ASSIGN(int metrics_port, PickFreePort());
  AgentOptions options = BaseOptions({});
  // No host: the endpoint must listen on loopback only.
  options.extra_args = {absl::StrCat("--metrics-listen=:", metrics_port)};
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(options));
  // The kernel's /proc/net/tcp walk can miss a socket while other tests open and close
  // thousands of them, so the listener is looked for until it shows.
  std::string listen_address;
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        absl::StatusOr<std::string> found = ListeningAddress(metrics_port);
        if (!found.ok()) *note = std::string(found.status().message());
        if (found.ok()) listen_address = *found;
        return found.ok();
      },
      absl::Seconds(10), "the metrics listener in /proc/net/tcp"));
  EXPECT_EQ(listen_address, "127.0.0.1");

  constexpr int kQueries = 30;
  PGF_ASSERT_OK_AND_ASSIGN(PgConn app, ConnectApp());
  for (int i = 0; i < kQueries; ++i) {
    PGF_ASSERT_OK_AND_ASSIGN(int64_t v, ScalarInt(app.get(), absl::StrCat("select ", i)));
    ASSERT_EQ(v, i);
  }

  std::string body;
  PGF_ASSERT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        absl::StatusOr<HttpResponse> response = HttpGet(metrics_port, "/metrics");
        if (!response.ok()) {
          *note = response.status().ToString();
          return false;
        }
        body = response->body;
        std::optional<double> queries = MetricValue(
            body, "pgbouncer_stats_totals_queries_pooled_total", {"database=\"appdb\""});
        *note =
            absl::StrCat(response->status_line,
                         "; queries_pooled_total = ", queries ? absl::StrCat(*queries) : "absent");
        return absl::StrContains(response->status_line, " 200") && queries.has_value() &&
               *queries >= kQueries;
      },
      absl::Seconds(10), "/metrics to count the queries run through appdb"));
  std::optional<double> active = MetricValue(body, "pgbouncer_pools_client_active_connections",
                                             {"database=\"appdb\"", "user=\"app\""});
  ASSERT_TRUE(active.has_value()) << body;
  EXPECT_GE(*active, 1) << "our connected client is not counted";
  EXPECT_TRUE(MetricValue(body, "pgbouncer_pools_client_waiting_connections",
                          {"database=\"appdb\"", "user=\"app\""})
                  .has_value())
      << body;
  EXPECT_TRUE(absl::StrContains(body, "# TYPE pgbouncer_stats_totals_queries_pooled_total counter"))
      << body;

  PGF_ASSERT_OK_AND_ASSIGN(HttpResponse health, HttpGet(metrics_port, "/healthz"));
  EXPECT_TRUE(absl::StrContains(health.status_line, " 200")) << health.status_line;
  EXPECT_EQ(absl::StripAsciiWhitespace(health.body), "ok");

  PGF_ASSERT_OK_AND_ASSIGN(HttpResponse missing, HttpGet(metrics_port, "/nope"));
  EXPECT_TRUE(absl::StrContains(missing.status_line, " 404")) << missing.status_line;
}

// --- 10. SHUTDOWN WAIT_FOR_CLIENTS ---------------------------------------------------------------

TEST_F(AdminConsoleTest, ShutdownWaitForClientsExitsWhenTheLastClientLeaves) {
  ASSERT_NO_FATAL_FAILURE(StartAgent());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn app, ConnectApp("last_client"));
  PGF_ASSERT_OK(Query(app.get(), "select 1"));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn console, ConnectConsole());

  PGF_ASSERT_OK_AND_ASSIGN(std::string tag, Command(console.get(), "SHUTDOWN WAIT_FOR_CLIENTS"));
  EXPECT_EQ(tag, "SHUTDOWN");
  // No new clients ...
  PGF_ASSERT_OK(
      PollUntil([&](std::string*) -> absl::StatusOr<bool> { return !CanConnect(agent_->port()); },
                absl::Seconds(10), "the agent to stop accepting connections"));
  // ... but the connected one is still served, and the process is still there.
  PGF_ASSERT_OK_AND_ASSIGN(int64_t v, ScalarInt(app.get(), "select 11"));
  EXPECT_EQ(v, 11);
  ASSERT_TRUE(agent_->IsRunning()) << "agent exited with a client still connected\n"
                                   << agent_->Diagnostics();
  PGF_ASSERT_OK_AND_ASSIGN(int64_t v2, ScalarInt(app.get(), "select 12"));
  EXPECT_EQ(v2, 12);
  ASSERT_TRUE(agent_->IsRunning()) << agent_->Diagnostics();

  // The last client leaves, with an idle server connection and this console still open: the
  // agent exits 0 and (in the ASan build) leaks nothing, i.e. it closed them on the way out.
  app.reset();
  PGF_ASSERT_OK_AND_ASSIGN(int status, agent_->WaitForExit(absl::Seconds(10)));
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << DescribeWaitStatus(status);
  EXPECT_EQ(agent_->SanitizerReport(), "");
  PGF_EXPECT_OK(WaitForAppdbBackends(0));
  EXPECT_FALSE(Query(console.get(), "SHOW VERSION").ok()) << "console still answers after exit";
}

// Regression: SIGTERM used to stop the loop with admin consoles still open and leak them
// (LeakSanitizer failed the ASan build). Shutdown now closes every connection first.
TEST_F(AdminConsoleTest, SigtermWithAConsoleConnectedExitsCleanly) {
  ASSERT_NO_FATAL_FAILURE(StartAgent());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn app, ConnectApp());
  PGF_ASSERT_OK(Query(app.get(), "select 1"));
  app.reset();
  PGF_ASSERT_OK_AND_ASSIGN(PgConn console, ConnectConsole());
  PGF_ASSERT_OK(Show(console.get(), "SHOW POOLS"));
  PGF_ASSERT_OK_AND_ASSIGN(int status, agent_->Stop(absl::Seconds(10)));
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << DescribeWaitStatus(status);
  EXPECT_EQ(agent_->SanitizerReport(), "");
  EXPECT_FALSE(Query(console.get(), "SHOW VERSION").ok()) << "console still answers after exit";
}

}  // namespace
}  // namespace pgfleet::testutil
