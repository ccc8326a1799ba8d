// The rollout pre-flight's connection budget: would the environment's agents, all running
// the new config, be allowed to open every server connection it lets them open? PostgreSQL
// refuses logins past max_connections, and a pooler fleet multiplies each pool by its agent
// count, so a pool_size raise that is harmless on one server can exhaust the database.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "common/config/config.h"
#include "pgfleet/v1/agent.pb.h"

namespace pgfleet::controller {

struct BudgetCheck {
  std::vector<std::string> refusals;  // Servers whose budget the config exceeds.
  std::vector<std::string> warnings;  // Servers that could not be checked.
};

// `limits_by_address`: what the agents reported, keyed by config::ServerAddress.
// `reserve`: connections kept free per server for others; 0 picks the default
// (10% of max_connections, at least 5).
BudgetCheck CheckConnectionBudget(
    const config::Config& config, int agent_count,
    const std::map<std::string, pgfleet::v1::ServerLimits>& limits_by_address, int reserve);

// The same over agents that run different configs (each its own render of a version with
// overlays): a server's total is the sum of each agent's own pool sizes for it.
BudgetCheck CheckConnectionBudget(
    const std::vector<const config::Config*>& per_agent_configs,
    const std::map<std::string, pgfleet::v1::ServerLimits>& limits_by_address, int reserve);

}  // namespace pgfleet::controller
