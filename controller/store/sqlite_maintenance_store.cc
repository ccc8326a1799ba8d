// SqliteStore's maintenance windows (migrations/0003_maintenance.sql).
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

constexpr char kWindowColumns[] =
    "SELECT id, environment, database_name, starts_unix_ms, ends_unix_ms, drain_timeout_ms, "
    "reason, state, skip_agents, created_by, created_unix_ms, pause_sent_unix_ms, failure, "
    "selector, resumed_agents FROM maintenance_windows ";

absl::StatusOr<std::vector<WindowRow>> ReadWindows(Stmt& stmt) {
  std::vector<WindowRow> rows;
  while (true) {
    PGF_ASSIGN_OR_RETURN(bool has_row, stmt.Step());
    if (!has_row) break;
    WindowRow row;
    row.id = stmt.U64(0);
    row.environment = stmt.Text(1);
    row.database = stmt.Text(2);
    row.starts_unix_ms = stmt.Int(3);
    row.ends_unix_ms = stmt.Int(4);
    row.drain_timeout_ms = stmt.Int(5);
    row.reason = stmt.Text(6);
    PGF_ASSIGN_OR_RETURN(row.state, ParseWindowState(stmt.Text(7)));
    row.skip_agents = absl::StrSplit(stmt.Text(8), ',', absl::SkipEmpty());
    row.created_by = stmt.Text(9);
    row.created_unix_ms = stmt.Int(10);
    row.pause_sent_unix_ms = stmt.Int(11);
    row.failure = stmt.Text(12);
    row.selector = stmt.Text(13);
    row.resumed_agents = absl::StrSplit(stmt.Text(14), ',', absl::SkipEmpty());
    rows.push_back(std::move(row));
  }
  return rows;
}

}  // namespace

absl::StatusOr<WindowRow> SqliteStore::CreateWindow(const WindowRow& window) {
  absl::MutexLock lock(&mu_);
  PGF_ASSIGN_OR_RETURN(Transaction txn, Transaction::BeginImmediate(db_));
  {
    // Two windows of one environment may not overlap in time if they may pause the same agent.
    PGF_ASSIGN_OR_RETURN(
        Stmt stmt, Stmt::Prepare(db_, absl::StrCat(kWindowColumns,
                                                   "WHERE environment = ?1 AND state IN "
                                                   "('scheduled', 'pausing', 'paused') AND "
                                                   "starts_unix_ms < ?3 AND ends_unix_ms > ?2 "
                                                   "ORDER BY id")
                                          .c_str()));
    stmt.BindText(1, window.environment)
        .BindInt(2, window.starts_unix_ms)
        .BindInt(3, window.ends_unix_ms);
    PGF_ASSIGN_OR_RETURN(std::vector<WindowRow> overlapping, ReadWindows(stmt));
    for (const WindowRow& other : overlapping) {
      if (!WindowsMayShareAgents(window, other)) continue;
      return absl::FailedPreconditionError(absl::StrCat(
          "overlaps maintenance window ", other.id, " of ", window.environment,
          other.selector.empty() ? " (every agent)" : absl::StrCat(" (-l ", other.selector, ")"),
          ", which may pause the same agents; cancel it, pick another time, or use selectors "
          "no agent can match both of"));
    }
  }
  WindowRow created = window;
  {
    PGF_ASSIGN_OR_RETURN(
        Stmt stmt,
        Stmt::Prepare(db_,
                      "INSERT INTO maintenance_windows (environment, database_name, "
                      "starts_unix_ms, ends_unix_ms, drain_timeout_ms, reason, state, "
                      "skip_agents, created_by, created_unix_ms, selector) "
                      "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) RETURNING id"));
    stmt.BindText(1, window.environment)
        .BindText(2, window.database)
        .BindInt(3, window.starts_unix_ms)
        .BindInt(4, window.ends_unix_ms)
        .BindInt(5, window.drain_timeout_ms)
        .BindText(6, window.reason)
        .BindText(7, WindowStateName(window.state))
        .BindText(8, absl::StrJoin(window.skip_agents, ","))
        .BindText(9, window.created_by)
        .BindInt(10, window.created_unix_ms)
        .BindText(11, window.selector);
    PGF_ASSIGN_OR_RETURN(created.id, stmt.RunReturningId());
  }
  PGF_RETURN_IF_ERROR(txn.Commit());
  return created;
}

absl::Status SqliteStore::UpdateWindow(const WindowRow& window) {
  absl::MutexLock lock(&mu_);
  PGF_ASSIGN_OR_RETURN(
      Stmt stmt, Stmt::Prepare(db_,
                               "UPDATE maintenance_windows SET state = ?2, ends_unix_ms = ?3, "
                               "pause_sent_unix_ms = ?4, failure = ?5, resumed_agents = ?6 "
                               "WHERE id = ?1"));
  stmt.BindU64(1, window.id)
      .BindText(2, WindowStateName(window.state))
      .BindInt(3, window.ends_unix_ms)
      .BindInt(4, window.pause_sent_unix_ms)
      .BindText(5, window.failure)
      .BindText(6, absl::StrJoin(window.resumed_agents, ","));
  PGF_RETURN_IF_ERROR(stmt.Run());
  if (stmt.Changes() == 0) return absl::NotFoundError(absl::StrCat("window ", window.id));
  return absl::OkStatus();
}

absl::StatusOr<WindowRow> SqliteStore::GetWindow(uint64_t id) {
  absl::MutexLock lock(&mu_);
  PGF_ASSIGN_OR_RETURN(Stmt stmt,
                       Stmt::Prepare(db_, absl::StrCat(kWindowColumns, "WHERE id = ?1").c_str()));
  stmt.BindU64(1, id);
  PGF_ASSIGN_OR_RETURN(std::vector<WindowRow> rows, ReadWindows(stmt));
  if (rows.empty())
    return absl::NotFoundError(absl::StrCat("maintenance window ", id, " not found"));
  return rows.front();
}

absl::StatusOr<std::vector<WindowRow>> SqliteStore::ListWindows(const std::string& environment,
                                                                bool open_only) {
  absl::MutexLock lock(&mu_);
  PGF_ASSIGN_OR_RETURN(
      Stmt stmt,
      Stmt::Prepare(db_, absl::StrCat(kWindowColumns,
                                      "WHERE (?1 = '' OR environment = ?1) AND (?2 = 0 OR state "
                                      "IN ('scheduled', 'pausing', 'paused')) ORDER BY id DESC")
                             .c_str()));
  stmt.BindText(1, environment).BindInt(2, open_only ? 1 : 0);
  return ReadWindows(stmt);
}

}  // namespace pgfleet::controller
