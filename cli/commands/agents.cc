// fleetctl agents and reload: the agents.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <map>
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
#include "controller/registry/label_selector.h"

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

std::string JoinLabels(const google::protobuf::Map<std::string, std::string>& labels) {
  std::map<std::string, std::string> sorted(labels.begin(), labels.end());
  std::vector<std::string> parts;
  for (const auto& [key, value] : sorted) parts.push_back(absl::StrCat(key, "=", value));
  return absl::StrJoin(parts, ",");
}

int AgentsList(Context& ctx) {
  pgfleet::v1::ListAgentsRequest request;
  request.set_environment(ctx.flags().Get("env"));
  std::string selector;
  if (!SelectorFlag(ctx, &selector)) return kExitUsage;
  request.set_selector(selector);
  // The table shows one number of each agent's metrics: it asks for the basic view, which
  // at 10,000 agents is a fraction of the bytes (and of the controller's copying) of the full
  // one; JSON keeps every field unless --view=basic is given.
  std::string view = ctx.flags().Get("view", ctx.json() ? "full" : "basic");
  if (view == "basic") {
    request.set_view(pgfleet::v1::AGENT_VIEW_BASIC);
  } else if (view == "full") {
    request.set_view(pgfleet::v1::AGENT_VIEW_FULL);
  } else {
    fprintf(stderr, "fleetctl: --view must be basic or full, not \"%s\"\n", view.c_str());
    return kExitUsage;
  }
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
         agent.pinned_version() ? absl::StrCat("v", agent.pinned_version()) : "-",
         agent.connected() ? absl::StrCat(clients) : "-", VersionColumn(agent),
         JoinLabels(agent.labels()),
         agent.restart_pending().empty() ? "" : absl::StrJoin(agent.restart_pending(), ","),
         agent.last_error()});
  }
  PrintTable({"AGENT", "ENV", "LINK", "APPLIED", "DESIRED", "", "PINNED", "CLIENTS", "VERSION",
              "LABELS", "PENDING RESTART", "LAST ERROR"},
             rows);
  if (rows.empty() && !selector.empty()) {
    fprintf(stderr, "fleetctl: no agent matches %s\n", selector.c_str());
  }
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
  if (!agent.operator_labels().empty() || agent.removed_labels_size() > 0) {
    std::vector<std::string> removed(agent.removed_labels().begin(), agent.removed_labels().end());
    printf("operator:     %s%s%s\n", JoinLabels(agent.operator_labels()).c_str(),
           removed.empty() ? "" : "  removed: ", absl::StrJoin(removed, ",").c_str());
  }
  if (agent.pinned_version() != 0) {
    printf("pinned:       v%llu (a rollout with a selector; a full rollout unpins)\n",
           static_cast<unsigned long long>(agent.pinned_version()));
  }
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

// kubectl label's syntax: k=v sets, k- removes; changing a value needs --overwrite.
int AgentsLabel(Context& ctx) {
  const auto& args = ctx.flags().positional;
  if (args.size() < 2) {
    fprintf(stderr, "usage: fleetctl agents label AGENT_ID k=v [k2=v2] [k3-] [--overwrite]\n");
    return kExitUsage;
  }
  pgfleet::v1::SetAgentLabelsRequest request;
  request.set_agent_id(args[0]);
  request.set_overwrite(ctx.flags().Has("overwrite"));
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string& arg = args[i];
    const size_t eq = arg.find('=');
    absl::Status valid;
    if (eq != std::string::npos) {
      const std::string key = arg.substr(0, eq), value = arg.substr(eq + 1);
      valid = controller::ValidateLabelKey(key);
      if (valid.ok()) valid = controller::ValidateLabelValue(value);
      if (valid.ok() && request.set().count(key) != 0) {
        valid = absl::InvalidArgumentError(absl::StrCat("label '", key, "' is given twice"));
      }
      (*request.mutable_set())[key] = value;
    } else if (absl::EndsWith(arg, "-")) {
      const std::string key = arg.substr(0, arg.size() - 1);
      valid = controller::ValidateLabelKey(key);
      request.add_remove(key);
    } else {
      valid = absl::InvalidArgumentError(
          absl::StrCat("'", arg, "': want key=value to set a label or key- to remove one"));
    }
    if (!valid.ok()) {
      fprintf(stderr, "fleetctl: %s\n", std::string(valid.message()).c_str());
      return kExitUsage;
    }
  }
  pgfleet::v1::Agent agent;
  grpc::Status status = ctx.stub().SetAgentLabels(ctx.NewCall().get(), request, &agent);
  if (!status.ok()) return ctx.Fail(status);
  if (ctx.json()) {
    ctx.PrintJson(agent);
  } else {
    printf("agent %s labelled: %s\n", agent.agent_id().c_str(), JoinLabels(agent.labels()).c_str());
  }
  return kExitOk;
}

