#include "common/config/config.h"

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/config/ini_parser.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pgfleet::config {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

absl::StatusOr<Config> Parse(const std::string& text) { return ParseConfig(text, "test.ini"); }

// The error of parsing `text`; fails the test if it parses.
absl::Status ParseError(const std::string& text) {
  absl::StatusOr<Config> config = Parse(text);
  EXPECT_FALSE(config.ok()) << "parsed unexpectedly:\n" << text;
  return config.status();
}

// Parses "[pgbouncer]\nkey = value" and returns the error message (line 2).
std::string OptionError(const std::string& key, const std::string& value) {
  absl::Status status = ParseError(absl::StrCat("[pgbouncer]\n", key, " = ", value, "\n"));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  return std::string(status.message());
}

// The warning for a PgBouncer setting pgfleet loads without effect, with the table's reason.
std::string Ignored(const std::string& where, const std::string& section, const std::string& key) {
  const UnsupportedSetting* setting = FindUnsupportedSetting(section, key);
  EXPECT_NE(setting, nullptr) << section << "." << key;
  const std::string what = section == "pgbouncer" ? "key" : "parameter";
  return absl::StrCat(where, ": ", what, " '", key, "' is not supported by pgfleet (",
                      setting != nullptr ? setting->reason : "?", "); ignored");
}

Config MustParse(const std::string& text) {
  absl::StatusOr<Config> config = Parse(text);
  EXPECT_TRUE(config.ok()) << config.status();
  return config.ok() ? *std::move(config) : Config();
}

TEST(ConfigDefaultsTest, EmptyPgbouncerSectionHasPgBouncerDefaults) {
  Config c = MustParse("[pgbouncer]\n");
  EXPECT_EQ(c.path, "test.ini");
  EXPECT_THAT(c.databases, IsEmpty());
  EXPECT_THAT(c.users, IsEmpty());
  EXPECT_EQ(c.listen_addr, "");
  EXPECT_EQ(c.listen_port, 6432);
  EXPECT_EQ(c.unix_socket_dir, "/tmp");
  EXPECT_EQ(c.auth_type, AuthType::kMd5);
  EXPECT_EQ(c.auth_file, "");
  EXPECT_THAT(c.admin_users, IsEmpty());
  EXPECT_THAT(c.stats_users, IsEmpty());
  EXPECT_EQ(c.pool_mode, PoolMode::kSession);
  EXPECT_EQ(c.default_pool_size, 20);
  EXPECT_EQ(c.min_pool_size, 0);
  EXPECT_EQ(c.reserve_pool_size, 0);
  EXPECT_EQ(c.reserve_pool_timeout, absl::Seconds(5));
  EXPECT_EQ(c.max_client_conn, 100);
  EXPECT_EQ(c.max_db_connections, 0);
  EXPECT_EQ(c.max_user_connections, 0);
  EXPECT_EQ(c.server_reset_query, "DISCARD ALL");
  EXPECT_FALSE(c.server_reset_query_always);
  EXPECT_EQ(c.server_check_query, "select 1");
  EXPECT_EQ(c.server_check_delay, absl::Seconds(30));
  EXPECT_EQ(c.server_lifetime, absl::Seconds(3600));
  EXPECT_EQ(c.server_idle_timeout, absl::Seconds(600));
  EXPECT_EQ(c.server_connect_timeout, absl::Seconds(15));
  EXPECT_EQ(c.server_login_retry, absl::Seconds(15));
  EXPECT_EQ(c.client_login_timeout, absl::Seconds(60));
  EXPECT_EQ(c.autodb_idle_timeout, absl::Seconds(3600));
  EXPECT_EQ(c.client_idle_timeout, absl::ZeroDuration());
  EXPECT_EQ(c.query_timeout, absl::ZeroDuration());
  EXPECT_EQ(c.query_wait_timeout, absl::Seconds(120));
  EXPECT_EQ(c.idle_transaction_timeout, absl::ZeroDuration());
  EXPECT_THAT(c.ignore_startup_parameters, IsEmpty());
  EXPECT_EQ(c.max_packet_size, 2147483647);
  EXPECT_EQ(c.pkt_buf, 4096);
  EXPECT_TRUE(c.tcp_keepalive);
  EXPECT_EQ(c.tcp_keepcnt, 0);
  EXPECT_EQ(c.tcp_keepidle, 0);
  EXPECT_EQ(c.tcp_keepintvl, 0);
  EXPECT_EQ(c.logfile, "");
  EXPECT_EQ(c.pidfile, "");
  EXPECT_TRUE(c.log_connections);
  EXPECT_TRUE(c.log_disconnections);
  EXPECT_TRUE(c.log_pooler_errors);
  EXPECT_EQ(c.stats_period, absl::Seconds(60));
  EXPECT_FALSE(c.verbose);
  EXPECT_THAT(c.warnings, IsEmpty());
}

TEST(ConfigTest, TutorialStyleConfig) {
  Config c = MustParse(R"ini([databases]
mydb = host=localhost port=5432 dbname=mydb
* = host=127.0.0.1

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = 6432
auth_type = md5
auth_file = /etc/pgbouncer/userlist.txt
logfile = /var/log/pgbouncer/pgbouncer.log
pidfile = /var/run/pgbouncer/pgbouncer.pid
admin_users = postgres
)ini");
  ASSERT_THAT(c.databases, SizeIs(2));
  const DatabaseConfig& mydb = c.databases.at("mydb");
  EXPECT_EQ(mydb.name, "mydb");
  EXPECT_EQ(mydb.host, "localhost");
  EXPECT_EQ(mydb.port, 5432);
  EXPECT_EQ(mydb.dbname, "mydb");
  EXPECT_EQ(mydb.user, "");
  EXPECT_FALSE(mydb.pool_size.has_value());
  EXPECT_FALSE(mydb.pool_mode.has_value());
  EXPECT_EQ(c.databases.at("*").host, "127.0.0.1");
  EXPECT_EQ(c.listen_addr, "127.0.0.1");
  EXPECT_EQ(c.auth_type, AuthType::kMd5);
  EXPECT_EQ(c.auth_file, "/etc/pgbouncer/userlist.txt");
  EXPECT_EQ(c.logfile, "/var/log/pgbouncer/pgbouncer.log");
  EXPECT_EQ(c.pidfile, "/var/run/pgbouncer/pgbouncer.pid");
  EXPECT_THAT(c.admin_users, ElementsAre("postgres"));
  EXPECT_THAT(c.warnings, IsEmpty());

  std::optional<DatabaseConfig> other = c.FindDatabase("otherdb");
  ASSERT_TRUE(other.has_value());
  EXPECT_EQ(other->name, "otherdb");
  EXPECT_EQ(other->dbname, "otherdb");
  EXPECT_EQ(other->host, "127.0.0.1");
}

// The kind of file teams run in production: comments of both styles, every pgfleet key,
// keys pgfleet ignores, odd spacing and a CRLF line.
TEST(ConfigTest, RealisticProductionConfig) {
  Config c = MustParse(
      ";; pgbouncer.ini for the orders cluster\n"  // 1
      "# managed by config management\n"           // 2
      "[databases]\n"                              // 3
      "orders = host=10.0.0.5 port=5433 dbname=orders_prod pool_size=40 "
      "reserve_pool=5 min_pool_size=2\n"  // 4
      "orders_ro = host=10.0.0.6,10.0.0.7 dbname=orders_prod user=reporting "
      "password='s3cret pw' pool_mode=statement max_db_connections=10\n"  // 5
      "analytics=host=/var/run/postgresql dbname=analytics "
      "connect_query='SELECT set_config(''search_path'', ''app'', false)' "
      "client_encoding=UTF8 datestyle=ISO timezone=UTC application_name=orders-app\n"  // 6
      "\"legacy db\" = host=db.internal dbname=legacy\n"                               // 7
      "* = host=10.0.0.5 port=5433 auth_user=pgbouncer\n"                              // 8
      "\n"                                                                             // 9
      "[users]\n"                                                                      // 10
      "batch = pool_mode=session max_user_connections=5\n"                             // 11
      "\n"                                                                             // 12
      "[pgbouncer]\n"                                                                  // 13
      "logfile = /var/log/postgresql/pgbouncer.log\n"                                  // 14
      "pidfile = /var/run/postgresql/pgbouncer.pid\n"                                  // 15
      "listen_addr = *\n"                                                              // 16
      "listen_port = 6432\r\n"                                                         // 17
      "unix_socket_dir = /var/run/postgresql\n"                                        // 18
      "auth_type = scram-sha-256\n"                                                    // 19
      "auth_file = /etc/pgbouncer/userlist.txt\n"                                      // 20
      "admin_users = postgres, ops\n"                                                  // 21
      "stats_users = datadog,  prometheus\n"                                           // 22
      "pool_mode = transaction\n"                                                      // 23
      "server_reset_query =\n"                                                         // 24
      "server_reset_query_always = 0\n"                                                // 25
      "server_check_query = SELECT 1\n"                                                // 26
      "server_check_delay = 10\n"                                                      // 27
      "ignore_startup_parameters = extra_float_digits, search_path\n"                  // 28
      "max_client_conn = 5000\n"                                                       // 29
      "default_pool_size = 25\n"                                                       // 30
      "min_pool_size = 5\n"                                                            // 31
      "reserve_pool_size = 5\n"                                                        // 32
      "reserve_pool_timeout = 2.5\n"                                                   // 33
      "max_db_connections = 100\n"                                                     // 34
      "max_user_connections = 90\n"                                                    // 35
      "server_lifetime = 1800\n"                                                       // 36
      "server_idle_timeout = 300\n"                                                    // 37
      "server_connect_timeout = 5\n"                                                   // 38
      "server_login_retry = 1\n"                                                       // 39
      "client_login_timeout = 30\n"                                                    // 40
      "client_idle_timeout = 0\n"                                                      // 41
      "query_timeout = 0\n"                                                            // 42
      "query_wait_timeout = 60\n"                                                      // 43
      "idle_transaction_timeout = 600\n"                                               // 44
      "pkt_buf = 8192\n"                                                               // 45
      "max_packet_size = 1073741824\n"                                                 // 46
      "tcp_keepalive = 1\n"                                                            // 47
      "tcp_keepcnt = 9\n"                                                              // 48
      "tcp_keepidle = 7200\n"                                                          // 49
      "tcp_keepintvl = 75\n"                                                           // 50
      "log_connections = 0\n"                                                          // 51
      "log_disconnections = 0\n"                                                       // 52
      "log_pooler_errors = 1\n"                                                        // 53
      "stats_period = 30\n"                                                            // 54
      "verbose = 0\n"                                                                  // 55
      "so_reuseport = 1\n"                                                             // 56
      "server_tls_sslmode = require\n"                                                 // 57
      "client_tls_sslmode = disable\n"                                                 // 58
      "dns_max_ttl = 15\n"                                                             // 59
      "application_name_add_host = 1\n"                                                // 60
      "max_prepared_statements = 100\n"                                                // 61
      "unix_socket_mode = 0777\n"                                                      // 62
      "  ;; indented comment\n"                                                        // 63
      "\tlisten_backlog\t=\t4096\n");                                                  // 64

  const DatabaseConfig& orders = c.databases.at("orders");
  EXPECT_EQ(orders.host, "10.0.0.5");
  EXPECT_EQ(orders.port, 5433);
  EXPECT_EQ(orders.dbname, "orders_prod");
  EXPECT_EQ(orders.pool_size, 40);
  EXPECT_EQ(orders.reserve_pool, 5);
  EXPECT_EQ(orders.min_pool_size, 2);
  const DatabaseConfig& ro = c.databases.at("orders_ro");
  EXPECT_EQ(ro.host, "10.0.0.6,10.0.0.7");
  EXPECT_EQ(ro.user, "reporting");
  EXPECT_EQ(ro.password, "s3cret pw");
  EXPECT_EQ(ro.pool_mode, PoolMode::kStatement);
  EXPECT_EQ(ro.max_db_connections, 10);
  const DatabaseConfig& analytics = c.databases.at("analytics");
  EXPECT_EQ(analytics.host, "/var/run/postgresql");
  EXPECT_EQ(analytics.connect_query, "SELECT set_config('search_path', 'app', false)");
  EXPECT_EQ(analytics.client_encoding, "UTF8");
  EXPECT_EQ(analytics.datestyle, "ISO");
  EXPECT_EQ(analytics.timezone, "UTC");
  EXPECT_EQ(analytics.application_name, "orders-app");
  EXPECT_EQ(c.databases.at("legacy db").dbname, "legacy");
  EXPECT_EQ(c.databases.at("*").port, 5433);

  const UserConfig* batch = c.FindUser("batch");
  ASSERT_NE(batch, nullptr);
  EXPECT_EQ(batch->pool_mode, PoolMode::kSession);
  EXPECT_EQ(batch->max_user_connections, 5);

  EXPECT_EQ(c.listen_addr, "*");
  EXPECT_EQ(c.listen_port, 6432);
  EXPECT_EQ(c.unix_socket_dir, "/var/run/postgresql");
  EXPECT_EQ(c.auth_type, AuthType::kScramSha256);
  EXPECT_THAT(c.admin_users, ElementsAre("postgres", "ops"));
  EXPECT_THAT(c.stats_users, ElementsAre("datadog", "prometheus"));
  EXPECT_EQ(c.pool_mode, PoolMode::kTransaction);
  EXPECT_EQ(c.server_reset_query, "");
  EXPECT_EQ(c.server_check_query, "SELECT 1");
  EXPECT_EQ(c.server_check_delay, absl::Seconds(10));
  EXPECT_THAT(c.ignore_startup_parameters, ElementsAre("extra_float_digits", "search_path"));
  EXPECT_EQ(c.max_client_conn, 5000);
  EXPECT_EQ(c.default_pool_size, 25);
  EXPECT_EQ(c.min_pool_size, 5);
  EXPECT_EQ(c.reserve_pool_size, 5);
  EXPECT_EQ(c.reserve_pool_timeout, absl::Milliseconds(2500));
  EXPECT_EQ(c.max_db_connections, 100);
  EXPECT_EQ(c.max_user_connections, 90);
  EXPECT_EQ(c.server_lifetime, absl::Seconds(1800));
  EXPECT_EQ(c.server_idle_timeout, absl::Seconds(300));
  EXPECT_EQ(c.server_connect_timeout, absl::Seconds(5));
  EXPECT_EQ(c.server_login_retry, absl::Seconds(1));
  EXPECT_EQ(c.client_login_timeout, absl::Seconds(30));
  EXPECT_EQ(c.query_wait_timeout, absl::Seconds(60));
  EXPECT_EQ(c.idle_transaction_timeout, absl::Seconds(600));
  EXPECT_EQ(c.pkt_buf, 8192);
  EXPECT_EQ(c.max_packet_size, 1073741824);
  EXPECT_EQ(c.max_prepared_statements, 100);
  EXPECT_EQ(c.tcp_keepcnt, 9);
  EXPECT_EQ(c.tcp_keepidle, 7200);
  EXPECT_EQ(c.tcp_keepintvl, 75);
  EXPECT_FALSE(c.log_connections);
  EXPECT_FALSE(c.log_disconnections);
  EXPECT_TRUE(c.log_pooler_errors);
  EXPECT_EQ(c.stats_period, absl::Seconds(30));
  EXPECT_EQ(c.server_tls_sslmode, TlsMode::kRequire);
  EXPECT_EQ(c.client_tls_sslmode, TlsMode::kDisable);

  EXPECT_TRUE(c.application_name_add_host);
  EXPECT_EQ(c.listen_backlog, 4096);

  EXPECT_THAT(c.warnings, ElementsAre(Ignored("test.ini:56", "pgbouncer", "so_reuseport"),
                                      Ignored("test.ini:59", "pgbouncer", "dns_max_ttl")));
}

TEST(ConfigTest, IgnoredPgBouncerKeysAreAccepted) {
  for (const char* key :
       {"so_reuseport", "dns_nxdomain_ttl", "job_name", "suspend_timeout", "sbuf_loopcnt",
        "peer_id", "conffile", "service_name", "auth_ldap_options", "resolv_conf"}) {
    Config c = MustParse(absl::StrCat("[pgbouncer]\n", key, " = whatever\n"));
    EXPECT_THAT(c.warnings, ElementsAre(Ignored("test.ini:2", "pgbouncer", key)));
  }
}

TEST(ConfigTest, TlsSettingsThatCannotWorkAreRefused) {
  auto error = [](const std::string& body) {
    absl::StatusOr<Config> c = ParseConfig(absl::StrCat("[pgbouncer]\n", body), "test.ini");
    return c.ok() ? std::string("accepted") : std::string(c.status().message());
  };
  EXPECT_THAT(error("client_tls_sslmode = require\n"),
              HasSubstr("client_tls_sslmode = require needs client_tls_cert_file and "
                        "client_tls_key_file"));
  EXPECT_THAT(error("client_tls_sslmode = verify-full\nclient_tls_cert_file = c\n"
                    "client_tls_key_file = k\n"),
              HasSubstr("needs client_tls_ca_file"));
  EXPECT_THAT(error("server_tls_sslmode = verify-ca\n"), HasSubstr("needs server_tls_ca_file"));
  EXPECT_THAT(error("server_tls_cert_file = c\n"),
              HasSubstr("server_tls_cert_file and server_tls_key_file go together"));
  EXPECT_THAT(error("server_tls_sslmode = sometimes\n"),
              HasSubstr("expected disable, allow, prefer, require, verify-ca or verify-full"));
  EXPECT_EQ(error("server_tls_sslmode = VERIFY-FULL\nserver_tls_ca_file = ca.pem\n"), "accepted");
  EXPECT_EQ(error("client_tls_sslmode = allow\nclient_tls_cert_file = c\n"
                  "client_tls_key_file = k\n"),
            "accepted");
}

TEST(ConfigTest, UnknownKeyIsAWarningWithLineNumber) {
  Config c = MustParse("[pgbouncer]\nlisten_port = 7000\n\nfrobnicate = yes\n");
  EXPECT_EQ(c.listen_port, 7000);
  EXPECT_THAT(c.warnings,
              ElementsAre("test.ini:4: unknown key 'frobnicate' in [pgbouncer]; ignored"));
}

TEST(ConfigTest, PeersSectionIsIgnoredWithAWarning) {
  Config c = MustParse("[pgbouncer]\n[peers]\n1 = host=/tmp/a\n2 = host=10.0.0.1 port=6433\n");
  EXPECT_THAT(c.warnings,
              ElementsAre("test.ini:2: section [peers] is not supported by pgfleet; ignored"));
}

TEST(ConfigTest, PgbouncerKeysAndEnumValuesAreCaseInsensitive) {
  Config c = MustParse(
      "[PgBouncer]\nListen_Port = 7000\nPOOL_MODE = Transaction\n"
      "auth_type = SCRAM-SHA-256\n");
  EXPECT_EQ(c.listen_port, 7000);
  EXPECT_EQ(c.pool_mode, PoolMode::kTransaction);
  EXPECT_EQ(c.auth_type, AuthType::kScramSha256);
}

TEST(ConfigTest, LaterValueWins) {
  Config c = MustParse(
      "[pgbouncer]\ndefault_pool_size = 5\ndefault_pool_size = 7\n"
      "[databases]\na = host=x\na = host=y\n");
  EXPECT_EQ(c.default_pool_size, 7);
  EXPECT_EQ(c.databases.at("a").host, "y");
}

TEST(ConfigTest, ValuesAreNotUnquotedInPgbouncerSection) {
  Config c = MustParse(
      "[pgbouncer]\nserver_reset_query = 'DISCARD ALL'\nlisten_port=7001\n"
      "logfile = /var/log/pgbouncer.log ; not a comment\n");
  EXPECT_EQ(c.server_reset_query, "'DISCARD ALL'");
  EXPECT_EQ(c.listen_port, 7001);
  EXPECT_EQ(c.logfile, "/var/log/pgbouncer.log ; not a comment");
}

TEST(ConfigTest, Durations) {
  struct Case {
    const char* text;
    absl::Duration want;
  };
  for (const Case& tc : std::vector<Case>{{"0", absl::ZeroDuration()},
                                          {"30", absl::Seconds(30)},
                                          {"0.5", absl::Milliseconds(500)},
                                          {".25", absl::Milliseconds(250)},
                                          {"250ms", absl::Milliseconds(250)},
                                          {"15s", absl::Seconds(15)},
                                          {"15 s", absl::Seconds(15)},
                                          {"2min", absl::Minutes(2)},
                                          {"1.5h", absl::Minutes(90)},
                                          {"10MS", absl::Milliseconds(10)}}) {
    Config c = MustParse(absl::StrCat("[pgbouncer]\nquery_timeout = ", tc.text, "\n"));
    EXPECT_EQ(c.query_timeout, tc.want) << tc.text;
  }
}

TEST(ConfigTest, Booleans) {
  for (const char* yes : {"1", "yes", "true", "on", "YES", "True", "On"}) {
    Config c = MustParse(absl::StrCat("[pgbouncer]\nserver_reset_query_always = ", yes, "\n"));
    EXPECT_TRUE(c.server_reset_query_always) << yes;
  }
  for (const char* no : {"0", "no", "false", "off", "NO", "False", "OFF"}) {
    Config c = MustParse(absl::StrCat("[pgbouncer]\ntcp_keepalive = ", no, "\n"));
    EXPECT_FALSE(c.tcp_keepalive) << no;
  }
}

TEST(ConfigTest, VerboseIsALevel) {
  EXPECT_TRUE(MustParse("[pgbouncer]\nverbose = 2\n").verbose);
  EXPECT_TRUE(MustParse("[pgbouncer]\nverbose = 1\n").verbose);
  EXPECT_FALSE(MustParse("[pgbouncer]\nverbose = 0\n").verbose);
  EXPECT_THAT(OptionError("verbose", "loud"), HasSubstr("invalid integer 'loud'"));
}

TEST(ConfigTest, ListsAreTrimmedAndSkipEmptyItems) {
  Config c = MustParse(
      "[pgbouncer]\nadmin_users = a , b,,c ,\nstats_users =\n"
      "ignore_startup_parameters = extra_float_digits\n");
  EXPECT_THAT(c.admin_users, ElementsAre("a", "b", "c"));
  EXPECT_THAT(c.stats_users, IsEmpty());
  EXPECT_THAT(c.ignore_startup_parameters, ElementsAre("extra_float_digits"));
}

TEST(ConfigTest, AllAuthTypes) {
  for (AuthType type : {AuthType::kTrust, AuthType::kPlain, AuthType::kMd5, AuthType::kScramSha256,
                        AuthType::kAny}) {
    Config c = MustParse(absl::StrCat("[pgbouncer]\nauth_type = ", AuthTypeName(type), "\n"));
    EXPECT_EQ(c.auth_type, type);
  }
}

TEST(ConfigTest, Names) {
  EXPECT_STREQ(PoolModeName(PoolMode::kSession), "session");
  EXPECT_STREQ(PoolModeName(PoolMode::kTransaction), "transaction");
  EXPECT_STREQ(PoolModeName(PoolMode::kStatement), "statement");
  EXPECT_STREQ(AuthTypeName(AuthType::kTrust), "trust");
  EXPECT_STREQ(AuthTypeName(AuthType::kPlain), "plain");
  EXPECT_STREQ(AuthTypeName(AuthType::kMd5), "md5");
  EXPECT_STREQ(AuthTypeName(AuthType::kScramSha256), "scram-sha-256");
  EXPECT_STREQ(AuthTypeName(AuthType::kAny), "any");
}

// ---- [databases] and [users]

TEST(ConfigDatabasesTest, QuotedNamesAndValues) {
  Config c = MustParse(
      "[pgbouncer]\n[databases]\n"
      "\"my db\" = host=h dbname='my db' password='it''s' connect_query='SELECT 1'\n"
      "\"say \"\"hi\"\"\" = host=h\n"
      "  spaced   =   host = h   port =  6000  \n");
  const DatabaseConfig& my_db = c.databases.at("my db");
  EXPECT_EQ(my_db.name, "my db");
  EXPECT_EQ(my_db.dbname, "my db");
  EXPECT_EQ(my_db.password, "it's");
  EXPECT_EQ(my_db.connect_query, "SELECT 1");
  EXPECT_TRUE(c.databases.contains("say \"hi\""));
  EXPECT_EQ(c.databases.at("spaced").port, 6000);
}

TEST(ConfigDatabasesTest, EmptyConnStringUsesDefaults) {
  Config c = MustParse("[pgbouncer]\n[databases]\nlocal =\n");
  const DatabaseConfig& db = c.databases.at("local");
  EXPECT_EQ(db.host, "");
  EXPECT_EQ(db.port, 5432);
  EXPECT_EQ(db.dbname, "");
  EXPECT_EQ(c.FindDatabase("local")->dbname, "local");
}

TEST(ConfigDatabasesTest, ReservePoolSizeIsAnAlias) {
  Config c = MustParse("[pgbouncer]\n[databases]\na = reserve_pool_size=3\n");
  EXPECT_EQ(c.databases.at("a").reserve_pool, 3);
}

TEST(ConfigDatabasesTest, AuthQueryKeysOverrideThePgbouncerOnes) {
  Config c = MustParse(
      "[pgbouncer]\nauth_user = lookup\nauth_dbname = authdb\n[databases]\n"
      "a = host=x auth_user=pgb auth_query='SELECT u, p FROM f($1)' auth_dbname=other\n"
      "b = host=x\n");
  EXPECT_THAT(c.warnings, IsEmpty());
  const DatabaseConfig& a = c.databases.at("a");
  EXPECT_EQ(a.host, "x");
  EXPECT_EQ(c.AuthUserFor(a), "pgb");
  EXPECT_EQ(c.AuthQueryFor(a), "SELECT u, p FROM f($1)");
  EXPECT_EQ(c.AuthDbnameFor(a), "other");
  const DatabaseConfig& b = c.databases.at("b");
  EXPECT_EQ(c.AuthUserFor(b), "lookup");
  EXPECT_EQ(c.AuthQueryFor(b), c.auth_query);
  EXPECT_EQ(c.AuthDbnameFor(b), "authdb");
  EXPECT_TRUE(c.UsesAuthQuery());
}

TEST(ConfigTest, AuthQueryDefaultsArePgBouncers) {
  Config c = MustParse("[pgbouncer]\n");
  EXPECT_FALSE(c.UsesAuthQuery());
  EXPECT_EQ(c.auth_query,
            "SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END "
            "FROM pg_authid WHERE rolname=$1 AND rolcanlogin");
  const DatabaseConfig db = *MustParse("[pgbouncer]\n[databases]\nd = host=x\n").FindDatabase("d");
  EXPECT_EQ(c.AuthDbnameFor(db), "d");  // The client's database when no auth_dbname is set.
  // SHOW CONFIG lists them as implemented settings, changeable online.
  for (const ConfigEntry& entry : DescribeConfig(c)) {
    if (entry.key == "auth_user" || entry.key == "auth_query" || entry.key == "auth_dbname") {
      EXPECT_TRUE(entry.changeable) << entry.key;
    }
  }
  EXPECT_EQ(FindUnsupportedSetting("pgbouncer", "auth_query"), nullptr);
  EXPECT_EQ(FindUnsupportedSetting("databases", "auth_user"), nullptr);
  EXPECT_TRUE(ApplySetting(c, "auth_user", "pgb").ok());
  EXPECT_EQ(c.auth_user, "pgb");
}

TEST(ConfigDatabasesTest, FindDatabaseFallbackSemantics) {
  Config c = MustParse(
      "[pgbouncer]\n[databases]\n"
      "exact = host=a dbname=real\n"
      "nodbname = host=b\n"
      "* = host=fallback port=5433\n");
  std::optional<DatabaseConfig> exact = c.FindDatabase("exact");
  ASSERT_TRUE(exact.has_value());
  EXPECT_EQ(exact->name, "exact");
  EXPECT_EQ(exact->dbname, "real");
  EXPECT_EQ(exact->host, "a");

  std::optional<DatabaseConfig> nodbname = c.FindDatabase("nodbname");
  ASSERT_TRUE(nodbname.has_value());
  EXPECT_EQ(nodbname->dbname, "nodbname");
  EXPECT_EQ(nodbname->host, "b");

  std::optional<DatabaseConfig> fallback = c.FindDatabase("anything");
  ASSERT_TRUE(fallback.has_value());
  EXPECT_EQ(fallback->name, "anything");
  EXPECT_EQ(fallback->dbname, "anything");
  EXPECT_EQ(fallback->host, "fallback");
  EXPECT_EQ(fallback->port, 5433);
  // The stored entry is untouched.
  EXPECT_EQ(c.databases.at("*").name, "*");
  EXPECT_EQ(c.databases.at("*").dbname, "");

  Config pinned = MustParse("[pgbouncer]\n[databases]\n* = host=h dbname=shared\n");
  EXPECT_EQ(pinned.FindDatabase("x")->dbname, "shared");
  EXPECT_EQ(pinned.FindDatabase("x")->name, "x");

  Config none = MustParse("[pgbouncer]\n[databases]\nonly = host=h\n");
  EXPECT_FALSE(none.FindDatabase("other").has_value());
  EXPECT_TRUE(none.FindDatabase("only").has_value());
}

// PgBouncer 1.23-1.25's per-user settings load (1.18's loader refused pool_size here).
TEST(ConfigUsersTest, PgBouncer125UserSettingsLoad) {
  Config c = MustParse(
      "[pgbouncer]\n[users]\n"
      "app = pool_size=4 reserve_pool_size=2 pool_mode=statement max_user_connections=9 "
      "query_wait_timeout=1.5 query_timeout=0 idle_transaction_timeout=0 transaction_timeout=0 "
      "client_idle_timeout=0 max_user_client_connections=50\n"
      "old = reserve_pool=1 query_wait_timeout=-1\n");
  const UserConfig* app = c.FindUser("app");
  ASSERT_NE(app, nullptr);
  EXPECT_EQ(app->pool_size, 4);
  EXPECT_EQ(app->reserve_pool_size, 2);
  EXPECT_EQ(app->pool_mode, PoolMode::kStatement);
  EXPECT_EQ(app->max_user_connections, 9);
  EXPECT_EQ(app->query_wait_timeout, absl::Milliseconds(1500));
  EXPECT_EQ(c.FindUser("old")->reserve_pool_size, 1);
  EXPECT_FALSE(c.FindUser("old")->query_wait_timeout.has_value());  // -1: not set.
  // The per-user timeouts are implemented (tests/unit/pgbouncer_keys_test.cc): no warning.
  EXPECT_THAT(c.warnings, IsEmpty());
  EXPECT_EQ(app->max_user_client_connections, 50);
  EXPECT_EQ(c.MaxUserClientConnectionsFor("app"), 50);
  EXPECT_EQ(c.MaxUserClientConnectionsFor("old"), 0);
}

// PgBouncer's order: the [users] entry, then the [databases] entry, then [pgbouncer].
TEST(ConfigUsersTest, UserThenDatabaseThenDefaultPrecedence) {
  Config c = MustParse(
      "[pgbouncer]\ndefault_pool_size = 20\nreserve_pool_size = 1\npool_mode = session\n"
      "query_wait_timeout = 120\n"
      "[databases]\n"
      "sized = pool_size=10 reserve_pool_size=3 pool_mode=transaction query_wait_timeout=30\n"
      "plain = host=h\n"
      "unset = query_wait_timeout=-1\n"
      "[users]\n"
      "u = pool_size=2 reserve_pool_size=0 pool_mode=statement query_wait_timeout=5\n"
      "v = max_user_connections=4\n");
  const DatabaseConfig sized = *c.FindDatabase("sized");
  const DatabaseConfig plain = *c.FindDatabase("plain");
  EXPECT_EQ(c.PoolSizeFor(sized, "u"), 2);
  EXPECT_EQ(c.PoolSizeFor(sized, "v"), 10);
  EXPECT_EQ(c.PoolSizeFor(plain, "v"), 20);
  EXPECT_EQ(c.PoolSizeFor(plain, "u"), 2);
  EXPECT_EQ(c.ReservePoolSizeFor(sized, "u"), 0);
  EXPECT_EQ(c.ReservePoolSizeFor(sized, "v"), 3);
  EXPECT_EQ(c.ReservePoolSizeFor(plain, "v"), 1);
  EXPECT_EQ(c.PoolModeFor(sized, "u"), PoolMode::kStatement);
  EXPECT_EQ(c.PoolModeFor(sized, "v"), PoolMode::kTransaction);
  EXPECT_EQ(c.PoolModeFor(plain, "v"), PoolMode::kSession);
  EXPECT_EQ(c.QueryWaitTimeoutFor(sized, "u"), absl::Seconds(5));
  EXPECT_EQ(c.QueryWaitTimeoutFor(sized, "v"), absl::Seconds(30));
  EXPECT_EQ(c.QueryWaitTimeoutFor(plain, "v"), absl::Seconds(120));
  EXPECT_EQ(c.QueryWaitTimeoutFor(*c.FindDatabase("unset"), "v"), absl::Seconds(120));
  // A forced user's [users] entry sizes the entry's one pool in the connection budget.
  Config forced = MustParse(
      "[pgbouncer]\ndefault_pool_size = 20\n[databases]\nf = host=h port=1 user=u\n"
      "[users]\nu = pool_size=3\n");
  EXPECT_EQ(MaxServerConnectionsByAddress(forced).at("h:1"), 3);
}

TEST(ConfigUsersTest, UsersAndRoles) {
  Config c = MustParse(
      "[pgbouncer]\nadmin_users = admin\nstats_users = monitor\n"
      "[users]\n"
      "app = pool_mode=transaction\n"
      "batch = max_user_connections=3\n");
  ASSERT_NE(c.FindUser("app"), nullptr);
  EXPECT_EQ(c.FindUser("app")->name, "app");
  EXPECT_EQ(c.FindUser("app")->pool_mode, PoolMode::kTransaction);
  EXPECT_FALSE(c.FindUser("app")->max_user_connections.has_value());
  EXPECT_EQ(c.FindUser("batch")->max_user_connections, 3);
  EXPECT_FALSE(c.FindUser("batch")->pool_mode.has_value());
  EXPECT_EQ(c.FindUser("nobody"), nullptr);

  EXPECT_TRUE(c.IsAdminUser("admin"));
  EXPECT_FALSE(c.IsAdminUser("monitor"));
  EXPECT_TRUE(c.IsStatsUser("monitor"));
  EXPECT_FALSE(c.IsStatsUser("admin"));  // The caller lets admins run SHOW.
  EXPECT_FALSE(c.IsAdminUser("Admin"));
}

// ---- Errors

TEST(ConfigErrorTest, BadInteger) {
  EXPECT_EQ(OptionError("default_pool_size", "abc"),
            "test.ini:2: key 'default_pool_size': invalid integer 'abc'");
  EXPECT_THAT(OptionError("max_client_conn", "10 20"), HasSubstr("invalid integer '10 20'"));
  EXPECT_THAT(OptionError("max_client_conn", ""), HasSubstr("invalid integer ''"));
  EXPECT_THAT(OptionError("pkt_buf", "4k"), HasSubstr("invalid integer '4k'"));
  EXPECT_THAT(OptionError("max_client_conn", "99999999999"),
              HasSubstr("invalid value '99999999999': must be at most 2147483647"));
}

TEST(ConfigErrorTest, NegativeSize) {
  EXPECT_EQ(OptionError("default_pool_size", "-1"),
            "test.ini:2: key 'default_pool_size': invalid value '-1': must not be negative");
  EXPECT_THAT(OptionError("tcp_keepcnt", "-3"), HasSubstr("must not be negative"));
  EXPECT_THAT(OptionError("pkt_buf", "0"), HasSubstr("must be at least 1"));
}

TEST(ConfigErrorTest, BadPort) {
  EXPECT_EQ(OptionError("listen_port", "0"),
            "test.ini:2: key 'listen_port': invalid value '0': must be between 1 and 65535");
  EXPECT_THAT(OptionError("listen_port", "65536"), HasSubstr("must be between 1 and 65535"));
  EXPECT_THAT(OptionError("listen_port", "http"), HasSubstr("invalid integer 'http'"));
  absl::Status db_port = ParseError("[pgbouncer]\n[databases]\nx = host=h port=0\n");
  EXPECT_EQ(db_port.message(),
            "test.ini:3: database 'x': key 'port': invalid value '0': must be between 1 and 65535");
}

TEST(ConfigErrorTest, BadBool) {
  EXPECT_THAT(OptionError("log_connections", "maybe"),
              AllOf(HasSubstr("test.ini:2: key 'log_connections': invalid boolean 'maybe'"),
                    HasSubstr("expected 0, 1, yes, no, true, false, on or off")));
  EXPECT_THAT(OptionError("tcp_keepalive", "2"), HasSubstr("invalid boolean '2'"));
}

TEST(ConfigErrorTest, BadDuration) {
  for (const char* bad : {"abc", "-1", "5x", "", "1.2.3", "1e3", "ms", "5 minutes", "inf"}) {
    EXPECT_THAT(
        OptionError("server_lifetime", bad),
        HasSubstr(absl::StrCat("test.ini:2: key 'server_lifetime': invalid duration '", bad, "'")))
        << bad;
  }
  EXPECT_THAT(OptionError("query_timeout", "99999999999999999999999999999999"),
              HasSubstr("too large"));
  EXPECT_EQ(OptionError("stats_period", "0"),
            "test.ini:2: key 'stats_period': invalid value '0': must be greater than 0");
}

TEST(ConfigErrorTest, BadEnum) {
  EXPECT_THAT(OptionError("pool_mode", "sessions"),
              AllOf(HasSubstr("test.ini:2: key 'pool_mode': invalid pool mode 'sessions'"),
                    HasSubstr("session, transaction or statement")));
  EXPECT_THAT(OptionError("auth_type", "password"),
              HasSubstr("key 'auth_type': invalid auth type 'password'"));
  for (const char* unsupported : {"pam", "ldap"}) {
    EXPECT_THAT(
        OptionError("auth_type", unsupported),
        HasSubstr(absl::StrCat("auth_type '", unsupported, "' is not supported by pgfleet")));
  }
  absl::Status db = ParseError("[pgbouncer]\n[databases]\nx = pool_mode=fast\n");
  EXPECT_THAT(db.message(),
              HasSubstr("test.ini:3: database 'x': key 'pool_mode': invalid pool mode 'fast'"));
  absl::Status user = ParseError("[pgbouncer]\n[users]\nu = pool_mode=fast\n");
  EXPECT_THAT(user.message(),
              HasSubstr("test.ini:3: user 'u': key 'pool_mode': invalid pool mode 'fast'"));
}

TEST(ConfigErrorTest, BadDatabaseValues) {
  EXPECT_EQ(ParseError("[pgbouncer]\n[databases]\nx = pool_size=lots\n").message(),
            "test.ini:3: database 'x': key 'pool_size': invalid integer 'lots'");
  EXPECT_THAT(ParseError("[pgbouncer]\n[databases]\nx = max_db_connections=-2\n").message(),
              HasSubstr("key 'max_db_connections': invalid value '-2': must not be negative"));
  EXPECT_THAT(ParseError("[pgbouncer]\n[users]\nu = max_user_connections=x\n").message(),
              HasSubstr("user 'u': key 'max_user_connections': invalid integer 'x'"));
}

TEST(ConfigErrorTest, UnknownConnStringKey) {
  absl::Status status = ParseError("[pgbouncer]\n[databases]\nx = host=h hostt=h2\n");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), "test.ini:3: database 'x': unknown parameter 'hostt'");
  EXPECT_EQ(ParseError("[pgbouncer]\n[users]\nu = pool_sise=3\n").message(),
            "test.ini:3: user 'u': unknown parameter 'pool_sise'");
}

