// The controller's persistent state. Pure virtual so the reconcilers and services can be
// tested against it; SqliteStore is the one implementation (a real SQLite file).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "controller/maintenance/maintenance_store.h"
#include "controller/rollout/rollout_store.h"
#include "controller/secrets/secret_box.h"
#include "controller/store/rows.h"

namespace pgfleet::controller {

struct CommandRow {
  uint64_t id = 0;
  std::string agent_id;
  std::string kind;  // "pause", "resume", "reload".
  std::string args;  // Human-readable, e.g. "db=appdb deadline=900s".
  std::string actor;
  int64_t created_unix_ms = 0;
  std::optional<bool> ok;  // nullopt while no result came back.
  std::string error;
  int64_t finished_unix_ms = 0;
};

struct AuditEntry {
  uint64_t id = 0;
  int64_t unix_ms = 0;
  std::string actor;
  std::string action;
  std::string target;
  std::string details;
};

struct MetricsSample {
  std::string agent_id;
  int64_t bucket_unix_ms = 0;  // Start of the minute the sample stands for.
  std::string report;          // A serialized pgfleet.v1.MetricsReport (the newest of the minute).
};

// Ordered: a role may do what the roles before it may. kAgent is below every operator role and
// is refused by the operators' API altogether (controller/auth/tokens.cc): its tokens only join
// agents' streams.
enum class Role { kAgent, kViewer, kOperator, kAdmin };
const char* RoleName(Role role);
absl::StatusOr<Role> ParseRole(const std::string& name);

// Lowercase hex sha256 of `data`: config content addresses and API token hashes.
std::string Sha256Hex(const std::string& data);

struct TokenRow {
  uint64_t id = 0;
  std::string name;
  Role role = Role::kViewer;
  std::string environment;  // Agent tokens: the one environment they may join. Others: empty.
  int64_t created_unix_ms = 0;
  std::string created_by;
  int64_t expires_unix_ms = 0;    // 0: never.
  int64_t last_used_unix_ms = 0;  // 0: never.
  int64_t revoked_unix_ms = 0;    // 0: not revoked.
  bool bootstrap = false;         // Registered from PGFLEET_BOOTSTRAP_TOKEN.
};

// A config version to add, with its credential and TLS files and rotation overlaps (complete:
// nothing is inherited here; the API decides what a push inherits).
struct ConfigVersionDraft {
  std::string environment;
  std::string ini_text;
  std::vector<ConfigFileRow> files;  // key and content; sha256/size/cert facts are derived.
  std::vector<CredentialOverlapRow> credential_overlaps;
  std::vector<config::ConfigOverlay> overlays;  // Per-host edits on top of ini_text.
  std::string author;
  std::string message;
  // When set, Aborted unless this is still the environment's newest version (0: none): the
  // draft was derived from it, and a concurrent push must not be silently overwritten.
  std::optional<uint64_t> expected_parent;
};

// Leadership of the controllers sharing one database (migrations/0010_leader_lease.sql).
struct LeaderLease {
  std::string holder;          // The controller's id (e.g. host:port).
  uint64_t fencing_token = 0;  // Grows at every change of leader.
  int64_t acquired_unix_ms = 0;
  int64_t expires_unix_ms = 0;
};

// What ReencryptSecrets did.
struct ReencryptResult {
  int reencrypted = 0;  // Values sealed by the previous key, now sealed by the current one.
  int unreadable = 0;   // Values sealed by a key the keyring does not have.
};

// The content address of a version (ConfigVersionRow::sha256): the base's sha256 when it has
// no overlays, files or rotation overlaps (so older versions keep their hashes), else the
// sha256 of all of them together (overlays in their canonical text, config::FormatOverlays;
// files and overlaps by their keyed fingerprints, which must be set).
std::string ConfigContentSha256(const std::string& ini_text,
                                const std::vector<config::ConfigOverlay>& overlays = {},
                                const std::vector<ConfigFileRow>& files = {},
                                const std::vector<CredentialOverlapRow>& overlaps = {});

// Store includes the rollout state (RolloutStore) and maintenance windows so one SQLite file holds
// everything.
class Store : public RolloutStore, public MaintenanceStore {
 public:
  ~Store() override = default;