// A restart rollout: the rollout engine restarts the agents in waves (each hands over to a new
// process of the binary at its path without dropping a client), bakes and checks the health
// gates after each wave, and stops at the first failed hand-over or gate.
int AgentsRestart(Context& ctx) {
  if (int rc = RequireFlag(ctx, "env")) return rc;
  pgfleet::v1::StartRolloutRequest request;
  request.set_environment(ctx.flags().Get("env"));
  request.set_restart(true);
  request.set_only_outdated(ctx.flags().Has("only-outdated"));
  request.set_binary_version(ctx.flags().Get("version"));
  if (ctx.flags().Has("version") && request.binary_version().empty()) {
    fprintf(stderr, "fleetctl: --version wants a version (0.2.0) or a build id prefix\n");
    return kExitUsage;
  }
  return StartAndShowRollout(ctx, std::move(request));
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
       {{"env", "", "ENV", "only this environment's agents"},
        SelectorFlagSpec("only the agents whose labels match"),
        {"view", "", "basic|full",
         "basic: metrics without pools and databases (the table's default); full: every "
         "field (the default with --output json)"}},
       AgentsList},
      {{"agents", "label"},
       "AGENT_ID k=v [k2=v2] [k3-]",
       64,
       "set (k=v) or remove (k-) an agent's labels in the controller; they win over the agent's "
       "--labels, survive its reconnects, and re-render its config",
       {{"overwrite", "", "", "allow changing a label that already has another value"}},
       AgentsLabel},
      {{"agents", "show"}, "AGENT_ID", 1, "one agent in detail, with its pools", {}, AgentsShow},
      {{"agents", "restart"},
       "",
       0,
       "restart agents in waves without dropping a client: each hands over to a new process of "
       "the binary now at its path (so an installed upgrade takes effect); a wave waits until "
       "each of its agents is back as a new process and reports metrics, then bakes under the "
       "rollout health gates; a failed hand-over or gate stops the rollout and names the agent. "
       "A rollout like any other: rollout status/list/pause/resume/abort",
       {{"env", "", "ENV", "the environment", true},
        SelectorFlagSpec("only the agents whose labels match"),
        {"only-outdated", "", "",
         "only agents whose binary on disk differs from the one running (agents list: outdated)"},
        {"version", "", "X",
         "only agents whose binary on disk is version X (or whose build id starts with X)"},
        {"waves", "", "1,25%,100%", "agents per wave: counts or percentages"},
        {"bake", "", "DURATION", "how long each wave must stay healthy before the next (60s)"},
        {"max-unavailable", "", "N", "agents of a wave that may be offline"},
        {"max-cl-waiting", "", "N", "health gate: clients waiting per pool"},
        {"max-maxwait-ms", "", "MS", "health gate: the longest client wait"},
        {"max-server-errors", "", "N", "health gate: new server connection errors"},
        {"max-login-failures", "", "N", "health gate: new client login failures"},
        {"force", "", "", "start during an active maintenance window (needs --reason)"},
        {"reason", "", "TEXT", "why --force is needed, kept with the rollout"},
        {"watch", "", "", "follow the rollout live (exit 0 succeeded, 5 failed or aborted)"}},
       AgentsRestart},
      {{"reload"},
       "",
       0,
       "RELOAD the agents' configs (--env ENV or --agent ID)",
       {{"env", "", "ENV", "every connected agent of this environment"},
        {"agent", "", "ID", "this agent only"},
        SelectorFlagSpec("with --env: only its agents whose labels match")},
       Reload},
  };
}
}  // namespace pgfleet::cli
