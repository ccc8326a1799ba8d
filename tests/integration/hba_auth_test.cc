// PgBouncer 1.25's remaining authentication methods through a real pgfleet-agent, real libpq
// clients and a real PostgreSQL: auth_type = hba (lines chosen by connection type, address,
// database and user; trust, reject, md5, scram-sha-256, cert, peer, map=), auth_type = cert,
// and the console's own-user rule (`pgbouncer` over the unix socket from the agent's own OS
// user, no password). Answers are PgBouncer's words with SQLSTATE 08P01.
#include <unistd.h>

#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testutil/agent_process.h"
#include "tests/testutil/console.h"
#include "tests/testutil/fixtures.h"
#include "tests/testutil/pq.h"
#include "tests/testutil/raw_client.h"
#include "tests/testutil/status_testing.h"
#include "tests/testutil/temp_dir.h"
#include "tests/testutil/tls_certs.h"

namespace pgfleet::testutil {
namespace {

using ::testing::HasSubstr;

[[maybe_unused]] auto* const kCluster = RegisterSharedPostgres();

// The test process runs as root (the agent too): peer logins see OS user "root".
constexpr char kOsUser[] = "root";

// Each user's line is its own, so a test reads as "this user, from here, gets this method".
constexpr char kHbaRules[] = R"(# pgfleet hba_auth_test
local     pgbouncer  pgbouncer               reject
local     all        root                    peer
local     all        app                     peer map=ops
local     all        all                     peer
hostssl   all        certuser   127.0.0.1/32 cert
hostssl   all        mappedcert 127.0.0.1/32 cert map=certs
hostnossl all        sslonly    127.0.0.1/32 reject
hostssl   all        sslonly    127.0.0.1/32 trust
host      all        trusted    10.0.0.0/8   reject
host      all        trusted    127.0.0.1/32 trust
host      all        rejected   all          reject
host      all        scramuser  127.0.0.1/32 scram-sha-256
host      appdb      app        127.0.0.1/32 md5
)";

constexpr char kIdentMaps[] = R"(# MAP  SYSTEM-USER  DATABASE-USER
ops    root         app
certs  client-a     mappedcert
)";

class HbaAuthTest : public AgentTest {
 protected:
  void SetUp() override {
    AgentTest::SetUp();
    PGF_ASSERT_OK(dir_.Create("pgfleet-hba"));
    PGF_ASSERT_OK(MakeTestCerts(Certs(), {"certuser", "intruder", "client-a"}));
    WriteFile(HbaPath(), kHbaRules);
    WriteFile(dir_.path() + "/ident.conf", kIdentMaps);
    PGF_ASSERT_OK(socket_dir_.Create("pgfleet-hba-sock"));
  }

  std::string Certs() const { return dir_.path() + "/certs"; }
  std::string HbaPath() const { return dir_.path() + "/hba.conf"; }
  static void WriteFile(const std::string& path, const std::string& text) {
    std::ofstream(path, std::ios::trunc) << text;
  }

  // Every user of the hba file is in auth_file (a login needs a known user, as in PgBouncer);
  // appdb forces kAppUser towards PostgreSQL, so any of them can run a query.
  AgentOptions Options(std::map<std::string, std::string> settings) const {
    AgentOptions options = AppAgentOptions({}, 0);
    options.databases_section = absl::StrCat(kAppDb, " = host=127.0.0.1 port=", g_pg->port(),
                                             " dbname=", kAppDb, " user=", kAppUser, "\n");
    options.pgbouncer_settings = {
        {"auth_type", "hba"},
        {"auth_hba_file", HbaPath()},
        {"auth_ident_file", dir_.path() + "/ident.conf"},
        {"unix_socket_dir", socket_dir_.path()},
        {"client_tls_sslmode", "prefer"},
        {"client_tls_cert_file", Certs() + "/controller.pem"},
        {"client_tls_key_file", Certs() + "/controller-key.pem"},
        {"client_tls_ca_file", Certs() + "/ca.pem"},
        {"pool_mode", "transaction"},
        // Every refusal answered at once and logged: these tests fail logins on purpose.
        {"auth_failure_burst", "1000"},
    };
    for (const auto& [key, value] : settings) options.pgbouncer_settings[key] = value;
    for (const char* user :
         {kOsUser, "certuser", "mappedcert", "sslonly", "trusted", "rejected", "scramuser"}) {
      options.userlist.push_back({user, absl::StrCat(user, "-pw")});
    }
    return options;
  }

