// TLS settings changed while the agent runs, one test per behaviour PgBouncer's own suite
// (test/test_ssl.py) checks: SET on the admin console, RELOAD and SIGHUP rebuild the client and
// server TLS contexts; new client handshakes use the new client context; server connections made
// under other server TLS settings are closed (idle ones now, busy ones when released) so the next
// login uses the new settings; a setting that does not work keeps the running context and says
// why. A real PostgreSQL 15 with ssl = on, whose pg_hba each test sets as PgBouncer's tests do.
#include <libpq-fe.h>
#include <signal.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"
#include "gtest/gtest.h"
#include "tests/testutil/agent_process.h"
#include "tests/testutil/console.h"
#include "tests/testutil/fixtures.h"
#include "tests/testutil/postgres_env.h"
#include "tests/testutil/pq.h"
#include "tests/testutil/process.h"
#include "tests/testutil/status_testing.h"
#include "tests/testutil/tls_certs.h"
#include "tests/testutil/wait.h"

namespace pgfleet::testutil {
namespace {

// The role PostgreSQL authenticates by its client certificate (CN) alone.
constexpr char kCertUser[] = "client1";
constexpr char kConfigChanged[] = "closing because: database configuration changed";

// pg_hba lines for the app role (the superuser keeps its own lines).
const std::vector<std::string> kAppAnyTransport = {"host appdb app 127.0.0.1/32 scram-sha-256"};
// PgBouncer's pg.ssl_access + pg.nossl_access("all", "reject").
const std::vector<std::string> kAppTlsOnly = {"hostnossl appdb app 127.0.0.1/32 reject",
                                              "hostssl appdb app 127.0.0.1/32 scram-sha-256"};
// PgBouncer's pg.reset_hba(): no line at all for an encrypted login.
const std::vector<std::string> kAppPlainOnly = {"hostnossl appdb app 127.0.0.1/32 scram-sha-256"};

void CollectNotice(void* arg, const PGresult* result) {
  static_cast<std::vector<std::string>*>(arg)->push_back(PQresultErrorMessage(result));
}

class TlsOnlineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char dir_template[] = "/tmp/pgfleet-tls-online-XXXXXX";
    ASSERT_NE(mkdtemp(dir_template), nullptr);
    dir_ = new std::string(dir_template);
    chmod(dir_->c_str(), 0755);
    PGF_ASSERT_OK(MakeTestCerts(Certs(), {kCertUser}));
    PGF_ASSERT_OK(MakeTestCerts(OtherCerts(), {kCertUser}));  // A second CA nobody trusts.
    PGF_ASSERT_OK(HandCertsToPostgres(Certs()));
    PostgresOptions options;
    options.extra_conf = PostgresSslConf(Certs());
    PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<PostgresEnv> pg, PostgresEnv::Start(options));
    PGF_ASSERT_OK(CreateAppDatabase(*pg));
    PGF_ASSERT_OK(pg->Exec(absl::StrCat("create role ", kCertUser, " login")).status());
    PGF_ASSERT_OK(
        pg->Exec(absl::StrCat("grant connect on database appdb to ", kCertUser)).status());
    pg_ = pg.release();
  }
  static void TearDownTestSuite() {
    delete pg_;
    pg_ = nullptr;
    if (dir_ != nullptr) std::filesystem::remove_all(*dir_);
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override {
    ASSERT_NE(pg_, nullptr) << "PostgreSQL with ssl=on did not start";
    PGF_ASSERT_OK(SetAppHba(kAppAnyTransport));
  }
  void TearDown() override {
    if (agent_ != nullptr) {
      if (HasFailure()) std::cerr << agent_->Diagnostics();
      ExpectCleanStop(*agent_);
    }
  }

  static std::string Certs() { return *dir_ + "/certs"; }
  static std::string OtherCerts() { return *dir_ + "/other"; }

  // Rewrites pg_hba.conf with `app_lines` for the app role (and the certificate role's `cert`
  // line), reloads PostgreSQL and waits until new backends run with it.
  static absl::Status SetAppHba(const std::vector<std::string>& app_lines) {
    PGF_ASSIGN_OR_RETURN(Rows file, pg_->Exec("show hba_file"));
    PGF_ASSIGN_OR_RETURN(Rows loaded, pg_->Exec("select pg_conf_load_time()::text"));
    std::vector<std::string> lines = {"local all all scram-sha-256"};
    lines.insert(lines.end(), app_lines.begin(), app_lines.end());
    lines.push_back(absl::StrCat("hostssl appdb ", kCertUser, " 127.0.0.1/32 cert"));
    lines.push_back("host all postgres 127.0.0.1/32 scram-sha-256");
    lines.push_back("host all postgres ::1/128 scram-sha-256");
    PGF_RETURN_IF_ERROR(WriteFile(file[0][0], absl::StrJoin(lines, "\n") + "\n"));
    PGF_RETURN_IF_ERROR(pg_->Exec("select pg_reload_conf()").status());
    return PollUntil(
        [&](std::string* note) -> absl::StatusOr<bool> {
          PGF_ASSIGN_OR_RETURN(Rows now, pg_->Exec("select pg_conf_load_time()::text"));
          *note = now[0][0];
          return now[0][0] != loaded[0][0];
        },
        absl::Seconds(10), "PostgreSQL to load the new pg_hba.conf");
  }

  // The agent's config: appdb as the client's user, certdb as kCertUser (no password: its
  // certificate logs it in), app an admin; `settings` last.
  AgentOptions Options(const std::map<std::string, std::string>& settings) const {
    AgentOptions options;
    options.pgbouncer_settings = {{"auth_type", "scram-sha-256"},
                                  {"pool_mode", "transaction"},
                                  {"default_pool_size", "1"},
                                  {"admin_users", kAppUser}};
    for (const auto& [key, value] : settings) options.pgbouncer_settings[key] = value;
    options.databases_section = absl::StrCat(
        "appdb = host=127.0.0.1 port=", pg_->port(), " dbname=appdb\n",
        "certdb = host=127.0.0.1 port=", pg_->port(), " dbname=appdb user=", kCertUser, "\n");
    options.userlist = {{kAppUser, kAppPassword}};
    return options;
  }

  void StartAgent(const std::map<std::string, std::string>& settings = {}) {
    absl::StatusOr<std::unique_ptr<AgentProcess>> agent = AgentProcess::Start(Options(settings));
    ASSERT_TRUE(agent.ok()) << agent.status();
    agent_ = std::move(*agent);
  }

  // Rewrites the ini with `settings` (the keys of PgBouncer's bouncer.write_ini).
  absl::Status RewriteIni(const std::map<std::string, std::string>& settings) {
    return agent_->RewriteConfig(Options(settings));
  }

  // A client of the agent as the app user; `ssl` is libpq's sslmode=... sslrootcert=...
  absl::StatusOr<PgConn> ConnectApp(const std::string& ssl, const std::string& db = "appdb") const {
    return Connect(absl::StrCat("host=localhost port=", agent_->port(), " dbname=", db, " user=",
                                kAppUser, " password=", kAppPassword, " connect_timeout=10 ", ssl));
  }
  // PgBouncer's bouncer.test(): a new client that runs a query.
  absl::Status AppWorks(const std::string& ssl, const std::string& db = "appdb") const {
    PGF_ASSIGN_OR_RETURN(PgConn conn, ConnectApp(ssl, db));
    return ScalarInt(conn.get(), "select 1").status();
  }
  static std::string VerifyFull(const std::string& ca_dir) {
    return absl::StrCat("sslmode=verify-full sslrootcert=", ca_dir, "/ca.pem");
  }

  absl::StatusOr<PgConn> ConnectConsole() const {
    return Connect(absl::StrCat("host=127.0.0.1 port=", agent_->port(),
                                " dbname=pgbouncer user=", kAppUser, " password=", kAppPassword,
                                " sslmode=prefer connect_timeout=10"));
  }

  // What PostgreSQL says of the backend `pid`: "ssl version client_dn" ("false" when plain).
  static absl::StatusOr<std::string> BackendTls(const std::string& pid) {
    PGF_ASSIGN_OR_RETURN(Rows rows, pg_->Exec(absl::StrCat(
                                        "select case when ssl then 'true ' || version || ' ' || "
                                        "coalesce(client_dn, '') else 'false' end from pg_stat_ssl "
                                        "where pid = ",
                                        pid)));
    if (rows.size() != 1) return absl::NotFoundError(absl::StrCat("no backend ", pid));
    return rows[0][0];
  }

  size_t LogCount(const std::string& text) const {
    const std::string log = agent_->LogContents();
    size_t count = 0;
    for (size_t at = log.find(text); at != std::string::npos; at = log.find(text, at + 1)) ++count;
    return count;
  }

  static PostgresEnv* pg_;
  static std::string* dir_;
  std::unique_ptr<AgentProcess> agent_;
};

