// Credentials and TLS material pushed through a real pgfleet-controller with fleetctl (issue
// 18, part 1, controller side): no key means no secrets (and says how to make one); passwords
// are sent as SCRAM-SHA-256 verifiers, read from stdin, never shown by any API; an ini push
// inherits the files; `config diff` shows files as changed/unchanged fingerprints; TLS files
// are checked at push time (expired certificate, mismatched key, a CA that does not verify),
// naming the file; only admin may change secret material; rotation overlaps open and close;
// the SQLite file and the controller's log hold no secret; a key rotation re-encrypts
// everything at start. No PostgreSQL or agents: what the controller sends agents is covered by
// tests/unit/secrets_api_test.cc.

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sys/stat.h>

#include <fstream>
#include <iterator>
#include <memory>
#include <regex>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/auth_crypto.h"
#include "common/config/auth_file.h"
#include "controller/secrets/secret_box.h"
#include "controller/store/store.h"
#include "gtest/gtest.h"
#include "tests/testutil/fleet_fixture.h"
#include "tests/testutil/process.h"
#include "tests/testutil/status_testing.h"

namespace pgfleet::testutil {
namespace {

constexpr char kIni[] =
    "[databases]\nappdb = host=127.0.0.1 port=5432 dbname=appdb\n"
    "[pgbouncer]\nlisten_port = 6432\nauth_type = scram-sha-256\nauth_file = users.txt\n";
constexpr char kIni2[] =
    "[databases]\nappdb = host=127.0.0.1 port=5432 dbname=appdb\n"
    "[pgbouncer]\nlisten_port = 6432\nauth_type = scram-sha-256\nauth_file = users.txt\n"
    "default_pool_size = 40\n";
// Distinctive, so a leak anywhere is found by a substring search.
constexpr char kPassword[] = "Xylophone-Pass-4729";
constexpr char kNewPassword[] = "Quokka-Pass-8316";

struct KeyPair {
  std::string cert_pem;
  std::string key_pem;
};

std::string BioText(BIO* bio) {
  char* data = nullptr;
  const long length = BIO_get_mem_data(bio, &data);
  return std::string(data, length > 0 ? static_cast<size_t>(length) : 0);
}

// A self-signed EC certificate valid from now + not_before_s to now + not_after_s.
KeyPair SelfSigned(const std::string& cn, long not_before_s, long not_after_s) {
  EVP_PKEY* key = EVP_EC_gen("P-256");
  X509* cert = X509_new();
  X509_set_version(cert, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
  X509_gmtime_adj(X509_getm_notBefore(cert), not_before_s);
  X509_gmtime_adj(X509_getm_notAfter(cert), not_after_s);
  X509_set_pubkey(cert, key);
  X509_NAME* name = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1, 0);
  X509_set_issuer_name(cert, name);
  X509_sign(cert, key, EVP_sha256());
  KeyPair pair;
  BIO* cert_bio = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(cert_bio, cert);
  pair.cert_pem = BioText(cert_bio);
  BIO_free(cert_bio);
  BIO* key_bio = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(key_bio, key, nullptr, nullptr, 0, nullptr, nullptr);
  pair.key_pem = BioText(key_bio);
  BIO_free(key_bio);
  X509_free(cert);
  EVP_PKEY_free(key);
  return pair;
}

uint64_t VersionIn(const std::string& output) {
  std::smatch match;
  uint64_t version = 0;
  if (std::regex_search(output, match, std::regex("version v([0-9]+)"))) {
    (void)absl::SimpleAtoi(match[1].str(), &version);
  }
  return version;
}

class SecretsPushTest : public FleetFixture {
 protected:
  SecretsPushTest() : FleetFixture("secrets-push") {}

