// Issue 22, exporter parity: the agent's /metrics publishes the families of
// prometheus-community/pgbouncer_exporter (collector.go, current release) with the same names,
// types and labels, so dashboards and alerts written for the exporter read the agent directly:
// pgbouncer_version_info{version} (SHOW VERSION), pgbouncer_up, SHOW LISTS' gauges, SHOW POOLS'
// cancel gauges, SHOW DATABASES' and SHOW STATS_TOTALS' families, the two config gauges. The
// values match what the admin console's SHOW commands answer, and `promtool check metrics`
// (Debian's prometheus package) passes on the body. The real pgfleet-agent in front of a real
// PostgreSQL.

#include <libpq-fe.h>

#include <filesystem>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/status_macros.h"
#include "gtest/gtest.h"
#include "tests/testutil/agent_process.h"
#include "tests/testutil/fixtures.h"
#include "tests/testutil/free_port.h"
#include "tests/testutil/http.h"
#include "tests/testutil/pq.h"
#include "tests/testutil/process.h"
#include "tests/testutil/status_testing.h"
#include "tests/testutil/temp_dir.h"

namespace pgfleet::testutil {
namespace {

[[maybe_unused]] auto* const kCluster = RegisterSharedPostgres();

// One sample of the text exposition: its labels (sorted by name) and value as written.
struct Sample {
  std::map<std::string, std::string> labels;
  std::string value;
};
struct Family {
  std::string type;
  std::string help;
  std::vector<Sample> samples;
};

// A small reader of the 0.0.4 text format, enough for the agent's output: no escaped quotes
// in the label values the test looks at.
std::map<std::string, Family> ParseExposition(const std::string& body) {
  std::map<std::string, Family> families;
  for (absl::string_view line : absl::StrSplit(body, '\n', absl::SkipEmpty())) {
    if (absl::ConsumePrefix(&line, "# TYPE ")) {
      std::vector<std::string> parts = absl::StrSplit(line, absl::MaxSplits(' ', 1));
      if (parts.size() == 2) families[parts[0]].type = parts[1];
      continue;
    }
    if (absl::ConsumePrefix(&line, "# HELP ")) {
      std::vector<std::string> parts = absl::StrSplit(line, absl::MaxSplits(' ', 1));
      if (parts.size() == 2) families[parts[0]].help = parts[1];
      continue;
    }
    if (absl::StartsWith(line, "#")) continue;
    Sample sample;
    std::string name;
    const size_t brace = line.find('{');
    const size_t space = line.rfind(' ');
    if (space == absl::string_view::npos) continue;
    sample.value = std::string(line.substr(space + 1));
    if (brace != absl::string_view::npos && brace < space) {
      name = std::string(line.substr(0, brace));
      const size_t close = line.rfind('}', space);
      absl::string_view labels = line.substr(brace + 1, close - brace - 1);
      for (absl::string_view pair : absl::StrSplit(labels, "\",", absl::SkipEmpty())) {
        const size_t eq = pair.find('=');
        if (eq == absl::string_view::npos) continue;
        std::string value = std::string(pair.substr(eq + 2));
        if (!value.empty() && value.back() == '"') value.pop_back();
        sample.labels[std::string(pair.substr(0, eq))] = value;
      }
    } else {
      name = std::string(line.substr(0, space));
    }
    families[name].samples.push_back(sample);
  }
  return families;
}

std::set<std::string> LabelNames(const Family& family) {
  std::set<std::string> names;
  for (const Sample& sample : family.samples) {
    for (const auto& [name, value] : sample.labels) names.insert(name);
  }
  return names;
}

class ExporterParityTest : public AgentTest {
 protected:
  void StartWithMetrics() {
    PGF_ASSERT_OK_AND_ASSIGN(metrics_port_, PickFreePort());
    AgentOptions options = AppAgentOptions({{"auth_type", "scram-sha-256"},
                                            {"pool_mode", "transaction"},
                                            {"default_pool_size", "2"},
                                            {"admin_users", kAdminUser}});
    options.extra_args.push_back(absl::StrCat("--metrics-listen=127.0.0.1:", metrics_port_));
    StartAgentWith(options);
  }

