// The dashboard's JSON API: /api/<Method> for every method of the fleet's gRPC services
// (FleetService, RolloutService, MaintenanceService, TokenService), with the protobuf JSON mapping
// of the same request and response messages, authenticated by the same bearer tokens and calling
// the same ControlApi entries (controller/api/) as the gRPC services, so roles, validation and
// the audit log are identical whichever transport is used. Transport-free: HttpServer feeds it.
#pragma once

#include <functional>
#include <map>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "controller/api/control_api.h"
#include "controller/http/metrics_history.h"

namespace pgfleet::controller {

struct ApiRequest {
  std::string http_method;    // GET, POST, ...
  std::string method;         // The part after /api/, e.g. "ListAgents".
  std::string authorization;  // The Authorization header, "Bearer <token>".
  // The request message as JSON: the body of a POST, or built from the query string of a GET
  // (each parameter a field: ?environment=dev -> {"environment":"dev"}).
  std::string json;
};

struct ApiResponse {
  int http_status = 200;
  std::string json;
};

// The HTTP status for an error status (401, 403, 404, 400, 409, 503, ...).
int HttpStatusFor(const absl::Status& status);
// {"error":{"code":"PERMISSION_DENIED","message":"..."}}
std::string ErrorJson(const absl::Status& status);
// Query parameters as a JSON object of strings (proto's JSON parser takes quoted numbers too).
std::string QueryToJson(const std::multimap<std::string, std::string>& params);

class ApiRouter {
 public:
  // Every ControlApi method is the route /api/<name>; WhoAmI and AgentMetrics are the
  // dashboard's own.
  ApiRouter(ControlApi& api, MetricsHistory& metrics);

  // Authenticates and runs the request; may block (commands wait for agents), so HttpServer
  // calls it off its event loop.
  ApiResponse Handle(const ApiRequest& request);
  // The bearer-token check alone, cheap enough for HttpServer's event loop, which runs it
  // before it reads anything else of a request or queues it (Handle checks again).
  absl::Status Authenticate(const std::string& authorization);

 private:
  // A method: runs with the caller and the request JSON, returns the response JSON.
  using Handler = std::function<absl::StatusOr<std::string>(const Caller&, const std::string&)>;
  struct Route {
    bool read_only = false;  // Reachable with GET; everything else needs POST.
    Handler handler;         // The dashboard's own routes.
    // The ControlApi methods: served (authenticated, run and counted) by ControlApi::Serve.
    const ApiMethod* api_method = nullptr;
  };
  ControlApi& api_;
  MetricsHistory& metrics_;
  std::map<std::string, Route> routes_;
};

}  // namespace pgfleet::controller
