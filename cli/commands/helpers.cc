// Helpers the command handlers share.
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
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cli/commands/commands.h"
#include "controller/registry/label_selector.h"

namespace pgfleet::cli {
std::vector<std::string> SplitList(const std::string& text) {
  std::vector<std::string> parts;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    parts.emplace_back(part);
  }
  return parts;
}

int RequireFlag(const Context& ctx, const char* flag) {
  if (!ctx.flags().Has(flag) || ctx.flags().Get(flag).empty()) {
    fprintf(stderr, "fleetctl: --%s is required\n", flag);
    return kExitUsage;
  }
  return kExitOk;
}

bool ParseVersion(const std::string& text, uint64_t* version) {
  std::string digits = !text.empty() && (text[0] == 'v' || text[0] == 'V') ? text.substr(1) : text;
  return absl::SimpleAtoi(digits, version) && *version > 0;
}

bool ParseDurationFlag(const Context& ctx, const char* flag, int64_t* seconds) {
  if (!ctx.flags().Has(flag)) return true;
  absl::Duration duration;
  if (!absl::ParseDuration(ctx.flags().Get(flag), &duration) || duration <= absl::ZeroDuration()) {
    fprintf(stderr, "fleetctl: --%s wants a duration like 15m\n", flag);
    return false;
  }
  *seconds = std::max<int64_t>(1, absl::ToInt64Seconds(duration));
  return true;
}

bool SelectorFlag(const Context& ctx, std::string* selector) {
  selector->clear();
  if (!ctx.flags().Has("selector")) return true;
  absl::StatusOr<controller::LabelSelector> parsed =
      controller::LabelSelector::Parse(ctx.flags().Get("selector"));
  if (!parsed.ok()) {
    fprintf(stderr, "fleetctl: -l/--selector: %s\n",
            std::string(parsed.status().message()).c_str());
    return false;
  }
  *selector = parsed->ToString();
  return true;
}

FlagSpec SelectorFlagSpec(const std::string& what) {
  return {"selector", "l", "SELECTOR",
          absl::StrCat(what, " (kubectl syntax: k=v, k!=v, k in (a,b), k notin (a), k, !k)")};
}

bool AgentConverged(const pgfleet::v1::Agent& agent, uint64_t version) {
  if (agent.applied_version() != version) return false;
  if (agent.desired_version() != version) return true;  // Pinned elsewhere: its render is moot.
  return agent.applied_sha256().empty() || agent.desired_sha256().empty() ||
         agent.applied_sha256() == agent.desired_sha256();
}

int SendCommand(Context& ctx, pgfleet::v1::Command command, const char* verb) {
  pgfleet::v1::SendCommandRequest request;
  std::string selector;
  if (!SelectorFlag(ctx, &selector)) return kExitUsage;
  request.set_selector(selector);
  request.set_environment(ctx.flags().Get("env"));
  request.set_agent_id(ctx.flags().Get("agent"));
  if (request.environment().empty() && request.agent_id().empty()) {
    fprintf(stderr, "fleetctl: %s needs --env or --agent\n", verb);
    return kExitUsage;
  }
  *request.mutable_command() = std::move(command);
  pgfleet::v1::SendCommandResponse response;
  grpc::Status status = ctx.stub().SendCommand(ctx.NewCall(60).get(), request, &response);
  if (!status.ok()) return ctx.Fail(status);
  int failed = 0;
  for (const auto& outcome : response.outcomes()) failed += outcome.ok() ? 0 : 1;
  if (ctx.json()) {
    ctx.PrintJson(response);
  } else {
    std::vector<std::vector<std::string>> rows;
    for (const auto& outcome : response.outcomes()) {
      rows.push_back({outcome.agent_id(), outcome.ok() ? "ok" : "FAILED", outcome.error()});
    }
    PrintTable({"AGENT", verb, "ERROR"}, rows);
    if (response.outcomes_size() == 0) printf("no connected agent matched\n");
  }
  return failed > 0 ? kExitFailed : kExitOk;
}

}  // namespace pgfleet::cli
