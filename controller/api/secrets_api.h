// Credentials and TLS material (issue 18, part 1): the SecretsService calls, and the one path by
// which any new config version gets its files and rotation overlaps (AddDerivedVersion: from
// the environment's newest version, with changes applied and checked). Secret material goes in
// here and out only to agents (controller/registry/); the API shows fingerprints.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "controller/api/fleet_api.h"
#include "controller/clock.h"
#include "controller/store/store.h"
#include "pgfleet/v1/fleet.pb.h"

namespace pgfleet::controller {

// Changes to the newest version's files and overlaps. Empty: everything is inherited.
struct SecretChanges {
  std::vector<ConfigFileRow> set_files;  // key + content; replaces the file of that key.
  std::vector<std::string> remove_files;
  std::vector<CredentialOverlapRow> set_overlaps;  // Replaces the user's overlap.
  std::vector<std::string> remove_overlaps;
  bool empty() const {
    return set_files.empty() && remove_files.empty() && set_overlaps.empty() &&
           remove_overlaps.empty();
  }
};

// The files and overlaps fields of a PushConfig; InvalidArgument-free (checked later).
SecretChanges SecretChangesFromPush(const pgfleet::v1::PushConfigRequest& request);

// Stores a new version of `environment`: `ini_text` (nullopt: the newest version's) with
// `config_overlays` (null: the newest version's per-host overlays), the newest version's files
// and rotation overlaps with `changes` applied. Checks the result (file keys, sha256s
// given with contents, the auth_file's syntax, TLS files of a side that changed: parse, key
// matches, not expired, CA verifies) and names the file in errors. Retries once when another
// version arrived meanwhile. Warnings (a certificate expiring within 30 days) go to `warnings`.
// `now_ms`: the creation time (and the clock TLS expiry is judged by), from the caller's Clock.
absl::StatusOr<ConfigVersionRow> AddDerivedVersion(
    Store& store, int64_t now_ms, const std::string& environment,
    const std::optional<std::string>& ini_text,
    const std::vector<config::ConfigOverlay>* config_overlays, const SecretChanges& changes,
    const std::string& author, const std::string& message, std::vector<std::string>* warnings);

// For the audit log and logs: " files=auth_file:1a2b3c4d5e6f,... overlaps=app" (fingerprints
// and user names only), or "" for a version without secret material.
std::string DescribeSecrets(const ConfigVersionRow& row);

class SecretsApi {
 public:
  SecretsApi(Store& store, const Clock& clock) : store_(store), clock_(clock) {}

  absl::StatusOr<pgfleet::v1::SecretsChange> SetUserSecret(
      const Caller& caller, const pgfleet::v1::SetUserSecretRequest& request);
  absl::StatusOr<pgfleet::v1::SecretsChange> SetTlsFiles(
      const Caller& caller, const pgfleet::v1::SetTlsFilesRequest& request);
  absl::StatusOr<pgfleet::v1::SecretsChange> BeginRotation(
      const Caller& caller, const pgfleet::v1::BeginRotationRequest& request);
  absl::StatusOr<pgfleet::v1::SecretsChange> EndRotation(
      const Caller& caller, const pgfleet::v1::EndRotationRequest& request);
  absl::StatusOr<pgfleet::v1::ListSecretsResponse> ListSecrets(
      const Caller& caller, const pgfleet::v1::ListSecretsRequest& request);

 private:
  // Stores the change as a new version, audits it (fingerprints only) and describes it.
  absl::StatusOr<pgfleet::v1::SecretsChange> Commit(
      const Caller& caller, const std::string& environment, const SecretChanges& changes,
      const std::string& message, const std::string& action, const std::string& what);

  Store& store_;
  const Clock& clock_;
};

}  // namespace pgfleet::controller
