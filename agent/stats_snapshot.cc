// Agent::Snapshot: the one place that counts a pool's clients and servers by state.
#include "agent/stats_snapshot.h"

#include <algorithm>

#include "agent/agent.h"
#include "agent/client_conn.h"
#include "agent/server_conn.h"

namespace pgfleet::agent {
namespace {

PoolSnapshot SnapshotOf(const Pool& pool, uint64_t now_us) {
  PoolSnapshot out;
  out.database = pool.db_name();
  out.user = pool.user();
  out.pool_mode = pool.pool_mode();
  out.cl_active = pool.active_clients().size();
  out.cl_waiting = pool.waiting_clients().size() + pool.login_waiting_clients().size();
  out.sv_active = pool.active_servers().size();
  out.sv_idle = pool.idle_servers().size();
  out.sv_used = pool.used_servers().size();
  out.sv_login = pool.login_servers().size();
  out.server_count = pool.server_count();
  out.maxwait_us = pool.MaxWaitMicros(now_us);
  out.stats = pool.stats();
  return out;
}

}  // namespace

StatsSnapshot Agent::Snapshot() const {
  StatsSnapshot snapshot;
  snapshot.now_us = MonotonicMicros();
  snapshot.pools.reserve(pools_.size());
  for (const auto& [key, pool] : pools_) {
    snapshot.pools.push_back(SnapshotOf(*pool, snapshot.now_us));
    // The map's key, not the pool's own names: they are the same, and SHOW POOLS prints these.
    PoolSnapshot& added = snapshot.pools.back();
    added.database = key.first;
    added.user = key.second;
    // Held servers wait in the used list; PgBouncer lists them apart from sv_used.
    added.sv_being_canceled =
        std::min(added.sv_used, static_cast<size_t>(ServersBeingCanceled(*pool)));
    added.sv_used -= added.sv_being_canceled;
    added.sv_active_cancel = static_cast<size_t>(CancelsInFlight(*pool));
  }
  snapshot.database_totals = StatsByDatabase();
  snapshot.client_count = client_count_;
  for (const auto& [address, limits] : server_limits_) {
    snapshot.server_limits.push_back(
        {address, limits.max_connections, limits.superuser_reserved_connections});
  }
  // In session mode a linked client holds its server outside transactions too: its age then
  // counts from its connection.
  auto held_since = [](const ClientConn* client) {
    return client->xact_start_us != 0 ? client->xact_start_us : client->connect_time_us();
  };
  for (const std::string& db : PausedScopes()) {
    PauseSnapshot& pause = snapshot.pauses.emplace_back();
    pause.database = db;
    pause.drained = IsDrained(db);
    pause.servers_in_use = ServersInUse(db);
    pause.deadline = PauseDeadline(db);
    const ClientConn* oldest = nullptr;
    for (const auto& [key, pool] : pools_) {
      if (!db.empty() && key.first != db) continue;
      pause.clients_waiting += static_cast<int>(pool->waiting_clients().size());
      pool->active_servers().ForEach([&](const ServerConn* server) {
        const ClientConn* client = server->client();
        if (client == nullptr) return;
        if (oldest == nullptr || held_since(client) < held_since(oldest)) oldest = client;
      });
    }
    if (oldest != nullptr) {
      pause.oldest = PauseSnapshot::Holder{oldest->peer(), snapshot.now_us - held_since(oldest),
                                           std::string(oldest->last_query())};
    }
  }
  snapshot.suspended = suspended_;
  return snapshot;
}

}  // namespace pgfleet::agent
