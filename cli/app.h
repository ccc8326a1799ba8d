// fleetctl's command line on CLI11: the commands' declarations (cli/commands/*.cc) become the
// parser, --help and the shell completion scripts.
#pragma once

#include <string>
#include <vector>

#include "cli/cli.h"
#include "cli/command.h"

namespace pgfleet::cli {

// Every command, in the order --help lists them.
const std::vector<CommandSpec>& AllCommands();
// Flags every command takes (--controller, --token, --tls-ca, -o/--output, -h/--help).
const std::vector<FlagSpec>& GlobalFlags();

struct ParsedCommandLine {
  // Set when fleetctl is done without running a command: help, completion, a usage error.
  // `out` goes to stdout and `err` to stderr.
  std::optional<int> exit_code;
  std::string out;
  std::string err;
  const CommandSpec* command = nullptr;
  Flags flags;
};

// Parses the arguments after argv[0]. Unknown flags, missing values, unknown commands and
// extra positionals are usage errors (exit 2) that name the word and suggest the nearest.
ParsedCommandLine ParseCommandLine(const std::vector<std::string>& args);

// `fleetctl <words> --help`: for a command, its usage and every flag it declares; for a noun
// ("config") or nothing, the commands under it.
std::string HelpText(const std::vector<std::string>& words);

// `fleetctl completion bash|zsh`; "" for another shell.
std::string CompletionScript(const std::string& shell);

// Parses, then runs the command: fleetctl's main().
int Main(int argc, char** argv);

}  // namespace pgfleet::cli
