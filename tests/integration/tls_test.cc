// TLS on both sides of a real pgfleet-agent: clients (psql, libpq) that ask for TLS and verify
// the agent's certificate, and a real PostgreSQL 15 that accepts app logins over TLS only.
// Certificates come from scripts/make-test-certs.sh, as an operator's would.
#include <libpq-fe.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "gtest/gtest.h"
#include "tests/testutil/agent_process.h"
#include "tests/testutil/fixtures.h"
#include "tests/testutil/postgres_env.h"
#include "tests/testutil/pq.h"
#include "tests/testutil/process.h"
#include "tests/testutil/status_testing.h"
#include "tests/testutil/tls_certs.h"

namespace pgfleet::testutil {
namespace {

// Runs scripts/make-test-certs.sh into `dir` (a CA, and a localhost certificate signed by it).

class TlsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char dir_template[] = "/tmp/pgfleet-tls-XXXXXX";
    ASSERT_NE(mkdtemp(dir_template), nullptr);
    dir_ = new std::string(dir_template);
    // PostgreSQL (user postgres) reads the server certificate from here.
    chmod(dir_->c_str(), 0755);
    PGF_ASSERT_OK(MakeTestCerts(Certs(), {"client1"}));
    PGF_ASSERT_OK(MakeTestCerts(OtherCerts(), {"client1"}));  // A second CA nobody trusts.
    PGF_ASSERT_OK(HandCertsToPostgres(Certs()));

    PostgresOptions options;
    // 127.0.0.2 too: an address the server certificate does not name.
    options.extra_conf = {"ssl = on",
                          absl::StrCat("ssl_cert_file = '", Certs(), "/controller.pem'"),
                          absl::StrCat("ssl_key_file = '", Certs(), "/controller-key.pem'"),
                          "listen_addresses = '127.0.0.1,127.0.0.2'"};
    // The application's logins must be encrypted; the harness's own (superuser) need not be.
    options.extra_hba_lines = {
        absl::StrCat("hostnossl ", kAppDb, " ", kAppUser, " 127.0.0.1/32 reject"),
        absl::StrCat("hostssl ", kAppDb, " ", kAppUser, " 127.0.0.2/32 scram-sha-256")};
    PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<PostgresEnv> pg, PostgresEnv::Start(options));
    PGF_ASSERT_OK(pg->CreateUser(kAppUser, kAppPassword));
    PGF_ASSERT_OK(pg->CreateDatabase(kAppDb, kAppUser));
    pg_ = pg.release();
  }
  static void TearDownTestSuite() {
    delete pg_;
    pg_ = nullptr;
    if (dir_ != nullptr) std::filesystem::remove_all(*dir_);
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override { ASSERT_NE(pg_, nullptr) << "PostgreSQL with ssl=on did not start"; }

  static std::string Certs() { return *dir_ + "/certs"; }
  static std::string OtherCerts() { return *dir_ + "/other"; }

  // An agent in front of the TLS-only database, with `settings` added to [pgbouncer].
  std::unique_ptr<AgentProcess> StartAgent(std::map<std::string, std::string> settings,
                                           const std::string& db_params = "") {
    AgentOptions options;
    options.pgbouncer_settings = {{"auth_type", "scram-sha-256"}, {"pool_mode", "transaction"}};
    for (const auto& [key, value] : settings) options.pgbouncer_settings[key] = value;
    options.databases_section = absl::StrCat(kAppDb, " = host=", db_host_, " port=", pg_->port(),
                                             " dbname=", kAppDb, " ", db_params, "\n");
    options.userlist = {{kAppUser, kAppPassword}};
    absl::StatusOr<std::unique_ptr<AgentProcess>> agent = AgentProcess::Start(options);
    EXPECT_TRUE(agent.ok()) << agent.status();
    return agent.ok() ? std::move(*agent) : nullptr;
  }

  // libpq conninfo to the agent as the app user, with `ssl` (sslmode=..., sslrootcert=...).
  static std::string AgentConn(const AgentProcess& agent, const std::string& ssl) {
    return absl::StrCat("host=localhost port=", agent.port(), " dbname=", kAppDb,
                        " user=", kAppUser, " password=", kAppPassword, " connect_timeout=10 ",
                        ssl);
  }

  // The admin console over TLS, as the app user (an admin_users entry in these tests).
  static absl::StatusOr<PgConn> ConnectConsole(const AgentProcess& agent) {
    return Connect(absl::StrCat("host=127.0.0.1 port=", agent.port(),
                                " dbname=pgbouncer user=", kAppUser, " password=", kAppPassword,
                                " sslmode=require connect_timeout=10"));
  }

  std::map<std::string, std::string> ClientTls(const std::string& mode) const {
    return {{"client_tls_sslmode", mode},
            {"client_tls_cert_file", Certs() + "/controller.pem"},
            {"client_tls_key_file", Certs() + "/controller-key.pem"},
            {"client_tls_ca_file", Certs() + "/ca.pem"}};
  }

  // Whether PostgreSQL sees the agent's backend for `pid` as encrypted.
  static absl::StatusOr<std::string> ServerSideSsl(const std::string& pid) {
    PGF_ASSIGN_OR_RETURN(
        Rows rows, pg_->Exec(absl::StrCat("select ssl::text from pg_stat_ssl where pid = ", pid)));
    if (rows.size() != 1) return absl::NotFoundError(absl::StrCat("no backend ", pid));
    return rows[0][0];
  }

  static PostgresEnv* pg_;
  static std::string* dir_;
  // An IP address: the agent connects to the first address a name resolves to, and
  // PostgreSQL listens on IPv4 only. The certificate names 127.0.0.1 (and localhost).
  std::string db_host_ = "127.0.0.1";
};

