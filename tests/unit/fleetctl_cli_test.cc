// fleetctl's command line, parsed without running anything: typos and missing values are usage
// errors (exit 2) with a suggestion, --help and completion are generated from the declarations.

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "cli/app.h"
#include "common/flag_suggest.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pgfleet::cli {
namespace {

using ::testing::HasSubstr;

TEST(FleetctlCommandLineTest, UnknownFlagIsUsageErrorWithSuggestion) {
  ParsedCommandLine parsed = ParseCommandLine({"rollout", "start", "--env", "prod", "--version",
                                               "v2", "--max-unavalable", "2", "--wavs", "1"});
  ASSERT_TRUE(parsed.exit_code.has_value());
  EXPECT_EQ(*parsed.exit_code, kExitUsage);
  EXPECT_EQ(parsed.command, nullptr);
  EXPECT_THAT(parsed.err, HasSubstr("unknown flag --max-unavalable"));
  EXPECT_THAT(parsed.err, HasSubstr("did you mean --max-unavailable"));
}

TEST(FleetctlCommandLineTest, UnknownFlagInEqualsFormIsNamedWithoutItsValue) {
  ParsedCommandLine parsed = ParseCommandLine({"rollout", "start", "--wavs=1", "--env", "prod"});
  ASSERT_TRUE(parsed.exit_code.has_value());
  EXPECT_EQ(*parsed.exit_code, kExitUsage);
  EXPECT_THAT(parsed.err, HasSubstr("unknown flag --wavs for 'rollout start'"));
  EXPECT_THAT(parsed.err, HasSubstr("did you mean --waves"));
}

TEST(FleetctlCommandLineTest, FlagOfAnotherCommandIsUnknown) {
  ParsedCommandLine parsed = ParseCommandLine({"config", "list", "--env", "prod", "--watch"});
  ASSERT_TRUE(parsed.exit_code.has_value());
  EXPECT_EQ(*parsed.exit_code, kExitUsage);
  EXPECT_THAT(parsed.err, HasSubstr("--watch"));
}

TEST(FleetctlCommandLineTest, MissingValueIsUsageError) {
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"config", "list", "--env"},
        std::vector<std::string>{"rollout", "start", "--version", "v2", "--env"},
        // The value left out before another flag: not "--version" as the environment's name.
        std::vector<std::string>{"rollout", "start", "--env", "--version", "v2"},
        std::vector<std::string>{"config", "push", "--env", "prod", "-f"}}) {
    ParsedCommandLine parsed = ParseCommandLine(args);
    ASSERT_TRUE(parsed.exit_code.has_value()) << args.back();
    EXPECT_EQ(*parsed.exit_code, kExitUsage) << parsed.err;
    EXPECT_EQ(parsed.command, nullptr);
    EXPECT_TRUE(absl::StrContains(parsed.err, "--env") || absl::StrContains(parsed.err, "-f"))
        << parsed.err;
  }
}

TEST(FleetctlCommandLineTest, SpaceAndEqualsFormsAndGlobalFlagsAnywhere) {
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"rollout", "start", "--env", "prod", "--version=v2", "--watch",
                                 "-o", "json"},
        std::vector<std::string>{"--output=json", "rollout", "start", "--env=prod", "--version",
                                 "v2", "--watch"},
        std::vector<std::string>{"--controller", "10.0.0.1:7070", "rollout", "start", "--watch",
                                 "--env", "prod", "--version", "v2", "--output", "json"}}) {
    ParsedCommandLine parsed = ParseCommandLine(args);
    ASSERT_FALSE(parsed.exit_code.has_value()) << parsed.err;
    ASSERT_NE(parsed.command, nullptr);
    EXPECT_EQ(parsed.command->Name(), "rollout start");
    EXPECT_EQ(parsed.flags.Get("env"), "prod");
    EXPECT_EQ(parsed.flags.Get("version"), "v2");
    EXPECT_EQ(parsed.flags.Get("output"), "json");
    EXPECT_TRUE(parsed.flags.Has("watch"));
    EXPECT_FALSE(parsed.flags.Has("force"));
  }
}

TEST(FleetctlCommandLineTest, EmptyValueAfterEqualsStaysEmpty) {
  ParsedCommandLine parsed = ParseCommandLine({"env", "set-upstream", "--upstream=", "--env", "p"});
  ASSERT_FALSE(parsed.exit_code.has_value()) << parsed.err;
  EXPECT_TRUE(parsed.flags.Has("upstream"));
  EXPECT_EQ(parsed.flags.Get("upstream"), "");
  EXPECT_EQ(parsed.flags.Get("env"), "p");
}

TEST(FleetctlCommandLineTest, PositionalsAndTheirLimit) {
  ParsedCommandLine diff = ParseCommandLine({"config", "diff", "v1", "v2"});
  ASSERT_FALSE(diff.exit_code.has_value()) << diff.err;
  EXPECT_EQ(diff.flags.positional, (std::vector<std::string>{"v1", "v2"}));
  ParsedCommandLine extra = ParseCommandLine({"config", "diff", "v1", "v2", "v3"});
  ASSERT_TRUE(extra.exit_code.has_value());
  EXPECT_EQ(*extra.exit_code, kExitUsage);
  ParsedCommandLine none = ParseCommandLine({"config", "list", "stray", "--env", "e"});
  ASSERT_TRUE(none.exit_code.has_value());
  EXPECT_EQ(*none.exit_code, kExitUsage);
  EXPECT_THAT(none.err, HasSubstr("stray"));
}

