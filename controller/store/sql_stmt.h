// The store's SQL over either of its two databases: SQLite (the embedded default) or
// PostgreSQL (--db=postgres://...). SqliteStore's queries are written once, in the SQL both
// understand (numbered parameters ?1..?N, ON CONFLICT, RETURNING), and run through the small
// interface below; sqlite_connection.cc and postgres_connection.cc implement it.
// Internal to controller/store; callers serialize access to a connection.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "controller/metrics/prometheus.h"

namespace pgfleet::controller::sql {

enum class Dialect { kSqlite, kPostgres };

// One prepared statement of a Connection. Bind errors are remembered and reported by Step().
// Parameters are 1-based; columns are 0-based.
class StmtImpl {
 public:
  virtual ~StmtImpl() = default;
  virtual void BindInt(int index, int64_t value) = 0;
  virtual void BindText(int index, const std::string& value) = 0;
  virtual void BindBlob(int index, const std::string& value) = 0;
  virtual void BindNull(int index) = 0;
  // Text that must survive byte for byte, NUL bytes and invalid UTF-8 included (a config
  // version's ini): SQLite keeps it as TEXT, PostgreSQL (whose text cannot) as BYTEA.
  virtual void BindBytes(int index, const std::string& value) = 0;
  // true: a row is available; false: done.
  virtual absl::StatusOr<bool> Step() = 0;
  virtual void Reset() = 0;
  virtual int64_t Changes() const = 0;
  virtual bool ReadOnly() const = 0;
  virtual bool IsNull(int column) const = 0;
  virtual int64_t Int(int column) const = 0;
  virtual std::string Text(int column) const = 0;
  virtual std::string Blob(int column) const = 0;
  virtual std::string Bytes(int column) const = 0;  // What BindBytes stored.
};

class Connection {
 public:
  virtual ~Connection() = default;
  virtual Dialect dialect() const = 0;
  virtual absl::StatusOr<std::unique_ptr<StmtImpl>> Prepare(const char* sql) = 0;
  // Parameterless SQL, possibly several statements: BEGIN/COMMIT, migrations, PRAGMAs.
  virtual absl::Status Exec(const std::string& sql, const std::string& context) = 0;
  // A write transaction that serializes with every other writer of the database (SQLite:
  // BEGIN IMMEDIATE; PostgreSQL: BEGIN and a transaction-scoped advisory lock), so a
  // transaction reads what it is about to change without racing another controller.
  virtual absl::Status BeginWrite() = 0;
  virtual absl::Status Commit() = 0;
  virtual void Rollback() = 0;
  virtual bool InTransaction() const = 0;

  // Fencing (leader election, see Store::AcquireLeadership). While a token is set, every write
  // (each Transaction, and each single write statement outside one) first checks, inside its
  // own write transaction and so under the writers' lock, that leader_lease still holds this
  // token, and is refused with FailedPrecondition if another controller has taken over.
  void SetFencingToken(std::optional<uint64_t> token) { fencing_token_ = token; }
  std::optional<uint64_t> fencing_token() const { return fencing_token_; }
  // BeginWrite, then the fencing check (if a token is set); rolled back if the check fails.
  absl::Status BeginFencedWrite();

 private:
  absl::Status CheckFencingToken();

  std::optional<uint64_t> fencing_token_;
};

// Runs parameterless SQL (possibly several statements).
inline absl::Status ExecScript(Connection* db, const std::string& sql, const std::string& context) {
  return db->Exec(sql, context);
}

// A prepared statement; the same API whichever database is underneath.
class Stmt {
 public:
  static absl::StatusOr<Stmt> Prepare(Connection* db, const char* sql) {
    absl::StatusOr<std::unique_ptr<StmtImpl>> impl = db->Prepare(sql);
    if (!impl.ok()) return impl.status();
    return Stmt(db, std::move(*impl));
  }

  Stmt(Stmt&&) noexcept = default;
  Stmt& operator=(Stmt&&) noexcept = default;

  Stmt& BindInt(int index, int64_t value) {
    impl_->BindInt(index, value);
    return *this;
  }
  // uint64 ids are stored as signed 64-bit integers (values above INT64_MAX wrap to negatives,
  // which never match a real row).
  Stmt& BindU64(int index, uint64_t value) { return BindInt(index, static_cast<int64_t>(value)); }
  Stmt& BindOptionalU64(int index, std::optional<uint64_t> value) {
    return value.has_value() ? BindU64(index, *value) : BindNull(index);
  }
  // Text and blobs are copied: temporaries are safe to bind.
  Stmt& BindText(int index, const std::string& value) {
    impl_->BindText(index, value);
    return *this;
  }
  Stmt& BindBlob(int index, const std::string& value) {
    impl_->BindBlob(index, value);
    return *this;
  }
  Stmt& BindNull(int index) {
    impl_->BindNull(index);
    return *this;
  }
  Stmt& BindBytes(int index, const std::string& value) {
    impl_->BindBytes(index, value);
    return *this;
  }

  absl::StatusOr<bool> Step() { return impl_->Step(); }