  std::string Tcp(const std::string& user, const std::string& extra = "") const {
    return absl::StrCat("host=127.0.0.1 port=", agent_->port(), " dbname=", kAppDb, " user=", user,
                        " connect_timeout=10 ", extra);
  }
  std::string Unix(const std::string& user, const std::string& db = kAppDb) const {
    return absl::StrCat("host=", socket_dir_.path(), " port=", agent_->port(), " dbname=", db,
                        " user=", user, " connect_timeout=10 sslmode=disable");
  }
  std::string ClientCert(const std::string& name) const {
    return absl::StrCat("sslmode=require sslcert=", Certs(), "/", name, ".pem sslkey=", Certs(),
                        "/", name, "-key.pem");
  }

  // Logs in with `conninfo` and runs a query through the pool: "ok", or libpq's error.
  static std::string LoginOutcome(const std::string& conninfo) {
    absl::StatusOr<PgConn> conn = Connect(conninfo);
    if (!conn.ok()) return std::string(conn.status().message());
    absl::StatusOr<int64_t> one = ScalarInt(conn->get(), "select 1");
    return one.ok() ? "ok" : std::string(one.status().message());
  }

  // A plain-TCP login's refusal, as the wire carries it: "SQLSTATE message".
  std::string RawRefusal(const std::string& user, const std::string& db = kAppDb) const {
    absl::StatusOr<std::unique_ptr<RawClient>> client = RawClient::Connect(agent_->port());
    if (!client.ok()) return std::string(client.status().message());
    absl::StatusOr<LoginResult> login = (*client)->Login(user, db, "wrong");
    if (!login.ok()) return std::string(login.status().message());
    if (!login->error.has_value()) return "logged in";
    return absl::StrCat(login->error->code, " ", login->error->message);
  }

  TempDir dir_;
  TempDir socket_dir_;
};

TEST_F(HbaAuthTest, HostLinesAreChosenByAddressDatabaseAndUser) {
  StartAgentWith(Options({}));
  ASSERT_NE(agent_, nullptr);
  // 10.0.0.0/8's reject line does not apply from 127.0.0.1: the next line trusts.
  EXPECT_EQ(LoginOutcome(Tcp("trusted", "sslmode=disable")), "ok");
  EXPECT_EQ(RawRefusal("rejected"), "08P01 login rejected");
  // No line for this user on TCP: PgBouncer's answer when hba_eval finds nothing.
  EXPECT_EQ(RawRefusal("stranger"), "08P01 no authentication method is found");
  EXPECT_EQ(RawRefusal("app", "otherdb"), "08P01 no authentication method is found");
  // scram-sha-256 and md5 lines ask for those exchanges.
  EXPECT_EQ(LoginOutcome(Tcp("scramuser", "password=scramuser-pw sslmode=disable")), "ok");
  EXPECT_THAT(LoginOutcome(Tcp("scramuser", "password=nope sslmode=disable")),
              HasSubstr("SASL authentication failed"));
  absl::StatusOr<std::unique_ptr<RawClient>> md5 = RawClient::Connect(agent_->port());
  PGF_ASSERT_OK(md5.status());
  PGF_ASSERT_OK_AND_ASSIGN(LoginResult app, (*md5)->Login(kAppUser, kAppDb, kAppPassword));
  EXPECT_TRUE(app.ok) << (app.error ? app.error->ToString() : "");
  EXPECT_THAT(app.auth_requests, ::testing::ElementsAre(5, 0));  // md5, then AuthenticationOk.
}

