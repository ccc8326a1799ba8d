#include "tests/testutil/console.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace pgfleet::testutil {

int Table::Col(const std::string& name) const {
  for (size_t i = 0; i < columns.size(); ++i) {
    if (columns[i] == name) return static_cast<int>(i);
  }
  return -1;
}

std::string Table::At(const std::vector<std::string>& row, const std::string& column) const {
  const int c = Col(column);
  if (c < 0 || static_cast<size_t>(c) >= row.size())
    return absl::StrCat("<no column ", column, ">");
  return row[static_cast<size_t>(c)];
}

Rows Table::Where(const std::vector<std::pair<std::string, std::string>>& match) const {
  Rows out;
  for (const std::vector<std::string>& row : rows) {
    bool ok = true;
    for (const auto& [column, value] : match) {
      if (At(row, column) != value) ok = false;
    }
    if (ok) out.push_back(row);
  }
  return out;
}

std::string Table::Dump() const {
  std::string out = absl::StrJoin(columns, " | ");
  for (const std::vector<std::string>& row : rows) {
    absl::StrAppend(&out, "\n", absl::StrJoin(row, " | "));
  }
  return out;
}

absl::StatusOr<Table> Show(PGconn* conn, const std::string& sql) {
  PgResult result(PQexec(conn, sql.c_str()));
  if (result == nullptr || PQresultStatus(result.get()) != PGRES_TUPLES_OK) {
    return ResultError(conn, result.get());
  }
  Table table;
  const int fields = PQnfields(result.get());
  for (int i = 0; i < fields; ++i) {
    table.columns.push_back(PQfname(result.get(), i));
    table.types.push_back(PQftype(result.get(), i));
  }
  for (int r = 0; r < PQntuples(result.get()); ++r) {
    std::vector<std::string> row;
    for (int i = 0; i < fields; ++i) row.push_back(PQgetvalue(result.get(), r, i));
    table.rows.push_back(std::move(row));
  }
  return table;
}

absl::StatusOr<std::string> Command(PGconn* conn, const std::string& sql) {
  PgResult result(PQexec(conn, sql.c_str()));
  if (result == nullptr || PQresultStatus(result.get()) != PGRES_COMMAND_OK) {
    return ResultError(conn, result.get());
  }
  return std::string(PQcmdStatus(result.get()));
}

std::string ColumnMismatch(const Table& table, const std::vector<std::string>& names,
                           const std::string& tupdesc) {
  if (names.size() != tupdesc.size()) return "test bug: names and tupdesc differ in length";
  if (table.columns != names) {
    return absl::StrCat("columns are [", absl::StrJoin(table.columns, ", "), "], PgBouncer's [",
                        absl::StrJoin(names, ", "), "]");
  }
  std::string mismatches;
  for (size_t i = 0; i < names.size(); ++i) {
    Oid expected = 0;
    switch (tupdesc[i]) {
      case 's':
      case 'T':
        expected = 25;
        break;
      case 'i':
        expected = 23;
        break;
      case 'q':
        expected = 20;
        break;
      case 'N':
        expected = 1700;
        break;
      case 'b':
        expected = 17;
        break;
      default:
        return absl::StrCat("test bug: type letter '", std::string(1, tupdesc[i]), "'");
    }
    if (table.types[i] != expected) {
      absl::StrAppend(&mismatches, mismatches.empty() ? "" : "; ", names[i], " has type oid ",
                      table.types[i], ", PgBouncer's ", expected);
    }
  }
  return mismatches;
}

}  // namespace pgfleet::testutil
