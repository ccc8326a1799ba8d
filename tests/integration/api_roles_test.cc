// Roles on every operator-facing call of a real pgfleet-controller (its own SQLite file, tokens
// minted with `pgfleet-controller token create`), over both transports it serves them on: every
// RPC of every gRPC service, and every /api/<Method> route of the HTTP JSON API. One table
// (kCalls) names each call, the least role it needs and a request to send; each call is made as
// each principal (no token, an unknown token, a raw token without "Bearer ", viewer, operator,
// admin). Below the needed role the answer must be PERMISSION_DENIED (HTTP 403); without a valid
// token UNAUTHENTICATED (401); at or above it anything but those ("allowed": the role check
// passed, though the harmless request may still be NOT_FOUND or INVALID_ARGUMENT). The requests
// are chosen to fail or succeed harmlessly right after the role check, so a call that checked
// the role late (after validation or a lookup) fails here too.
//
// Guard: every RPC of every service in proto/pgfleet/v1/*.proto must be in kCalls, or its
// service in kNotOperatorFacing, so a new RPC cannot ship without a decided role.
//
// No PostgreSQL and no agents are needed.

#include <arpa/inet.h>
#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>
#include <google/protobuf/util/json_util.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "controller/store/store.h"
#include "gtest/gtest.h"
#include "pgfleet/v1/agent.pb.h"
#include "pgfleet/v1/fleet.pb.h"
#include "tests/testutil/controller_process.h"
#include "tests/testutil/fixtures.h"
#include "tests/testutil/process.h"
#include "tests/testutil/status_testing.h"
#include "tests/testutil/wait.h"

