#include "common/command_line.h"

#include <algorithm>
#include <cctype>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/flag_suggest.h"

namespace pgfleet::common {
namespace {

bool IsHelpOrVersion(const CLI::Option* option) {
  return option->check_lname("help") || option->check_lname("version");
}

// The long name without dashes ("http-listen"), or "" for a positional.
std::string LongName(const CLI::Option* option) {
  if (option->get_lnames().empty()) return "";
  return option->get_lnames().front();
}

}  // namespace

std::string FlagEnvName(const std::string& prefix, const std::string& flag) {
  std::string name = prefix;
  for (char c : flag) name += c == '-' ? '_' : static_cast<char>(std::toupper(c));
  return name;
}

void AddEnvironmentAndConfigFile(CLI::App& app, const std::string& prefix) {
  for (CLI::Option* option : app.get_options()) {
    const std::string name = LongName(option);
    if (name.empty() || IsHelpOrVersion(option) || !option->get_envname().empty()) continue;
    option->envname(FlagEnvName(prefix, name));
  }
  app.set_config("--config", "",
                 "read flags from FILE: one `flag = value` per line (no dashes; strings may be "
                 "quoted; # comments); the command line wins over the file, the file over the "
                 "environment");
  app.allow_config_extras(CLI::config_extras_mode::error);
}

std::vector<std::string> ArgsForCli11(const std::vector<std::string>& words) {
  std::vector<std::string> args;
  for (const std::string& word : words) {
    if (absl::StartsWith(word, "--") && word.size() > 3 && word.find('=') == word.size() - 1) {
      args.push_back(word.substr(0, word.size() - 1));
      args.push_back("");
    } else {
      args.push_back(word);
    }
  }
  std::reverse(args.begin(), args.end());
  return args;
}

std::vector<std::string> FlagSpellings(const CLI::App& app) {
  std::vector<std::string> names;
  for (const CLI::Option* option : app.get_options()) {
    for (const std::string& name : option->get_lnames()) names.push_back("--" + name);
    for (const std::string& name : option->get_snames()) names.push_back("-" + name);
  }
  return names;
}

std::string UnknownArgumentError(const CLI::App& app) {
  const std::vector<std::string> remaining = app.remaining(true);
  for (const std::string& word : remaining) {
    if (word.size() < 2 || word[0] != '-') continue;
    const std::string typed = word.substr(0, word.find('='));
    const std::string nearest = NearestName(typed, FlagSpellings(app));
    return absl::StrCat("unknown option ", typed,
                        nearest.empty() ? "" : absl::StrCat("; did you mean ", nearest, "?"));
  }
  if (!remaining.empty()) return absl::StrCat("unexpected argument '", remaining.front(), "'");
  return "";
}

std::string DescribeParseError(const CLI::App& app, const CLI::ParseError& error) {
  // The error may quote a --config file's bytes: a binary file given by mistake must not
  // write control characters (terminal escapes) to the operator's terminal.
  std::string what = error.what();
  for (char& c : what) {
    const unsigned char byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7f) c = '?';
  }
  constexpr char kUnknownKey[] = "INI was not able to parse ";
  if (absl::StartsWith(what, kUnknownKey)) {
    const std::string key = what.substr(sizeof(kUnknownKey) - 1);
    std::vector<std::string> keys;
    for (const std::string& spelling : FlagSpellings(app)) {
      if (absl::StartsWith(spelling, "--")) keys.push_back(spelling.substr(2));
    }
    const std::string nearest = NearestName(key, keys);
    return absl::StrCat("--config: unknown key '", key, "'",
                        nearest.empty() ? "" : absl::StrCat("; did you mean ", nearest, "?"));
  }
  return what;
}

std::string EnvironmentHelp(const CLI::App& app) {
  std::string out =
      "Every flag can also come from an environment variable, or from a --config FILE line\n"
      "`flag = value` (command line first, then the file, then the environment):\n";
  for (const CLI::Option* option : app.get_options()) {
    if (option->get_envname().empty()) continue;
    std::string left = "--" + LongName(option);
    left.resize(std::max<size_t>(left.size() + 2, 28), ' ');
    absl::StrAppend(&out, "  ", left, option->get_envname(), "\n");
  }
  return out;
}

}  // namespace pgfleet::common
