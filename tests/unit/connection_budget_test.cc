#include "controller/rollout/connection_budget.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "common/config/config.h"

namespace pgfleet::controller {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::SizeIs;

config::Config Parse(const std::string& ini) {
  absl::StatusOr<config::Config> config = config::ParseConfig(ini, "test.ini");
  EXPECT_TRUE(config.ok()) << config.status();
  return config.ok() ? *config : config::Config{};
}

std::map<std::string, pgfleet::v1::ServerLimits> Limits(const std::string& address, int max,
                                                        int reserved) {
  pgfleet::v1::ServerLimits limits;
  limits.set_address(address);
  limits.set_max_connections(max);
  limits.set_superuser_reserved_connections(reserved);
  return {{address, limits}};
}

TEST(ServerConnectionsTest, SumsPoolAndReservePerServerAndAppliesCaps) {
  config::Config config = Parse(
      "[databases]\n"
      "app = host=db1 port=5432\n"
      "reports = host=db1 port=5432 pool_size=5 reserve_pool=1\n"
      "capped = host=db2 port=6000 pool_size=50 max_db_connections=7\n"
      "local = port=5433\n"
      "* = host=db3\n"
      "[pgbouncer]\n"
      "default_pool_size = 20\n"
      "reserve_pool_size = 2\n");
  std::map<std::string, int> by_address = config::MaxServerConnectionsByAddress(config);
  // app: 20 + 2, reports: 5 + 1; capped by its max_db_connections; "*" is not counted.
  EXPECT_THAT(by_address, ElementsAre(std::pair<const std::string, int>(
                                          "/var/run/postgresql/.s.PGSQL.5433", 22),
                                      std::pair<const std::string, int>("db1:5432", 28),
                                      std::pair<const std::string, int>("db2:6000", 7)));
}

TEST(ConnectionBudgetTest, WithinBudgetPasses) {
  config::Config config = Parse(
      "[databases]\napp = host=db1 port=5432\n"
      "[pgbouncer]\ndefault_pool_size = 20\n");
  // 4 x 20 = 80 <= 100 - 3 - 10.
  BudgetCheck check = CheckConnectionBudget(config, 4, Limits("db1:5432", 100, 3), 0);
  EXPECT_THAT(check.refusals, IsEmpty());
  EXPECT_THAT(check.warnings, IsEmpty());
}

TEST(ConnectionBudgetTest, OverBudgetIsRefusedWithTheArithmetic) {
  config::Config config = Parse(
      "[databases]\napp = host=db1 port=5432\n"
      "[pgbouncer]\ndefault_pool_size = 25\n");
  // 4 x 25 = 100 > 100 - 3 - 10 = 87.
  BudgetCheck check = CheckConnectionBudget(config, 4, Limits("db1:5432", 100, 3), 0);
  ASSERT_THAT(check.refusals, SizeIs(1));
  EXPECT_THAT(check.refusals[0], HasSubstr("connection budget of db1:5432 exceeded"));
  EXPECT_THAT(check.refusals[0], HasSubstr("4 agents x 25"));
  EXPECT_THAT(check.refusals[0], HasSubstr("= 100 > 87 available"));
  EXPECT_THAT(check.refusals[0], HasSubstr("max_connections 100"));
}

TEST(ConnectionBudgetTest, ExplicitReserveReplacesTheDefault) {
  config::Config config = Parse(
      "[databases]\napp = host=db1 port=5432\n"
      "[pgbouncer]\ndefault_pool_size = 24\n");
  // 4 x 24 = 96: over 87 with the default reserve (10), within 100 - 3 - 1 = 96 with 1.
  EXPECT_THAT(CheckConnectionBudget(config, 4, Limits("db1:5432", 100, 3), 0).refusals, SizeIs(1));
  EXPECT_THAT(CheckConnectionBudget(config, 4, Limits("db1:5432", 100, 3), 1).refusals, IsEmpty());
  // The default reserve is at least 5 connections on a small server: 24 > 30 - 2 - 5 = 23.
  BudgetCheck small = CheckConnectionBudget(config, 1, Limits("db1:5432", 30, 2), 0);
  ASSERT_THAT(small.refusals, SizeIs(1));
  EXPECT_THAT(small.refusals[0], HasSubstr("5 kept free"));
}

TEST(ConnectionBudgetTest, UnknownServerIsAWarningNotARefusal) {
  config::Config config = Parse(
      "[databases]\napp = host=db1 port=5432\n"
      "other = host=db9 port=5432\n[pgbouncer]\n");
  BudgetCheck check = CheckConnectionBudget(config, 3, Limits("db1:5432", 500, 3), 0);
  EXPECT_THAT(check.refusals, IsEmpty());
  ASSERT_THAT(check.warnings, SizeIs(1));
  EXPECT_THAT(check.warnings[0], HasSubstr("db9:5432 not checked"));
  EXPECT_THAT(check.warnings[0], HasSubstr("3 agents open up to 60"));
}

}  // namespace
}  // namespace pgfleet::controller