PostgresEnv* TlsTest::pg_ = nullptr;
std::string* TlsTest::dir_ = nullptr;

TEST_F(TlsTest, PsqlVerifyFullThroughTheAgentAndTlsToPostgres) {
  std::unique_ptr<AgentProcess> agent = StartAgent(ClientTls("require"));
  ASSERT_NE(agent, nullptr);
  // psql verifies that the agent's certificate is signed by the CA and names localhost.
  PGF_ASSERT_OK_AND_ASSIGN(
      RunResult psql,
      RunCommand(
          {pg_->BinPath("psql"),
           AgentConn(*agent, absl::StrCat("sslmode=verify-full sslrootcert=", Certs(), "/ca.pem")),
           "-XAtc", "select pg_backend_pid()"}));
  ASSERT_TRUE(psql.Succeeded()) << psql.Describe() << agent->Diagnostics();
  // The agent reached PostgreSQL over TLS too (server_tls_sslmode defaults to prefer, and
  // the database refuses the app user without it).
  const std::string backend_pid(absl::StripAsciiWhitespace(psql.stdout_text));
  PGF_ASSERT_OK_AND_ASSIGN(std::string server_ssl, ServerSideSsl(backend_pid));
  EXPECT_EQ(server_ssl, "true");

  // libpq reports the session as encrypted, and SHOW CLIENTS names the protocol.
  PGF_ASSERT_OK_AND_ASSIGN(
      PgConn conn,
      Connect(
          AgentConn(*agent, absl::StrCat("sslmode=verify-full sslrootcert=", Certs(), "/ca.pem"))));
  EXPECT_EQ(PQsslInUse(conn.get()), 1);
  EXPECT_TRUE(absl::StartsWith(PQsslAttribute(conn.get(), "protocol"), "TLSv1."));
}

TEST_F(TlsTest, RequireRefusesPlainClientsWithAClearError) {
  std::unique_ptr<AgentProcess> agent = StartAgent(ClientTls("require"));
  ASSERT_NE(agent, nullptr);
  absl::StatusOr<PgConn> plain = Connect(AgentConn(*agent, "sslmode=disable"));
  ASSERT_FALSE(plain.ok());
  EXPECT_TRUE(absl::StrContains(plain.status().message(), "SSL required")) << plain.status();
  // Allowed-but-not-required TLS (prefer) works, and so does plain text under `allow`.
  PGF_EXPECT_OK(Connect(AgentConn(*agent, "sslmode=prefer")).status());
  std::unique_ptr<AgentProcess> lenient = StartAgent(ClientTls("allow"));
  ASSERT_NE(lenient, nullptr);
  PGF_ASSERT_OK_AND_ASSIGN(PgConn conn, Connect(AgentConn(*lenient, "sslmode=disable")));
  EXPECT_EQ(PQsslInUse(conn.get()), 0);
  PGF_EXPECT_OK(ScalarInt(conn.get(), "select 1").status());
}

