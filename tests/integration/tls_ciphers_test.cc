// PgBouncer 1.25's TLS handshake keys on a real pgfleet-agent (issue 22): client_tls13_ciphers,
// client_tls_ecdhcurve and client_tls_dheparams decide what `openssl s_client -starttls
// postgres` can negotiate with the agent; server_tls13_ciphers decides the suite a real
// PostgreSQL 15 with ssl = on reports in pg_stat_ssl for the agent's backends. Each changes
// online (SET, RELOAD) like the other TLS keys, and an invalid value is refused naming the key
// and the value while the running TLS stays in force.
#include <libpq-fe.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
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

namespace pgfleet::testutil {
namespace {

// What `openssl s_client` reports of one handshake.
struct Handshake {
  std::string protocol;  // "TLSv1.3"; "(NONE)" when the handshake failed.
  std::string cipher;    // "TLS_AES_256_GCM_SHA384"; "(NONE)" when it failed.
  std::string temp_key;  // "X25519, 253 bits", "DH, 2048 bits", "ECDH, secp384r1, 384 bits".
  std::string output;    // Everything, for failure messages.

  bool ok() const { return !cipher.empty() && cipher != "(NONE)"; }
};

void CollectNotice(void* arg, const PGresult* result) {
  static_cast<std::vector<std::string>*>(arg)->push_back(PQresultErrorMessage(result));
}

class TlsCiphersTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char dir_template[] = "/tmp/pgfleet-tls-ciphers-XXXXXX";
    ASSERT_NE(mkdtemp(dir_template), nullptr);
    dir_ = new std::string(dir_template);
    chmod(dir_->c_str(), 0755);  // PostgreSQL (user postgres) reads its certificate from here.
    PGF_ASSERT_OK(MakeTestCerts(Certs(), {}));
    PGF_ASSERT_OK(HandCertsToPostgres(Certs()));
    PostgresOptions options;
    options.extra_conf = PostgresSslConf(Certs());
    PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<PostgresEnv> pg, PostgresEnv::Start(options));
    PGF_ASSERT_OK(CreateAppDatabase(*pg));
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
  void TearDown() override {
    if (agent_ != nullptr && HasFailure()) std::cerr << agent_->Diagnostics();
  }

  static std::string Certs() { return *dir_ + "/certs"; }

  // TLS required on both sides (the agent's certificate for clients, PostgreSQL's towards it),
  // app an admin; `settings` last.
  AgentOptions Options(const std::map<std::string, std::string>& settings) const {
    AgentOptions options;
    options.pgbouncer_settings = {{"auth_type", "scram-sha-256"},
                                  {"pool_mode", "transaction"},
                                  {"default_pool_size", "1"},
                                  {"admin_users", kAppUser},
                                  {"client_tls_sslmode", "require"},
                                  {"client_tls_cert_file", Certs() + "/controller.pem"},
                                  {"client_tls_key_file", Certs() + "/controller-key.pem"},
                                  {"server_tls_sslmode", "require"}};
    for (const auto& [key, value] : settings) options.pgbouncer_settings[key] = value;
    options.databases_section =
        absl::StrCat(kAppDb, " = host=127.0.0.1 port=", pg_->port(), " dbname=", kAppDb, "\n");
    options.userlist = {{kAppUser, kAppPassword}};
    return options;
  }

  void StartAgent(const std::map<std::string, std::string>& settings = {}) {
    absl::StatusOr<std::unique_ptr<AgentProcess>> agent = AgentProcess::Start(Options(settings));
    ASSERT_TRUE(agent.ok()) << agent.status();
    agent_ = std::move(*agent);
  }

  absl::StatusOr<PgConn> ConnectConsole() const {
    return Connect(absl::StrCat("host=127.0.0.1 port=", agent_->port(),
                                " dbname=pgbouncer user=", kAppUser, " password=", kAppPassword,
                                " sslmode=require connect_timeout=10"));
  }
  absl::StatusOr<PgConn> ConnectApp() const {
    return Connect(absl::StrCat("host=127.0.0.1 port=", agent_->port(), " dbname=", kAppDb,
                                " user=", kAppUser, " password=", kAppPassword,
                                " sslmode=require connect_timeout=10"));
  }

