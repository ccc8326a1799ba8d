// fleetctl env: environments.
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

int EnvList(Context& ctx) {
  pgfleet::v1::ListEnvironmentsResponse response;
  grpc::Status status = ctx.stub().ListEnvironments(ctx.NewCall().get(), {}, &response);
  if (!status.ok()) return ctx.Fail(status);
  if (ctx.json()) {
    ctx.PrintJson(response);
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& env : response.environments()) {
    rows.push_back({env.name(),
                    env.desired_version() ? absl::StrCat("v", env.desired_version()) : "-",
                    absl::StrCat(env.agents_connected(), "/", env.agents_total()),
                    absl::StrCat(env.agents_converged(), "/", env.agents_connected())});
  }
  PrintTable({"ENVIRONMENT", "DESIRED", "CONNECTED", "CONVERGED"}, rows);
  return kExitOk;
}

int EnvSetUpstream(Context& ctx) {
  if (int rc = RequireFlag(ctx, "env")) return rc;
  pgfleet::v1::SetUpstreamRequest request;
  request.set_environment(ctx.flags().Get("env"));
  request.set_upstream(ctx.flags().Get("upstream"));
  pgfleet::v1::Environment env;
  grpc::Status status = ctx.rollouts().SetUpstream(ctx.NewCall().get(), request, &env);
  if (!status.ok()) return ctx.Fail(status);
  if (ctx.json()) {
    ctx.PrintJson(env);
  } else {
    printf("%s: upstream %s\n", env.name().c_str(),
           env.upstream().empty() ? "(none)" : env.upstream().c_str());
  }
  return kExitOk;
}

}  // namespace

std::vector<CommandSpec> EnvCommands() {
  return {
      {{"env", "list"}, "", 0, "environments, their desired version and convergence", {}, EnvList},
      {{"env", "set-upstream"},
       "",
       0,
       "require versions to complete in UPSTREAM before rolling out in ENV (admin)",
       {{"env", "", "ENV", "the environment that gets the rule", true},
        {"upstream", "", "UPSTREAM",
         "the environment versions must complete in first; empty: none"}},
       EnvSetUpstream},
  };
}
}  // namespace pgfleet::cli
