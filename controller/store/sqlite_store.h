// The SQL implementation of Store: one connection to one SQLite file (the default) or to one
// PostgreSQL database (OpenPostgres, --db=postgres://...), guarded by a mutex, every mutation one
// short write transaction (SQLite: BEGIN IMMEDIATE; PostgreSQL: BEGIN and an advisory lock that
// serializes the writers of every controller on that database), every query a prepared
// statement with bound parameters. The queries are written once for both (sql_stmt.h); the
// migrations are SQLite's, translated for PostgreSQL by migration_dialect.h.
//
// Behaviour beyond store.h's contract:
//  * Empty environment names and agent ids are InvalidArgument.
//  * RecordAgentHello creates the agent's environment if it does not exist yet (like
//    AddConfigVersion does), and clears the agent's pin when its environment changes (a pin
//    always names a version of the agent's own environment).
//  * MarkAgentDisconnected / TouchAgent / RecordAgentConfigResult / SetAgentPin /
//    RecordCommand / RecordMetrics: NotFound for an unknown agent. SetAgentPin: NotFound for an
//    unknown version, InvalidArgument for a version of another environment.
//  * RecordCommandResult: NotFound for an unknown command, FailedPrecondition when the
//    command already has a result.
//  * ListCommands / ListAudit: limit <= 0 means no limit.
//  * ListConfigVersions / ListAgents / ListMetrics of an unknown environment or agent: empty.
//  * ListMetrics returns buckets starting at or after since_ms; PruneMetrics deletes buckets
//    starting before older_than_ms. Buckets are floor(now_ms / 60000) * 60000.
//  * CreateToken: token_sha256 must be 64 hex digits (stored lowercase; LookupToken accepts
//    either case); AlreadyExists for a known hash (revoked ones included).
//  * RecordMetrics and TouchAgent are write-behind. Every connected agent calls both once per
//    metrics interval (1,000 agents at 1 s: 2,000 calls a second), and one transaction each
//    cost about a third of the controller's CPU (bench/controller_scale.sh). They are checked
//    at once (NotFound for an unknown agent) and kept in memory, then written together in one
//    transaction by the first of them that comes a second (kWriteBehindDelay) or more after
//    the oldest pending one, by ListMetrics, PruneMetrics and ExecForTesting, and at close.
//    GetAgent and ListAgents see pending touches. A crash loses at most that delay's worth of
//    samples and last_seen updates; a failed flush (full disk) drops them and is returned to the
//    caller that triggered it.
//  * Storage errors (SQLITE_FULL: ResourceExhausted, I/O: Internal, ...) come back as errors
//    with SQLite's message, and the transaction is rolled back. PostgreSQL's carry the SQLSTATE
//    in the message (postgres_connection.h says how codes map).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "controller/store/store.h"

namespace pgfleet::controller::sql {
class Connection;
}  // namespace pgfleet::controller::sql

namespace pgfleet::controller {

struct AppliedMigration {
  int version = 0;
  std::string name;
  int64_t applied_unix_ms = 0;
};

// One schema migration: migrations/NNNN_name.sql.
struct Migration {
  int version = 0;
  std::string name;
  std::string sql;
};

class SqliteStore final : public Store {
 public:
  // See OpenSqliteStore in store.h.
  static absl::StatusOr<std::unique_ptr<SqliteStore>> Open(const std::string& path);
  // Open with an explicit migration list (strictly increasing versions) instead of the
  // embedded one. For tests of the migration runner.
  static absl::StatusOr<std::unique_ptr<SqliteStore>> OpenWithMigrations(
      const std::string& path, const std::vector<Migration>& migrations);
  // The migrations compiled into this binary (migrations/*.sql), by version.
  static std::vector<Migration> EmbeddedMigrations();

  // Opens the PostgreSQL database named by `conninfo` (a postgres:// or postgresql:// URI, or
  // libpq's key=value form) and applies the same migrations, translated for PostgreSQL
  // (migration_dialect.h), under the writers' advisory lock so concurrent controllers apply
  // each once.
  static absl::StatusOr<std::unique_ptr<SqliteStore>> OpenPostgres(const std::string& conninfo);
  static absl::StatusOr<std::unique_ptr<SqliteStore>> OpenPostgresWithMigrations(
      const std::string& conninfo, const std::vector<Migration>& migrations);

