// Rows of the controller's store that several parts read: environments, config versions and
// agents. Apart from store.h so the engines' narrow store interfaces can name them.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/config/overlay.h"

namespace pgfleet::controller {

struct EnvironmentRow {
  std::string name;
  uint64_t desired_version = 0;  // 0: none yet.
  int64_t created_unix_ms = 0;
};

// A credential or TLS file of a config version (migrations/0005_secrets.sql). `content` is
// secret: stored only encrypted, never shown by the API (only sha256, size, certificate facts).
struct ConfigFileRow {
  std::string key;      // The [pgbouncer] key it backs: auth_file, client_tls_cert_file...
  std::string content;  // Plaintext; empty in list results and when it cannot be decrypted.
  // Keyed fingerprint of content (secrets::SecretKey::Fingerprint, 64 hex digits): what the
  // API, CLI, dashboard and logs show. Never a plain sha256, which would let anyone who reads
  // them confirm a guessed password offline.
  std::string fingerprint;
  // Push input only: the sha256 the client computed over content, checked on arrival (a
  // transfer check), never stored or shown.
  std::string claimed_sha256;
  int64_t size = 0;
  std::string cert_subject;            // Certificates: the first one's subject.
  int64_t cert_not_after_unix_ms = 0;  // Certificates: its expiry (0: not a certificate).
};

// A password rotation in progress: `previous_secret` is accepted too until the expiry.
struct CredentialOverlapRow {
  std::string user;
  std::string previous_secret;  // As an auth_file holds it. Secret, like file contents.
  int64_t expires_unix_ms = 0;
  // Keyed fingerprint of previous_secret, set by the store while it adds a version (the
  // content address covers it); not stored.
  std::string fingerprint;
};

// Immutable once written. `version` is a global, increasing id; `sha256` addresses content: the
// ini's sha256 for a version without files or overlaps, else a digest over the ini and every
// file's and overlap's fingerprint (so the same ini with a new password is a new version).
struct ConfigVersionRow {
  uint64_t version = 0;
  std::string environment;
  std::string sha256;
  std::string ini_text;  // Empty in list results.
  std::string author;
  std::string message;
  int64_t created_unix_ms = 0;
  uint64_t parent_version = 0;       // The environment's newest version before this one (0: none).
  std::vector<ConfigFileRow> files;  // By key. Contents only from GetConfigVersion.
  std::vector<CredentialOverlapRow> credential_overlaps;  // By user.
  // Set by GetConfigVersion when files or overlaps could not be decrypted (no key, another key):
  // their contents are then empty and the version must not be sent to agents.
  std::string secrets_error;
  // Per-host edits on top of ini_text (controller/config/overlays.h); each agent runs its
  // render. Part of the content address: see ConfigContentSha256.
  std::vector<config::ConfigOverlay> overlays;
};

struct AgentRow {
  std::string agent_id;
  std::string environment;
  // Effective labels, the ones selectors match: reported_labels with label_overrides applied.
  std::map<std::string, std::string> labels;
  std::map<std::string, std::string> reported_labels;  // From the agent's hello (--labels).
  // An operator's labels (fleetctl agents label): a value wins over the reported one, nullopt
  // removes a reported label. They survive the agent's reconnects.
  std::map<std::string, std::optional<std::string>> label_overrides;
  std::string agent_version;
  std::string hostname;
  bool connected = false;
  int64_t first_seen_unix_ms = 0;
  int64_t last_seen_unix_ms = 0;
  uint64_t applied_version = 0;
  std::string applied_sha256;
  std::string last_error;  // Last NACK reason; cleared by an ACK.
  std::optional<uint64_t> pinned_version;
};

// Reported labels with the operator's overrides applied.
inline std::map<std::string, std::string> EffectiveLabels(
    const std::map<std::string, std::string>& reported,
    const std::map<std::string, std::optional<std::string>>& overrides) {
  std::map<std::string, std::string> labels = reported;
  for (const auto& [key, value] : overrides) {
    if (value.has_value()) {
      labels[key] = *value;
    } else {
      labels.erase(key);
    }
  }
  return labels;
}

}  // namespace pgfleet::controller
