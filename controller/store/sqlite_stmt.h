// Small RAII helpers over the SQLite C API: prepared statements with bind/step/column
// helpers, and an IMMEDIATE transaction that rolls back unless committed.
// Internal to controller/store; callers serialize access to the connection.
#pragma once

#include <sqlite3.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "controller/metrics/prometheus.h"

namespace pgfleet::controller::sqlite {

// Maps a SQLite result code to a Status carrying SQLite's own message.
//  constraint violations: AlreadyExists (UNIQUE / PRIMARY KEY) or FailedPrecondition (others),
//  SQLITE_FULL: ResourceExhausted, BUSY/LOCKED: Unavailable, CORRUPT/NOTADB: DataLoss,
//  everything else (I/O errors included): Internal.
inline absl::Status Error(sqlite3* db, int rc, const std::string& context) {
  const int primary = rc & 0xff;
  // sqlite3_errmsg describes the most recent failed call on this connection, which is the
  // one we are reporting (callers hold the connection exclusively); fall back to errstr.
  const char* text =
      db != nullptr && sqlite3_extended_errcode(db) == rc ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  std::string message = absl::StrCat("sqlite: ", context, ": ", text, " (code ", rc, ")");
  switch (primary) {
    case SQLITE_CONSTRAINT:
      if (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY) {
        return absl::AlreadyExistsError(message);
      }
      return absl::FailedPreconditionError(message);
    case SQLITE_FULL:
      return absl::ResourceExhaustedError(message);
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return absl::UnavailableError(message);
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return absl::DataLossError(message);
    default:
      return absl::InternalError(message);
  }
}

// Runs parameterless SQL (possibly several statements): PRAGMAs, BEGIN/COMMIT, migrations.
inline absl::Status ExecScript(sqlite3* db, const char* sql, const std::string& context) {
  char* raw_error = nullptr;
  int rc = sqlite3_exec(db, sql, nullptr, nullptr, &raw_error);
  if (rc == SQLITE_OK) return absl::OkStatus();
  std::string text = raw_error != nullptr ? raw_error : sqlite3_errstr(rc);
  sqlite3_free(raw_error);
  absl::Status status = Error(nullptr, rc, context);
  return absl::Status(status.code(),
                      absl::StrCat("sqlite: ", context, ": ", text, " (code ", rc, ")"));
}

// One prepared statement. Bind errors are remembered and reported by the next Step().
// Parameters are 1-based ("?1", "?2"...); columns are 0-based.
class Stmt {
 public:
  static absl::StatusOr<Stmt> Prepare(sqlite3* db, const char* sql) {
    sqlite3_stmt* stmt = nullptr;
    int rc = sqlite3_prepare_v2(db, sql, -1, &stmt, nullptr);
    if (rc != SQLITE_OK) {
      sqlite3_finalize(stmt);
      return Error(db, rc, absl::StrCat("prepare \"", sql, "\""));
    }
    return Stmt(db, stmt);
  }

  Stmt(Stmt&& other) noexcept
      : db_(other.db_), stmt_(std::exchange(other.stmt_, nullptr)), bind_rc_(other.bind_rc_) {}
  Stmt& operator=(Stmt&& other) noexcept {
    if (this != &other) {
      sqlite3_finalize(stmt_);
      db_ = other.db_;
      stmt_ = std::exchange(other.stmt_, nullptr);
      bind_rc_ = other.bind_rc_;
    }
    return *this;
  }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;
  ~Stmt() { sqlite3_finalize(stmt_); }

  Stmt& BindInt(int index, int64_t value) {
    Remember(sqlite3_bind_int64(stmt_, index, value));
    return *this;
  }
  // uint64 ids are stored as SQLite's signed 64-bit integers (values above INT64_MAX wrap
  // to negatives, which never match a real row).
  Stmt& BindU64(int index, uint64_t value) { return BindInt(index, static_cast<int64_t>(value)); }
  Stmt& BindOptionalU64(int index, std::optional<uint64_t> value) {
    return value.has_value() ? BindU64(index, *value) : BindNull(index);
  }
  // Text and blobs are copied (SQLITE_TRANSIENT): temporaries are safe to bind.
  Stmt& BindText(int index, const std::string& value) {
    Remember(sqlite3_bind_text64(stmt_, index, value.data(), value.size(), SQLITE_TRANSIENT,
                                 SQLITE_UTF8));
    return *this;
  }
  Stmt& BindBlob(int index, const std::string& value) {
    Remember(sqlite3_bind_blob64(stmt_, index, value.data(), value.size(), SQLITE_TRANSIENT));
    return *this;
  }
  Stmt& BindNull(int index) {
    Remember(sqlite3_bind_null(stmt_, index));
    return *this;
  }

