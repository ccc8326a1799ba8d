// The agent's pools: finding or creating the pool of a database and user, reclaiming
// unused ones, and counting servers across pools for the per-database and per-user limits.

#include <algorithm>

#include "agent/agent.h"
#include "common/log.h"

namespace pgfleet::agent {

Pool* Agent::GetPool(const std::string& database, const std::string& user) {
  auto key = std::make_pair(database, user);
  if (auto it = pools_.find(key); it != pools_.end()) return it->second.get();
  std::optional<config::DatabaseConfig> db = config_->FindDatabase(database);
  if (!db.has_value()) return nullptr;
  if (!config_->databases.contains(database) &&
      std::none_of(pools_.begin(), pools_.end(),
                   [&](const auto& entry) { return entry.first.first == database; })) {
    // PgBouncer's words when "*" serves a database for the first time.
    PGF_INFO("client", "registered new auto-database: db=%s", database);
  }
  auto [it, inserted] = pools_.emplace(key, std::make_unique<Pool>(*this, *db, user));
  return it->second.get();
}

std::string Agent::PoolUserFor(const std::string& database, const std::string& client_user) const {
  const std::optional<config::DatabaseConfig> db = config_->FindDatabase(database);
  return db.has_value() && !db->user.empty() ? db->user : client_user;
}

Pool* Agent::FindPool(const std::string& database, const std::string& user) {
  auto it = pools_.find(std::make_pair(database, user));
  return it == pools_.end() ? nullptr : it->second.get();
}

std::optional<absl::Duration> Agent::PoolReclaimDelay(const std::string& db,
                                                      const std::string& user) const {
  // Pools nobody configured (any user name under auth_type any, users removed from auth_file)
  // go sooner than autodb_idle_timeout's hour: they are what someone can create at will.
  constexpr absl::Duration kUnconfiguredPoolGrace = absl::Seconds(60);
  const config::Config& cfg = *config_;
  const bool user_known = auth_file_.find(user) != auth_file_.end() || cfg.users.contains(user) ||
                          PoolUserFor(db, "") == user;
  if (!cfg.FindDatabase(db).has_value() || !user_known) {
    return std::min(cfg.autodb_idle_timeout, kUnconfiguredPoolGrace);
  }
  if (!cfg.databases.contains(db)) return cfg.autodb_idle_timeout;  // Served by "*".
  return std::nullopt;
}

void Agent::ReclaimUnusedPools(uint64_t now_us) {
  for (auto it = pools_.begin(); it != pools_.end();) {
    Pool& pool = *it->second;
    const std::optional<absl::Duration> delay = PoolReclaimDelay(it->first.first, it->first.second);
    const uint64_t unused_for = pool.UnusedForMicros(now_us);
    // PgBouncer 1.25's pool_idle_timeout: any pool, configured or not, once it has had no
    // client and no server connection at all for that long.
    const absl::Duration idle_timeout = config_->pool_idle_timeout;
    const uint64_t empty_for = pool.EmptyForMicros(now_us);
    const bool idle_expired =
        idle_timeout > absl::ZeroDuration() && empty_for > 0 &&
        empty_for >= static_cast<uint64_t>(absl::ToInt64Microseconds(idle_timeout));
    const bool unused_expired =
        delay.has_value() && unused_for > 0 &&
        unused_for >= static_cast<uint64_t>(absl::ToInt64Microseconds(*delay));
    if (!idle_expired && !unused_expired) {
      ++it;
      continue;
    }
    pool.Retire();
    if (pool.server_count() != 0) {  // Defensive: Retire leaves none of an unused pool.
      ++it;
      continue;
    }
    // A configured database's totals keep what its reclaimed pools counted (SHOW STATS
    // counters never go down); an auto database's go with it, as in PgBouncer.
    if (config_->databases.contains(it->first.first)) {
      reclaimed_stats_[it->first.first] += pool.stats();
    }
    if (unused_expired) {
      PGF_INFO("pool", "db=%s user=%s pool reclaimed after %s unused (no config entry of its own)",
               it->first.first, it->first.second,
               absl::FormatDuration(absl::Microseconds(static_cast<int64_t>(unused_for))));
    } else {
      PGF_INFO("pool", "db=%s user=%s pool freed after %s without connections (pool_idle_timeout)",
               it->first.first, it->first.second,
               absl::FormatDuration(absl::Microseconds(static_cast<int64_t>(empty_for))));
    }
    it = pools_.erase(it);
  }
}

int Agent::ServerCountForDb(const std::string& db) const {
  int count = 0;
  for (const auto& [key, pool] : pools_) {
    if (key.first == db) count += static_cast<int>(pool->server_count());
  }
  return count;
}

int Agent::ServerCountForUser(const std::string& user) const {
  int count = 0;
  for (const auto& [key, pool] : pools_) {
    if (pool->server_user() == user) count += static_cast<int>(pool->server_count());
  }
  return count;
}

}  // namespace pgfleet::agent
