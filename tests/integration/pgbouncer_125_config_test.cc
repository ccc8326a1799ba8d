// Issue 22, config parity with PgBouncer 1.25 (doc/config.md): a pgbouncer.ini that sets every
// documented key loads and SHOW CONFIG lists each [pgbouncer] key with its value; [users]
// pool_size limits that user's server connections; query_wait_timeout per database and per
// user with PgBouncer's precedence; the `options` startup parameter (PGOPTIONS); KILL without
// a database; SHOW VERSION and --version agreeing. The real pgfleet-agent in front of a real
// PostgreSQL throughout.

#include <libpq-fe.h>

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "common/status_macros.h"
#include "gtest/gtest.h"
#include "tests/testutil/agent_process.h"
#include "tests/testutil/console.h"
#include "tests/testutil/fixtures.h"
#include "tests/testutil/pq.h"
#include "tests/testutil/process.h"
#include "tests/testutil/status_testing.h"
#include "tests/testutil/temp_dir.h"
#include "tests/testutil/wait.h"

namespace pgfleet::testutil {
namespace {

[[maybe_unused]] auto* const kCluster = RegisterSharedPostgres();

// Every [pgbouncer] key of PgBouncer 1.25's doc/config.md except the five the harness writes
// (listen_addr, listen_port, unix_socket_dir, logfile, auth_file), each with a value in the
// form SHOW CONFIG prints back, so the test can compare them as strings.
std::map<std::string, std::string> EveryPgBouncer125Key() {
  return {
      // Generic settings.
      {"pidfile", ""},
      {"unix_socket_mode", "511"},  // 0777; PgBouncer prints it in decimal too.
      {"unix_socket_group", ""},
      {"user", ""},
      {"pool_mode", "transaction"},
      {"max_client_conn", "200"},
      {"default_pool_size", "3"},
      {"min_pool_size", "0"},
      {"reserve_pool_size", "0"},
      {"reserve_pool_timeout", "5"},
      {"max_db_connections", "50"},
      {"max_db_client_connections", "0"},
      {"max_user_connections", "50"},
      {"max_user_client_connections", "0"},
      {"server_round_robin", "0"},
      {"track_extra_parameters", "IntervalStyle"},
      {"ignore_startup_parameters", "extra_float_digits"},
      {"peer_id", "0"},
      {"disable_pqexec", "0"},
      {"application_name_add_host", "0"},
      {"conffile", ""},
      {"service_name", "pgbouncer"},
      {"job_name", "pgbouncer"},
      {"stats_period", "60"},
      {"max_prepared_statements", "200"},
      {"scram_iterations", "4096"},
      // Authentication.
      {"auth_type", "scram-sha-256"},
      {"auth_hba_file", ""},
      {"auth_ident_file", ""},
      {"auth_user", "app"},
      {"auth_query", "SELECT usename, passwd FROM pg_shadow WHERE usename=$1"},
      {"auth_dbname", "appdb"},
      {"auth_ldap_options", ""},
      // Logging.
      {"syslog", "0"},
      {"syslog_ident", "pgbouncer"},
      {"syslog_facility", "daemon"},
      {"log_connections", "1"},
      {"log_disconnections", "1"},
      {"log_pooler_errors", "1"},
      {"log_stats", "1"},
      {"verbose", "0"},
      // Console access.
      {"admin_users", kAdminUser},
      {"stats_users", "stats"},
      // Sanity checks and timeouts.
      {"server_reset_query", "DISCARD ALL"},
      {"server_reset_query_always", "0"},
      {"server_check_delay", "30"},
      {"server_check_query", "select 1"},
      {"server_fast_close", "0"},
      {"server_lifetime", "3600"},
      {"server_idle_timeout", "600"},
      {"server_connect_timeout", "15"},
      {"server_login_retry", "15"},
      {"client_login_timeout", "60"},
      {"autodb_idle_timeout", "3600"},
      {"pool_idle_timeout", "0"},
      {"dns_max_ttl", "15"},
      {"dns_nxdomain_ttl", "15"},
      {"dns_zone_check_period", "0"},
      {"resolv_conf", ""},
      {"query_wait_notify", "5"},
      {"login_notify_message", "welcome to pgfleet"},
      // TLS.
      {"client_tls_sslmode", "disable"},
      {"client_tls_key_file", ""},
      {"client_tls_cert_file", ""},
      {"client_tls_ca_file", ""},
      {"client_tls_protocols", "secure"},
      {"client_tls_ciphers", "default"},
      {"client_tls13_ciphers", "TLS_AES_256_GCM_SHA384"},
      {"client_tls_ecdhcurve", "auto"},
      {"client_tls_dheparams", "auto"},
      {"server_tls_sslmode", "prefer"},
      {"server_tls_ca_file", ""},
      {"server_tls_key_file", ""},
      {"server_tls_cert_file", ""},
      {"server_tls_protocols", "secure"},
      {"server_tls_ciphers", "default"},
      {"server_tls13_ciphers", "TLS_AES_256_GCM_SHA384"},
      // Dangerous timeouts.
      {"query_timeout", "0"},
      {"query_wait_timeout", "120"},
      {"cancel_wait_timeout", "10"},
      {"client_idle_timeout", "0"},
      {"idle_transaction_timeout", "0"},
      {"transaction_timeout", "0"},
      {"suspend_timeout", "10"},
      // Low-level network settings.
      {"pkt_buf", "4096"},
      {"max_packet_size", "2147483647"},
      {"listen_backlog", "128"},
      {"sbuf_loopcnt", "5"},
      {"so_reuseport", "0"},
      {"tcp_defer_accept", "1"},
      {"tcp_socket_buffer", "0"},
      {"tcp_keepalive", "1"},
      {"tcp_keepcnt", "9"},
      {"tcp_keepidle", "7200"},
      {"tcp_keepintvl", "75"},
      {"tcp_user_timeout", "0"},
  };
}

class PgBouncer125Test : public AgentTest {
 protected:
  // The app database (`appdb_params` appended to its entry), kAppUser and kAdminUser in the
  // userlist, `users` as the [users] section.
  AgentOptions Options(const std::map<std::string, std::string>& settings,
                       const std::string& appdb_params, const std::string& users) const {
    std::map<std::string, std::string> merged = DefaultAgentSettings();
    merged["admin_users"] = kAdminUser;
    for (const auto& [key, value] : settings) merged[key] = value;
    AgentOptions options = AppAgentOptions(merged);
    options.databases_section = absl::StrCat(kAppDb, " = host=127.0.0.1 port=", g_pg->port(),
                                             " dbname=", kAppDb, " ", appdb_params, "\n");
    options.users_section = users;
    return options;
  }

