#include "controller/api/secrets_api.h"

#include <algorithm>
#include <map>
#include <optional>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "common/auth_crypto.h"
#include "common/config/auth_file.h"
#include "common/config/hba.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "controller/config/ini_passwords.h"
#include "controller/secrets/tls_material.h"

namespace pgfleet::controller {
namespace {

constexpr char kAuthFileKey[] = "auth_file";
// The [pgbouncer] keys a version's files may back (the agent points them at its copies).
const std::set<std::string>& FileKeys() {
  static const std::set<std::string> keys = {
      kAuthFileKey,          "auth_hba_file",        "auth_ident_file",
      "client_tls_key_file", "client_tls_cert_file", "client_tls_ca_file",
      "server_tls_key_file", "server_tls_cert_file", "server_tls_ca_file"};
  return keys;
}

// A pushed auth_hba_file / auth_ident_file is parsed here, so a typo is refused at push with
// its line rather than stored and NACKed by every agent. What only the agent's host can tell
// (an @file include, a map in an ident file that is not pushed) is still checked there.
absl::Status CheckHbaFiles(const std::map<std::string, ConfigFileRow>& files,
                           const std::set<std::string>& changed_keys) {
  if (changed_keys.count("auth_hba_file") == 0 && changed_keys.count("auth_ident_file") == 0) {
    return absl::OkStatus();
  }
  std::optional<config::IdentMaps> ident_maps;
  if (auto ident = files.find("auth_ident_file"); ident != files.end()) {
    absl::StatusOr<config::IdentMaps> maps =
        config::ParseIdentFile(ident->second.content, "auth_ident_file");
    if (!maps.ok()) return absl::InvalidArgumentError(maps.status().message());
    ident_maps = *std::move(maps);
  }
  if (auto hba = files.find("auth_hba_file"); hba != files.end()) {
    absl::Status checked = config::CheckHbaText(hba->second.content, "auth_hba_file",
                                                ident_maps ? &*ident_maps : nullptr);
    if (!checked.ok()) return absl::InvalidArgumentError(checked.message());
  }
  return absl::OkStatus();
}

// Rotation overlaps longer than this are refused: an overlap is meant to be closed.
constexpr absl::Duration kMaxOverlap = absl::Hours(24 * 7);

ConfigFileRow FileOf(const std::string& key, const std::string& content) {
  ConfigFileRow file;
  file.key = key;
  file.content = content;
  return file;
}

CredentialOverlapRow OverlapOf(const std::string& user, const std::string& previous_secret,
                               int64_t expires_unix_ms) {
  CredentialOverlapRow overlap;
  overlap.user = user;
  overlap.previous_secret = previous_secret;
  overlap.expires_unix_ms = expires_unix_ms;
  return overlap;
}

config::UserSecret UserSecretOf(const std::string& user, const std::string& secret) {
  config::UserSecret entry;
  entry.user = user;
  entry.secret = secret;
  return entry;
}

absl::StatusOr<ConfigVersionRow> NewestVersion(Store& store, const std::string& environment) {
  PGF_ASSIGN_OR_RETURN(std::vector<ConfigVersionRow> versions,
                       store.ListConfigVersions(environment));
  if (versions.empty()) return ConfigVersionRow{};
  return store.GetConfigVersion(versions.front().version);
}

const ConfigFileRow* FindFile(const std::vector<ConfigFileRow>& files, const std::string& key) {
  for (const ConfigFileRow& file : files) {
    if (file.key == key) return &file;
  }
  return nullptr;
}

std::string Quote(const std::string& field) {
  std::string out = "\"";
  for (char c : field) {
    if (c == '"') out.push_back('"');
    out.push_back(c);
  }
  out.push_back('"');
  return out;
}

std::string FormatAuthFile(const config::AuthFile& entries) {
  std::string out;
  for (const auto& [user, entry] : entries) {
    absl::StrAppend(&out, Quote(user), " ", Quote(entry.secret), "\n");
  }
  return out;
}

absl::StatusOr<config::AuthFile> CurrentAuthFile(const ConfigVersionRow& newest) {
  const ConfigFileRow* file = FindFile(newest.files, kAuthFileKey);
  if (file == nullptr) return config::AuthFile{};
  return config::ParseAuthFile(file->content, kAuthFileKey);
}

// What an auth_file line may hold: no line breaks or NULs (they would split or cut the line).
absl::Status CheckAuthField(const char* what, const std::string& value) {
  if (value.find_first_of(std::string("\r\n\0", 3)) != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(what, " must not contain line breaks or NUL"));
  }
  return absl::OkStatus();
}

// A secret as an auth_file holds it. Without `plaintext` it must be a verifier or md5 hash, so
// a password sent by mistake without --plaintext is refused rather than stored as such.
absl::Status CheckSecret(const std::string& secret, bool plaintext) {
  if (secret.empty()) return absl::InvalidArgumentError("the secret is empty");
  PGF_RETURN_IF_ERROR(CheckAuthField("the secret", secret));
  if (plaintext) return absl::OkStatus();
  if (secret.starts_with("SCRAM-SHA-256$")) {
    if (absl::Status parsed = crypto::ParseScramSecret(secret).status(); !parsed.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("not a valid SCRAM-SHA-256 verifier: ", parsed.message()));
    }
    return absl::OkStatus();
  }
  absl::StatusOr<config::AuthFile> parsed =
      config::ParseAuthFile(absl::StrCat("\"u\" ", Quote(secret), "\n"), "secret");
  if (parsed.ok() && parsed->at("u").kind == config::SecretKind::kMd5) return absl::OkStatus();
  return absl::InvalidArgumentError(
      "the secret is neither a SCRAM-SHA-256 verifier nor an md5 hash; a plaintext password is "
      "stored only when asked for (plaintext, fleetctl --plaintext)");
}