TEST(FleetctlCommandLineTest, UnknownCommandSuggestsTheNearest) {
  ParsedCommandLine parsed = ParseCommandLine({"rollot", "start"});
  ASSERT_TRUE(parsed.exit_code.has_value());
  EXPECT_EQ(*parsed.exit_code, kExitUsage);
  EXPECT_THAT(parsed.err, HasSubstr("unknown command 'rollot start'"));
  EXPECT_THAT(parsed.err, HasSubstr("did you mean 'rollout'"));
  ParsedCommandLine sub = ParseCommandLine({"config", "pusj"});
  ASSERT_TRUE(sub.exit_code.has_value());
  EXPECT_THAT(sub.err, HasSubstr("did you mean 'config push'"));
  ParsedCommandLine noun = ParseCommandLine({"config"});
  ASSERT_TRUE(noun.exit_code.has_value());
  EXPECT_EQ(*noun.exit_code, kExitUsage);
}

TEST(FleetctlCommandLineTest, OutputIsTableOrJson) {
  ParsedCommandLine parsed = ParseCommandLine({"env", "list", "-o", "yaml"});
  ASSERT_TRUE(parsed.exit_code.has_value());
  EXPECT_EQ(*parsed.exit_code, kExitUsage);
  EXPECT_THAT(parsed.err, HasSubstr("--output is table or json"));
}

TEST(FleetctlCommandLineTest, HelpExitsZero) {
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"--help"}, std::vector<std::string>{"rollout", "start", "-h"},
        std::vector<std::string>{"config", "--help"}}) {
    ParsedCommandLine parsed = ParseCommandLine(args);
    ASSERT_TRUE(parsed.exit_code.has_value());
    EXPECT_EQ(*parsed.exit_code, kExitOk) << parsed.err;
    EXPECT_THAT(parsed.out, ::testing::AnyOf(HasSubstr("usage"), HasSubstr("Commands:")));
  }
  EXPECT_EQ(ParseCommandLine({}).exit_code, kExitUsage);  // No command: help on stderr.
}

// Iterates over the declarations: a flag that --help does not show cannot be added.
TEST(FleetctlCommandLineTest, EveryDeclaredFlagIsInItsCommandsHelp) {
  ASSERT_GE(AllCommands().size(), 27u);
  for (const CommandSpec& command : AllCommands()) {
    std::vector<std::string> args = command.words;
    args.push_back("--help");
    ParsedCommandLine parsed = ParseCommandLine(args);
    ASSERT_EQ(parsed.exit_code, kExitOk) << command.Name() << ": " << parsed.err;
    EXPECT_THAT(parsed.out, HasSubstr(command.Usage())) << command.Name();
    EXPECT_THAT(parsed.out, HasSubstr(command.help)) << command.Name();
    for (const FlagSpec& flag : command.flags) {
      EXPECT_THAT(parsed.out, HasSubstr("--" + flag.name)) << command.Name();
      EXPECT_THAT(parsed.out, HasSubstr(flag.help)) << command.Name() << " --" << flag.name;
      if (!flag.short_name.empty()) {
        EXPECT_THAT(parsed.out, HasSubstr("-" + flag.short_name + ", --" + flag.name));
      }
      if (flag.takes_value()) {
        EXPECT_THAT(parsed.out, HasSubstr("--" + flag.name + " " + flag.value_name));
      }
      // And the parser takes it.
      std::vector<std::string> with_flag = command.words;
      with_flag.push_back("--" + flag.name);
      if (flag.takes_value()) with_flag.push_back("x");
      ParsedCommandLine accepted = ParseCommandLine(with_flag);
      EXPECT_TRUE(!accepted.exit_code.has_value() ||
                  !absl::StrContains(accepted.err, "unknown flag"))
          << command.Name() << ": " << accepted.err;
    }
    for (const FlagSpec& flag : GlobalFlags()) {
      EXPECT_THAT(parsed.out, HasSubstr("--" + flag.name)) << command.Name();
    }
  }
}

TEST(FleetctlCommandLineTest, CompletionNamesEveryCommandAndFlag) {
  for (const char* shell : {"bash", "zsh"}) {
    ParsedCommandLine parsed = ParseCommandLine({"completion", shell});
    ASSERT_EQ(parsed.exit_code, kExitOk) << parsed.err;
    const std::string& script = parsed.out;
    EXPECT_THAT(script, HasSubstr("complete -F _fleetctl fleetctl"));
    for (const CommandSpec& command : AllCommands()) {
      // The case label of the full command, and each word in its parent's list.
      EXPECT_THAT(script, HasSubstr("\"" + command.Name() + "\"|")) << shell;
      for (const std::string& word : command.words) EXPECT_THAT(script, HasSubstr(word));
      for (const FlagSpec& flag : command.flags) {
        EXPECT_THAT(script, HasSubstr("--" + flag.name)) << shell << " " << command.Name();
      }
    }
  }
  EXPECT_THAT(ParseCommandLine({"completion", "zsh"}).out, HasSubstr("#compdef fleetctl"));
  ParsedCommandLine fish = ParseCommandLine({"completion", "fish"});
  EXPECT_EQ(fish.exit_code, kExitUsage);
}

TEST(FlagSuggestTest, NearestNameWithinReach) {
  EXPECT_EQ(common::EditDistance("kitten", "sitting"), 3u);
  EXPECT_EQ(common::NearestName("--wavs", {"--waves", "--watch", "--env"}), "--waves");
  EXPECT_EQ(common::NearestName("--zzzzzzzz", {"--env", "--db"}), "");
}

}  // namespace
}  // namespace pgfleet::cli
