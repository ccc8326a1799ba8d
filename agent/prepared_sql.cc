// The SQL side of prepared statements: which simple queries a transaction pooler must
// rewrite or refuse (PREPARE, EXECUTE, DEALLOCATE; see prepared_statements.h), and the query
// that refuses them.
#include <algorithm>
#include <optional>
#include <string>
#include <string_view>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "agent/pg/protocol.h"
#include "agent/prepared_statements.h"

namespace pgfleet::agent::ps {

// ---- SQL classification ------------------------------------------------------------------------

namespace {

// Skips whitespace and comments (-- to end of line, nested /* */).
void SkipSpace(std::string_view& sql) {
  while (!sql.empty()) {
    if (absl::ascii_isspace(static_cast<unsigned char>(sql[0]))) {
      sql.remove_prefix(1);
    } else if (sql.size() >= 2 && sql[0] == '-' && sql[1] == '-') {
      const size_t end = sql.find('\n');
      sql = end == std::string_view::npos ? std::string_view() : sql.substr(end + 1);
    } else if (sql.size() >= 2 && sql[0] == '/' && sql[1] == '*') {
      int depth = 0;
      size_t i = 0;
      while (i + 1 < sql.size()) {
        if (sql[i] == '/' && sql[i + 1] == '*') {
          ++depth;
          i += 2;
        } else if (sql[i] == '*' && sql[i + 1] == '/') {
          i += 2;
          if (--depth == 0) break;
        } else {
          ++i;
        }
      }
      sql = depth == 0 ? sql.substr(i) : std::string_view();
    } else {
      return;
    }
  }
}

bool IdentChar(char c) {
  const auto u = static_cast<unsigned char>(c);
  return absl::ascii_isalnum(u) || c == '_' || c == '$' || u >= 0x80;
}

// The next word, lower-cased; or a double-quoted identifier, verbatim (quoted = true).
std::string NextWord(std::string_view& sql, bool* quoted = nullptr) {
  SkipSpace(sql);
  if (quoted != nullptr) *quoted = false;
  std::string word;
  if (!sql.empty() && sql[0] == '"') {
    size_t i = 1;
    while (i < sql.size()) {
      if (sql[i] == '"') {
        if (i + 1 < sql.size() && sql[i + 1] == '"') {
          word.push_back('"');
          i += 2;
          continue;
        }
        if (quoted != nullptr) *quoted = true;
        sql.remove_prefix(i + 1);
        return word;
      }
      word.push_back(sql[i++]);
    }
    sql = {};
    return {};
  }
  size_t i = 0;
  while (i < sql.size() && IdentChar(sql[i])) ++i;
  word = absl::AsciiStrToLower(absl::string_view(sql.data(), i));
  sql.remove_prefix(i);
  return word;
}

// Where the statement at the start of `sql` ends: the index of its top-level ';', or npos.
// Skips comments, 'strings' (E'' with backslash escapes), "identifiers" and $tag$ bodies.
size_t StatementEnd(std::string_view sql) {
  size_t i = 0;
  while (i < sql.size()) {
    const char c = sql[i];
    const bool after_word = i > 0 && IdentChar(sql[i - 1]);
    if (c == ';') return i;
    if (c == '-' && i + 1 < sql.size() && sql[i + 1] == '-') {
      const size_t end = sql.find('\n', i);
      if (end == std::string_view::npos) return end;
      i = end + 1;
    } else if (c == '/' && i + 1 < sql.size() && sql[i + 1] == '*') {
      std::string_view rest = sql.substr(i);
      SkipSpace(rest);  // Skips the (nested) comment and any space after it.
      if (rest.empty()) return std::string_view::npos;
      i = sql.size() - rest.size();
    } else if (c == '\'' || c == '"') {
      const bool backslashes = c == '\'' && after_word &&
                               (sql[i - 1] == 'e' || sql[i - 1] == 'E') &&
                               (i < 2 || !IdentChar(sql[i - 2]));
      ++i;
      while (i < sql.size()) {
        if (backslashes && sql[i] == '\\') {
          i += 2;
        } else if (sql[i] == c) {
          if (i + 1 < sql.size() && sql[i + 1] == c) {
            i += 2;
          } else {
            break;
          }
        } else {
          ++i;
        }
      }
      if (i >= sql.size()) return std::string_view::npos;
      ++i;
    } else if (c == '$' && !after_word) {
      size_t tag_end = i + 1;
      if (tag_end < sql.size() && absl::ascii_isdigit(static_cast<unsigned char>(sql[tag_end]))) {
        ++i;  // $1: a parameter.
        continue;
      }
      while (tag_end < sql.size() && IdentChar(sql[tag_end]) && sql[tag_end] != '$') ++tag_end;
      if (tag_end >= sql.size() || sql[tag_end] != '$') {
        ++i;
        continue;
      }
      const std::string_view tag = sql.substr(i, tag_end - i + 1);
      const size_t close = sql.find(tag, tag_end + 1);
      if (close == std::string_view::npos) return close;
      i = close + tag.size();
    } else {
      ++i;
    }
  }
  return std::string_view::npos;
}

bool IsBlank(std::string_view sql) {
  SkipSpace(sql);
  return sql.empty();
}

SqlCommand ClassifyStatement(std::string_view sql);

// One statement of several: what makes the whole query refused, if anything.
std::optional<SqlCommand> RefusedInBatch(std::string_view statement) {
  SqlCommand command = ClassifyStatement(statement);
  if (command.kind == SqlKind::kOther || command.kind == SqlKind::kDeallocateAll) {
    return std::nullopt;
  }
  command.name.clear();  // Never matches a client statement: the query is refused.
  return command;
}

}  // namespace

SqlCommand ClassifySql(std::string_view sql) {
  // The query text ends at its terminator when the whole message is here; otherwise `sql` is
  // a prefix, whose last statement may be cut short.
  const size_t terminator = sql.find('\0');
  const bool complete = terminator != std::string_view::npos;
  if (complete) sql = sql.substr(0, terminator);
  // Every simple query comes here, nearly all of them one statement: with no ';' but perhaps a
  // last one followed by white space, the query is one statement whatever its quoting, and its
  // first word decides. Two memchr-speed searches instead of the statement scan below.
  const size_t first_semicolon = sql.find(';');
  if (first_semicolon == std::string_view::npos ||
      sql.find_first_not_of(" \t\n\r\f\v", first_semicolon + 1) == std::string_view::npos) {
    return ClassifyStatement(sql);
  }
  // Several statements: one of them that uses SQL-level prepared statements makes the query
  // refused as a whole (it cannot be rewritten around it). DEALLOCATE ALL passes: its command
  // tag tells the agent the server's statements are gone. No allocation on the way: this runs
  // for every simple query.
  std::string_view first;
  size_t statements = 0;
  std::string_view rest = sql;
  for (;;) {
    const size_t end = StatementEnd(rest);
    const bool last = end == std::string_view::npos;
    const std::string_view statement = rest.substr(0, end);
    if (!IsBlank(statement)) {
      ++statements;
      if (statements == 1) {
        first = statement;
      } else {
        // The first statement waits until a second shows the query has several.
        if (statements == 2) {
          if (std::optional<SqlCommand> refused = RefusedInBatch(first)) return *refused;
        }
        if (!last || complete) {
          if (std::optional<SqlCommand> refused = RefusedInBatch(statement)) return *refused;
        }
      }
    }
    if (last) break;
    rest.remove_prefix(end + 1);
  }
  return statements <= 1 ? ClassifyStatement(sql) : SqlCommand{};
}

namespace {

SqlCommand ClassifyStatement(std::string_view sql) {
  SqlCommand command;
  const std::string first = NextWord(sql);
  if (first == "prepare") {
    // PREPARE TRANSACTION is two-phase commit, not a prepared statement.
    std::string_view peek = sql;
    if (NextWord(peek) != "transaction") command.kind = SqlKind::kPrepare;
  } else if (first == "execute") {
    command.kind = SqlKind::kExecute;
  } else if (first == "deallocate") {
    bool quoted = false;
    std::string name = NextWord(sql, &quoted);
    if (!quoted && name == "prepare") name = NextWord(sql, &quoted);
    if (!quoted && name == "all") {
      command.kind = SqlKind::kDeallocateAll;
    } else {
      command.kind = SqlKind::kDeallocate;
      command.name = std::move(name);
    }
  }
  return command;
}

}  // namespace

std::string RejectionMessage(SqlKind kind, std::string_view pool_mode) {
  const char* keyword = kind == SqlKind::kExecute   ? "EXECUTE"
                        : kind == SqlKind::kPrepare ? "PREPARE"
                                                    : "DEALLOCATE";
  return absl::StrCat("SQL ", keyword, " is not supported in ",
                      absl::string_view(pool_mode.data(), pool_mode.size()),
                      " pooling mode: use protocol-level prepared statements (your driver's "
                      "prepareThreshold / prepare=True), or session mode");
}

std::string RejectionQuery(SqlKind kind, std::string_view pool_mode) {
  return pg::Query(absl::StrCat(
      "DO $pgfleet$BEGIN RAISE EXCEPTION USING ERRCODE = 'feature_not_supported', MESSAGE = ",
      pg::QuoteLiteral(RejectionMessage(kind, pool_mode)),
      ", HINT = ", pg::QuoteLiteral(kRejectionHint), "; END$pgfleet$"));
}

}  // namespace pgfleet::agent::ps