namespace pgfleet::testutil {
namespace {

namespace pb = google::protobuf;
using controller::Role;

// ---- The table ------------------------------------------------------------------------------

struct CallSpec {
  const char* service;  // Full gRPC service name; nullptr: an HTTP-only route.
  const char* method;   // The RPC, and the HTTP route /api/<method>.
  Role required;        // The least role that may make the call.
  // Proto3 JSON of a request that is harmless for every role allowed to send it: it fails
  // (NOT_FOUND, INVALID_ARGUMENT, FAILED_PRECONDITION) or succeeds without touching anything
  // that matters. "roles-none" is an environment that never exists.
  const char* request_json;
};

constexpr char kFleet[] = "pgfleet.v1.FleetService";
constexpr char kRollout[] = "pgfleet.v1.RolloutService";
constexpr char kMaintenance[] = "pgfleet.v1.MaintenanceService";
constexpr char kTokens[] = "pgfleet.v1.TokenService";
constexpr char kSecrets[] = "pgfleet.v1.SecretsService";

// Reads need viewer; changing the fleet (configs, desired versions, commands, rollouts,
// maintenance windows) needs operator; the release policy between environments (upstream) and
// tokens (TokenService) need admin. `pgfleet-controller token create` also writes the SQLite
// file directly, for the controller's host. Agents' join tokens (role agent) may call nothing.
const CallSpec kCalls[] = {
    // FleetService.
    {kFleet, "PushConfig", Role::kOperator, R"({"environment":""})"},
    {kFleet, "ListConfigs", Role::kViewer, R"({"environment":"roles-none"})"},
    {kFleet, "GetConfig", Role::kViewer, R"({"version":"999999"})"},
    {kFleet, "RenderConfig", Role::kViewer, R"({"agentId":"roles-nobody"})"},
    {kFleet, "SetDesiredConfig", Role::kOperator,
     R"({"environment":"roles-none","version":"999999"})"},
    {kFleet, "ListEnvironments", Role::kViewer, "{}"},
    {kFleet, "ListAgents", Role::kViewer, R"({"environment":"roles-none"})"},
    {kFleet, "GetAgent", Role::kViewer, R"({"agentId":"roles-nobody"})"},
    // No agent is connected there: audited, then nothing to send.
    {kFleet, "SendCommand", Role::kOperator,
     R"({"environment":"roles-none","command":{"reload":{}}})"},
    // An unknown agent: NOT_FOUND after the role check, nothing labelled.
    {kFleet, "SetAgentLabels", Role::kOperator, R"({"agentId":"roles-nobody","set":{"zone":"a"}})"},
    // RolloutService.
    {kRollout, "StartRollout", Role::kOperator, R"({"environment":"roles-none","version":"1"})"},
    {kRollout, "GetRollout", Role::kViewer, R"({"id":"999999"})"},
    {kRollout, "ListRollouts", Role::kViewer, R"({"environment":"roles-none"})"},
    {kRollout, "PauseRollout", Role::kOperator, R"({"id":"999999"})"},
    {kRollout, "ResumeRollout", Role::kOperator, R"({"id":"999999"})"},
    {kRollout, "AbortRollout", Role::kOperator, R"({"id":"999999"})"},
    {kRollout, "Rollback", Role::kOperator, R"({"environment":"roles-none"})"},
    {kRollout, "Promote", Role::kOperator,
     R"({"fromEnvironment":"roles-none","toEnvironment":"roles-none-too"})"},
    // Succeeds (creates roles-upstream-env with no upstream), the same each time.
    {kRollout, "SetUpstream", Role::kAdmin, R"({"environment":"roles-upstream-env"})"},
    // MaintenanceService.
    {kMaintenance, "Pause", Role::kOperator, R"({"environment":"roles-none","database":"db"})"},
    {kMaintenance, "Resume", Role::kOperator, R"({"environment":"roles-none","database":"db"})"},
    {kMaintenance, "Schedule", Role::kOperator, R"({"environment":""})"},
    {kMaintenance, "GetWindow", Role::kViewer, R"({"id":"999999"})"},
    {kMaintenance, "ListWindows", Role::kViewer, R"({"environment":"roles-none"})"},
    {kMaintenance, "CancelWindow", Role::kOperator, R"({"id":"999999"})"},
    // TokenService. An unknown role: refused right after the role check.
    {kTokens, "ListTokens", Role::kAdmin, "{}"},
    {kTokens, "CreateToken", Role::kAdmin, R"({"name":"roles-bad","role":"root"})"},
    {kTokens, "RevokeToken", Role::kAdmin, R"({"id":"999999"})"},
    // SecretsService: admin only to change (each refused as invalid or with nothing to change);
    // the listing shows fingerprints only, so viewers may read it.
    {kSecrets, "SetUserSecret", Role::kAdmin,
     R"({"environment":"roles-none","user":"u","secret":"not-a-verifier"})"},
    {kSecrets, "SetTlsFiles", Role::kAdmin, R"({"environment":"roles-none","side":"client"})"},
    {kSecrets, "BeginRotation", Role::kAdmin,
     R"({"environment":"roles-none","user":"u","newSecret":"not-a-verifier"})"},
    {kSecrets, "EndRotation", Role::kAdmin, R"({"environment":"roles-none","user":"u"})"},
    {kSecrets, "ListSecrets", Role::kViewer, R"({"environment":"roles-none"})"},
    // The dashboard's own HTTP routes.
    {nullptr, "WhoAmI", Role::kViewer, "{}"},
    {nullptr, "AgentMetrics", Role::kViewer, R"({"agentId":"roles-nobody"})"},
};

// Calls already in kCalls whose request raises the role they need: a push carrying secret
// material (issue 18) needs admin although an ini push needs operator. This controller has no
// secrets key, so an admin's is refused right after the role check.
const CallSpec kRaisedRoleCalls[] = {
    {kFleet, "PushConfig", Role::kAdmin,
     R"({"environment":"roles-none","files":[{"key":"auth_file","content":"InUiICJ4Igo="}]})"},
    {kFleet, "PushConfig", Role::kAdmin,
     R"({"environment":"roles-none","removeCredentialOverlaps":["u"]})"},
};

// Every call the role tests make: kCalls, then kRaisedRoleCalls.
std::vector<CallSpec> CallsToMake() {
  std::vector<CallSpec> calls(std::begin(kCalls), std::end(kCalls));
  calls.insert(calls.end(), std::begin(kRaisedRoleCalls), std::end(kRaisedRoleCalls));
  return calls;
}

// Services that operators do not call, so bearer-token roles do not apply.
const std::set<std::string> kNotOperatorFacing = {
    // Agents' stream: with TLS an agent is authenticated by its client certificate, whose CN
    // must be its agent id (tls_test, fleet_e2e_test MutualTlsAgentsSpeakOnlyForThemselves).
    "pgfleet.v1.AgentService",
};

// ---- Who calls ------------------------------------------------------------------------------

enum class Principal { kNoToken, kUnknownToken, kRawToken, kAgent, kViewer, kOperator, kAdmin };
constexpr Principal kPrincipals[] = {
    Principal::kNoToken, Principal::kUnknownToken, Principal::kRawToken, Principal::kAgent,
    Principal::kViewer,  Principal::kOperator,     Principal::kAdmin};

const char* PrincipalName(Principal principal) {
  switch (principal) {
    case Principal::kNoToken:
      return "no token";
    case Principal::kUnknownToken:
      return "unknown token";
    case Principal::kRawToken:
      return "admin token without 'Bearer '";
    case Principal::kAgent:
      return "agent (a join token)";
    case Principal::kViewer:
      return "viewer";
    case Principal::kOperator:
      return "operator";
    case Principal::kAdmin:
      return "admin";
  }
  return "?";
}

// kJoinTokenRefused: PERMISSION_DENIED, because a join token opens agents' streams only.
enum class Expect { kUnauthenticated, kPermissionDenied, kJoinTokenRefused, kAllowed };

const char* ExpectName(Expect expect) {
  switch (expect) {
    case Expect::kUnauthenticated:
      return "UNAUTHENTICATED";
    case Expect::kPermissionDenied:
      return "PERMISSION_DENIED";
    case Expect::kJoinTokenRefused:
      return "PERMISSION_DENIED (join token)";
    case Expect::kAllowed:
      return "allowed";
  }
  return "?";
}

Expect ExpectedFor(const CallSpec& call, Principal principal) {
  Role role = Role::kViewer;
  switch (principal) {
    case Principal::kNoToken:
    case Principal::kUnknownToken:
    case Principal::kRawToken:
      return Expect::kUnauthenticated;
    case Principal::kAgent:
      return Expect::kJoinTokenRefused;
    case Principal::kViewer:
      role = Role::kViewer;
      break;
    case Principal::kOperator:
      role = Role::kOperator;
      break;
    case Principal::kAdmin:
      role = Role::kAdmin;
      break;
  }
  return static_cast<int>(role) < static_cast<int>(call.required) ? Expect::kPermissionDenied
                                                                  : Expect::kAllowed;
}

// ---- HTTP: a minimal HTTP/1.1 client (one request per connection) ---------------------------

struct HttpReply {
  int status = 0;
  std::string body;
};

absl::StatusOr<HttpReply> HttpCall(int port, const std::string& verb, const std::string& target,
                                   const std::string& authorization, const std::string& body) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
  struct Closer {
    int fd;
    ~Closer() { close(fd); }
  } closer{fd};
  timeval timeout{30, 0};  // A controller that never answers fails the test, not hangs it.
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) != 0) {
    return absl::UnavailableError(
        absl::StrCat("connect to port ", port, ": ", std::strerror(errno)));
  }
  std::string request = absl::StrCat(verb, " ", target, " HTTP/1.1\r\nHost: 127.0.0.1:", port,
                                     "\r\nConnection: close\r\n");
  if (!authorization.empty()) absl::StrAppend(&request, "Authorization: ", authorization, "\r\n");
  if (verb == "POST") {
    absl::StrAppend(&request, "Content-Type: application/json\r\nContent-Length: ", body.size(),
                    "\r\n");
  }
  absl::StrAppend(&request, "\r\n", verb == "POST" ? body : "");
  for (size_t sent = 0; sent < request.size();) {
    const ssize_t n = send(fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return absl::UnavailableError(absl::StrCat("send: ", std::strerror(errno)));
    sent += static_cast<size_t>(n);
  }
  std::string reply;
  char buffer[4096];
  while (true) {
    const ssize_t n = recv(fd, buffer, sizeof(buffer), 0);
    if (n == 0) break;
    if (n < 0) return absl::UnavailableError(absl::StrCat("recv: ", std::strerror(errno)));
    reply.append(buffer, static_cast<size_t>(n));
  }
  // "HTTP/1.1 403 Forbidden\r\n...\r\n\r\n{body}"
  HttpReply out;
  const size_t space = reply.find(' ');
  if (!absl::StartsWith(reply, "HTTP/1.") || space == std::string::npos ||
      !absl::SimpleAtoi(reply.substr(space + 1, 3), &out.status)) {
    return absl::DataLossError(absl::StrCat("not an HTTP reply: ", reply.substr(0, 200)));
  }
  if (const size_t end = reply.find("\r\n\r\n"); end != std::string::npos) {
    out.body = reply.substr(end + 4);
  }
  return out;
}

