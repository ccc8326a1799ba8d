// fleetctl's commands as data: each command declares its words, positionals and flags, and the
// parser, --help and `fleetctl completion` are all generated from these declarations.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "cli/cli.h"

namespace pgfleet::cli {

struct FlagSpec {
  std::string name;        // Long form without the dashes: "max-unavailable".
  std::string short_name;  // One letter without the dash ("f"), or "".
  std::string value_name;  // "N", "ENV"...; empty for a boolean flag (--wait).
  std::string help;
  bool required = false;  // Shown in the usage line; the handler checks it (exit 2).
  bool takes_value() const { return !value_name.empty(); }
};

struct CommandSpec {
  std::vector<std::string> words;  // {"rollout", "start"}
  std::string positionals;         // For the usage line: "VERSION_A VERSION_B", or "".
  int max_positionals = 0;
  std::string help;
  std::vector<FlagSpec> flags;
  std::function<int(Context&)> run;

  std::string Name() const;   // "rollout start"
  std::string Usage() const;  // "fleetctl rollout start --env ENV [--wait]..."
};

}  // namespace pgfleet::cli
