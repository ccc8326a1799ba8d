// SHOW LISTS' rows, read by the admin console and by /metrics (pgbouncer_exporter publishes
// each as a gauge), so both report the same numbers.
#pragma once

#include <cstddef>
#include <vector>

namespace pgfleet::agent {

class Agent;

struct ListCount {
  const char* name;  // PgBouncer's row name ("databases", "used_clients", ...).
  size_t items;
};

// In PgBouncer's order. pgfleet keeps no free lists or DNS cache: those rows are 0. PgBouncer
// 1.21+'s peers / peer_pools rows are left out: pgfleet has no [peers] (see config.h).
std::vector<ListCount> ListCounts(const Agent& agent);

}  // namespace pgfleet::agent
