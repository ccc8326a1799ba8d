#include "controller/store/migration_dialect.h"

#include <cctype>
#include <map>
#include <regex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"

namespace pgfleet::controller {
namespace {

constexpr auto kIcase = std::regex::ECMAScript | std::regex::icase;

// The text without `--` comments (outside quoted strings).
std::string StripComments(const std::string& sql) {
  std::string out;
  bool quoted = false;
  for (size_t i = 0; i < sql.size(); ++i) {
    const char c = sql[i];
    if (c == '\'') quoted = !quoted;
    if (!quoted && c == '-' && i + 1 < sql.size() && sql[i + 1] == '-') {
      while (i < sql.size() && sql[i] != '\n') ++i;
      out.push_back('\n');
      continue;
    }
    out.push_back(c);
  }
  return out;
}

bool StartsWithWords(const std::string& statement, const char* words) {
  return std::regex_search(statement, std::regex(absl::StrCat("^", words, "\\b"), kIcase));
}

// Statements split at ';' outside quotes; a CREATE TRIGGER runs to its END.
std::vector<std::string> SplitStatements(const std::string& sql) {
  std::vector<std::string> statements;
  std::string current;
  bool quoted = false;
  for (char c : sql) {
    if (c == '\'') quoted = !quoted;
    if (!quoted && c == ';') {
      std::string trimmed(absl::StripAsciiWhitespace(current));
      if (StartsWithWords(trimmed, "CREATE\\s+TRIGGER") &&
          !std::regex_search(trimmed, std::regex("\\bEND$", kIcase))) {
        current.push_back(c);  // A statement inside the trigger's body.
        continue;
      }
      if (!trimmed.empty()) statements.push_back(trimmed);
      current.clear();
      continue;
    }
    current.push_back(c);
  }
  std::string trimmed(absl::StripAsciiWhitespace(current));
  if (!trimmed.empty()) statements.push_back(trimmed);
  return statements;
}

// Applies `replace` to the parts of `statement` outside single-quoted strings.
template <typename Fn>
std::string OutsideQuotes(const std::string& statement, Fn replace) {
  std::string out;
  std::string plain;
  bool quoted = false;
  for (char c : statement) {
    if (c == '\'') {
      if (!quoted) {
        out += replace(plain);
        plain.clear();
        out.push_back(c);
      } else {
        out.push_back(c);
      }
      quoted = !quoted;
      continue;
    }
    if (quoted) {
      out.push_back(c);
    } else {
      plain.push_back(c);
    }
  }
  out += replace(plain);
  return out;
}

// The statement with its quoted strings left out (what the SQLite-only check looks at).
std::string WithoutQuoted(const std::string& statement) {
  std::string plain;
  bool quoted = false;
  for (char c : statement) {
    if (c == '\'') {
      quoted = !quoted;
      plain.push_back(' ');
    } else if (!quoted) {
      plain.push_back(c);
    }
  }
  return plain;
}

absl::Status Unsupported(const std::string& what, const std::string& statement) {
  return absl::InvalidArgumentError(
      absl::StrCat("migration uses ", what,
                   ", which has no PostgreSQL translation (controller/store/migration_dialect.h): ",
                   statement.substr(0, 120)));
}

absl::StatusOr<std::string> TranslateTrigger(const std::string& statement) {
  static const std::regex kTrigger(
      "^CREATE\\s+TRIGGER\\s+(\\w+)\\s+BEFORE\\s+(UPDATE|DELETE)\\s+ON\\s+(\\w+)\\s*"
      "(?:WHEN\\s+([\\s\\S]*?))?\\s*BEGIN\\s+SELECT\\s+RAISE\\s*\\(\\s*ABORT\\s*,\\s*"
      "'((?:[^']|'')*)'\\s*\\)\\s*;\\s*END$",
      kIcase);
  std::smatch match;
  if (!std::regex_match(statement, match, kTrigger)) {
    return Unsupported("a trigger other than BEFORE UPDATE/DELETE ... SELECT RAISE(ABORT, ...)",
                       statement);
  }
  const std::string name = match[1];
  std::string when;
  if (match[4].matched) {
    when = match[4];
    when = std::regex_replace(when, std::regex("\\bIS\\s+NOT\\s+(NEW|OLD)\\.", kIcase),
                              "IS DISTINCT FROM $1.");
    when = std::regex_replace(when, std::regex("\\bIS\\s+(NEW|OLD)\\.", kIcase),
                              "IS NOT DISTINCT FROM $1.");
    if (std::regex_search(when,
                          std::regex("\\bIS\\s+(NOT\\s+)?(?!NULL\\b|DISTINCT\\b)\\w", kIcase))) {
      return Unsupported("IS / IS NOT between values in a trigger's WHEN", statement);
    }
  }
  return absl::StrCat("CREATE FUNCTION ", name,
                      "() RETURNS trigger LANGUAGE plpgsql AS $pgfleet$ BEGIN "
                      "RAISE EXCEPTION USING ERRCODE = 'restrict_violation', MESSAGE = '",
                      std::string(match[5]), "'; END $pgfleet$;\nCREATE TRIGGER ", name, " BEFORE ",
                      absl::AsciiStrToUpper(std::string(match[2])), " ON ", std::string(match[3]),
                      " FOR EACH ROW", when.empty() ? "" : absl::StrCat(" WHEN (", when, ")"),
                      " EXECUTE FUNCTION ", name, "()");
}

// Columns whose text must survive byte for byte (NUL bytes, invalid UTF-8), which PostgreSQL's
// text cannot hold: BYTEA there (the store binds them with Stmt::BindBytes).
constexpr const char* kByteColumns[] = {"ini_text"};

std::string TranslateTypes(const std::string& plain, bool table_definition) {
  std::string out = plain;
  if (table_definition) {
    for (const char* column : kByteColumns) {
      out = std::regex_replace(out, std::regex(absl::StrCat("\\b", column, "\\s+TEXT\\b"), kIcase),
                               absl::StrCat(column, " BYTEA"));
    }
  }
  out = std::regex_replace(out,
                           std::regex("\\bINTEGER\\s+PRIMARY\\s+KEY\\s+AUTOINCREMENT\\b", kIcase),
                           "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY");
  out = std::regex_replace(out, std::regex("\\bINTEGER\\b", kIcase), "BIGINT");
  out = std::regex_replace(out, std::regex("\\bBLOB\\b", kIcase), "BYTEA");
  out = std::regex_replace(out, std::regex("\\)\\s*WITHOUT\\s+ROWID\\s*$", kIcase), ")");
  if (table_definition) {
    out = std::regex_replace(out, std::regex("\\bTEXT\\b", kIcase), "TEXT COLLATE \"C\"");
  }
  return out;
}

}  // namespace

absl::StatusOr<std::string> TranslateMigrationForPostgres(const std::string& sqlite_sql) {
  std::vector<std::string> statements = SplitStatements(StripComments(sqlite_sql));

  // Tables created by this file, by statement index: SQLite resolves a foreign key when it is
  // used, PostgreSQL when it is declared.
  static const std::regex kCreateTable("^CREATE\\s+TABLE\\s+(?:IF\\s+NOT\\s+EXISTS\\s+)?(\\w+)",
                                       kIcase);
  std::map<std::string, size_t> created_at;
  for (size_t i = 0; i < statements.size(); ++i) {
    std::smatch match;
    if (std::regex_search(statements[i], match, kCreateTable)) {
      created_at[absl::AsciiStrToLower(std::string(match[1]))] = i;
    }
  }
  std::map<size_t, std::vector<std::string>> after;  // Statement index -> ALTERs to run after it.

  static const std::regex kForeignKey(
      ",\\s*FOREIGN\\s+KEY\\s*\\(([^)]*)\\)\\s*REFERENCES\\s+(\\w+)\\s*\\(([^)]*)\\)", kIcase);
  static const std::regex kColumnReference("\\bREFERENCES\\s+(\\w+)", kIcase);
  static const std::regex kSqliteOnly(
      "\\b(AUTOINCREMENT|PRAGMA|GLOB|RAISE|strftime|datetime|julianday|unixepoch|"
      "INSERT\\s+OR|REPLACE\\s+INTO|WITHOUT\\s+ROWID)\\b",
      kIcase);

  std::vector<std::string> translated;
  for (size_t i = 0; i < statements.size(); ++i) {
    std::string statement = statements[i];
    if (StartsWithWords(statement, "CREATE\\s+TRIGGER")) {
      absl::StatusOr<std::string> trigger = TranslateTrigger(statement);
      if (!trigger.ok()) return trigger.status();
      translated.push_back(*trigger);
      continue;
    }
    // Spans quotes, so replaced before the quote-aware steps.
    statement = std::regex_replace(statement, std::regex("strftime\\('%s',\\s*'now'\\)", kIcase),
                                   "EXTRACT(EPOCH FROM now())");
    std::smatch match;
    if (std::regex_search(statement, match, kCreateTable)) {
      const std::string table = match[1];
      std::string kept;
      std::string rest = statement;
      while (std::regex_search(rest, match, kForeignKey)) {
        const std::string target = absl::AsciiStrToLower(std::string(match[2]));
        auto created = created_at.find(target);
        kept += match.prefix();
        if (created != created_at.end() && created->second > i) {
          after[created->second].push_back(absl::StrCat(
              "ALTER TABLE ", table, " ADD FOREIGN KEY (", std::string(match[1]), ") REFERENCES ",
              std::string(match[2]), " (", std::string(match[3]), ")"));
        } else {
          kept += match.str();
        }
        rest = match.suffix();
      }
      statement = kept + rest;
    }
    for (auto it = std::sregex_iterator(statement.begin(), statement.end(), kColumnReference);
         it != std::sregex_iterator(); ++it) {
      auto created = created_at.find(absl::AsciiStrToLower(std::string((*it)[1])));
      if (created != created_at.end() && created->second > i) {
        return Unsupported("a column REFERENCES to a table created later in the file", statement);
      }
    }
    const bool table_definition = StartsWithWords(statement, "CREATE\\s+TABLE") ||
                                  StartsWithWords(statement, "ALTER\\s+TABLE");
    statement = OutsideQuotes(statement, [&](const std::string& plain) {
      return TranslateTypes(plain, table_definition);
    });
    if (std::string plain = WithoutQuoted(statement);
        std::regex_search(plain, match, kSqliteOnly)) {
      return Unsupported(match[1], statement);
    }
    translated.push_back(statement);
    for (const std::string& alter : after[i]) translated.push_back(alter);
  }
  std::string out = absl::StrJoin(translated, ";\n");
  if (!out.empty()) out += ";\n";
  return out;
}

}  // namespace pgfleet::controller