PostgresEnv* TlsOnlineTest::pg_ = nullptr;
std::string* TlsOnlineTest::dir_ = nullptr;

// ---- server side ---------------------------------------------------------------------------

// test_server_ssl: SET server_tls_sslmode = require, and the next server login is encrypted.
TEST_F(TlsOnlineTest, SetServerSslmodeRequireEncryptsTheNextServer) {
  StartAgent({{"server_tls_sslmode", "disable"}});
  PGF_ASSERT_OK_AND_ASSIGN(PgConn admin, ConnectConsole());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn app, ConnectApp("sslmode=disable"));
  PGF_ASSERT_OK_AND_ASSIGN(std::string plain_pid, ScalarText(app.get(), "select pg_backend_pid()"));
  PGF_ASSERT_OK_AND_ASSIGN(std::string plain, BackendTls(plain_pid));
  EXPECT_EQ(plain, "false");
  PGF_ASSERT_OK(Command(admin.get(), "SET server_tls_sslmode = require").status());
  PGF_ASSERT_OK_AND_ASSIGN(std::string pid, ScalarText(app.get(), "select pg_backend_pid()"));
  EXPECT_NE(pid, plain_pid);
  PGF_ASSERT_OK_AND_ASSIGN(std::string tls, BackendTls(pid));
  EXPECT_TRUE(absl::StartsWith(tls, "true TLSv1.")) << tls;
  EXPECT_EQ(LogCount(kConfigChanged), 1u) << agent_->LogContents();
}