absl::StatusOr<pgfleet::v1::SecretsChange> Describe(const ConfigVersionRow& row,
                                                    std::vector<std::string> warnings) {
  pgfleet::v1::SecretsChange change;
  *change.mutable_version() = VersionToProto(row);
  for (std::string& warning : warnings) change.add_warnings(std::move(warning));
  return change;
}

absl::StatusOr<ConfigVersionRow> AddDerivedVersionOnce(
    Store& store, int64_t now_ms, const std::string& environment,
    const std::optional<std::string>& ini_text,
    const std::vector<config::ConfigOverlay>* config_overlays, const SecretChanges& changes,
    const std::string& author, const std::string& message, std::vector<std::string>* warnings) {
  PGF_ASSIGN_OR_RETURN(ConfigVersionRow newest, NewestVersion(store, environment));
  if (!newest.secrets_error.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot carry over the credentials and TLS files of ", environment, " v",
                     newest.version, ": ", newest.secrets_error));
  }
  if (!ini_text.has_value() && newest.version == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("environment ", environment,
                     " has no config version yet: push its pgbouncer.ini first (fleetctl config "
                     "push)"));
  }
  ConfigVersionDraft draft;
  draft.environment = environment;
  draft.ini_text = newest.ini_text;
  draft.overlays = newest.overlays;
  // What the API showed was redacted (ini_passwords.h): a `password=<redacted>` pushed back
  // keeps the newest version's password for that database.
  if (ini_text.has_value()) {
    PGF_ASSIGN_OR_RETURN(draft.ini_text, RestoreIniPasswords(*ini_text, newest.ini_text));
  }
  if (config_overlays != nullptr) {
    PGF_ASSIGN_OR_RETURN(draft.overlays, RestoreOverlayPasswords(*config_overlays, newest.overlays,
                                                                 newest.ini_text));
  }
  draft.author = author;
  draft.message = message;
  draft.expected_parent = newest.version;

  std::map<std::string, ConfigFileRow> files;
  for (const ConfigFileRow& file : newest.files) files[file.key] = file;
  std::set<std::string> changed_keys;
  for (const std::string& key : changes.remove_files) {
    if (files.erase(key) == 0) {
      return absl::NotFoundError(absl::StrCat(environment, " v", newest.version, " has no ", key));
    }
    changed_keys.insert(key);
  }
  for (const ConfigFileRow& file : changes.set_files) {
    if (FileKeys().count(file.key) == 0) {
      return absl::InvalidArgumentError(absl::StrCat("unknown file key '", file.key,
                                                     "' (expected one of ",
                                                     absl::StrJoin(FileKeys(), ", "), ")"));
    }
    if (!file.claimed_sha256.empty() && file.claimed_sha256 != Sha256Hex(file.content)) {
      return absl::InvalidArgumentError(
          absl::StrCat(file.key, ": content does not match the sha256 sent with it"));
    }
    if (file.content.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(file.key, " is empty (remove it instead)"));
    }
    ConfigFileRow stored;
    stored.key = file.key;
    stored.content = file.content;
    files[file.key] = std::move(stored);
    changed_keys.insert(file.key);
  }
  std::map<std::string, CredentialOverlapRow> overlaps;
  for (const CredentialOverlapRow& overlap : newest.credential_overlaps) {
    overlaps[overlap.user] = overlap;
  }
  for (const std::string& user : changes.remove_overlaps) {
    if (overlaps.erase(user) == 0) {
      return absl::NotFoundError(absl::StrCat("user ", user, " has no rotation overlap in ",
                                              environment, " v", newest.version));
    }
  }
  for (const CredentialOverlapRow& overlap : changes.set_overlaps) {
    if (overlap.user.empty()) return absl::InvalidArgumentError("an overlap needs a user");
    PGF_RETURN_IF_ERROR(CheckAuthField("the previous secret", overlap.previous_secret));
    if (overlap.previous_secret.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("the overlap of ", overlap.user, " has no previous secret"));
    }
    overlaps[overlap.user] = overlap;
  }

  // Check what changed, naming the file.
  if (changed_keys.count(kAuthFileKey) > 0 && files.count(kAuthFileKey) > 0) {
    if (absl::Status parsed =
            config::ParseAuthFile(files[kAuthFileKey].content, kAuthFileKey).status();
        !parsed.ok()) {
      return absl::InvalidArgumentError(parsed.message());
    }
  }
  PGF_RETURN_IF_ERROR(CheckHbaFiles(files, changed_keys));
  for (const char* side : {"client", "server"}) {
    const std::string prefix = absl::StrCat(side, "_tls_");
    bool side_changed = false;
    for (const std::string& key : changed_keys) side_changed |= key.starts_with(prefix);
    if (!side_changed) continue;
    secrets::TlsFilesToCheck check;
    check.side = side;
    auto content = [&files, &prefix](const char* what) {
      auto it = files.find(absl::StrCat(prefix, what, "_file"));
      return it == files.end() ? std::string() : it->second.content;
    };
    check.cert_pem = content("cert");
    check.key_pem = content("key");
    check.ca_pem = content("ca");
    PGF_ASSIGN_OR_RETURN(std::vector<std::string> side_warnings,
                         secrets::ValidateTlsFiles(check, now_ms));
    if (warnings != nullptr) {
      warnings->insert(warnings->end(), side_warnings.begin(), side_warnings.end());
    }
  }

  for (auto& [key, file] : files) draft.files.push_back(std::move(file));
  for (auto& [user, overlap] : overlaps) draft.credential_overlaps.push_back(std::move(overlap));
  return store.AddConfigVersion(draft, now_ms);
}

}  // namespace

