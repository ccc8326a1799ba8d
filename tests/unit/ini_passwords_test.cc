// Passwords written in a pushed pgbouncer.ini (issue 18: secret material never appears in the
// API): redacted in what the controller shows, restored from the previous version when a
// redacted text is pushed back.

#include "controller/config/ini_passwords.h"

#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "common/config/config.h"
#include "common/config/conn_string.h"
#include "gtest/gtest.h"
#include "tests/testutil/status_testing.h"

namespace pgfleet::controller {
namespace {

constexpr char kIni[] =
    "[databases]\n"
    "app = host=10.0.0.1 dbname=app user=app password=Plain-Pw1 pool_size=5\n"
    "  \"odd name\" =  host=10.0.0.2 password='with space '' quote'  \n"
    "nopw = host=10.0.0.3\n"
    "\n"
    "[pgbouncer]\n"
    "listen_port = 6432\n"
    "; password=not-a-database-entry\n"
    "admin_users = password\n";

TEST(IniPasswordsTest, RedactsEveryDatabasePasswordAndNothingElse) {
  const std::string redacted = RedactIniPasswords(kIni);
  EXPECT_FALSE(absl::StrContains(redacted, "Plain-Pw1"));
  EXPECT_FALSE(absl::StrContains(redacted, "with space"));
  EXPECT_TRUE(absl::StrContains(
      redacted, "app = host=10.0.0.1 dbname=app user=app password=<redacted> pool_size=5\n"));
  EXPECT_TRUE(
      absl::StrContains(redacted, "  \"odd name\" =  host=10.0.0.2 password=<redacted>  \n"));
  EXPECT_TRUE(absl::StrContains(redacted, "nopw = host=10.0.0.3\n"));
  // Outside [databases] nothing is touched.
  EXPECT_TRUE(absl::StrContains(redacted, "; password=not-a-database-entry\n"));
  EXPECT_TRUE(absl::StrContains(redacted, "admin_users = password\n"));
}

TEST(IniPasswordsTest, ALineTheSyntaxCannotReadLosesItsWholeValue) {
  // The password may be anywhere in it.
  EXPECT_EQ(RedactIniPasswords("[databases]\nbroken = host='unterminated password=Hidden-Pw2\n"),
            "[databases]\nbroken = <redacted>\n");
}

TEST(IniPasswordsTest, ARedactedTextPushedBackGetsThePasswordsBack) {
  const std::string shown = RedactIniPasswords(kIni);
  std::string edited = shown;
  edited.replace(edited.find("pool_size=5"), 11, "pool_size=7");
  PGF_ASSERT_OK_AND_ASSIGN(std::string restored, RestoreIniPasswords(edited, kIni));
  EXPECT_TRUE(absl::StrContains(restored, "password=Plain-Pw1 pool_size=7\n"));
  EXPECT_TRUE(absl::StrContains(restored, "password='with space '' quote'  \n"));
  // The restored ini means what the original meant.
  PGF_ASSERT_OK_AND_ASSIGN(config::Config config, config::ParseConfig(restored, "r.ini"));
  EXPECT_EQ(config.databases.at("app").password, "Plain-Pw1");
  EXPECT_EQ(config.databases.at("odd name").password, "with space ' quote");
  EXPECT_EQ(config.databases.at("app").pool_size, 7);
}

TEST(IniPasswordsTest, ANewPasswordPushedInClearIsKeptAsPushed) {
  PGF_ASSERT_OK_AND_ASSIGN(
      std::string restored,
      RestoreIniPasswords("[databases]\napp = host=10.0.0.1 password=New-Pw3\n", kIni));
  EXPECT_EQ(restored, "[databases]\napp = host=10.0.0.1 password=New-Pw3\n");
}

TEST(IniPasswordsTest, ARedactedPasswordWithNothingToKeepIsRefusedNamingTheDatabase) {
  absl::StatusOr<std::string> restored =
      RestoreIniPasswords("[databases]\nnopw = host=10.0.0.3 password=<redacted>\n", kIni);
  ASSERT_FALSE(restored.ok());
  EXPECT_TRUE(absl::IsInvalidArgument(restored.status()));
  EXPECT_TRUE(absl::StrContains(restored.status().message(), "database 'nopw'"))
      << restored.status();
}

TEST(IniPasswordsTest, OverlaysAreRedactedAndRestoredByTarget) {
  config::ConfigOverlay zone_a;
  zone_a.selector = "zone=a";
  zone_a.set.push_back({"databases", "app", "host=10.1.0.1 password=Zone-A-Pw"});
  zone_a.set.push_back({"pgbouncer", "default_pool_size", "40"});
  config::ConfigOverlay host3;
  host3.by_agent = true;
  host3.agent_id = "host-3";
  host3.set.push_back({"databases", "app", "host=10.3.0.1 password=<redacted>"});

  std::vector<config::ConfigOverlay> shown = RedactOverlayPasswords({zone_a});
  EXPECT_EQ(shown[0].set[0].value, "host=10.1.0.1 password=<redacted>");
  EXPECT_EQ(shown[0].set[1].value, "40");

  // The zone=a overlay keeps its own password; the agent overlay, new, falls back to the base.
  PGF_ASSERT_OK_AND_ASSIGN(std::vector<config::ConfigOverlay> restored,
                           RestoreOverlayPasswords({shown[0], host3}, {zone_a}, kIni));
  EXPECT_EQ(restored[0].set[0].value, "host=10.1.0.1 password=Zone-A-Pw");
  EXPECT_EQ(restored[1].set[0].value, "host=10.3.0.1 password=Plain-Pw1");

  host3.set[0] = {"databases", "nopw", "host=x password=<redacted>"};
  absl::StatusOr<std::vector<config::ConfigOverlay>> refused =
      RestoreOverlayPasswords({host3}, {zone_a}, kIni);
  ASSERT_FALSE(refused.ok());
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "agent host-3")) << refused.status();
}

TEST(ConnStringTest, QuotedValuesReadBackAndSpansCoverTheValueAsWritten) {
  const std::string s = "a=1  b = 'x ''y'  c=z";
  PGF_ASSERT_OK_AND_ASSIGN(std::vector<config::ConnParam> params, config::SplitConnString(s));
  ASSERT_EQ(params.size(), 3u);
  EXPECT_EQ(params[1].value, "x 'y");
  EXPECT_EQ(s.substr(params[1].value_begin, params[1].value_end - params[1].value_begin),
            "'x ''y'");
  for (const std::string value : {"plain", "with space", "it's", ""}) {
    const std::string quoted = config::QuoteConnValue(value);
    if (value.empty()) {
      EXPECT_EQ(quoted, "''");
      continue;
    }
    PGF_ASSERT_OK_AND_ASSIGN(std::vector<config::ConnParam> back,
                             config::SplitConnString("k=" + quoted));
    ASSERT_EQ(back.size(), 1u);
    EXPECT_EQ(back[0].value, value);
  }
}

}  // namespace
}  // namespace pgfleet::controller
