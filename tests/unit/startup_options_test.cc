// The `options` startup parameter read as PgBouncer 1.20+ reads it (agent/pg/startup_options).

#include "agent/pg/startup_options.h"

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pgfleet::agent::pg {
namespace {

using Settings = std::vector<std::pair<std::string, std::string>>;
using ::testing::ElementsAre;
using ::testing::Pair;

Settings Parse(std::string_view options) {
  absl::StatusOr<Settings> settings = ParseStartupOptions(options);
  EXPECT_TRUE(settings.ok()) << options << ": " << settings.status();
  return settings.ok() ? *settings : Settings{};
}

TEST(StartupOptionsTest, DashCWithAndWithoutSpaceAndDoubleDash) {
  EXPECT_THAT(Parse("-c timezone=UTC  -c    datestyle=ISO"),
              ElementsAre(Pair("timezone", "UTC"), Pair("datestyle", "ISO")));
  EXPECT_THAT(Parse("-ctimezone=UTC --search_path=a,b"),
              ElementsAre(Pair("timezone", "UTC"), Pair("search_path", "a,b")));
  EXPECT_THAT(Parse(""), ElementsAre());
  EXPECT_THAT(Parse("   "), ElementsAre());
}

TEST(StartupOptionsTest, BackslashMakesTheNextCharacterLiteral) {
  EXPECT_THAT(Parse("-c datestyle=German,\\ YMD"), ElementsAre(Pair("datestyle", "German, YMD")));
  EXPECT_THAT(Parse("-c t\\imezone=\\P\\o\\rtugal"), ElementsAre(Pair("timezone", "Portugal")));
  // An escaped '=' in the name is still the separator, as in PgBouncer (the escape only
  // protects whitespace).
  EXPECT_THAT(Parse("-c dat\\estyle\\=ISO"), ElementsAre(Pair("datestyle", "ISO")));
}

TEST(StartupOptionsTest, OtherSwitchesAndSettingsWithoutValueAreRefused) {
  for (const char* bad : {"-d", "-c timezone", "timezone=UTC", "-c", "-c a=1 -x"}) {
    absl::StatusOr<Settings> settings = ParseStartupOptions(bad);
    ASSERT_FALSE(settings.ok()) << bad;
    EXPECT_EQ(settings.status().message(),
              "unsupported options startup parameter: only '-c config=val' and '--config=val' are "
              "allowed")
        << bad;
  }
}

}  // namespace
}  // namespace pgfleet::agent::pg
