#include "controller/store/postgres_connection.h"

#include <libpq-fe.h>

#include <cctype>
#include <cstdlib>
#include <functional>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status_macros.h"

namespace pgfleet::controller::postgres {
namespace {

constexpr char kComponent[] = "store";
constexpr int kStatementAttempts = 3;
// pg_type OIDs (catalog/pg_type_d.h, stable since forever).
constexpr Oid kInt8Oid = 20;
constexpr Oid kTextOid = 25;
constexpr Oid kByteaOid = 17;

struct ResultDeleter {
  void operator()(PGresult* result) const { PQclear(result); }
};
using Result = std::unique_ptr<PGresult, ResultDeleter>;

absl::StatusCode CodeForSqlState(const std::string& state) {
  if (state == "23505") return absl::StatusCode::kAlreadyExists;
  if (absl::StartsWith(state, "23")) return absl::StatusCode::kFailedPrecondition;
  if (state == "40001" || state == "40P01" || state == "55P03" || absl::StartsWith(state, "08") ||
      absl::StartsWith(state, "57P")) {
    return absl::StatusCode::kUnavailable;
  }
  if (absl::StartsWith(state, "53")) return absl::StatusCode::kResourceExhausted;
  if (state == "XX001" || state == "XX002") return absl::StatusCode::kDataLoss;
  if (absl::StartsWith(state, "22")) return absl::StatusCode::kInvalidArgument;
  return absl::StatusCode::kInternal;
}

// The status of a failed command; `result` may be null (the connection failed).
absl::Status ResultStatus(PGconn* conn, const PGresult* result, const std::string& context) {
  const char* state = result != nullptr ? PQresultErrorField(result, PG_DIAG_SQLSTATE) : nullptr;
  if (state == nullptr) {
    // No SQLSTATE: libpq's own failure (connection lost, out of memory).
    std::string text = PQerrorMessage(conn);
    while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
    return absl::UnavailableError(absl::StrCat("postgres: ", context, ": ", text));
  }
  const char* primary = PQresultErrorField(result, PG_DIAG_MESSAGE_PRIMARY);
  const char* detail = PQresultErrorField(result, PG_DIAG_MESSAGE_DETAIL);
  std::string message =
      absl::StrCat("postgres: ", context, ": ", primary != nullptr ? primary : "?");
  if (detail != nullptr) absl::StrAppend(&message, " (", detail, ")");
  absl::StrAppend(&message, " (SQLSTATE ", state, ")");
  return absl::Status(CodeForSqlState(state), message);
}

bool Succeeded(const PGresult* result) {
  if (result == nullptr) return false;
  ExecStatusType status = PQresultStatus(result);
  return status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK;
}

std::string SqlStateOf(const PGresult* result) {
  const char* state = result != nullptr ? PQresultErrorField(result, PG_DIAG_SQLSTATE) : nullptr;
  return state != nullptr ? state : "";
}

class PostgresConnection;

class PostgresStmt final : public sql::StmtImpl {
 public:
  PostgresStmt(PostgresConnection* connection, std::string original_sql)
      : connection_(connection),
        original_sql_(std::move(original_sql)),
        sql_(NumberedParameters(original_sql_)) {
    const std::string head = absl::AsciiStrToUpper(original_sql_.substr(0, 8));
    read_only_ = absl::StartsWith(head, "SELECT") || absl::StartsWith(head, "PRAGMA");
  }

  void BindInt(int index, int64_t value) override {
    Param(index) = Value{std::to_string(value), kInt8Oid, false};
  }
  void BindText(int index, const std::string& value) override {
    Param(index) = Value{value, kTextOid, false};
  }
  void BindBlob(int index, const std::string& value) override {
    Param(index) = Value{value, kByteaOid, true};
  }
  // Unknown type: the server infers it from where the parameter is used.
  void BindNull(int index) override { Param(index) = std::nullopt; }
  void BindBytes(int index, const std::string& value) override { BindBlob(index, value); }

  absl::StatusOr<bool> Step() override;

  void Reset() override {
    result_.reset();
    row_ = -1;
    params_.clear();
  }
  int64_t Changes() const override {
    if (result_ == nullptr) return 0;
    int64_t changed = 0;
    if (!absl::SimpleAtoi(PQcmdTuples(result_.get()), &changed)) return 0;
    return changed;
  }
  bool ReadOnly() const override { return read_only_; }

