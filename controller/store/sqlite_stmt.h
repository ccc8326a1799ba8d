// The SQLite side of the store's SQL (sql_stmt.h): its error mapping and its connection
// (sqlite_connection.cc). Internal to controller/store; callers serialize access to it.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "controller/store/sql_stmt.h"

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

// Opens (creating if needed) the SQLite file at `path` as a store connection: extended result
// codes, a busy timeout, WAL journal mode, synchronous=NORMAL and foreign keys on (checked).
absl::StatusOr<std::unique_ptr<sql::Connection>> OpenConnection(const std::string& path);

// The store's statements are dialect-neutral now (sql_stmt.h); these names stay for the code
// written against them.
using sql::ExecScript;
using sql::Stmt;
using sql::Transaction;

}  // namespace pgfleet::controller::sqlite