  absl::StatusOr<PgConn> ConnectAppWith(const std::string& extra) const {
    return Connect(absl::StrCat(agent_->ConnString(kAppDb, kAppUser, kAppPassword), " ", extra));
  }

  absl::StatusOr<PgConn> ConnectAdmin() const {
    return Connect(agent_->ConnString("pgbouncer", kAdminUser, kAdminPassword));
  }
};

TEST_F(PgBouncer125Test, SampleWithEveryDocumentedKeyLoadsAndShowConfigListsEachKey) {
  const std::map<std::string, std::string> keys = EveryPgBouncer125Key();
  AgentOptions options = Options(
      keys,
      // Every [databases] parameter of 1.25 but host/port/dbname (set above) and user/password
      // (on the second entry).
      "pool_size=3 min_pool_size=0 reserve_pool_size=1 connect_query='select 1' "
      "pool_mode=transaction query_wait_timeout=30 max_db_connections=10 "
      "max_db_client_connections=100 server_lifetime=3600 client_encoding=UTF8 datestyle=ISO "
      "timezone=UTC auth_user=app auth_dbname=appdb load_balance_hosts=round-robin "
      "target_session_attrs=any "
      "auth_query='SELECT usename, passwd FROM pg_shadow WHERE usename=$1'",
      // Every [users] parameter of 1.25.
      absl::StrCat(kAppUser,
                   " = pool_size=2 reserve_pool_size=1 pool_mode=transaction "
                   "max_user_connections=10 query_timeout=0 query_wait_timeout=30 "
                   "idle_transaction_timeout=0 transaction_timeout=0 client_idle_timeout=0 "
                   "max_user_client_connections=100\n"));
  absl::StrAppend(&options.databases_section, "forced = host=127.0.0.1 port=", g_pg->port(),
                  " dbname=", kAppDb, " user=", kAppUser, " password=", kAppPassword, "\n");
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(options));

  PGF_ASSERT_OK_AND_ASSIGN(PgConn app, ConnectApp());
  PGF_ASSERT_OK_AND_ASSIGN(std::string one, ScalarText(app.get(), "select 1"));
  EXPECT_EQ(one, "1");

