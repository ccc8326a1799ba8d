#include "controller/http/api_router.h"

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/status_macros.h"
#include "controller/auth/tokens.h"

namespace pgfleet::controller {
namespace {

namespace pb = google::protobuf;

absl::Status FromProtobufStatus(const pb::util::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("bad request JSON: ", std::string(status.message())));
}

template <typename Message>
absl::StatusOr<Message> ParseJson(const std::string& json) {
  Message message;
  if (json.empty()) return message;
  pb::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;  // A misspelt field is an error, not silently ignored.
  PGF_RETURN_IF_ERROR(FromProtobufStatus(pb::util::JsonStringToMessage(json, &message, options)));
  return message;
}

absl::StatusOr<std::string> ToJson(const pb::Message& message) {
  pb::util::JsonPrintOptions options;
  // Zeros and empty strings are printed too: the dashboard need not guess defaults.
  options.always_print_primitive_fields = true;
  std::string out;
  pb::util::Status printed = pb::util::MessageToJsonString(message, &out, options);
  if (!printed.ok()) return absl::InternalError(std::string(printed.message()));
  return out;
}

const char* CodeName(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk:
      return "OK";
    case absl::StatusCode::kCancelled:
      return "CANCELLED";
    case absl::StatusCode::kUnknown:
      return "UNKNOWN";
    case absl::StatusCode::kInvalidArgument:
      return "INVALID_ARGUMENT";
    case absl::StatusCode::kDeadlineExceeded:
      return "DEADLINE_EXCEEDED";
    case absl::StatusCode::kNotFound:
      return "NOT_FOUND";
    case absl::StatusCode::kAlreadyExists:
      return "ALREADY_EXISTS";
    case absl::StatusCode::kPermissionDenied:
      return "PERMISSION_DENIED";
    case absl::StatusCode::kResourceExhausted:
      return "RESOURCE_EXHAUSTED";
    case absl::StatusCode::kFailedPrecondition:
      return "FAILED_PRECONDITION";
    case absl::StatusCode::kAborted:
      return "ABORTED";
    case absl::StatusCode::kOutOfRange:
      return "OUT_OF_RANGE";
    case absl::StatusCode::kUnimplemented:
      return "UNIMPLEMENTED";
    case absl::StatusCode::kInternal:
      return "INTERNAL";
    case absl::StatusCode::kUnavailable:
      return "UNAVAILABLE";
    case absl::StatusCode::kDataLoss:
      return "DATA_LOSS";
    case absl::StatusCode::kUnauthenticated:
      return "UNAUTHENTICATED";
    default:
      return "UNKNOWN";
  }
}

}  // namespace

int HttpStatusFor(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
      return 400;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kAborted:
    case absl::StatusCode::kFailedPrecondition:
      return 409;
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kCancelled:
      return 499;
    case absl::StatusCode::kUnimplemented:
      return 501;
    case absl::StatusCode::kUnavailable:
      return 503;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    default:
      return 500;
  }
}

std::string ErrorJson(const absl::Status& status) {
  pb::Struct error;
  pb::Struct* body = (*error.mutable_fields())["error"].mutable_struct_value();
  (*body->mutable_fields())["code"].set_string_value(CodeName(status.code()));
  (*body->mutable_fields())["message"].set_string_value(std::string(status.message()));
  absl::StatusOr<std::string> json = ToJson(error);
  return json.ok() ? *json : R"({"error":{"code":"INTERNAL","message":"unprintable error"}})";
}

std::string QueryToJson(const std::multimap<std::string, std::string>& params) {
  pb::Struct object;
  for (const auto& [key, value] : params) (*object.mutable_fields())[key].set_string_value(value);
  absl::StatusOr<std::string> json = ToJson(object);
  return json.ok() ? *json : "{}";
}

template <typename Request, typename Response, typename Fn>
void ApiRouter::Add(const std::string& name, bool read_only, Fn fn) {
  routes_[name] =
      Route{read_only,
            [fn = std::move(fn)](const Caller& caller,
                                 const std::string& json) -> absl::StatusOr<std::string> {
              PGF_ASSIGN_OR_RETURN(Request request, ParseJson<Request>(json));
              PGF_ASSIGN_OR_RETURN(Response response, fn(caller, request));
              return ToJson(response);
            }};
}

