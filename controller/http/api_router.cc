#include "controller/http/api_router.h"

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/proto_json.h"
#include "common/status_macros.h"

namespace pgfleet::controller {
namespace {

namespace pb = google::protobuf;

absl::Status FromProtobufStatus(const pb::util::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("bad request JSON: ", std::string(status.message())));
}

absl::Status ParseJsonInto(const std::string& json, pb::Message* message) {
  if (json.empty()) return absl::OkStatus();
  pb::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;  // A misspelt field is an error, not silently ignored.
  return FromProtobufStatus(pb::util::JsonStringToMessage(json, message, options));
}

template <typename Message>
absl::StatusOr<Message> ParseJson(const std::string& json) {
  Message message;
  PGF_RETURN_IF_ERROR(ParseJsonInto(json, &message));
  return message;
}

absl::StatusOr<std::string> ToJson(const pb::Message& message) {
  pb::util::JsonPrintOptions options;
  // Zeros and empty strings are printed too: the dashboard need not guess defaults.
  options.always_print_primitive_fields = true;
  return MessageToJson(message, options);
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

ApiRouter::ApiRouter(ControlApi& api, MetricsHistory& metrics) : api_(api), metrics_(metrics) {
  namespace v1 = pgfleet::v1;
  constexpr bool kRead = true;
  for (const ApiMethod& method : api.methods()) {
    routes_[method.name] = Route{method.read_only, nullptr, &method};
  }

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
      [this, &api](const Caller& caller, const std::string& json) -> absl::StatusOr<std::string> {
        // {agentId, sinceUnixMs}: there is no proto message for it, so a Struct.
        PGF_ASSIGN_OR_RETURN(pb::Struct args, ParseJson<pb::Struct>(json));
        v1::GetAgentRequest get;
        get.set_agent_id(args.fields().count("agentId") ? args.fields().at("agentId").string_value()
                                                        : "");
        // Role check and a 404 for an unknown agent, the same as GetAgent.
        const ApiMethod* get_agent = api.Find("pgfleet.v1.FleetService", "GetAgent");
        if (get_agent == nullptr) return absl::InternalError("GetAgent has no API entry");
        PGF_RETURN_IF_ERROR(api.Invoke(caller, *get_agent, get).status());
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
            static_cast<double>(absl::ToInt64Milliseconds(api.fleet().metrics_interval())));
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
  return api_.Authenticate(authorization).status();
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
  if (const ApiMethod* method = route->second.api_method; method != nullptr) {
    std::unique_ptr<pb::Message> parsed = method->new_request();
    absl::StatusOr<std::unique_ptr<pb::Message>> response = api_.Serve(
        Wire::kHttp, request.authorization, *method, [&]() -> absl::StatusOr<const pb::Message*> {
          PGF_RETURN_IF_ERROR(ParseJsonInto(request.json, parsed.get()));
          return parsed.get();
        });
    if (!response.ok()) return fail(response.status());
    absl::StatusOr<std::string> json = ToJson(**response);
    if (!json.ok()) return fail(json.status());
    return ApiResponse{200, std::move(*json)};
  }
  absl::StatusOr<Caller> caller = api_.Authenticate(request.authorization);
  if (!caller.ok()) return fail(caller.status());
  absl::StatusOr<std::string> result = route->second.handler(*caller, request.json);
  if (!result.ok()) return fail(result.status());
  return ApiResponse{200, std::move(*result)};
}

}  // namespace pgfleet::controller