// test_server_ssl_set_disable: a server refusing encrypted logins is reached again after
// SET server_tls_sslmode = disable, without waiting server_login_retry.
TEST_F(TlsOnlineTest, SetServerSslmodeDisableAfterTheServerRefusesTls) {
  StartAgent({{"server_tls_sslmode", "require"},
              {"server_login_retry", "60"},
              {"query_wait_timeout", "10"}});
  PGF_ASSERT_OK_AND_ASSIGN(PgConn admin, ConnectConsole());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn app, ConnectApp("sslmode=disable"));
  PGF_ASSERT_OK(ScalarInt(app.get(), "select 1").status());

  PGF_ASSERT_OK(SetAppHba(kAppPlainOnly));
  EXPECT_TRUE(ScalarInt(app.get(), "select 1").ok()) << "the server connection is kept";
  PGF_ASSERT_OK(Command(admin.get(), "RECONNECT").status());
  absl::Status refused = AppWorks("sslmode=disable");
  ASSERT_FALSE(refused.ok());
  EXPECT_TRUE(absl::StrContains(refused.message(), "no pg_hba.conf entry")) << refused;
  EXPECT_TRUE(absl::StrContains(refused.message(), "SSL encryption")) << refused;

  PGF_ASSERT_OK(Command(admin.get(), "SET server_tls_sslmode = disable").status());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn again, ConnectApp("sslmode=disable"));
  PGF_ASSERT_OK_AND_ASSIGN(std::string pid, ScalarText(again.get(), "select pg_backend_pid()"));
  PGF_ASSERT_OK_AND_ASSIGN(std::string tls, BackendTls(pid));
  EXPECT_EQ(tls, "false");
}