ApiRouter::ApiRouter(FleetApi& fleet, RolloutEngine& rollouts, MaintenanceOrchestrator& maintenance,
                     Store& store, MetricsHistory& metrics, TokenAdmin& tokens)
    : store_(store), metrics_(metrics) {
  namespace v1 = pgfleet::v1;
  constexpr bool kRead = true, kWrite = false;
  // FleetService.
  Add<v1::PushConfigRequest, v1::ConfigVersion>(
      "PushConfig", kWrite,
      [&fleet](const Caller& c, const auto& r) { return fleet.PushConfig(c, r); });
  Add<v1::ListConfigsRequest, v1::ListConfigsResponse>(
      "ListConfigs", kRead,
      [&fleet](const Caller& c, const auto& r) { return fleet.ListConfigs(c, r); });
  Add<v1::GetConfigRequest, v1::ConfigVersion>(
      "GetConfig", kRead,
      [&fleet](const Caller& c, const auto& r) { return fleet.GetConfig(c, r); });
  Add<v1::SetDesiredConfigRequest, v1::Environment>(
      "SetDesiredConfig", kWrite,
      [&fleet](const Caller& c, const auto& r) { return fleet.SetDesiredConfig(c, r); });
  Add<v1::ListEnvironmentsRequest, v1::ListEnvironmentsResponse>(
      "ListEnvironments", kRead,
      [&fleet](const Caller& c, const auto&) { return fleet.ListEnvironments(c); });
  Add<v1::ListAgentsRequest, v1::ListAgentsResponse>(
      "ListAgents", kRead,
      [&fleet](const Caller& c, const auto& r) { return fleet.ListAgents(c, r); });
  Add<v1::GetAgentRequest, v1::Agent>(
      "GetAgent", kRead, [&fleet](const Caller& c, const auto& r) { return fleet.GetAgent(c, r); });
  Add<v1::SendCommandRequest, v1::SendCommandResponse>(
      "SendCommand", kWrite,
      [&fleet](const Caller& c, const auto& r) { return fleet.SendCommand(c, r); });
  // RolloutService.
  Add<v1::StartRolloutRequest, v1::Rollout>(
      "StartRollout", kWrite,
      [&rollouts](const Caller& c, const auto& r) { return rollouts.Start(c, r); });
  Add<v1::GetRolloutRequest, v1::Rollout>(
      "GetRollout", kRead,
      [&rollouts](const Caller& c, const auto& r) { return rollouts.Get(c, r); });
  Add<v1::ListRolloutsRequest, v1::ListRolloutsResponse>(
      "ListRollouts", kRead,
      [&rollouts](const Caller& c, const auto& r) { return rollouts.List(c, r); });
  Add<v1::RolloutActionRequest, v1::Rollout>(
      "PauseRollout", kWrite,
      [&rollouts](const Caller& c, const auto& r) { return rollouts.Pause(c, r.id()); });
  Add<v1::RolloutActionRequest, v1::Rollout>(
      "ResumeRollout", kWrite,
      [&rollouts](const Caller& c, const auto& r) { return rollouts.Resume(c, r.id()); });
  Add<v1::RolloutActionRequest, v1::Rollout>(
      "AbortRollout", kWrite,
      [&rollouts](const Caller& c, const auto& r) { return rollouts.Abort(c, r.id()); });
  Add<v1::RollbackRequest, v1::Rollout>(
      "Rollback", kWrite,
      [&rollouts](const Caller& c, const auto& r) { return rollouts.Rollback(c, r); });
  Add<v1::PromoteRequest, v1::Rollout>(
      "Promote", kWrite,
      [&rollouts](const Caller& c, const auto& r) { return rollouts.Promote(c, r); });
  Add<v1::SetUpstreamRequest, v1::Environment>(
      "SetUpstream", kWrite,
      [&rollouts](const Caller& c, const auto& r) { return rollouts.SetUpstream(c, r); });
  // MaintenanceService (its Pause/Resume are windows; the rollout ones are named for rollouts).
  Add<v1::PauseWindowRequest, v1::MaintenanceWindow>(
      "Pause", kWrite,
      [&maintenance](const Caller& c, const auto& r) { return maintenance.Pause(c, r); });
  Add<v1::ResumeWindowRequest, v1::MaintenanceWindow>(
      "Resume", kWrite,
      [&maintenance](const Caller& c, const auto& r) { return maintenance.Resume(c, r); });
  Add<v1::ScheduleWindowRequest, v1::MaintenanceWindow>(
      "Schedule", kWrite,
      [&maintenance](const Caller& c, const auto& r) { return maintenance.Schedule(c, r); });
  Add<v1::GetWindowRequest, v1::MaintenanceWindow>(
      "GetWindow", kRead,
      [&maintenance](const Caller& c, const auto& r) { return maintenance.Get(c, r.id()); });
  Add<v1::ListWindowsRequest, v1::ListWindowsResponse>(
      "ListWindows", kRead, [&maintenance](const Caller& c, const auto& r) {
        return maintenance.List(c, r.environment());
      });
  Add<v1::CancelWindowRequest, v1::MaintenanceWindow>(
      "CancelWindow", kWrite,
      [&maintenance](const Caller& c, const auto& r) { return maintenance.Cancel(c, r.id()); });

  // TokenService. Admin only; the listing is POST-only too, like every call that is not a
  // viewer's read.
  Add<v1::ListTokensRequest, v1::ListTokensResponse>(
      "ListTokens", kWrite,
      [&tokens](const Caller& c, const auto& r) { return tokens.List(c, r); });
  Add<v1::CreateTokenRequest, v1::CreateTokenResponse>(
      "CreateToken", kWrite,
      [&tokens](const Caller& c, const auto& r) { return tokens.Create(c, r); });
  Add<v1::RevokeTokenRequest, v1::Token>(
      "RevokeToken", kWrite,
      [&tokens](const Caller& c, const auto& r) { return tokens.Revoke(c, r); });

  // Dashboard-only reads, not in the gRPC services.
  routes_["WhoAmI"] =
      Route{kRead, [](const Caller& caller, const std::string&) -> absl::StatusOr<std::string> {
              pb::Struct who;
              (*who.mutable_fields())["actor"].set_string_value(caller.actor);
              (*who.mutable_fields())["role"].set_string_value(RoleName(caller.role));
              return ToJson(who);
            }};
  routes_["AgentMetrics"] = Route{
      kRead,
      [this, &fleet](const Caller& caller, const std::string& json) -> absl::StatusOr<std::string> {
        // {agentId, sinceUnixMs}: there is no proto message for it, so a Struct.
        PGF_ASSIGN_OR_RETURN(pb::Struct args, ParseJson<pb::Struct>(json));
        v1::GetAgentRequest get;
        get.set_agent_id(args.fields().count("agentId") ? args.fields().at("agentId").string_value()
                                                        : "");
        // Role check and a 404 for an unknown agent, the same as GetAgent.
        PGF_RETURN_IF_ERROR(fleet.GetAgent(caller, get).status());
        int64_t since = 0;
        if (auto it = args.fields().find("sinceUnixMs"); it != args.fields().end()) {
          const std::string& text = it->second.string_value();
          if (!text.empty() && !absl::SimpleAtoi(text, &since)) {
            return absl::InvalidArgumentError("sinceUnixMs must be an integer");
          }
          if (it->second.has_number_value()) {
            since = static_cast<int64_t>(it->second.number_value());
          }
        }
        pb::Struct header;
        (*header.mutable_fields())["agentId"].set_string_value(get.agent_id());
        (*header.mutable_fields())["intervalMs"].set_number_value(
            static_cast<double>(absl::ToInt64Milliseconds(fleet.metrics_interval())));
        PGF_ASSIGN_OR_RETURN(std::string out, ToJson(header));
        out.pop_back();  // The closing brace: the samples array goes in before it.
        absl::StrAppend(&out, R"(,"samples":[)");
        bool first = true;
        for (const v1::MetricsReport& report : metrics_.Since(get.agent_id(), since)) {
          PGF_ASSIGN_OR_RETURN(std::string sample, ToJson(report));
          absl::StrAppend(&out, first ? "" : ",", sample);
          first = false;
        }
        absl::StrAppend(&out, "]}");
        return out;
      }};
}