TEST_F(TlsTest, ClientRefusesAnAgentCertificateFromAnotherCa) {
  std::unique_ptr<AgentProcess> agent = StartAgent(ClientTls("require"));
  ASSERT_NE(agent, nullptr);
  absl::StatusOr<PgConn> conn = Connect(
      AgentConn(*agent, absl::StrCat("sslmode=verify-full sslrootcert=", OtherCerts(), "/ca.pem")));
  ASSERT_FALSE(conn.ok());
  EXPECT_TRUE(absl::StrContains(conn.status().message(), "certificate verify failed"))
      << conn.status();
  // The agent is unharmed.
  PGF_EXPECT_OK(Connect(AgentConn(*agent, absl::StrCat("sslmode=verify-full sslrootcert=", Certs(),
                                                       "/ca.pem")))
                    .status());
}

TEST_F(TlsTest, ServerTlsRequireAndVerifyFull) {
  // verify-full with the right CA: the certificate names localhost.
  std::unique_ptr<AgentProcess> verified = StartAgent(
      {{"server_tls_sslmode", "verify-full"}, {"server_tls_ca_file", Certs() + "/ca.pem"}});
  ASSERT_NE(verified, nullptr);
  PGF_ASSERT_OK_AND_ASSIGN(PgConn conn, Connect(AgentConn(*verified, "sslmode=disable")));
  PGF_ASSERT_OK_AND_ASSIGN(std::string pid, ScalarText(conn.get(), "select pg_backend_pid()"));
  PGF_ASSERT_OK_AND_ASSIGN(std::string server_ssl, ServerSideSsl(pid));
  EXPECT_EQ(server_ssl, "true");
}

TEST_F(TlsTest, WrongServerCertificateIsRefusedWithAClearError) {
  std::unique_ptr<AgentProcess> agent = StartAgent(
      {{"server_tls_sslmode", "verify-ca"}, {"server_tls_ca_file", OtherCerts() + "/ca.pem"}});
  ASSERT_NE(agent, nullptr);
  absl::StatusOr<PgConn> conn = Connect(AgentConn(*agent, "sslmode=disable"));
  absl::Status status = conn.ok() ? ScalarInt(conn->get(), "select 1").status() : conn.status();
  ASSERT_FALSE(status.ok());
  const std::string log = agent->LogContents();
  EXPECT_TRUE(absl::StrContains(log, "certificate verify failed")) << log;

  // verify-full against an address the certificate does not name (it says localhost).
  db_host_ = "127.0.0.2";
  std::unique_ptr<AgentProcess> wrong_name = StartAgent(
      {{"server_tls_sslmode", "verify-full"}, {"server_tls_ca_file", Certs() + "/ca.pem"}});
  db_host_ = "127.0.0.1";
  ASSERT_NE(wrong_name, nullptr);
  absl::StatusOr<PgConn> named = Connect(AgentConn(*wrong_name, "sslmode=disable"));
  absl::Status named_status =
      named.ok() ? ScalarInt(named->get(), "select 1").status() : named.status();
  ASSERT_FALSE(named_status.ok());
  EXPECT_TRUE(absl::StrContains(wrong_name->LogContents(), "certificate verify failed"))
      << wrong_name->LogContents();
}

TEST_F(TlsTest, ServerTlsDisabledCannotReachATlsOnlyDatabase) {
  std::unique_ptr<AgentProcess> agent = StartAgent({{"server_tls_sslmode", "disable"}});
  ASSERT_NE(agent, nullptr);
  absl::StatusOr<PgConn> conn = Connect(AgentConn(*agent, "sslmode=disable"));
  absl::Status status = conn.ok() ? ScalarInt(conn->get(), "select 1").status() : conn.status();
  ASSERT_FALSE(status.ok());
  EXPECT_TRUE(absl::StrContains(status.message(), "no encryption")) << status;
}