TEST_F(HbaAuthTest, HostsslAndHostnosslFollowTheClientsTls) {
  StartAgentWith(Options({}));
  ASSERT_NE(agent_, nullptr);
  EXPECT_THAT(LoginOutcome(Tcp("sslonly", "sslmode=disable")), HasSubstr("login rejected"));
  EXPECT_EQ(LoginOutcome(Tcp("sslonly", "sslmode=require")), "ok");
}

TEST_F(HbaAuthTest, CertLinesNeedACertificateNamingTheUser) {
  StartAgentWith(Options({}));
  ASSERT_NE(agent_, nullptr);
  EXPECT_EQ(LoginOutcome(Tcp("certuser", ClientCert("certuser"))), "ok");
  // Another CA-signed certificate, TLS without one, and no TLS at all (the hostssl line does
  // not match then, and nothing else does).
  EXPECT_THAT(LoginOutcome(Tcp("certuser", ClientCert("intruder"))),
              HasSubstr("certificate authentication failed"));
  EXPECT_THAT(LoginOutcome(Tcp("certuser", "sslmode=require")),
              HasSubstr("certificate authentication failed"));
  EXPECT_EQ(RawRefusal("certuser"), "08P01 no authentication method is found");
  // map=certs: the certificate of client-a logs in as mappedcert, which no certificate names.
  EXPECT_EQ(LoginOutcome(Tcp("mappedcert", ClientCert("client-a"))), "ok");
  EXPECT_THAT(LoginOutcome(Tcp("mappedcert", ClientCert("certuser"))),
              HasSubstr("certificate authentication failed"));
  EXPECT_THAT(agent_->LogContents(), HasSubstr("TLS certificate name mismatch"));
}

TEST_F(HbaAuthTest, AuthTypeCertTakesTheUserFromTheCertificate) {
  StartAgentWith(Options({{"auth_type", "cert"}, {"client_tls_sslmode", "verify-full"}}));
  ASSERT_NE(agent_, nullptr);
  EXPECT_EQ(LoginOutcome(Tcp("certuser", ClientCert("certuser"))), "ok");
  EXPECT_THAT(LoginOutcome(Tcp("certuser", ClientCert("intruder"))),
              HasSubstr("certificate authentication failed"));
  // A certificate for a user auth_file does not know logs nobody in.
  EXPECT_THAT(LoginOutcome(Tcp("intruder", ClientCert("intruder"))),
              HasSubstr("certificate authentication failed"));
}

TEST_F(HbaAuthTest, CertLinesWithoutClientCertificatesAreWarnedAbout) {
  StartAgentWith(Options({{"client_tls_sslmode", "disable"}}));
  ASSERT_NE(agent_, nullptr);
  EXPECT_THAT(agent_->StderrContents() + agent_->LogContents(),
              HasSubstr("hba.conf:6: cert needs client TLS with client_tls_ca_file"));
}

TEST_F(HbaAuthTest, PeerLinesCompareTheUnixSocketPeersOsUser) {
  StartAgentWith(Options({}));
  ASSERT_NE(agent_, nullptr);
  EXPECT_EQ(LoginOutcome(Unix(kOsUser)), "ok");
  // map=ops lets OS user root log in as app.
  EXPECT_EQ(LoginOutcome(Unix(kAppUser)), "ok");
  // `local all all peer`: OS user root is not "trusted".
  EXPECT_THAT(LoginOutcome(Unix("trusted")), HasSubstr("unix socket login rejected"));
  EXPECT_THAT(agent_->LogContents(), HasSubstr("peer OS user \"root\" is not \"trusted\""));
}