  PGF_ASSERT_OK_AND_ASSIGN(PgConn admin, ConnectAdmin());
  PGF_ASSERT_OK_AND_ASSIGN(Table config, Show(admin.get(), "SHOW CONFIG"));
  std::map<std::string, std::string> shown;
  for (const auto& row : config.rows) shown[config.At(row, "key")] = config.At(row, "value");
  for (const auto& [key, value] : keys) {
    auto it = shown.find(key);
    if (it == shown.end()) {
      ADD_FAILURE() << "SHOW CONFIG has no row for " << key;
      continue;
    }
    EXPECT_EQ(it->second, value) << key;
  }
  for (const char* harness_key :
       {"listen_addr", "listen_port", "unix_socket_dir", "logfile", "auth_file"}) {
    EXPECT_TRUE(shown.contains(harness_key)) << harness_key;
  }

  // Keys without effect are named in the log, with the reason.
  const std::string log = agent_->LogContents() + agent_->StderrContents();
  EXPECT_TRUE(absl::StrContains(log, "key 'so_reuseport' is not supported by pgfleet (")) << log;
  // Implemented now (tests/integration/pgbouncer_remaining_keys_test.cc).
  for (const char* key : {"server_lifetime", "server_round_robin", "listen_backlog",
                          "application_name_add_host", "user"}) {
    EXPECT_FALSE(absl::StrContains(log, absl::StrCat("'", key, "' is not supported"))) << log;
  }
  // Implemented now (tests/integration/pgbouncer_last_keys_test.cc).
  EXPECT_FALSE(absl::StrContains(log, "'target_session_attrs' is not supported")) << log;
  // Implemented now (tests/integration/pgbouncer_keys_test.cc): loaded without a warning.
  EXPECT_FALSE(absl::StrContains(log, "'transaction_timeout' is not supported")) << log;
}

TEST_F(PgBouncer125Test, UserPoolSizeLimitsThatUsersServerConnections) {
  // default_pool_size 6 and the database's pool_size 5 would allow more: the [users] entry wins.
  ASSERT_NO_FATAL_FAILURE(
      StartAgentWith(Options({{"default_pool_size", "6"}, {"pool_mode", "transaction"}},
                             "pool_size=5", absl::StrCat(kAppUser, " = pool_size=2\n"))));
  TempDir dir;
  PGF_ASSERT_OK(dir.Create("pgfleet-user-pool"));
  const std::string script = dir.path() + "/sleep.sql";
  PGF_ASSERT_OK(WriteFile(script, "select pg_sleep(0.02);\n"));

  PGF_ASSERT_OK_AND_ASSIGN(PgConn admin, ConnectAdmin());
  BackgroundPgbench pgbench(agent_->port(), {"-c", "8", "-j", "2", "-T", "3", "-f", script});
  int most_servers = 0;
  int most_backends = 0;
  bool saw_waiting = false;
  // Sample until pgbench has clearly queued clients (the limit is under pressure), and for as
  // long as it runs: no sample may exceed the user's pool size.
  PGF_EXPECT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        PGF_ASSIGN_OR_RETURN(Table pools, Show(admin.get(), "SHOW POOLS"));
        for (const auto& row : pools.Where({{"database", kAppDb}, {"user", kAppUser}})) {
          int servers = 0;
          for (const char* column : {"sv_active", "sv_idle", "sv_used", "sv_tested", "sv_login"}) {
            int n = 0;
            if (absl::SimpleAtoi(pools.At(row, column), &n)) servers += n;
          }
          most_servers = std::max(most_servers, servers);
          int waiting = 0;
          if (absl::SimpleAtoi(pools.At(row, "cl_waiting"), &waiting) && waiting > 0) {
            saw_waiting = true;
          }
        }
        PGF_ASSIGN_OR_RETURN(PgConn direct, Connect(g_pg->SuperuserConnString()));
        PGF_ASSIGN_OR_RETURN(int64_t backends, ScalarInt(direct.get(), kAppdbBackendsSql));
        most_backends = std::max(most_backends, static_cast<int>(backends));
        *note = absl::StrCat("most servers ", most_servers, ", waiting seen ", saw_waiting);
        return saw_waiting && most_servers == 2;
      },
      absl::Seconds(20), "the user's pool to fill up with clients queued"));
  pgbench.ExpectClean("pgbench through a user with pool_size=2");
  EXPECT_EQ(most_servers, 2);
  EXPECT_LE(most_backends, 2);
  PGF_ASSERT_OK_AND_ASSIGN(Table servers, Show(admin.get(), "SHOW SERVERS"));
  EXPECT_LE(servers.Where({{"database", kAppDb}, {"user", kAppUser}}).size(), 2u) << servers.Dump();
}

