#include "cli/app.h"

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <list>
#include <map>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cli/commands/commands.h"
#include "common/command_line.h"
#include "common/flag_suggest.h"

namespace pgfleet::cli {
namespace {

constexpr char kProgram[] = "fleetctl";

const CommandSpec& CompletionCommand() {
  static const CommandSpec completion = {
      {"completion"},
      "bash|zsh",
      1,
      "print a shell completion script: source <(fleetctl completion bash), or for zsh put "
      "`fleetctl completion zsh` in a file named _fleetctl on $fpath",
      {},
      nullptr};
  return completion;
}

std::string FlagNames(const FlagSpec& flag) {
  return flag.short_name.empty() ? absl::StrCat("--", flag.name)
                                 : absl::StrCat("-", flag.short_name, ", --", flag.name);
}

// "-f,--file", as CLI11 declares names.
std::string Cli11Names(const FlagSpec& flag) {
  return flag.short_name.empty() ? absl::StrCat("--", flag.name)
                                 : absl::StrCat("-", flag.short_name, ",--", flag.name);
}

// Every spelling of the flags: "--env", "-f", "--file"...
std::vector<std::string> Spellings(const std::vector<FlagSpec>& flags) {
  std::vector<std::string> names;
  for (const FlagSpec& flag : flags) {
    names.push_back(absl::StrCat("--", flag.name));
    if (!flag.short_name.empty()) names.push_back(absl::StrCat("-", flag.short_name));
  }
  return names;
}

std::string FlagTable(const std::vector<FlagSpec>& flags) {
  std::string out;
  for (const FlagSpec& flag : flags) {
    std::string left = FlagNames(flag);
    if (flag.takes_value()) absl::StrAppend(&left, " ", flag.value_name);
    left.resize(std::max<size_t>(left.size() + 2, 30), ' ');
    absl::StrAppend(&out, "  ", left, flag.help, flag.required ? " (required)" : "", "\n");
  }
  return out;
}

const char kExitCodes[] =
    "Exit codes: 0 ok, 1 error, 2 bad usage, 3 controller unreachable or no leader yet\n"
    "            (retry), 4 not authenticated / not allowed, 5 failed on agents (NACK,\n"
    "            command).\n";

bool StartsWithWords(const CommandSpec& command, const std::vector<std::string>& words) {
  return command.words.size() >= words.size() &&
         std::equal(words.begin(), words.end(), command.words.begin());
}

const CommandSpec* FindCommand(const std::vector<std::string>& words) {
  for (const CommandSpec& command : AllCommands()) {
    if (command.words == words) return &command;
  }
  return nullptr;
}

// The next words after `prefix` ("config" -> push, list, ...), in declaration order.
std::vector<std::string> NextWords(const std::vector<std::string>& prefix) {
  std::vector<std::string> next;
  for (const CommandSpec& command : AllCommands()) {
    if (command.words.size() > prefix.size() && StartsWithWords(command, prefix) &&
        std::find(next.begin(), next.end(), command.words[prefix.size()]) == next.end()) {
      next.push_back(command.words[prefix.size()]);
    }
  }
  return next;
}

ParsedCommandLine UsageError(std::string message) {
  ParsedCommandLine result;
  result.exit_code = kExitUsage;
  result.err = std::move(message);
  return result;
}

// The command line as CLI11 sees it: one subcommand per word, each leaf with its own flags.
struct CommandLine {
  CLI::App app{"fleetctl: the operator's CLI for pgfleet-controller", kProgram};
  std::map<const CLI::App*, const CommandSpec*> leaves;
  std::map<const CLI::App*, std::vector<std::string>> words_of;
  std::list<std::vector<std::string>> positionals;  // Stable addresses for CLI11 to fill.
  std::map<const CLI::App*, std::vector<std::string>*> positionals_of;

  CommandLine() {
    app.set_help_flag();  // --help is ours: generated from the declarations, with exit codes.
    app.allow_extras();   // Unknown words are collected, then reported with a suggestion.
    for (const FlagSpec& flag : GlobalFlags()) AddFlag(app, flag);
    words_of[&app] = {};
    std::map<std::vector<std::string>, CLI::App*> by_words = {{{}, &app}};
    std::vector<const CommandSpec*> commands;
    for (const CommandSpec& command : AllCommands()) commands.push_back(&command);
    commands.push_back(&CompletionCommand());
    for (const CommandSpec* command : commands) {
      std::vector<std::string> prefix;
      CLI::App* parent = &app;
      for (const std::string& word : command->words) {
        prefix.push_back(word);
        auto [it, added] = by_words.emplace(prefix, nullptr);
        if (added) {
          it->second = parent->add_subcommand(word);
          it->second->fallthrough();  // Global flags anywhere on the line.
          it->second->allow_extras();
          words_of[it->second] = prefix;
        }
        parent = it->second;
      }
      leaves[parent] = command;
      for (const FlagSpec& flag : command->flags) AddFlag(*parent, flag);
      if (command->max_positionals > 0) {
        std::vector<std::string>* storage = &positionals.emplace_back();
        parent->add_option("positionals", *storage)->expected(0, command->max_positionals);
        positionals_of[parent] = storage;
      }
    }
  }

