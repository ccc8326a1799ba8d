// SqliteStore's rollout tables (migrations/0002_rollouts.sql).
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"
#include "controller/store/sqlite_stmt.h"
#include "controller/store/sqlite_store.h"

namespace pgfleet::controller {
namespace {

using sql::Stmt;
using sql::Transaction;

constexpr char kRolloutColumns[] =
    "SELECT id, environment, from_version, to_version, waves, bake_ms, max_unavailable, "
    "max_cl_waiting, max_maxwait_ms, max_new_server_errors, max_new_login_failures, state, "
    "current_wave, wave_started_unix_ms, bake_started_unix_ms, failed_agent, reason, created_by, "
    "force_reason, created_unix_ms, finished_unix_ms, selector, kind, only_outdated, "
    "binary_version "
    "FROM rollouts ";

absl::StatusOr<std::vector<RolloutRow>> ReadRollouts(Stmt& stmt) {
  std::vector<RolloutRow> rows;
  while (true) {
    PGF_ASSIGN_OR_RETURN(bool has_row, stmt.Step());
    if (!has_row) break;
    RolloutRow row;
    row.id = stmt.U64(0);
    row.environment = stmt.Text(1);
    row.from_version = stmt.IsNull(2) ? 0 : stmt.U64(2);
    row.to_version = stmt.U64(3);
    row.waves = absl::StrSplit(stmt.Text(4), ',', absl::SkipEmpty());
    row.bake_ms = stmt.Int(5);
    row.max_unavailable = static_cast<int>(stmt.Int(6));
    row.limits.max_cl_waiting = static_cast<int>(stmt.Int(7));
    row.limits.max_maxwait_ms = stmt.Int(8);
    row.limits.max_new_server_errors = static_cast<int>(stmt.Int(9));
    row.limits.max_new_login_failures = static_cast<int>(stmt.Int(10));
    PGF_ASSIGN_OR_RETURN(row.state, ParseRolloutState(stmt.Text(11)));
    row.current_wave = static_cast<int>(stmt.Int(12));
    row.wave_started_unix_ms = stmt.Int(13);
    row.bake_started_unix_ms = stmt.Int(14);
    row.failed_agent = stmt.Text(15);
    row.reason = stmt.Text(16);
    row.created_by = stmt.Text(17);
    row.force_reason = stmt.Text(18);
    row.created_unix_ms = stmt.Int(19);
    row.finished_unix_ms = stmt.Int(20);
    row.selector = stmt.Text(21);
    row.kind = stmt.Text(22) == "restart" ? RolloutKind::kRestart : RolloutKind::kConfig;
    row.only_outdated = stmt.Int(23) != 0;
    row.binary_version = stmt.Text(24);
    rows.push_back(std::move(row));
  }
  return rows;
}

}  // namespace

absl::StatusOr<RolloutRow> SqliteStore::CreateRollout(const RolloutRow& rollout,
                                                      const std::vector<RolloutAgentRow>& agents) {
  absl::MutexLock lock(&mu_);
  PGF_ASSIGN_OR_RETURN(Transaction txn, Transaction::BeginImmediate(db_));
  RolloutRow created = rollout;
  {
    PGF_ASSIGN_OR_RETURN(
        Stmt stmt,
        Stmt::Prepare(db_,
                      "INSERT INTO rollouts (environment, from_version, to_version, waves, "
                      "bake_ms, max_unavailable, max_cl_waiting, max_maxwait_ms, "
                      "max_new_server_errors, max_new_login_failures, state, current_wave, "
                      "created_by, force_reason, created_unix_ms, selector, kind, only_outdated, "
                      "binary_version) "
                      "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, "
                      "?16, ?17, ?18, ?19) RETURNING id"));
    stmt.BindText(1, rollout.environment)
        .BindOptionalU64(2, rollout.from_version == 0
                                ? std::nullopt
                                : std::optional<uint64_t>(rollout.from_version))
        .BindU64(3, rollout.to_version)
        .BindText(4, absl::StrJoin(rollout.waves, ","))
        .BindInt(5, rollout.bake_ms)
        .BindInt(6, rollout.max_unavailable)
        .BindInt(7, rollout.limits.max_cl_waiting)
        .BindInt(8, rollout.limits.max_maxwait_ms)
        .BindInt(9, rollout.limits.max_new_server_errors)
        .BindInt(10, rollout.limits.max_new_login_failures)
        .BindText(11, RolloutStateName(rollout.state))
        .BindInt(12, rollout.current_wave)
        .BindText(13, rollout.created_by)
        .BindText(14, rollout.force_reason)
        .BindInt(15, rollout.created_unix_ms)
        .BindText(16, rollout.selector)
        .BindText(17, RolloutKindName(rollout.kind))
        .BindInt(18, rollout.only_outdated ? 1 : 0)
        .BindText(19, rollout.binary_version);
    absl::StatusOr<uint64_t> inserted = stmt.RunReturningId();
    if (absl::IsAlreadyExists(inserted.status())) {
      return absl::FailedPreconditionError(
          absl::StrCat("environment ", rollout.environment, " already has a rollout in progress"));
    }
    PGF_RETURN_IF_ERROR(inserted.status());
    created.id = *inserted;
  }
  PGF_ASSIGN_OR_RETURN(Stmt agent_stmt,
                       Stmt::Prepare(db_,
                                     "INSERT INTO rollout_agents (rollout_id, agent_id, wave, "
                                     "state, error, previous_pin, old_pid) "
                                     "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"));
  for (const RolloutAgentRow& agent : agents) {
    agent_stmt.Reset();
    agent_stmt.BindU64(1, created.id)
        .BindText(2, agent.agent_id)
        .BindInt(3, agent.wave)
        .BindText(4, RolloutAgentStateName(agent.state))
        .BindText(5, agent.error)
        .BindOptionalU64(6, agent.previous_pin)
        .BindInt(7, agent.old_pid);
    PGF_RETURN_IF_ERROR(agent_stmt.Run());
  }
  PGF_RETURN_IF_ERROR(txn.Commit());
  return created;
}

absl::Status SqliteStore::UpdateRollout(const RolloutRow& rollout) {
  absl::MutexLock lock(&mu_);
  PGF_ASSIGN_OR_RETURN(
      Stmt stmt,
      Stmt::Prepare(db_,
                    "UPDATE rollouts SET state = ?2, current_wave = ?3, wave_started_unix_ms = ?4, "
                    "bake_started_unix_ms = ?5, failed_agent = ?6, reason = ?7, "
                    "finished_unix_ms = ?8 WHERE id = ?1"));
  stmt.BindU64(1, rollout.id)
      .BindText(2, RolloutStateName(rollout.state))
      .BindInt(3, rollout.current_wave)
      .BindInt(4, rollout.wave_started_unix_ms)
      .BindInt(5, rollout.bake_started_unix_ms)
      .BindText(6, rollout.failed_agent)
      .BindText(7, rollout.reason)
      .BindInt(8, rollout.finished_unix_ms);
  PGF_RETURN_IF_ERROR(stmt.Run());
  if (stmt.Changes() == 0) return absl::NotFoundError(absl::StrCat("rollout ", rollout.id));
  return absl::OkStatus();
}

namespace {

constexpr char kUpdateRolloutAgentSql[] =
    "UPDATE rollout_agents SET state = ?3, error = ?4, command_id = ?5, old_pid = ?6, "
    "new_pid = ?7 WHERE rollout_id = ?1 AND agent_id = ?2";

// One row of kUpdateRolloutAgentSql on a prepared (and reset) statement.
absl::Status RunRolloutAgentUpdate(Stmt& stmt, const RolloutAgentRow& agent) {
  stmt.BindU64(1, agent.rollout_id)
      .BindText(2, agent.agent_id)
      .BindText(3, RolloutAgentStateName(agent.state))
      .BindText(4, agent.error)
      .BindOptionalU64(
          5, agent.command_id == 0 ? std::nullopt : std::optional<uint64_t>(agent.command_id))
      .BindInt(6, agent.old_pid)
      .BindInt(7, agent.new_pid);
  PGF_RETURN_IF_ERROR(stmt.Run());
  if (stmt.Changes() == 0) {
    return absl::NotFoundError(
        absl::StrCat("agent ", agent.agent_id, " is not part of rollout ", agent.rollout_id));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status SqliteStore::UpdateRolloutAgent(const RolloutAgentRow& agent) {
  absl::MutexLock lock(&mu_);
  PGF_ASSIGN_OR_RETURN(Stmt stmt, Stmt::Prepare(db_, kUpdateRolloutAgentSql));
  return RunRolloutAgentUpdate(stmt, agent);
}

absl::Status SqliteStore::UpdateRolloutAgents(const std::vector<AgentPin>& pins,
                                              const std::vector<RolloutAgentRow>& agents) {
  if (pins.empty() && agents.empty()) return absl::OkStatus();
  absl::MutexLock lock(&mu_);
  // One transaction and one prepared statement of each kind for the whole batch (a wave of
  // 10,000 agents was 20,000 transactions).
  PGF_ASSIGN_OR_RETURN(Transaction txn, Transaction::BeginImmediate(db_));
  PGF_ASSIGN_OR_RETURN(Stmt agent_environment,
                       Stmt::Prepare(db_, "SELECT environment FROM agents WHERE agent_id = ?1"));
  PGF_ASSIGN_OR_RETURN(
      Stmt version_environment,
      Stmt::Prepare(db_, "SELECT environment FROM config_versions WHERE version = ?1"));
  PGF_ASSIGN_OR_RETURN(
      Stmt pin, Stmt::Prepare(db_, "UPDATE agents SET pinned_version = ?2 WHERE agent_id = ?1"));
  std::map<uint64_t, std::string> version_owners;
  for (const AgentPin& change : pins) {
    agent_environment.Reset();
    agent_environment.BindText(1, change.agent_id);
    PGF_ASSIGN_OR_RETURN(bool found, agent_environment.Step());
    if (!found) return absl::NotFoundError(absl::StrCat("agent '", change.agent_id, "' not found"));
    const std::string environment = agent_environment.Text(0);
    if (change.version.has_value()) {
      auto owner = version_owners.find(*change.version);
      if (owner == version_owners.end()) {
        version_environment.Reset();
        version_environment.BindU64(1, *change.version);
        PGF_ASSIGN_OR_RETURN(bool exists, version_environment.Step());
        if (!exists) {
          return absl::NotFoundError(
              absl::StrCat("config version ", *change.version, " not found"));
        }
        owner = version_owners.emplace(*change.version, version_environment.Text(0)).first;
      }
      if (owner->second != environment) {
        return absl::InvalidArgumentError(absl::StrCat(
            "config version ", *change.version, " belongs to environment '", owner->second,
            "', but agent '", change.agent_id, "' is in environment '", environment, "'"));
      }
    }
    pin.Reset();
    pin.BindText(1, change.agent_id).BindOptionalU64(2, change.version);
    PGF_RETURN_IF_ERROR(pin.Run());
  }
  PGF_ASSIGN_OR_RETURN(Stmt update, Stmt::Prepare(db_, kUpdateRolloutAgentSql));
  for (const RolloutAgentRow& agent : agents) {
    update.Reset();
    PGF_RETURN_IF_ERROR(RunRolloutAgentUpdate(update, agent));
  }
  return txn.Commit();
}

absl::StatusOr<RolloutRow> SqliteStore::GetRollout(uint64_t id) {
  absl::MutexLock lock(&mu_);
  PGF_ASSIGN_OR_RETURN(Stmt stmt,
                       Stmt::Prepare(db_, absl::StrCat(kRolloutColumns, "WHERE id = ?1").c_str()));
  stmt.BindU64(1, id);
  PGF_ASSIGN_OR_RETURN(std::vector<RolloutRow> rows, ReadRollouts(stmt));
  if (rows.empty()) return absl::NotFoundError(absl::StrCat("rollout ", id, " not found"));
  return rows.front();
}

absl::StatusOr<std::vector<RolloutRow>> SqliteStore::ListRollouts(const std::string& environment,
                                                                  bool active_only) {
  absl::MutexLock lock(&mu_);
  PGF_ASSIGN_OR_RETURN(
      Stmt stmt,
      Stmt::Prepare(db_, absl::StrCat(kRolloutColumns,
                                      "WHERE (?1 = '' OR environment = ?1) AND (?2 = 0 OR state "
                                      "IN ('running', 'paused')) ORDER BY id DESC")
                             .c_str()));
  stmt.BindText(1, environment).BindInt(2, active_only ? 1 : 0);
  return ReadRollouts(stmt);
}

absl::StatusOr<std::vector<RolloutAgentRow>> SqliteStore::ListRolloutAgents(uint64_t rollout_id) {
  absl::MutexLock lock(&mu_);
  PGF_ASSIGN_OR_RETURN(Stmt stmt, Stmt::Prepare(db_,
                                                "SELECT agent_id, wave, state, error, "
                                                "previous_pin, command_id, old_pid, new_pid FROM "
                                                "rollout_agents WHERE rollout_id = ?1 "
                                                "ORDER BY wave, agent_id"));
  stmt.BindU64(1, rollout_id);
  std::vector<RolloutAgentRow> rows;
  while (true) {
    PGF_ASSIGN_OR_RETURN(bool has_row, stmt.Step());
    if (!has_row) break;
    RolloutAgentRow row;
    row.rollout_id = rollout_id;
    row.agent_id = stmt.Text(0);
    row.wave = static_cast<int>(stmt.Int(1));
    PGF_ASSIGN_OR_RETURN(row.state, ParseRolloutAgentState(stmt.Text(2)));
    row.error = stmt.Text(3);
    if (!stmt.IsNull(4)) row.previous_pin = stmt.U64(4);
    row.command_id = stmt.IsNull(5) ? 0 : stmt.U64(5);
    row.old_pid = stmt.IsNull(6) ? 0 : static_cast<int32_t>(stmt.Int(6));
    row.new_pid = stmt.IsNull(7) ? 0 : static_cast<int32_t>(stmt.Int(7));
    rows.push_back(std::move(row));
  }
  return rows;
}

absl::StatusOr<bool> SqliteStore::HasSucceededRollout(const std::string& environment,
                                                      const std::string& sha256) {
  absl::MutexLock lock(&mu_);
  PGF_ASSIGN_OR_RETURN(
      Stmt stmt,
      Stmt::Prepare(db_,
                    "SELECT 1 FROM rollouts r JOIN config_versions v "
                    "ON v.version = r.to_version WHERE r.environment = ?1 "
                    "AND r.state = 'succeeded' AND r.kind = 'config' AND v.sha256 = ?2 LIMIT 1"));
  stmt.BindText(1, environment).BindText(2, sha256);
  return stmt.Step();
}

absl::Status SqliteStore::SetEnvironmentUpstream(const std::string& environment,
                                                 const std::string& upstream) {
  if (environment == upstream) {
    return absl::InvalidArgumentError("an environment cannot be its own upstream");
  }
  absl::MutexLock lock(&mu_);
  PGF_ASSIGN_OR_RETURN(Stmt stmt,
                       Stmt::Prepare(db_, "UPDATE environments SET upstream = ?2 WHERE name = ?1"));
  stmt.BindText(1, environment);
  if (upstream.empty()) {
    stmt.BindNull(2);
  } else {
    stmt.BindText(2, upstream);
  }
  PGF_RETURN_IF_ERROR(stmt.Run());
  if (stmt.Changes() == 0) {
    return absl::NotFoundError(absl::StrCat("environment '", environment, "' not found"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> SqliteStore::GetEnvironmentUpstream(const std::string& environment) {
  absl::MutexLock lock(&mu_);
  PGF_ASSIGN_OR_RETURN(Stmt stmt,
                       Stmt::Prepare(db_, "SELECT upstream FROM environments WHERE name = ?1"));
  stmt.BindText(1, environment);
  PGF_ASSIGN_OR_RETURN(bool has_row, stmt.Step());
  if (!has_row)
    return absl::NotFoundError(absl::StrCat("environment '", environment, "' not found"));
  return stmt.IsNull(0) ? std::string() : stmt.Text(0);
}

}  // namespace pgfleet::controller