// test_server_ssl_set_enable: the reverse, a server that now wants TLS.
TEST_F(TlsOnlineTest, SetServerSslmodeRequireAfterTheServerRefusesPlain) {
  StartAgent({{"server_tls_sslmode", "disable"},
              {"server_login_retry", "60"},
              {"query_wait_timeout", "10"}});
  PGF_ASSERT_OK_AND_ASSIGN(PgConn admin, ConnectConsole());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn app, ConnectApp("sslmode=disable"));
  PGF_ASSERT_OK(ScalarInt(app.get(), "select 1").status());

  PGF_ASSERT_OK(SetAppHba(kAppTlsOnly));
  EXPECT_TRUE(ScalarInt(app.get(), "select 1").ok()) << "the server connection is kept";
  PGF_ASSERT_OK(Command(admin.get(), "RECONNECT").status());
  absl::Status refused = AppWorks("sslmode=disable");
  ASSERT_FALSE(refused.ok());
  EXPECT_TRUE(absl::StrContains(refused.message(), "pg_hba.conf rejects connection")) << refused;
  EXPECT_TRUE(absl::StrContains(refused.message(), "no encryption")) << refused;

  PGF_ASSERT_OK(Command(admin.get(), "SET server_tls_sslmode = require").status());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn again, ConnectApp("sslmode=disable"));
  PGF_ASSERT_OK_AND_ASSIGN(std::string pid, ScalarText(again.get(), "select pg_backend_pid()"));
  PGF_ASSERT_OK_AND_ASSIGN(std::string tls, BackendTls(pid));
  EXPECT_TRUE(absl::StartsWith(tls, "true ")) << tls;
}

// test_server_ssl_verify: verify-full against a CA that did not sign PostgreSQL's certificate
// fails with the reason in the log; SET of the right CA makes the next login work.
TEST_F(TlsOnlineTest, SetServerCaFileFixesAFailedVerification) {
  StartAgent({{"server_login_retry", "60"}, {"query_wait_timeout", "10"}});
  PGF_ASSERT_OK_AND_ASSIGN(PgConn admin, ConnectConsole());
  PGF_ASSERT_OK(Command(admin.get(), "SET server_tls_sslmode = 'verify-full'").status());
  PGF_ASSERT_OK(
      Command(admin.get(), absl::StrCat("SET server_tls_ca_file = '", OtherCerts(), "/ca.pem'"))
          .status());
  // PgBouncer keeps the client waiting until its connect_timeout; the agent answers at once
  // with the reason (the login cannot succeed until an operator changes something).
  absl::Status refused = AppWorks("sslmode=disable");
  ASSERT_FALSE(refused.ok());
  EXPECT_TRUE(absl::StrContains(refused.message(), "certificate verify failed")) << refused;
  EXPECT_GE(LogCount("certificate verify failed"), 1u) << agent_->LogContents();

  PGF_ASSERT_OK(
      Command(admin.get(), absl::StrCat("SET server_tls_ca_file = '", Certs(), "/ca.pem'"))
          .status());
  PGF_EXPECT_OK(AppWorks("sslmode=disable"));
}