  // A TLS handshake with the agent by `openssl s_client -starttls postgres` plus `args`
  // (-tls1_3, -ciphersuites ..., -groups ..., -cipher ...); it hangs up once it is done.
  Handshake HandshakeWith(const std::vector<std::string>& args) const {
    std::vector<std::string> argv = {"openssl",   "s_client",
                                     "-connect",  absl::StrCat("127.0.0.1:", agent_->port()),
                                     "-starttls", "postgres"};
    argv.insert(argv.end(), args.begin(), args.end());
    Handshake result;
    RunOptions options;
    options.timeout = absl::Seconds(20);
    absl::StatusOr<RunResult> run = RunCommand(argv, options);
    if (!run.ok()) {
      result.output = std::string(run.status().message());
      return result;
    }
    result.output = run->Describe();
    for (absl::string_view line : absl::StrSplit(run->stdout_text, '\n')) {
      line = absl::StripAsciiWhitespace(line);
      // "New, TLSv1.3, Cipher is TLS_AES_256_GCM_SHA384"
      if (absl::ConsumePrefix(&line, "New, ")) {
        std::vector<std::string> parts = absl::StrSplit(line, ", Cipher is ");
        if (parts.size() == 2) {
          result.protocol = parts[0];
          result.cipher = parts[1];
        }
      } else if (absl::ConsumePrefix(&line, "Server Temp Key: ")) {
        result.temp_key = std::string(line);
      }
    }
    return result;
  }

  // The protocol and suite PostgreSQL reports for its backend `pid` ("TLSv1.3 TLS_...").
  static absl::StatusOr<std::string> BackendCipher(const std::string& pid) {
    PGF_ASSIGN_OR_RETURN(
        Rows rows,
        pg_->Exec(absl::StrCat(
            "select version || ' ' || cipher from pg_stat_ssl where ssl and pid = ", pid)));
    if (rows.size() != 1) return absl::NotFoundError(absl::StrCat("no TLS backend ", pid));
    return rows[0][0];
  }

  std::string ShownValue(PGconn* admin, const std::string& key) const {
    absl::StatusOr<Table> config = Show(admin, "SHOW CONFIG");
    if (!config.ok()) return std::string(config.status().message());
    Rows row = config->Where({{"key", key}});
    return row.size() == 1 ? config->At(row[0], "value") : "<no row>";
  }

  static PostgresEnv* pg_;
  static std::string* dir_;
  std::unique_ptr<AgentProcess> agent_;
};

PostgresEnv* TlsCiphersTest::pg_ = nullptr;
std::string* TlsCiphersTest::dir_ = nullptr;

