// controller/secrets/: AES-256-GCM sealing of secret material (round trip, wrong key, tampered
// ciphertext/nonce/associated data, key files and their modes), and the store's use of it:
// files and overlaps of config versions stored only encrypted, swapped rows refused, and key
// rotation re-sealing everything with the new key.
#include "controller/secrets/secret_box.h"

#include <stdlib.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "controller/store/sqlite_store.h"
#include "gtest/gtest.h"
#include "tests/testutil/status_testing.h"
#include "tests/unit/store_backends.h"

namespace pgfleet::controller {
namespace {

using secrets::Keyring;
using secrets::SealedValue;
using secrets::SecretKey;

SecretKey KeyOf(char fill) {
  absl::StatusOr<SecretKey> key = SecretKey::FromBytes(std::string(32, fill));
  EXPECT_TRUE(key.ok()) << key.status();
  return *key;
}

TEST(SecretBoxTest, RoundTripsAndBindsAssociatedData) {
  const SecretKey key = KeyOf('k');
  const std::string aad = secrets::AssociatedData("file", 7, "auth_file");
  PGF_ASSERT_OK_AND_ASSIGN(SealedValue sealed, key.Seal("\"app\" \"hunter2\"\n", aad));
  EXPECT_EQ(sealed.nonce.size(), secrets::kNonceBytes);
  EXPECT_EQ(sealed.key_id, key.id());
  EXPECT_EQ(key.id().size(), 16u);
  EXPECT_FALSE(absl::StrContains(sealed.ciphertext, "hunter2"));
  PGF_ASSERT_OK_AND_ASSIGN(std::string opened, key.Open(sealed, aad));
  EXPECT_EQ(opened, "\"app\" \"hunter2\"\n");

  // The same value sealed twice: fresh nonces, different ciphertexts.
  PGF_ASSERT_OK_AND_ASSIGN(SealedValue again, key.Seal("\"app\" \"hunter2\"\n", aad));
  EXPECT_NE(again.nonce, sealed.nonce);
  EXPECT_NE(again.ciphertext, sealed.ciphertext);

  // Another version or another key of the same version: does not authenticate.
  EXPECT_TRUE(
      absl::IsDataLoss(key.Open(sealed, secrets::AssociatedData("file", 8, "auth_file")).status()));
  EXPECT_TRUE(absl::IsDataLoss(
      key.Open(sealed, secrets::AssociatedData("file", 7, "server_tls_key_file")).status()));
}

TEST(SecretBoxTest, RefusesTamperedValues) {
  const SecretKey key = KeyOf('k');
  const std::string aad = secrets::AssociatedData("file", 1, "auth_file");
  PGF_ASSERT_OK_AND_ASSIGN(SealedValue sealed, key.Seal("secret", aad));
  for (size_t i = 0; i < sealed.ciphertext.size(); ++i) {  // Body and tag.
    SealedValue tampered = sealed;
    tampered.ciphertext[i] ^= 0x01;
    EXPECT_TRUE(absl::IsDataLoss(key.Open(tampered, aad).status())) << "byte " << i;
  }
  SealedValue bad_nonce = sealed;
  bad_nonce.nonce[0] ^= 0x01;
  EXPECT_TRUE(absl::IsDataLoss(key.Open(bad_nonce, aad).status()));
  SealedValue truncated = sealed;
  truncated.ciphertext.resize(3);
  EXPECT_TRUE(absl::IsDataLoss(key.Open(truncated, aad).status()));
}

TEST(SecretBoxTest, WrongKeyIsRefused) {
  const SecretKey key = KeyOf('k');
  const SecretKey other = KeyOf('o');
  EXPECT_NE(key.id(), other.id());
  const std::string aad = secrets::AssociatedData("overlap", 3, "app");
  PGF_ASSERT_OK_AND_ASSIGN(SealedValue sealed, key.Seal("old", aad));
  EXPECT_TRUE(absl::IsFailedPrecondition(other.Open(sealed, aad).status()));
  // Even with the id forged, the other key cannot authenticate it.
  SealedValue forged = sealed;
  forged.key_id = other.id();
  EXPECT_TRUE(absl::IsDataLoss(other.Open(forged, aad).status()));
}

TEST(SecretBoxTest, KeyringOpensWithPreviousKeyAndSealsWithCurrent) {
  const std::string aad = secrets::AssociatedData("file", 1, "auth_file");
  Keyring old_ring(KeyOf('a'));
  PGF_ASSERT_OK_AND_ASSIGN(SealedValue sealed, old_ring.Seal("v", aad));
  Keyring rotating(KeyOf('b'), KeyOf('a'));
  PGF_ASSERT_OK_AND_ASSIGN(std::string opened, rotating.Open(sealed, aad));
  EXPECT_EQ(opened, "v");
  PGF_ASSERT_OK_AND_ASSIGN(SealedValue resealed, rotating.Seal("v", aad));
  EXPECT_EQ(resealed.key_id, KeyOf('b').id());
  Keyring new_only(KeyOf('b'));
  EXPECT_TRUE(absl::IsFailedPrecondition(new_only.Open(sealed, aad).status()));

  Keyring none;
  absl::StatusOr<SealedValue> refused = none.Seal("v", aad);
  ASSERT_TRUE(absl::IsFailedPrecondition(refused.status()));
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "head -c 32 /dev/urandom"));
}

