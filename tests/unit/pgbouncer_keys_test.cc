// Issue 22: parsing and precedence of the PgBouncer 1.24/1.25 keys pgfleet now acts on
// (transaction_timeout, the per-user timeouts). Their effect on real clients is tested in
// tests/integration/pgbouncer_keys_test.cc.

#include <string>

#include "absl/time/time.h"
#include "common/config/config.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pgfleet::config {
namespace {

using ::testing::HasSubstr;
using ::testing::IsEmpty;

Config MustParse(const std::string& text) {
  absl::StatusOr<Config> config = ParseConfig(text, "test.ini");
  EXPECT_TRUE(config.ok()) << config.status();
  return config.ok() ? *config : Config();
}

std::string ShownValue(const Config& config, const std::string& key) {
  for (const ConfigEntry& entry : DescribeConfig(config)) {
    if (entry.key == key) return entry.value + (entry.changeable ? " (changeable)" : "");
  }
  return "<no row>";
}

TEST(TransactionTimeoutTest, LoadsShowsAndChangesOnline) {
  Config defaults = MustParse("[pgbouncer]\n");
  EXPECT_EQ(defaults.transaction_timeout, absl::ZeroDuration());
  EXPECT_EQ(ShownValue(defaults, "transaction_timeout"), "0 (changeable)");

  Config c = MustParse("[pgbouncer]\ntransaction_timeout = 2.5\n");
  EXPECT_THAT(c.warnings, IsEmpty());
  EXPECT_EQ(c.transaction_timeout, absl::Milliseconds(2500));
  EXPECT_EQ(ShownValue(c, "transaction_timeout"), "2.5 (changeable)");
  EXPECT_EQ(FindUnsupportedSetting("pgbouncer", "transaction_timeout"), nullptr);

  ASSERT_TRUE(ApplySetting(c, "transaction_timeout", "7").ok());
  EXPECT_EQ(c.transaction_timeout, absl::Seconds(7));
  absl::Status bad = ApplySetting(c, "transaction_timeout", "soon");
  EXPECT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.message()), HasSubstr("invalid duration 'soon'"));
}

TEST(PerUserTimeoutsTest, LoadWithoutWarnings) {
  Config c = MustParse(
      "[pgbouncer]\n[users]\n"
      "app = client_idle_timeout=10 idle_transaction_timeout=20 query_timeout=1.5 "
      "transaction_timeout=40\n");
  EXPECT_THAT(c.warnings, IsEmpty());
  const UserConfig* app = c.FindUser("app");
  ASSERT_NE(app, nullptr);
  EXPECT_EQ(app->client_idle_timeout, absl::Seconds(10));
  EXPECT_EQ(app->idle_transaction_timeout, absl::Seconds(20));
  EXPECT_EQ(app->query_timeout, absl::Milliseconds(1500));
  EXPECT_EQ(app->transaction_timeout, absl::Seconds(40));
  for (const char* key : {"client_idle_timeout", "idle_transaction_timeout", "query_timeout",
                          "transaction_timeout"}) {
    EXPECT_EQ(FindUnsupportedSetting("users", key), nullptr) << key;
  }
}

TEST(PerUserTimeoutsTest, BadValueNamesUserAndKey) {
  absl::StatusOr<Config> c =
      ParseConfig("[pgbouncer]\n[users]\napp = transaction_timeout=later\n", "test.ini");
  ASSERT_FALSE(c.ok());
  EXPECT_THAT(std::string(c.status().message()),
              HasSubstr("test.ini:3: user 'app': key 'transaction_timeout': invalid duration"));
}

// PgBouncer's janitor: the user's value replaces the [pgbouncer] one when above 0; a user's 0
// (or no entry, or no such key in it) leaves the [pgbouncer] value in force.
TEST(PerUserTimeoutsTest, UserValueAboveZeroWinsElseGlobal) {
  Config c = MustParse(
      "[pgbouncer]\n"
      "client_idle_timeout = 100\nidle_transaction_timeout = 200\nquery_timeout = 300\n"
      "transaction_timeout = 400\n"
      "[users]\n"
      "fast = client_idle_timeout=1 idle_transaction_timeout=2 query_timeout=3 "
      "transaction_timeout=4\n"
      "zeroes = client_idle_timeout=0 idle_transaction_timeout=0 query_timeout=0 "
      "transaction_timeout=0\n"
      "other = pool_size=3\n");
  EXPECT_EQ(c.ClientIdleTimeoutFor("fast"), absl::Seconds(1));
  EXPECT_EQ(c.IdleTransactionTimeoutFor("fast"), absl::Seconds(2));
  EXPECT_EQ(c.QueryTimeoutFor("fast"), absl::Seconds(3));
  EXPECT_EQ(c.TransactionTimeoutFor("fast"), absl::Seconds(4));
  for (const char* user : {"zeroes", "other", "nobody"}) {
    EXPECT_EQ(c.ClientIdleTimeoutFor(user), absl::Seconds(100)) << user;
    EXPECT_EQ(c.IdleTransactionTimeoutFor(user), absl::Seconds(200)) << user;
    EXPECT_EQ(c.QueryTimeoutFor(user), absl::Seconds(300)) << user;
    EXPECT_EQ(c.TransactionTimeoutFor(user), absl::Seconds(400)) << user;
  }

  // With the [pgbouncer] timeouts off, a user's own still applies.
  Config only_user = MustParse("[pgbouncer]\n[users]\nfast = transaction_timeout=4\n");
  EXPECT_EQ(only_user.TransactionTimeoutFor("fast"), absl::Seconds(4));
  EXPECT_EQ(only_user.TransactionTimeoutFor("slow"), absl::ZeroDuration());
}

}  // namespace
}  // namespace pgfleet::config
