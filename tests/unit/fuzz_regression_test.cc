// Regression tests for what the libFuzzer targets in tests/fuzz/ found: each input that made a
// parser crash or break a property is replayed here and must now get a clear error. The same
// inputs are in tests/fuzz/corpus/<target>/ (crash-*), so the fuzzers start from them too.
// Also a test that the console parsers stayed as they were before console_parse.h split them
// out of AdminConsole.

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "agent/admin/console_parse.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testutil/status_testing.h"

namespace pgfleet::agent {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// ---- Admin console (console_fuzzer).

TEST(FuzzRegressionTest, PauseForInfiniteOrHugeDurationIsRefused) {
  // "inf" is valid for absl::ParseDuration, and a huge number of seconds overflows libevent's
  // timer deadline too: either armed a timer that fired at once, ending the pause immediately.
  for (const char* duration : {"inf", "9223372036854775807", "100000000h", "8761h"}) {
    SCOPED_TRACE(duration);
    absl::StatusOr<PauseArgs> parsed = ParsePauseArgs({"appdb", "FOR", duration});
    ASSERT_FALSE(parsed.ok());
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(parsed.status().message(), HasSubstr("longest pause"));
  }
  PGF_ASSERT_OK_AND_ASSIGN(PauseArgs year, ParsePauseArgs({"FOR", "8760h"}));
  EXPECT_EQ(year.db, "");
  EXPECT_EQ(year.duration, kMaxPauseDuration);
}

TEST(FuzzRegressionTest, ConsoleParsersKeepTheirBehaviour) {
  std::optional<AdminCommand> command = ParseAdminCommand("  pause \"My Db\" for 15m;");
  ASSERT_TRUE(command.has_value());
  EXPECT_EQ(command->verb, "PAUSE");
  EXPECT_THAT(command->args, ElementsAre("My Db", "for", "15m"));
  EXPECT_EQ(command->text, "pause My Db for 15m");
  EXPECT_FALSE(ParseAdminCommand(" ; ;").has_value());
  // A quoted empty word is a command (with no verb any command matches), not an empty query.
  std::optional<AdminCommand> empty_verb = ParseAdminCommand("\"\"");
  ASSERT_TRUE(empty_verb.has_value());
  EXPECT_EQ(empty_verb->verb, "");

  PGF_ASSERT_OK_AND_ASSIGN(PauseArgs pause, ParsePauseArgs(command->args));
  EXPECT_EQ(pause.db, "My Db");
  EXPECT_EQ(pause.duration, absl::Minutes(15));
  PGF_ASSERT_OK_AND_ASSIGN(PauseArgs seconds, ParsePauseArgs({"FOR", "90"}));
  EXPECT_EQ(seconds.duration, absl::Seconds(90));
  EXPECT_FALSE(ParsePauseArgs({"db", "FOR", "0"}).ok());
  EXPECT_FALSE(ParsePauseArgs({"db", "FOR"}).ok());
  EXPECT_FALSE(ParsePauseArgs({"db", "extra"}).ok());

  PGF_ASSERT_OK_AND_ASSIGN(SetArgs set, ParseSetCommand(" SET Server_Reset_Query = 'it''s';;"));
  EXPECT_EQ(set.key, "server_reset_query");
  EXPECT_EQ(set.value, "it's");
  EXPECT_FALSE(ParseSetCommand("SET nothing").ok());
  // Not reachable from the console (its verb is SET), but a pure function takes any text.
  EXPECT_FALSE(ParseSetCommand(" S ").ok());

  PGF_ASSERT_OK_AND_ASSIGN(uint64_t hex, ParseKillClientArgs({"0x1f"}));
  EXPECT_EQ(hex, 31u);
  PGF_ASSERT_OK_AND_ASSIGN(uint64_t dec, ParseKillClientArgs({"42"}));
  EXPECT_EQ(dec, 42u);
  EXPECT_FALSE(ParseKillClientArgs({}).ok());
  EXPECT_FALSE(ParseKillClientArgs({"0x"}).ok());
  EXPECT_FALSE(ParseKillClientArgs({"1", "2"}).ok());
}

}  // namespace
}  // namespace pgfleet::agent