TEST(ConfigErrorTest, MalformedConnString) {
  EXPECT_EQ(ParseError("[pgbouncer]\n[databases]\nx = connect_query='SELECT 1\n").message(),
            "test.ini:3: database 'x': unterminated quoted value for 'connect_query'");
  EXPECT_THAT(ParseError("[pgbouncer]\n[databases]\nx = password='a''\n").message(),
              HasSubstr("unterminated quoted value for 'password'"));
  EXPECT_THAT(ParseError("[pgbouncer]\n[databases]\nx = host\n").message(),
              HasSubstr("database 'x': expected '=' after 'host'"));
  EXPECT_THAT(ParseError("[pgbouncer]\n[databases]\nx = host=\n").message(),
              HasSubstr("empty value for 'host'"));
  EXPECT_THAT(ParseError("[pgbouncer]\n[databases]\nx = password=''\n").message(),
              HasSubstr("empty value for 'password'"));
  EXPECT_THAT(ParseError("[pgbouncer]\n[databases]\nx = =h\n").message(),
              HasSubstr("missing parameter name"));
  EXPECT_THAT(ParseError("[pgbouncer]\n[databases]\nx = host='a'b\n").message(),
              HasSubstr("unexpected text after quoted value for 'host'"));
  EXPECT_THAT(ParseError("[pgbouncer]\n[users]\nu = pool_mode='x\n").message(),
              HasSubstr("user 'u': unterminated quoted value"));
}

