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

}  // namespace pgfleet::testutil
