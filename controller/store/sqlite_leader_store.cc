// Leader lease and fencing (Store::AcquireLeadership; migrations/0010_leader_lease.sql).
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "controller/store/sql_stmt.h"
#include "controller/store/sqlite_store.h"

namespace pgfleet::controller {
namespace {

using sql::Stmt;
using sql::Transaction;

absl::StatusOr<std::optional<LeaderLease>> ReadLease(sql::Connection* db) {
  PGF_ASSIGN_OR_RETURN(Stmt stmt, Stmt::Prepare(db,
                                                "SELECT holder, fencing_token, acquired_unix_ms, "
                                                "expires_unix_ms FROM leader_lease WHERE id = 1"));
  PGF_ASSIGN_OR_RETURN(bool row, stmt.Step());
  if (!row) return std::optional<LeaderLease>();
  LeaderLease lease;
  lease.holder = stmt.Text(0);
  lease.fencing_token = stmt.U64(1);
  lease.acquired_unix_ms = stmt.Int(2);
  lease.expires_unix_ms = stmt.Int(3);
  return std::optional<LeaderLease>(lease);
}

}  // namespace

absl::StatusOr<LeaderLease> SqliteStore::AcquireLeadership(const std::string& holder,
                                                           int64_t now_ms, int64_t lease_ms) {
  if (holder.empty()) return absl::InvalidArgumentError("leader id must not be empty");
  if (lease_ms <= 0) return absl::InvalidArgumentError("lease must be positive");
  absl::MutexLock lock(&mu_);
  // Unfenced: this transaction is the one that may change the token. The writers' lock (BEGIN
  // IMMEDIATE / the advisory lock) orders it against every fenced write of every controller.
  PGF_ASSIGN_OR_RETURN(Transaction txn, Transaction::BeginUnfenced(db_));
  PGF_ASSIGN_OR_RETURN(std::optional<LeaderLease> current, ReadLease(db_));
  const std::optional<uint64_t> mine = db_->fencing_token();
  LeaderLease next;
  next.holder = holder;
  next.expires_unix_ms = now_ms + lease_ms;
  if (current.has_value() && mine.has_value() && current->fencing_token == *mine &&
      current->holder == holder) {
    // Renewal (also after our own lease lapsed, as long as nobody took over).
    next.fencing_token = *mine;
    next.acquired_unix_ms = current->acquired_unix_ms;
  } else if (current.has_value() && current->expires_unix_ms > now_ms) {
    return absl::FailedPreconditionError(absl::StrCat(
        mine.has_value() ? "deposed: " : "", "leadership is held by ", current->holder,
        " (fencing token ", current->fencing_token, ") until ", current->expires_unix_ms));
  } else {
    // Free or expired: a takeover, with a token no earlier leader ever held.
    next.fencing_token = current.has_value() ? current->fencing_token + 1 : 1;
    next.acquired_unix_ms = now_ms;
  }
  {
    PGF_ASSIGN_OR_RETURN(
        Stmt stmt,
        Stmt::Prepare(db_,
                      "INSERT INTO leader_lease (id, holder, fencing_token, acquired_unix_ms, "
                      "expires_unix_ms) VALUES (1, ?1, ?2, ?3, ?4) ON CONFLICT (id) DO UPDATE SET "
                      "holder = excluded.holder, fencing_token = excluded.fencing_token, "
                      "acquired_unix_ms = excluded.acquired_unix_ms, "
                      "expires_unix_ms = excluded.expires_unix_ms"));
    stmt.BindText(1, next.holder)
        .BindU64(2, next.fencing_token)
        .BindInt(3, next.acquired_unix_ms)
        .BindInt(4, next.expires_unix_ms);
    PGF_RETURN_IF_ERROR(stmt.Run());
  }
  PGF_RETURN_IF_ERROR(txn.Commit());
  if (!mine.has_value() || *mine != next.fencing_token) {
    PGF_INFO("store", "%s leads with fencing token %d", holder, next.fencing_token);
  }
  db_->SetFencingToken(next.fencing_token);
  return next;
}

absl::StatusOr<LeaderLease> SqliteStore::GetLeaderLease() {
  absl::MutexLock lock(&mu_);
  PGF_ASSIGN_OR_RETURN(std::optional<LeaderLease> lease, ReadLease(db_));
  if (!lease.has_value()) return absl::NotFoundError("no controller has led yet");
  return *lease;
}

}  // namespace pgfleet::controller