TEST(ConfigErrorTest, ReservedDatabaseName) {
  EXPECT_THAT(ParseError("[pgbouncer]\n[databases]\npgbouncer = host=h\n").message(),
              HasSubstr("test.ini:3: database 'pgbouncer': the name is reserved"));
}

TEST(ConfigErrorTest, NoPgbouncerSection) {
  absl::Status status = ParseError("[databases]\nmydb = host=localhost\n");
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), "test.ini: no [pgbouncer] section");
  EXPECT_EQ(ParseError("").message(), "test.ini: no [pgbouncer] section");
}

TEST(ConfigErrorTest, SyntaxErrors) {
  EXPECT_EQ(ParseError("listen_port = 1\n[pgbouncer]\n").message(),
            "test.ini:1: key 'listen_port' before any [section] header");
  EXPECT_EQ(ParseError("[pgbouncer]\n[pgbouncers]\n").message(),
            "test.ini:2: unknown section [pgbouncers]");
  EXPECT_EQ(ParseError("[pgbouncer]\nlisten_port 6432\n").message(),
            "test.ini:2: syntax error: expected '=' after 'listen_port'");
  EXPECT_EQ(ParseError("[pgbouncer\n").message(), "test.ini:1: syntax error: missing ']'");
  EXPECT_THAT(ParseError("[]\n").message(), HasSubstr("test.ini:1: syntax error: empty section"));
  EXPECT_THAT(ParseError("[pgbouncer] x\n").message(), HasSubstr("unexpected 'x' after ']'"));
  EXPECT_THAT(ParseError("[pgbouncer]\n= 5\n").message(), HasSubstr("missing key before '='"));
  EXPECT_THAT(ParseError("[databases]\n\"open = host=h\n").message(),
              HasSubstr("test.ini:2: syntax error: unterminated quoted name"));
  EXPECT_THAT(ParseError("[databases]\n\"\" = host=h\n").message(), HasSubstr("empty quoted name"));
  EXPECT_THAT(ParseError("[pgbouncer]\n%includ x\n").message(),
              HasSubstr("test.ini:2: syntax error: unknown directive '%includ x'"));
  EXPECT_THAT(ParseError("[pgbouncer]\n%include\n").message(),
              HasSubstr("test.ini:2: syntax error: %include needs a file name"));
  // A section header may carry a comment.
  EXPECT_TRUE(Parse("[pgbouncer] ; main\n").ok());
}