SecretChanges SecretChangesFromPush(const pgfleet::v1::PushConfigRequest& request) {
  SecretChanges changes;
  for (const pgfleet::v1::ConfigFile& file : request.files()) {
    ConfigFileRow row;
    row.key = file.key();
    row.content = file.content();
    row.claimed_sha256 = file.sha256();
    changes.set_files.push_back(std::move(row));
  }
  changes.remove_files.assign(request.remove_files().begin(), request.remove_files().end());
  for (const pgfleet::v1::CredentialOverlap& overlap : request.credential_overlaps()) {
    changes.set_overlaps.push_back(
        OverlapOf(overlap.user(), overlap.previous_secret(), overlap.expires_unix_ms()));
  }
  changes.remove_overlaps.assign(request.remove_credential_overlaps().begin(),
                                 request.remove_credential_overlaps().end());
  return changes;
}

absl::StatusOr<ConfigVersionRow> AddDerivedVersion(
    Store& store, int64_t now_ms, const std::string& environment,
    const std::optional<std::string>& ini_text,
    const std::vector<config::ConfigOverlay>* config_overlays, const SecretChanges& changes,
    const std::string& author, const std::string& message, std::vector<std::string>* warnings) {
  if (environment.empty()) return absl::InvalidArgumentError("environment is required");
  absl::StatusOr<ConfigVersionRow> added = AddDerivedVersionOnce(
      store, now_ms, environment, ini_text, config_overlays, changes, author, message, warnings);
  if (absl::IsAborted(added.status())) {
    // Another version arrived between reading the newest and storing: derive again from it.
    if (warnings != nullptr) warnings->clear();
    added = AddDerivedVersionOnce(store, now_ms, environment, ini_text, config_overlays, changes,
                                  author, message, warnings);
  }
  return added;
}