TEST_F(HbaAuthTest, PgbouncerConsoleOverTheUnixSocketFromTheAgentsOwnUser) {
  // PgBouncer's rule comes before the hba file (whose line for it says reject) and
  // admin_users (empty here): an admin, without a password.
  StartAgentWith(Options({}));
  ASSERT_NE(agent_, nullptr);
  PGF_ASSERT_OK_AND_ASSIGN(PgConn console, Connect(Unix("pgbouncer", "pgbouncer")));
  PGF_ASSERT_OK_AND_ASSIGN(Table version, Show(console.get(), "SHOW VERSION"));
  EXPECT_EQ(version.rows.size(), 1u);
  PGF_EXPECT_OK(Command(console.get(), "RELOAD").status());
  EXPECT_THAT(agent_->LogContents(), HasSubstr("pgbouncer access from unix socket"));
  // Over TCP the name alone gets nothing.
  EXPECT_EQ(RawRefusal("pgbouncer", "pgbouncer"), "08P01 no authentication method is found");
}

TEST_F(HbaAuthTest, PgbouncerConsoleRuleHoldsUnderPasswordAuthTypes) {
  StartAgentWith(Options({{"auth_type", "scram-sha-256"}}));
  ASSERT_NE(agent_, nullptr);
  PGF_ASSERT_OK_AND_ASSIGN(PgConn console, Connect(Unix("pgbouncer", "pgbouncer")));
  PGF_EXPECT_OK(Command(console.get(), "RELOAD").status());
  // Anyone else over the socket still needs a password.
  EXPECT_THAT(LoginOutcome(Unix("trusted", "pgbouncer")), HasSubstr("password"));
}

TEST_F(HbaAuthTest, ReloadWithABrokenHbaFileKeepsTheRulesInForce) {
  StartAgentWith(Options({}));
  ASSERT_NE(agent_, nullptr);
  PGF_ASSERT_OK_AND_ASSIGN(PgConn console, Connect(Unix("pgbouncer", "pgbouncer")));
  WriteFile(HbaPath(), "host all trusted 127.0.0.1/32 trust\nhots all rejected all trust\n");
  absl::StatusOr<std::string> refused = Command(console.get(), "RELOAD");
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(
      refused.status().message(),
      AllOf(HasSubstr("hba.conf:2: unknown connection type \"hots\""), HasSubstr("auth_hba_file")));
  EXPECT_EQ(LoginOutcome(Tcp("trusted", "sslmode=disable")), "ok");
  EXPECT_EQ(RawRefusal("rejected"), "08P01 login rejected");

  // Fixed, the new rules apply at the next RELOAD.
  WriteFile(HbaPath(), "host all rejected 127.0.0.1/32 trust\n");
  PGF_ASSERT_OK(Command(console.get(), "RELOAD").status());
  EXPECT_EQ(LoginOutcome(Tcp("rejected", "sslmode=disable")), "ok");
  EXPECT_EQ(RawRefusal("trusted"), "08P01 no authentication method is found");
}

TEST_F(HbaAuthTest, SetOnlineReadsTheHbaFileAndOneThatDoesNotLoadRefusesLogins) {
  StartAgentWith(Options({{"auth_type", "md5"}}));
  ASSERT_NE(agent_, nullptr);
  PGF_ASSERT_OK_AND_ASSIGN(PgConn console, Connect(Unix("pgbouncer", "pgbouncer")));
  EXPECT_THAT(LoginOutcome(Tcp("trusted", "sslmode=disable")), HasSubstr("password"));
  PGF_ASSERT_OK(Command(console.get(), "SET auth_type = 'hba'").status());
  EXPECT_EQ(LoginOutcome(Tcp("trusted", "sslmode=disable")), "ok");

  // A file that does not load: the SET goes through with a notice, and no login gets in
  // (rather than the previous rules or method going on unnoticed).
  PGF_ASSERT_OK(Command(console.get(), "SET auth_hba_file = '/nonexistent/hba.conf'").status());
  EXPECT_EQ(RawRefusal("trusted"), "08P01 no authentication method is found");
  EXPECT_THAT(agent_->LogContents(), HasSubstr("auth_hba_file not loaded"));
  PGF_ASSERT_OK(
      Command(console.get(), absl::StrCat("SET auth_hba_file = '", HbaPath(), "'")).status());
  EXPECT_EQ(LoginOutcome(Tcp("trusted", "sslmode=disable")), "ok");
}

}  // namespace
}  // namespace pgfleet::testutil
