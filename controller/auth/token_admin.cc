#include "controller/auth/token_admin.h"

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "controller/auth/tokens.h"

namespace pgfleet::controller {

pgfleet::v1::Token TokenToProto(const TokenRow& row, int64_t now_ms) {
  pgfleet::v1::Token out;
  out.set_id(row.id);
  out.set_name(row.name);
  out.set_role(RoleName(row.role));
  out.set_environment(row.environment);
  out.set_created_unix_ms(row.created_unix_ms);
  out.set_created_by(row.created_by);
  out.set_expires_unix_ms(row.expires_unix_ms);
  out.set_last_used_unix_ms(row.last_used_unix_ms);
  out.set_revoked_unix_ms(row.revoked_unix_ms);
  out.set_bootstrap(row.bootstrap);
  out.set_state(TokenState(row, now_ms));
  return out;
}

absl::StatusOr<pgfleet::v1::ListTokensResponse> TokenAdmin::List(
    const Caller& caller, const pgfleet::v1::ListTokensRequest&) {
  PGF_RETURN_IF_ERROR(RequireRole(caller, Role::kAdmin));
  PGF_ASSIGN_OR_RETURN(std::vector<TokenRow> rows, store_.ListTokens());
  const int64_t now = UnixMillis(clock_.Now());
  pgfleet::v1::ListTokensResponse response;
  for (const TokenRow& row : rows) *response.add_tokens() = TokenToProto(row, now);
  return response;
}

absl::StatusOr<pgfleet::v1::CreateTokenResponse> TokenAdmin::Create(
    const Caller& caller, const pgfleet::v1::CreateTokenRequest& request) {
  PGF_RETURN_IF_ERROR(RequireRole(caller, Role::kAdmin));
  PGF_ASSIGN_OR_RETURN(Role role, ParseRole(request.role()));
  if (request.name().empty()) return absl::InvalidArgumentError("a token needs a name");
  if (request.expires_in_seconds() < 0) {
    return absl::InvalidArgumentError("expires_in_seconds must be positive (0: never)");
  }
  const int64_t now = UnixMillis(clock_.Now());
  TokenRow token;
  token.name = request.name();
  token.role = role;
  token.environment = request.environment();
  token.created_unix_ms = now;
  token.created_by = caller.actor;
  if (request.expires_in_seconds() > 0) {
    token.expires_unix_ms = now + request.expires_in_seconds() * 1000;
  }
  const std::string secret = NewToken();
  PGF_ASSIGN_OR_RETURN(TokenRow created, store_.CreateToken(token, HashToken(secret)));
  PGF_RETURN_IF_ERROR(
      store_.Audit(caller.actor, "token.create", absl::StrCat("token ", created.id),
                   absl::StrCat("name=", created.name, " role=", RoleName(created.role),
                                created.environment.empty() ? "" : " env=", created.environment,
                                created.expires_unix_ms
                                    ? absl::StrCat(" expires_unix_ms=", created.expires_unix_ms)
                                    : ""),
                   now));
  PGF_INFO("auth", "%s created token %d (%s, role %s%s)", caller.actor, created.id, created.name,
           RoleName(created.role),
           created.environment.empty() ? "" : absl::StrCat(", environment ", created.environment));
  pgfleet::v1::CreateTokenResponse response;
  *response.mutable_token() = TokenToProto(created, now);
  response.set_secret(secret);
  return response;
}

absl::StatusOr<pgfleet::v1::Token> TokenAdmin::Revoke(
    const Caller& caller, const pgfleet::v1::RevokeTokenRequest& request) {
  PGF_RETURN_IF_ERROR(RequireRole(caller, Role::kAdmin));
  const int64_t now = UnixMillis(clock_.Now());
  PGF_ASSIGN_OR_RETURN(std::vector<TokenRow> rows, store_.ListTokens());
  const TokenRow* target = nullptr;
  int active_admins = 0;
  for (const TokenRow& row : rows) {
    if (row.id == request.id()) target = &row;
    if (row.role == Role::kAdmin && std::string(TokenState(row, now)) == "active") ++active_admins;
  }
  if (target == nullptr)
    return absl::NotFoundError(absl::StrCat("no token with id ", request.id()));
  if (target->role == Role::kAdmin && std::string(TokenState(*target, now)) == "active" &&
      active_admins <= 1) {
    return absl::FailedPreconditionError(
        "this is the last active admin token: create another admin token first");
  }
  PGF_ASSIGN_OR_RETURN(TokenRow revoked, store_.RevokeToken(request.id(), now));
  PGF_RETURN_IF_ERROR(
      store_.Audit(caller.actor, "token.revoke", absl::StrCat("token ", revoked.id),
                   absl::StrCat("name=", revoked.name, " role=", RoleName(revoked.role)), now));
  PGF_INFO("auth", "%s revoked token %d (%s)", caller.actor, revoked.id, revoked.name);
  if (revoked_listener_) revoked_listener_(revoked);
  return TokenToProto(revoked, now);
}

}  // namespace pgfleet::controller
