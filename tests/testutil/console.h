// Reading the admin console (or any server) through libpq: SHOW results as tables, and the
// tags of commands that return no rows.
#pragma once

#include <libpq-fe.h>

#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "tests/testutil/pq.h"

namespace pgfleet::testutil {

// One SHOW result: column names, type OIDs and rows as text (NULL is "").
struct Table {
  std::vector<std::string> columns;
  std::vector<Oid> types;
  Rows rows;

  // The column's index, or -1.
  int Col(const std::string& name) const;
  // The row's value in `column`, or "<no column NAME>".
  std::string At(const std::vector<std::string>& row, const std::string& column) const;
  // Rows where every (column, value) pair matches.
  Rows Where(const std::vector<std::pair<std::string, std::string>>& match) const;
  // Columns and rows, " | "-separated, for failure messages.
  std::string Dump() const;
};

// Compares `table`'s column names and types with PgBouncer's for the same SHOW: `names` in
// order, and `tupdesc` in PgBouncer's RowDescription letters (src/pktbuf.c): 's' text, 'i' int4,
// 'q' int8, 'N' numeric, 'b' bytea, 'T' a time sent as text. "" when they match, else what
// differs.
std::string ColumnMismatch(const Table& table, const std::vector<std::string>& names,
                           const std::string& tupdesc);

// Runs a SHOW (or anything returning rows) with the simple query protocol.
absl::StatusOr<Table> Show(PGconn* conn, const std::string& sql);

// Runs a command that returns no rows: its CommandComplete tag, or the error.
absl::StatusOr<std::string> Command(PGconn* conn, const std::string& sql);

}  // namespace pgfleet::testutil