  std::string WriteKey(const std::string& name, char fill, mode_t mode = 0600) {
    const std::string path = dir_ + "/" + name;
    EXPECT_TRUE(WriteFile(path, absl::BytesToHexString(std::string(32, fill)) + "\n").ok());
    chmod(path.c_str(), mode);
    return path;
  }
  std::string WritePem(const std::string& name, const std::string& pem) {
    const std::string path = dir_ + "/" + name;
    EXPECT_TRUE(WriteFile(path, pem).ok());
    return path;
  }
  ControllerOptions WithKey(const std::string& key, const std::string& previous = "",
                            const std::string& db = "") {
    ControllerOptions options;
    options.db_path = db;
    options.extra_args.push_back("--secrets-key-file=" + key);
    if (!previous.empty()) options.extra_args.push_back("--secrets-previous-key-file=" + previous);
    return options;
  }
  // fleetctl with `input` on its stdin (how a password reaches it when not at a terminal).
  FleetctlResult CtlWithStdin(const std::string& token, const std::vector<std::string>& args,
                              const std::string& input) {
    std::vector<std::string> argv = {"/bin/sh",
                                     "-c",
                                     "printf '%s\\n' \"$PGF_TEST_INPUT\" | \"$@\"",
                                     "sh",
                                     PGFLEET_FLEETCTL_BINARY,
                                     "--controller=" + controller_->address(),
                                     "--token=" + token};
    argv.insert(argv.end(), args.begin(), args.end());
    RunOptions options;
    options.env = {{"PGF_TEST_INPUT", input},
                   {"HOME", dir_},
                   {"PGFLEET_TOKEN", ""},
                   {"PGFLEET_CONTROLLER", ""}};
    absl::StatusOr<RunResult> run = RunCommand(argv, options);
    FleetctlResult result;
    EXPECT_TRUE(run.ok()) << run.status();
    if (!run.ok()) return result;
    result.exit_code = run->ExitCode().value_or(-1);
    result.stdout_text = run->stdout_text;
    result.stderr_text = run->stderr_text;
    result.command = absl::StrCat("fleetctl ", absl::StrJoin(args, " "), " <<< (stdin)");
    return result;
  }
  std::string MintToken(const std::string& role) {
    FleetctlResult made = Ctl({"token", "create", "--role", role, "--name", "secrets-" + role});
    EXPECT_EQ(made.exit_code, 0) << made.Describe();
    return std::string(absl::StripAsciiWhitespace(made.stdout_text));
  }
  // The version's decrypted files and overlaps, read from the SQLite file with the key (what the
  // controller sends agents).
  controller::ConfigVersionRow Decrypted(const std::string& key_path, uint64_t version) {
    absl::StatusOr<std::unique_ptr<controller::Store>> store =
        controller::OpenSqliteStore(controller_->db_path());
    EXPECT_TRUE(store.ok()) << store.status();
    if (!store.ok()) return {};
    absl::StatusOr<std::shared_ptr<const controller::secrets::Keyring>> keyring =
        controller::secrets::LoadKeyring(key_path, "");
    EXPECT_TRUE(keyring.ok()) << keyring.status();
    (*store)->SetSecretsKeyring(*keyring);
    absl::StatusOr<controller::ConfigVersionRow> row = (*store)->GetConfigVersion(version);
    EXPECT_TRUE(row.ok()) << row.status();
    return row.ok() ? *row : controller::ConfigVersionRow{};
  }
  std::string DbBytes() {
    std::string bytes;
    for (const char* suffix : {"", "-wal", "-shm"}) {
      std::ifstream in(controller_->db_path() + suffix, std::ios::binary);
      bytes.append(std::istreambuf_iterator<char>(in), {});
    }
    return bytes;
  }
};

TEST_F(SecretsPushTest, WithoutKeySecretsAreRefusedWithHowToMakeOne) {
  StartController();
  const std::string ini = WritePem("v1.ini", kIni);
  FleetctlResult pushed = Ctl({"config", "push", "--env", "prod", "-f", ini});
  ASSERT_EQ(pushed.exit_code, 0) << pushed.Describe();
  FleetctlResult refused =
      CtlWithStdin(token_, {"secrets", "set", "--env", "prod", "--user", "app"}, kPassword);
  EXPECT_EQ(refused.exit_code, 1) << refused.Describe();
  EXPECT_TRUE(absl::StrContains(refused.stderr_text, "head -c 32 /dev/urandom | xxd -p -c 64"))
      << refused.Describe();
  EXPECT_TRUE(absl::StrContains(refused.stderr_text, "--secrets-key-file")) << refused.Describe();
  FleetctlResult list = Ctl({"config", "list", "--env", "prod"});
  EXPECT_EQ(list.exit_code, 0);
  EXPECT_FALSE(absl::StrContains(list.stdout_text, "v2")) << "a refused change made a version";
}

TEST_F(SecretsPushTest, KeyFileReadableByOthersIsRefusedAtStart) {
  ControllerOptions options = WithKey(WriteKey("loose.key", 'k', 0644));
  options.bootstrap_token = token_;
  options.start_timeout = absl::Seconds(5);
  absl::StatusOr<std::unique_ptr<ControllerProcess>> started =
      ControllerProcess::Start(std::move(options));
  ASSERT_FALSE(started.ok()) << "the controller started with a world-readable key";
  EXPECT_TRUE(absl::StrContains(started.status().message(), "chmod 600") ||
              absl::StrContains(started.status().message(), "group or others"))
      << started.status();
}

TEST_F(SecretsPushTest, PasswordsTlsFilesRotationsAndRedaction) {
  const std::string key = WriteKey("secrets.key", 'k');
  StartController(WithKey(key));
  const std::string operator_token = MintToken("operator");
  const std::string viewer_token = MintToken("viewer");

  FleetctlResult pushed = Ctl({"config", "push", "--env", "prod", "-f", WritePem("1.ini", kIni)});
  ASSERT_EQ(pushed.exit_code, 0) << pushed.Describe();
  const uint64_t v1 = VersionIn(pushed.stdout_text);

  // A password: from stdin, sent as a SCRAM-SHA-256 verifier.
  FleetctlResult set =
      CtlWithStdin(token_, {"secrets", "set", "--env", "prod", "--user", "app"}, kPassword);
  ASSERT_EQ(set.exit_code, 0) << set.Describe();
  const uint64_t v2 = VersionIn(set.stdout_text);
  ASSERT_GT(v2, v1) << set.Describe();
  EXPECT_TRUE(absl::StrContains(set.stdout_text, "fleetctl rollout start --env prod --version v"))
      << set.Describe();
  {
    controller::ConfigVersionRow row = Decrypted(key, v2);
    EXPECT_EQ(row.ini_text, kIni);
    ASSERT_EQ(row.files.size(), 1u);
    absl::StatusOr<config::AuthFile> entries = config::ParseAuthFile(row.files[0].content, "x");
    ASSERT_TRUE(entries.ok()) << entries.status();
    ASSERT_EQ(entries->count("app"), 1u);
    const config::UserSecret& app = entries->at("app");
    ASSERT_EQ(app.kind, config::SecretKind::kScramSha256) << "stored as plaintext";
    absl::StatusOr<crypto::ScramKeys> keys = crypto::ParseScramSecret(app.secret);
    ASSERT_TRUE(keys.ok());
    EXPECT_EQ(crypto::ScramKeysFromPassword(kPassword, keys->salt, keys->iterations).stored_key,
              keys->stored_key)
        << "the verifier is not of the password given on stdin";
  }

  // Only admin changes secret material; viewers see fingerprints.
  FleetctlResult as_operator = CtlWithStdin(
      operator_token, {"secrets", "set", "--env", "prod", "--user", "app"}, kNewPassword);
  EXPECT_EQ(as_operator.exit_code, 4) << as_operator.Describe();
  EXPECT_TRUE(absl::StrContains(as_operator.stderr_text, "needs admin")) << as_operator.Describe();
  FleetctlResult end_as_operator =
      CtlAs(operator_token, {"secrets", "rotate", "end", "--env", "prod", "--user", "app"});
  EXPECT_EQ(end_as_operator.exit_code, 4) << end_as_operator.Describe();
  FleetctlResult listed = CtlAs(viewer_token, {"secrets", "list", "--env", "prod"});
  ASSERT_EQ(listed.exit_code, 0) << listed.Describe();
  EXPECT_TRUE(absl::StrContains(listed.stdout_text, "auth_file")) << listed.Describe();
  EXPECT_TRUE(absl::StrContains(listed.stdout_text, "auth_file users: app")) << listed.Describe();

  // An operator's ini push inherits the files; diff shows them by fingerprint.
  FleetctlResult ini_push =
      CtlAs(operator_token, {"config", "push", "--env", "prod", "-f", WritePem("2.ini", kIni2)});
  ASSERT_EQ(ini_push.exit_code, 0) << ini_push.Describe();
  const uint64_t v3 = VersionIn(ini_push.stdout_text);
  EXPECT_EQ(Decrypted(key, v3).files.size(), 1u) << "the ini push dropped the auth_file";
  FleetctlResult diff_added = Ctl({"config", "diff", absl::StrCat("v", v1), absl::StrCat("v", v2)});
  ASSERT_EQ(diff_added.exit_code, 0) << diff_added.Describe();
  EXPECT_TRUE(absl::StrContains(diff_added.stdout_text, "file auth_file: added (fp "))
      << diff_added.Describe();
  FleetctlResult diff_same = Ctl({"config", "diff", absl::StrCat("v", v2), absl::StrCat("v", v3)});
  EXPECT_TRUE(absl::StrContains(diff_same.stdout_text, "file auth_file: unchanged (fp "))
      << diff_same.Describe();
  EXPECT_TRUE(absl::StrContains(diff_same.stdout_text, "+default_pool_size = 40"))
      << diff_same.Describe();

  // Rotation: a new password with the old one accepted for a while, then closed.
  FleetctlResult begin = CtlWithStdin(
      token_, {"secrets", "rotate", "begin", "--env", "prod", "--user", "app", "--overlap", "30m"},
      kNewPassword);
  ASSERT_EQ(begin.exit_code, 0) << begin.Describe();
  const uint64_t v4 = VersionIn(begin.stdout_text);
  EXPECT_TRUE(absl::StrContains(begin.stdout_text, "rotation of app")) << begin.Describe();
  {
    controller::ConfigVersionRow row = Decrypted(key, v4);
    ASSERT_EQ(row.credential_overlaps.size(), 1u);
    EXPECT_EQ(row.credential_overlaps[0].user, "app");
    // The previous secret is the verifier v3 had.
    absl::StatusOr<config::AuthFile> before =
        config::ParseAuthFile(Decrypted(key, v3).files[0].content, "x");
    ASSERT_TRUE(before.ok());
    EXPECT_EQ(row.credential_overlaps[0].previous_secret, before->at("app").secret);
  }
  FleetctlResult diff_rotation =
      Ctl({"config", "diff", absl::StrCat("v", v3), absl::StrCat("v", v4)});
  EXPECT_TRUE(absl::StrContains(diff_rotation.stdout_text, "file auth_file: changed (fp "))
      << diff_rotation.Describe();
  EXPECT_TRUE(absl::StrContains(diff_rotation.stdout_text, "rotation of app: opened"))
      << diff_rotation.Describe();
  FleetctlResult end = Ctl({"secrets", "rotate", "end", "--env", "prod", "--user", "app"});
  ASSERT_EQ(end.exit_code, 0) << end.Describe();
  EXPECT_TRUE(Decrypted(key, VersionIn(end.stdout_text)).credential_overlaps.empty());

  // TLS files, checked at push time and named in the error.
  const KeyPair expired = SelfSigned("expired.example", -10 * 86400, -86400);
  FleetctlResult refused_expired = Ctl({"secrets", "set", "--env", "prod", "--tls-cert",
                                        WritePem("expired.pem", expired.cert_pem), "--tls-key",
                                        WritePem("expired-key.pem", expired.key_pem)});
  EXPECT_EQ(refused_expired.exit_code, 2) << refused_expired.Describe();
  EXPECT_TRUE(absl::StrContains(refused_expired.stderr_text, "client_tls_cert_file"))
      << refused_expired.Describe();
  EXPECT_TRUE(absl::StrContains(refused_expired.stderr_text, "expired"))
      << refused_expired.Describe();
  const KeyPair good = SelfSigned("db.example", -60, 365 * 86400);
  const KeyPair other = SelfSigned("other.example", -60, 365 * 86400);
  FleetctlResult refused_mismatch = Ctl({"secrets", "set", "--env", "prod", "--server",
                                         "--tls-cert", WritePem("good.pem", good.cert_pem),
                                         "--tls-key", WritePem("other-key.pem", other.key_pem)});
  EXPECT_EQ(refused_mismatch.exit_code, 2) << refused_mismatch.Describe();
  EXPECT_TRUE(absl::StrContains(refused_mismatch.stderr_text, "server_tls_key_file"))
      << refused_mismatch.Describe();
  EXPECT_TRUE(absl::StrContains(refused_mismatch.stderr_text, "does not match"))
      << refused_mismatch.Describe();
  EXPECT_FALSE(absl::StrContains(refused_mismatch.stderr_text, "PRIVATE KEY"))
      << "the key file was echoed";
  FleetctlResult refused_ca =
      Ctl({"secrets", "set", "--env", "prod", "--tls-cert", WritePem("good2.pem", good.cert_pem),
           "--tls-key", WritePem("good-key.pem", good.key_pem), "--tls-ca-file",
           WritePem("other-ca.pem", other.cert_pem)});
  EXPECT_EQ(refused_ca.exit_code, 2) << refused_ca.Describe();
  EXPECT_TRUE(absl::StrContains(refused_ca.stderr_text, "client_tls_ca_file"))
      << refused_ca.Describe();
  FleetctlResult tls_ok = Ctl({"-o", "json", "secrets", "set", "--env", "prod", "--tls-cert",
                               dir_ + "/good2.pem", "--tls-key", dir_ + "/good-key.pem",
                               "--tls-ca-file", WritePem("good-ca.pem", good.cert_pem)});
  ASSERT_EQ(tls_ok.exit_code, 0) << tls_ok.Describe();
  EXPECT_TRUE(absl::StrContains(tls_ok.stdout_text, "CN=db.example")) << tls_ok.Describe();
  EXPECT_TRUE(absl::StrContains(tls_ok.stdout_text, "client_tls_key_file")) << tls_ok.Describe();
  EXPECT_TRUE(absl::StrContains(tls_ok.stdout_text, "auth_file")) << "TLS change dropped auth_file";

  // Nothing secret in any API answer, the controller's log, or the SQLite file.
  std::vector<std::string> outputs;
  for (const FleetctlResult& result :
       {set, listed, ini_push, diff_added, diff_same, begin, diff_rotation, end, tls_ok}) {
    outputs.push_back(result.stdout_text + result.stderr_text);
  }
  for (uint64_t version : {v1, v2, v3, v4}) {
    FleetctlResult shown = Ctl({"-o", "json", "config", "show", absl::StrCat("v", version)});
    EXPECT_EQ(shown.exit_code, 0) << shown.Describe();
    outputs.push_back(shown.stdout_text);
  }
  FleetctlResult list_json = Ctl({"-o", "json", "config", "list", "--env", "prod"});
  outputs.push_back(list_json.stdout_text);
  const std::string log = controller_->LogContents();
  const std::string db = DbBytes();
  const std::string key_hex = absl::BytesToHexString(std::string(32, 'k'));
  for (const std::string& secret :
       {std::string(kPassword), std::string(kNewPassword), std::string("SCRAM-SHA-256$"),
        std::string("BEGIN PRIVATE KEY"), good.key_pem.substr(40, 40), key_hex}) {
    for (const std::string& output : outputs) {
      EXPECT_FALSE(absl::StrContains(output, secret)) << "API output shows " << secret << ":\n"
                                                      << output;
    }
    EXPECT_FALSE(absl::StrContains(log, secret)) << "controller log holds " << secret;
    EXPECT_FALSE(absl::StrContains(db, secret)) << "the SQLite file holds " << secret;
  }
}

TEST_F(SecretsPushTest, KeyRotationReencryptsEverythingAtStart) {
  const std::string old_key = WriteKey("old.key", 'o');
  const std::string new_key = WriteKey("new.key", 'n');
  ControllerProcess* first = nullptr;
  StartController(WithKey(old_key), &first);
  ASSERT_EQ(Ctl({"config", "push", "--env", "prod", "-f", WritePem("1.ini", kIni)}).exit_code, 0);
  FleetctlResult set =
      CtlWithStdin(token_, {"secrets", "set", "--env", "prod", "--user", "app"}, kPassword);
  ASSERT_EQ(set.exit_code, 0) << set.Describe();
  const uint64_t version = VersionIn(set.stdout_text);
  const std::string db = first->db_path();
  PGF_ASSERT_OK(first->Stop());

  // Only the new key: the controller starts, but cannot read (or send) the old version.
  ControllerProcess* second = nullptr;
  StartController(WithKey(new_key, "", db), &second);
  ctl_address_ = second->address();
  FleetctlResult shown = Ctl({"-o", "json", "config", "show", absl::StrCat("v", version)});
  EXPECT_TRUE(absl::StrContains(shown.stdout_text, "secrets-previous-key-file"))
      << shown.Describe();
  PGF_ASSERT_OK(second->Stop());

  // The new key with the old one as previous: everything is re-encrypted, and said so.
  ControllerProcess* third = nullptr;
  StartController(WithKey(new_key, old_key, db), &third);
  EXPECT_TRUE(absl::StrContains(third->CurrentRunLog(), "re-encrypted 1 value(s)"))
      << third->CurrentRunLog();
  PGF_ASSERT_OK(third->Stop());

  // From now on the new key alone reads it.
  ControllerProcess* fourth = nullptr;
  StartController(WithKey(new_key, "", db), &fourth);
  ctl_address_ = fourth->address();
  shown = Ctl({"-o", "json", "config", "show", absl::StrCat("v", version)});
  ASSERT_EQ(shown.exit_code, 0) << shown.Describe();
  EXPECT_TRUE(absl::StrContains(shown.stdout_text, R"("secretsError": "")")) << shown.Describe();
  EXPECT_TRUE(absl::StrContains(shown.stdout_text, "auth_file")) << shown.Describe();
}

}  // namespace
}  // namespace pgfleet::testutil