// test_server_ssl_auth: the agent's own certificate (server_tls_key_file/cert_file set online)
// logs it in where pg_hba says `cert`.
TEST_F(TlsOnlineTest, SetServerClientCertificateLogsInByCertificate) {
  StartAgent();
  PGF_ASSERT_OK_AND_ASSIGN(PgConn admin, ConnectConsole());
  for (const std::string& set : {
           std::string("SET server_tls_sslmode = 'verify-full'"),
           absl::StrCat("SET server_tls_ca_file = '", Certs(), "/ca.pem'"),
           absl::StrCat("SET server_tls_key_file = '", Certs(), "/", kCertUser, "-key.pem'"),
           absl::StrCat("SET server_tls_cert_file = '", Certs(), "/", kCertUser, ".pem'"),
       }) {
    ASSERT_TRUE(Command(admin.get(), set).ok()) << set;
  }
  PGF_ASSERT_OK_AND_ASSIGN(PgConn app, ConnectApp("sslmode=disable", "certdb"));
  PGF_ASSERT_OK_AND_ASSIGN(std::string user, ScalarText(app.get(), "select current_user"));
  EXPECT_EQ(user, kCertUser);
  PGF_ASSERT_OK_AND_ASSIGN(std::string pid, ScalarText(app.get(), "select pg_backend_pid()"));
  PGF_ASSERT_OK_AND_ASSIGN(std::string tls, BackendTls(pid));
  EXPECT_TRUE(absl::EndsWith(tls, absl::StrCat("CN=", kCertUser))) << tls;
}

// test_servers_no_disconnect_on_reload_with_no_tls_change.
TEST_F(TlsOnlineTest, ReloadWithoutTlsChangeKeepsServers) {
  StartAgent();
  PGF_ASSERT_OK_AND_ASSIGN(PgConn admin, ConnectConsole());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn app, ConnectApp("sslmode=disable"));
  PGF_ASSERT_OK(Query(app.get(), "begin").status());
  PGF_ASSERT_OK_AND_ASSIGN(std::string pid, ScalarText(app.get(), "select pg_backend_pid()"));
  PGF_ASSERT_OK(Command(admin.get(), "RELOAD").status());
  PGF_ASSERT_OK(Query(app.get(), "commit").status());
  PGF_ASSERT_OK_AND_ASSIGN(std::string after, ScalarText(app.get(), "select pg_backend_pid()"));
  EXPECT_EQ(after, pid);
  EXPECT_EQ(LogCount("closing because"), 0u) << agent_->LogContents();
}

// test_servers_disconnect_when_changing_tls_config (server_tls_protocols), _enabling_ssl
// (disable -> allow) and _changing_sslmode (prefer -> allow): a server busy in a transaction
// during the RELOAD finishes it, and is closed once released.
struct ServerTlsChange {
  const char* name;
  std::map<std::string, std::string> before;
  std::map<std::string, std::string> after;
};

void PrintTo(const ServerTlsChange& change, std::ostream* out) { *out << change.name; }

class ServerTlsReloadTest : public TlsOnlineTest,
                            public ::testing::WithParamInterface<ServerTlsChange> {};

TEST_P(ServerTlsReloadTest, ServersMadeUnderOtherTlsSettingsCloseWhenReleased) {
  StartAgent(GetParam().before);
  PGF_ASSERT_OK_AND_ASSIGN(PgConn admin, ConnectConsole());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn app, ConnectApp("sslmode=disable"));
  PGF_ASSERT_OK(Query(app.get(), "begin").status());
  PGF_ASSERT_OK_AND_ASSIGN(std::string pid, ScalarText(app.get(), "select pg_backend_pid()"));
  PGF_ASSERT_OK(RewriteIni(GetParam().after));
  PGF_ASSERT_OK(Command(admin.get(), "RELOAD").status());
  // Still the same server inside the transaction.
  PGF_ASSERT_OK_AND_ASSIGN(std::string inside, ScalarText(app.get(), "select pg_backend_pid()"));
  EXPECT_EQ(inside, pid);
  EXPECT_EQ(LogCount(kConfigChanged), 0u) << agent_->LogContents();
  PGF_ASSERT_OK(Query(app.get(), "commit").status());
  PGF_ASSERT_OK_AND_ASSIGN(std::string after, ScalarText(app.get(), "select pg_backend_pid()"));
  EXPECT_NE(after, pid);
  EXPECT_EQ(LogCount(kConfigChanged), 1u) << agent_->LogContents();
}