  // The highest migration version compiled into this binary.
  static int LatestSchemaVersion();

  ~SqliteStore() override;
  SqliteStore(const SqliteStore&) = delete;
  SqliteStore& operator=(const SqliteStore&) = delete;

  // Environments.
  absl::Status EnsureEnvironment(const std::string& name, int64_t now_ms) override;
  absl::StatusOr<std::vector<EnvironmentRow>> ListEnvironments() override;
  absl::StatusOr<EnvironmentRow> GetEnvironment(const std::string& name) override;
  absl::Status SetDesiredVersion(const std::string& environment, uint64_t version,
                                 std::optional<uint64_t> expected_previous) override;

  // Config versions.
  using Store::AddConfigVersion;
  absl::StatusOr<ConfigVersionRow> AddConfigVersion(const ConfigVersionDraft& draft,
                                                    int64_t now_ms) override;
  // Secret material (sqlite_secrets_store.cc).
  void SetSecretsKeyring(std::shared_ptr<const secrets::Keyring> keyring) override;
  absl::StatusOr<ReencryptResult> ReencryptSecrets() override;
  absl::StatusOr<ConfigVersionRow> GetConfigVersion(uint64_t version) override;
  absl::StatusOr<std::vector<ConfigVersionRow>> ListConfigVersions(
      const std::string& environment) override;

  // Agents.
  absl::Status RecordAgentHello(const AgentRow& hello, int64_t now_ms) override;
  absl::Status MarkAgentDisconnected(const std::string& agent_id, int64_t now_ms) override;
  absl::Status MarkAllAgentsDisconnected() override;
  absl::Status TouchAgent(const std::string& agent_id, int64_t now_ms) override;
  absl::Status RecordAgentConfigResult(const std::string& agent_id, uint64_t version,
                                       const std::string& sha256, const std::string& error,
                                       int64_t now_ms) override;
  absl::Status SetAgentPin(const std::string& agent_id, std::optional<uint64_t> version) override;
  absl::Status SetAgentLabelOverrides(
      const std::string& agent_id,
      const std::map<std::string, std::optional<std::string>>& overrides) override;
  absl::StatusOr<AgentRow> GetAgent(const std::string& agent_id) override;
  absl::StatusOr<std::vector<AgentRow>> ListAgents(const std::string& environment) override;

  // Commands.
  absl::StatusOr<uint64_t> RecordCommand(const std::string& agent_id, const std::string& kind,
                                         const std::string& args, const std::string& actor,
                                         int64_t now_ms) override;
  absl::Status RecordCommandResult(uint64_t command_id, bool ok, const std::string& error,
                                   int64_t now_ms) override;
  absl::StatusOr<std::vector<CommandRow>> ListCommands(const std::string& agent_id,
                                                       int limit) override;

  // Audit.
  absl::Status Audit(const std::string& actor, const std::string& action, const std::string& target,
                     const std::string& details, int64_t now_ms) override;
  absl::StatusOr<std::vector<AuditEntry>> ListAudit(int limit) override;

  // Metrics.
  absl::Status RecordMetrics(const std::string& agent_id, int64_t now_ms,
                             const std::string& report) override;
  absl::StatusOr<std::vector<MetricsSample>> ListMetrics(const std::string& agent_id,
                                                         int64_t since_ms) override;
  absl::Status PruneMetrics(int64_t older_than_ms) override;

  // Tokens.
  absl::StatusOr<TokenRow> CreateToken(const TokenRow& token,
                                       const std::string& token_sha256) override;
  absl::StatusOr<TokenRow> LookupToken(const std::string& token_sha256) override;
  absl::StatusOr<std::vector<TokenRow>> ListTokens() override;
  absl::StatusOr<TokenRow> RevokeToken(uint64_t id, int64_t now_ms) override;
  absl::Status TouchToken(uint64_t id, int64_t now_ms) override;

