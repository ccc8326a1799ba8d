#include "controller/store/sqlite_store.h"

#include <algorithm>
#include <cctype>
#include <limits>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "controller/store/migration_dialect.h"
#include "controller/store/postgres_connection.h"
#include "controller/store/sqlite_stmt.h"
#include "migrations_embedded.h"  // Generated from migrations/*.sql at build time.

namespace pgfleet::controller {
namespace {

using sql::Stmt;
using sql::Transaction;

constexpr char kComponent[] = "store";
constexpr int64_t kMetricsBucketMs = 60 * 1000;
// How long RecordMetrics/TouchAgent may wait in memory (see sqlite_store.h).
constexpr absl::Duration kWriteBehindDelay = absl::Seconds(1);

constexpr bool EmbeddedMigrationsSorted() {
  int previous = 0;
  for (const auto& migration : migrations::kEmbeddedMigrations) {
    if (migration.version <= previous) return false;
    previous = migration.version;
  }
  return true;
}
static_assert(EmbeddedMigrationsSorted(), "embedded migrations must be strictly increasing");

int64_t NowUnixMs() { return absl::ToUnixMillis(absl::Now()); }

// Start of the minute holding `unix_ms` (floor, also for negative times).
int64_t MinuteBucket(int64_t unix_ms) {
  int64_t minutes = unix_ms / kMetricsBucketMs;
  if (unix_ms % kMetricsBucketMs < 0) --minutes;
  return minutes * kMetricsBucketMs;
}

absl::Status RequireNonEmpty(const char* what, const std::string& value) {
  if (value.empty()) return absl::InvalidArgumentError(absl::StrCat(what, " must not be empty"));
  return absl::OkStatus();
}

// No limit as a number both SQLite and PostgreSQL take (SQLite's -1 is an error in PostgreSQL).
int64_t SqlLimit(int limit) { return limit > 0 ? limit : std::numeric_limits<int64_t>::max(); }

// 64 hex digits, lowercased; nullopt when `hash` is anything else.
std::optional<std::string> NormalizeSha256Hex(const std::string& hash) {
  if (hash.size() != 64) return std::nullopt;
  for (char c : hash) {
    if (!std::isxdigit(static_cast<unsigned char>(c))) return std::nullopt;
  }
  return absl::AsciiStrToLower(hash);
}

absl::Status InsertEnvironmentIfMissing(sql::Connection* db, const std::string& name,
                                        int64_t now_ms) {
  PGF_ASSIGN_OR_RETURN(Stmt stmt, Stmt::Prepare(db,
                                                "INSERT INTO environments (name, created_unix_ms) "
                                                "VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING"));
  stmt.BindText(1, name).BindInt(2, now_ms);
  return stmt.Run();
}

// The environment a config version belongs to; NotFound for an unknown version.
absl::StatusOr<std::string> ConfigVersionEnvironment(sql::Connection* db, uint64_t version) {
  PGF_ASSIGN_OR_RETURN(
      Stmt stmt, Stmt::Prepare(db, "SELECT environment FROM config_versions WHERE version = ?1"));
  stmt.BindU64(1, version);
  PGF_ASSIGN_OR_RETURN(bool row, stmt.Step());
  if (!row) return absl::NotFoundError(absl::StrCat("config version ", version, " not found"));
  return stmt.Text(0);
}

// The environment of an agent; NotFound for an unknown agent.
absl::StatusOr<std::string> AgentEnvironment(sql::Connection* db, const std::string& agent_id) {
  PGF_ASSIGN_OR_RETURN(Stmt stmt,
                       Stmt::Prepare(db, "SELECT environment FROM agents WHERE agent_id = ?1"));
  stmt.BindText(1, agent_id);
  PGF_ASSIGN_OR_RETURN(bool row, stmt.Step());
  if (!row) return absl::NotFoundError(absl::StrCat("agent '", agent_id, "' not found"));
  return stmt.Text(0);
}

// Columns: version, environment, sha256, author, message, created_unix_ms, parent_version,
// overlays_text [, ini_text].
constexpr char kConfigVersionColumns[] =
    "version, environment, sha256, author, message, created_unix_ms, parent_version, "
    "overlays_text";

ConfigVersionRow ReadConfigVersion(const Stmt& stmt, bool with_text) {
  ConfigVersionRow row;
  row.version = stmt.U64(0);
  row.environment = stmt.Text(1);
  row.sha256 = stmt.Text(2);
  row.author = stmt.Text(3);
  row.message = stmt.Text(4);
  row.created_unix_ms = stmt.Int(5);
  row.parent_version = stmt.IsNull(6) ? 0 : stmt.U64(6);
  if (std::string overlays = stmt.Text(7); !overlays.empty()) {
    // Written by FormatOverlays in AddConfigVersion, so it parses; a row that does not (a
    // hand-edited file) keeps its base and logs why.
    absl::StatusOr<std::vector<config::ConfigOverlay>> parsed =
        config::ParseOverlayFile(overlays, absl::StrCat("v", row.version, " overlays"));
    if (parsed.ok()) {
      row.overlays = std::move(*parsed);
    } else {
      PGF_ERROR("store", "config version %d: stored overlays unreadable: %s", row.version,
                parsed.status().message());
    }
  }
  if (with_text) row.ini_text = stmt.Bytes(8);
  return row;
}

// Agents with their labels, one row per label (or one row with NULL labels), ordered by agent
// and key; `where` filters the agents (e.g. "WHERE a.agent_id = ?1"). The filter is repeated in
// both halves rather than applied to a join against a UNION of the two label tables: SQLite
// materialises such a UNION whole before joining, so looking up one agent read every label of
// the fleet (O(fleet) per hello, O(fleet^2) for a fleet connecting).
std::string AgentSelect(absl::string_view where) {
  constexpr absl::string_view kColumns =
      "SELECT a.agent_id, a.environment, a.agent_version, a.hostname, a.connected, "
      "a.first_seen_unix_ms, a.last_seen_unix_ms, a.applied_version, a.applied_sha256, "
      "a.last_error, a.pinned_version, ";
  return absl::StrCat(kColumns, "l.key, l.value, 0 FROM agents a ",
                      "LEFT JOIN agent_labels l ON l.agent_id = a.agent_id ", where, " UNION ALL ",
                      kColumns, "o.key, o.value, 1 FROM agents a ",
                      "JOIN agent_label_overrides o ON o.agent_id = a.agent_id ", where,
                      " ORDER BY 1, 12");
}

absl::StatusOr<std::vector<AgentRow>> ReadAgents(Stmt& stmt) {
  std::vector<AgentRow> agents;
  while (true) {
    PGF_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) break;
    std::string agent_id = stmt.Text(0);
    if (agents.empty() || agents.back().agent_id != agent_id) {
      AgentRow& agent = agents.emplace_back();
      agent.agent_id = std::move(agent_id);
      agent.environment = stmt.Text(1);
      agent.agent_version = stmt.Text(2);
      agent.hostname = stmt.Text(3);
      agent.connected = stmt.Int(4) != 0;
      agent.first_seen_unix_ms = stmt.Int(5);
      agent.last_seen_unix_ms = stmt.Int(6);
      agent.applied_version = stmt.U64(7);
      agent.applied_sha256 = stmt.Text(8);
      agent.last_error = stmt.Text(9);
      if (!stmt.IsNull(10)) agent.pinned_version = stmt.U64(10);
    }
    if (stmt.IsNull(11)) continue;
    AgentRow& agent = agents.back();
    if (stmt.Int(13) == 0) {
      agent.reported_labels[stmt.Text(11)] = stmt.Text(12);
    } else {
      agent.label_overrides[stmt.Text(11)] =
          stmt.IsNull(12) ? std::nullopt : std::optional<std::string>(stmt.Text(12));
    }
  }
  for (AgentRow& agent : agents) {
    agent.labels = EffectiveLabels(agent.reported_labels, agent.label_overrides);
  }
  return agents;
}

// Runs an UPDATE of one agent; NotFound when no agent has that id.
absl::Status UpdateOneAgent(Stmt& stmt, const std::string& agent_id) {
  PGF_RETURN_IF_ERROR(stmt.Run());
  if (stmt.Changes() == 0) {
    return absl::NotFoundError(absl::StrCat("agent '", agent_id, "' not found"));
  }
  return absl::OkStatus();
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Opening and migrations.

absl::StatusOr<std::unique_ptr<Store>> OpenSqliteStore(const std::string& path) {
  PGF_ASSIGN_OR_RETURN(std::unique_ptr<SqliteStore> store, SqliteStore::Open(path));
  return std::unique_ptr<Store>(std::move(store));
}

absl::StatusOr<std::unique_ptr<Store>> OpenStore(const std::string& db) {
  if (!postgres::IsPostgresUri(db)) return OpenSqliteStore(db);
  PGF_ASSIGN_OR_RETURN(std::unique_ptr<SqliteStore> store, SqliteStore::OpenPostgres(db));
  return std::unique_ptr<Store>(std::move(store));
}

std::string StoreDisplayName(const std::string& db) {
  return postgres::IsPostgresUri(db) ? postgres::RedactConnInfo(db) : db;
}

int SqliteStore::LatestSchemaVersion() {
  return std::end(migrations::kEmbeddedMigrations)[-1].version;
}

std::vector<Migration> SqliteStore::EmbeddedMigrations() {
  std::vector<Migration> all;
  for (const migrations::EmbeddedMigration& embedded : migrations::kEmbeddedMigrations) {
    all.push_back(Migration{embedded.version, embedded.name, embedded.sql});
  }
  return all;
}

absl::StatusOr<std::unique_ptr<SqliteStore>> SqliteStore::Open(const std::string& path) {
  return OpenWithMigrations(path, EmbeddedMigrations());
}

namespace {

absl::Status CheckMigrationList(const std::vector<Migration>& migrations) {
  if (migrations.empty()) return absl::InvalidArgumentError("no migrations");
  for (size_t i = 0; i < migrations.size(); ++i) {
    if (migrations[i].version <= (i == 0 ? 0 : migrations[i - 1].version)) {
      return absl::InvalidArgumentError("migration versions must be positive and increasing");
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<SqliteStore>> SqliteStore::OpenWithMigrations(
    const std::string& path, const std::vector<Migration>& migrations) {
  PGF_RETURN_IF_ERROR(CheckMigrationList(migrations));
  absl::StatusOr<std::unique_ptr<sql::Connection>> connection = sqlite::OpenConnection(path);
  if (!connection.ok()) {
    return absl::Status(connection.status().code(),
                        absl::StrCat(path, ": ", connection.status().message()));
  }
  return OpenOn(std::move(*connection), path, migrations);
}

absl::StatusOr<std::unique_ptr<SqliteStore>> SqliteStore::OpenPostgres(
    const std::string& conninfo) {
  return OpenPostgresWithMigrations(conninfo, EmbeddedMigrations());
}

absl::StatusOr<std::unique_ptr<SqliteStore>> SqliteStore::OpenPostgresWithMigrations(
    const std::string& conninfo, const std::vector<Migration>& migrations) {
  PGF_RETURN_IF_ERROR(CheckMigrationList(migrations));
  PGF_ASSIGN_OR_RETURN(std::unique_ptr<sql::Connection> connection,
                       postgres::OpenConnection(conninfo));
  return OpenOn(std::move(connection), postgres::RedactConnInfo(conninfo), migrations);
}

SqliteStore::SqliteStore(std::unique_ptr<sql::Connection> connection)
    : connection_(std::move(connection)), db_(connection_.get()) {}

absl::StatusOr<std::unique_ptr<SqliteStore>> SqliteStore::OpenOn(
    std::unique_ptr<sql::Connection> connection, const std::string& label,
    const std::vector<Migration>& migrations) {
  std::unique_ptr<SqliteStore> store(new SqliteStore(std::move(connection)));
  {
    absl::MutexLock lock(&store->mu_);
    absl::Status status = store->Migrate(migrations);
    if (!status.ok()) {
      return absl::Status(status.code(), absl::StrCat(label, ": ", status.message()));
    }
  }
  PGF_INFO(kComponent, "opened %s (schema version %d)", label, migrations.back().version);
  return store;
}

SqliteStore::~SqliteStore() {
  absl::MutexLock lock(&mu_);
  if (absl::Status flushed = FlushWriteBehind(); !flushed.ok()) {
    PGF_ERROR(kComponent, "writing the last metrics at close: %s", flushed.message());
  }
  // connection_ closes after this.
}

absl::Status SqliteStore::Migrate(const std::vector<Migration>& migrations) {
  {
    // Under the writers' lock: two PostgreSQL controllers starting at once would otherwise
    // race on creating the table.
    PGF_ASSIGN_OR_RETURN(Transaction txn, Transaction::BeginImmediate(db_));
    // SQLite's INTEGER is 64 bits; PostgreSQL's is 32 (too small for Unix milliseconds).
    const char* integer = db_->dialect() == sql::Dialect::kPostgres ? "BIGINT" : "INTEGER";
    PGF_RETURN_IF_ERROR(sql::ExecScript(
        db_,
        absl::StrCat("CREATE TABLE IF NOT EXISTS schema_migrations (  version ", integer,
                     " PRIMARY KEY,  name TEXT NOT NULL,  applied_unix_ms ", integer, " NOT NULL)"),
        "create schema_migrations"));
    PGF_RETURN_IF_ERROR(txn.Commit());
  }
  int current = 0;
  {
    PGF_ASSIGN_OR_RETURN(
        Stmt stmt, Stmt::Prepare(db_, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations"));
    PGF_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (row) current = static_cast<int>(stmt.Int(0));
  }
  const int latest = migrations.back().version;
  if (current > latest) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "database schema version %d is newer than this pgfleet-controller knows (%d); "
        "upgrade the controller",
        current, latest));
  }

  for (const Migration& migration : migrations) {
    const std::string label =
        absl::StrFormat("migration %04d_%s", migration.version, migration.name);
    PGF_ASSIGN_OR_RETURN(Transaction txn, Transaction::BeginImmediate(db_));
    {
      // Checked under the write lock, so two controllers opening one file at once do not
      // both apply a migration.
      PGF_ASSIGN_OR_RETURN(
          Stmt stmt, Stmt::Prepare(db_, "SELECT 1 FROM schema_migrations WHERE version = ?1"));
      stmt.BindInt(1, migration.version);
      PGF_ASSIGN_OR_RETURN(bool applied, stmt.Step());
      if (applied) continue;  // ~Transaction ends the (empty) transaction.
    }
    if (db_->dialect() == sql::Dialect::kPostgres) {
      PGF_ASSIGN_OR_RETURN(std::string translated, TranslateMigrationForPostgres(migration.sql));
      PGF_RETURN_IF_ERROR(sql::ExecScript(db_, translated, label));
    } else {
      PGF_RETURN_IF_ERROR(sql::ExecScript(db_, migration.sql, label));
    }
    {
      PGF_ASSIGN_OR_RETURN(Stmt stmt, Stmt::Prepare(db_,
                                                    "INSERT INTO schema_migrations "
                                                    "(version, name, applied_unix_ms) "
                                                    "VALUES (?1, ?2, ?3)"));
      stmt.BindInt(1, migration.version).BindText(2, migration.name).BindInt(3, NowUnixMs());
      PGF_RETURN_IF_ERROR(stmt.Run());
    }
    PGF_RETURN_IF_ERROR(txn.Commit());
    PGF_INFO(kComponent, "applied %s", label);
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// Environments.

absl::Status SqliteStore::EnsureEnvironment(const std::string& name, int64_t now_ms) {
  PGF_RETURN_IF_ERROR(RequireNonEmpty("environment name", name));
  absl::MutexLock lock(&mu_);
  return InsertEnvironmentIfMissing(db_, name, now_ms);
}

absl::StatusOr<std::vector<EnvironmentRow>> SqliteStore::ListEnvironments() {
  absl::MutexLock lock(&mu_);
  PGF_ASSIGN_OR_RETURN(Stmt stmt, Stmt::Prepare(db_,
                                                "SELECT name, desired_version, created_unix_ms "
                                                "FROM environments ORDER BY name"));
  std::vector<EnvironmentRow> rows;
  while (true) {
    PGF_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) break;
    EnvironmentRow& env = rows.emplace_back();
    env.name = stmt.Text(0);
    env.desired_version = stmt.IsNull(1) ? 0 : stmt.U64(1);
    env.created_unix_ms = stmt.Int(2);
  }
  return rows;
}

absl::StatusOr<EnvironmentRow> SqliteStore::GetEnvironment(const std::string& name) {
  absl::MutexLock lock(&mu_);
  PGF_ASSIGN_OR_RETURN(Stmt stmt, Stmt::Prepare(db_,
                                                "SELECT name, desired_version, created_unix_ms "
                                                "FROM environments WHERE name = ?1"));
  stmt.BindText(1, name);
  PGF_ASSIGN_OR_RETURN(bool row, stmt.Step());
  if (!row) return absl::NotFoundError(absl::StrCat("environment '", name, "' not found"));
  EnvironmentRow env;
  env.name = stmt.Text(0);
  env.desired_version = stmt.IsNull(1) ? 0 : stmt.U64(1);
  env.created_unix_ms = stmt.Int(2);
  return env;
}

absl::Status SqliteStore::SetDesiredVersion(const std::string& environment, uint64_t version,
                                            std::optional<uint64_t> expected_previous) {
  absl::MutexLock lock(&mu_);
  PGF_ASSIGN_OR_RETURN(Transaction txn, Transaction::BeginImmediate(db_));
  uint64_t current = 0;
  {
    PGF_ASSIGN_OR_RETURN(
        Stmt stmt, Stmt::Prepare(db_, "SELECT desired_version FROM environments WHERE name = ?1"));
    stmt.BindText(1, environment);
    PGF_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) {
      return absl::NotFoundError(absl::StrCat("environment '", environment, "' not found"));
    }
    current = stmt.IsNull(0) ? 0 : stmt.U64(0);
  }
  PGF_ASSIGN_OR_RETURN(std::string owner, ConfigVersionEnvironment(db_, version));
  if (owner != environment) {
    return absl::InvalidArgumentError(absl::StrCat("config version ", version,
                                                   " belongs to environment '", owner, "', not '",
                                                   environment, "'"));
  }
  if (expected_previous.has_value() && *expected_previous != current) {
    return absl::AbortedError(absl::StrCat("the desired version of environment '", environment,
                                           "' is ", current, ", not ", *expected_previous,
                                           " as expected; someone changed it concurrently"));
  }
  {
    PGF_ASSIGN_OR_RETURN(
        Stmt stmt,
        Stmt::Prepare(db_, "UPDATE environments SET desired_version = ?2 WHERE name = ?1"));
    stmt.BindText(1, environment).BindU64(2, version);
    PGF_RETURN_IF_ERROR(stmt.Run());
  }
  return txn.Commit();
}

// ---------------------------------------------------------------------------------------------
// Config versions.

absl::StatusOr<ConfigVersionRow> SqliteStore::AddConfigVersion(const ConfigVersionDraft& draft,
                                                               int64_t now_ms) {
  const std::string& environment = draft.environment;
  PGF_RETURN_IF_ERROR(RequireNonEmpty("environment name", environment));
  std::vector<ConfigFileRow> files = draft.files;
  std::sort(files.begin(), files.end(),
            [](const ConfigFileRow& a, const ConfigFileRow& b) { return a.key < b.key; });
  std::vector<CredentialOverlapRow> overlaps = draft.credential_overlaps;
  std::sort(
      overlaps.begin(), overlaps.end(),
      [](const CredentialOverlapRow& a, const CredentialOverlapRow& b) { return a.user < b.user; });
  for (size_t i = 1; i < files.size(); ++i) {
    if (files[i].key == files[i - 1].key) {
      return absl::InvalidArgumentError(absl::StrCat("file ", files[i].key, " given twice"));
    }
  }
  for (size_t i = 1; i < overlaps.size(); ++i) {
    if (overlaps[i].user == overlaps[i - 1].user) {
      return absl::InvalidArgumentError(
          absl::StrCat("two rotation overlaps for user ", overlaps[i].user));
    }
  }
  const std::string overlays_text = config::FormatOverlays(draft.overlays);
  absl::MutexLock lock(&mu_);
  for (ConfigFileRow& file : files) {
    PGF_ASSIGN_OR_RETURN(file.fingerprint, keyring_->Fingerprint(file.content));
  }
  for (CredentialOverlapRow& overlap : overlaps) {
    PGF_ASSIGN_OR_RETURN(overlap.fingerprint, keyring_->Fingerprint(overlap.previous_secret));
  }
  const std::string sha256 = ConfigContentSha256(draft.ini_text, draft.overlays, files, overlaps);
  PGF_ASSIGN_OR_RETURN(Transaction txn, Transaction::BeginImmediate(db_));
  PGF_RETURN_IF_ERROR(InsertEnvironmentIfMissing(db_, environment, now_ms));
  {
    // Same content already pushed to this environment: that version is the answer.
    PGF_ASSIGN_OR_RETURN(Stmt stmt,
                         Stmt::Prepare(db_, absl::StrCat("SELECT ", kConfigVersionColumns,
                                                         ", ini_text FROM config_versions "
                                                         "WHERE environment = ?1 AND sha256 = ?2")
                                                .c_str()));
    stmt.BindText(1, environment).BindText(2, sha256);
    PGF_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (row) {
      ConfigVersionRow existing = ReadConfigVersion(stmt, /*with_text=*/true);
      PGF_RETURN_IF_ERROR(LoadConfigSecrets(existing, /*with_content=*/true));
      PGF_RETURN_IF_ERROR(txn.Commit());
      return existing;
    }
  }
  ConfigVersionRow added;
  added.environment = environment;
  added.sha256 = sha256;
  added.ini_text = draft.ini_text;
  added.author = draft.author;
  added.message = draft.message;
  added.overlays = draft.overlays;
  added.created_unix_ms = now_ms;
  {
    PGF_ASSIGN_OR_RETURN(
        Stmt stmt,
        Stmt::Prepare(db_, "SELECT MAX(version) FROM config_versions WHERE environment = ?1"));
    stmt.BindText(1, environment);
    PGF_ASSIGN_OR_RETURN(bool row, stmt.Step());
    added.parent_version = row && !stmt.IsNull(0) ? stmt.U64(0) : 0;
  }
  if (draft.expected_parent.has_value() && *draft.expected_parent != added.parent_version) {
    return absl::AbortedError(
        absl::StrCat("environment ", environment, " got version ", added.parent_version,
                     " meanwhile (this change was made on ", *draft.expected_parent, "); retry"));
  }
  {
    PGF_ASSIGN_OR_RETURN(Stmt stmt, Stmt::Prepare(db_,
                                                  "INSERT INTO config_versions (environment, "
                                                  "sha256, ini_text, author, message, "
                                                  "created_unix_ms, parent_version, "
                                                  "overlays_text) "
                                                  "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) "
                                                  "RETURNING version"));
    stmt.BindText(1, environment)
        .BindText(2, sha256)
        .BindBytes(3, draft.ini_text)
        .BindText(4, draft.author)
        .BindText(5, draft.message)
        .BindInt(6, now_ms)
        .BindText(8, overlays_text);
    if (added.parent_version != 0) {
      stmt.BindU64(7, added.parent_version);
    } else {
      stmt.BindNull(7);
    }
    PGF_ASSIGN_OR_RETURN(added.version, stmt.RunReturningId());
  }
  PGF_RETURN_IF_ERROR(InsertConfigSecrets(added.version, files, overlaps));
  PGF_RETURN_IF_ERROR(LoadConfigSecrets(added, /*with_content=*/true));
  PGF_RETURN_IF_ERROR(txn.Commit());
  return added;
}

absl::StatusOr<ConfigVersionRow> SqliteStore::GetConfigVersion(uint64_t version) {
  absl::MutexLock lock(&mu_);
  PGF_ASSIGN_OR_RETURN(Stmt stmt, Stmt::Prepare(db_, absl::StrCat("SELECT ", kConfigVersionColumns,
                                                                  ", ini_text FROM config_versions "
                                                                  "WHERE version = ?1")
                                                         .c_str()));
  stmt.BindU64(1, version);
  PGF_ASSIGN_OR_RETURN(bool row, stmt.Step());
  if (!row) return absl::NotFoundError(absl::StrCat("config version ", version, " not found"));
  ConfigVersionRow found = ReadConfigVersion(stmt, /*with_text=*/true);
  PGF_RETURN_IF_ERROR(LoadConfigSecrets(found, /*with_content=*/true));
  return found;
}

absl::StatusOr<std::vector<ConfigVersionRow>> SqliteStore::ListConfigVersions(
    const std::string& environment) {
  absl::MutexLock lock(&mu_);
  PGF_ASSIGN_OR_RETURN(Stmt stmt, Stmt::Prepare(db_, absl::StrCat("SELECT ", kConfigVersionColumns,
                                                                  " FROM config_versions "
                                                                  "WHERE environment = ?1 "
                                                                  "ORDER BY version DESC")
                                                         .c_str()));
  stmt.BindText(1, environment);
  std::vector<ConfigVersionRow> rows;
  while (true) {
    PGF_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) break;
    rows.push_back(ReadConfigVersion(stmt, /*with_text=*/false));
  }
  for (ConfigVersionRow& row : rows) {
    PGF_RETURN_IF_ERROR(LoadConfigSecrets(row, /*with_content=*/false));
  }
  return rows;
}

// ---------------------------------------------------------------------------------------------
// Agents.

absl::Status SqliteStore::RecordAgentHello(const AgentRow& hello, int64_t now_ms) {
  PGF_RETURN_IF_ERROR(RequireNonEmpty("agent id", hello.agent_id));
  PGF_RETURN_IF_ERROR(RequireNonEmpty("environment name", hello.environment));
  absl::MutexLock lock(&mu_);
  PGF_ASSIGN_OR_RETURN(Transaction txn, Transaction::BeginImmediate(db_));
  PGF_RETURN_IF_ERROR(InsertEnvironmentIfMissing(db_, hello.environment, now_ms));
  {
    // SET expressions see the old row, so the pin test compares old and new environments.
    PGF_ASSIGN_OR_RETURN(
        Stmt stmt,
        Stmt::Prepare(db_,
                      "INSERT INTO agents (agent_id, environment, agent_version, hostname, "
                      "connected, first_seen_unix_ms, last_seen_unix_ms, applied_version, "
                      "applied_sha256) VALUES (?1, ?2, ?3, ?4, 1, ?5, ?5, ?6, ?7) "
                      "ON CONFLICT (agent_id) DO UPDATE SET "
                      "environment = excluded.environment, "
                      "agent_version = excluded.agent_version, "
                      "hostname = excluded.hostname, "
                      "connected = 1, "
                      "last_seen_unix_ms = excluded.last_seen_unix_ms, "
                      "applied_version = excluded.applied_version, "
                      "applied_sha256 = excluded.applied_sha256, "
                      "pinned_version = CASE WHEN agents.environment = excluded.environment "
                      "THEN agents.pinned_version ELSE NULL END"));
    stmt.BindText(1, hello.agent_id)
        .BindText(2, hello.environment)
        .BindText(3, hello.agent_version)
        .BindText(4, hello.hostname)
        .BindInt(5, now_ms)
        .BindU64(6, hello.applied_version)
        .BindText(7, hello.applied_sha256);
    PGF_RETURN_IF_ERROR(stmt.Run());
  }
  {
    PGF_ASSIGN_OR_RETURN(Stmt stmt,
                         Stmt::Prepare(db_, "DELETE FROM agent_labels WHERE agent_id = ?1"));
    stmt.BindText(1, hello.agent_id);
    PGF_RETURN_IF_ERROR(stmt.Run());
  }
  if (!hello.labels.empty()) {
    PGF_ASSIGN_OR_RETURN(
        Stmt stmt,
        Stmt::Prepare(db_, "INSERT INTO agent_labels (agent_id, key, value) VALUES (?1, ?2, ?3)"));
    for (const auto& [key, value] : hello.labels) {
      stmt.Reset();
      stmt.BindText(1, hello.agent_id).BindText(2, key).BindText(3, value);
      PGF_RETURN_IF_ERROR(stmt.Run());
    }
  }
  PGF_RETURN_IF_ERROR(txn.Commit());
  known_agents_.insert(hello.agent_id);
  return absl::OkStatus();
}

absl::Status SqliteStore::MarkAgentDisconnected(const std::string& agent_id, int64_t now_ms) {
  absl::MutexLock lock(&mu_);
  PGF_ASSIGN_OR_RETURN(Stmt stmt,
                       Stmt::Prepare(db_,
                                     "UPDATE agents SET connected = 0, "
                                     "last_seen_unix_ms = CASE WHEN ?2 > last_seen_unix_ms THEN ?2 "
                                     "ELSE last_seen_unix_ms END "
                                     "WHERE agent_id = ?1"));
  stmt.BindText(1, agent_id).BindInt(2, now_ms);
  return UpdateOneAgent(stmt, agent_id);
}

absl::Status SqliteStore::MarkAllAgentsDisconnected() {
  absl::MutexLock lock(&mu_);
  PGF_ASSIGN_OR_RETURN(Stmt stmt,
                       Stmt::Prepare(db_, "UPDATE agents SET connected = 0 WHERE connected <> 0"));
  return stmt.Run();
}

absl::Status SqliteStore::TouchAgent(const std::string& agent_id, int64_t now_ms) {
  absl::MutexLock lock(&mu_);
  PGF_RETURN_IF_ERROR(RequireKnownAgent(agent_id));
  if (pending_metrics_.empty() && pending_touches_.empty()) oldest_pending_ = absl::Now();
  int64_t& last_seen = pending_touches_[agent_id];
  last_seen = std::max(last_seen, now_ms);
  return FlushWriteBehindIfDue();
}

absl::Status SqliteStore::RecordAgentConfigResult(const std::string& agent_id, uint64_t version,
                                                  const std::string& sha256,
                                                  const std::string& error, int64_t now_ms) {
  absl::MutexLock lock(&mu_);
  if (error.empty()) {
    PGF_ASSIGN_OR_RETURN(
        Stmt stmt, Stmt::Prepare(db_,
                                 "UPDATE agents SET applied_version = ?2, applied_sha256 = ?3, "
                                 "last_error = '', "
                                 "last_seen_unix_ms = CASE WHEN ?4 > last_seen_unix_ms THEN ?4 "
                                 "ELSE last_seen_unix_ms END "
                                 "WHERE agent_id = ?1"));
    stmt.BindText(1, agent_id).BindU64(2, version).BindText(3, sha256).BindInt(4, now_ms);
    return UpdateOneAgent(stmt, agent_id);
  }
  PGF_ASSIGN_OR_RETURN(Stmt stmt,
                       Stmt::Prepare(db_,
                                     "UPDATE agents SET last_error = ?2, "
                                     "last_seen_unix_ms = CASE WHEN ?3 > last_seen_unix_ms THEN ?3 "
                                     "ELSE last_seen_unix_ms END "
                                     "WHERE agent_id = ?1"));
  stmt.BindText(1, agent_id).BindText(2, error).BindInt(3, now_ms);
  return UpdateOneAgent(stmt, agent_id);
}

absl::Status SqliteStore::SetAgentPin(const std::string& agent_id,
                                      std::optional<uint64_t> version) {
  absl::MutexLock lock(&mu_);
  PGF_ASSIGN_OR_RETURN(Transaction txn, Transaction::BeginImmediate(db_));
  PGF_ASSIGN_OR_RETURN(std::string environment, AgentEnvironment(db_, agent_id));
  if (version.has_value()) {
    PGF_ASSIGN_OR_RETURN(std::string owner, ConfigVersionEnvironment(db_, *version));
    if (owner != environment) {
      return absl::InvalidArgumentError(
          absl::StrCat("config version ", *version, " belongs to environment '", owner,
                       "', but agent '", agent_id, "' is in environment '", environment, "'"));
    }
  }
  {
    PGF_ASSIGN_OR_RETURN(
        Stmt stmt, Stmt::Prepare(db_, "UPDATE agents SET pinned_version = ?2 WHERE agent_id = ?1"));
    stmt.BindText(1, agent_id).BindOptionalU64(2, version);
    PGF_RETURN_IF_ERROR(stmt.Run());
  }
  return txn.Commit();
}

absl::Status SqliteStore::SetAgentLabelOverrides(
    const std::string& agent_id,
    const std::map<std::string, std::optional<std::string>>& overrides) {
  absl::MutexLock lock(&mu_);
  PGF_ASSIGN_OR_RETURN(Transaction txn, Transaction::BeginImmediate(db_));
  PGF_RETURN_IF_ERROR(AgentEnvironment(db_, agent_id).status());
  {
    PGF_ASSIGN_OR_RETURN(
        Stmt stmt, Stmt::Prepare(db_, "DELETE FROM agent_label_overrides WHERE agent_id = ?1"));
    stmt.BindText(1, agent_id);
    PGF_RETURN_IF_ERROR(stmt.Run());
  }
  if (!overrides.empty()) {
    PGF_ASSIGN_OR_RETURN(Stmt stmt, Stmt::Prepare(db_,
                                                  "INSERT INTO agent_label_overrides "
                                                  "(agent_id, key, value) VALUES (?1, ?2, ?3)"));
    for (const auto& [key, value] : overrides) {
      stmt.Reset();
      stmt.BindText(1, agent_id).BindText(2, key);
      if (value.has_value()) {
        stmt.BindText(3, *value);
      } else {
        stmt.BindNull(3);
      }
      PGF_RETURN_IF_ERROR(stmt.Run());
    }
  }
  return txn.Commit();
}

absl::StatusOr<AgentRow> SqliteStore::GetAgent(const std::string& agent_id) {
  absl::MutexLock lock(&mu_);
  PGF_ASSIGN_OR_RETURN(Stmt stmt, Stmt::Prepare(db_, AgentSelect("WHERE a.agent_id = ?1").c_str()));
  stmt.BindText(1, agent_id);
  PGF_ASSIGN_OR_RETURN(std::vector<AgentRow> agents, ReadAgents(stmt));
  if (agents.empty()) return absl::NotFoundError(absl::StrCat("agent '", agent_id, "' not found"));
  ApplyPendingTouches(agents);
  return std::move(agents.front());
}

absl::StatusOr<std::vector<AgentRow>> SqliteStore::ListAgents(const std::string& environment) {
  absl::MutexLock lock(&mu_);
  std::vector<AgentRow> agents;
  if (environment.empty()) {
    PGF_ASSIGN_OR_RETURN(Stmt stmt, Stmt::Prepare(db_, AgentSelect("").c_str()));
    PGF_ASSIGN_OR_RETURN(agents, ReadAgents(stmt));
  } else {
    PGF_ASSIGN_OR_RETURN(Stmt stmt,
                         Stmt::Prepare(db_, AgentSelect("WHERE a.environment = ?1").c_str()));
    stmt.BindText(1, environment);
    PGF_ASSIGN_OR_RETURN(agents, ReadAgents(stmt));
  }
  ApplyPendingTouches(agents);
  return agents;
}

void SqliteStore::ApplyPendingTouches(std::vector<AgentRow>& agents) const {
  if (pending_touches_.empty()) return;
  for (AgentRow& agent : agents) {
    auto it = pending_touches_.find(agent.agent_id);
    if (it != pending_touches_.end()) {
      agent.last_seen_unix_ms = std::max(agent.last_seen_unix_ms, it->second);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Commands.

absl::StatusOr<uint64_t> SqliteStore::RecordCommand(const std::string& agent_id,
                                                    const std::string& kind,
                                                    const std::string& args,
                                                    const std::string& actor, int64_t now_ms) {
  PGF_RETURN_IF_ERROR(RequireNonEmpty("command kind", kind));
  absl::MutexLock lock(&mu_);
  PGF_ASSIGN_OR_RETURN(Transaction txn, Transaction::BeginImmediate(db_));
  PGF_RETURN_IF_ERROR(AgentEnvironment(db_, agent_id).status());
  uint64_t id = 0;
  {
    PGF_ASSIGN_OR_RETURN(Stmt stmt, Stmt::Prepare(db_,
                                                  "INSERT INTO commands (agent_id, kind, args, "
                                                  "actor, created_unix_ms) "
                                                  "VALUES (?1, ?2, ?3, ?4, ?5) RETURNING id"));
    stmt.BindText(1, agent_id)
        .BindText(2, kind)
        .BindText(3, args)
        .BindText(4, actor)
        .BindInt(5, now_ms);
    PGF_ASSIGN_OR_RETURN(id, stmt.RunReturningId());
  }
  PGF_RETURN_IF_ERROR(txn.Commit());
  return id;
}

absl::Status SqliteStore::RecordCommandResult(uint64_t command_id, bool ok,
                                              const std::string& error, int64_t now_ms) {
  absl::MutexLock lock(&mu_);
  PGF_ASSIGN_OR_RETURN(Transaction txn, Transaction::BeginImmediate(db_));
  {
    PGF_ASSIGN_OR_RETURN(Stmt stmt,
                         Stmt::Prepare(db_, "SELECT ok IS NOT NULL FROM commands WHERE id = ?1"));
    stmt.BindU64(1, command_id);
    PGF_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) return absl::NotFoundError(absl::StrCat("command ", command_id, " not found"));
    if (stmt.Int(0) != 0) {
      return absl::FailedPreconditionError(
          absl::StrCat("command ", command_id, " already has a result"));
    }
  }
  {
    PGF_ASSIGN_OR_RETURN(Stmt stmt, Stmt::Prepare(db_,
                                                  "UPDATE commands SET ok = ?2, error = ?3, "
                                                  "finished_unix_ms = ?4 WHERE id = ?1"));
    stmt.BindU64(1, command_id).BindInt(2, ok ? 1 : 0).BindText(3, error).BindInt(4, now_ms);
    PGF_RETURN_IF_ERROR(stmt.Run());
  }
  return txn.Commit();
}

absl::StatusOr<std::vector<CommandRow>> SqliteStore::ListCommands(const std::string& agent_id,
                                                                  int limit) {
  constexpr char kColumns[] =
      "SELECT id, agent_id, kind, args, actor, created_unix_ms, ok, error, finished_unix_ms "
      "FROM commands ";
  absl::MutexLock lock(&mu_);
  std::string sql = agent_id.empty()
                        ? absl::StrCat(kColumns, "ORDER BY id DESC LIMIT ?1")
                        : absl::StrCat(kColumns, "WHERE agent_id = ?2 ORDER BY id DESC LIMIT ?1");
  PGF_ASSIGN_OR_RETURN(Stmt stmt, Stmt::Prepare(db_, sql.c_str()));
  stmt.BindInt(1, SqlLimit(limit));
  if (!agent_id.empty()) stmt.BindText(2, agent_id);
  std::vector<CommandRow> rows;
  while (true) {
    PGF_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) break;
    CommandRow& command = rows.emplace_back();
    command.id = stmt.U64(0);
    command.agent_id = stmt.Text(1);
    command.kind = stmt.Text(2);
    command.args = stmt.Text(3);
    command.actor = stmt.Text(4);
    command.created_unix_ms = stmt.Int(5);
    if (!stmt.IsNull(6)) command.ok = stmt.Int(6) != 0;
    command.error = stmt.Text(7);
    command.finished_unix_ms = stmt.IsNull(8) ? 0 : stmt.Int(8);
  }
  return rows;
}

// ---------------------------------------------------------------------------------------------
// Audit.

absl::Status SqliteStore::Audit(const std::string& actor, const std::string& action,
                                const std::string& target, const std::string& details,
                                int64_t now_ms) {
  absl::MutexLock lock(&mu_);
  PGF_ASSIGN_OR_RETURN(Stmt stmt, Stmt::Prepare(db_,
                                                "INSERT INTO audit_log (unix_ms, actor, action, "
                                                "target, details) VALUES (?1, ?2, ?3, ?4, ?5)"));
  stmt.BindInt(1, now_ms).BindText(2, actor).BindText(3, action).BindText(4, target).BindText(
      5, details);
  return stmt.Run();
}

absl::StatusOr<std::vector<AuditEntry>> SqliteStore::ListAudit(int limit) {
  absl::MutexLock lock(&mu_);
  PGF_ASSIGN_OR_RETURN(Stmt stmt, Stmt::Prepare(db_,
                                                "SELECT id, unix_ms, actor, action, target, "
                                                "details FROM audit_log "
                                                "ORDER BY id DESC LIMIT ?1"));
  stmt.BindInt(1, SqlLimit(limit));
  std::vector<AuditEntry> rows;
  while (true) {
    PGF_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) break;
    AuditEntry& entry = rows.emplace_back();
    entry.id = stmt.U64(0);
    entry.unix_ms = stmt.Int(1);
    entry.actor = stmt.Text(2);
    entry.action = stmt.Text(3);
    entry.target = stmt.Text(4);
    entry.details = stmt.Text(5);
  }
  return rows;
}

// ---------------------------------------------------------------------------------------------
// Metrics.

absl::Status SqliteStore::RecordMetrics(const std::string& agent_id, int64_t now_ms,
                                        const std::string& report) {
  absl::MutexLock lock(&mu_);
  PGF_RETURN_IF_ERROR(RequireKnownAgent(agent_id));
  if (pending_metrics_.empty() && pending_touches_.empty()) oldest_pending_ = absl::Now();
  // The table keeps the newest report of each minute; so does the buffer.
  PendingSample& pending = pending_metrics_[{agent_id, MinuteBucket(now_ms)}];
  if (pending.report.empty() || now_ms >= pending.sample_unix_ms) {
    pending.sample_unix_ms = now_ms;
    pending.report = report;
  }
  return FlushWriteBehindIfDue();
}

absl::Status SqliteStore::RequireKnownAgent(const std::string& agent_id) {
  if (known_agents_.count(agent_id) > 0) return absl::OkStatus();
  PGF_RETURN_IF_ERROR(AgentEnvironment(db_, agent_id).status());
  known_agents_.insert(agent_id);
  return absl::OkStatus();
}

absl::Status SqliteStore::FlushWriteBehindIfDue() {
  if (absl::Now() - oldest_pending_ < kWriteBehindDelay) return absl::OkStatus();
  return FlushWriteBehind();
}

absl::Status SqliteStore::FlushWriteBehind() {
  if (pending_metrics_.empty() && pending_touches_.empty()) return absl::OkStatus();
  // Taken out first: whatever happens below, the buffer starts afresh (samples are periodic;
  // the next report brings the next one).
  std::map<std::pair<std::string, int64_t>, PendingSample> metrics = std::move(pending_metrics_);
  std::map<std::string, int64_t> touches = std::move(pending_touches_);
  pending_metrics_.clear();
  pending_touches_.clear();
  PGF_ASSIGN_OR_RETURN(Transaction txn, Transaction::BeginImmediate(db_));
  if (!metrics.empty()) {
    // One row per agent and minute; a later report of the same minute replaces the kept one.
    // Rows of an agent that is gone are skipped rather than failing the whole batch.
    PGF_ASSIGN_OR_RETURN(
        Stmt stmt, Stmt::Prepare(db_,
                                 "INSERT INTO metrics (agent_id, bucket_unix_ms, sample_unix_ms, "
                                 "report) SELECT ?1, ?2, ?3, ?4 "
                                 "WHERE EXISTS (SELECT 1 FROM agents WHERE agent_id = ?1) "
                                 "ON CONFLICT (agent_id, bucket_unix_ms) DO UPDATE SET "
                                 "sample_unix_ms = excluded.sample_unix_ms, "
                                 "report = excluded.report "
                                 "WHERE excluded.sample_unix_ms >= metrics.sample_unix_ms"));
    for (const auto& [key, sample] : metrics) {
      stmt.Reset();
      stmt.BindText(1, key.first)
          .BindInt(2, key.second)
          .BindInt(3, sample.sample_unix_ms)
          .BindBlob(4, sample.report);
      PGF_RETURN_IF_ERROR(stmt.Run());
    }
  }
  if (!touches.empty()) {
    PGF_ASSIGN_OR_RETURN(
        Stmt stmt,
        Stmt::Prepare(db_,
                      "UPDATE agents SET last_seen_unix_ms = CASE WHEN ?2 > last_seen_unix_ms "
                      "THEN ?2 ELSE last_seen_unix_ms END "
                      "WHERE agent_id = ?1"));
    for (const auto& [agent_id, last_seen] : touches) {
      stmt.Reset();
      stmt.BindText(1, agent_id).BindInt(2, last_seen);
      PGF_RETURN_IF_ERROR(stmt.Run());
    }
  }
  return txn.Commit();
}

absl::StatusOr<std::vector<MetricsSample>> SqliteStore::ListMetrics(const std::string& agent_id,
                                                                    int64_t since_ms) {
  absl::MutexLock lock(&mu_);
  PGF_RETURN_IF_ERROR(FlushWriteBehind());
  PGF_ASSIGN_OR_RETURN(Stmt stmt, Stmt::Prepare(db_,
                                                "SELECT agent_id, bucket_unix_ms, report "
                                                "FROM metrics WHERE agent_id = ?1 "
                                                "AND bucket_unix_ms >= ?2 "
                                                "ORDER BY bucket_unix_ms"));
  stmt.BindText(1, agent_id).BindInt(2, since_ms);
  std::vector<MetricsSample> rows;
  while (true) {
    PGF_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) break;
    MetricsSample& sample = rows.emplace_back();
    sample.agent_id = stmt.Text(0);
    sample.bucket_unix_ms = stmt.Int(1);
    sample.report = stmt.Blob(2);
  }
  return rows;
}

absl::Status SqliteStore::PruneMetrics(int64_t older_than_ms) {
  absl::MutexLock lock(&mu_);
  PGF_RETURN_IF_ERROR(FlushWriteBehind());
  PGF_ASSIGN_OR_RETURN(Stmt stmt,
                       Stmt::Prepare(db_, "DELETE FROM metrics WHERE bucket_unix_ms < ?1"));
  stmt.BindInt(1, older_than_ms);
  return stmt.Run();
}

// ---------------------------------------------------------------------------------------------
// Tokens.

namespace {

constexpr char kTokenColumns[] =
    "id, name, role, environment, created_unix_ms, created_by, expires_unix_ms, "
    "last_used_unix_ms, revoked_unix_ms, bootstrap";

absl::StatusOr<TokenRow> ReadToken(const Stmt& stmt) {
  TokenRow token;
  token.id = stmt.U64(0);
  token.name = stmt.Text(1);
  absl::StatusOr<Role> role = ParseRole(stmt.Text(2));
  if (!role.ok()) {
    return absl::DataLossError(absl::StrCat(
        "token '", token.name, "' has a bad role in the database: ", role.status().message()));
  }
  token.role = *role;
  token.environment = stmt.Text(3);
  token.created_unix_ms = stmt.Int(4);
  token.created_by = stmt.Text(5);
  token.expires_unix_ms = stmt.IsNull(6) ? 0 : stmt.Int(6);
  token.last_used_unix_ms = stmt.IsNull(7) ? 0 : stmt.Int(7);
  token.revoked_unix_ms = stmt.IsNull(8) ? 0 : stmt.Int(8);
  token.bootstrap = stmt.Int(9) != 0;
  return token;
}

absl::StatusOr<TokenRow> TokenById(sql::Connection* db, uint64_t id) {
  PGF_ASSIGN_OR_RETURN(
      Stmt stmt,
      Stmt::Prepare(db,
                    absl::StrCat("SELECT ", kTokenColumns, " FROM tokens WHERE id = ?1").c_str()));
  stmt.BindU64(1, id);
  PGF_ASSIGN_OR_RETURN(bool row, stmt.Step());
  if (!row) return absl::NotFoundError(absl::StrCat("no token with id ", id));
  return ReadToken(stmt);
}

}  // namespace

absl::StatusOr<TokenRow> SqliteStore::CreateToken(const TokenRow& token,
                                                  const std::string& token_sha256) {
  PGF_RETURN_IF_ERROR(RequireNonEmpty("token name", token.name));
  std::optional<std::string> hash = NormalizeSha256Hex(token_sha256);
  if (!hash.has_value()) {
    return absl::InvalidArgumentError(
        "a token is stored as the sha256 hex of the token: 64 hex digits expected");
  }
  if ((token.role == Role::kAgent) != !token.environment.empty()) {
    return absl::InvalidArgumentError(
        token.role == Role::kAgent
            ? "an agent token is scoped to one environment: name it"
            : "only agent tokens are scoped to an environment (operators' tokens see the fleet)");
  }
  if (token.bootstrap && token.role != Role::kAdmin) {
    return absl::InvalidArgumentError("the bootstrap token is an admin token");
  }
  absl::MutexLock lock(&mu_);
  PGF_ASSIGN_OR_RETURN(Transaction txn, Transaction::BeginImmediate(db_));
  if (token.role == Role::kAdmin) {
    bool real_admin_exists = false;
    {
      PGF_ASSIGN_OR_RETURN(Stmt other, Stmt::Prepare(db_,
                                                     "SELECT count(*) FROM tokens WHERE role = "
                                                     "'admin' AND bootstrap = 0"));
      PGF_ASSIGN_OR_RETURN(bool row, other.Step());
      real_admin_exists = row && other.Int(0) > 0;
    }
    if (token.bootstrap && real_admin_exists) {
      return absl::FailedPreconditionError(
          "an admin token exists, so a bootstrap token is no longer accepted");
    }
    if (!token.bootstrap) {
      // The first real admin token ends the bootstrap token's life, whoever made it.
      PGF_ASSIGN_OR_RETURN(Stmt revoke, Stmt::Prepare(db_,
                                                      "UPDATE tokens SET revoked_unix_ms = ?1 "
                                                      "WHERE bootstrap = 1 AND revoked_unix_ms "
                                                      "IS NULL"));
      revoke.BindInt(1, token.created_unix_ms);
      PGF_RETURN_IF_ERROR(revoke.Run());
    }
  }
  uint64_t id = 0;
  {
    PGF_ASSIGN_OR_RETURN(Stmt stmt,
                         Stmt::Prepare(db_,
                                       "INSERT INTO tokens (token_sha256, name, role, environment, "
                                       "created_unix_ms, created_by, expires_unix_ms, bootstrap) "
                                       "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) RETURNING id"));
    stmt.BindText(1, *hash)
        .BindText(2, token.name)
        .BindText(3, RoleName(token.role))
        .BindText(4, token.environment)
        .BindInt(5, token.created_unix_ms)
        .BindText(6, token.created_by)
        .BindInt(8, token.bootstrap ? 1 : 0);
    if (token.expires_unix_ms > 0) {
      stmt.BindInt(7, token.expires_unix_ms);
    } else {
      stmt.BindNull(7);
    }
    absl::StatusOr<uint64_t> inserted = stmt.RunReturningId();
    if (absl::IsAlreadyExists(inserted.status())) {
      return absl::AlreadyExistsError("a token with this hash already exists");
    }
    PGF_RETURN_IF_ERROR(inserted.status());
    id = *inserted;
  }
  PGF_ASSIGN_OR_RETURN(TokenRow created, TokenById(db_, id));
  PGF_RETURN_IF_ERROR(txn.Commit());
  return created;
}

absl::StatusOr<TokenRow> SqliteStore::LookupToken(const std::string& token_sha256) {
  std::optional<std::string> hash = NormalizeSha256Hex(token_sha256);
  if (!hash.has_value()) return absl::NotFoundError("unknown token");
  absl::MutexLock lock(&mu_);
  PGF_ASSIGN_OR_RETURN(
      Stmt stmt,
      Stmt::Prepare(
          db_,
          absl::StrCat("SELECT ", kTokenColumns, " FROM tokens WHERE token_sha256 = ?1").c_str()));
  stmt.BindText(1, *hash);
  PGF_ASSIGN_OR_RETURN(bool row, stmt.Step());
  if (!row) return absl::NotFoundError("unknown token");
  return ReadToken(stmt);
}

absl::StatusOr<std::vector<TokenRow>> SqliteStore::ListTokens() {
  absl::MutexLock lock(&mu_);
  PGF_ASSIGN_OR_RETURN(
      Stmt stmt,
      Stmt::Prepare(db_,
                    absl::StrCat("SELECT ", kTokenColumns, " FROM tokens ORDER BY id").c_str()));
  std::vector<TokenRow> tokens;
  while (true) {
    PGF_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) break;
    PGF_ASSIGN_OR_RETURN(TokenRow token, ReadToken(stmt));
    tokens.push_back(std::move(token));
  }
  return tokens;
}

absl::StatusOr<TokenRow> SqliteStore::RevokeToken(uint64_t id, int64_t now_ms) {
  absl::MutexLock lock(&mu_);
  PGF_ASSIGN_OR_RETURN(Transaction txn, Transaction::BeginImmediate(db_));
  PGF_ASSIGN_OR_RETURN(TokenRow token, TokenById(db_, id));
  if (token.revoked_unix_ms != 0) {
    return absl::FailedPreconditionError(absl::StrCat("token ", id, " is already revoked"));
  }
  {
    PGF_ASSIGN_OR_RETURN(
        Stmt stmt, Stmt::Prepare(db_, "UPDATE tokens SET revoked_unix_ms = ?2 WHERE id = ?1"));
    stmt.BindU64(1, id).BindInt(2, now_ms);
    PGF_RETURN_IF_ERROR(stmt.Run());
  }
  PGF_RETURN_IF_ERROR(txn.Commit());
  token.revoked_unix_ms = now_ms;
  return token;
}

absl::Status SqliteStore::TouchToken(uint64_t id, int64_t now_ms) {
  absl::MutexLock lock(&mu_);
  PGF_ASSIGN_OR_RETURN(
      Stmt stmt, Stmt::Prepare(db_, "UPDATE tokens SET last_used_unix_ms = ?2 WHERE id = ?1"));
  stmt.BindU64(1, id).BindInt(2, now_ms);
  PGF_RETURN_IF_ERROR(stmt.Run());
  if (stmt.Changes() == 0) return absl::NotFoundError(absl::StrCat("no token with id ", id));
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// Diagnostics.

absl::StatusOr<std::string> SqliteStore::IntegrityCheck() {
  absl::MutexLock lock(&mu_);
  if (db_->dialect() != sql::Dialect::kSqlite) {
    return absl::UnimplementedError("integrity_check is SQLite's; PostgreSQL checks itself");
  }
  PGF_ASSIGN_OR_RETURN(Stmt stmt, Stmt::Prepare(db_, "PRAGMA integrity_check"));
  std::vector<std::string> lines;
  while (true) {
    PGF_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) break;
    lines.push_back(stmt.Text(0));
  }
  return absl::StrJoin(lines, "\n");
}

absl::StatusOr<std::vector<AppliedMigration>> SqliteStore::AppliedMigrations() {
  absl::MutexLock lock(&mu_);
  PGF_ASSIGN_OR_RETURN(Stmt stmt, Stmt::Prepare(db_,
                                                "SELECT version, name, applied_unix_ms "
                                                "FROM schema_migrations ORDER BY version"));
  std::vector<AppliedMigration> rows;
  while (true) {
    PGF_ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) break;
    AppliedMigration& migration = rows.emplace_back();
    migration.version = static_cast<int>(stmt.Int(0));
    migration.name = stmt.Text(1);
    migration.applied_unix_ms = stmt.Int(2);
  }
  return rows;
}

absl::Status SqliteStore::ExecForTesting(const std::string& sql) {
  absl::MutexLock lock(&mu_);
  // Pending writes go first, and the SQL may delete agents behind the cache's back.
  PGF_RETURN_IF_ERROR(FlushWriteBehind());
  known_agents_.clear();
  return sql::ExecScript(db_, sql, "ExecForTesting");
}

}  // namespace pgfleet::controller
