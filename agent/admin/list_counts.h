// SHOW LISTS' rows, read by the admin console and by /metrics (pgbouncer_exporter publishes
// each as a gauge), so both report the same numbers.
#pragma once

#include <cstddef>
#include <set>
#include <string>
#include <vector>

namespace pgfleet::agent {

class Agent;

struct ListCount {
  const char* name;  // PgBouncer's row name ("databases", "used_clients", ...).
  size_t items;
};

// In PgBouncer 1.25's order. pgfleet keeps no free lists or DNS cache and has no [peers]: those
// rows are 0, kept so that tools reading the rows by position find each where PgBouncer has it.
std::vector<ListCount> ListCounts(const Agent& agent);

// The users PgBouncer keeps in its user list, which SHOW USERS prints and SHOW LISTS counts:
// the auth_file's, the [users] section's and the console's own "pgbouncer".
std::set<std::string> ListedUserNames(const Agent& agent);

}  // namespace pgfleet::agent
