// Per-pool counters, kept from day one so SHOW STATS and the controller's metrics read them.
#pragma once

#include <cstdint>

namespace pgfleet::agent {

struct PoolStats {
  uint64_t xact_count = 0;
  uint64_t query_count = 0;
  uint64_t bytes_received = 0;  // Client -> server.
  uint64_t bytes_sent = 0;      // Server -> client.
  uint64_t xact_time_us = 0;
  uint64_t query_time_us = 0;
  uint64_t wait_time_us = 0;
  uint64_t client_login_failures = 0;
  uint64_t server_login_failures = 0;
  uint64_t server_errors = 0;  // Server connections lost or closed for a fault.
  // PgBouncer 1.23's SHOW STATS counters: a server linked to a client, a named Parse from a
  // client, a Parse the agent sent a server for one, a Bind of a named statement.
  uint64_t server_assignment_count = 0;
  uint64_t client_parse_count = 0;
  uint64_t server_parse_count = 0;
  uint64_t bind_count = 0;

  PoolStats& operator+=(const PoolStats& other) {
    xact_count += other.xact_count;
    query_count += other.query_count;
    bytes_received += other.bytes_received;
    bytes_sent += other.bytes_sent;
    xact_time_us += other.xact_time_us;
    query_time_us += other.query_time_us;
    wait_time_us += other.wait_time_us;
    client_login_failures += other.client_login_failures;
    server_login_failures += other.server_login_failures;
    server_errors += other.server_errors;
    server_assignment_count += other.server_assignment_count;
    client_parse_count += other.client_parse_count;
    server_parse_count += other.server_parse_count;
    bind_count += other.bind_count;
    return *this;
  }
};

}  // namespace pgfleet::agent

#include <map>
#include <string>

namespace pgfleet::agent {

// Per-second rates and per-transaction/query times over the last stats_period, computed the
// way PgBouncer 1.23+'s SHOW STATS does: the wait time is the average wait of the clients that
// were assigned a server in the period (before 1.23 it was per second).
struct StatsAverages {
  uint64_t xact_count = 0;               // Per second.
  uint64_t query_count = 0;              // Per second.
  uint64_t bytes_received = 0;           // Per second.
  uint64_t bytes_sent = 0;               // Per second.
  uint64_t xact_time_us = 0;             // Per transaction.
  uint64_t query_time_us = 0;            // Per query.
  uint64_t wait_time_us = 0;             // Per server assignment.
  uint64_t server_assignment_count = 0;  // Per second, as the four below.
  uint64_t client_parse_count = 0;
  uint64_t server_parse_count = 0;
  uint64_t bind_count = 0;
};

class StatsHistory {
 public:
  // Records totals per database at the end of a period of `period_seconds`.
  void Sample(const std::map<std::string, PoolStats>& totals, double period_seconds) {
    PoolStats all;
    for (const auto& [db, now] : totals) {
      averages_[db] = Compute(now, last_[db], period_seconds);
      last_[db] = now;
      all += now;
    }
    // The agent as a whole (PgBouncer's log_stats line), from the sum over databases.
    total_averages_ = Compute(all, last_total_, period_seconds);
    last_total_ = all;
    // Databases whose pools are all gone (auto databases) are forgotten, so these maps hold
    // no more names than there are pools.
    std::erase_if(last_, [&](const auto& entry) { return !totals.contains(entry.first); });
    std::erase_if(averages_, [&](const auto& entry) { return !totals.contains(entry.first); });
  }
  StatsAverages Averages(const std::string& db) const {
    auto it = averages_.find(db);
    return it == averages_.end() ? StatsAverages{} : it->second;
  }
  // Over every database, for the last period.
  const StatsAverages& TotalAverages() const { return total_averages_; }

 private:
  static StatsAverages Compute(const PoolStats& now, const PoolStats& before,
                               double period_seconds) {
    // Totals can go down (the pool of an auto database reclaimed): such a period counts 0.
    auto delta = [](uint64_t now_total, uint64_t before_total) {
      return now_total < before_total ? 0 : now_total - before_total;
    };
    auto rate = [&](uint64_t a, uint64_t b) {
      return static_cast<uint64_t>(static_cast<double>(delta(a, b)) / period_seconds);
    };
    auto per = [](uint64_t time_delta, uint64_t count_delta) {
      return count_delta == 0 ? 0 : time_delta / count_delta;
    };
    StatsAverages avg;
    avg.xact_count = rate(now.xact_count, before.xact_count);
    avg.query_count = rate(now.query_count, before.query_count);
    avg.bytes_received = rate(now.bytes_received, before.bytes_received);
    avg.bytes_sent = rate(now.bytes_sent, before.bytes_sent);
    avg.xact_time_us =
        per(delta(now.xact_time_us, before.xact_time_us), delta(now.xact_count, before.xact_count));
    avg.query_time_us = per(delta(now.query_time_us, before.query_time_us),
                            delta(now.query_count, before.query_count));
    avg.wait_time_us = per(delta(now.wait_time_us, before.wait_time_us),
                           delta(now.server_assignment_count, before.server_assignment_count));
    avg.server_assignment_count = rate(now.server_assignment_count, before.server_assignment_count);
    avg.client_parse_count = rate(now.client_parse_count, before.client_parse_count);
    avg.server_parse_count = rate(now.server_parse_count, before.server_parse_count);
    avg.bind_count = rate(now.bind_count, before.bind_count);
    return avg;
  }

  std::map<std::string, PoolStats> last_;
  std::map<std::string, StatsAverages> averages_;
  PoolStats last_total_;
  StatsAverages total_averages_;
};

}  // namespace pgfleet::agent