// client_tls13_ciphers is the set of TLS 1.3 suites clients can get; TLS 1.2 is not affected;
// SET replaces it for the next handshakes, and a suite OpenSSL does not know is refused.
TEST_F(TlsCiphersTest, Client13CiphersAreTheSuitesClientsGetAndSetChangesThem) {
  ASSERT_NO_FATAL_FAILURE(StartAgent({{"client_tls13_ciphers", "TLS_CHACHA20_POLY1305_SHA256"}}));
  // s_client offers OpenSSL's three default suites, AES-256 first: the agent allows one.
  Handshake any = HandshakeWith({"-tls1_3"});
  EXPECT_EQ(any.protocol, "TLSv1.3") << any.output;
  EXPECT_EQ(any.cipher, "TLS_CHACHA20_POLY1305_SHA256") << any.output;
  Handshake other = HandshakeWith({"-tls1_3", "-ciphersuites", "TLS_AES_256_GCM_SHA384"});
  EXPECT_FALSE(other.ok()) << other.output;
  Handshake tls12 = HandshakeWith({"-tls1_2"});
  EXPECT_EQ(tls12.protocol, "TLSv1.2") << tls12.output;
  EXPECT_TRUE(tls12.ok()) << tls12.output;

  PGF_ASSERT_OK_AND_ASSIGN(PgConn admin, ConnectConsole());
  std::vector<std::string> notices;
  PQsetNoticeReceiver(admin.get(), &CollectNotice, &notices);
  PGF_ASSERT_OK(
      Command(admin.get(), "SET client_tls13_ciphers = 'TLS_AES_256_GCM_SHA384'").status());
  EXPECT_TRUE(notices.empty()) << notices.front();
  Handshake now = HandshakeWith({"-tls1_3", "-ciphersuites", "TLS_AES_256_GCM_SHA384"});
  EXPECT_EQ(now.cipher, "TLS_AES_256_GCM_SHA384") << now.output;
  Handshake before = HandshakeWith({"-tls1_3", "-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256"});
  EXPECT_FALSE(before.ok()) << before.output;
  EXPECT_EQ(ShownValue(admin.get(), "client_tls13_ciphers"), "TLS_AES_256_GCM_SHA384");

  // A typo: refused outright with the key and the value; the running suites stay.
  absl::StatusOr<std::string> typo =
      Command(admin.get(), "SET client_tls13_ciphers = 'TLS_AES_256_GCM_SHA385'");
  ASSERT_FALSE(typo.ok());
  EXPECT_TRUE(absl::StrContains(typo.status().message(), "client_tls13_ciphers")) << typo.status();
  EXPECT_TRUE(absl::StrContains(typo.status().message(), "'TLS_AES_256_GCM_SHA385'"))
      << typo.status();
  Handshake still = HandshakeWith({"-tls1_3", "-ciphersuites", "TLS_AES_256_GCM_SHA384"});
  EXPECT_EQ(still.cipher, "TLS_AES_256_GCM_SHA384") << still.output;
  EXPECT_EQ(ShownValue(admin.get(), "client_tls13_ciphers"), "TLS_AES_256_GCM_SHA384");
  // libpq (OpenSSL's default suites) still logs in.
  PGF_ASSERT_OK_AND_ASSIGN(PgConn app, ConnectApp());
  PGF_EXPECT_OK(ScalarText(app.get(), "select 1").status());
  PQsetNoticeReceiver(admin.get(), nullptr, nullptr);
}

// client_tls_ecdhcurve names the one group key exchange may use, in TLS 1.3 and TLS 1.2
// (ECDHE); RELOAD changes it, and a RELOAD of an unknown curve is refused and changes nothing.
TEST_F(TlsCiphersTest, EcdhCurveIsTheOnlyKeyExchangeGroupAndReloadChangesIt) {
  ASSERT_NO_FATAL_FAILURE(StartAgent({{"client_tls_ecdhcurve", "secp384r1"}}));
  Handshake x25519 = HandshakeWith({"-tls1_3", "-groups", "X25519"});
  EXPECT_FALSE(x25519.ok()) << x25519.output;
  Handshake p384 = HandshakeWith({"-tls1_3", "-groups", "X25519:secp384r1"});
  EXPECT_EQ(p384.protocol, "TLSv1.3") << p384.output;
  EXPECT_TRUE(absl::StrContains(p384.temp_key, "secp384r1")) << p384.output;
  Handshake tls12 = HandshakeWith({"-tls1_2", "-groups", "X25519:secp384r1"});
  EXPECT_EQ(tls12.protocol, "TLSv1.2") << tls12.output;
  EXPECT_TRUE(absl::StrContains(tls12.temp_key, "secp384r1")) << tls12.output;

  PGF_ASSERT_OK_AND_ASSIGN(PgConn admin, ConnectConsole());
  PGF_ASSERT_OK(agent_->RewriteConfig(Options({{"client_tls_ecdhcurve", "secp385r1"}})));
  absl::StatusOr<std::string> refused = Command(admin.get(), "RELOAD");
  ASSERT_FALSE(refused.ok());
  EXPECT_TRUE(absl::StrContains(refused.status().message(),
                                "key 'client_tls_ecdhcurve': invalid value 'secp385r1'"))
      << refused.status();
  Handshake kept = HandshakeWith({"-tls1_3", "-groups", "X25519"});
  EXPECT_FALSE(kept.ok()) << kept.output;
  EXPECT_EQ(ShownValue(admin.get(), "client_tls_ecdhcurve"), "secp384r1");

  // auto: OpenSSL's default groups, X25519 first.
  PGF_ASSERT_OK(agent_->RewriteConfig(Options({{"client_tls_ecdhcurve", "auto"}})));
  PGF_ASSERT_OK(Command(admin.get(), "RELOAD").status());
  Handshake reloaded = HandshakeWith({"-tls1_3", "-groups", "X25519"});
  EXPECT_TRUE(reloaded.ok()) << reloaded.output;
  EXPECT_TRUE(absl::StartsWith(reloaded.temp_key, "X25519")) << reloaded.output;
}

