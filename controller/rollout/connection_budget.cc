#include "controller/rollout/connection_budget.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace pgfleet::controller {

BudgetCheck CheckConnectionBudget(
    const config::Config& config, int agent_count,
    const std::map<std::string, pgfleet::v1::ServerLimits>& limits_by_address, int reserve) {
  BudgetCheck check;
  for (const auto& [address, per_agent] : config::MaxServerConnectionsByAddress(config)) {
    const int total = per_agent * agent_count;
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
      check.refusals.push_back(absl::StrCat(
          "connection budget of ", address, " exceeded: ", agent_count, " agents x ", per_agent,
          " server connections (pool sizes + reserve pools) = ", total, " > ", available,
          " available (max_connections ", max_connections, " - ", superuser_reserved,
          " superuser_reserved_connections - ", kept_free, " kept free)"));
    }
  }
  return check;
}

}  // namespace pgfleet::controller