  // true: a row is available; false: done.
  absl::StatusOr<bool> Step() {
    if (bind_rc_ != SQLITE_OK) return Error(db_, bind_rc_, Context("bind"));
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    return Error(db_, rc, Context("step"));
  }

  // Runs a statement that returns no rows (or whose rows do not matter).
  absl::Status Run() {
    // A write outside a Transaction is a transaction of its own: timed as a store write.
    if (!sqlite3_stmt_readonly(stmt_) && sqlite3_get_autocommit(db_) != 0) {
      const auto started = std::chrono::steady_clock::now();
      absl::Status status = RunSteps();
      metrics::StoreWriteLatency().Observe(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
      return status;
    }
    return RunSteps();
  }

  // Makes the statement runnable again, e.g. to rebind and run it for the next row.
  void Reset() {
    sqlite3_reset(stmt_);
    bind_rc_ = SQLITE_OK;
  }

  // Rows changed by the last Run() of an INSERT/UPDATE/DELETE.
  int64_t Changes() const { return sqlite3_changes64(db_); }

  bool IsNull(int column) const { return sqlite3_column_type(stmt_, column) == SQLITE_NULL; }
  int64_t Int(int column) const { return sqlite3_column_int64(stmt_, column); }
  uint64_t U64(int column) const { return static_cast<uint64_t>(Int(column)); }
  std::string Text(int column) const {
    const unsigned char* data = sqlite3_column_text(stmt_, column);
    int size = sqlite3_column_bytes(stmt_, column);  // After column_text, per the docs.
    if (data == nullptr) return std::string();
    return std::string(reinterpret_cast<const char*>(data), static_cast<size_t>(size));
  }
  std::string Blob(int column) const {
    const void* data = sqlite3_column_blob(stmt_, column);
    int size = sqlite3_column_bytes(stmt_, column);
    if (data == nullptr) return std::string();
    return std::string(static_cast<const char*>(data), static_cast<size_t>(size));
  }

 private:
  Stmt(sqlite3* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}
  absl::Status RunSteps() {
    while (true) {
      absl::StatusOr<bool> row = Step();
      if (!row.ok()) return row.status();
      if (!*row) return absl::OkStatus();
    }
  }
  void Remember(int rc) {
    if (rc != SQLITE_OK && bind_rc_ == SQLITE_OK) bind_rc_ = rc;
  }
  std::string Context(const char* what) const {
    const char* sql = stmt_ != nullptr ? sqlite3_sql(stmt_) : nullptr;
    return absl::StrCat(what, " \"", sql != nullptr ? sql : "?", "\"");
  }

  sqlite3* db_ = nullptr;
  sqlite3_stmt* stmt_ = nullptr;
  int bind_rc_ = SQLITE_OK;
};

// BEGIN IMMEDIATE (takes the write lock up front, so a transaction never fails half-way for
// lock upgrades). Rolls back on destruction unless Commit() succeeded. A failed COMMIT
// (SQLITE_FULL, I/O error, ...) is rolled back too: nothing is ever half-written.
class Transaction {
 public:
  static absl::StatusOr<Transaction> BeginImmediate(sqlite3* db) {
    const auto started = std::chrono::steady_clock::now();
    absl::Status status = ExecScript(db, "BEGIN IMMEDIATE", "begin transaction");
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
    absl::Status status = ExecScript(db_, "COMMIT", "commit");
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
  Transaction(sqlite3* db, std::chrono::steady_clock::time_point started)
      : db_(db), started_(started) {}
  void Rollback() {
    if (db_ == nullptr) return;
    // SQLite rolls back by itself after some errors (SQLITE_FULL, IOERR, NOMEM, BUSY in
    // some cases); only roll back what is still open.
    if (sqlite3_get_autocommit(db_) == 0) {
      sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    }
    db_ = nullptr;
  }

  sqlite3* db_ = nullptr;
  std::chrono::steady_clock::time_point started_;
};

}  // namespace pgfleet::controller::sqlite
