// sql::Connection over one SQLite connection (see sql_stmt.h and sqlite_stmt.h).
#include <sqlite3.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "controller/store/sqlite_stmt.h"

namespace pgfleet::controller::sqlite {
namespace {

constexpr int kBusyTimeoutMs = 5000;

// Prepared statements kept for reuse, one per SQL text: preparing (parsing and planning) was a
// third of the controller's CPU when it reconciled 10,000 agents, each a few lookups.
class StatementCache {
 public:
  StatementCache() = default;
  StatementCache(const StatementCache&) = delete;
  StatementCache& operator=(const StatementCache&) = delete;
  ~StatementCache() {
    for (auto& [sql, stmt] : free_) sqlite3_finalize(stmt);
  }

  // A statement for `sql` nobody is using, or null.
  sqlite3_stmt* Take(const char* sql) {
    auto it = free_.find(sql);
    if (it == free_.end()) return nullptr;
    sqlite3_stmt* stmt = it->second;
    free_.erase(it);
    return stmt;
  }
  // Back from its user: reset (which also ends the read it may hold open) and kept, unless one
  // for the same text is kept already or the cache is full.
  void Return(sqlite3_stmt* stmt) {
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    const char* sql = sqlite3_sql(stmt);
    if (sql == nullptr || free_.size() >= kMaxStatements || free_.count(sql) != 0) {
      sqlite3_finalize(stmt);
      return;
    }
    free_.emplace(sql, stmt);
  }

 private:
  static constexpr size_t kMaxStatements = 512;
  std::map<std::string, sqlite3_stmt*, std::less<>> free_;
};

class SqliteStmt final : public sql::StmtImpl {
 public:
  SqliteStmt(sqlite3* db, sqlite3_stmt* stmt, StatementCache* cache)
      : db_(db), stmt_(stmt), cache_(cache) {}
  // Statements never outlive their connection (sqlite3_close would fail), nor its cache.
  ~SqliteStmt() override { cache_->Return(stmt_); }
  SqliteStmt(const SqliteStmt&) = delete;
  SqliteStmt& operator=(const SqliteStmt&) = delete;

  void BindInt(int index, int64_t value) override {
    Remember(sqlite3_bind_int64(stmt_, index, value));
  }
  // Copied (SQLITE_TRANSIENT): temporaries are safe to bind.
  void BindText(int index, const std::string& value) override {
    Remember(sqlite3_bind_text64(stmt_, index, value.data(), value.size(), SQLITE_TRANSIENT,
                                 SQLITE_UTF8));
  }
  void BindBlob(int index, const std::string& value) override {
    Remember(sqlite3_bind_blob64(stmt_, index, value.data(), value.size(), SQLITE_TRANSIENT));
  }
  void BindNull(int index) override { Remember(sqlite3_bind_null(stmt_, index)); }
  void BindBytes(int index, const std::string& value) override { BindText(index, value); }

  absl::StatusOr<bool> Step() override {
    if (bind_rc_ != SQLITE_OK) return Error(db_, bind_rc_, Context("bind"));
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    return Error(db_, rc, Context("step"));
  }
  void Reset() override {
    sqlite3_reset(stmt_);
    bind_rc_ = SQLITE_OK;
  }
  int64_t Changes() const override { return sqlite3_changes64(db_); }
  bool ReadOnly() const override { return sqlite3_stmt_readonly(stmt_) != 0; }

  bool IsNull(int column) const override {
    return sqlite3_column_type(stmt_, column) == SQLITE_NULL;
  }
  int64_t Int(int column) const override { return sqlite3_column_int64(stmt_, column); }
  std::string Text(int column) const override {
    const unsigned char* data = sqlite3_column_text(stmt_, column);
    int size = sqlite3_column_bytes(stmt_, column);  // After column_text, per the docs.
    if (data == nullptr) return std::string();
    return std::string(reinterpret_cast<const char*>(data), static_cast<size_t>(size));
  }
  std::string Blob(int column) const override {
    const void* data = sqlite3_column_blob(stmt_, column);
    int size = sqlite3_column_bytes(stmt_, column);
    if (data == nullptr) return std::string();
    return std::string(static_cast<const char*>(data), static_cast<size_t>(size));
  }
  std::string Bytes(int column) const override { return Text(column); }

 private:
  void Remember(int rc) {
    if (rc != SQLITE_OK && bind_rc_ == SQLITE_OK) bind_rc_ = rc;
  }
  std::string Context(const char* what) const {
    const char* sql = stmt_ != nullptr ? sqlite3_sql(stmt_) : nullptr;
    return absl::StrCat(what, " \"", sql != nullptr ? sql : "?", "\"");
  }

  sqlite3* db_;
  sqlite3_stmt* stmt_;
  StatementCache* cache_;
  int bind_rc_ = SQLITE_OK;
};

class SqliteConnection final : public sql::Connection {
 public:
  explicit SqliteConnection(sqlite3* db) : db_(db), cache_(std::make_unique<StatementCache>()) {}
  ~SqliteConnection() override {
    // Every statement is back from its RAII owner; the cache finalizes them all, so close
    // succeeds; in WAL mode closing the last connection checkpoints the WAL into the main file.
    cache_.reset();
    int rc = sqlite3_close(db_);
    if (rc != SQLITE_OK) PGF_ERROR("store", "closing the database: %s", sqlite3_errstr(rc));
  }
  SqliteConnection(const SqliteConnection&) = delete;
  SqliteConnection& operator=(const SqliteConnection&) = delete;

