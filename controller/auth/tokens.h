// Bearer tokens for operators. Only a token's sha256 is stored; the token itself is shown
// once, when it is created.
#pragma once

#include <grpcpp/grpcpp.h>

#include <string>

#include "absl/status/statusor.h"
#include "controller/api/fleet_api.h"
#include "controller/store/store.h"

namespace pgfleet::controller {

std::string HashToken(const std::string& token);
// "pgf_" + 32 random bytes in hex.
std::string NewToken();
// Reads "authorization: Bearer <token>" and looks the token up. Unauthenticated when it is
// missing or unknown.
absl::StatusOr<Caller> AuthenticateBearer(Store& store, const std::string& authorization_header);
absl::StatusOr<Caller> AuthenticateGrpc(Store& store, const grpc::ServerContext& context);

}  // namespace pgfleet::controller