// ---- Files and %include

class ConfigFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::temp_directory_path() / "config_test.XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  // Writes `text` to dir_/name (creating parent directories); returns the full path.
  std::string Write(const std::string& name, const std::string& text) {
    std::filesystem::path path = std::filesystem::path(dir_) / name;
    std::filesystem::create_directories(path.parent_path());
    std::ofstream out(path);
    out << text;
    return path.string();
  }

  std::string dir_;
};

TEST_F(ConfigFileTest, LoadConfigReadsTheFile) {
  std::string path = Write("pgbouncer.ini", "[pgbouncer]\nlisten_port = 7432\n");
  absl::StatusOr<Config> config = LoadConfig(path);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->path, path);
  EXPECT_EQ(config->listen_port, 7432);
}

TEST_F(ConfigFileTest, MissingFileIsNotFound) {
  std::string path = dir_ + "/absent.ini";
  absl::StatusOr<Config> config = LoadConfig(path);
  EXPECT_EQ(config.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(config.status().message(), HasSubstr(path));
}

TEST_F(ConfigFileTest, DirectoryIsAnError) {
  absl::StatusOr<Config> config = LoadConfig(dir_);
  EXPECT_FALSE(config.ok());
  EXPECT_THAT(config.status().message(), HasSubstr(dir_));
}

TEST_F(ConfigFileTest, ErrorsNameTheFileTheyAreIn) {
  std::string path = Write("pgbouncer.ini", "[pgbouncer]\n\ndefault_pool_size = abc\n");
  EXPECT_EQ(LoadConfig(path).status().message(),
            absl::StrCat(path, ":3: key 'default_pool_size': invalid integer 'abc'"));
}

TEST_F(ConfigFileTest, IncludeIsRelativeToTheIncludingFileAndKeepsTheSection) {
  Write("conf.d/databases.ini",
        "; only entries, the section comes from the includer\n"
        "app = host=10.0.0.1 dbname=app\n"
        "%include more/extra.ini\n");
  Write("conf.d/more/extra.ini", "extra = host=10.0.0.2\n");
  Write("conf.d/pool.ini", "[pgbouncer]\ndefault_pool_size = 50\nbogus_key = 1\n");
  std::string main = Write("pgbouncer.ini",
                           "[databases]\n"
                           "%include conf.d/databases.ini\n"
                           "main = host=h\n"
                           "%include " +
                               dir_ +
                               "/conf.d/pool.ini\n"
                               "listen_port = 7000\n");
  absl::StatusOr<Config> config = LoadConfig(main);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->databases.at("app").dbname, "app");
  EXPECT_EQ(config->databases.at("extra").host, "10.0.0.2");
  EXPECT_EQ(config->databases.at("main").host, "h");
  EXPECT_EQ(config->default_pool_size, 50);
  // The [pgbouncer] section opened in pool.ini is still current after it returns.
  EXPECT_EQ(config->listen_port, 7000);
  EXPECT_THAT(config->warnings,
              ElementsAre(absl::StrCat(dir_,
                                       "/conf.d/pool.ini:3: unknown key 'bogus_key' in "
                                       "[pgbouncer]; ignored")));
}

