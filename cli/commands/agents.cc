// fleetctl agents and reload: the agents.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cli/commands/commands.h"

namespace pgfleet::cli {
namespace {

// "0.1.0+3f2a9c1d4e5b" (semver build metadata): the version and the build id cut to 12
// characters (after "sha256:" for a binary without a GNU build id); "(outdated)" follows when
// the binary on disk is another one.
std::string VersionColumn(const pgfleet::v1::Agent& agent) {
  std::string id = agent.build_id();
  if (size_t colon = id.find(':'); colon != std::string::npos) id = id.substr(colon + 1);
  std::string column = agent.agent_version();
  if (!id.empty()) absl::StrAppend(&column, "+", id.substr(0, 12));
  if (agent.binary_outdated()) absl::StrAppend(&column, " (outdated)");
  return column.empty() ? "-" : column;
}

int AgentsList(Context& ctx) {
  pgfleet::v1::ListAgentsRequest request;
  request.set_environment(ctx.flags().Get("env"));
  pgfleet::v1::ListAgentsResponse response;
  grpc::Status status = ctx.stub().ListAgents(ctx.NewCall().get(), request, &response);
  if (!status.ok()) return ctx.Fail(status);
  if (ctx.json()) {
    ctx.PrintJson(response);
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& agent : response.agents()) {
    int clients = agent.last_metrics().client_count();
    rows.push_back(
        {agent.agent_id(), agent.environment(), agent.connected() ? "up" : "down",
         agent.applied_version() ? absl::StrCat("v", agent.applied_version()) : "local",
         agent.desired_version() ? absl::StrCat("v", agent.desired_version()) : "-",
         agent.desired_version() && agent.applied_version() != agent.desired_version() ? "DRIFT"
                                                                                       : "",
         agent.connected() ? absl::StrCat(clients) : "-", VersionColumn(agent),
         agent.restart_pending().empty() ? "" : absl::StrJoin(agent.restart_pending(), ","),
         agent.last_error()});
  }
  PrintTable({"AGENT", "ENV", "LINK", "APPLIED", "DESIRED", "", "CLIENTS", "VERSION",
              "PENDING RESTART", "LAST ERROR"},
             rows);
  return kExitOk;
}

int AgentsShow(Context& ctx) {
  if (ctx.flags().positional.size() != 1) {
    fprintf(stderr, "usage: fleetctl agents show AGENT_ID\n");
    return kExitUsage;
  }
  pgfleet::v1::GetAgentRequest request;
  request.set_agent_id(ctx.flags().positional[0]);
  pgfleet::v1::Agent agent;
  grpc::Status status = ctx.stub().GetAgent(ctx.NewCall().get(), request, &agent);
  if (!status.ok()) return ctx.Fail(status);
  if (ctx.json()) {
    ctx.PrintJson(agent);
    return kExitOk;
  }
  std::vector<std::string> labels;
  for (const auto& [k, v] : agent.labels()) labels.push_back(absl::StrCat(k, "=", v));
  printf(
      "agent:        %s\nenvironment:  %s\nlabels:       %s\nhost:         %s\n"
      "link:         %s\nversion:      %s\nfirst seen:   %s\nlast seen:    %s\n"
      "applied:      v%llu\ndesired:      v%llu%s\nrestart:      %s\nlast error:   %s\n",
      agent.agent_id().c_str(), agent.environment().c_str(), absl::StrJoin(labels, ",").c_str(),
      agent.hostname().c_str(), agent.connected() ? "connected" : "disconnected",
      agent.agent_version().c_str(), FormatTime(agent.first_seen_unix_ms()).c_str(),
      FormatTime(agent.last_seen_unix_ms()).c_str(),
      static_cast<unsigned long long>(agent.applied_version()),
      static_cast<unsigned long long>(agent.desired_version()),
      agent.applied_version() != agent.desired_version() ? "  (drift)" : "",
      agent.restart_pending().empty()
          ? "-"
          : absl::StrCat("pending for ", absl::StrJoin(agent.restart_pending(), ", ")).c_str(),
      agent.last_error().empty() ? "-" : agent.last_error().c_str());
  if (agent.last_metrics().pools_size() > 0) {
    printf("\npools:\n");
    std::vector<std::vector<std::string>> rows;
    for (const auto& pool : agent.last_metrics().pools()) {
      rows.push_back({pool.database(), pool.user(), pool.pool_mode(),
                      absl::StrCat(pool.cl_active()), absl::StrCat(pool.cl_waiting()),
                      absl::StrCat(pool.sv_active()), absl::StrCat(pool.sv_idle()),
                      absl::StrCat(pool.maxwait_us() / 1000000)});
    }
    PrintTable(
        {"DATABASE", "USER", "MODE", "CL_ACTIVE", "CL_WAITING", "SV_ACTIVE", "SV_IDLE", "MAXWAIT"},
        rows);
  }
  return kExitOk;
}

int Reload(Context& ctx) {
  pgfleet::v1::Command command;
  command.mutable_reload();
  return SendCommand(ctx, std::move(command), "RELOAD");
}

}  // namespace

std::vector<CommandSpec> AgentsCommands() {
  return {
      {{"agents", "list"},
       "",
       0,
       "agents, link state, applied vs desired version",
       {{"env", "", "ENV", "only this environment's agents"}},
       AgentsList},
      {{"agents", "show"}, "AGENT_ID", 1, "one agent in detail, with its pools", {}, AgentsShow},
      {{"reload"},
       "",
       0,
       "RELOAD the agents' configs (--env ENV or --agent ID)",
       {{"env", "", "ENV", "every connected agent of this environment"},
        {"agent", "", "ID", "this agent only"}},
       Reload},
  };
}
}  // namespace pgfleet::cli