  bool IsNull(int column) const override { return PQgetisnull(result_.get(), row_, column) != 0; }
  int64_t Int(int column) const override {
    const char* text = PQgetvalue(result_.get(), row_, column);
    if (text[0] == 't' && text[1] == '\0') return 1;  // booleans (EXISTS, comparisons)
    if (text[0] == 'f' && text[1] == '\0') return 0;
    int64_t value = 0;
    if (absl::SimpleAtoi(text, &value)) return value;
    double real = 0;  // numeric results (SUM)
    if (absl::SimpleAtod(text, &real)) return static_cast<int64_t>(real);
    return 0;
  }
  std::string Text(int column) const override {
    return std::string(PQgetvalue(result_.get(), row_, column),
                       static_cast<size_t>(PQgetlength(result_.get(), row_, column)));
  }
  std::string Blob(int column) const override {
    if (PQftype(result_.get(), column) != kByteaOid) return Text(column);
    size_t length = 0;
    unsigned char* bytes = PQunescapeBytea(
        reinterpret_cast<const unsigned char*>(PQgetvalue(result_.get(), row_, column)), &length);
    if (bytes == nullptr) return std::string();
    std::string value(reinterpret_cast<const char*>(bytes), length);
    PQfreemem(bytes);
    return value;
  }
  std::string Bytes(int column) const override { return Blob(column); }

 private:
  struct Value {
    std::string data;
    Oid type;
    bool binary;
  };
  std::optional<Value>& Param(int index) {
    if (index < 1) index = 1;  // Never: parameters are 1-based; keep memory safe.
    if (params_.size() < static_cast<size_t>(index)) params_.resize(static_cast<size_t>(index));
    return params_[static_cast<size_t>(index) - 1];
  }
  Result Execute(PGconn* conn) const {
    std::vector<Oid> types;
    std::vector<const char*> values;
    std::vector<int> lengths;
    std::vector<int> formats;
    for (const std::optional<Value>& param : params_) {
      types.push_back(param.has_value() ? param->type : 0);
      values.push_back(param.has_value() ? param->data.data() : nullptr);
      lengths.push_back(param.has_value() ? static_cast<int>(param->data.size()) : 0);
      formats.push_back(param.has_value() && param->binary ? 1 : 0);
    }
    return Result(PQexecParams(conn, sql_.c_str(), static_cast<int>(params_.size()), types.data(),
                               values.data(), lengths.data(), formats.data(),
                               /*resultFormat=*/0));
  }

  PostgresConnection* connection_;
  std::string original_sql_;
  std::string sql_;
  bool read_only_ = false;
  std::vector<std::optional<Value>> params_;
  Result result_;
  int row_ = -1;  // -1: not executed yet.
};

class PostgresConnection final : public sql::Connection {
 public:
  explicit PostgresConnection(PGconn* conn) : conn_(conn) {}
  ~PostgresConnection() override { PQfinish(conn_); }
  PostgresConnection(const PostgresConnection&) = delete;
  PostgresConnection& operator=(const PostgresConnection&) = delete;

  sql::Dialect dialect() const override { return sql::Dialect::kPostgres; }

  absl::StatusOr<std::unique_ptr<sql::StmtImpl>> Prepare(const char* sql) override {
    return std::unique_ptr<sql::StmtImpl>(new PostgresStmt(this, sql));
  }

  absl::Status Exec(const std::string& sql, const std::string& context) override {
    ReconnectIfIdleAndLost();
    Result result(PQexec(conn_, sql.c_str()));
    if (Succeeded(result.get())) return absl::OkStatus();
    return ResultStatus(conn_, result.get(), context);
  }

  absl::Status BeginWrite() override {
    PGF_RETURN_IF_ERROR(Exec("BEGIN", "begin transaction"));
    absl::Status locked =
        Exec(absl::StrCat("SELECT pg_advisory_xact_lock(", kWriterLockKey, ")"), "writers' lock");
    if (!locked.ok()) Rollback();
    return locked;
  }

  absl::Status Commit() override {
    // COMMIT of a transaction an error aborted answers "ROLLBACK" without an error: say so.
    if (PQtransactionStatus(conn_) == PQTRANS_INERROR) {
      Rollback();
      return absl::AbortedError(
          "postgres: commit: the transaction was aborted by an earlier error and rolled back");
    }
    return Exec("COMMIT", "commit");
  }

  void Rollback() override {
    if (!InTransaction()) return;
    Result result(PQexec(conn_, "ROLLBACK"));
    if (!Succeeded(result.get())) {
      PGF_WARN(kComponent, "rollback: %s", ResultStatus(conn_, result.get(), "rollback").message());
    }
  }

  bool InTransaction() const override {
    PGTransactionStatusType status = PQtransactionStatus(conn_);
    return status == PQTRANS_INTRANS || status == PQTRANS_INERROR || status == PQTRANS_ACTIVE;
  }

