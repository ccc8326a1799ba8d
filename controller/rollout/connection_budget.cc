#include "controller/rollout/connection_budget.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace pgfleet::controller {

BudgetCheck CheckConnectionBudget(
    const config::Config& config, int agent_count,
    const std::map<std::string, pgfleet::v1::ServerLimits>& limits_by_address, int reserve) {
  std::vector<const config::Config*> configs(static_cast<size_t>(std::max(0, agent_count)),
                                             &config);
  return CheckConnectionBudget(configs, limits_by_address, reserve);
}

BudgetCheck CheckConnectionBudget(
    const std::vector<const config::Config*>& per_agent_configs,
    const std::map<std::string, pgfleet::v1::ServerLimits>& limits_by_address, int reserve) {
  // Per server: the agents' total, and whether every agent opens the same number (the message
  // then keeps its "N agents x M" form).
  struct Demand {
    int total = 0;
    int agents = 0;
    int per_agent = -1;  // -1: differs between agents.
    bool first = true;
  };
  std::map<std::string, Demand> demand;
  for (const config::Config* config : per_agent_configs) {
    for (const auto& [address, connections] : config::MaxServerConnectionsByAddress(*config)) {
      Demand& d = demand[address];
      d.total += connections;
      ++d.agents;
      if (d.first) {
        d.per_agent = connections;
        d.first = false;
      } else if (d.per_agent != connections) {
        d.per_agent = -1;
      }
    }
  }
  const int agent_count = static_cast<int>(per_agent_configs.size());
  BudgetCheck check;
  for (const auto& [address, d] : demand) {
    const int total = d.total;
    auto limits = limits_by_address.find(address);
    if (limits == limits_by_address.end() || limits->second.max_connections() <= 0) {
      check.warnings.push_back(absl::StrCat(
          "connection budget of ", address,
          " not checked: no agent has reported its "
          "max_connections yet (agents learn it at their first server login); the config lets ",
          agent_count, " agents open up to ", total, " connections there"));
      continue;
    }
    const int max_connections = limits->second.max_connections();
    const int superuser_reserved = limits->second.superuser_reserved_connections();
    const int kept_free = reserve > 0 ? reserve : std::max(5, max_connections / 10);
    const int available = max_connections - superuser_reserved - kept_free;
    if (total > available) {
      const std::string demand_text =
          d.per_agent >= 0 && d.agents == agent_count
              ? absl::StrCat(agent_count, " agents x ", d.per_agent,
                             " server connections (pool sizes + reserve pools) = ", total)
              : absl::StrCat(d.agents,
                             " agents' own rendered configs (pool sizes + reserve pools) sum to ",
                             total, " server connections");
      check.refusals.push_back(absl::StrCat(
          "connection budget of ", address, " exceeded: ", demand_text, " > ", available,
          " available (max_connections ", max_connections, " - ", superuser_reserved,
          " superuser_reserved_connections - ", kept_free, " kept free)"));
    }
  }
  return check;
}

}  // namespace pgfleet::controller
