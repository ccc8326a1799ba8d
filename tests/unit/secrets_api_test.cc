// Config versions carrying credentials and TLS files (issue 18, part 1), controller side:
// FleetApi::PushConfig with files (admin only, inherited by ini pushes), what the controller
// sends an agent in DesiredConfig (recorded from a fake stream), the API's redaction, and the
// SecretsService calls that derive a new version from the newest one.
#include "controller/api/secrets_api.h"

#include <stdlib.h>

#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/auth_crypto.h"
#include "controller/api/fleet_api.h"
#include "controller/registry/agent_registry.h"
#include "controller/secrets/secret_box.h"
#include "controller/store/store.h"
#include "gtest/gtest.h"
#include "tests/testutil/status_testing.h"

namespace pgfleet::controller {
namespace {

constexpr char kIni[] =
    "[databases]\nappdb = host=127.0.0.1 port=5432 dbname=appdb\n"
    "[pgbouncer]\nlisten_port = 6432\nauth_type = scram-sha-256\nauth_file = users.txt\n";
constexpr char kIni2[] =
    "[databases]\nappdb = host=127.0.0.1 port=5432 dbname=appdb\n"
    "[pgbouncer]\nlisten_port = 6432\nauth_type = scram-sha-256\nauth_file = users.txt\n"
    "default_pool_size = 40\n";
constexpr char kAuthFile[] = "\"app\" \"Plaintext-Sekret-1\"\n";

const Caller kOperator{"olga", Role::kOperator};
const Caller kAdmin{"root", Role::kAdmin};
const Caller kViewer{"victor", Role::kViewer};

// Records what the controller writes on an agent's stream.
class RecordingAgent {
 public:
  RecordingAgent(const std::string& id, const std::string& env)
      : session_(std::make_shared<AgentSession>(
            id, env,
            [this](const pgfleet::v1::ControllerMessage& message) {
              std::lock_guard<std::mutex> lock(mu_);
              if (message.has_desired_config()) configs_.push_back(message.desired_config());
              return true;
            },
            [] {})) {}
  std::vector<pgfleet::v1::DesiredConfig> Configs() {
    std::lock_guard<std::mutex> lock(mu_);
    return configs_;
  }
  const std::shared_ptr<AgentSession>& session() const { return session_; }

