// The PostgreSQL side of the store's SQL (sql_stmt.h), over libpq: PostgreSQL's own client
// library, the one thing that speaks its protocol, authentication (SCRAM, certificates,
// .pgpass, service files) and TLS exactly as the server expects.
//
// Behaviour:
//  * Statements are the store's SQLite-style SQL with ?N parameters, sent as $N with typed
//    parameters (int8, text, bytea in binary) through the extended protocol; results as text.
//  * BeginWrite: BEGIN (READ COMMITTED) and pg_advisory_xact_lock(kWriterLockKey): writers of
//    every controller on the database take turns, as they would on one SQLite file, so a
//    transaction's reads cannot go stale before its writes and no serialization failures arise.
//  * Single statements outside a transaction are retried (up to kStatementAttempts) on
//    serialization failures and deadlocks (SQLSTATE 40001, 40P01), and once after the connection
//    was lost and could be re-established. Inside a transaction nothing is retried here: the
//    error is returned and the transaction rolled back, and the caller's call fails as a whole.
//  * Errors carry the SQLSTATE: "postgres: <context>: <message> (SQLSTATE 23505)". Codes:
//    23505 unique_violation: AlreadyExists; other class 23 (constraints, the immutability
//    triggers): FailedPrecondition; 40001/40P01/55P03, class 08 (connection) and 57P0x
//    (shutdown): Unavailable (retryable); class 53 (disk full, memory): ResourceExhausted;
//    XX001/XX002 (corruption): DataLoss; class 22 (bad data): InvalidArgument; others Internal.
#pragma once

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "controller/store/sql_stmt.h"

namespace pgfleet::controller::postgres {

// The advisory lock key that serializes the store's writers (ASCII "pgfleet" and 1).
inline constexpr int64_t kWriterLockKey = 0x7067666c65657401;

// True for postgres:// and postgresql:// URIs: what --db takes for a PostgreSQL store.
bool IsPostgresUri(const std::string& db);

// `conninfo` with its password (URI user:password@ or key=value password=...) replaced by ***,
// for logs and error messages.
std::string RedactConnInfo(const std::string& conninfo);

// Connects (connect_timeout 10 s unless conninfo says otherwise) and checks the server is
// PostgreSQL 11 or newer (identity columns, EXECUTE FUNCTION triggers).
absl::StatusOr<std::unique_ptr<sql::Connection>> OpenConnection(const std::string& conninfo);

// The SQL the store's ?N-parameter text becomes for PostgreSQL: $N (outside quotes).
std::string NumberedParameters(const std::string& sql);

}  // namespace pgfleet::controller::postgres
