// Bearer tokens for operators, and join tokens for agents. Only a token's sha256 is stored; the
// token itself is shown once, when it is created.
//
// A token works while it is not revoked and not expired. Operator tokens (viewer, operator,
// admin) authenticate the operators' API; agent tokens (role agent, scoped to one environment)
// only the agents' stream, where they prove which environment an agent may join. The bootstrap
// token (PGFLEET_BOOTSTRAP_TOKEN) is revoked by the store when the first other admin token is
// created.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "controller/api/fleet_api.h"
#include "controller/store/store.h"

namespace pgfleet::controller {

std::string HashToken(const std::string& token);
// "pgf_" + 32 random bytes in hex.
std::string NewToken();
// Reads "authorization: Bearer <token>" and looks the token up. Unauthenticated when it is
// missing, unknown, revoked or expired (as of `now`); PermissionDenied for an agent's join
// token.
absl::StatusOr<Caller> AuthenticateBearer(Store& store, const std::string& authorization_header,
                                          absl::Time now);
// An agent's join token from "authorization: Bearer <token>": Unauthenticated when unknown,
// revoked or expired (as of `now`), PermissionDenied when it is not an agent token.
absl::StatusOr<TokenRow> AuthenticateJoinToken(Store& store,
                                               const std::string& authorization_header,
                                               absl::Time now);
// "revoked", "expired", "superseded" (a bootstrap token revoked because an admin token
// exists) or "active", as of `now_ms`.
const char* TokenState(const TokenRow& token, int64_t now_ms);

}  // namespace pgfleet::controller