// ---- The fixture: one controller for the whole binary ---------------------------------------

class ApiRolesTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    PGF_ASSERT_OK(dir_->Create("pgfleet-roles"));
    const std::string db = dir_->path() + "/fleet.db";
    // Minted the way an operator does, into the SQLite file the controller then opens.
    tokens_ = new std::map<Principal, std::string>();
    for (const auto& [principal, role] :
         {std::pair{Principal::kAgent, "agent"}, std::pair{Principal::kViewer, "viewer"},
          std::pair{Principal::kOperator, "operator"}, std::pair{Principal::kAdmin, "admin"}}) {
      std::vector<std::string> argv = {PGFLEET_CONTROLLER_BINARY,
                                       "token",
                                       "create",
                                       absl::StrCat("--db=", db),
                                       absl::StrCat("--name=", TokenName(role)),
                                       absl::StrCat("--role=", role)};
      if (principal == Principal::kAgent) argv.push_back("--env=roles-none");
      PGF_ASSERT_OK_AND_ASSIGN(RunResult minted, RunCommand(argv));
      ASSERT_TRUE(minted.Succeeded()) << minted.Describe();
      (*tokens_)[principal] = std::string(absl::StripAsciiWhitespace(minted.stdout_text));
      ASSERT_FALSE((*tokens_)[principal].empty()) << minted.Describe();
    }

    ControllerOptions options;
    options.db_path = db;
    const std::string http_port_file = dir_->path() + "/http-port";
    AddHttpListener(options, http_port_file);
    PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<ControllerProcess> controller,
                             ControllerProcess::Start(options));
    controller_ = controller.release();
    PGF_ASSERT_OK_AND_ASSIGN(http_port_, AwaitHttpPort(http_port_file));
    channel_ = new std::shared_ptr<grpc::Channel>(
        grpc::CreateChannel(controller_->address(), grpc::InsecureChannelCredentials()));
  }

  static void TearDownTestSuite() {
    delete channel_;
    channel_ = nullptr;
    delete controller_;  // Stops it.
    controller_ = nullptr;
    delete tokens_;
    tokens_ = nullptr;
    delete dir_;
    dir_ = nullptr;
  }

  void SetUp() override {
    ASSERT_NE(controller_, nullptr) << "the controller did not start";
    ASSERT_GT(http_port_, 0);
  }

  static std::string TokenName(const std::string& role) { return absl::StrCat("roles-", role); }

  // The authorization header (HTTP) or metadata (gRPC) value; empty: none sent.
  static std::string Authorization(Principal principal) {
    switch (principal) {
      case Principal::kNoToken:
        return "";
      case Principal::kUnknownToken:
        return "Bearer pgf_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
      case Principal::kRawToken:
        return tokens_->at(Principal::kAdmin);
      case Principal::kAgent:
      case Principal::kViewer:
      case Principal::kOperator:
      case Principal::kAdmin:
        return absl::StrCat("Bearer ", tokens_->at(principal));
    }
    return "";
  }

  // One unary call by its full name, the request as serialized bytes.
  static grpc::Status CallGrpc(const std::string& full_method, const std::string& request_bytes,
                               const std::string& authorization) {
    grpc::GenericStub stub(*channel_);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    if (!authorization.empty()) context.AddMetadata("authorization", authorization);
    grpc::Slice slice(request_bytes);
    grpc::ByteBuffer request(&slice, 1);
    grpc::ByteBuffer response;
    grpc::Status status;
    absl::Notification done;
    stub.UnaryCall(&context, full_method, grpc::StubOptions(), &request, &response,
                   [&](grpc::Status finished) {
                     status = std::move(finished);
                     done.Notify();
                   });
    done.WaitForNotification();
    return status;
  }

  // Nothing a viewer (or an agent's join token) sent changed anything: no audit entry names
  // their tokens.
  static void ExpectViewerChangedNothing() {
    PGF_ASSERT_OK_AND_ASSIGN(std::unique_ptr<controller::Store> store,
                             controller::OpenSqliteStore(controller_->db_path()));
    PGF_ASSERT_OK_AND_ASSIGN(std::vector<controller::AuditEntry> audit, store->ListAudit(100000));
    ASSERT_FALSE(audit.empty());  // The token creations at least.
    for (const controller::AuditEntry& entry : audit) {
      EXPECT_NE(entry.actor, TokenName("viewer"))
          << "the viewer did " << entry.action << " on " << entry.target;
      EXPECT_NE(entry.actor, TokenName("agent"))
          << "the join token did " << entry.action << " on " << entry.target;
    }
  }

  static TempDir* dir_;
  static std::map<Principal, std::string>* tokens_;
  static ControllerProcess* controller_;
  static std::shared_ptr<grpc::Channel>* channel_;
  static int http_port_;
};