TEST_F(PgBouncer125Test, DatabaseQueryWaitTimeoutOverridesTheGlobalOne) {
  // Globally disabled; the database's 1 s applies, and the user's -1 means "not set".
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(
      Options({{"default_pool_size", "1"}, {"query_wait_timeout", "0"}}, "query_wait_timeout=1",
              absl::StrCat(kAppUser, " = query_wait_timeout=-1\n"))));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn holder, ConnectApp());
  PGF_ASSERT_OK(Query(holder.get(), "begin; select 1").status());  // Keeps the one server.
  PGF_ASSERT_OK_AND_ASSIGN(PgConn waiter, ConnectApp());
  ASSERT_EQ(PQsendQuery(waiter.get(), "select 1"), 1);
  EXPECT_EQ(ErrorOfPendingQuery(waiter.get()), "08P01: query_wait_timeout");
}

TEST_F(PgBouncer125Test, UserQueryWaitTimeoutOverridesTheDatabaseOne) {
  // The database disables it (0) and the global value is long: the user's 1 s wins.
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(
      Options({{"default_pool_size", "1"}, {"query_wait_timeout", "600"}}, "query_wait_timeout=0",
              absl::StrCat(kAppUser, " = query_wait_timeout=1\n"))));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn holder, ConnectApp());
  PGF_ASSERT_OK(Query(holder.get(), "begin; select 1").status());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn waiter, ConnectApp());
  ASSERT_EQ(PQsendQuery(waiter.get(), "select 1"), 1);
  EXPECT_EQ(ErrorOfPendingQuery(waiter.get()), "08P01: query_wait_timeout");
}

TEST_F(PgBouncer125Test, OptionsStartupParameterSetsTrackedSettingsLikePgBouncer) {
  ASSERT_NO_FATAL_FAILURE(
      StartAgentWith(Options({{"ignore_startup_parameters", "extra_float_digits"}}, "", "")));
  // The forms PgBouncer's test_options_startup_param uses: -c with and without a space, --,
  // and backslash escapes (libpq's way to put a space in a value).
  for (const std::string& options :
       {std::string("-c TimeZone=Europe/Lisbon  -c    datestyle=German,\\ YMD"),
        std::string("-ctimezone=Europe/Lisbon -cdatestyle=German,\\ YMD"),
        std::string("--timezone=Europe/Lisbon --datestyle=German,\\ YMD"),
        std::string("-c t\\imezone=\\E\\u\\r\\o\\pe/Lisbon -c dat\\estyle\\=\\Ge\\rman,\\ YMD")}) {
    PGF_ASSERT_OK_AND_ASSIGN(PgConn conn,
                             ConnectAppWith(absl::StrCat("options=", ConnInfoQuote(options))));
    PGF_ASSERT_OK_AND_ASSIGN(std::string timezone, ScalarText(conn.get(), "show timezone"));
    EXPECT_EQ(timezone, "Europe/Lisbon") << options;
    PGF_ASSERT_OK_AND_ASSIGN(std::string datestyle, ScalarText(conn.get(), "show datestyle"));
    EXPECT_EQ(datestyle, "German, YMD") << options;
  }
  // In ignore_startup_parameters: accepted and dropped.
  {
    PGF_ASSERT_OK_AND_ASSIGN(
        PgConn conn,
        ConnectAppWith(absl::StrCat("options=", ConnInfoQuote("-c extra_float_digits=2"))));
    PGF_ASSERT_OK_AND_ASSIGN(std::string digits, ScalarText(conn.get(), "show extra_float_digits"));
    EXPECT_EQ(digits, "1");
  }
  // Anything else ends the login with PgBouncer's words.
  auto refusal = [&](const std::string& options) -> std::string {
    absl::StatusOr<PgConn> conn = ConnectAppWith(absl::StrCat("options=", ConnInfoQuote(options)));
    return conn.ok() ? "accepted" : std::string(conn.status().message());
  };
  EXPECT_TRUE(absl::StrContains(refusal("-c enable_seqscan=off"),
                                "unsupported startup parameter in options: enable_seqscan"));
  for (const char* bad : {"-d", "-c timezone"}) {
    EXPECT_TRUE(absl::StrContains(refusal(bad),
                                  "unsupported options startup parameter: only '-c config=val' "
                                  "and '--config=val' are allowed"))
        << bad << ": " << refusal(bad);
  }

  // With "options" itself in ignore_startup_parameters, unknown settings in it are dropped
  // and known ones still apply.
  PGF_ASSERT_OK_AND_ASSIGN(PgConn admin, ConnectAdmin());
  PGF_ASSERT_OK(Command(admin.get(), "SET ignore_startup_parameters = options").status());
  PGF_ASSERT_OK_AND_ASSIGN(
      PgConn lenient,
      ConnectAppWith(absl::StrCat(
          "options=", ConnInfoQuote("-c enable_seqscan=off -c timezone=Europe/Lisbon"))));
  PGF_ASSERT_OK_AND_ASSIGN(std::string seqscan, ScalarText(lenient.get(), "show enable_seqscan"));
  EXPECT_EQ(seqscan, "on");
  PGF_ASSERT_OK_AND_ASSIGN(std::string timezone, ScalarText(lenient.get(), "show timezone"));
  EXPECT_EQ(timezone, "Europe/Lisbon");
}