TEST_F(TlsTest, ReloadReadsCertificatesAgainAndKeepsTheOldOnesOnError) {
  std::map<std::string, std::string> settings = ClientTls("require");
  settings["admin_users"] = kAppUser;
  std::unique_ptr<AgentProcess> agent = StartAgent(settings);
  ASSERT_NE(agent, nullptr);
  const std::string trust_first =
      absl::StrCat("sslmode=verify-ca sslrootcert=", Certs(), "/ca.pem");
  const std::string trust_second =
      absl::StrCat("sslmode=verify-ca sslrootcert=", OtherCerts(), "/ca.pem");
  PGF_ASSERT_OK(Connect(AgentConn(*agent, trust_first)).status());
  PGF_ASSERT_OK_AND_ASSIGN(PgConn admin, ConnectConsole(*agent));
  auto rewrite = [&](const std::string& cert, const std::string& key) {
    AgentOptions options;
    options.pgbouncer_settings = {{"auth_type", "scram-sha-256"}, {"pool_mode", "transaction"}};
    for (const auto& [k, v] : settings) options.pgbouncer_settings[k] = v;
    options.pgbouncer_settings["client_tls_cert_file"] = cert;
    options.pgbouncer_settings["client_tls_key_file"] = key;
    options.databases_section =
        absl::StrCat(kAppDb, " = host=127.0.0.1 port=", pg_->port(), " dbname=", kAppDb, "\n");
    options.userlist = {{kAppUser, kAppPassword}};
    return agent->RewriteConfig(options);
  };

  // A RELOAD naming a missing key is refused, says why, and the old certificate stays.
  const std::string missing = *dir_ + "/missing-key.pem";
  PGF_ASSERT_OK(rewrite(Certs() + "/controller.pem", missing));
  absl::StatusOr<Rows> refused = Query(admin.get(), "RELOAD");
  ASSERT_FALSE(refused.ok());
  EXPECT_TRUE(absl::StrContains(refused.status().message(), missing)) << refused.status();
  PGF_EXPECT_OK(Connect(AgentConn(*agent, trust_first)).status());

  // A renewed certificate (here: from another CA) is served after RELOAD, without a restart.
  PGF_ASSERT_OK(rewrite(OtherCerts() + "/controller.pem", OtherCerts() + "/controller-key.pem"));
  PGF_ASSERT_OK(Query(admin.get(), "RELOAD").status());
  PGF_EXPECT_OK(Connect(AgentConn(*agent, trust_second)).status());
  absl::StatusOr<PgConn> old_trust = Connect(AgentConn(*agent, trust_first));
  ASSERT_FALSE(old_trust.ok());
  EXPECT_TRUE(absl::StrContains(old_trust.status().message(), "certificate verify failed"))
      << old_trust.status();
  // The admin session opened before the RELOAD still works on its old TLS session.
  PGF_EXPECT_OK(Query(admin.get(), "SHOW VERSION").status());
}

// SET of TLS keys on the console, as PgBouncer's test_ssl.py does it: one key at a time, in
// force once the keys set so far work together (a new key before its certificate is not), and
// server TLS changes replace the servers as they are released.
void CollectNotice(void* arg, const PGresult* result) {
  static_cast<std::vector<std::string>*>(arg)->push_back(PQresultErrorMessage(result));
}