  // Rollouts (sqlite_rollout_store.cc).
  absl::StatusOr<RolloutRow> CreateRollout(const RolloutRow& rollout,
                                           const std::vector<RolloutAgentRow>& agents) override;
  absl::Status UpdateRollout(const RolloutRow& rollout) override;
  absl::Status UpdateRolloutAgent(const RolloutAgentRow& agent) override;
  absl::Status UpdateRolloutAgents(const std::vector<AgentPin>& pins,
                                   const std::vector<RolloutAgentRow>& agents) override;
  absl::StatusOr<RolloutRow> GetRollout(uint64_t id) override;
  absl::StatusOr<std::vector<RolloutRow>> ListRollouts(const std::string& environment,
                                                       bool active_only) override;
  absl::StatusOr<std::vector<RolloutAgentRow>> ListRolloutAgents(uint64_t rollout_id) override;
  absl::StatusOr<bool> HasSucceededRollout(const std::string& environment,
                                           const std::string& sha256) override;
  absl::Status SetEnvironmentUpstream(const std::string& environment,
                                      const std::string& upstream) override;
  absl::StatusOr<std::string> GetEnvironmentUpstream(const std::string& environment) override;

  // Maintenance windows (sqlite_maintenance_store.cc).
  absl::StatusOr<WindowRow> CreateWindow(const WindowRow& window) override;
  absl::Status UpdateWindow(const WindowRow& window) override;
  absl::StatusOr<WindowRow> GetWindow(uint64_t id) override;
  absl::StatusOr<std::vector<WindowRow>> ListWindows(const std::string& environment,
                                                     bool open_only) override;

  // Leadership (sqlite_leader_store.cc).
  absl::StatusOr<LeaderLease> AcquireLeadership(const std::string& holder, int64_t now_ms,
                                                int64_t lease_ms) override;
  absl::StatusOr<LeaderLease> GetLeaderLease() override;

  // Diagnostics and tests.
  // PRAGMA integrity_check's result: "ok" for a healthy file, else SQLite's findings.
  absl::StatusOr<std::string> IntegrityCheck();
  // The rows of schema_migrations, by version.
  absl::StatusOr<std::vector<AppliedMigration>> AppliedMigrations();
  // Runs parameterless SQL on the store's connection (e.g. PRAGMA max_page_count to simulate
  // a full disk, or planting rows). Tests only.
  absl::Status ExecForTesting(const std::string& sql);

 private:
  explicit SqliteStore(std::unique_ptr<sql::Connection> connection);
  static absl::StatusOr<std::unique_ptr<SqliteStore>> OpenOn(
      std::unique_ptr<sql::Connection> connection, const std::string& label,
      const std::vector<Migration>& migrations);
  absl::Status Migrate(const std::vector<Migration>& migrations) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // A version's files and overlaps (sqlite_secrets_store.cc). Insert seals them with the
  // current key; Load opens them when `with_content` (else metadata only).
  absl::Status InsertConfigSecrets(uint64_t version, const std::vector<ConfigFileRow>& files,
                                   const std::vector<CredentialOverlapRow>& overlaps)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status LoadConfigSecrets(ConfigVersionRow& row, bool with_content)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Write-behind of RecordMetrics/TouchAgent (see the top of this file).
  absl::Status RequireKnownAgent(const std::string& agent_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status FlushWriteBehindIfDue() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status FlushWriteBehind() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ApplyPendingTouches(std::vector<AgentRow>& agents) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Mutex mu_;
  const std::unique_ptr<sql::Connection> connection_;
  sql::Connection* const db_ ABSL_PT_GUARDED_BY(mu_);  // connection_; every use holds mu_.

  struct PendingSample {
    int64_t sample_unix_ms = 0;
    std::string report;
  };
  // By (agent id, minute bucket): the newest report of the minute, as the table keeps it.
  std::map<std::pair<std::string, int64_t>, PendingSample> pending_metrics_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int64_t> pending_touches_ ABSL_GUARDED_BY(mu_);  // Newest last_seen.
  absl::Time oldest_pending_ ABSL_GUARDED_BY(mu_);  // Meaningful while anything is pending.
  // Agents known to exist (agents are never deleted), so the write-behind calls can answer
  // NotFound without a query per call.
  std::set<std::string> known_agents_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<const secrets::Keyring> keyring_ ABSL_GUARDED_BY(mu_) =
      std::make_shared<secrets::Keyring>();
};

}  // namespace pgfleet::controller
