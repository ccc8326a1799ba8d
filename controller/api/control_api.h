// The controller's one operator API. Every method of every operator-facing service (fleet,
// rollouts, maintenance, tokens) is an entry here, with the least role it needs; both wires are
// thin adapters over it: controller/grpc/ maps each RPC to Invoke, controller/http/ maps each
// /api/<Method> route to the same entry (JSON <-> proto). Authentication (bearer tokens), the
// role check, the audit log and the proto mapping all happen behind this class, so the two
// wires cannot drift apart. tests/unit/control_api_test.cc fails when a proto RPC has no entry.
#pragma once

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "controller/api/fleet_api.h"
#include "controller/api/maintenance_api.h"
#include "controller/api/rollout_api.h"
#include "controller/api/secrets_api.h"
#include "controller/auth/token_admin.h"
#include "controller/clock.h"

namespace pgfleet::controller {

// One method of the API.
struct ApiMethod {
  std::string service;       // Full gRPC service name, e.g. "pgfleet.v1.FleetService".
  std::string name;          // The RPC, and the HTTP route /api/<name>.
  Role role = Role::kAdmin;  // The least role that may call it.
  bool read_only = false;    // Changes nothing: HTTP lets GET reach it.
  // Changes the fleet's state, so only the leader of several controllers serves it (a follower
  // hands it to the leader: see ControlApi::set_leader_routing). Every write but ListTokens
  // (POST-only for its secrecy, yet a read).
  bool needs_leader = false;
  // Set when some requests need more than `role` (a push carrying secret material needs
  // admin): the role this request needs, checked with `role` before anything runs.
  std::function<Role(const google::protobuf::Message&)> role_for_request;
  const google::protobuf::Descriptor* request_type = nullptr;
  const google::protobuf::Descriptor* response_type = nullptr;
  std::function<std::unique_ptr<google::protobuf::Message>()> new_request;
  std::function<absl::StatusOr<std::unique_ptr<google::protobuf::Message>>(
      const Caller&, const google::protobuf::Message&)>
      run;
};

// Several controllers on one store (controller/leader/leadership.h): whether this one leads,
// and how a write that reaches a follower gets to the leader.
struct LeaderRouting {
  std::function<bool()> is_leader;
  // Runs `method` on the leader with the caller's own authorization; the leader's answer, or
  // UNAVAILABLE naming the leader (none known, or it did not answer): retryable.
  std::function<absl::StatusOr<std::unique_ptr<google::protobuf::Message>>(
      const ApiMethod& method, const std::string& authorization,
      const google::protobuf::Message& request)>
      forward;
  // UNAVAILABLE naming the leader: for a write that was forwarded here already.
  std::function<absl::Status()> not_leader;
};

// The transport a request came in on: a label of the API's request metrics.
enum class Wire { kGrpc, kHttp };
const char* WireName(Wire wire);

// Told of every request Serve answers: which method, on which wire, its status and how long
// authenticating, parsing and running it took. The controller's /metrics counts them.
using ApiCallObserver =
    std::function<void(Wire wire, const ApiMethod& method, absl::StatusCode code, double seconds)>;

class ControlApi {
 public:
  ControlApi(Store& store, const Clock& clock, FleetApi& fleet, RolloutApi& rollouts,
             MaintenanceApi& maintenance, TokenAdmin& tokens);
  ControlApi(const ControlApi&) = delete;
  ControlApi& operator=(const ControlApi&) = delete;

  // "Bearer <token>" of an operator token (viewer, operator or admin).
  absl::StatusOr<Caller> Authenticate(const std::string& authorization) const;

  const std::vector<ApiMethod>& methods() const { return methods_; }
  // nullptr when there is no such method.
  const ApiMethod* Find(const std::string& service, const std::string& name) const;

  // Checks the caller's role against the method's, then runs it. InvalidArgument when the
  // request is not of the method's request type.
  absl::StatusOr<std::unique_ptr<google::protobuf::Message>> Invoke(
      const Caller& caller, const ApiMethod& method,
      const google::protobuf::Message& request) const;
  // What both wires call for a request to `method`: Authenticate, then `request` (which makes
  // the request message from the wire's bytes: JSON for HTTP, already parsed for gRPC), then
  // Invoke; the observer is told of the outcome, so requests are counted here, once, whichever
  // wire carried them.
  using RequestSource = std::function<absl::StatusOr<const google::protobuf::Message*>()>;
  // `forwarded`: a follower handed this request on (it is never handed on again).
  absl::StatusOr<std::unique_ptr<google::protobuf::Message>> Serve(Wire wire,
                                                                   const std::string& authorization,
                                                                   const ApiMethod& method,
                                                                   const RequestSource& request,
                                                                   bool forwarded = false) const;
  // Set before the wires start.
  void set_call_observer(ApiCallObserver observer) { observer_ = std::move(observer); }
  // Set before the wires start; without it this controller serves every request itself.
  void set_leader_routing(LeaderRouting routing) { routing_ = std::move(routing); }

  // Find + Serve on the gRPC wire, with the response copied into `response` (gRPC adapters).
  absl::Status Call(const std::string& authorization, const std::string& service,
                    const std::string& name, const google::protobuf::Message& request,
                    google::protobuf::Message* response, bool forwarded = false) const;

  FleetApi& fleet() { return fleet_; }

 private:
  template <typename Request, typename Response, typename Fn>
  void Add(const char* service, const char* name, Role role, bool read_only, Fn fn);

  Store& store_;
  const Clock& clock_;
  FleetApi& fleet_;
  SecretsApi
      secrets_;  // Needs only the store and the clock: owned here, so main.cc wires nothing more.
  std::vector<ApiMethod> methods_;
  std::map<std::pair<std::string, std::string>, size_t> index_;
  ApiCallObserver observer_;
  LeaderRouting routing_;
};

}  // namespace pgfleet::controller