  sql::Dialect dialect() const override { return sql::Dialect::kSqlite; }

  absl::StatusOr<std::unique_ptr<sql::StmtImpl>> Prepare(const char* sql) override {
    sqlite3_stmt* stmt = cache_->Take(sql);
    if (stmt == nullptr) {
      int rc = sqlite3_prepare_v2(db_, sql, -1, &stmt, nullptr);
      if (rc != SQLITE_OK) {
        sqlite3_finalize(stmt);
        return Error(db_, rc, absl::StrCat("prepare \"", sql, "\""));
      }
      if (stmt == nullptr) {  // Only a comment or white space: nothing to run.
        return absl::InvalidArgumentError(absl::StrCat("prepare \"", sql, "\": no statement"));
      }
    }
    return std::unique_ptr<sql::StmtImpl>(new SqliteStmt(db_, stmt, cache_.get()));
  }

  absl::Status Exec(const std::string& sql, const std::string& context) override {
    char* raw_error = nullptr;
    int rc = sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &raw_error);
    if (rc == SQLITE_OK) return absl::OkStatus();
    std::string text = raw_error != nullptr ? raw_error : sqlite3_errstr(rc);
    sqlite3_free(raw_error);
    absl::Status status = Error(nullptr, rc, context);
    return absl::Status(status.code(),
                        absl::StrCat("sqlite: ", context, ": ", text, " (code ", rc, ")"));
  }

  // IMMEDIATE takes the write lock up front, so a transaction never fails half-way for lock
  // upgrades.
  absl::Status BeginWrite() override { return Exec("BEGIN IMMEDIATE", "begin transaction"); }
  absl::Status Commit() override { return Exec("COMMIT", "commit"); }
  void Rollback() override {
    // SQLite rolls back by itself after some errors (SQLITE_FULL, IOERR, NOMEM, BUSY in
    // some cases); only roll back what is still open.
    if (InTransaction()) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }
  bool InTransaction() const override { return sqlite3_get_autocommit(db_) == 0; }

  absl::Status Configure() {
    sqlite3_extended_result_codes(db_, 1);
    sqlite3_busy_timeout(db_, kBusyTimeoutMs);

    // WAL: readers never block the writer, and a commit is one append to the -wal file.
    {
      PGF_ASSIGN_OR_RETURN(Stmt stmt, Stmt::Prepare(this, "PRAGMA journal_mode = WAL"));
      PGF_ASSIGN_OR_RETURN(bool row, stmt.Step());
      std::string mode = row ? absl::AsciiStrToLower(stmt.Text(0)) : "";
      if (mode != "wal") {
        return absl::FailedPreconditionError(
            absl::StrCat("cannot use WAL journal mode (got '", mode, "')"));
      }
    }
    // synchronous=NORMAL is enough for what we promise: in WAL mode a COMMIT hands its frames
    // to the OS (write(), no fsync) before returning, so a transaction that committed survives
    // the death of the process (kill -9, crash): the OS page cache still writes it out, and the
    // next open recovers it from the WAL. WAL frames are checksummed and checkpoints do fsync,
    // so even a power loss or kernel crash never corrupts the file; it can only lose the last
    // transactions committed before it. FULL would fsync the WAL at every commit (one per
    // metrics report and heartbeat) to also cover that case; we do not pay for it.
    PGF_RETURN_IF_ERROR(Exec("PRAGMA synchronous = NORMAL", "PRAGMA synchronous"));
    PGF_RETURN_IF_ERROR(Exec("PRAGMA foreign_keys = ON", "PRAGMA foreign_keys"));
    {
      // The pragma is a silent no-op in builds without foreign key support: check it stuck.
      PGF_ASSIGN_OR_RETURN(Stmt stmt, Stmt::Prepare(this, "PRAGMA foreign_keys"));
      PGF_ASSIGN_OR_RETURN(bool row, stmt.Step());
      if (!row || stmt.Int(0) != 1) {
        return absl::FailedPreconditionError("this SQLite cannot enforce foreign keys");
      }
    }
    return absl::OkStatus();
  }

 private:
  sqlite3* const db_;
  std::unique_ptr<StatementCache> cache_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<sql::Connection>> OpenConnection(const std::string& path) {
  sqlite3* db = nullptr;
  // One connection shared by every thread, serialized by the store's mutex: SQLite's own
  // per-connection mutex would be redundant (NOMUTEX).
  int rc = sqlite3_open_v2(
      path.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    absl::Status status = Error(db, rc, absl::StrCat("open '", path, "'"));
    sqlite3_close(db);
    return status;
  }
  auto connection = std::make_unique<SqliteConnection>(db);
  PGF_RETURN_IF_ERROR(connection->Configure());
  return std::unique_ptr<sql::Connection>(std::move(connection));
}

}  // namespace pgfleet::controller::sqlite