  // Environments.
  virtual absl::Status EnsureEnvironment(const std::string& name, int64_t now_ms) = 0;
  virtual absl::StatusOr<std::vector<EnvironmentRow>> ListEnvironments() = 0;
  virtual absl::StatusOr<EnvironmentRow> GetEnvironment(
      const std::string& name) override = 0;  // NotFound
  // Compare-and-set of the desired version: Aborted when the current desired version is not
  // `expected_previous` (when given). NotFound for an unknown environment or version;
  // InvalidArgument when the version belongs to another environment.
  virtual absl::Status SetDesiredVersion(const std::string& environment, uint64_t version,
                                         std::optional<uint64_t> expected_previous) override = 0;

  // Config versions. Pushing content (base text, overlays, files and rotation overlaps) whose
  // sha256 already exists in the environment returns that existing version instead of a new
  // one. Creates the environment if needed.
  absl::StatusOr<ConfigVersionRow> AddConfigVersion(const std::string& environment,
                                                    const std::string& ini_text,
                                                    const std::string& author,
                                                    const std::string& message, int64_t now_ms) {
    ConfigVersionDraft draft;
    draft.environment = environment;
    draft.ini_text = ini_text;
    draft.author = author;
    draft.message = message;
    return AddConfigVersion(draft, now_ms);
  }
  // The same with files and overlaps, encrypted with the keyring's current key:
  // FailedPrecondition (saying how to make a key) when there is secret material and no key.
  virtual absl::StatusOr<ConfigVersionRow> AddConfigVersion(const ConfigVersionDraft& draft,
                                                            int64_t now_ms) = 0;
  // The key(s) for secret material. Without one, versions with files cannot be added, and
  // existing ones load with secrets_error set.
  virtual void SetSecretsKeyring(std::shared_ptr<const secrets::Keyring> keyring) = 0;
  // Re-seals every value sealed by the keyring's previous key with its current key (key
  // rotation), in one transaction.
  virtual absl::StatusOr<ReencryptResult> ReencryptSecrets() = 0;
  virtual absl::StatusOr<ConfigVersionRow> GetConfigVersion(
      uint64_t version) override = 0;  // NotFound
  // Newest first, ini_text left empty; files and overlaps without contents.
  virtual absl::StatusOr<std::vector<ConfigVersionRow>> ListConfigVersions(
      const std::string& environment) = 0;

  // Agents.
  // Records a hello: creates the agent (first_seen = now) or updates identity fields,
  // environment, version and applied version; sets connected and last_seen.
  virtual absl::Status RecordAgentHello(const AgentRow& hello, int64_t now_ms) = 0;
  virtual absl::Status MarkAgentDisconnected(const std::string& agent_id, int64_t now_ms) = 0;
  // At controller start nobody is connected yet.
  virtual absl::Status MarkAllAgentsDisconnected() = 0;
  virtual absl::Status TouchAgent(const std::string& agent_id, int64_t now_ms) = 0;
  // ACK (error empty): applied_version/sha256 set, last_error cleared. NACK: last_error set,
  // applied version unchanged.
  virtual absl::Status RecordAgentConfigResult(const std::string& agent_id, uint64_t version,
                                               const std::string& sha256, const std::string& error,
                                               int64_t now_ms) = 0;
  virtual absl::Status SetAgentPin(const std::string& agent_id,
                                   std::optional<uint64_t> version) override = 0;
  // Replaces the agent's operator labels (AgentRow::label_overrides). NotFound for an unknown
  // agent.
  virtual absl::Status SetAgentLabelOverrides(
      const std::string& agent_id,
      const std::map<std::string, std::optional<std::string>>& overrides) = 0;
  virtual absl::StatusOr<AgentRow> GetAgent(const std::string& agent_id) = 0;  // NotFound
  // environment empty: all agents. Sorted by agent_id.
  virtual absl::StatusOr<std::vector<AgentRow>> ListAgents(
      const std::string& environment) override = 0;

  // Commands sent to agents, with their results.
  virtual absl::StatusOr<uint64_t> RecordCommand(const std::string& agent_id,
                                                 const std::string& kind, const std::string& args,
                                                 const std::string& actor,
                                                 int64_t now_ms) override = 0;
  virtual absl::Status RecordCommandResult(uint64_t command_id, bool ok, const std::string& error,
                                           int64_t now_ms) = 0;
  // Newest first; agent_id empty: all agents.
  virtual absl::StatusOr<std::vector<CommandRow>> ListCommands(const std::string& agent_id,
                                                               int limit) = 0;

