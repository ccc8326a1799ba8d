// The TokenService (and its /api/ routes): admins list, create and revoke tokens. Every call
// checks the admin role first, and every change is audited.
#pragma once

#include <functional>

#include "absl/status/statusor.h"
#include "controller/api/fleet_api.h"
#include "controller/clock.h"
#include "controller/store/store.h"
#include "pgfleet/v1/fleet.pb.h"

namespace pgfleet::controller {

class TokenAdmin {
 public:
  TokenAdmin(Store& store, const Clock& clock) : store_(store), clock_(clock) {}

  absl::StatusOr<pgfleet::v1::ListTokensResponse> List(const Caller& caller,
                                                       const pgfleet::v1::ListTokensRequest&);
  // The secret is in the response only: it is not stored.
  absl::StatusOr<pgfleet::v1::CreateTokenResponse> Create(
      const Caller& caller, const pgfleet::v1::CreateTokenRequest& request);
  // Refuses to revoke the last active admin token (FailedPrecondition): nobody could manage
  // tokens any more except with `pgfleet-controller token create` on the controller's host.
  absl::StatusOr<pgfleet::v1::Token> Revoke(const Caller& caller,
                                            const pgfleet::v1::RevokeTokenRequest& request);
  // Told about every revoked token (the agents' service closes the streams it opened).
  void set_revoked_listener(std::function<void(const TokenRow&)> listener) {
    revoked_listener_ = std::move(listener);
  }

 private:
  Store& store_;
  const Clock& clock_;
  std::function<void(const TokenRow&)> revoked_listener_;
};

pgfleet::v1::Token TokenToProto(const TokenRow& row, int64_t now_ms);

}  // namespace pgfleet::controller
