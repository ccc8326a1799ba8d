// The last PgBouncer 1.25 keys pgfleet used to load without effect: how the config reads them
// (disable_pqexec, login_notify_message, pool_idle_timeout, per-database target_session_attrs)
// and which servers target_session_attrs accepts (agent/host_list.h). The behaviour against a
// real PostgreSQL is in tests/integration/pgbouncer_last_keys_test.cc.
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "agent/host_list.h"
#include "agent/stats.h"
#include "common/config/config.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pgfleet {
namespace {

using agent::SatisfiesTargetSessionAttrs;
using config::Config;
using config::TargetSessionAttrs;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

using Params = std::vector<std::pair<std::string, std::string>>;

Config MustParse(const std::string& text) {
  absl::StatusOr<Config> config = config::ParseConfig(text, "test.ini");
  EXPECT_TRUE(config.ok()) << config.status();
  return config.ok() ? *std::move(config) : Config{};
}

TEST(LastKeysConfigTest, PgBouncerKeysLoadWithTheirValuesAndNoWarning) {
  Config c = MustParse(
      "[databases]\n"
      "rw = host=a,b target_session_attrs=read-write\n"
      "plain = host=a\n"
      "[pgbouncer]\n"
      "disable_pqexec = 1\n"
      "login_notify_message = connected to pgfleet, not PostgreSQL\n"
      "pool_idle_timeout = 30\n");
  EXPECT_TRUE(c.disable_pqexec);
  EXPECT_EQ(c.login_notify_message, "connected to pgfleet, not PostgreSQL");
  EXPECT_EQ(c.pool_idle_timeout, absl::Seconds(30));
  EXPECT_EQ(c.databases.at("rw").target_session_attrs, TargetSessionAttrs::kReadWrite);
  EXPECT_EQ(c.databases.at("plain").target_session_attrs, TargetSessionAttrs::kAny);
  EXPECT_THAT(c.warnings, IsEmpty());
  for (const char* key : {"disable_pqexec", "login_notify_message", "pool_idle_timeout"}) {
    EXPECT_EQ(config::FindUnsupportedSetting("pgbouncer", key), nullptr) << key;
  }
  EXPECT_EQ(config::FindUnsupportedSetting("databases", "target_session_attrs"), nullptr);
}

TEST(LastKeysConfigTest, DefaultsAreOff) {
  Config c = MustParse("[pgbouncer]\n");
  EXPECT_FALSE(c.disable_pqexec);
  EXPECT_EQ(c.login_notify_message, "");
  EXPECT_EQ(c.pool_idle_timeout, absl::ZeroDuration());
}

TEST(LastKeysConfigTest, EveryTargetSessionAttrsValueAndPreferStandbyRefused) {
  for (TargetSessionAttrs attrs :
       {TargetSessionAttrs::kAny, TargetSessionAttrs::kReadWrite, TargetSessionAttrs::kReadOnly,
        TargetSessionAttrs::kPrimary, TargetSessionAttrs::kStandby}) {
    const std::string name = config::TargetSessionAttrsName(attrs);
    Config c = MustParse(
        absl::StrCat("[databases]\nd = host=a target_session_attrs=", name, "\n[pgbouncer]\n"));
    EXPECT_EQ(c.databases.at("d").target_session_attrs, attrs) << name;
  }
  // PgBouncer refuses it too (test_target_session_attrs_rejects_prefer_standby).
  absl::StatusOr<Config> refused = config::ParseConfig(
      "[databases]\nd = host=a target_session_attrs=prefer-standby\n[pgbouncer]\n", "test.ini");
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(refused.status().message(), HasSubstr("target_session_attrs"));
  EXPECT_THAT(refused.status().message(), HasSubstr("prefer-standby"));
}

TEST(TargetSessionAttrsTest, PrimaryAndStandbyGoByInHotStandby) {
  const Params primary = {{"in_hot_standby", "off"}, {"default_transaction_read_only", "off"}};
  const Params standby = {{"in_hot_standby", "on"}, {"default_transaction_read_only", "off"}};
  // PgBouncer's doc: a primary whose default_transaction_read_only is on still matches primary.
  const Params read_only_primary = {{"in_hot_standby", "off"},
                                    {"default_transaction_read_only", "on"}};
  EXPECT_TRUE(SatisfiesTargetSessionAttrs(TargetSessionAttrs::kPrimary, primary));
  EXPECT_TRUE(SatisfiesTargetSessionAttrs(TargetSessionAttrs::kPrimary, read_only_primary));
  EXPECT_FALSE(SatisfiesTargetSessionAttrs(TargetSessionAttrs::kPrimary, standby));
  EXPECT_TRUE(SatisfiesTargetSessionAttrs(TargetSessionAttrs::kStandby, standby));
  EXPECT_FALSE(SatisfiesTargetSessionAttrs(TargetSessionAttrs::kStandby, primary));
  EXPECT_FALSE(SatisfiesTargetSessionAttrs(TargetSessionAttrs::kStandby, read_only_primary));
}

TEST(TargetSessionAttrsTest, ReadWriteNeedsBothOffAndReadOnlyEitherOn) {
  const Params primary = {{"in_hot_standby", "off"}, {"default_transaction_read_only", "off"}};
  const Params standby = {{"in_hot_standby", "on"}, {"default_transaction_read_only", "off"}};
  const Params read_only_primary = {{"in_hot_standby", "off"},
                                    {"default_transaction_read_only", "on"}};
  EXPECT_TRUE(SatisfiesTargetSessionAttrs(TargetSessionAttrs::kReadWrite, primary));
  EXPECT_FALSE(SatisfiesTargetSessionAttrs(TargetSessionAttrs::kReadWrite, standby));
  EXPECT_FALSE(SatisfiesTargetSessionAttrs(TargetSessionAttrs::kReadWrite, read_only_primary));
  EXPECT_FALSE(SatisfiesTargetSessionAttrs(TargetSessionAttrs::kReadOnly, primary));
  EXPECT_TRUE(SatisfiesTargetSessionAttrs(TargetSessionAttrs::kReadOnly, standby));
  EXPECT_TRUE(SatisfiesTargetSessionAttrs(TargetSessionAttrs::kReadOnly, read_only_primary));
}

TEST(TargetSessionAttrsTest, AServerThatReportsNothingOnlySatisfiesAny) {
  // PostgreSQL before 14 reports neither parameter.
  const Params old_server = {{"server_version", "13.9"}};
  EXPECT_TRUE(SatisfiesTargetSessionAttrs(TargetSessionAttrs::kAny, old_server));
  for (TargetSessionAttrs attrs : {TargetSessionAttrs::kReadWrite, TargetSessionAttrs::kReadOnly,
                                   TargetSessionAttrs::kPrimary, TargetSessionAttrs::kStandby}) {
    EXPECT_FALSE(SatisfiesTargetSessionAttrs(attrs, old_server))
        << config::TargetSessionAttrsName(attrs);
  }
}

// PgBouncer 1.23+ (stats.c calc_average): avg_wait_time, and the log line's "wait N us", is the
// wait per server assignment of the period, not per second as before 1.23.
TEST(StatsAveragesTest, WaitTimeIsPerServerAssignment) {
  agent::StatsHistory history;
  history.Sample({{"db", agent::PoolStats{}}}, 2.0);
  agent::PoolStats now;
  now.server_assignment_count = 4;
  now.wait_time_us = 6000;
  now.client_parse_count = 2;
  now.bind_count = 8;
  history.Sample({{"db", now}}, 2.0);
  const agent::StatsAverages avg = history.Averages("db");
  EXPECT_EQ(avg.wait_time_us, 1500u);          // 6000 us over 4 assignments.
  EXPECT_EQ(avg.server_assignment_count, 2u);  // Per second.
  EXPECT_EQ(avg.client_parse_count, 1u);
  EXPECT_EQ(avg.bind_count, 4u);
  EXPECT_EQ(history.TotalAverages().wait_time_us, 1500u);

  // A period without assignments has no wait to average.
  now.wait_time_us += 100;
  history.Sample({{"db", now}}, 2.0);
  EXPECT_EQ(history.Averages("db").wait_time_us, 0u);
}

}  // namespace
}  // namespace pgfleet