TempDir* ApiRolesTest::dir_ = nullptr;
std::map<Principal, std::string>* ApiRolesTest::tokens_ = nullptr;
ControllerProcess* ApiRolesTest::controller_ = nullptr;
std::shared_ptr<grpc::Channel>* ApiRolesTest::channel_ = nullptr;
int ApiRolesTest::http_port_ = 0;

// ---- The guard: the table covers every RPC --------------------------------------------------

// Every service of every proto/pgfleet/v1/*.proto, as compiled into this binary.
std::vector<const pb::ServiceDescriptor*> AllServices() {
  std::vector<const pb::ServiceDescriptor*> services;
  const std::filesystem::path dir = std::filesystem::path(PGFLEET_SOURCE_DIR) / "proto/pgfleet/v1";
  // Linked in, so the generated pool knows them by name.
  (void)pgfleet::v1::PushConfigRequest::descriptor();
  (void)pgfleet::v1::AgentHello::descriptor();
  for (const std::filesystem::directory_entry& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() != ".proto") continue;
    const std::string name = absl::StrCat("pgfleet/v1/", entry.path().filename().string());
    const pb::FileDescriptor* file = pb::DescriptorPool::generated_pool()->FindFileByName(name);
    EXPECT_NE(file, nullptr) << name << " is not compiled into the tests (proto/CMakeLists.txt)";
    if (file == nullptr) continue;
    for (int i = 0; i < file->service_count(); ++i) services.push_back(file->service(i));
  }
  return services;
}