TEST_F(TlsTest, SetChangesTlsOnlineOneKeyAtATime) {
  std::map<std::string, std::string> settings = ClientTls("require");
  settings["admin_users"] = kAppUser;
  settings["server_tls_sslmode"] = "require";
  // A query that cannot get a server (the last step) fails after this, not after 120 s.
  settings["query_wait_timeout"] = "3";
  std::unique_ptr<AgentProcess> agent = StartAgent(settings);
  ASSERT_NE(agent, nullptr);
  const std::string trust_first =
      absl::StrCat("sslmode=verify-ca sslrootcert=", Certs(), "/ca.pem");
  const std::string trust_second =
      absl::StrCat("sslmode=verify-ca sslrootcert=", OtherCerts(), "/ca.pem");
  PGF_ASSERT_OK_AND_ASSIGN(PgConn admin, ConnectConsole(*agent));
  std::vector<std::string> notices;
  PQsetNoticeReceiver(admin.get(), &CollectNotice, &notices);

  // A server connection made with TLS, held by a session-less client between transactions.
  PGF_ASSERT_OK_AND_ASSIGN(PgConn app, Connect(AgentConn(*agent, trust_first)));
  PGF_ASSERT_OK_AND_ASSIGN(std::string first_pid, ScalarText(app.get(), "select pg_backend_pid()"));

  // The key of the other certificate first: it does not match the running certificate, so the
  // SET is taken but not in force yet, and says so; clients still get the first certificate.
  PGF_ASSERT_OK(Query(admin.get(), absl::StrCat("SET client_tls_key_file = '", OtherCerts(),
                                                "/controller-key.pem'"))
                    .status());
  ASSERT_EQ(notices.size(), 1u);
  EXPECT_TRUE(absl::StrContains(notices[0], "TLS settings not in force yet")) << notices[0];
  PGF_EXPECT_OK(Connect(AgentConn(*agent, trust_first)).status());
  // Its certificate next: now the pair works, and new handshakes present it.
  PGF_ASSERT_OK(Query(admin.get(), absl::StrCat("SET client_tls_cert_file = '", OtherCerts(),
                                                "/controller.pem'"))
                    .status());
  EXPECT_EQ(notices.size(), 1u) << notices.back();
  PGF_EXPECT_OK(Connect(AgentConn(*agent, trust_second)).status());
  absl::StatusOr<PgConn> old_trust = Connect(AgentConn(*agent, trust_first));
  ASSERT_FALSE(old_trust.ok());
  EXPECT_TRUE(absl::StrContains(old_trust.status().message(), "certificate verify failed"))
      << old_trust.status();
  PGF_ASSERT_OK_AND_ASSIGN(Rows shown, Query(admin.get(), "SHOW CONFIG"));
  bool cert_shown = false;
  for (const auto& row : shown) {
    if (row.size() > 1 && row[0] == "client_tls_cert_file") {
      cert_shown = row[1] == OtherCerts() + "/controller.pem";
    }
  }
  EXPECT_TRUE(cert_shown) << "SHOW CONFIG shows the certificate in force";

  // A value that is no TLS mode is refused outright and changes nothing.
  absl::StatusOr<Rows> bad = Query(admin.get(), "SET client_tls_sslmode = 'sometimes'");
  ASSERT_FALSE(bad.ok());
  PGF_EXPECT_OK(Connect(AgentConn(*agent, trust_second)).status());

  // Server side: verify-full against the CA that signed PostgreSQL's certificate. The server
  // connection made before is replaced once released: a new backend, still encrypted.
  PGF_ASSERT_OK(
      Query(admin.get(), absl::StrCat("SET server_tls_ca_file = '", Certs(), "/ca.pem'")).status());
  PGF_ASSERT_OK(Query(admin.get(), "SET server_tls_sslmode = 'verify-full'").status());
  PGF_ASSERT_OK_AND_ASSIGN(std::string second_pid,
                           ScalarText(app.get(), "select pg_backend_pid()"));
  EXPECT_NE(second_pid, first_pid);
  PGF_ASSERT_OK_AND_ASSIGN(std::string server_ssl, ServerSideSsl(second_pid));
  EXPECT_EQ(server_ssl, "true");
  // A CA that did not sign it: new server logins fail, as verify-full must.
  PGF_ASSERT_OK(
      Query(admin.get(), absl::StrCat("SET server_tls_ca_file = '", OtherCerts(), "/ca.pem'"))
          .status());
  absl::Status refused = ScalarText(app.get(), "select pg_backend_pid()").status();
  EXPECT_FALSE(refused.ok());
  EXPECT_TRUE(absl::StrContains(agent->LogContents(), "certificate verify failed"))
      << agent->LogContents();
  PQsetNoticeReceiver(admin.get(), nullptr, nullptr);
}

}  // namespace
}  // namespace pgfleet::testutil