  // Runs a statement that returns no rows (or whose rows do not matter).
  absl::Status Run() {
    // A write outside a Transaction is a transaction of its own: timed as a store write.
    if (!impl_->ReadOnly() && !db_->InTransaction()) {
      const auto started = std::chrono::steady_clock::now();
      absl::Status status = Fenced([this] { return RunSteps(); });
      metrics::StoreWriteLatency().Observe(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
      return status;
    }
    return RunSteps();
  }

  // Runs an INSERT ... RETURNING <id column> of one row and returns that id.
  absl::StatusOr<uint64_t> RunReturningId() {
    uint64_t id = 0;
    absl::Status status = Fenced([this, &id]() -> absl::Status {
      absl::StatusOr<bool> row = Step();
      if (!row.ok()) return row.status();
      if (!*row) return absl::InternalError("INSERT ... RETURNING returned no row");
      id = U64(0);
      return RunSteps();
    });
    if (!status.ok()) return status;
    return id;
  }

  // Makes the statement runnable again, e.g. to rebind and run it for the next row.
  void Reset() { impl_->Reset(); }

  // Rows changed by the last Run() of an INSERT/UPDATE/DELETE.
  int64_t Changes() const { return impl_->Changes(); }

  bool IsNull(int column) const { return impl_->IsNull(column); }
  int64_t Int(int column) const { return impl_->Int(column); }
  uint64_t U64(int column) const { return static_cast<uint64_t>(Int(column)); }
  std::string Text(int column) const { return impl_->Text(column); }
  std::string Blob(int column) const { return impl_->Blob(column); }
  std::string Bytes(int column) const { return impl_->Bytes(column); }

 private:
  Stmt(Connection* db, std::unique_ptr<StmtImpl> impl) : db_(db), impl_(std::move(impl)) {}
  // A write outside a transaction, on a fenced connection: in a write transaction of its own
  // that checks the fencing token first. Otherwise just `write`.
  template <typename Fn>
  absl::Status Fenced(Fn write) {
    if (!db_->fencing_token().has_value() || db_->InTransaction() || impl_->ReadOnly()) {
      return write();
    }
    absl::Status status = db_->BeginFencedWrite();
    if (!status.ok()) return status;
    status = write();
    if (status.ok()) status = db_->Commit();
    if (!status.ok()) db_->Rollback();
    return status;
  }
  absl::Status RunSteps() {
    while (true) {
      absl::StatusOr<bool> row = Step();
      if (!row.ok()) return row.status();
      if (!*row) return absl::OkStatus();
    }
  }

  Connection* db_ = nullptr;
  std::unique_ptr<StmtImpl> impl_;
};

// A write transaction (Connection::BeginWrite). Rolls back on destruction unless Commit()
// succeeded. A failed COMMIT is rolled back too: nothing is ever half-written.
class Transaction {
 public:
  static absl::StatusOr<Transaction> BeginImmediate(Connection* db) {
    const auto started = std::chrono::steady_clock::now();
    absl::Status status = db->BeginFencedWrite();
    if (!status.ok()) return status;
    return Transaction(db, started);
  }
  // Without the fencing check: for the transaction that takes leadership (and so changes the
  // token) only.
  static absl::StatusOr<Transaction> BeginUnfenced(Connection* db) {
    const auto started = std::chrono::steady_clock::now();
    absl::Status status = db->BeginWrite();
    if (!status.ok()) return status;
    return Transaction(db, started);
  }

  Transaction(Transaction&& other) noexcept
      : db_(std::exchange(other.db_, nullptr)), started_(other.started_) {}
  Transaction& operator=(Transaction&&) = delete;
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  ~Transaction() { Rollback(); }

  absl::Status Commit() {
    if (db_ == nullptr) return absl::FailedPreconditionError("transaction already finished");
    absl::Status status = db_->Commit();
    // BEGIN to COMMIT, the time the write lock was held: the store's write latency.
    metrics::StoreWriteLatency().Observe(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count());
    if (!status.ok()) {
      Rollback();
      return status;
    }
    db_ = nullptr;
    return absl::OkStatus();
  }

 private:
  Transaction(Connection* db, std::chrono::steady_clock::time_point started)
      : db_(db), started_(started) {}
  void Rollback() {
    if (db_ == nullptr) return;
    db_->Rollback();
    db_ = nullptr;
  }

  Connection* db_ = nullptr;
  std::chrono::steady_clock::time_point started_;
};

inline absl::Status Connection::BeginFencedWrite() {
  absl::Status status = BeginWrite();
  if (!status.ok() || !fencing_token_.has_value()) return status;
  status = CheckFencingToken();
  if (!status.ok()) Rollback();
  return status;
}

inline absl::Status Connection::CheckFencingToken() {
  absl::StatusOr<Stmt> stmt =
      Stmt::Prepare(this, "SELECT holder, fencing_token FROM leader_lease WHERE id = 1");
  if (!stmt.ok()) return stmt.status();
  absl::StatusOr<bool> row = stmt->Step();
  if (!row.ok()) return row.status();
  if (*row && stmt->U64(1) == *fencing_token_) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "this controller is no longer the leader (its fencing token ", *fencing_token_,
      " was superseded",
      *row ? absl::StrCat(": ", stmt->Text(0), " holds token ", stmt->U64(1)) : std::string(),
      "); write refused"));
}

}  // namespace pgfleet::controller::sql