TEST(ApiRolesTableTest, EveryRpcOfEveryServiceHasARequiredRole) {
  std::set<std::string> in_table;
  std::set<std::string> route_names;
  for (const CallSpec& call : kCalls) {
    // The HTTP API is flat (/api/<Method>): a name may be used once across all services.
    EXPECT_TRUE(route_names.insert(call.method).second) << call.method << " is in kCalls twice";
    if (call.service != nullptr) in_table.insert(absl::StrCat(call.service, "/", call.method));
  }
  std::vector<const pb::ServiceDescriptor*> services = AllServices();
  ASSERT_GE(services.size(), 4u);  // AgentService, FleetService, RolloutService, Maintenance...
  std::set<std::string> in_protos;
  for (const pb::ServiceDescriptor* service : services) {
    const bool exempt = kNotOperatorFacing.count(service->full_name()) > 0;
    for (int i = 0; i < service->method_count(); ++i) {
      const pb::MethodDescriptor* method = service->method(i);
      const std::string name = absl::StrCat(service->full_name(), "/", method->name());
      in_protos.insert(name);
      if (exempt) {
        EXPECT_EQ(in_table.count(name), 0u) << name << " is exempt and in kCalls";
        continue;
      }
      EXPECT_EQ(in_table.count(name), 1u)
          << name << " has no entry in kCalls: decide the least role it needs (viewer reads, "
          << "operator changes the fleet, admin security and policy), enforce it with "
          << "RequireRole before anything else, and add it with a harmless request";
      EXPECT_FALSE(method->client_streaming() || method->server_streaming())
          << name << " streams: this test only makes unary calls; extend it";
    }
  }
  for (const std::string& name : in_table) {
    EXPECT_EQ(in_protos.count(name), 1u) << name << " is in kCalls but in no proto service";
  }
}