 private:
  std::mutex mu_;
  std::vector<pgfleet::v1::DesiredConfig> configs_;
  std::shared_ptr<AgentSession> session_;  // Last: its writer uses the members above.
};

std::shared_ptr<const secrets::Keyring> KeyringOf(char fill) {
  absl::StatusOr<secrets::SecretKey> key = secrets::SecretKey::FromBytes(std::string(32, fill));
  EXPECT_TRUE(key.ok());
  return std::make_shared<secrets::Keyring>(*key);
}

class SecretsApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* tmp = getenv("TEST_TMPDIR");
    std::string pattern = absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/pgfleet_secapi_XXXXXX");
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
    absl::StatusOr<std::unique_ptr<Store>> store =
        OpenSqliteStore((std::filesystem::path(dir_) / "fleet.db").string());
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(store).value();
    store_->SetSecretsKeyring(KeyringOf('k'));
    fleet_ = std::make_unique<FleetApi>(*store_, registry_, clock_);
    secrets_ = std::make_unique<SecretsApi>(*store_, clock_);
  }
  void TearDown() override {
    secrets_.reset();
    fleet_.reset();
    agents_.clear();
    store_.reset();
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  absl::StatusOr<pgfleet::v1::ConfigVersion> Push(const std::string& ini, const Caller& caller,
                                                  const std::string& auth_file = "",
                                                  const std::string& previous_secret = "") {
    pgfleet::v1::PushConfigRequest request;
    request.set_environment("prod");
    request.set_ini_text(ini);
    if (!auth_file.empty()) {
      pgfleet::v1::ConfigFile* file = request.add_files();
      file->set_key("auth_file");
      file->set_content(auth_file);
      file->set_sha256(Sha256Hex(auth_file));
    }
    if (!previous_secret.empty()) {
      pgfleet::v1::CredentialOverlap* overlap = request.add_credential_overlaps();
      overlap->set_user("app");
      overlap->set_previous_secret(previous_secret);
      overlap->set_expires_unix_ms(UnixMillis(clock_.Now()) + 60000);
    }
    return fleet_->PushConfig(caller, request);
  }
  RecordingAgent* Connect(const std::string& id) {
    pgfleet::v1::AgentHello hello;
    hello.set_agent_id(id);
    hello.set_environment("prod");
    hello.set_agent_version("test");
    EXPECT_TRUE(fleet_->OnAgentHello(hello).ok());
    agents_.push_back(std::make_unique<RecordingAgent>(id, "prod"));
    registry_.Register(agents_.back()->session());
    return agents_.back().get();
  }
  void SetDesired(uint64_t version) {
    pgfleet::v1::SetDesiredConfigRequest request;
    request.set_environment("prod");
    request.set_version(version);
    PGF_ASSERT_OK(fleet_->SetDesiredConfig(kOperator, request));
  }

  std::string dir_;
  AgentRegistry registry_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<FleetApi> fleet_;
  std::unique_ptr<SecretsApi> secrets_;
  SystemClock clock_;
  std::vector<std::unique_ptr<RecordingAgent>> agents_;
};

TEST_F(SecretsApiTest, DesiredConfigCarriesFilesAndOverlaps) {
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ConfigVersion v1,
                           Push(kIni, kAdmin, kAuthFile, "Old-Sekret-0"));
  RecordingAgent* agent = Connect("a1");
  SetDesired(v1.version());
  std::vector<pgfleet::v1::DesiredConfig> configs = agent->Configs();
  ASSERT_EQ(configs.size(), 1u);
  const pgfleet::v1::DesiredConfig& sent = configs[0];
  EXPECT_EQ(sent.version(), v1.version());
  EXPECT_EQ(sent.ini_text(), kIni);
  EXPECT_EQ(sent.sha256(), Sha256Hex(kIni)) << "DesiredConfig.sha256 is the ini's own";
  ASSERT_EQ(sent.files_size(), 1);
  EXPECT_EQ(sent.files(0).key(), "auth_file");
  EXPECT_EQ(sent.files(0).content(), kAuthFile);
  EXPECT_EQ(sent.files(0).sha256(), Sha256Hex(kAuthFile));
  ASSERT_EQ(sent.credential_overlaps_size(), 1);
  EXPECT_EQ(sent.credential_overlaps(0).user(), "app");
  EXPECT_EQ(sent.credential_overlaps(0).previous_secret(), "Old-Sekret-0");
  EXPECT_GT(sent.credential_overlaps(0).expires_unix_ms(), UnixMillis(clock_.Now()));

  // A reconnecting agent gets the same (Reconcile reads the version back from the store).
  RecordingAgent* again = Connect("a2");
  fleet_->Reconcile(*again->session());
  ASSERT_EQ(again->Configs().size(), 1u);
  EXPECT_EQ(again->Configs()[0].files(0).content(), kAuthFile);
}

TEST_F(SecretsApiTest, IniPushInheritsFilesAndOverlaps) {
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ConfigVersion v1,
                           Push(kIni, kAdmin, kAuthFile, "Old-Sekret-0"));
  // An operator pushes a new ini: allowed, and the credentials come along unchanged.
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ConfigVersion v2, Push(kIni2, kOperator));
  EXPECT_NE(v2.version(), v1.version());
  ASSERT_EQ(v2.files_size(), 1);
  EXPECT_EQ(v2.files(0).fingerprint(), v1.files(0).fingerprint());
  ASSERT_EQ(v2.credential_overlaps_size(), 1);
  RecordingAgent* agent = Connect("a1");
  SetDesired(v2.version());
  ASSERT_EQ(agent->Configs().size(), 1u);
  EXPECT_EQ(agent->Configs()[0].ini_text(), kIni2);
  ASSERT_EQ(agent->Configs()[0].files_size(), 1);
  EXPECT_EQ(agent->Configs()[0].files(0).content(), kAuthFile);
  EXPECT_EQ(agent->Configs()[0].credential_overlaps(0).previous_secret(), "Old-Sekret-0");
}

