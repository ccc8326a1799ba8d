// One reading of the agent's pools and counters, taken on the loop thread. SHOW POOLS /
// SHOW STATS, the Prometheus /metrics render and the controller link's metrics report all
// read it, so a number such as cl_waiting is computed in one place (Agent::Snapshot).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "agent/stats.h"
#include "common/config/config.h"

namespace pgfleet::agent {

// One (database, user) pool, with SHOW POOLS' counts.
struct PoolSnapshot {
  std::string database;
  std::string user;
  config::PoolMode pool_mode = config::PoolMode::kSession;
  size_t cl_active = 0;
  size_t cl_waiting = 0;  // Queued for a server, and queued to log in (login_waiting).
  size_t sv_active = 0;
  size_t sv_active_cancel = 0;   // Cancel requests on their way to this pool's servers.
  size_t sv_being_canceled = 0;  // Released servers held until a cancel sent to them lands.
  size_t sv_idle = 0;
  size_t sv_used = 0;  // Held servers are counted in sv_being_canceled, not here.
  size_t sv_login = 0;
  size_t server_count = 0;  // Every server connection of the pool, whatever its state.
  uint64_t maxwait_us = 0;  // Age of the oldest client waiting for a server.
  PoolStats stats;          // This pool's counters (not those of reclaimed pools).
};

// A paused scope ("" = every database) and how far its drain has got.
struct PauseSnapshot {
  std::string database;
  bool drained = false;
  int servers_in_use = 0;
  int clients_waiting = 0;
  std::optional<absl::Time> deadline;
  // The client holding a server the longest (nullopt: none holds one).
  struct Holder {
    std::string peer;
    uint64_t held_us = 0;  // Since its transaction (session mode: its connection) began.
    std::string last_query;
  };
  std::optional<Holder> oldest;
};

struct ServerLimitsSnapshot {
  std::string address;
  int max_connections = 0;
  int superuser_reserved_connections = 0;
};

struct StatsSnapshot {
  uint64_t now_us = 0;              // MonotonicMicros() when taken (maxwait is relative to it).
  std::vector<PoolSnapshot> pools;  // In (database, user) order.
  // Totals per database over its pools, reclaimed pools included (SHOW STATS).
  std::map<std::string, PoolStats> database_totals;
  size_t client_count = 0;
  std::vector<ServerLimitsSnapshot> server_limits;
  std::vector<PauseSnapshot> pauses;  // Sorted by scope, "" first.
  bool suspended = false;
};

}  // namespace pgfleet::agent
