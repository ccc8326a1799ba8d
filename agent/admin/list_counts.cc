#include "agent/admin/list_counts.h"

#include "agent/agent.h"
#include "agent/pool.h"

namespace pgfleet::agent {

std::set<std::string> ListedUserNames(const Agent& agent) {
  std::set<std::string> names = {"pgbouncer"};
  for (const auto& [name, secret] : agent.auth_file()) names.insert(name);
  for (const auto& [name, user] : agent.config().users) names.insert(name);
  return names;
}

std::vector<ListCount> ListCounts(const Agent& agent) {
  size_t used_clients = agent.admin_clients().size();
  size_t used_servers = 0;
  for (const auto& [key, pool] : agent.pools()) {
    used_clients += pool->client_count();
    used_servers += pool->server_count();
  }
  // The admin console counts as one database and one pool, as in PgBouncer.
  return {{"databases", agent.config().databases.size() + 1},
          {"users", ListedUserNames(agent).size()},
          {"peers", 0},
          {"pools", agent.pools().size() + 1},
          {"peer_pools", 0},
          {"free_clients", 0},
          {"used_clients", used_clients},
          {"login_clients", agent.login_clients_view().size()},
          {"free_servers", 0},
          {"used_servers", used_servers},
          {"dns_names", 0},
          {"dns_zones", 0},
          {"dns_queries", 0},
          {"dns_pending", 0}};
}

}  // namespace pgfleet::agent