INSTANTIATE_TEST_SUITE_P(PgBouncerCases, ServerTlsReloadTest,
                         ::testing::Values(ServerTlsChange{"Protocols",
                                                           {{"server_tls_protocols", "tlsv1.2"}},
                                                           {{"server_tls_protocols", "secure"}}},
                                           ServerTlsChange{"EnablingTls",
                                                           {{"server_tls_sslmode", "disable"}},
                                                           {{"server_tls_sslmode", "allow"}}},
                                           ServerTlsChange{
                                               "Sslmode", {}, {{"server_tls_sslmode", "allow"}}}),
                         [](const ::testing::TestParamInfo<ServerTlsChange>& param_info) {
                           return param_info.param.name;
                         });

// The RELOAD of a server CA file that cannot be read is refused with the file named, and the
// running settings and servers stay.
TEST_F(TlsOnlineTest, ReloadWithAMissingServerCaKeepsTheRunningSettings) {
  StartAgent({{"server_tls_sslmode", "verify-full"}, {"server_tls_ca_file", Certs() + "/ca.pem"}});
  PGF_ASSERT_OK_AND_ASSIGN(PgConn admin, ConnectConsole());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn app, ConnectApp("sslmode=disable"));
  PGF_ASSERT_OK_AND_ASSIGN(std::string pid, ScalarText(app.get(), "select pg_backend_pid()"));
  const std::string missing = *dir_ + "/missing-ca.pem";
  PGF_ASSERT_OK(
      RewriteIni({{"server_tls_sslmode", "verify-full"}, {"server_tls_ca_file", missing}}));
  absl::StatusOr<std::string> refused = Command(admin.get(), "RELOAD");
  ASSERT_FALSE(refused.ok());
  EXPECT_TRUE(absl::StrContains(refused.status().message(), missing)) << refused.status();
  PGF_ASSERT_OK_AND_ASSIGN(std::string after, ScalarText(app.get(), "select pg_backend_pid()"));
  EXPECT_EQ(after, pid);
  PGF_EXPECT_OK(AppWorks("sslmode=disable"));
}

// SET of a file that cannot be read: taken with a NOTICE that names it, the running context
// stays in force, and SHOW CONFIG shows what is in force.
TEST_F(TlsOnlineTest, SetOfAMissingFileKeepsTheRunningContextAndSaysWhy) {
  std::map<std::string, std::string> tls = {
      {"client_tls_sslmode", "require"},
      {"client_tls_cert_file", Certs() + "/controller.pem"},
      {"client_tls_key_file", Certs() + "/controller-key.pem"}};
  StartAgent(tls);
  PGF_ASSERT_OK_AND_ASSIGN(PgConn admin, ConnectConsole());
  std::vector<std::string> notices;
  PQsetNoticeReceiver(admin.get(), &CollectNotice, &notices);
  const std::string missing = *dir_ + "/missing-cert.pem";
  PGF_ASSERT_OK(
      Command(admin.get(), absl::StrCat("SET client_tls_cert_file = '", missing, "'")).status());
  ASSERT_EQ(notices.size(), 1u);
  EXPECT_TRUE(absl::StrContains(notices[0], missing)) << notices[0];
  PGF_EXPECT_OK(AppWorks(VerifyFull(Certs())));
  PGF_ASSERT_OK_AND_ASSIGN(Table config, Show(admin.get(), "SHOW CONFIG"));
  Rows row = config.Where({{"key", "client_tls_cert_file"}});
  ASSERT_EQ(row.size(), 1u) << config.Dump();
  EXPECT_EQ(config.At(row[0], "value"), Certs() + "/controller.pem");
  PQsetNoticeReceiver(admin.get(), nullptr, nullptr);
}