TEST_F(ConfigFileTest, ParseConfigResolvesIncludesAgainstItsPath) {
  Write("sub/dbs.ini", "[databases]\nx = host=h\n");
  absl::StatusOr<Config> config =
      ParseConfig("[pgbouncer]\n%include sub/dbs.ini\n", dir_ + "/virtual.ini");
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(config->databases.contains("x"));
}

TEST_F(ConfigFileTest, ErrorInIncludedFileNamesThatFileAndLine) {
  std::string inc = Write("inc.ini", "\n\nmax_client_conn = many\n");
  std::string main = Write("pgbouncer.ini", "[pgbouncer]\n%include inc.ini\n");
  EXPECT_EQ(LoadConfig(main).status().message(),
            absl::StrCat(inc, ":3: key 'max_client_conn': invalid integer 'many'"));
}

TEST_F(ConfigFileTest, MissingIncludeIsNotFound) {
  std::string main = Write("pgbouncer.ini", "[pgbouncer]\n%include nope.ini\n");
  absl::Status status = LoadConfig(main).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(status.message(),
              AllOf(HasSubstr(main + ":2: %include 'nope.ini'"), HasSubstr(dir_ + "/nope.ini")));
}

TEST_F(ConfigFileTest, IncludeLoopIsAnError) {
  std::string a = Write("a.ini", "[pgbouncer]\n%include b.ini\n");
  Write("b.ini", "%include a.ini\n");
  absl::Status status = LoadConfig(a).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(),
              AllOf(HasSubstr("b.ini:1: %include 'a.ini'"), HasSubstr("include loop")));

  std::string self = Write("self.ini", "[pgbouncer]\n%include ./self.ini\n");
  EXPECT_THAT(LoadConfig(self).status().message(), HasSubstr("include loop"));
}

