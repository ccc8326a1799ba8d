// What the daemons' command lines (pgfleet-agent, pgfleet-controller) share on top of CLI11:
// one environment variable per flag, a --config file of `flag = value` lines, and usage errors
// that name the unknown flag or key and suggest the nearest declared one.
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

namespace pgfleet::common {

// "PGFLEET_CONTROLLER_" + "http-listen" -> "PGFLEET_CONTROLLER_HTTP_LISTEN".
std::string FlagEnvName(const std::string& prefix, const std::string& flag);

// Gives every named option of `app` that has no environment variable yet the one
// FlagEnvName(prefix, its long name) (--help and --version get none), and adds
// `--config FILE`: the same flags as `flag = value` lines (TOML-like; # comments), where an
// unknown key is an error. Precedence: command line, then the file, then the environment.
void AddEnvironmentAndConfigFile(CLI::App& app, const std::string& prefix);

// The words of a command line as CLI11's parse(std::vector) takes them (back to front), with
// "--key=" kept as the empty value it means: alone, CLI11 would take the next word as the
// value (`--http-listen= --metrics-interval=1s` would listen on "--metrics-interval=1s").
std::vector<std::string> ArgsForCli11(const std::vector<std::string>& words);

// Every spelling of app's named options: "--db", "-v".
std::vector<std::string> FlagSpellings(const CLI::App& app);

// After a successful parse of an app that allows extras: "" when every word was used, else a
// one-line error naming the first unknown flag (with the nearest declared flag) or the first
// argument too many.
std::string UnknownArgumentError(const CLI::App& app);

// A CLI11 parse error as one line, control characters shown as '?'; an unknown key of a
// --config file gets a suggestion.
std::string DescribeParseError(const CLI::App& app, const CLI::ParseError& error);

// "Environment variables (and --config FILE keys):" lines for --help: each flag's variable.
std::string EnvironmentHelp(const CLI::App& app);

}  // namespace pgfleet::common
