#include "tests/testutil/pq.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/cord.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace pgfleet::testutil {
namespace {

constexpr char kSqlStatePayload[] = "pgfleet.testutil/sqlstate";

Rows RowsOf(const PGresult* result) {
  Rows rows;
  const int n = PQntuples(result);
  const int m = PQnfields(result);
  rows.reserve(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    std::vector<std::string> row;
    row.reserve(static_cast<size_t>(m));
    for (int j = 0; j < m; ++j) {
      row.emplace_back(PQgetvalue(result, i, j), static_cast<size_t>(PQgetlength(result, i, j)));
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

// Collects every result of the command in flight; the first error wins.
absl::StatusOr<Rows> CollectResults(PGconn* conn) {
  absl::Status error = absl::OkStatus();
  Rows rows;
  while (PGresult* raw = PQgetResult(conn)) {
    PgResult result(raw);
    switch (PQresultStatus(raw)) {
      case PGRES_TUPLES_OK:
        if (error.ok()) rows = RowsOf(raw);
        break;
      case PGRES_COMMAND_OK:
      case PGRES_EMPTY_QUERY:
        break;
      case PGRES_COPY_IN:
      case PGRES_COPY_OUT:
      case PGRES_COPY_BOTH:
        return absl::FailedPreconditionError("Query() does not handle COPY; use libpq directly");
      default:
        if (error.ok()) error = ResultError(conn, raw);
        break;
    }
    if (PQstatus(conn) == CONNECTION_BAD) break;
  }
  if (!error.ok()) return error;
  if (PQstatus(conn) == CONNECTION_BAD) return ResultError(conn, nullptr);
  return rows;
}

}  // namespace

std::string ConnInfoQuote(const std::string& value) {
  std::string out = "'";
  for (char c : value) {
    if (c == '\\' || c == '\'') out.push_back('\\');
    out.push_back(c);
  }
  out.push_back('\'');
  return out;
}

std::string TcpConnString(int port, const std::string& db, const std::string& user,
                          const std::string& password) {
  return absl::StrCat("host=127.0.0.1 port=", port, " dbname=", ConnInfoQuote(db),
                      " user=", ConnInfoQuote(user), " password=", ConnInfoQuote(password),
                      " sslmode=disable connect_timeout=10");
}

absl::StatusOr<PgConn> Connect(const std::string& conninfo) {
  PgConn conn(PQconnectdb(conninfo.c_str()));
  if (conn == nullptr) return absl::ResourceExhaustedError("PQconnectdb returned null");
  if (PQstatus(conn.get()) != CONNECTION_OK) {
    return absl::UnavailableError(
        std::string(absl::StripTrailingAsciiWhitespace(PQerrorMessage(conn.get()))));
  }
  // NOTICEs ("table does not exist, skipping") are noise in test output.
  PQsetNoticeProcessor(
      conn.get(), [](void*, const char*) {}, nullptr);
  return conn;
}

absl::Status ResultError(PGconn* conn, const PGresult* result) {
  if (result == nullptr) {
    return absl::UnavailableError(
        std::string(absl::StripTrailingAsciiWhitespace(PQerrorMessage(conn))));
  }
  const char* sqlstate = PQresultErrorField(result, PG_DIAG_SQLSTATE);
  const char* primary = PQresultErrorField(result, PG_DIAG_MESSAGE_PRIMARY);
  std::string message;
  if (primary != nullptr) {
    message = absl::StrCat(sqlstate != nullptr ? sqlstate : "no SQLSTATE", ": ", primary);
  } else {
    message = std::string(absl::StripTrailingAsciiWhitespace(PQresultErrorMessage(result)));
    if (message.empty()) {
      message = std::string(absl::StripTrailingAsciiWhitespace(PQerrorMessage(conn)));
    }
    if (message.empty()) message = PQresStatus(PQresultStatus(result));
  }
  absl::Status status = absl::UnknownError(message);
  if (sqlstate != nullptr) status.SetPayload(kSqlStatePayload, absl::Cord(sqlstate));
  return status;
}

std::string SqlStateOf(const absl::Status& status) {
  auto payload = status.GetPayload(kSqlStatePayload);
  return payload.has_value() ? std::string(*payload) : "";
}

absl::StatusOr<Rows> Query(PGconn* conn, const std::string& sql) {
  if (PQsendQuery(conn, sql.c_str()) != 1) return ResultError(conn, nullptr);
  return CollectResults(conn);
}

absl::StatusOr<Rows> QueryParams(PGconn* conn, const std::string& sql,
                                 const std::vector<std::string>& params) {
  std::vector<const char*> values;
  values.reserve(params.size());
  for (const std::string& p : params) values.push_back(p.c_str());
  if (PQsendQueryParams(conn, sql.c_str(), static_cast<int>(params.size()), nullptr, values.data(),
                        nullptr, nullptr, 0) != 1) {
    return ResultError(conn, nullptr);
  }
  return CollectResults(conn);
}

absl::StatusOr<std::string> ScalarText(PGconn* conn, const std::string& sql) {
  absl::StatusOr<Rows> rows = Query(conn, sql);
  if (!rows.ok()) return rows.status();
  if (rows->size() != 1 || (*rows)[0].size() != 1) {
    return absl::FailedPreconditionError(
        absl::StrCat("expected one value from '", sql, "', got ", rows->size(), " rows"));
  }
  return (*rows)[0][0];
}

absl::StatusOr<int64_t> ScalarInt(PGconn* conn, const std::string& sql) {
  absl::StatusOr<std::string> text = ScalarText(conn, sql);
  if (!text.ok()) return text.status();
  int64_t value;
  if (!absl::SimpleAtoi(*text, &value)) {
    return absl::FailedPreconditionError(
        absl::StrCat("'", sql, "' returned non-integer '", *text, "'"));
  }
  return value;
}

absl::StatusOr<PgResult> GetResultWithin(PGconn* conn, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    if (PQconsumeInput(conn) != 1) return ResultError(conn, nullptr);
    if (PQisBusy(conn) == 0) return PgResult(PQgetResult(conn));
    absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      return absl::DeadlineExceededError(
          absl::StrCat("no result within ", absl::FormatDuration(timeout)));
    }
    struct pollfd pfd = {PQsocket(conn), POLLIN, 0};
    int ms = static_cast<int>(std::min<int64_t>(absl::ToInt64Milliseconds(left) + 1, 100));
    poll(&pfd, 1, ms);
  }
}

std::string ErrorOfPendingQuery(PGconn* conn) {
  absl::StatusOr<PgResult> result = GetResultWithin(conn, absl::Seconds(30));
  if (!result.ok()) return std::string(result.status().message());
  if (*result == nullptr) return absl::StrCat("connection error: ", PQerrorMessage(conn));
  if (PQresultStatus(result->get()) != PGRES_FATAL_ERROR) return "no error";
  const char* state = PQresultErrorField(result->get(), PG_DIAG_SQLSTATE);
  return absl::StrCat(state != nullptr ? state : "", ": ",
                      PQresultErrorField(result->get(), PG_DIAG_MESSAGE_PRIMARY));
}

absl::Status KillSocket(PGconn* conn) {
  const int fd = PQsocket(conn);
  if (fd < 0) return absl::FailedPreconditionError("connection has no socket");
  struct linger lin = {1, 0};
  if (setsockopt(fd, SOL_SOCKET, SO_LINGER, &lin, sizeof(lin)) != 0) {
    return absl::InternalError(absl::StrCat("SO_LINGER: ", std::strerror(errno)));
  }
  const int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (devnull < 0) return absl::InternalError(absl::StrCat("open: ", std::strerror(errno)));
  // dup2 closes the socket (the last reference, so with linger 0 the kernel sends RST) and
  // leaves libpq holding a harmless descriptor.
  if (dup2(devnull, fd) < 0) {
    int err = errno;
    close(devnull);
    return absl::InternalError(absl::StrCat("dup2: ", std::strerror(err)));
  }
  close(devnull);
  return absl::OkStatus();
}

}  // namespace pgfleet::testutil