TEST_F(ConfigFileTest, SameFileMayBeIncludedTwice) {
  Write("common.ini", "default_pool_size = 9\n");
  std::string main =
      Write("pgbouncer.ini", "[pgbouncer]\n%include common.ini\n%include common.ini\n");
  absl::StatusOr<Config> config = LoadConfig(main);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->default_pool_size, 9);
}

TEST_F(ConfigFileTest, IncludeDepthIsLimited) {
  // Chain: f0 includes f1 includes ... ; f_n is at include depth n.
  auto write_chain = [this](int files) {
    for (int i = 0; i < files; ++i) {
      std::string text = i == 0 ? "[pgbouncer]\n" : "";
      if (i + 1 < files)
        text += absl::StrCat("%include f", i + 1, ".ini\n");
      else
        text += absl::StrCat("default_pool_size = ", i, "\n");
      Write(absl::StrCat("f", i, ".ini"), text);
    }
    return LoadConfig(absl::StrCat(dir_, "/f0.ini"));
  };
  absl::StatusOr<Config> deepest_allowed = write_chain(kMaxIncludeDepth + 1);
  ASSERT_TRUE(deepest_allowed.ok()) << deepest_allowed.status();
  EXPECT_EQ(deepest_allowed->default_pool_size, kMaxIncludeDepth);

  absl::Status too_deep = write_chain(kMaxIncludeDepth + 2).status();
  EXPECT_EQ(too_deep.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(too_deep.message(),
              AllOf(HasSubstr(absl::StrCat("f", kMaxIncludeDepth, ".ini:1: %include 'f",
                                           kMaxIncludeDepth + 1, ".ini'")),
                    HasSubstr("nested deeper than 10 levels")));
}

TEST(ConfigIniTest, EntriesCarryFileAndLine) {
  absl::StatusOr<std::vector<IniEntry>> entries =
      ParseIni("# c\n[s]\n  k = v w  \r\n\"q\"\"x\"=1\n", "f.ini");
  ASSERT_TRUE(entries.ok()) << entries.status();
  ASSERT_THAT(*entries, SizeIs(3));
  EXPECT_EQ((*entries)[0].kind, IniEntry::Kind::kSection);
  EXPECT_EQ((*entries)[0].key, "s");
  EXPECT_EQ((*entries)[0].line, 2);
  EXPECT_EQ((*entries)[1].kind, IniEntry::Kind::kKeyValue);
  EXPECT_EQ((*entries)[1].file, "f.ini");
  EXPECT_EQ((*entries)[1].line, 3);
  EXPECT_EQ((*entries)[1].key, "k");
  EXPECT_EQ((*entries)[1].value, "v w");
  EXPECT_EQ((*entries)[2].key, "q\"x");
  EXPECT_EQ((*entries)[2].value, "1");
}

// ---- SHOW CONFIG and SET (admin console)

// The row for `key`; fails the test (and returns an empty row) if there is none.
ConfigEntry Row(const std::vector<ConfigEntry>& rows, const std::string& key) {
  for (const ConfigEntry& row : rows) {
    if (row.key == key) return row;
  }
  ADD_FAILURE() << "no SHOW CONFIG row for " << key;
  return ConfigEntry{};
}

std::string RowString(const ConfigEntry& row) {
  return absl::StrCat(row.key, "|", row.value, "|", row.default_value, "|",
                      row.changeable ? "yes" : "no");
}

constexpr char kDefaultAuthQuery[] =
    "SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END FROM "
    "pg_authid WHERE rolname=$1 AND rolcanlogin";

TEST(ConfigDescribeTest, DefaultsMatchPgBouncer118ShowConfig) {
  // key|value|default|changeable as PgBouncer 1.18's SHOW CONFIG prints them for an
  // unconfigured instance, for every key pgfleet implements.
  const std::vector<std::string> expected = {
      "admin_users|||yes", "application_name_add_host|0|0|yes", "auth_dbname|||yes",
      // pgfleet's own keys (slowing password guessing down); PgBouncer has no such rows.
      "auth_failure_burst|5|5|yes", "auth_failure_max_delay|2|2|yes", "auth_file|||yes",
      "auth_hba_file|||yes", "auth_ident_file|||yes",
      // PgBouncer 1.25's default auth_query (1.18's read pg_shadow).
      "auth_query|" + std::string(kDefaultAuthQuery) + "|" + kDefaultAuthQuery + "|yes",
      "auth_type|md5|md5|yes", "auth_user|||yes", "autodb_idle_timeout|3600|3600|yes",
      "client_idle_timeout|0|0|yes", "client_login_timeout|60|60|yes",
      // TLS keys change with SET too, as in PgBouncer.
      "client_tls13_ciphers|||yes", "client_tls_ca_file|||yes", "client_tls_cert_file|||yes",
      "client_tls_ciphers|default|default|yes", "client_tls_dheparams|auto|auto|yes",
      "client_tls_ecdhcurve|auto|auto|yes", "client_tls_key_file|||yes",
      "client_tls_protocols|secure|secure|yes", "client_tls_sslmode|disable|disable|yes",
      "default_pool_size|20|20|yes",
      // PgBouncer's CF_NO_RELOAD.
      "disable_pqexec|0|0|no",
      // pgfleet's own: how long an old process's clients may go on after a hand-over.
      "handover_drain_timeout|30|30|yes", "idle_transaction_timeout|0|0|yes",
      "ignore_startup_parameters|||yes", "listen_addr|||no", "listen_backlog|128|128|no",
      "listen_port|6432|6432|no", "log_connections|1|1|yes", "log_disconnections|1|1|yes",
      "log_format|text|text|yes", "log_pooler_errors|1|1|yes", "log_stats|1|1|yes", "logfile|||yes",
      // PgBouncer 1.25's key and default (no welcome NOTICE).
      "login_notify_message|||yes", "max_client_conn|100|100|yes",
      // PgBouncer 1.24's keys and defaults.
      "max_db_client_connections|0|0|yes", "max_db_connections|0|0|yes",
      "max_packet_size|2147483647|2147483647|yes",
      // PgBouncer 1.22's key and default; 1.18 has no such row.
      "max_prepared_statements|200|200|yes", "max_user_client_connections|0|0|yes",
      "max_user_connections|0|0|yes", "min_pool_size|0|0|yes", "pidfile|||no",
      "pkt_buf|4096|4096|no",
      // PgBouncer 1.25's key and default (pools are never freed for being empty).
      "pool_idle_timeout|0|0|yes", "pool_mode|session|session|yes", "query_timeout|0|0|yes",
      // PgBouncer 1.24's key and default.
      "query_wait_notify|5|5|yes", "query_wait_timeout|120|120|yes", "reserve_pool_size|0|0|yes",
      "reserve_pool_timeout|5|5|yes", "scram_iterations|4096|4096|yes",
      "server_check_delay|30|30|yes", "server_check_query|select 1|select 1|yes",
      "server_connect_timeout|15|15|yes", "server_fast_close|0|0|yes",
      "server_idle_timeout|600|600|yes", "server_lifetime|3600|3600|yes",
      "server_login_retry|15|15|yes", "server_reset_query|DISCARD ALL|DISCARD ALL|yes",
      "server_reset_query_always|0|0|yes", "server_round_robin|0|0|yes",
      "server_tls13_ciphers|||yes", "server_tls_ca_file|||yes",
      "server_tls_cert_file|||yes", "server_tls_ciphers|default|default|yes",
      "server_tls_key_file|||yes", "server_tls_protocols|secure|secure|yes",
      "server_tls_sslmode|prefer|prefer|yes", "stats_period|60|60|yes", "stats_users|||yes",
      "syslog|0|0|yes", "syslog_facility|daemon|daemon|yes", "syslog_ident|pgbouncer|pgbouncer|yes",
      "tcp_defer_accept|1|1|no", "tcp_keepalive|1|1|yes", "tcp_keepcnt|0|0|yes",
      "tcp_keepidle|0|0|yes", "tcp_keepintvl|0|0|yes", "tcp_socket_buffer|0|0|yes",
      "tcp_user_timeout|0|0|yes", "track_extra_parameters|IntervalStyle|IntervalStyle|yes",
      // PgBouncer 1.25's key and default.
      "transaction_timeout|0|0|yes", "unix_socket_dir|/tmp|/tmp|no", "unix_socket_group|||no",
      // Read as strtol base 0 and printed with %d, as PgBouncer's libusual does.
      "unix_socket_mode|511|0777|no", "user|||no",
      "verbose|0||yes",  // PgBouncer's verbose has no default string.
  };
  std::vector<std::string> actual;
  for (const ConfigEntry& row : DescribeConfig(Config())) {
    // The keys pgfleet only loads have their own test below.
    if (FindUnsupportedSetting("pgbouncer", row.key) == nullptr) actual.push_back(RowString(row));
  }
  // Sorted by key, like PgBouncer's output; `expected` is in that order.
  EXPECT_THAT(actual, ::testing::ElementsAreArray(expected));
}

TEST(ConfigDescribeTest, ShowsConfiguredValuesNextToDefaults) {
  Config c = MustParse(
      "[pgbouncer]\n"
      "listen_addr = 127.0.0.1\n"
      "listen_port = 56433\n"
      "unix_socket_dir =\n"
      "auth_type = scram-sha-256\n"
      "admin_users = admin, root\n"
      "pool_mode = TRANSACTION\n"
      "default_pool_size = 2\n"
      "server_idle_timeout = 0.5\n"
      "query_wait_timeout = 250ms\n"
      "server_lifetime = 2h\n"
      "server_reset_query_always = yes\n"
      "tcp_keepalive = off\n"
      "verbose = 2\n");
  std::vector<ConfigEntry> rows = DescribeConfig(c);
  EXPECT_EQ(RowString(Row(rows, "listen_addr")), "listen_addr|127.0.0.1||no");
  EXPECT_EQ(RowString(Row(rows, "listen_port")), "listen_port|56433|6432|no");
  EXPECT_EQ(RowString(Row(rows, "unix_socket_dir")), "unix_socket_dir||/tmp|no");
  EXPECT_EQ(RowString(Row(rows, "auth_type")), "auth_type|scram-sha-256|md5|yes");
  EXPECT_EQ(RowString(Row(rows, "admin_users")), "admin_users|admin,root||yes");
  EXPECT_EQ(RowString(Row(rows, "pool_mode")), "pool_mode|transaction|session|yes");
  EXPECT_EQ(RowString(Row(rows, "default_pool_size")), "default_pool_size|2|20|yes");
  EXPECT_EQ(RowString(Row(rows, "server_idle_timeout")), "server_idle_timeout|0.5|600|yes");
  EXPECT_EQ(RowString(Row(rows, "query_wait_timeout")), "query_wait_timeout|0.25|120|yes");
  EXPECT_EQ(RowString(Row(rows, "server_lifetime")), "server_lifetime|7200|3600|yes");
  EXPECT_EQ(RowString(Row(rows, "server_reset_query_always")), "server_reset_query_always|1|0|yes");
  EXPECT_EQ(RowString(Row(rows, "tcp_keepalive")), "tcp_keepalive|0|1|yes");
  EXPECT_EQ(RowString(Row(rows, "verbose")), "verbose|1||yes");
}

// SHOW CONFIG lists every [pgbouncer] key of PgBouncer 1.25, the ones pgfleet only loads too:
// with the file's value, else PgBouncer's default, and never changeable.
TEST(ConfigDescribeTest, ListsKeysWithoutEffectWithTheirValues) {
  Config c = MustParse("[pgbouncer]\nsbuf_loopcnt = 9\nsuspend_timeout = 7\n");
  std::vector<ConfigEntry> rows = DescribeConfig(c);
  EXPECT_EQ(RowString(Row(rows, "sbuf_loopcnt")), "sbuf_loopcnt|9|5|no");
  EXPECT_EQ(RowString(Row(rows, "suspend_timeout")), "suspend_timeout|7|10|no");
  for (const UnsupportedSetting& setting : UnsupportedSettings()) {
    EXPECT_NE(std::string(setting.reason), "") << setting.key;
    if (std::string(setting.section) != "pgbouncer") continue;
    EXPECT_EQ(Row(rows, setting.key).key, setting.key);
    Config copy = c;
    EXPECT_THAT(ApplySetting(copy, setting.key, "1").message(),
                HasSubstr("is not supported by pgfleet"))
        << setting.key;
  }
  EXPECT_TRUE(
      std::is_sorted(rows.begin(), rows.end(),
                     [](const ConfigEntry& a, const ConfigEntry& b) { return a.key < b.key; }));
}

// PgBouncer's logging keys have an effect now (logging_parity_test): loaded without a warning,
// shown with PgBouncer's defaults, changeable online; an unknown facility is refused.
TEST(ConfigTest, SyslogAndLogStatsKeys) {
  Config defaults = MustParse("[pgbouncer]\n");
  EXPECT_FALSE(defaults.syslog);
  EXPECT_TRUE(defaults.log_stats);
  std::vector<ConfigEntry> rows = DescribeConfig(defaults);
  EXPECT_EQ(RowString(Row(rows, "syslog")), "syslog|0|0|yes");
  EXPECT_EQ(RowString(Row(rows, "syslog_ident")), "syslog_ident|pgbouncer|pgbouncer|yes");
  EXPECT_EQ(RowString(Row(rows, "syslog_facility")), "syslog_facility|daemon|daemon|yes");
  EXPECT_EQ(RowString(Row(rows, "log_stats")), "log_stats|1|1|yes");

  Config c = MustParse(
      "[pgbouncer]\nsyslog = 1\nsyslog_ident = db7\nsyslog_facility = local4\nlog_stats = 0\n");
  EXPECT_TRUE(c.warnings.empty()) << c.warnings.front();
  EXPECT_TRUE(c.syslog);
  EXPECT_EQ(c.syslog_ident, "db7");
  EXPECT_EQ(c.syslog_facility, "local4");
  EXPECT_FALSE(c.log_stats);
  EXPECT_TRUE(ApplySetting(c, "log_stats", "1").ok());
  EXPECT_TRUE(c.log_stats);
  EXPECT_THAT(ParseConfig("[pgbouncer]\nsyslog_facility = kern\n", "t.ini").status().message(),
              HasSubstr("syslog_facility"));
}

TEST(ConfigSetTest, ChangesOnlineSettings) {
  Config c = MustParse("[pgbouncer]\n[databases]\ndb = host=h\n");
  ASSERT_TRUE(ApplySetting(c, "default_pool_size", "7").ok());
  EXPECT_EQ(c.default_pool_size, 7);
  ASSERT_TRUE(ApplySetting(c, "pool_mode", "transaction").ok());
  EXPECT_EQ(c.pool_mode, PoolMode::kTransaction);
  ASSERT_TRUE(ApplySetting(c, "query_wait_timeout", "30").ok());
  EXPECT_EQ(c.query_wait_timeout, absl::Seconds(30));
  ASSERT_TRUE(ApplySetting(c, "server_idle_timeout", "1.5").ok());
  EXPECT_EQ(c.server_idle_timeout, absl::Milliseconds(1500));
  ASSERT_TRUE(ApplySetting(c, "admin_users", "a, b").ok());
  EXPECT_THAT(c.admin_users, ElementsAre("a", "b"));
  ASSERT_TRUE(ApplySetting(c, "log_connections", "0").ok());
  EXPECT_FALSE(c.log_connections);
  // Keys match case-insensitively, as in the file.
  ASSERT_TRUE(ApplySetting(c, "Max_Client_Conn", "500").ok());
  EXPECT_EQ(c.max_client_conn, 500);
  // Everything else is kept.
  EXPECT_EQ(c.path, "test.ini");
  EXPECT_THAT(c.databases, SizeIs(1));
  EXPECT_EQ(Row(DescribeConfig(c), "query_wait_timeout").value, "30");
}

// ApplySetting on `key = value` must fail with `message` and leave the config as it was.
void ExpectSetFails(const std::string& key, const std::string& value, const std::string& message) {
  Config c = MustParse("[pgbouncer]\ndefault_pool_size = 3\nlisten_port = 7000\n");
  std::vector<ConfigEntry> before = DescribeConfig(c);
  absl::Status status = ApplySetting(c, key, value);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << key << " = " << value;
  EXPECT_EQ(status.message(), message);
  std::vector<ConfigEntry> after = DescribeConfig(c);
  ASSERT_EQ(after.size(), before.size());
  for (size_t i = 0; i < after.size(); ++i) {
    EXPECT_EQ(RowString(after[i]), RowString(before[i])) << "changed by a failed SET " << key;
  }
}

TEST(ConfigSetTest, RejectsUnknownKey) {
  ExpectSetFails("no_such_key", "1", "unknown config parameter: no_such_key");
  ExpectSetFails("sbuf_loopcnt", "1",
                 "config parameter 'sbuf_loopcnt' is not supported by pgfleet");
}

// The last PgBouncer keys issue 22 implements: loaded without a warning, shown by SHOW CONFIG
// with PgBouncer's defaults and changeability (CF_NO_RELOAD for listen_backlog and user), bad
// values refused naming key and value.
TEST(ConfigTest, RoundRobinBacklogAppNameHostAndUserKeys) {
  Config defaults = MustParse("[pgbouncer]\n");
  EXPECT_FALSE(defaults.server_round_robin);
  EXPECT_FALSE(defaults.application_name_add_host);
  EXPECT_EQ(defaults.listen_backlog, 128);
  EXPECT_EQ(defaults.run_as_user, "");
  std::vector<ConfigEntry> default_rows = DescribeConfig(defaults);
  EXPECT_EQ(RowString(Row(default_rows, "server_round_robin")), "server_round_robin|0|0|yes");
  EXPECT_EQ(RowString(Row(default_rows, "application_name_add_host")),
            "application_name_add_host|0|0|yes");
  EXPECT_EQ(RowString(Row(default_rows, "listen_backlog")), "listen_backlog|128|128|no");
  EXPECT_EQ(RowString(Row(default_rows, "user")), "user|||no");

  Config c = MustParse(
      "[pgbouncer]\nserver_round_robin = 1\napplication_name_add_host = yes\n"
      "listen_backlog = 16\nuser = postgres\n");
  EXPECT_THAT(c.warnings, IsEmpty());
  EXPECT_TRUE(c.server_round_robin);
  EXPECT_TRUE(c.application_name_add_host);
  EXPECT_EQ(c.listen_backlog, 16);
  EXPECT_EQ(c.run_as_user, "postgres");
  std::vector<ConfigEntry> rows = DescribeConfig(c);
  EXPECT_EQ(RowString(Row(rows, "server_round_robin")), "server_round_robin|1|0|yes");
  EXPECT_EQ(RowString(Row(rows, "listen_backlog")), "listen_backlog|16|128|no");
  EXPECT_EQ(RowString(Row(rows, "user")), "user|postgres||no");

  EXPECT_TRUE(ApplySetting(c, "server_round_robin", "0").ok());
  EXPECT_FALSE(c.server_round_robin);
  EXPECT_TRUE(ApplySetting(c, "application_name_add_host", "off").ok());
  EXPECT_FALSE(c.application_name_add_host);
  ExpectSetFails("listen_backlog", "64",
                 "config parameter 'listen_backlog' cannot be changed online");
  ExpectSetFails("user", "nobody", "config parameter 'user' cannot be changed online");

  EXPECT_THAT(OptionError("listen_backlog", "-1"),
              HasSubstr("test.ini:2: key 'listen_backlog': invalid value '-1'"));
  EXPECT_THAT(OptionError("listen_backlog", "lots"),
              HasSubstr("test.ini:2: key 'listen_backlog': invalid integer 'lots'"));
  EXPECT_THAT(OptionError("server_round_robin", "maybe"),
              HasSubstr("test.ini:2: key 'server_round_robin': invalid boolean 'maybe'"));
  EXPECT_THAT(OptionError("application_name_add_host", "2x"),
              HasSubstr("test.ini:2: key 'application_name_add_host': invalid boolean '2x'"));
}

// PgBouncer 1.24's per-database server_lifetime: wins over [pgbouncer]'s; 0 means "not set".
TEST(ConfigTest, PerDatabaseServerLifetime) {
  Config c = MustParse(
      "[databases]\nshort = host=/tmp server_lifetime=30\nzero = host=/tmp server_lifetime=0\n"
      "plain = host=/tmp\n[pgbouncer]\nserver_lifetime = 600\n");
  EXPECT_THAT(c.warnings, IsEmpty());
  EXPECT_EQ(c.databases.at("short").server_lifetime, absl::Seconds(30));
  EXPECT_EQ(c.ServerLifetimeFor(c.databases.at("short")), absl::Seconds(30));
  EXPECT_EQ(c.databases.at("zero").server_lifetime, std::nullopt);
  EXPECT_EQ(c.ServerLifetimeFor(c.databases.at("zero")), absl::Seconds(600));
  EXPECT_EQ(c.ServerLifetimeFor(c.databases.at("plain")), absl::Seconds(600));
  absl::Status bad = ParseError("[databases]\nd = host=/tmp server_lifetime=soon\n[pgbouncer]\n");
  EXPECT_THAT(std::string(bad.message()),
              HasSubstr("database 'd': key 'server_lifetime': invalid duration 'soon'"));
}

TEST(ConfigSetTest, RejectsBadValueWithTheFileParsersWording) {
  ExpectSetFails("default_pool_size", "abc", "key 'default_pool_size': invalid integer 'abc'");
  ExpectSetFails("default_pool_size", "-1",
                 "key 'default_pool_size': invalid value '-1': must not be negative");
  ExpectSetFails("pool_mode", "bogus",
                 "key 'pool_mode': invalid pool mode 'bogus' (expected session, transaction or "
                 "statement)");
  ExpectSetFails("query_wait_timeout", "soon",
                 "key 'query_wait_timeout': invalid duration 'soon' (expected seconds such as "
                 "'30' or '0.5', or a number with unit ms, s, min or h)");
  // Same text as the file parser, minus "FILE:LINE: ".
  EXPECT_EQ(OptionError("default_pool_size", "abc"),
            "test.ini:2: key 'default_pool_size': invalid integer 'abc'");
}

TEST(ConfigSetTest, RejectsKeysThatNeedARestart) {
  ExpectSetFails("listen_port", "7001", "config parameter 'listen_port' cannot be changed online");
  // Refused whatever the value, as in PgBouncer.
  ExpectSetFails("listen_port", "abc", "config parameter 'listen_port' cannot be changed online");
  for (const char* key : {"listen_addr", "unix_socket_dir", "pidfile", "pkt_buf"}) {
    Config c;
    EXPECT_THAT(ApplySetting(c, key, "1").message(), HasSubstr("cannot be changed online")) << key;
  }
  // Every row SHOW CONFIG marks changeable is accepted by SET.
  for (const ConfigEntry& row : DescribeConfig(Config())) {
    if (!row.changeable) continue;
    Config c;
    EXPECT_TRUE(ApplySetting(c, row.key, row.value).ok()) << row.key;
  }
}

// PgBouncer 1.25's TLS handshake keys: loaded as written with PgBouncer's defaults, no longer
// warnings; a value OpenSSL would not take is refused at its line and by SET, naming the key
// and the value (tls_ciphers_test checks what each does to real handshakes).
TEST(ConfigTest, TlsHandshakeKeysTakePgBouncersValueForms) {
  Config defaults = MustParse("[pgbouncer]\n");
  EXPECT_EQ(defaults.client_tls13_ciphers, "");
  EXPECT_EQ(defaults.server_tls13_ciphers, "");
  EXPECT_EQ(defaults.client_tls_ecdhcurve, "auto");
  EXPECT_EQ(defaults.client_tls_dheparams, "auto");
  for (const char* key : {"client_tls13_ciphers", "server_tls13_ciphers", "client_tls_ecdhcurve",
                          "client_tls_dheparams"}) {
    EXPECT_EQ(FindUnsupportedSetting("pgbouncer", key), nullptr) << key;
  }

  Config c = MustParse(
      "[pgbouncer]\n"
      "client_tls13_ciphers = TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256\n"
      "server_tls13_ciphers = TLS_AES_256_GCM_SHA384\n"
      "client_tls_ecdhcurve = secp384r1\n"
      "client_tls_dheparams = LEGACY\n");
  EXPECT_TRUE(c.warnings.empty()) << c.warnings.front();
  EXPECT_EQ(c.client_tls13_ciphers, "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256");
  EXPECT_EQ(c.server_tls13_ciphers, "TLS_AES_256_GCM_SHA384");
  EXPECT_EQ(c.client_tls_ecdhcurve, "secp384r1");
  EXPECT_EQ(c.client_tls_dheparams, "LEGACY");  // As written; read without regard to case.
  std::vector<ConfigEntry> rows = DescribeConfig(c);
  EXPECT_EQ(RowString(Row(rows, "client_tls_ecdhcurve")),
            "client_tls_ecdhcurve|secp384r1|auto|yes");
  EXPECT_EQ(RowString(Row(rows, "client_tls_dheparams")), "client_tls_dheparams|LEGACY|auto|yes");
  EXPECT_EQ(RowString(Row(rows, "server_tls13_ciphers")),
            "server_tls13_ciphers|TLS_AES_256_GCM_SHA384||yes");

  // The other accepted forms: PgBouncer's words for the curve and DH, an empty suite list.
  for (const char* line : {"client_tls_ecdhcurve = none", "client_tls_ecdhcurve = AUTO",
                           "client_tls_ecdhcurve = prime256v1", "client_tls_ecdhcurve = P-256",
                           "client_tls_ecdhcurve = X25519", "client_tls_dheparams = none",
                           "client_tls_dheparams = auto", "client_tls13_ciphers =",
                           "server_tls13_ciphers = TLS_AES_128_CCM_8_SHA256"}) {
    EXPECT_TRUE(Parse(absl::StrCat("[pgbouncer]\n", line, "\n")).ok()) << line;
  }

  // Refused at its line, with the key, the value and what was expected.
  EXPECT_THAT(OptionError("client_tls13_ciphers", "TLS_AES_256_GCM_SHA384:TLS_AES_999"),
              AllOf(HasSubstr("test.ini:2: key 'client_tls13_ciphers': invalid value "
                              "'TLS_AES_256_GCM_SHA384:TLS_AES_999'"),
                    HasSubstr("unknown TLS 1.3 cipher suite 'TLS_AES_999'")));
  // A TLS 1.2 cipher is not a TLS 1.3 suite.
  EXPECT_THAT(OptionError("server_tls13_ciphers", "ECDHE-RSA-AES128-GCM-SHA256"),
              HasSubstr("unknown TLS 1.3 cipher suite 'ECDHE-RSA-AES128-GCM-SHA256'"));
  EXPECT_THAT(OptionError("client_tls_ecdhcurve", "secp999r1"),
              AllOf(HasSubstr("key 'client_tls_ecdhcurve': invalid value 'secp999r1'"),
                    HasSubstr("unknown curve 'secp999r1'")));
  // One curve, as in PgBouncer; a list is refused rather than read as OpenSSL's group list.
  EXPECT_THAT(OptionError("client_tls_ecdhcurve", "X25519:P-256"),
              HasSubstr("expected none, auto or one curve name"));
  EXPECT_THAT(OptionError("client_tls_dheparams", "2048"),
              AllOf(HasSubstr("key 'client_tls_dheparams': invalid value '2048'"),
                    HasSubstr("expected none, auto or legacy")));

  // SET: the same check; the config is unchanged when it fails.
  Config set = defaults;
  EXPECT_TRUE(ApplySetting(set, "client_tls13_ciphers", "TLS_AES_128_GCM_SHA256").ok());
  EXPECT_EQ(set.client_tls13_ciphers, "TLS_AES_128_GCM_SHA256");
  absl::Status bad = ApplySetting(set, "client_tls13_ciphers", "TLS_AES_128_GCM");
  EXPECT_THAT(bad.message(), HasSubstr("key 'client_tls13_ciphers': invalid value "
                                       "'TLS_AES_128_GCM'"));
  EXPECT_EQ(set.client_tls13_ciphers, "TLS_AES_128_GCM_SHA256");
  EXPECT_THAT(ApplySetting(set, "client_tls_dheparams", "weak").message(),
              HasSubstr("invalid value 'weak'"));
  EXPECT_EQ(set.client_tls_dheparams, "auto");
}

}  // namespace
}  // namespace pgfleet::config