// ---- client side ---------------------------------------------------------------------------

class ClientTlsOnlineTest : public TlsOnlineTest {
 protected:
  // The SETs of PgBouncer's tests, in their order: key, certificate, CA, then the mode.
  void SetClientTls(PGconn* admin, const std::string& dir) {
    for (const std::string& set : {
             absl::StrCat("SET client_tls_key_file = '", dir, "/controller-key.pem'"),
             absl::StrCat("SET client_tls_cert_file = '", dir, "/controller.pem'"),
             absl::StrCat("SET client_tls_ca_file = '", dir, "/ca.pem'"),
         }) {
      ASSERT_TRUE(Command(admin, set).ok()) << set;
    }
  }
  std::map<std::string, std::string> ClientTlsIni(const std::string& dir,
                                                  const std::string& mode) const {
    return {{"client_tls_key_file", dir + "/controller-key.pem"},
            {"client_tls_cert_file", dir + "/controller.pem"},
            {"client_tls_ca_file", dir + "/ca.pem"},
            {"client_tls_sslmode", mode}};
  }
  // The agent read its ini again: `ready` holds (for SIGHUP, which answers nobody).
  absl::Status AwaitReload(const std::function<bool()>& ready) {
    return PollUntil([&](std::string*) -> absl::StatusOr<bool> { return ready(); },
                     absl::Seconds(10), "the agent to apply its new ini");
  }
};

// test_client_ssl.
TEST_F(ClientTlsOnlineTest, SetEnablesClientTls) {
  StartAgent();
  PGF_ASSERT_OK_AND_ASSIGN(PgConn admin, ConnectConsole());
  SetClientTls(admin.get(), Certs());
  PGF_ASSERT_OK(Command(admin.get(), "SET client_tls_sslmode = require").status());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn conn, ConnectApp("sslmode=require"));
  EXPECT_EQ(PQsslInUse(conn.get()), 1);
  PGF_EXPECT_OK(ScalarInt(conn.get(), "select 1").status());
}

// test_client_ssl_set_enable_disable.
TEST_F(ClientTlsOnlineTest, SetTurnsClientTlsOffAndOnAgain) {
  StartAgent();
  PGF_ASSERT_OK_AND_ASSIGN(PgConn admin, ConnectConsole());
  SetClientTls(admin.get(), Certs());
  PGF_ASSERT_OK(Command(admin.get(), "SET client_tls_sslmode = require").status());
  PGF_ASSERT_OK(AppWorks(VerifyFull(Certs())));
  EXPECT_FALSE(AppWorks("sslmode=disable").ok()) << "require refuses plain clients";

  PGF_ASSERT_OK(Command(admin.get(), "SET client_tls_sslmode = disable").status());
  PGF_EXPECT_OK(AppWorks("sslmode=disable"));
  EXPECT_FALSE(AppWorks("sslmode=require").ok()) << "TLS is off";

  PGF_ASSERT_OK(Command(admin.get(), "SET client_tls_sslmode = require").status());
  PGF_EXPECT_OK(AppWorks(VerifyFull(Certs())));
}

// test_client_ssl_set_change_ca.
TEST_F(ClientTlsOnlineTest, SetSwitchesToACertificateOfAnotherCa) {
  StartAgent();
  PGF_ASSERT_OK_AND_ASSIGN(PgConn admin, ConnectConsole());
  SetClientTls(admin.get(), Certs());
  PGF_ASSERT_OK(Command(admin.get(), "SET client_tls_sslmode = require").status());
  PGF_ASSERT_OK(AppWorks(VerifyFull(Certs())));
  SetClientTls(admin.get(), OtherCerts());
  EXPECT_FALSE(AppWorks(VerifyFull(Certs())).ok());
  PGF_EXPECT_OK(AppWorks(VerifyFull(OtherCerts())));
}

