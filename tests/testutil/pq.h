// Small RAII helpers over libpq for tests.
#pragma once

#include <libpq-fe.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace pgfleet::testutil {

struct PgConnDeleter {
  void operator()(PGconn* conn) const { PQfinish(conn); }
};
struct PgResultDeleter {
  void operator()(PGresult* result) const { PQclear(result); }
};
using PgConn = std::unique_ptr<PGconn, PgConnDeleter>;
using PgResult = std::unique_ptr<PGresult, PgResultDeleter>;

// Result rows as text; SQL NULL is "" (tests that care use `is null` in SQL).
using Rows = std::vector<std::vector<std::string>>;

// Quotes a libpq conninfo value: 'value' with \ and ' escaped.
std::string ConnInfoQuote(const std::string& value);
// "host=127.0.0.1 port=... dbname=... user=... password=... sslmode=disable connect_timeout=10".
std::string TcpConnString(int port, const std::string& db, const std::string& user,
                          const std::string& password);

// Connects (blocking). On failure the status carries PQerrorMessage.
absl::StatusOr<PgConn> Connect(const std::string& conninfo);

// Runs `sql` with the simple query protocol (several statements allowed) and returns the rows
// of the last result that had any. On a server error the status message is
// "<SQLSTATE>: <primary message>" and SqlStateOf() recovers the code.
absl::StatusOr<Rows> Query(PGconn* conn, const std::string& sql);
// Runs `sql` with the extended protocol (PQexecParams), text parameters.
absl::StatusOr<Rows> QueryParams(PGconn* conn, const std::string& sql,
                                 const std::vector<std::string>& params);
// The single value of a one-row, one-column result, as an integer / as text.
absl::StatusOr<int64_t> ScalarInt(PGconn* conn, const std::string& sql);
absl::StatusOr<std::string> ScalarText(PGconn* conn, const std::string& sql);

// The status for a failed PGresult (or a connection-level failure when result is null).
absl::Status ResultError(PGconn* conn, const PGresult* result);
// The SQLSTATE carried by a status from this file, or "" if none.
std::string SqlStateOf(const absl::Status& status);

// Waits (polling the socket, without blocking in libpq) up to `timeout` for the next result of
// a PQsendQuery. Returns nullptr-holding PgResult when there are no more results.
// DeadlineExceeded if nothing arrived in time.
absl::StatusOr<PgResult> GetResultWithin(PGconn* conn, absl::Duration timeout);

// Waits (up to 30 s) for the next result of a PQsendQuery and returns its error as
// "SQLSTATE: message", "no error" when it succeeded, or the wait's or connection's failure.
std::string ErrorOfPendingQuery(PGconn* conn);

// Closes the connection's socket with a TCP RST and without sending Terminate, as a crashed
// client would; the PGconn stays valid (its fd now points at /dev/null) and must still be freed.
absl::Status KillSocket(PGconn* conn);

}  // namespace pgfleet::testutil
