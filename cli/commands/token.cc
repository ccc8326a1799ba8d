// fleetctl token: API and join tokens.
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

int TokenList(Context& ctx) {
  pgfleet::v1::ListTokensResponse response;
  grpc::Status status = ctx.tokens().ListTokens(ctx.NewCall().get(), {}, &response);
  if (!status.ok()) return ctx.Fail(status);
  if (ctx.json()) {
    ctx.PrintJson(response);
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& t : response.tokens()) {
    rows.push_back({absl::StrCat(t.id()), t.name(), t.role(),
                    t.environment().empty() ? "-" : t.environment(), t.state(),
                    FormatTime(t.created_unix_ms()),
                    t.expires_unix_ms() ? FormatTime(t.expires_unix_ms()) : "never",
                    t.last_used_unix_ms() ? FormatTime(t.last_used_unix_ms()) : "never",
                    t.created_by().empty() ? "-" : t.created_by()});
  }
  PrintTable({"ID", "NAME", "ROLE", "ENV", "STATE", "CREATED (UTC)", "EXPIRES (UTC)",
              "LAST USED (UTC)", "CREATED BY"},
             rows);
  return kExitOk;
}

int TokenCreate(Context& ctx) {
  if (int rc = RequireFlag(ctx, "role")) return rc;
  pgfleet::v1::CreateTokenRequest request;
  request.set_role(ctx.flags().Get("role"));
  request.set_environment(ctx.flags().Get("env"));
  // A name people can recognise in `token list`: agent-prod, operator...
  std::string name = ctx.flags().Get("name");
  if (name.empty()) {
    name = request.environment().empty() ? request.role()
                                         : absl::StrCat(request.role(), "-", request.environment());
  }
  request.set_name(name);
  int64_t expires_in = 0;
  if (!ParseDurationFlag(ctx, "expires-in", &expires_in)) return kExitUsage;
  request.set_expires_in_seconds(expires_in);
  pgfleet::v1::CreateTokenResponse response;
  grpc::Status status = ctx.tokens().CreateToken(ctx.NewCall().get(), request, &response);
  if (!status.ok()) return ctx.Fail(status);
  if (ctx.json()) {
    ctx.PrintJson(response);
    return kExitOk;
  }
  // The secret alone on stdout (`fleetctl token create ... > token-file`); the rest to stderr.
  const pgfleet::v1::Token& token = response.token();
  fprintf(stderr, "created token %llu (%s, role %s%s, expires %s); it is shown only this once\n",
          static_cast<unsigned long long>(token.id()), token.name().c_str(), token.role().c_str(),
          token.environment().empty() ? ""
                                      : absl::StrCat(", environment ", token.environment()).c_str(),
          token.expires_unix_ms()
              ? absl::StrCat(FormatTime(token.expires_unix_ms()), " UTC").c_str()
              : "never");
  printf("%s\n", response.secret().c_str());
  return kExitOk;
}

int TokenRevoke(Context& ctx) {
  uint64_t id = 0;
  if (ctx.flags().positional.size() != 1 || !absl::SimpleAtoi(ctx.flags().positional[0], &id)) {
    fprintf(stderr, "usage: fleetctl token revoke ID (the ID column of fleetctl token list)\n");
    return kExitUsage;
  }
  pgfleet::v1::RevokeTokenRequest request;
  request.set_id(id);
  pgfleet::v1::Token token;
  grpc::Status status = ctx.tokens().RevokeToken(ctx.NewCall().get(), request, &token);
  if (!status.ok()) return ctx.Fail(status);
  if (ctx.json()) {
    ctx.PrintJson(token);
  } else {
    printf("revoked token %llu (%s, role %s)\n", static_cast<unsigned long long>(token.id()),
           token.name().c_str(), token.role().c_str());
  }
  return kExitOk;
}

}  // namespace

std::vector<CommandSpec> TokenCommands() {
  return {
      {{"token", "list"},
       "",
       0,
       "every token: id, name, role, environment scope, state (active, expired, revoked, "
       "superseded), created, expires, last used (to the minute); never the secret (admin)",
       {},
       TokenList},
      {{"token", "create"},
       "",
       0,
       "a new token, printed once on stdout (the controller keeps only its sha256). Role agent "
       "is an agent's join token for one environment (--env required; give it to the agent with "
       "--join-token-file). The first admin token created ends the bootstrap token "
       "(PGFLEET_BOOTSTRAP_TOKEN) for good (admin)",
       {{"role", "", "agent|viewer|operator|admin", "what the token may do", true},
        {"env", "", "ENV", "the one environment it may act on (required for agent)"},
        {"name", "", "NAME", "shown in token list (default: ROLE-ENV)"},
        {"expires-in", "", "DURATION", "lifetime, like 720h (default: never)"}},
       TokenCreate},
      {{"token", "revoke"},
       "ID",
       1,
       "the token stops working at once; agents using it are refused at their next connect. "
       "The last active admin token cannot be revoked (admin)",
       {},
       TokenRevoke},
  };
}
}  // namespace pgfleet::cli