absl::Status ApiRouter::Authenticate(const std::string& authorization) {
  return AuthenticateBearer(store_, authorization).status();
}

ApiResponse ApiRouter::Handle(const ApiRequest& request) {
  auto fail = [](const absl::Status& status) {
    return ApiResponse{HttpStatusFor(status), ErrorJson(status)};
  };
  auto route = routes_.find(request.method);
  if (route == routes_.end()) {
    return fail(absl::NotFoundError(absl::StrCat("no API method ", request.method)));
  }
  const bool is_get = request.http_method == "GET" || request.http_method == "HEAD";
  if (!is_get && request.http_method != "POST") {
    return ApiResponse{405, ErrorJson(absl::InvalidArgumentError("use GET or POST"))};
  }
  if (is_get && !route->second.read_only) {
    return ApiResponse{405, ErrorJson(absl::InvalidArgumentError(
                                absl::StrCat(request.method, " changes the fleet: use POST")))};
  }
  absl::StatusOr<Caller> caller = AuthenticateBearer(store_, request.authorization);
  if (!caller.ok()) return fail(caller.status());
  absl::StatusOr<std::string> result = route->second.handler(*caller, request.json);
  if (!result.ok()) return fail(result.status());
  return ApiResponse{200, std::move(*result)};
}

}  // namespace pgfleet::controller