  // Audit log of every mutating call.
  virtual absl::Status Audit(const std::string& actor, const std::string& action,
                             const std::string& target, const std::string& details,
                             int64_t now_ms) override = 0;
  virtual absl::StatusOr<std::vector<AuditEntry>> ListAudit(int limit) = 0;  // Newest first.

  // Maintenance windows: declared again because both engines' interfaces have it.
  absl::StatusOr<std::vector<WindowRow>> ListWindows(const std::string& environment,
                                                     bool open_only) override = 0;

  // Metrics, downsampled to one sample per agent per minute (the newest report wins).
  virtual absl::Status RecordMetrics(const std::string& agent_id, int64_t now_ms,
                                     const std::string& report) = 0;
  // Oldest first.
  virtual absl::StatusOr<std::vector<MetricsSample>> ListMetrics(const std::string& agent_id,
                                                                 int64_t since_ms) = 0;
  virtual absl::Status PruneMetrics(int64_t older_than_ms) = 0;

  // API tokens, stored as sha256 hex of the token (never the token itself).
  // Stores `token` (its name, role, environment, created_unix_ms, created_by, expires_unix_ms
  // and bootstrap; the rest is ignored) and returns it with its id. InvalidArgument when an
  // agent token has no environment or another role has one. Creating an admin token that is
  // not the bootstrap one revokes every bootstrap token in the same transaction; creating a
  // bootstrap token once another admin token exists is FailedPrecondition.
  virtual absl::StatusOr<TokenRow> CreateToken(const TokenRow& token,
                                               const std::string& token_sha256) = 0;
  // An operator token without expiry (the historic form).
  absl::Status AddToken(const std::string& name, const std::string& token_sha256, Role role,
                        int64_t now_ms) {
    TokenRow token;
    token.name = name;
    token.role = role;
    token.created_unix_ms = now_ms;
    return CreateToken(token, token_sha256).status();
  }
  // Revoked and expired tokens too: the caller decides (controller/auth/tokens.cc).
  virtual absl::StatusOr<TokenRow> LookupToken(const std::string& token_sha256) = 0;  // NotFound
  virtual absl::StatusOr<std::vector<TokenRow>> ListTokens() = 0;                     // By id.
  // NotFound for an unknown id; FailedPrecondition when it is already revoked.
  virtual absl::StatusOr<TokenRow> RevokeToken(uint64_t id, int64_t now_ms) = 0;
  virtual absl::Status TouchToken(uint64_t id, int64_t now_ms) = 0;

  // Leadership (several controllers, one leader). Takes the lease when nobody holds it or the
  // holder's lease expired (a new, larger fencing token: a takeover), or renews it when this
  // store holds it (same token), until now_ms + lease_ms. From then on every write of this store
  // is fenced: checked, in its own transaction, against the lease's token, and refused with
  // FailedPrecondition once another controller took over. FailedPrecondition (naming the
  // holder) when another controller's lease is live, and when this store was deposed.
  virtual absl::StatusOr<LeaderLease> AcquireLeadership(const std::string& holder, int64_t now_ms,
                                                        int64_t lease_ms) {
    (void)holder, (void)now_ms, (void)lease_ms;
    return absl::UnimplementedError("this store has no leader election");
  }
  // The lease as stored; NotFound before anyone took it.
  virtual absl::StatusOr<LeaderLease> GetLeaderLease() {
    return absl::UnimplementedError("this store has no leader election");
  }
};

// Opens (creating if needed) the SQLite file at `path` in WAL mode with foreign keys and a
// busy timeout, and applies migrations/NNNN_*.sql in order, each in its own transaction,
// recording them in schema_migrations. FailedPrecondition when the file's schema is newer
// than this binary knows.
absl::StatusOr<std::unique_ptr<Store>> OpenSqliteStore(const std::string& path);

// --db: a postgres:// or postgresql:// URI opens that PostgreSQL database (the same schema,
// migrations and behaviour; see sqlite_store.h); anything else is a SQLite file path.
absl::StatusOr<std::unique_ptr<Store>> OpenStore(const std::string& db);
// `db` for logs: a PostgreSQL URI without its password.
std::string StoreDisplayName(const std::string& db);

}  // namespace pgfleet::controller
