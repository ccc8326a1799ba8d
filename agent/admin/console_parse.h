// The admin console's command syntax, apart from what the commands do: pure functions from
// the query text to words and arguments, so they can be tested and fuzzed without an Agent.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace pgfleet::agent {

struct AdminCommand {
  std::string verb;               // First word, upper-cased.
  std::vector<std::string> args;  // The other words, as written.
  std::string text;               // All words joined by one space, for logs and errors.
};

// Splits a console query into words: whitespace and ';' separate them, double-quoted words
// keep their case and spaces.
std::vector<std::string> TokenizeAdminCommand(std::string_view sql);
// nullopt for a query without words (answered with EmptyQueryResponse). A quoted empty first
// word ("") is a command with an empty verb, which no command matches.
std::optional<AdminCommand> ParseAdminCommand(std::string_view sql);

// The longest PAUSE ... FOR. A duration is turned into a libevent timer, whose deadline
// (now + duration, in seconds) overflows for "inf" or a huge number and then fires at once:
// the pause would end immediately instead of never.
inline constexpr absl::Duration kMaxPauseDuration = absl::Hours(24 * 365);

// PAUSE [db] [FOR <duration>]: a bare number is seconds, else absl::ParseDuration's syntax
// ("15m", "90s"); the duration must be positive and at most kMaxPauseDuration.
struct PauseArgs {
  std::string db;  // Empty: all databases.
  std::optional<absl::Duration> duration;
};
absl::StatusOr<PauseArgs> ParsePauseArgs(const std::vector<std::string>& args);

// SET key = value: `sql` is the whole query; the key is lower-cased, a value in single quotes
// is unquoted ('' -> ').
struct SetArgs {
  std::string key;
  std::string value;
};
absl::StatusOr<SetArgs> ParseSetCommand(std::string_view sql);

// KILL_CLIENT <id>: decimal, or hex with "0x" (the ptr column of SHOW CLIENTS).
absl::StatusOr<uint64_t> ParseKillClientArgs(const std::vector<std::string>& args);

}  // namespace pgfleet::agent