  absl::StatusOr<std::string> Metrics() {
    PGF_ASSIGN_OR_RETURN(HttpResponse response, HttpGet(metrics_port_, "/metrics"));
    if (response.status != 200) return absl::InternalError(response.raw);
    return response.body;
  }

  int metrics_port_ = 0;
};

// The families pgbouncer_exporter publishes, with its type and label names.
struct ExpectedFamily {
  const char* name;
  const char* type;
  std::set<std::string> labels;
};

TEST_F(ExporterParityTest, EveryExporterFamilyWithItsTypeAndLabels) {
  StartWithMetrics();
  PGF_ASSERT_OK_AND_ASSIGN(PgConn app, ConnectApp());
  PGF_ASSERT_OK(Query(app.get(), "select 1").status());

  PGF_ASSERT_OK_AND_ASSIGN(std::string body, Metrics());
  const std::map<std::string, Family> families = ParseExposition(body);

  const std::set<std::string> kPoolLabels = {"database", "user"};
  const std::set<std::string> kDatabaseLabels = {"name",     "host",       "port",
                                                 "database", "force_user", "pool_mode"};
  const ExpectedFamily kExpected[] = {
      {"pgbouncer_up", "gauge", {}},
      {"pgbouncer_version_info", "gauge", {"version"}},
      // SHOW LISTS.
      {"pgbouncer_databases", "gauge", {}},
      {"pgbouncer_users", "gauge", {}},
      {"pgbouncer_pools", "gauge", {}},
      {"pgbouncer_free_clients", "gauge", {}},
      {"pgbouncer_used_clients", "gauge", {}},
      {"pgbouncer_login_clients", "gauge", {}},
      {"pgbouncer_free_servers", "gauge", {}},
      {"pgbouncer_used_servers", "gauge", {}},
      {"pgbouncer_cached_dns_names", "gauge", {}},
      {"pgbouncer_cached_dns_zones", "gauge", {}},
      {"pgbouncer_in_flight_dns_queries", "gauge", {}},
      // SHOW CONFIG.
      {"pgbouncer_config_max_client_connections", "gauge", {}},
      {"pgbouncer_config_max_user_connections", "gauge", {}},
      // SHOW POOLS.
      {"pgbouncer_pools_client_active_connections", "gauge", kPoolLabels},
      {"pgbouncer_pools_client_active_cancel_connections", "gauge", kPoolLabels},
      {"pgbouncer_pools_client_waiting_connections", "gauge", kPoolLabels},
      {"pgbouncer_pools_client_waiting_cancel_connections", "gauge", kPoolLabels},
      {"pgbouncer_pools_server_active_connections", "gauge", kPoolLabels},
      {"pgbouncer_pools_server_active_cancel_connections", "gauge", kPoolLabels},
      {"pgbouncer_pools_server_being_canceled_connections", "gauge", kPoolLabels},
      {"pgbouncer_pools_server_idle_connections", "gauge", kPoolLabels},
      {"pgbouncer_pools_server_used_connections", "gauge", kPoolLabels},
      {"pgbouncer_pools_server_testing_connections", "gauge", kPoolLabels},
      {"pgbouncer_pools_server_login_connections", "gauge", kPoolLabels},
      {"pgbouncer_pools_client_maxwait_seconds", "gauge", kPoolLabels},
      // SHOW DATABASES.
      {"pgbouncer_databases_pool_size", "gauge", kDatabaseLabels},
      {"pgbouncer_databases_reserve_pool", "gauge", kDatabaseLabels},
      {"pgbouncer_databases_max_connections", "gauge", kDatabaseLabels},
      {"pgbouncer_databases_current_connections", "gauge", kDatabaseLabels},
      {"pgbouncer_databases_paused", "gauge", kDatabaseLabels},
      {"pgbouncer_databases_disabled", "gauge", kDatabaseLabels},
      // SHOW STATS_TOTALS.
      {"pgbouncer_stats_totals_sql_transactions_pooled_total", "counter", {"database"}},
      {"pgbouncer_stats_totals_queries_pooled_total", "counter", {"database"}},
      {"pgbouncer_stats_totals_received_bytes_total", "counter", {"database"}},
      {"pgbouncer_stats_totals_sent_bytes_total", "counter", {"database"}},
      {"pgbouncer_stats_totals_server_in_transaction_seconds_total", "counter", {"database"}},
      {"pgbouncer_stats_totals_queries_duration_seconds_total", "counter", {"database"}},
      {"pgbouncer_stats_totals_client_wait_seconds_total", "counter", {"database"}},
      // PgBouncer 1.23/1.24's SHOW STATS_TOTALS counters.
      {"pgbouncer_stats_totals_server_assignments_total", "counter", {"database"}},
      {"pgbouncer_stats_totals_client_parses_total", "counter", {"database"}},
      {"pgbouncer_stats_totals_server_parses_total", "counter", {"database"}},
      {"pgbouncer_stats_totals_binds_total", "counter", {"database"}},
  };
  for (const ExpectedFamily& expected : kExpected) {
    SCOPED_TRACE(expected.name);
    auto it = families.find(expected.name);
    ASSERT_NE(it, families.end()) << "missing family; body:\n" << body;
    EXPECT_EQ(it->second.type, expected.type);
    EXPECT_FALSE(it->second.help.empty());
    ASSERT_FALSE(it->second.samples.empty());
    EXPECT_EQ(LabelNames(it->second), expected.labels);
  }
}

TEST_F(ExporterParityTest, VersionAndListsMatchTheConsole) {
  StartWithMetrics();
  PGF_ASSERT_OK_AND_ASSIGN(PgConn app, ConnectApp());
  PGF_ASSERT_OK(Query(app.get(), "select 1").status());

  PGF_ASSERT_OK_AND_ASSIGN(std::vector<NamedRow> version,
                           AdminShow(agent_->port(), "SHOW VERSION"));
  ASSERT_EQ(version.size(), 1u);
  PGF_ASSERT_OK_AND_ASSIGN(std::vector<NamedRow> lists, AdminShow(agent_->port(), "SHOW LISTS"));
  PGF_ASSERT_OK_AND_ASSIGN(std::string body, Metrics());
  const std::map<std::string, Family> families = ParseExposition(body);

  const Family& info = families.at("pgbouncer_version_info");
  ASSERT_EQ(info.samples.size(), 1u);
  EXPECT_EQ(info.samples[0].labels.at("version"), version[0].at("version"));
  EXPECT_EQ(info.samples[0].value, "1");
  EXPECT_EQ(families.at("pgbouncer_up").samples.at(0).value, "1");

  // The exporter's names for SHOW LISTS' rows (it drops the ones it has no name for).
  const std::map<std::string, std::string> kListMetric = {
      {"databases", "pgbouncer_databases"},
      {"users", "pgbouncer_users"},
      {"pools", "pgbouncer_pools"},
      {"free_clients", "pgbouncer_free_clients"},
      {"used_clients", "pgbouncer_used_clients"},
      {"login_clients", "pgbouncer_login_clients"},
      {"free_servers", "pgbouncer_free_servers"},
      {"used_servers", "pgbouncer_used_servers"},
      {"dns_names", "pgbouncer_cached_dns_names"},
      {"dns_zones", "pgbouncer_cached_dns_zones"},
      {"dns_queries", "pgbouncer_in_flight_dns_queries"},
  };
  size_t compared = 0;
  for (const NamedRow& row : lists) {
    auto metric = kListMetric.find(row.at("list"));
    if (metric == kListMetric.end()) continue;
    SCOPED_TRACE(metric->second);
    auto family = families.find(metric->second);
    ASSERT_NE(family, families.end());
    ASSERT_EQ(family->second.samples.size(), 1u);
    // Between the two reads only the console connection itself differs (used_clients).
    if (row.at("list") != "used_clients") {
      EXPECT_EQ(family->second.samples[0].value, row.at("items"));
    }
    ++compared;
  }
  EXPECT_EQ(compared, kListMetric.size());
  // A pool with a logged-in client: the agent's one app pool is counted.
  EXPECT_NE(families.at("pgbouncer_pools").samples[0].value, "0");
}

// The counters PgBouncer 1.23/1.24 added to SHOW STATS_TOTALS (server_assignment_count,
// client_parse_count, server_parse_count, bind_count) under the exporter's names, equal to what
// the console shows for the same database.
TEST_F(ExporterParityTest, AssignmentAndPreparedStatementCountersMatchShowStatsTotals) {
  StartWithMetrics();
  {
    PGF_ASSERT_OK_AND_ASSIGN(PgConn app, ConnectApp());
    PGresult* prepared = PQprepare(app.get(), "one", "select $1::int", 1, nullptr);
    ASSERT_EQ(PQresultStatus(prepared), PGRES_COMMAND_OK) << PQerrorMessage(app.get());
    PQclear(prepared);
    for (int i = 0; i < 5; ++i) {
      const char* value = "7";
      PGresult* run = PQexecPrepared(app.get(), "one", 1, &value, nullptr, nullptr, 0);
      ASSERT_EQ(PQresultStatus(run), PGRES_TUPLES_OK) << PQerrorMessage(app.get());
      PQclear(run);
    }
  }
  // The client is gone and its server released: nothing moves between the two reads.
  PGF_ASSERT_OK_AND_ASSIGN(std::vector<NamedRow> totals,
                           AdminShow(agent_->port(), "SHOW STATS_TOTALS"));
  PGF_ASSERT_OK_AND_ASSIGN(std::string body, Metrics());
  const std::map<std::string, Family> families = ParseExposition(body);
  const NamedRow* appdb = nullptr;
  for (const NamedRow& row : totals) {
    if (row.at("database") == kAppDb) appdb = &row;
  }
  ASSERT_NE(appdb, nullptr);
  const std::map<std::string, std::string> kColumnOf = {
      {"pgbouncer_stats_totals_server_assignments_total", "server_assignment_count"},
      {"pgbouncer_stats_totals_client_parses_total", "client_parse_count"},
      {"pgbouncer_stats_totals_server_parses_total", "server_parse_count"},
      {"pgbouncer_stats_totals_binds_total", "bind_count"},
  };
  for (const auto& [metric, column] : kColumnOf) {
    SCOPED_TRACE(metric);
    auto family = families.find(metric);
    ASSERT_NE(family, families.end()) << body;
    std::string value;
    for (const Sample& sample : family->second.samples) {
      if (sample.labels.at("database") == kAppDb) value = sample.value;
    }
    EXPECT_EQ(value, appdb->at(column));
    EXPECT_NE(value, "0");  // Each counted something: one Parse, five Binds, six assignments.
  }
}

TEST_F(ExporterParityTest, PromtoolCheckMetricsPasses) {
  if (!std::filesystem::exists("/usr/bin/promtool")) {
    GTEST_SKIP() << "promtool (Debian's prometheus package) is not installed";
  }
  StartWithMetrics();
  PGF_ASSERT_OK_AND_ASSIGN(PgConn app, ConnectApp());
  PGF_ASSERT_OK(Query(app.get(), "select 1").status());
  PGF_ASSERT_OK_AND_ASSIGN(std::string body, Metrics());

  TempDir dir;
  PGF_ASSERT_OK(dir.Create("exporter-parity"));
  const std::string path = dir.path() + "/agent.prom";
  PGF_ASSERT_OK(WriteFile(path, body));
  PGF_ASSERT_OK_AND_ASSIGN(
      RunResult check,
      RunCommand({"/bin/sh", "-c", absl::StrCat("/usr/bin/promtool check metrics < ", path)}));
  EXPECT_TRUE(check.Succeeded()) << check.stdout_text << check.stderr_text << "\nbody:\n" << body;
}

}  // namespace
}  // namespace pgfleet::testutil