std::string DescribeSecrets(const ConfigVersionRow& row) {
  std::string out;
  if (!row.files.empty()) {
    absl::StrAppend(&out, " files=",
                    absl::StrJoin(row.files, ",", [](std::string* to, const ConfigFileRow& file) {
                      absl::StrAppend(to, file.key, ":", file.fingerprint.substr(0, 12));
                    }));
  }
  if (!row.credential_overlaps.empty()) {
    absl::StrAppend(&out, " overlaps=",
                    absl::StrJoin(row.credential_overlaps, ",",
                                  [](std::string* to, const CredentialOverlapRow& overlap) {
                                    absl::StrAppend(to, overlap.user);
                                  }));
  }
  return out;
}

absl::StatusOr<pgfleet::v1::SecretsChange> SecretsApi::Commit(
    const Caller& caller, const std::string& environment, const SecretChanges& changes,
    const std::string& message, const std::string& action, const std::string& what) {
  std::vector<std::string> warnings;
  PGF_ASSIGN_OR_RETURN(
      ConfigVersionRow row,
      AddDerivedVersion(store_, UnixMillis(clock_.Now()), environment, std::nullopt, nullptr,
                        changes, caller.actor, message.empty() ? what : message, &warnings));
  PGF_RETURN_IF_ERROR(store_.Audit(
      caller.actor, action, environment,
      absl::StrCat(what, "; version=", row.version, " sha256=", row.sha256, DescribeSecrets(row)),
      UnixMillis(clock_.Now())));
  PGF_INFO("api", "%s: %s in %s -> config version %d (roll it out to apply it)", caller.actor, what,
           environment, row.version);
  return Describe(row, std::move(warnings));
}

absl::StatusOr<pgfleet::v1::SecretsChange> SecretsApi::SetUserSecret(
    const Caller& caller, const pgfleet::v1::SetUserSecretRequest& request) {
  PGF_RETURN_IF_ERROR(RequireRole(caller, Role::kAdmin));
  if (request.user().empty()) return absl::InvalidArgumentError("user is required");
  PGF_RETURN_IF_ERROR(CheckAuthField("the user name", request.user()));
  PGF_RETURN_IF_ERROR(CheckSecret(request.secret(), request.plaintext()));
  PGF_ASSIGN_OR_RETURN(ConfigVersionRow newest, NewestVersion(store_, request.environment()));
  PGF_ASSIGN_OR_RETURN(config::AuthFile entries, CurrentAuthFile(newest));
  entries[request.user()] = UserSecretOf(request.user(), request.secret());
  SecretChanges changes;
  changes.set_files.push_back(FileOf(kAuthFileKey, FormatAuthFile(entries)));
  return Commit(caller, request.environment(), changes, request.message(), "secrets.set_user",
                absl::StrCat("set the secret of user ", request.user(),
                             request.plaintext() ? " (plaintext)" : ""));
}

absl::StatusOr<pgfleet::v1::SecretsChange> SecretsApi::SetTlsFiles(
    const Caller& caller, const pgfleet::v1::SetTlsFilesRequest& request) {
  PGF_RETURN_IF_ERROR(RequireRole(caller, Role::kAdmin));
  if (request.side() != "client" && request.side() != "server") {
    return absl::InvalidArgumentError("side must be client or server");
  }
  if (request.cert_pem().empty() && request.key_pem().empty() && request.ca_pem().empty()) {
    return absl::InvalidArgumentError("no TLS file given");
  }
  SecretChanges changes;
  std::vector<std::string> names;
  auto set = [&](const char* what, const std::string& pem) {
    if (pem.empty()) return;
    const std::string key = absl::StrCat(request.side(), "_tls_", what, "_file");
    changes.set_files.push_back(FileOf(key, pem));
    names.push_back(key);
  };
  set("cert", request.cert_pem());
  set("key", request.key_pem());
  set("ca", request.ca_pem());
  return Commit(caller, request.environment(), changes, request.message(), "secrets.set_tls",
                absl::StrCat("set ", absl::StrJoin(names, ", ")));
}