// ---- gRPC -----------------------------------------------------------------------------------

TEST_F(ApiRolesTest, GrpcChecksTheRoleOfEveryCall) {
  for (const CallSpec& call : CallsToMake()) {
    if (call.service == nullptr) continue;
    const pb::ServiceDescriptor* service =
        pb::DescriptorPool::generated_pool()->FindServiceByName(call.service);
    ASSERT_NE(service, nullptr) << call.service;
    const pb::MethodDescriptor* method = service->FindMethodByName(call.method);
    ASSERT_NE(method, nullptr) << call.service << "/" << call.method;
    std::unique_ptr<pb::Message> request(
        pb::MessageFactory::generated_factory()->GetPrototype(method->input_type())->New());
    ASSERT_TRUE(pb::util::JsonStringToMessage(call.request_json, request.get()).ok())
        << call.method << ": bad request_json " << call.request_json;
    const std::string bytes = request->SerializeAsString();
    const std::string full_method = absl::StrCat("/", call.service, "/", call.method);

    for (Principal principal : kPrincipals) {
      const Expect expect = ExpectedFor(call, principal);
      const grpc::Status status = CallGrpc(full_method, bytes, Authorization(principal));
      SCOPED_TRACE(absl::StrCat(
          full_method, " as ", PrincipalName(principal), ": expected ", ExpectName(expect),
          ", got code ", static_cast<int>(status.error_code()), " ", status.error_message()));
      switch (expect) {
        case Expect::kUnauthenticated:
          EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
          break;
        case Expect::kPermissionDenied:
          EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
          // The refusal names the role that would do.
          EXPECT_TRUE(absl::StrContains(status.error_message(),
                                        absl::StrCat("needs ", RoleName(call.required))));
          break;
        case Expect::kJoinTokenRefused:
          EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
          EXPECT_TRUE(absl::StrContains(status.error_message(), "join token"));
          break;
        case Expect::kAllowed:
          EXPECT_NE(status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
          EXPECT_NE(status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
          // Not served at all, or a crash in the handler, is not "allowed" either.
          EXPECT_NE(status.error_code(), grpc::StatusCode::UNIMPLEMENTED);
          EXPECT_NE(status.error_code(), grpc::StatusCode::INTERNAL);
          EXPECT_NE(status.error_code(), grpc::StatusCode::UNKNOWN);
          EXPECT_NE(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
          break;
      }
    }
  }
  ExpectViewerChangedNothing();
}

// ---- HTTP -----------------------------------------------------------------------------------

// Reads are reachable with GET and POST, changes only with POST.
bool IsRead(const CallSpec& call) { return call.required == Role::kViewer; }

void ExpectHttp(const CallSpec& call, Principal principal, const HttpReply& reply) {
  const Expect expect = ExpectedFor(call, principal);
  SCOPED_TRACE(
      absl::StrCat("expected ", ExpectName(expect), ", got HTTP ", reply.status, " ", reply.body));
  switch (expect) {
    case Expect::kUnauthenticated:
      EXPECT_EQ(reply.status, 401);
      EXPECT_TRUE(absl::StrContains(reply.body, R"("code":"UNAUTHENTICATED")"));
      break;
    case Expect::kPermissionDenied:
      EXPECT_EQ(reply.status, 403);
      EXPECT_TRUE(absl::StrContains(reply.body, R"("code":"PERMISSION_DENIED")"));
      EXPECT_TRUE(absl::StrContains(reply.body, absl::StrCat("needs ", RoleName(call.required))));
      break;
    case Expect::kJoinTokenRefused:
      EXPECT_EQ(reply.status, 403);
      EXPECT_TRUE(absl::StrContains(reply.body, R"("code":"PERMISSION_DENIED")"));
      EXPECT_TRUE(absl::StrContains(reply.body, "join token"));
      break;
    case Expect::kAllowed:
      EXPECT_NE(reply.status, 401);
      EXPECT_NE(reply.status, 403);
      EXPECT_NE(reply.status, 405);
      EXPECT_LT(reply.status, 500);  // Internal errors, 501 (no such thing), 503, 504.
      EXPECT_FALSE(absl::StrContains(reply.body, "no API method"));
      break;
  }
}

TEST_F(ApiRolesTest, HttpChecksTheRoleOfEveryRoute) {
  for (const CallSpec& call : CallsToMake()) {
    const std::string target = absl::StrCat("/api/", call.method);
    for (Principal principal : kPrincipals) {
      SCOPED_TRACE(absl::StrCat("POST ", target, " as ", PrincipalName(principal)));
      PGF_ASSERT_OK_AND_ASSIGN(
          HttpReply reply,
          HttpCall(http_port_, "POST", target, Authorization(principal), call.request_json));
      ExpectHttp(call, principal, reply);
    }
  }
  ExpectViewerChangedNothing();
}

TEST_F(ApiRolesTest, HttpGetReadsAreCheckedAndGetNeverRunsAChange) {
  for (const CallSpec& call : kCalls) {
    const std::string target = absl::StrCat("/api/", call.method);
    for (Principal principal : kPrincipals) {
      SCOPED_TRACE(absl::StrCat("GET ", target, " as ", PrincipalName(principal)));
      // No query string: every field at its default.
      PGF_ASSERT_OK_AND_ASSIGN(HttpReply reply,
                               HttpCall(http_port_, "GET", target, Authorization(principal), ""));
      if (IsRead(call)) {
        ExpectHttp(call, principal, reply);
      } else if (principal == Principal::kNoToken || principal == Principal::kUnknownToken ||
                 principal == Principal::kRawToken) {
        // Without a valid token the HTTP server looks at nothing else: 401 from its event loop.
        EXPECT_EQ(reply.status, 401) << reply.body;
      } else if (principal == Principal::kAgent) {
        // A join token authenticates but opens nothing of the API: refused before the method.
        EXPECT_EQ(reply.status, 403) << reply.body;
      } else {
        // Refused whoever asks: a link or an <img> cannot change the fleet with a browser's
        // credentials.
        EXPECT_EQ(reply.status, 405) << reply.body;
      }
    }
  }
  ExpectViewerChangedNothing();
}

// Sanity of the setup itself: each token authenticates as the role it was minted with, so a
// mix-up of tokens cannot make the matrix pass.
TEST_F(ApiRolesTest, EachTokenIsTheRoleItWasMintedWith) {
  for (const auto& [principal, role] :
       {std::pair{Principal::kViewer, "viewer"}, std::pair{Principal::kOperator, "operator"},
        std::pair{Principal::kAdmin, "admin"}}) {
    PGF_ASSERT_OK_AND_ASSIGN(
        HttpReply reply, HttpCall(http_port_, "GET", "/api/WhoAmI", Authorization(principal), ""));
    EXPECT_EQ(reply.status, 200) << reply.body;
    EXPECT_TRUE(absl::StrContains(reply.body, absl::StrCat(R"("role":")", role, R"(")")))
        << reply.body;
    EXPECT_TRUE(absl::StrContains(reply.body, absl::StrCat(R"("actor":")", TokenName(role))))
        << reply.body;
  }
}

}  // namespace
}  // namespace pgfleet::testutil