// client_tls_dheparams: auto gives TLS 1.2 clients that only speak DHE 2048-bit parameters,
// none refuses them, legacy gives 1024 bits once the cipher string's security level allows
// that (Debian's level 2 does not: the agent says so and keeps what runs).
TEST_F(TlsCiphersTest, DheParamsDecideFiniteFieldDhe) {
  ASSERT_NO_FATAL_FAILURE(StartAgent());
  const std::vector<std::string> dhe_only = {"-tls1_2", "-cipher", "DHE-RSA-AES256-GCM-SHA384"};
  Handshake by_default = HandshakeWith(dhe_only);
  EXPECT_EQ(by_default.cipher, "DHE-RSA-AES256-GCM-SHA384") << by_default.output;
  EXPECT_EQ(by_default.temp_key, "DH, 2048 bits") << by_default.output;

  PGF_ASSERT_OK_AND_ASSIGN(PgConn admin, ConnectConsole());
  std::vector<std::string> notices;
  PQsetNoticeReceiver(admin.get(), &CollectNotice, &notices);
  PGF_ASSERT_OK(Command(admin.get(), "SET client_tls_dheparams = none").status());
  Handshake none = HandshakeWith(dhe_only);
  EXPECT_FALSE(none.ok()) << none.output;
  // ECDHE clients are not affected.
  PGF_EXPECT_OK(ConnectApp().status());

  // 1024 bits at security level 2: taken, not in force, and the NOTICE says why.
  PGF_ASSERT_OK(Command(admin.get(), "SET client_tls_dheparams = legacy").status());
  ASSERT_EQ(notices.size(), 1u);
  EXPECT_TRUE(absl::StrContains(notices[0], "client_tls_dheparams 'legacy'")) << notices[0];
  EXPECT_TRUE(absl::StrContains(notices[0], "security level 2")) << notices[0];
  Handshake still_none = HandshakeWith(dhe_only);
  EXPECT_FALSE(still_none.ok()) << still_none.output;
  // The cipher string lowers the level: now legacy works together with it.
  PGF_ASSERT_OK(Command(admin.get(), "SET client_tls_ciphers = 'DEFAULT:@SECLEVEL=1'").status());
  EXPECT_EQ(notices.size(), 1u) << notices.back();
  Handshake legacy = HandshakeWith({"-tls1_2", "-cipher", "DHE-RSA-AES256-GCM-SHA384:@SECLEVEL=1"});
  EXPECT_EQ(legacy.cipher, "DHE-RSA-AES256-GCM-SHA384") << legacy.output;
  EXPECT_EQ(legacy.temp_key, "DH, 1024 bits") << legacy.output;

  // A word PgBouncer does not know is refused outright.
  absl::StatusOr<std::string> bad = Command(admin.get(), "SET client_tls_dheparams = '4096'");
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(
      absl::StrContains(bad.status().message(), "key 'client_tls_dheparams': invalid value '4096'"))
      << bad.status();
  PQsetNoticeReceiver(admin.get(), nullptr, nullptr);
}