absl::StatusOr<pgfleet::v1::SecretsChange> SecretsApi::BeginRotation(
    const Caller& caller, const pgfleet::v1::BeginRotationRequest& request) {
  PGF_RETURN_IF_ERROR(RequireRole(caller, Role::kAdmin));
  if (request.user().empty()) return absl::InvalidArgumentError("user is required");
  PGF_RETURN_IF_ERROR(CheckAuthField("the user name", request.user()));
  PGF_RETURN_IF_ERROR(CheckSecret(request.new_secret(), request.plaintext()));
  const absl::Duration overlap = absl::Seconds(request.overlap_seconds());
  if (overlap <= absl::ZeroDuration() || overlap > kMaxOverlap) {
    return absl::InvalidArgumentError(absl::StrCat("the overlap must be positive and at most ",
                                                   absl::FormatDuration(kMaxOverlap)));
  }
  PGF_ASSIGN_OR_RETURN(ConfigVersionRow newest, NewestVersion(store_, request.environment()));
  PGF_ASSIGN_OR_RETURN(config::AuthFile entries, CurrentAuthFile(newest));
  auto current = entries.find(request.user());
  if (current == entries.end()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "user ", request.user(), " has no secret in the auth_file of ", request.environment(),
        " yet: there is nothing to rotate from (set it with fleetctl secrets set)"));
  }
  if (crypto::SecretEquals(current->second.secret, request.new_secret())) {
    return absl::InvalidArgumentError("the new secret is the current one");
  }
  for (const CredentialOverlapRow& open : newest.credential_overlaps) {
    if (open.user == request.user() && open.expires_unix_ms > UnixMillis(clock_.Now())) {
      return absl::FailedPreconditionError(
          absl::StrCat("user ", request.user(),
                       " is already rotating; end that rotation first (fleetctl secrets rotate "
                       "end)"));
    }
  }
  const int64_t expires = UnixMillis(clock_.Now()) + absl::ToInt64Milliseconds(overlap);
  SecretChanges changes;
  changes.set_overlaps.push_back(OverlapOf(request.user(), current->second.secret, expires));
  entries[request.user()] = UserSecretOf(request.user(), request.new_secret());
  changes.set_files.push_back(FileOf(kAuthFileKey, FormatAuthFile(entries)));
  return Commit(caller, request.environment(), changes, request.message(), "secrets.rotation_begin",
                absl::StrCat("began rotating the secret of user ", request.user(),
                             " (old one accepted until ",
                             absl::FormatTime("%Y-%m-%d %H:%M:%S UTC",
                                              absl::FromUnixMillis(expires), absl::UTCTimeZone()),
                             ")"));
}

absl::StatusOr<pgfleet::v1::SecretsChange> SecretsApi::EndRotation(
    const Caller& caller, const pgfleet::v1::EndRotationRequest& request) {
  PGF_RETURN_IF_ERROR(RequireRole(caller, Role::kAdmin));
  if (request.user().empty()) return absl::InvalidArgumentError("user is required");
  SecretChanges changes;
  changes.remove_overlaps.push_back(request.user());
  return Commit(caller, request.environment(), changes, request.message(), "secrets.rotation_end",
                absl::StrCat("ended the rotation of user ", request.user()));
}

absl::StatusOr<pgfleet::v1::ListSecretsResponse> SecretsApi::ListSecrets(
    const Caller& caller, const pgfleet::v1::ListSecretsRequest& request) {
  PGF_RETURN_IF_ERROR(RequireRole(caller, Role::kViewer));
  if (request.environment().empty()) return absl::InvalidArgumentError("environment is required");
  PGF_ASSIGN_OR_RETURN(ConfigVersionRow newest, NewestVersion(store_, request.environment()));
  pgfleet::v1::ListSecretsResponse response;
  response.set_version(newest.version);
  for (const ConfigFileRow& file : newest.files) *response.add_files() = FileInfoToProto(file);
  for (const CredentialOverlapRow& overlap : newest.credential_overlaps) {
    pgfleet::v1::CredentialOverlapInfo* info = response.add_credential_overlaps();
    info->set_user(overlap.user);
    info->set_expires_unix_ms(overlap.expires_unix_ms);
  }
  // User names are not secret; their secrets are.
  if (absl::StatusOr<config::AuthFile> entries = CurrentAuthFile(newest); entries.ok()) {
    for (const auto& [user, entry] : *entries) response.add_auth_file_users(user);
  }
  return response;
}

}  // namespace pgfleet::controller
