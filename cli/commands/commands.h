// One function per noun returns that noun's commands (cli/commands/<noun>.cc), plus the small
// helpers the handlers share.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "cli/cli.h"
#include "cli/command.h"
#include "pgfleet/v1/fleet.pb.h"

namespace pgfleet::cli {

std::vector<CommandSpec> EnvCommands();
std::vector<CommandSpec> ConfigCommands();
std::vector<CommandSpec> AgentsCommands();
std::vector<CommandSpec> MaintenanceCommands();
std::vector<CommandSpec> RolloutCommands();
std::vector<CommandSpec> TokenCommands();
std::vector<CommandSpec> SecretsCommands();

// ---- Helpers shared by the handlers (cli/commands/helpers.cc) ----
std::vector<std::string> SplitList(const std::string& text);
// kExitUsage with a message when --flag is missing or empty.
int RequireFlag(const Context& ctx, const char* flag);
// "v12" or "12".
bool ParseVersion(const std::string& text, uint64_t* version);
// A positive duration flag ("15m") in seconds; absent leaves *seconds. False (message printed)
// when it is not a duration.
bool ParseDurationFlag(const Context& ctx, const char* flag, int64_t* seconds);
// -l/--selector, checked with the controller's parser: false (message naming the column
// printed) when it does not parse; *selector is its canonical spelling, or empty.
bool SelectorFlag(const Context& ctx, std::string* selector);
// The -l/--selector flag's declaration, for every command that takes one.
FlagSpec SelectorFlagSpec(const std::string& what);
// Whether `agent` runs `version` as it should: the version, and (when the agent follows that
// version and both render sha256 are known) the render its labels call for, so a re-render
// at the same version (after relabelling) is not converged until applied.
bool AgentConverged(const pgfleet::v1::Agent& agent, uint64_t version);
// Sends a command to --env's or --agent's agents and prints each outcome.
int SendCommand(Context& ctx, pgfleet::v1::Command command, const char* verb);

// A rollout (config or restart) as the rollout commands show it; with --watch it follows it
// until it ends. Exit 0 when it succeeded (or, without --watch, is running), 5 when it failed
// or was aborted.
int ShowRollout(Context& ctx, const pgfleet::v1::Rollout& rollout);
// The options every rollout shares (waves, bake, health gates, --force) into `request`.
int FillRolloutOptions(const Context& ctx, pgfleet::v1::StartRolloutRequest* request);
// Fills the wave options and -l into `request`, starts the rollout and shows it (--watch
// follows it to the end): what `rollout start` and `agents restart` share.
int StartAndShowRollout(Context& ctx, pgfleet::v1::StartRolloutRequest request);

}  // namespace pgfleet::cli
