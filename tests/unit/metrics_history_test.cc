// The dashboard's in-memory metrics history stays within its stated bound per agent and for
// the fleet (controller/http/metrics_history.h), keeping the newest samples.
#include "controller/http/metrics_history.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace pgfleet::controller {
namespace {

// A report like a small pooler's: `pools` pools and three databases.
pgfleet::v1::MetricsReport Report(int64_t timestamp_ms, int pools = 6) {
  pgfleet::v1::MetricsReport report;
  report.set_timestamp_unix_ms(timestamp_ms);
  for (int i = 0; i < pools; ++i) {
    pgfleet::v1::PoolMetrics* pool = report.add_pools();
    pool->set_database(absl::StrCat("appdb_", i % 3));
    pool->set_user(absl::StrCat("user_", i));
    pool->set_cl_active(i);
    pool->set_sv_idle(20 - i);
  }
  for (int i = 0; i < 3; ++i) report.add_databases()->set_database(absl::StrCat("appdb_", i));
  report.set_client_count(42);
  report.add_server_limits()->set_address("10.0.0.10:5432");  // Not kept in the history.
  return report;
}

TEST(MetricsHistoryTest, OneAgentKeepsItsNewestSamplesWithinItsByteShare) {
  MetricsHistoryLimits limits;
  limits.fleet_budget_bytes = 16 << 10;
  limits.min_bytes_per_agent = 1 << 10;
  MetricsHistory history(limits);
  const size_t sample_bytes = Report(0).ByteSizeLong();
  for (int i = 1; i <= 500; ++i) history.Add("a1", Report(i * 1000));
  EXPECT_LE(history.TotalBytes(), limits.fleet_budget_bytes);
  EXPECT_GE(history.TotalBytes() + 2 * sample_bytes, limits.fleet_budget_bytes);
  std::vector<pgfleet::v1::MetricsReport> kept = history.Since("a1", 0);
  ASSERT_FALSE(kept.empty());
  EXPECT_EQ(kept.size(), history.SampleCount("a1"));
  EXPECT_EQ(kept.back().timestamp_unix_ms(), 500'000);  // The newest is always there.
  for (size_t i = 1; i < kept.size(); ++i) {
    EXPECT_EQ(kept[i].timestamp_unix_ms(), kept[i - 1].timestamp_unix_ms() + 1000);
  }
  EXPECT_EQ(kept.back().pools_size(), 6);
  EXPECT_EQ(kept.back().server_limits_size(), 0);
  EXPECT_EQ(history.Since("a1", 499'000).size(), 1u);
}

TEST(MetricsHistoryTest, SampleCountIsBoundedToo) {
  MetricsHistoryLimits limits;
  limits.max_samples_per_agent = 10;
  MetricsHistory history(limits);
  for (int i = 1; i <= 50; ++i) history.Add("a1", Report(i * 1000, 1));
  EXPECT_EQ(history.SampleCount("a1"), 10u);
}

TEST(MetricsHistoryTest, TenThousandAgentsShareTheFleetBudget) {
  MetricsHistory history;  // The defaults the controller runs with.
  constexpr int kAgents = 10'000;
  for (int round = 1; round <= 8; ++round) {
    for (int agent = 0; agent < kAgents; ++agent) {
      history.Add(absl::StrCat("agent-", agent), Report(round * 10'000, 60));
    }
  }
  EXPECT_EQ(history.BytesPerAgent(), (size_t{128} << 20) / kAgents);
  EXPECT_LE(history.TotalBytes(), size_t{128} << 20);
  // Each agent keeps what fits its share: fewer than the 8 reports, but more than a handful.
  const size_t kept = history.SampleCount("agent-1234");
  EXPECT_LT(kept, 8u);
  EXPECT_GE(kept, 5u);
  const size_t sample_bytes = Report(0, 60).ByteSizeLong();
  EXPECT_LE(kept * sample_bytes, history.BytesPerAgent() + sample_bytes);
}

}  // namespace
}  // namespace pgfleet::controller