TEST_F(SecretsApiTest, OnlyAdminPushesSecretMaterial) {
  absl::StatusOr<pgfleet::v1::ConfigVersion> refused = Push(kIni, kOperator, kAuthFile);
  EXPECT_TRUE(absl::IsPermissionDenied(refused.status())) << refused.status();
  pgfleet::v1::SetUserSecretRequest set;
  set.set_environment("prod");
  set.set_user("app");
  set.set_secret("x");
  set.set_plaintext(true);
  EXPECT_TRUE(absl::IsPermissionDenied(secrets_->SetUserSecret(kOperator, set).status()));
  pgfleet::v1::ListSecretsRequest list;
  list.set_environment("prod");
  PGF_EXPECT_OK(secrets_->ListSecrets(kViewer, list));
}

TEST_F(SecretsApiTest, WithoutKeyFilesAreRefusedWithHowToMakeOne) {
  store_->SetSecretsKeyring(std::make_shared<secrets::Keyring>());
  absl::StatusOr<pgfleet::v1::ConfigVersion> refused = Push(kIni, kAdmin, kAuthFile);
  ASSERT_TRUE(absl::IsFailedPrecondition(refused.status())) << refused.status();
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "head -c 32 /dev/urandom"));
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "chmod 600"));
  PGF_EXPECT_OK(Push(kIni, kOperator));  // Plain inis still work.
}

TEST_F(SecretsApiTest, UndecryptableVersionIsNotSent) {
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ConfigVersion v1, Push(kIni, kAdmin, kAuthFile));
  store_->SetSecretsKeyring(KeyringOf('x'));  // Restarted with another key.
  RecordingAgent* agent = Connect("a1");
  SetDesired(v1.version());
  EXPECT_TRUE(agent->Configs().empty()) << "sent a version without its files";
  pgfleet::v1::GetConfigRequest get;
  get.set_version(v1.version());
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ConfigVersion shown, fleet_->GetConfig(kViewer, get));
  EXPECT_FALSE(shown.secrets_error().empty());
  // And an ini push cannot silently drop files it cannot carry over.
  EXPECT_TRUE(absl::IsFailedPrecondition(Push(kIni2, kOperator).status()));
}

TEST_F(SecretsApiTest, ApiShowsFingerprintsNeverContents) {
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ConfigVersion pushed,
                           Push(kIni, kAdmin, kAuthFile, "Old-Sekret-0"));
  pgfleet::v1::GetConfigRequest get;
  get.set_version(pushed.version());
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ConfigVersion shown, fleet_->GetConfig(kAdmin, get));
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ListConfigsResponse listed,
                           fleet_->ListConfigs(kAdmin, {}));
  pgfleet::v1::ListSecretsRequest list;
  list.set_environment("prod");
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ListSecretsResponse secrets,
                           secrets_->ListSecrets(kAdmin, list));
  ASSERT_EQ(shown.files_size(), 1);
  // Keyed (the controller's key), not the plain sha256's prefix.
  EXPECT_EQ(shown.files(0).fingerprint(), KeyringOf('k')->Fingerprint(kAuthFile)->substr(0, 12));
  EXPECT_EQ(shown.files(0).size(), static_cast<int64_t>(strlen(kAuthFile)));
  EXPECT_EQ(shown.credential_overlaps(0).user(), "app");
  ASSERT_EQ(secrets.auth_file_users_size(), 1);
  EXPECT_EQ(secrets.auth_file_users(0), "app");
  for (const google::protobuf::Message* message :
       std::initializer_list<const google::protobuf::Message*>{&pushed, &shown, &listed,
                                                               &secrets}) {
    const std::string bytes = message->SerializeAsString();
    EXPECT_FALSE(absl::StrContains(bytes, "Plaintext-Sekret")) << message->DebugString();
    EXPECT_FALSE(absl::StrContains(bytes, "Old-Sekret")) << message->DebugString();
  }
  PGF_ASSERT_OK_AND_ASSIGN(std::vector<AuditEntry> audit, store_->ListAudit(0));
  for (const AuditEntry& entry : audit) {
    EXPECT_FALSE(absl::StrContains(entry.details, "Sekret")) << entry.details;
  }
}