// At start, a value that cannot work is an error naming the key, its line and the value.
TEST_F(TlsCiphersTest, StartRefusesValuesThatCannotWork) {
  ASSERT_NO_FATAL_FAILURE(StartAgent());
  struct Case {
    std::map<std::string, std::string> settings;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {{{"client_tls13_ciphers", "TLS_AES_256_GCM"}},
       "key 'client_tls13_ciphers': invalid value 'TLS_AES_256_GCM'"},
      {{{"server_tls13_ciphers", "AES256-SHA"}},
       "key 'server_tls13_ciphers': invalid value 'AES256-SHA'"},
      {{{"client_tls_ecdhcurve", "P-999"}}, "key 'client_tls_ecdhcurve': invalid value 'P-999'"},
      // Valid words, but OpenSSL's security level refuses 1024-bit DH.
      {{{"client_tls_dheparams", "legacy"}}, "client_tls_dheparams 'legacy': 1024-bit DH refused"},
  };
  for (const Case& c : cases) {
    // The running agent's ini, rewritten: a second agent reads it and stops at the config.
    PGF_ASSERT_OK(agent_->RewriteConfig(Options(c.settings)));
    PGF_ASSERT_OK_AND_ASSIGN(RunResult run,
                             RunCommand({AgentBinaryUnderTest(), agent_->ini_path()}));
    EXPECT_FALSE(run.Succeeded()) << run.Describe();
    EXPECT_TRUE(absl::StrContains(run.stderr_text, c.expected)) << run.Describe();
    EXPECT_TRUE(absl::StrContains(run.stderr_text, agent_->ini_path() + ":")) << run.Describe();
  }
}

// server_tls13_ciphers is what the agent offers PostgreSQL: pg_stat_ssl shows the suite of its
// backends; SET replaces the servers as they are released, and the next backend uses the new
// suite.
TEST_F(TlsCiphersTest, Server13CiphersAreWhatPostgresNegotiates) {
  ASSERT_NO_FATAL_FAILURE(StartAgent({{"server_tls13_ciphers", "TLS_CHACHA20_POLY1305_SHA256"}}));
  PGF_ASSERT_OK_AND_ASSIGN(PgConn app, ConnectApp());
  PGF_ASSERT_OK_AND_ASSIGN(std::string pid, ScalarText(app.get(), "select pg_backend_pid()"));
  PGF_ASSERT_OK_AND_ASSIGN(std::string cipher, BackendCipher(pid));
  EXPECT_EQ(cipher, "TLSv1.3 TLS_CHACHA20_POLY1305_SHA256");

  PGF_ASSERT_OK_AND_ASSIGN(PgConn admin, ConnectConsole());
  PGF_ASSERT_OK(
      Command(admin.get(), "SET server_tls13_ciphers = 'TLS_AES_128_GCM_SHA256'").status());
  PGF_ASSERT_OK_AND_ASSIGN(std::string next_pid, ScalarText(app.get(), "select pg_backend_pid()"));
  EXPECT_NE(next_pid, pid) << "the server made under the old suites is replaced";
  PGF_ASSERT_OK_AND_ASSIGN(std::string next_cipher, BackendCipher(next_pid));
  EXPECT_EQ(next_cipher, "TLSv1.3 TLS_AES_128_GCM_SHA256");

  absl::StatusOr<std::string> bad =
      Command(admin.get(), "SET server_tls13_ciphers = 'TLS_AES_128_GCM_SHA256:nonsense'");
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(absl::StrContains(bad.status().message(), "unknown TLS 1.3 cipher suite 'nonsense'"))
      << bad.status();
  PGF_ASSERT_OK_AND_ASSIGN(std::string same_pid, ScalarText(app.get(), "select pg_backend_pid()"));
  EXPECT_EQ(same_pid, next_pid) << "a refused SET closes no server";
  EXPECT_EQ(ShownValue(admin.get(), "server_tls13_ciphers"), "TLS_AES_128_GCM_SHA256");
}

}  // namespace
}  // namespace pgfleet::testutil
