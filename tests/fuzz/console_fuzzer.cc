// The admin console's command parser (agent/admin/console_parse.h): the text of a simple
// Query on the "pgbouncer" database, as ClientConn::HandleAdminInput hands it to
// AdminConsole::HandleQuery. Any user who can log in to the console reaches the tokenizer.
//
// Input: the query text (the 'Q' body without its terminating NUL).
#include <cstdint>
#include <string>
#include <string_view>

#include "absl/strings/ascii.h"
#include "agent/admin/console_parse.h"
#include "common/config/config.h"
#include "tests/fuzz/fuzz_util.h"

namespace agent = pgfleet::agent;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view sql(reinterpret_cast<const char*>(data), size);
  if (!sql.empty() && sql.back() == '\0') sql.remove_suffix(1);

  std::optional<agent::AdminCommand> command = agent::ParseAdminCommand(sql);
  if (!command.has_value()) {
    PGF_FUZZ_CHECK(agent::TokenizeAdminCommand(sql).empty());
    return 0;
  }
  PGF_FUZZ_CHECK(command->verb == absl::AsciiStrToUpper(command->verb));
  for (const std::string& arg : command->args) {
    PGF_FUZZ_CHECK(command->text.find(arg) != std::string::npos);
  }

  // Every command parser runs on every input: a parser may not rely on its verb.
  absl::StatusOr<agent::PauseArgs> pause = agent::ParsePauseArgs(command->args);
  if (pause.ok() && pause->duration.has_value()) {
    // A timer that libevent can arm: positive, finite, bounded.
    PGF_FUZZ_CHECK(*pause->duration > absl::ZeroDuration());
    PGF_FUZZ_CHECK(*pause->duration <= agent::kMaxPauseDuration);
  }
  (void)agent::ParseKillClientArgs(command->args);
  absl::StatusOr<agent::SetArgs> set = agent::ParseSetCommand(sql);
  if (command->verb == "SET" && set.ok()) {
    PGF_FUZZ_CHECK(set->key == absl::AsciiStrToLower(set->key));
    // SET goes on to the config's per-key parser.
    pgfleet::config::Config settings;
    (void)pgfleet::config::ApplySetting(settings, set->key, set->value);
  }
  return 0;
}