TEST_F(SecretsApiTest, SetUserSecretStoresVerifiersAndRefusesPasswordsWithoutPlaintext) {
  PGF_ASSERT_OK(Push(kIni, kOperator));
  pgfleet::v1::SetUserSecretRequest set;
  set.set_environment("prod");
  set.set_user("app");
  set.set_secret("Hunter2-Password");
  absl::StatusOr<pgfleet::v1::SecretsChange> refused = secrets_->SetUserSecret(kAdmin, set);
  ASSERT_TRUE(absl::IsInvalidArgument(refused.status())) << refused.status();
  EXPECT_FALSE(absl::StrContains(refused.status().message(), "Hunter2")) << "echoed the secret";

  const std::string verifier = crypto::FormatScramSecret(
      crypto::ScramKeysFromPassword("Hunter2-Password", "0123456789abcdef", 4096));
  set.set_secret(verifier);
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::SecretsChange changed,
                           secrets_->SetUserSecret(kAdmin, set));
  ASSERT_EQ(changed.version().files_size(), 1);
  PGF_ASSERT_OK_AND_ASSIGN(ConfigVersionRow row,
                           store_->GetConfigVersion(changed.version().version()));
  EXPECT_EQ(row.ini_text, kIni) << "the ini is carried over";
  EXPECT_EQ(row.files[0].content, absl::StrCat("\"app\" \"", verifier, "\"\n"));

  // A second user is added beside the first.
  set.set_user("reporting");
  set.set_secret("md5" + std::string(32, 'a'));
  PGF_ASSERT_OK_AND_ASSIGN(changed, secrets_->SetUserSecret(kAdmin, set));
  PGF_ASSERT_OK_AND_ASSIGN(row, store_->GetConfigVersion(changed.version().version()));
  EXPECT_TRUE(absl::StrContains(row.files[0].content, "\"app\""));
  EXPECT_TRUE(absl::StrContains(row.files[0].content, "\"reporting\""));
}

TEST_F(SecretsApiTest, RotationOpensAndClosesAnOverlap) {
  PGF_ASSERT_OK(Push(kIni, kAdmin, "\"app\" \"old-password\"\n"));
  pgfleet::v1::BeginRotationRequest begin;
  begin.set_environment("prod");
  begin.set_user("app");
  begin.set_new_secret("new-password");
  begin.set_plaintext(true);
  begin.set_overlap_seconds(1800);
  const int64_t before = UnixMillis(clock_.Now());
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::SecretsChange began,
                           secrets_->BeginRotation(kAdmin, begin));
  ASSERT_EQ(began.version().credential_overlaps_size(), 1);
  EXPECT_GE(began.version().credential_overlaps(0).expires_unix_ms(), before + 1800 * 1000);
  PGF_ASSERT_OK_AND_ASSIGN(ConfigVersionRow row,
                           store_->GetConfigVersion(began.version().version()));
  EXPECT_EQ(row.files[0].content, "\"app\" \"new-password\"\n");
  EXPECT_EQ(row.credential_overlaps[0].previous_secret, "old-password");
  // One rotation at a time per user.
  begin.set_new_secret("newer-password");
  EXPECT_TRUE(absl::IsFailedPrecondition(secrets_->BeginRotation(kAdmin, begin).status()));

  pgfleet::v1::EndRotationRequest end;
  end.set_environment("prod");
  end.set_user("app");
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::SecretsChange ended, secrets_->EndRotation(kAdmin, end));
  EXPECT_EQ(ended.version().credential_overlaps_size(), 0);
  EXPECT_EQ(ended.version().files(0).fingerprint(),
            KeyringOf('k')->Fingerprint("\"app\" \"new-password\"\n")->substr(0, 12));
  EXPECT_TRUE(absl::IsNotFound(secrets_->EndRotation(kAdmin, end).status()));

  // Rotating a user with no entry: nothing to rotate from.
  begin.set_user("nobody");
  EXPECT_TRUE(absl::IsFailedPrecondition(secrets_->BeginRotation(kAdmin, begin).status()));
}

