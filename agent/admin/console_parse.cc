#include "agent/admin/console_parse.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/string_view.h"

namespace pgfleet::agent {
namespace {

std::string Upper(std::string_view s) { return absl::AsciiStrToUpper(std::string(s)); }

}  // namespace

std::vector<std::string> TokenizeAdminCommand(std::string_view sql) {
  std::vector<std::string> words;
  std::string current;
  bool quoted = false, in_word = false;
  for (char c : sql) {
    if (quoted) {
      if (c == '"') {
        quoted = false;
      } else {
        current.push_back(c);
      }
    } else if (c == '"') {
      quoted = in_word = true;
    } else if (absl::ascii_isspace(static_cast<unsigned char>(c)) || c == ';') {
      if (in_word) words.push_back(std::move(current));
      current.clear();
      in_word = false;
    } else {
      current.push_back(c);
      in_word = true;
    }
  }
  if (in_word) words.push_back(std::move(current));
  return words;
}

std::optional<AdminCommand> ParseAdminCommand(std::string_view sql) {
  std::vector<std::string> words = TokenizeAdminCommand(sql);
  if (words.empty()) return std::nullopt;
  AdminCommand command;
  command.verb = Upper(words[0]);
  command.args.assign(words.begin() + 1, words.end());
  command.text = absl::StrJoin(words, " ");
  return command;
}

absl::StatusOr<PauseArgs> ParsePauseArgs(const std::vector<std::string>& args) {
  PauseArgs result;
  size_t i = 0;
  if (i < args.size() && Upper(args[i]) != "FOR") result.db = args[i++];
  if (i < args.size()) {
    absl::Duration duration;
    int64_t seconds = 0;
    bool parsed = i + 2 == args.size() && Upper(args[i]) == "FOR";
    if (parsed && absl::SimpleAtoi(args[i + 1], &seconds)) {
      duration = absl::Seconds(seconds);  // A bare number is seconds, like PgBouncer settings.
    } else if (parsed) {
      parsed = absl::ParseDuration(args[i + 1], &duration);
    }
    if (!parsed || duration <= absl::ZeroDuration()) {
      return absl::InvalidArgumentError("usage: PAUSE [db] [FOR <duration>, e.g. 15m or 90s]");
    }
    if (duration > kMaxPauseDuration) {
      return absl::InvalidArgumentError(absl::StrCat("PAUSE FOR ", args[i + 1],
                                                     ": the longest pause with a deadline is ",
                                                     absl::FormatDuration(kMaxPauseDuration)));
    }
    result.duration = duration;
  }
  return result;
}

absl::StatusOr<SetArgs> ParseSetCommand(std::string_view sql) {
  absl::string_view rest = absl::StripAsciiWhitespace(absl::string_view(sql.data(), sql.size()));
  // Drops the verb "SET".
  if (rest.size() < 3) return absl::InvalidArgumentError("usage: SET key = value");
  rest.remove_prefix(3);
  while (!rest.empty() && rest.back() == ';') rest.remove_suffix(1);
  size_t eq = rest.find('=');
  if (eq == absl::string_view::npos) {
    return absl::InvalidArgumentError("usage: SET key = value");
  }
  SetArgs result;
  result.key = absl::AsciiStrToLower(absl::StripAsciiWhitespace(rest.substr(0, eq)));
  result.value = std::string(absl::StripAsciiWhitespace(rest.substr(eq + 1)));
  std::string& value = result.value;
  if (value.size() >= 2 && value.front() == '\'' && value.back() == '\'') {
    value = absl::StrReplaceAll(value.substr(1, value.size() - 2), {{"''", "'"}});
  }
  return result;
}

absl::StatusOr<uint64_t> ParseKillClientArgs(const std::vector<std::string>& args) {
  uint64_t id = 0;
  const bool hex = args.size() == 1 && absl::StartsWith(args[0], "0x");
  if (args.size() != 1 ||
      !(hex ? absl::SimpleHexAtoi(args[0].substr(2), &id) : absl::SimpleAtoi(args[0], &id))) {
    return absl::InvalidArgumentError("usage: KILL_CLIENT <id> (the ptr column of SHOW CLIENTS)");
  }
  return id;
}

}  // namespace pgfleet::agent