TEST_F(PgBouncer125Test, KillWithoutADatabaseKillsEveryDatabaseUntilResume) {
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(Options({}, "", "")));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn app, ConnectApp());
  PGF_ASSERT_OK(Query(app.get(), "select 1").status());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn admin, ConnectAdmin());
  PGF_ASSERT_OK_AND_ASSIGN(std::string tag, Command(admin.get(), "KILL"));
  EXPECT_EQ(tag, "KILL");
  // The client is gone; the console is not.
  EXPECT_FALSE(Query(app.get(), "select 1").ok());
  PGF_ASSERT_OK_AND_ASSIGN(Table state, Show(admin.get(), "SHOW STATE"));
  EXPECT_EQ(state.Where({{"key", "paused"}, {"value", "yes"}}).size(), 1u) << state.Dump();
  PGF_ASSERT_OK_AND_ASSIGN(std::string resumed, Command(admin.get(), "RESUME"));
  EXPECT_EQ(resumed, "RESUME");
  PGF_ASSERT_OK_AND_ASSIGN(PgConn again, ConnectApp());
  PGF_EXPECT_OK(Query(again.get(), "select 1").status());
}

TEST_F(PgBouncer125Test, ClientConnectionLimitPerUserOverridesTheDatabases) {
  // The user's limit (2) is below the database's (3) and the global ones.
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(
      Options({{"max_user_client_connections", "10"}, {"max_db_client_connections", "10"}},
              "max_db_client_connections=3",
              absl::StrCat(kAppUser, " = max_user_client_connections=2\n"))));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn first, ConnectApp());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn second, ConnectApp());
  absl::StatusOr<PgConn> third = ConnectApp();
  ASSERT_FALSE(third.ok());
  EXPECT_TRUE(absl::StrContains(third.status().message(),
                                "client connections exceeded (max_user_client_connections)"))
      << third.status();
  // A place frees up when a client leaves.
  second.reset();
  PGF_EXPECT_OK(PollUntil(
      [&](std::string* note) -> absl::StatusOr<bool> {
        absl::StatusOr<PgConn> again = ConnectApp();
        if (!again.ok()) *note = std::string(again.status().message());
        return again.ok();
      },
      absl::Seconds(10), "a login once a client left"));
}

TEST_F(PgBouncer125Test, ClientConnectionLimitPerDatabase) {
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(Options({}, "max_db_client_connections=1", "")));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn only, ConnectApp());
  absl::StatusOr<PgConn> over = ConnectApp();
  ASSERT_FALSE(over.ok());
  EXPECT_TRUE(absl::StrContains(over.status().message(),
                                "client connections exceeded (max_db_client_connections)"))
      << over.status();
}

TEST_F(PgBouncer125Test, ShowVersionAndDashDashVersionAgree) {
  ASSERT_NO_FATAL_FAILURE(StartAgentWith(Options({}, "", "")));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn admin, ConnectAdmin());
  PGF_ASSERT_OK_AND_ASSIGN(Table version, Show(admin.get(), "SHOW VERSION"));
  ASSERT_EQ(version.rows.size(), 1u);
  PGF_ASSERT_OK_AND_ASSIGN(RunResult cli, RunCommand({AgentBinaryUnderTest(), "--version"}));
  ASSERT_TRUE(cli.Succeeded()) << cli.Describe();
  const std::string first_line = std::string(
      absl::StripAsciiWhitespace(cli.stdout_text.substr(0, cli.stdout_text.find('\n'))));
  EXPECT_EQ(first_line, version.At(version.rows[0], "version"));
  // The release whose console and config the agent has; then, as PgBouncer prints them, the
  // libraries it runs on.
  EXPECT_TRUE(absl::StartsWith(first_line, "PgBouncer 1.25.")) << first_line;
  EXPECT_TRUE(absl::StrContains(cli.stdout_text, "\nlibevent ")) << cli.stdout_text;
  EXPECT_TRUE(absl::StrContains(cli.stdout_text, "\ntls: OpenSSL ")) << cli.stdout_text;
}

}  // namespace
}  // namespace pgfleet::testutil