// Passwords written in the ini itself (PgBouncer's `password=` in [databases]): shown redacted
// by every API call, sent in full to agents, and kept when the redacted text is pushed back.
TEST_F(SecretsApiTest, IniPasswordsAreRedactedInTheApiAndKeptOnARoundTrip) {
  const std::string ini =
      "[databases]\napp = host=127.0.0.1 dbname=app user=app password='Ini Pw-9'\n"
      "[pgbouncer]\nlisten_port = 6432\nauth_type = trust\n";
  pgfleet::v1::PushConfigRequest push;
  push.set_environment("prod");
  push.set_ini_text(ini);
  pgfleet::v1::ConfigOverlay* overlay = push.add_overlays();
  overlay->set_agent_id("a1");
  pgfleet::v1::OverlaySetting* setting = overlay->add_set();
  setting->set_section("databases");
  setting->set_key("zonedb");
  setting->set_value("host=10.0.0.9 password=Overlay-Pw-8");
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ConfigVersion v1, fleet_->PushConfig(kOperator, push));
  RecordingAgent* agent = Connect("a1");
  SetDesired(v1.version());

  auto leaks = [](const std::string& text) {
    return absl::StrContains(text, "Ini Pw-9") || absl::StrContains(text, "Overlay-Pw-8");
  };
  pgfleet::v1::GetConfigRequest get;
  get.set_version(v1.version());
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ConfigVersion shown, fleet_->GetConfig(kAdmin, get));
  EXPECT_FALSE(leaks(shown.DebugString())) << shown.DebugString();
  EXPECT_TRUE(absl::StrContains(shown.ini_text(), "password=<redacted>"));
  pgfleet::v1::ListConfigsRequest list;
  list.set_environment("prod");
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ListConfigsResponse listed,
                           fleet_->ListConfigs(kViewer, list));
  EXPECT_FALSE(leaks(listed.DebugString()));
  pgfleet::v1::RenderConfigRequest render;
  render.set_agent_id("a1");
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::RenderedConfig rendered,
                           fleet_->RenderConfig(kViewer, render));
  EXPECT_TRUE(absl::StrContains(rendered.ini_text(), "zonedb = host=10.0.0.9 password=<redacted>"))
      << rendered.ini_text();
  EXPECT_FALSE(leaks(rendered.DebugString()));
  // The agent gets the real thing.
  ASSERT_FALSE(agent->Configs().empty());
  EXPECT_TRUE(absl::StrContains(agent->Configs().back().ini_text(), "password='Ini Pw-9'"));
  EXPECT_TRUE(absl::StrContains(agent->Configs().back().ini_text(), "password=Overlay-Pw-8"));

  // `config show` > edit > `config push`: the redacted passwords are the ones v1 had.
  pgfleet::v1::PushConfigRequest again;
  again.set_environment("prod");
  std::string edited = shown.ini_text();
  edited.replace(edited.find("6432"), 4, "6433");
  again.set_ini_text(edited);
  *again.mutable_overlays() = shown.overlays();
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ConfigVersion v2, fleet_->PushConfig(kOperator, again));
  SetDesired(v2.version());
  const std::string sent = agent->Configs().back().ini_text();
  EXPECT_TRUE(absl::StrContains(sent, "listen_port = 6433")) << sent;
  EXPECT_TRUE(absl::StrContains(sent, "password='Ini Pw-9'")) << sent;
  EXPECT_TRUE(absl::StrContains(sent, "password=Overlay-Pw-8")) << sent;

  // A redacted password for a database that never had one cannot be kept: refused, named.
  again.set_ini_text(edited + "[databases]\nfresh = host=x password=<redacted>\n");
  absl::StatusOr<pgfleet::v1::ConfigVersion> refused = fleet_->PushConfig(kOperator, again);
  EXPECT_TRUE(absl::IsInvalidArgument(refused.status())) << refused.status();
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "'fresh'")) << refused.status();
}