  static void AddFlag(CLI::App& to, const FlagSpec& flag) {
    if (flag.takes_value()) {
      to.add_option(Cli11Names(flag), CLI::callback_t{}, flag.help)
          ->type_name(flag.value_name)
          ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
    } else {
      to.add_flag(Cli11Names(flag))->description(flag.help);
    }
  }

  // The deepest subcommand the words selected (the root when none).
  const CLI::App* Selected() const {
    const CLI::App* current = &app;
    while (true) {
      const std::vector<CLI::App*> chosen = current->get_subcommands();
      if (chosen.empty()) return current;
      current = chosen.front();
    }
  }
};

}  // namespace

std::string CommandSpec::Name() const { return absl::StrJoin(words, " "); }

std::string CommandSpec::Usage() const {
  std::string usage = absl::StrCat(kProgram, " ", Name());
  if (!positionals.empty()) absl::StrAppend(&usage, " ", positionals);
  for (const FlagSpec& flag : flags) {
    std::string shown = flag.short_name.empty() ? absl::StrCat("--", flag.name)
                                                : absl::StrCat("-", flag.short_name);
    if (flag.takes_value()) absl::StrAppend(&shown, " ", flag.value_name);
    absl::StrAppend(&usage, " ", flag.required ? shown : absl::StrCat("[", shown, "]"));
  }
  return usage;
}

const std::vector<CommandSpec>& AllCommands() {
  static const std::vector<CommandSpec> commands = [] {
    std::vector<CommandSpec> all;
    for (auto nouns : {EnvCommands, ConfigCommands, AgentsCommands, MaintenanceCommands,
                       RolloutCommands, TokenCommands, SecretsCommands}) {
      for (CommandSpec& command : nouns()) all.push_back(std::move(command));
    }
    return all;
  }();
  return commands;
}

const std::vector<FlagSpec>& GlobalFlags() {
  static const std::vector<FlagSpec> flags = {
      {"controller", "", "HOST:PORT[,...]",
       "(or PGFLEET_CONTROLLER; default 127.0.0.1:7070); with several, the first that "
       "answers"},
      {"token", "", "TOKEN", "(or PGFLEET_TOKEN, or ~/.config/pgfleet/token)"},
      {"tls-ca", "", "FILE", "verify the controller's TLS certificate with this CA"},
      {"output", "o", "table|json",
       "(default table); json prints the HTTP API's objects and field names"},
      {"help", "h", "", "help for any command"},
  };
  return flags;
}

std::string HelpText(const std::vector<std::string>& words) {
  const CommandSpec* command =
      words == CompletionCommand().words ? &CompletionCommand() : FindCommand(words);
  if (command != nullptr) {
    std::string out = absl::StrCat("usage: ", command->Usage(), "\n\n", command->help, "\n");
    if (!command->flags.empty()) absl::StrAppend(&out, "\nFlags:\n", FlagTable(command->flags));
    absl::StrAppend(&out, "\nGlobal flags:\n", FlagTable(GlobalFlags()), "\n", kExitCodes);
    return out;
  }
  std::string out =
      absl::StrCat(kProgram, ": the operator's CLI for pgfleet-controller\n\n", "Commands:\n");
  bool any = false;
  for (const CommandSpec& candidate : AllCommands()) {
    if (!StartsWithWords(candidate, words)) continue;
    any = true;
    absl::StrAppend(&out, "  ", candidate.Usage(), "\n      ", candidate.help, "\n");
  }
  if (!any) return "";
  if (words.empty()) {
    absl::StrAppend(&out, "  ", CompletionCommand().Usage(), "\n      ", CompletionCommand().help,
                    "\n");
  }
  absl::StrAppend(&out, "\nGlobal flags:\n", FlagTable(GlobalFlags()), "\n", kExitCodes);
  return out;
}

ParsedCommandLine ParseCommandLine(const std::vector<std::string>& raw_args) {
  std::vector<std::string> args = common::ArgsForCli11(raw_args);
  CommandLine line;
  std::string parse_error;
  try {
    line.app.parse(args);
  } catch (const CLI::ParseError& error) {
    parse_error = error.what();
  }
  const CLI::App* selected = line.Selected();
  const std::vector<std::string>& words = line.words_of.at(selected);
  auto leaf = line.leaves.find(selected);
  const CommandSpec* command = leaf == line.leaves.end() ? nullptr : leaf->second;
  const std::string name = words.empty() ? kProgram : absl::StrJoin(words, " ");
  const std::string help_hint =
      absl::StrCat("Run '", kProgram, words.empty() ? "" : " ", absl::StrJoin(words, " "),
                   " --help' for ", command != nullptr ? "its flags" : "the commands", ".\n");

  if (!parse_error.empty()) {
    // Missing values ("--env: 1 required ENV missing"), too many positionals.
    return UsageError(absl::StrCat(kProgram, ": ", name, ": ", parse_error, "\n", help_hint));
  }
  std::vector<FlagSpec> known = GlobalFlags();
  if (command != nullptr) known.insert(known.end(), command->flags.begin(), command->flags.end());
  const std::vector<std::string> spellings = Spellings(known);
  const std::vector<std::string> remaining = line.app.remaining(true);
  for (const std::string& word : remaining) {
    if (word.size() < 2 || word[0] != '-') continue;
    const std::string typed = word.substr(0, word.find('='));
    const std::string nearest = common::NearestName(typed, spellings);
    return UsageError(absl::StrCat(
        kProgram, ": unknown flag ", typed, " for '", name, "'",
        nearest.empty() ? "" : absl::StrCat("; did you mean ", nearest, "?"), "\n", help_hint));
  }
  // A value that is one of this command's flags means the value was left out: `--env --wait`.
  for (const CLI::App* app : {static_cast<const CLI::App*>(&line.app), selected}) {
    for (const CLI::Option* option : app->get_options()) {
      if (option->get_expected_min() < 1 || option->count() == 0) continue;
      for (const std::string& value : option->results()) {
        if (std::find(spellings.begin(), spellings.end(), value.substr(0, value.find('='))) !=
            spellings.end()) {
          return UsageError(absl::StrCat(kProgram, ": ", option->get_name(), " needs a value (",
                                         value, " is a flag)\n", help_hint));
        }
      }
    }
  }
  const bool help = line.app.get_option("--help")->count() > 0;
  if (command == nullptr) {
    std::vector<std::string> given = words;
    for (const std::string& word : remaining) given.push_back(word);
    if (help && remaining.empty()) {
      ParsedCommandLine result;
      result.exit_code = kExitOk;
      result.out = HelpText(words);
      return result;
    }
    std::string message;
    if (!remaining.empty()) {
      const std::string nearest = common::NearestName(remaining.front(), NextWords(words));
      message =
          absl::StrCat(kProgram, ": unknown command '", absl::StrJoin(given, " "), "'",
                       nearest.empty() ? ""
                                       : absl::StrCat("; did you mean '", absl::StrJoin(words, " "),
                                                      words.empty() ? "" : " ", nearest, "'?"),
                       "\n\n");
    } else if (!words.empty()) {
      message = absl::StrCat(kProgram, ": '", name,
                             "' needs one of: ", absl::StrJoin(NextWords(words), ", "), "\n\n");
    }
    return UsageError(absl::StrCat(message, HelpText(words)));
  }
  if (!remaining.empty()) {
    return UsageError(absl::StrCat(kProgram, ": unexpected argument '", remaining.front(),
                                   "' (usage: ", command->Usage(), ")\n", help_hint));
  }
  if (help) {
    ParsedCommandLine result;
    result.exit_code = kExitOk;
    result.out = HelpText(words);
    return result;
  }

  ParsedCommandLine result;
  result.command = command;
  for (const CLI::App* app : {static_cast<const CLI::App*>(&line.app), selected}) {
    for (const CLI::Option* option : app->get_options()) {
      if (option->count() == 0 || option->get_positional()) continue;
      // Handlers look flags up by their long name: "file" for -f.
      result.flags.values[option->get_lnames().front()] =
          option->get_expected_min() >= 1 && !option->results().empty() ? option->results().back()
                                                                        : "";
      if (option->get_expected_min() >= 1) {
        result.flags.all_values[option->get_lnames().front()] = option->results();
      }
    }
  }
  if (auto it = line.positionals_of.find(selected); it != line.positionals_of.end()) {
    result.flags.positional = *it->second;
  }
  if (result.flags.Has("output") && result.flags.Get("output") != "json" &&
      result.flags.Get("output") != "table") {
    return UsageError(absl::StrCat(kProgram, ": --output is table or json\n"));
  }
  if (command == &CompletionCommand()) {
    const std::string shell = result.flags.positional.empty() ? "" : result.flags.positional[0];
    std::string script = CompletionScript(shell);
    if (script.empty()) {
      return UsageError(absl::StrCat(kProgram, ": completion wants bash or zsh\n"));
    }
    result.exit_code = kExitOk;
    result.out = std::move(script);
  }
  return result;
}

std::string CompletionScript(const std::string& shell) {
  if (shell != "bash" && shell != "zsh") return "";
  std::vector<CommandSpec> commands = AllCommands();
  commands.push_back(CompletionCommand());
  // Flags whose next word is their value, so that word is not taken for a command word.
  std::set<std::string> value_flags;
  for (const FlagSpec& flag : GlobalFlags()) {
    if (flag.takes_value()) {
      for (const std::string& spelling : Spellings({flag})) value_flags.insert(spelling);
    }
  }
  for (const CommandSpec& command : commands) {
    for (const FlagSpec& flag : command.flags) {
      if (flag.takes_value()) {
        for (const std::string& spelling : Spellings({flag})) value_flags.insert(spelling);
      }
    }
  }
  const std::string global = absl::StrJoin(Spellings(GlobalFlags()), " ");
  std::string cases;
  std::set<std::vector<std::string>> groups;
  for (const CommandSpec& command : commands) {
    for (size_t n = 0; n < command.words.size(); ++n) {
      groups.insert(std::vector<std::string>(command.words.begin(), command.words.begin() + n));
    }
  }
  for (const std::vector<std::string>& group : groups) {
    absl::StrAppend(&cases, "    \"", absl::StrJoin(group, " "), "\") words=\"",
                    absl::StrJoin(NextWords(group), " "), group.empty() ? " completion" : "",
                    "\" ;;\n");
  }
  for (const CommandSpec& command : commands) {
    std::string words = absl::StrCat(absl::StrJoin(Spellings(command.flags), " "), " ", global);
    if (&command == &commands.back()) words = "bash zsh";
    absl::StrAppend(&cases, "    \"", command.Name(), "\"|\"", command.Name(), " \"*) words=\"",
                    words, "\" ;;\n");
  }
  std::string script = shell == "zsh" ? "#compdef fleetctl\n"
                                        "# zsh completion for fleetctl, generated by `fleetctl "
                                        "completion zsh` from its command declarations.\n"
                                        "autoload -U +X bashcompinit && bashcompinit\n"
                                      : "# bash completion for fleetctl, generated by `fleetctl "
                                        "completion bash` from its command declarations.\n";
  absl::StrAppend(
      &script, "_fleetctl() {\n",
      "  local cur=\"${COMP_WORDS[COMP_CWORD]}\" prev=\"${COMP_WORDS[COMP_CWORD-1]}\"\n",
      "  local path=\"\" word words i\n", "  case \"$prev\" in\n",
      "    -o|--output) COMPREPLY=($(compgen -W \"table json\" -- \"$cur\")); return ;;\n",
      "    -f|--file|--tls-ca) COMPREPLY=($(compgen -f -- \"$cur\")); return ;;\n", "    ",
      absl::StrJoin(value_flags, "|"), ") COMPREPLY=(); return ;;\n", "  esac\n",
      "  for ((i = 1; i < COMP_CWORD; i++)); do\n", "    word=\"${COMP_WORDS[i]}\"\n",
      "    case \"$word\" in\n", "      ", absl::StrJoin(value_flags, "|"), ") ((i++)) ;;\n",
      "      -*) ;;\n", "      *) path=\"${path:+$path }$word\" ;;\n", "    esac\n", "  done\n",
      "  case \"$path\" in\n", cases, "    *) words=\"", global, "\" ;;\n", "  esac\n",
      "  COMPREPLY=($(compgen -W \"$words\" -- \"$cur\"))\n", "}\n",
      "complete -F _fleetctl fleetctl\n");
  return script;
}

int Main(int argc, char** argv) {
  ParsedCommandLine parsed = ParseCommandLine(std::vector<std::string>(argv + 1, argv + argc));
  fputs(parsed.out.c_str(), stdout);
  fputs(parsed.err.c_str(), stderr);
  if (parsed.exit_code.has_value()) return *parsed.exit_code;
  Context context(std::move(parsed.flags));
  return parsed.command->run(context);
}

}  // namespace pgfleet::cli