  // A statement with its retries (see postgres_connection.h).
  Result Run(const std::function<Result(PGconn*)>& execute) {
    const bool in_transaction = InTransaction();
    if (!in_transaction) ReconnectIfIdleAndLost();
    Result result;
    for (int attempt = 1; attempt <= kStatementAttempts; ++attempt) {
      result = execute(conn_);
      if (Succeeded(result.get()) || in_transaction) break;
      const std::string state = SqlStateOf(result.get());
      if (state == "40001" || state == "40P01") continue;
      if (PQstatus(conn_) == CONNECTION_BAD && attempt == 1) {
        ReconnectIfIdleAndLost();
        if (PQstatus(conn_) == CONNECTION_OK) continue;
      }
      break;
    }
    return result;
  }

  PGconn* conn() { return conn_; }

 private:
  // After a lost connection (server restart, network) outside a transaction, one reconnect: the
  // store's state is all in the database, so nothing else needs restoring.
  void ReconnectIfIdleAndLost() {
    if (PQstatus(conn_) != CONNECTION_BAD) return;
    PGF_WARN(kComponent, "connection to PostgreSQL lost; reconnecting");
    PQreset(conn_);
    if (PQstatus(conn_) == CONNECTION_OK) {
      Result quiet(PQexec(conn_, "SET client_min_messages = warning"));
    }
  }

  PGconn* conn_;
};

absl::StatusOr<bool> PostgresStmt::Step() {
  if (row_ < 0) {
    result_ = connection_->Run([this](PGconn* conn) { return Execute(conn); });
    if (!Succeeded(result_.get())) {
      absl::Status status =
          ResultStatus(connection_->conn(), result_.get(), absl::StrCat("\"", original_sql_, "\""));
      result_.reset();
      return status;
    }
  }
  ++row_;
  return row_ < PQntuples(result_.get());
}

}  // namespace

bool IsPostgresUri(const std::string& db) {
  return absl::StartsWith(db, "postgres://") || absl::StartsWith(db, "postgresql://");
}

std::string RedactConnInfo(const std::string& conninfo) {
  if (IsPostgresUri(conninfo)) {
    // scheme://user:password@host...: the password sits between the first ':' after the
    // scheme and the '@'.
    const size_t authority = conninfo.find("://") + 3;
    const size_t at = conninfo.find('@', authority);
    if (at == std::string::npos) return conninfo;
    const size_t colon = conninfo.find(':', authority);
    if (colon == std::string::npos || colon > at) return conninfo;
    return absl::StrCat(conninfo.substr(0, colon + 1), "***", conninfo.substr(at));
  }
  const size_t key = conninfo.find("password");
  if (key == std::string::npos) return conninfo;
  size_t end = conninfo.find(' ', key);
  if (end == std::string::npos) end = conninfo.size();
  return absl::StrCat(conninfo.substr(0, key), "password=***", conninfo.substr(end));
}

std::string NumberedParameters(const std::string& sql) {
  std::string out;
  out.reserve(sql.size());
  bool quoted = false;
  for (char c : sql) {
    if (c == '\'') quoted = !quoted;
    out.push_back(!quoted && c == '?' ? '$' : c);
  }
  return out;
}

absl::StatusOr<std::unique_ptr<sql::Connection>> OpenConnection(const std::string& conninfo) {
  // connect_timeout first so the caller's conninfo (expanded from dbname) overrides it.
  const char* keys[] = {"connect_timeout", "dbname", nullptr};
  const char* values[] = {"10", conninfo.c_str(), nullptr};
  PGconn* conn = PQconnectdbParams(keys, values, /*expand_dbname=*/1);
  if (conn == nullptr) return absl::ResourceExhaustedError("postgres: out of memory");
  auto connection = std::make_unique<PostgresConnection>(conn);
  if (PQstatus(conn) != CONNECTION_OK) {
    std::string text = PQerrorMessage(conn);
    while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
    return absl::UnavailableError(
        absl::StrCat("postgres: connecting to ", RedactConnInfo(conninfo), ": ", text));
  }
  if (PQserverVersion(conn) < 110000) {
    return absl::FailedPreconditionError(absl::StrCat(
        "postgres: server version ", PQserverVersion(conn), " is too old (11 or newer needed)"));
  }
  // CREATE ... IF NOT EXISTS and friends would log NOTICEs at every start.
  PGF_RETURN_IF_ERROR(connection->Exec("SET client_min_messages = warning", "configure session"));
  return std::unique_ptr<sql::Connection>(std::move(connection));
}

}  // namespace pgfleet::controller::postgres