// What the API shows of secret material is keyed: a weak password in an auth_file must not be
// confirmable offline by hashing guesses.
constexpr char kWeakAuthFile[] = "\"app\" \"password\"\n";

// The version address as it was computed over plain sha256s ("pgfleet-config-v2").
std::string PlainContentAddress(const std::string& ini, const std::string& auth_file,
                                const std::string& previous_secret, int64_t expires_unix_ms) {
  return Sha256Hex(absl::StrCat("pgfleet-config-v2\n", Sha256Hex(ini), "\n", "file auth_file ",
                                Sha256Hex(auth_file), "\n", "overlap ", Sha256Hex("app"), " ",
                                Sha256Hex(previous_secret), " ", expires_unix_ms, "\n"));
}

TEST_F(SecretsApiTest, ExposedFingerprintsOfAWeakPasswordAreKeyed) {
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ConfigVersion pushed,
                           Push(kIni, kAdmin, kWeakAuthFile, "123456"));
  pgfleet::v1::GetConfigRequest get;
  get.set_version(pushed.version());
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ConfigVersion shown, fleet_->GetConfig(kViewer, get));
  ASSERT_EQ(shown.files_size(), 1);
  const std::string exposed = shown.files(0).fingerprint();
  ASSERT_EQ(exposed.size(), 12u);
  for (const std::string& material : {std::string(kWeakAuthFile), std::string("password")}) {
    EXPECT_FALSE(absl::StartsWith(Sha256Hex(material), exposed)) << material;
  }
  // The version's address covers the files by their keyed fingerprints too.
  ASSERT_EQ(shown.credential_overlaps_size(), 1);
  EXPECT_NE(shown.sha256(), PlainContentAddress(kIni, kWeakAuthFile, "123456",
                                                shown.credential_overlaps(0).expires_unix_ms()));
  // Keyed: another controller key, another fingerprint; the same key, the same one.
  const std::string full = *KeyringOf('k')->Fingerprint(kWeakAuthFile);
  EXPECT_TRUE(absl::StartsWith(full, exposed));
  EXPECT_NE(*KeyringOf('j')->Fingerprint(kWeakAuthFile), full);
  // Neither the audit log nor a re-push shows anything else.
  PGF_ASSERT_OK_AND_ASSIGN(std::vector<AuditEntry> audit, store_->ListAudit(10));
  for (const AuditEntry& entry : audit) {
    EXPECT_FALSE(absl::StrContains(entry.details, Sha256Hex(kWeakAuthFile).substr(0, 12)))
        << entry.details;
    if (entry.action == "config.push") {
      EXPECT_TRUE(absl::StrContains(entry.details, exposed)) << entry.details;
    }
  }
}

TEST_F(SecretsApiTest, AgentNamesPushedFilesByTheKeyedFingerprint) {
  PGF_ASSERT_OK_AND_ASSIGN(pgfleet::v1::ConfigVersion v1, Push(kIni, kAdmin, kWeakAuthFile));
  RecordingAgent* agent = Connect("a1");
  SetDesired(v1.version());
  ASSERT_EQ(agent->Configs().size(), 1u);
  const pgfleet::v1::ConfigFile file = agent->Configs()[0].files(0);
  // The plain sha256 travels with the content only (a transfer check); the name is keyed.
  EXPECT_EQ(file.sha256(), Sha256Hex(kWeakAuthFile));
  EXPECT_EQ(file.fingerprint(), *KeyringOf('k')->Fingerprint(kWeakAuthFile));
  EXPECT_TRUE(absl::StartsWith(file.fingerprint(), v1.files(0).fingerprint()));
}

}  // namespace
}  // namespace pgfleet::controller