class TempDir {
 public:
  TempDir() {
    const char* tmp = getenv("TEST_TMPDIR");
    std::string pattern = absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/pgfleet_secrets_XXXXXX");
    EXPECT_NE(mkdtemp(pattern.data()), nullptr);
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  std::string Write(const std::string& name, const std::string& content, mode_t mode) {
    const std::string file = path_ + "/" + name;
    std::ofstream(file, std::ios::binary) << content;
    chmod(file.c_str(), mode);
    return file;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(SecretKeyFileTest, ReadsHexAndBase64AndRefusesLooseModes) {
  TempDir dir;
  const std::string raw(32, '\x5a');
  PGF_ASSERT_OK_AND_ASSIGN(
      SecretKey hex,
      SecretKey::FromFile(dir.Write("hex.key", absl::BytesToHexString(raw) + "\n", 0600)));
  PGF_ASSERT_OK_AND_ASSIGN(
      SecretKey b64, SecretKey::FromFile(dir.Write("b64.key", absl::Base64Escape(raw), 0400)));
  EXPECT_EQ(hex.id(), b64.id());
  EXPECT_EQ(hex.id(), KeyOf('\x5a').id());

  absl::StatusOr<SecretKey> loose =
      SecretKey::FromFile(dir.Write("loose.key", absl::BytesToHexString(raw), 0640));
  ASSERT_TRUE(absl::IsFailedPrecondition(loose.status()));
  EXPECT_TRUE(absl::StrContains(loose.status().message(), "chmod 600")) << loose.status();

  absl::StatusOr<SecretKey> short_key = SecretKey::FromFile(dir.Write("short.key", "abcdef", 0600));
  ASSERT_TRUE(absl::IsInvalidArgument(short_key.status()));
  EXPECT_TRUE(absl::StrContains(short_key.status().message(), "64 hex digits"));
  EXPECT_FALSE(absl::StrContains(short_key.status().message(), "abcdef"));

  EXPECT_TRUE(absl::IsNotFound(SecretKey::FromFile(dir.path() + "/missing.key").status()));
}

// ---- The store: files and overlaps of config versions ----

// On both of the store's databases (store_backends.h).
class SecretsStoreTest : public StoreBackendTest {
 protected:
  void SetUp() override {
    StoreBackendTest::SetUp();
    if (open_in_set_up_) Reopen(std::make_shared<Keyring>(KeyOf('a')));
  }
  void Reopen(std::shared_ptr<const Keyring> keyring) {
    StoreBackendTest::Reopen();
    ASSERT_NE(store_, nullptr);
    store_->SetSecretsKeyring(std::move(keyring));
  }
  ConfigVersionDraft Draft(const std::string& auth_file, const std::string& previous = "") {
    ConfigVersionDraft draft;
    draft.environment = "prod";
    draft.ini_text = "[databases]\n* = host=127.0.0.1\n";
    draft.author = "test";
    ConfigFileRow file;
    file.key = "auth_file";
    file.content = auth_file;
    draft.files.push_back(file);
    if (!previous.empty()) {
      draft.credential_overlaps.push_back(CredentialOverlapRow{"app", previous, 1234, ""});
    }
    return draft;
  }
  // What the database holds: the SQLite file's bytes, or PostgreSQL's secret rows as text
  // (bytea in escape form: printable bytes as themselves).
  std::string FileBytes() {
    if (backend() == StoreBackend::kPostgres) {
      absl::StatusOr<testutil::Rows> rows = StorePostgres::Get()->Exec(
          "SELECT t::text || encode(t.ciphertext, 'escape') FROM config_files t UNION ALL "
          "SELECT t::text || encode(t.ciphertext, 'escape') FROM credential_overlaps t",
          database_);
      EXPECT_TRUE(rows.ok()) << rows.status();
      std::string all;
      if (rows.ok()) {
        for (const auto& row : *rows) all += row[0] + "\n";
      }
      EXPECT_FALSE(all.empty());
      return all;
    }
    PGF_EXPECT_OK(store_->ExecForTesting("PRAGMA wal_checkpoint(TRUNCATE)"));
    std::ifstream in(path_, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
};
INSTANTIATE_TEST_SUITE_P(Backends, SecretsStoreTest, ::testing::ValuesIn(AllStoreBackends()),
                         StoreBackendName);

TEST_P(SecretsStoreTest, StoresFilesAndOverlapsEncryptedAndLoadsThem) {
  PGF_ASSERT_OK_AND_ASSIGN(
      ConfigVersionRow added,
      store_->AddConfigVersion(Draft("\"app\" \"NewSecret-1\"\n", "OldSecret-0"), 1000));
  PGF_ASSERT_OK_AND_ASSIGN(ConfigVersionRow got, store_->GetConfigVersion(added.version));
  EXPECT_EQ(got.secrets_error, "");
  ASSERT_EQ(got.files.size(), 1u);
  EXPECT_EQ(got.files[0].key, "auth_file");
  EXPECT_EQ(got.files[0].content, "\"app\" \"NewSecret-1\"\n");
  // Keyed: not the plain sha256, which would confirm a guessed password offline.
  EXPECT_EQ(got.files[0].fingerprint.size(), 64u);
  EXPECT_NE(got.files[0].fingerprint, Sha256Hex("\"app\" \"NewSecret-1\"\n"));
  EXPECT_EQ(got.files[0].size, 20);
  ASSERT_EQ(got.credential_overlaps.size(), 1u);
  EXPECT_EQ(got.credential_overlaps[0].user, "app");
  EXPECT_EQ(got.credential_overlaps[0].previous_secret, "OldSecret-0");
  EXPECT_EQ(got.credential_overlaps[0].expires_unix_ms, 1234);
  // The content address covers the files: not the ini's own sha256.
  EXPECT_NE(got.sha256, Sha256Hex(got.ini_text));

  // Lists carry fingerprints, never contents.
  PGF_ASSERT_OK_AND_ASSIGN(std::vector<ConfigVersionRow> listed,
                           store_->ListConfigVersions("prod"));
  ASSERT_EQ(listed.size(), 1u);
  ASSERT_EQ(listed[0].files.size(), 1u);
  EXPECT_EQ(listed[0].files[0].content, "");
  EXPECT_EQ(listed[0].files[0].fingerprint, got.files[0].fingerprint);
  EXPECT_EQ(listed[0].credential_overlaps[0].previous_secret, "");

  // Same content again: the same version. A new password: a new version.
  PGF_ASSERT_OK_AND_ASSIGN(
      ConfigVersionRow same,
      store_->AddConfigVersion(Draft("\"app\" \"NewSecret-1\"\n", "OldSecret-0"), 2000));
  EXPECT_EQ(same.version, added.version);
  PGF_ASSERT_OK_AND_ASSIGN(ConfigVersionRow next,
                           store_->AddConfigVersion(Draft("\"app\" \"NewSecret-2\"\n"), 3000));
  EXPECT_NE(next.version, added.version);
  EXPECT_EQ(next.parent_version, added.version);

  const std::string bytes = FileBytes();
  EXPECT_FALSE(absl::StrContains(bytes, "NewSecret")) << "plaintext in the SQLite file";
  EXPECT_FALSE(absl::StrContains(bytes, "OldSecret")) << "plaintext in the SQLite file";
}

TEST_P(SecretsStoreTest, WithoutKeyRefusesSecretsButStoresPlainVersions) {
  Reopen(std::make_shared<Keyring>());
  absl::StatusOr<ConfigVersionRow> refused =
      store_->AddConfigVersion(Draft("\"app\" \"x\"\n"), 1000);
  ASSERT_TRUE(absl::IsFailedPrecondition(refused.status())) << refused.status();
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "--secrets-key-file"));
  PGF_ASSERT_OK_AND_ASSIGN(std::vector<ConfigVersionRow> none, store_->ListConfigVersions("prod"));
  EXPECT_TRUE(none.empty()) << "the refused version was half-written";
  PGF_EXPECT_OK(store_->AddConfigVersion("prod", "[pgbouncer]\n", "test", "", 1000));
}

TEST_P(SecretsStoreTest, ExpectedParentGuardsConcurrentChanges) {
  ConfigVersionDraft first = Draft("\"app\" \"a\"\n");
  first.expected_parent = 0;
  PGF_ASSERT_OK_AND_ASSIGN(ConfigVersionRow v1, store_->AddConfigVersion(first, 1000));
  ConfigVersionDraft stale = Draft("\"app\" \"b\"\n");
  stale.expected_parent = 0;
  EXPECT_TRUE(absl::IsAborted(store_->AddConfigVersion(stale, 2000).status()));
  stale.expected_parent = v1.version;
  PGF_EXPECT_OK(store_->AddConfigVersion(stale, 2000));
}

TEST_P(SecretsStoreTest, SwappedCiphertextsDoNotDecrypt) {
  PGF_ASSERT_OK_AND_ASSIGN(ConfigVersionRow v1,
                           store_->AddConfigVersion(Draft("\"app\" \"one\"\n"), 1000));
  PGF_ASSERT_OK_AND_ASSIGN(ConfigVersionRow v2,
                           store_->AddConfigVersion(Draft("\"app\" \"two\"\n"), 2000));
  // Someone with write access to the file copies v1's ciphertext into v2's row.
  PGF_ASSERT_OK(store_->ExecForTesting(absl::StrCat(
      "UPDATE config_files SET (ciphertext, nonce, key_id) = (SELECT ciphertext, nonce, key_id "
      "FROM config_files WHERE version = ",
      v1.version, ") WHERE version = ", v2.version)));
  PGF_ASSERT_OK_AND_ASSIGN(ConfigVersionRow got, store_->GetConfigVersion(v2.version));
  EXPECT_FALSE(got.secrets_error.empty());
  EXPECT_EQ(got.files[0].content, "");
}

TEST_P(SecretsStoreTest, KeyRotationReencryptsEverything) {
  PGF_ASSERT_OK_AND_ASSIGN(ConfigVersionRow v1,
                           store_->AddConfigVersion(Draft("\"app\" \"one\"\n", "zero"), 1000));
  // A controller started with only the new key cannot read the old values...
  Reopen(std::make_shared<Keyring>(KeyOf('b')));
  PGF_ASSERT_OK_AND_ASSIGN(ConfigVersionRow unreadable, store_->GetConfigVersion(v1.version));
  EXPECT_TRUE(absl::StrContains(unreadable.secrets_error, "--secrets-previous-key-file"))
      << unreadable.secrets_error;
  // ...until given the previous one: then everything is re-sealed with the new key.
  Reopen(std::make_shared<Keyring>(KeyOf('b'), KeyOf('a')));
  PGF_ASSERT_OK_AND_ASSIGN(ReencryptResult result, store_->ReencryptSecrets());
  EXPECT_EQ(result.reencrypted, 2);
  EXPECT_EQ(result.unreadable, 0);
  PGF_ASSERT_OK_AND_ASSIGN(ReencryptResult again, store_->ReencryptSecrets());
  EXPECT_EQ(again.reencrypted, 0);
  // The old key is no longer needed.
  Reopen(std::make_shared<Keyring>(KeyOf('b')));
  PGF_ASSERT_OK_AND_ASSIGN(ConfigVersionRow got, store_->GetConfigVersion(v1.version));
  EXPECT_EQ(got.secrets_error, "");
  EXPECT_EQ(got.files[0].content, "\"app\" \"one\"\n");
  EXPECT_EQ(got.credential_overlaps[0].previous_secret, "zero");
}

TEST_P(SecretsStoreTest, RowsAreImmutableExceptForReencryption) {
  PGF_ASSERT_OK(store_->AddConfigVersion(Draft("\"app\" \"one\"\n"), 1000));
  EXPECT_FALSE(
      store_->ExecForTesting("UPDATE config_files SET sha256 = '" + std::string(64, '0') + "'")
          .ok());
  EXPECT_FALSE(store_->ExecForTesting("DELETE FROM config_files").ok());
}

// A database the previous release left (migrations 1-10, an auth_file sealed in it): 0011 keeps
// the file (still opening: its associated data names version and key), then takes the hba
// files, and the rows stay immutable under the rebuilt table's triggers.
class SecretsMigrationTest : public SecretsStoreTest {
 protected:
  SecretsMigrationTest() { open_in_set_up_ = false; }
};
INSTANTIATE_TEST_SUITE_P(Backends, SecretsMigrationTest, ::testing::ValuesIn(AllStoreBackends()),
                         StoreBackendName);

TEST_P(SecretsMigrationTest, Migration0011KeepsFilesAndTakesHbaFiles) {
  std::vector<Migration> old_migrations;
  for (const Migration& migration : SqliteStore::EmbeddedMigrations()) {
    if (migration.version <= 10) old_migrations.push_back(migration);
  }
  ASSERT_EQ(old_migrations.size(), 10u);
  const auto keyring = std::make_shared<Keyring>(KeyOf('a'));
  uint64_t old_version = 0;
  {
    PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<SqliteStore> old, OpenAgain(old_migrations));
    old->SetSecretsKeyring(keyring);
    PGF_ASSERT_OK_AND_ASSIGN(ConfigVersionRow added,
                             old->AddConfigVersion(Draft("\"app\" \"before\"\n"), 1000));
    old_version = added.version;
    ConfigVersionDraft hba = Draft("\"app\" \"before\"\n");
    hba.files.push_back(ConfigFileRow{});
    hba.files.back().key = "auth_hba_file";
    hba.files.back().content = "host all all 0.0.0.0/0 md5\n";
    EXPECT_FALSE(old->AddConfigVersion(hba, 2000).ok()) << "0005's CHECK took auth_hba_file";
  }
  Reopen(keyring);
  PGF_ASSERT_OK_AND_ASSIGN(ConfigVersionRow kept, store_->GetConfigVersion(old_version));
  EXPECT_EQ(kept.secrets_error, "");
  ASSERT_EQ(kept.files.size(), 1u);
  EXPECT_EQ(kept.files[0].content, "\"app\" \"before\"\n");

  ConfigVersionDraft hba = Draft("\"app\" \"before\"\n");
  for (const char* key : {"auth_hba_file", "auth_ident_file"}) {
    hba.files.push_back(ConfigFileRow{});
    hba.files.back().key = key;
    hba.files.back().content = absl::StrCat("# ", key, "\n");
  }
  PGF_ASSERT_OK_AND_ASSIGN(ConfigVersionRow added, store_->AddConfigVersion(hba, 3000));
  PGF_ASSERT_OK_AND_ASSIGN(ConfigVersionRow got, store_->GetConfigVersion(added.version));
  EXPECT_EQ(got.files.size(), 3u);
  EXPECT_FALSE(store_->ExecForTesting("DELETE FROM config_files").ok());
  EXPECT_FALSE(
      store_->ExecForTesting("UPDATE config_files SET sha256 = '" + std::string(64, '0') + "'")
          .ok());
}

}  // namespace
}  // namespace pgfleet::controller
