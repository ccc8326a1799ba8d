// SqliteStore's part for secret material: the files and rotation overlaps of config versions
// (migrations/0005_secrets.sql), sealed with the keyring's current key.
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "controller/secrets/tls_material.h"
#include "controller/store/sqlite_stmt.h"
#include "controller/store/sqlite_store.h"

namespace pgfleet::controller {
namespace {

using sql::Stmt;
using sql::Transaction;

constexpr char kFileKind[] = "file";
constexpr char kOverlapKind[] = "overlap";

bool IsCertificateKey(const std::string& key) {
  return absl::EndsWith(key, "_cert_file") || absl::EndsWith(key, "_ca_file");
}

}  // namespace

void SqliteStore::SetSecretsKeyring(std::shared_ptr<const secrets::Keyring> keyring) {
  absl::MutexLock lock(&mu_);
  keyring_ = keyring != nullptr ? std::move(keyring) : std::make_shared<secrets::Keyring>();
}

absl::Status SqliteStore::InsertConfigSecrets(uint64_t version,
                                              const std::vector<ConfigFileRow>& files,
                                              const std::vector<CredentialOverlapRow>& overlaps) {
  for (const ConfigFileRow& file : files) {
    PGF_ASSIGN_OR_RETURN(
        secrets::SealedValue sealed,
        keyring_->Seal(file.content, secrets::AssociatedData(kFileKind, version, file.key)));
    std::string subject;
    int64_t not_after = 0;
    if (IsCertificateKey(file.key)) {
      if (absl::StatusOr<secrets::CertificateInfo> info = secrets::InspectCertificate(file.content);
          info.ok()) {
        subject = info->subject;
        not_after = info->not_after_unix_ms;
      }
    }
    PGF_ASSIGN_OR_RETURN(Stmt stmt,
                         Stmt::Prepare(db_,
                                       "INSERT INTO config_files (version, key, sha256, size, "
                                       "cert_subject, cert_not_after_unix_ms, ciphertext, nonce, "
                                       "key_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"));
    stmt.BindU64(1, version)
        .BindText(2, file.key)
        .BindText(3, file.fingerprint)
        .BindInt(4, static_cast<int64_t>(file.content.size()))
        .BindText(5, subject);
    if (not_after != 0) {
      stmt.BindInt(6, not_after);
    } else {
      stmt.BindNull(6);
    }
    stmt.BindBlob(7, sealed.ciphertext).BindBlob(8, sealed.nonce).BindText(9, sealed.key_id);
    PGF_RETURN_IF_ERROR(stmt.Run());
  }
  for (const CredentialOverlapRow& overlap : overlaps) {
    if (overlap.user.empty()) return absl::InvalidArgumentError("an overlap needs a user");
    PGF_ASSIGN_OR_RETURN(
        secrets::SealedValue sealed,
        keyring_->Seal(overlap.previous_secret,
                       secrets::AssociatedData(kOverlapKind, version, overlap.user)));
    PGF_ASSIGN_OR_RETURN(Stmt stmt,
                         Stmt::Prepare(db_,
                                       "INSERT INTO credential_overlaps (version, user_name, "
                                       "expires_unix_ms, ciphertext, nonce, key_id) "
                                       "VALUES (?1, ?2, ?3, ?4, ?5, ?6)"));
    stmt.BindU64(1, version)
        .BindText(2, overlap.user)
        .BindInt(3, overlap.expires_unix_ms)
        .BindBlob(4, sealed.ciphertext)
        .BindBlob(5, sealed.nonce)
        .BindText(6, sealed.key_id);
    PGF_RETURN_IF_ERROR(stmt.Run());
  }
  return absl::OkStatus();
}

absl::Status SqliteStore::LoadConfigSecrets(ConfigVersionRow& row, bool with_content) {
  row.files.clear();
  row.credential_overlaps.clear();
  row.secrets_error.clear();
  auto note_error = [&row](const std::string& what, const absl::Status& status) {
    if (row.secrets_error.empty()) {
      row.secrets_error = absl::StrCat(what, ": ", status.message());
    }
  };
  {
    PGF_ASSIGN_OR_RETURN(Stmt stmt,
                         Stmt::Prepare(db_,
                                       "SELECT key, sha256, size, cert_subject, "
                                       "cert_not_after_unix_ms, ciphertext, nonce, key_id "
                                       "FROM config_files WHERE version = ?1 ORDER BY key"));
    stmt.BindU64(1, row.version);
    while (true) {
      PGF_ASSIGN_OR_RETURN(bool found, stmt.Step());
      if (!found) break;
      ConfigFileRow& file = row.files.emplace_back();
      file.key = stmt.Text(0);
      file.fingerprint = stmt.Text(1);
      file.size = stmt.Int(2);
      file.cert_subject = stmt.Text(3);
      file.cert_not_after_unix_ms = stmt.IsNull(4) ? 0 : stmt.Int(4);
      if (!with_content) continue;
      secrets::SealedValue sealed{stmt.Blob(5), stmt.Blob(6), stmt.Text(7)};
      absl::StatusOr<std::string> content =
          keyring_->Open(sealed, secrets::AssociatedData(kFileKind, row.version, file.key));
      if (content.ok()) {
        file.content = *std::move(content);
      } else {
        note_error(file.key, content.status());
      }
    }
  }
  PGF_ASSIGN_OR_RETURN(Stmt stmt,
                       Stmt::Prepare(db_,
                                     "SELECT user_name, expires_unix_ms, ciphertext, nonce, key_id "
                                     "FROM credential_overlaps WHERE version = ?1 "
                                     "ORDER BY user_name"));
  stmt.BindU64(1, row.version);
  while (true) {
    PGF_ASSIGN_OR_RETURN(bool found, stmt.Step());
    if (!found) break;
    CredentialOverlapRow& overlap = row.credential_overlaps.emplace_back();
    overlap.user = stmt.Text(0);
    overlap.expires_unix_ms = stmt.Int(1);
    if (!with_content) continue;
    secrets::SealedValue sealed{stmt.Blob(2), stmt.Blob(3), stmt.Text(4)};
    absl::StatusOr<std::string> secret =
        keyring_->Open(sealed, secrets::AssociatedData(kOverlapKind, row.version, overlap.user));
    if (secret.ok()) {
      overlap.previous_secret = *std::move(secret);
    } else {
      note_error(absl::StrCat("rotation overlap of ", overlap.user), secret.status());
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<ReencryptResult> SqliteStore::ReencryptSecrets() {
  absl::MutexLock lock(&mu_);
  ReencryptResult result;
  if (!keyring_->can_seal()) return result;
  const std::string current_id = keyring_->current()->id();
  PGF_ASSIGN_OR_RETURN(Transaction txn, Transaction::BeginImmediate(db_));
  struct Pending {
    std::string table, kind, name_column, name;
    uint64_t version = 0;
    secrets::SealedValue sealed;
  };
  std::vector<Pending> pending;
  for (const auto& [table, kind, name_column] :
       {std::tuple<const char*, const char*, const char*>{"config_files", kFileKind, "key"},
        {"credential_overlaps", kOverlapKind, "user_name"}}) {
    PGF_ASSIGN_OR_RETURN(Stmt stmt,
                         Stmt::Prepare(db_, absl::StrCat("SELECT version, ", name_column,
                                                         ", ciphertext, nonce, key_id FROM ", table,
                                                         " WHERE key_id <> ?1")
                                                .c_str()));
    stmt.BindText(1, current_id);
    while (true) {
      PGF_ASSIGN_OR_RETURN(bool found, stmt.Step());
      if (!found) break;
      pending.push_back(Pending{table, kind, name_column, stmt.Text(1), stmt.U64(0),
                                secrets::SealedValue{stmt.Blob(2), stmt.Blob(3), stmt.Text(4)}});
    }
  }
  for (const Pending& value : pending) {
    const std::string aad = secrets::AssociatedData(value.kind, value.version, value.name);
    absl::StatusOr<std::string> plaintext = keyring_->Open(value.sealed, aad);
    if (!plaintext.ok()) {
      ++result.unreadable;
      continue;
    }
    PGF_ASSIGN_OR_RETURN(secrets::SealedValue sealed, keyring_->Seal(*plaintext, aad));
    PGF_ASSIGN_OR_RETURN(
        Stmt stmt, Stmt::Prepare(db_, absl::StrCat("UPDATE ", value.table,
                                                   " SET ciphertext = ?1, nonce = ?2, key_id = ?3 "
                                                   "WHERE version = ?4 AND ",
                                                   value.name_column, " = ?5")
                                          .c_str()));
    stmt.BindBlob(1, sealed.ciphertext)
        .BindBlob(2, sealed.nonce)
        .BindText(3, sealed.key_id)
        .BindU64(4, value.version)
        .BindText(5, value.name);
    PGF_RETURN_IF_ERROR(stmt.Run());
    ++result.reencrypted;
  }
  PGF_RETURN_IF_ERROR(txn.Commit());
  return result;
}

}  // namespace pgfleet::controller