// test_client_ssl_reload_enable_disable and test_client_ssl_sighup_enable_disable.
TEST_F(ClientTlsOnlineTest, ReloadAndSighupTurnClientTlsOnAndOff) {
  StartAgent();
  PGF_ASSERT_OK_AND_ASSIGN(PgConn admin, ConnectConsole());
  PGF_ASSERT_OK(RewriteIni(ClientTlsIni(Certs(), "require")));
  PGF_ASSERT_OK(Command(admin.get(), "RELOAD").status());
  PGF_ASSERT_OK(AppWorks(VerifyFull(Certs())));
  PGF_ASSERT_OK(RewriteIni(ClientTlsIni(Certs(), "disable")));
  PGF_ASSERT_OK(Command(admin.get(), "RELOAD").status());
  PGF_EXPECT_OK(AppWorks("sslmode=disable"));

  PGF_ASSERT_OK(RewriteIni(ClientTlsIni(Certs(), "require")));
  PGF_ASSERT_OK(agent_->Signal(SIGHUP));
  PGF_ASSERT_OK(AwaitReload([&] { return AppWorks(VerifyFull(Certs())).ok(); }));
  PGF_ASSERT_OK(RewriteIni(ClientTlsIni(Certs(), "disable")));
  PGF_ASSERT_OK(agent_->Signal(SIGHUP));
  PGF_EXPECT_OK(AwaitReload([&] { return AppWorks("sslmode=disable").ok(); }));
}

// test_client_ssl_reload_change_ca and test_client_ssl_sighup_change_ca.
TEST_F(ClientTlsOnlineTest, ReloadAndSighupSwitchCertificates) {
  StartAgent(ClientTlsIni(Certs(), "require"));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn admin, ConnectConsole());
  PGF_ASSERT_OK(AppWorks(VerifyFull(Certs())));
  PGF_ASSERT_OK(RewriteIni(ClientTlsIni(OtherCerts(), "require")));
  PGF_ASSERT_OK(Command(admin.get(), "RELOAD").status());
  EXPECT_FALSE(AppWorks(VerifyFull(Certs())).ok());
  PGF_EXPECT_OK(AppWorks(VerifyFull(OtherCerts())));

  PGF_ASSERT_OK(RewriteIni(ClientTlsIni(Certs(), "require")));
  PGF_ASSERT_OK(agent_->Signal(SIGHUP));
  PGF_ASSERT_OK(AwaitReload([&] { return AppWorks(VerifyFull(Certs())).ok(); }));
  EXPECT_FALSE(AppWorks(VerifyFull(OtherCerts())).ok());
}

// test_client_ssl_scram: SCRAM over a TLS session enabled by RELOAD, checked by psql.
TEST_F(ClientTlsOnlineTest, ScramOverTlsEnabledByReload) {
  StartAgent();
  PGF_ASSERT_OK_AND_ASSIGN(PgConn admin, ConnectConsole());
  PGF_ASSERT_OK(RewriteIni(ClientTlsIni(Certs(), "require")));
  PGF_ASSERT_OK(Command(admin.get(), "RELOAD").status());
  RunOptions options;
  options.env = {{"PGPASSWORD", kAppPassword}};
  PGF_ASSERT_OK_AND_ASSIGN(
      RunResult psql,
      RunCommand({pg_->BinPath("psql"),
                  absl::StrCat("host=localhost port=", agent_->port(),
                               " dbname=appdb user=", kAppUser, " ", VerifyFull(Certs())),
                  "-XAtc", "select 1"},
                 options));
  ASSERT_TRUE(psql.Succeeded()) << psql.Describe();
  EXPECT_EQ(psql.stdout_text, "1\n");
}

}  // namespace
}  // namespace pgfleet::testutil
