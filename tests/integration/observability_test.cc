// Observability end to end (issue 23): the controller's /metrics, its gRPC health and
// reflection services, the agents' link health on their own exporter, and the monitoring files
// in packaging/monitoring/ (Prometheus rules and Grafana dashboards), with real processes: a
// PostgreSQL 15 cluster, a pgfleet-controller, pgfleet-agents and fleetctl, and promtool from
// Debian's prometheus package.
//
// Covers: agents connected/total per environment following an agent that stops; a rollout's
// state, phase and wave; request counters by wire, method and code moving after fleetctl (gRPC)
// and HTTP calls; promtool check metrics on both exporters' bodies; /metrics open by default
// and behind a token with --metrics-require-token; grpc.health.v1.Health answering SERVING for
// the server and each service, NOT_FOUND for an unknown one; reflection listing the services;
// the agent's controller_configured, link_up, link_state and restart_pending; promtool check
// rules and test rules on packaging/monitoring/; the dashboards being JSON whose every
// pgfleet_/pgbouncer_ metric name exists in a live /metrics.

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/impl/codegen/sync_stream.h>

#include <filesystem>
#include <fstream>
#include <future>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "common/status_macros.h"
#include "gmock/gmock.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "pgfleet/v1/fleet.pb.h"
#include "tests/testutil/agent_process.h"
#include "tests/testutil/controller_process.h"
#include "tests/testutil/fixtures.h"
#include "tests/testutil/fleet_fixture.h"
#include "tests/testutil/free_port.h"
#include "tests/testutil/http.h"
#include "tests/testutil/json.h"
#include "tests/testutil/process.h"
#include "tests/testutil/status_testing.h"
#include "tests/testutil/wait.h"

namespace pgfleet::testutil {
namespace {

constexpr char kEnv[] = "obs";
constexpr char kOtherEnv[] = "obs-other";

[[maybe_unused]] auto* const kCluster = RegisterSharedPostgres(
    PostgresOptions{}, [](PostgresEnv& pg) -> absl::Status { return CreateAppDatabase(pg); });

const std::string kMonitoringDir = std::string(PGFLEET_SOURCE_DIR) + "/packaging/monitoring";

// The value of one series ("name" or "name{a=\"b\",...}", labels as the exporter orders them),
// or nullopt when the body has no such series.
std::optional<double> SeriesValue(const std::string& body, const std::string& series) {
  for (absl::string_view line : absl::StrSplit(body, '\n')) {
    if (!absl::StartsWith(line, series) || line.size() <= series.size() ||
        line[series.size()] != ' ') {
      continue;
    }
    double value = 0;
    if (absl::SimpleAtod(line.substr(series.size() + 1), &value)) return value;
  }
  return std::nullopt;
}

// Every metric name a body declares (# TYPE lines), with _bucket/_sum/_count for histograms.
std::set<std::string> DeclaredNames(const std::string& body) {
  std::set<std::string> names;
  for (absl::string_view line : absl::StrSplit(body, '\n')) {
    if (!absl::StartsWith(line, "# TYPE ")) continue;
    std::vector<std::string> parts = absl::StrSplit(line, ' ');
    if (parts.size() < 4) continue;
    names.insert(parts[2]);
    if (parts[3] == "histogram" || parts[3] == "summary") {
      for (const char* suffix : {"_bucket", "_sum", "_count"}) names.insert(parts[2] + suffix);
    }
  }
  return names;
}

std::string ReadWhole(const std::string& path) {
  std::ifstream in(path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// promtool is Debian's prometheus package, which scripts/install-deps.sh installs.
bool HavePromtool() { return std::filesystem::exists("/usr/bin/promtool"); }

// `promtool check metrics` on `body` (it reads stdin): its result.
absl::StatusOr<RunResult> PromtoolCheckMetrics(const std::string& dir, const std::string& body,
                                               const std::string& name) {
  const std::string path = absl::StrCat(dir, "/", name, ".prom");
  PGF_RETURN_IF_ERROR(WriteFile(path, body));
  return RunCommand({"/bin/sh", "-c", absl::StrCat("/usr/bin/promtool check metrics < ", path)});
}

// A ByteBuffer of raw bytes, and back.
grpc::ByteBuffer ToByteBuffer(const std::string& bytes) {
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}
std::string FromByteBuffer(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  std::string out;
  if (!buffer.Dump(&slices).ok()) return out;
  for (const grpc::Slice& slice : slices) {
    out.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  return out;
}

// grpc.health.v1.Health/Check for `service`, the request encoded by hand (Debian ships no
// health.proto): HealthCheckRequest{service = 1}. The reply's bytes, or the call's error.
absl::StatusOr<std::string> HealthCheck(const std::string& address, const std::string& service) {
  grpc::GenericStub stub(grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  std::string request;
  if (!service.empty()) {
    request.push_back('\x0A');  // Field 1, length-delimited.
    request.push_back(static_cast<char>(service.size()));
    request += service;
  }
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  const grpc::ByteBuffer request_buffer = ToByteBuffer(request);
  grpc::ByteBuffer response;
  std::promise<grpc::Status> done;
  stub.UnaryCall(&context, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request_buffer,
                 &response, [&done](grpc::Status status) { done.set_value(status); });
  grpc::Status status = done.get_future().get();
  if (!status.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
  }
  return FromByteBuffer(response);
}

class ObservabilityTest : public FleetFixture {
 protected:
  ObservabilityTest() : FleetFixture("pgfleet-obs") {}

  void SetUp() override {
    ASSERT_NE(g_pg, nullptr) << "the shared PostgreSQL cluster did not start";
    ASSERT_NO_FATAL_FAILURE(FleetFixture::SetUp());
  }

  // Another controller's HTTP port replaces http_port_ (the first stays controller_).
  void StartControllerWithHttp(std::vector<std::string> extra_args = {}) {
    ControllerOptions options;
    const std::string port_file = absl::StrCat(dir_, "/http-", controllers_.size(), ".port");
    AddHttpListener(options, port_file);
    for (std::string& arg : extra_args) options.extra_args.push_back(std::move(arg));
    ASSERT_NO_FATAL_FAILURE(StartController(options));
    PGF_ASSERT_OK_AND_ASSIGN(http_port_, AwaitHttpPort(port_file));
  }

  // An agent of `env` linked to the controller, with its Prometheus exporter on a free port.
  void StartAgent(const std::string& id, const std::string& env) {
    AgentOptions options = AppAgentOptions({{"auth_type", "scram-sha-256"},
                                            {"pool_mode", "transaction"},
                                            {"default_pool_size", "5"},
                                            {"admin_users", kAdminUser}});
    options.extra_args = LinkArgs(id, env, controller_->address());
    options.extra_args.push_back("--local-listeners");
    options.extra_args.push_back(absl::StrCat("--allow-path=", dir_));
    PGF_ASSERT_OK_AND_ASSIGN(int metrics_port, PickFreePort());
    options.extra_args.push_back(absl::StrCat("--metrics-listen=127.0.0.1:", metrics_port));
    agent_metrics_ports_[id] = metrics_port;
    StartLinkedAgent(id, options);
  }

  absl::StatusOr<std::string> ControllerMetrics(const std::vector<std::string>& headers = {}) {
    PGF_ASSIGN_OR_RETURN(HttpResponse response, HttpGet(http_port_, "/metrics", headers));
    if (response.status != 200) {
      return absl::InternalError(absl::StrCat("GET /metrics: ", response.raw));
    }
    if (!absl::StrContains(response.raw, "text/plain; version=0.0.4")) {
      return absl::InternalError(
          absl::StrCat("GET /metrics: not the 0.0.4 text format: ", response.raw.substr(0, 300)));
    }
    return response.body;
  }

  absl::StatusOr<std::string> AgentMetrics(const std::string& id) {
    PGF_ASSIGN_OR_RETURN(HttpResponse response,
                         HttpGet(agent_metrics_ports_.at(id), "/metrics", {}));
    if (response.status != 200) return absl::InternalError(response.raw);
    return response.body;
  }

  // Waits until `series` of the controller's /metrics has `value`.
  absl::Status AwaitControllerSeries(const std::string& series, double value) {
    return PollUntil(
        [&](std::string* note) -> absl::StatusOr<bool> {
          absl::StatusOr<std::string> body = ControllerMetrics();
          if (!body.ok()) return body.status();
          std::optional<double> seen = SeriesValue(*body, series);
          *note = seen.has_value() ? absl::StrCat(series, " = ", *seen) : series + " absent";
          return seen == value;
        },
        absl::Seconds(60), absl::StrCat(series, " == ", value), absl::Milliseconds(100));
  }

  absl::Status AwaitAgentSeries(const std::string& id, const std::string& series, double value) {
    return PollUntil(
        [&](std::string* note) -> absl::StatusOr<bool> {
          absl::StatusOr<std::string> body = AgentMetrics(id);
          if (!body.ok()) return body.status();
          std::optional<double> seen = SeriesValue(*body, series);
          *note = seen.has_value() ? absl::StrCat(series, " = ", *seen) : series + " absent";
          return seen == value;
        },
        absl::Seconds(60), absl::StrCat(id, ": ", series, " == ", value), absl::Milliseconds(100));
  }

  // Pushes a config for `env` (extra [pgbouncer] lines in `extra`) and returns its version.
  absl::StatusOr<uint64_t> Push(const std::string& env, const std::string& extra) {
    const std::string path = absl::StrCat(dir_, "/push-", ++pushes_, ".ini");
    PGF_RETURN_IF_ERROR(WriteFile(
        path, absl::StrCat("[databases]\n", kAppDb, " = host=127.0.0.1 port=", g_pg->port(),
                           " dbname=", kAppDb,
                           "\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = 6432\n"
                           "unix_socket_dir =\nauth_type = scram-sha-256\nauth_file = ",
                           users_path_, "\nadmin_users = ", kAdminUser,
                           "\npool_mode = transaction\n", extra)));
    FleetctlResult result =
        Ctl({"config", "push", "--env", env, "-f", path, "-m", "obs", "--output", "json"});
    if (result.exit_code != 0) return absl::InternalError(result.Describe());
    PGF_ASSIGN_OR_RETURN(pgfleet::v1::ConfigVersion version,
                         ParseJson<pgfleet::v1::ConfigVersion>(result.stdout_text));
    return version.version();
  }

  int http_port_ = 0;
  int pushes_ = 0;
  std::map<std::string, int> agent_metrics_ports_;
};

TEST_F(ObservabilityTest, ControllerMetricsFollowTheFleetAndPassPromtool) {
  ASSERT_NO_FATAL_FAILURE(StartControllerWithHttp());
  ASSERT_NO_FATAL_FAILURE(StartAgent("obs-1", kEnv));
  ASSERT_NO_FATAL_FAILURE(StartAgent("obs-2", kEnv));
  ASSERT_NO_FATAL_FAILURE(StartAgent("other-1", kOtherEnv));
  const std::string env_label = absl::StrCat("{environment=\"", kEnv, "\"}");
  PGF_ASSERT_OK(AwaitControllerSeries("pgfleet_controller_agents_connected" + env_label, 2));
  PGF_ASSERT_OK(AwaitControllerSeries(
      absl::StrCat("pgfleet_controller_agents_connected{environment=\"", kOtherEnv, "\"}"), 1));
  PGF_ASSERT_OK(AwaitControllerSeries("pgfleet_controller_agent_streams", 3));

  // A version applied everywhere: desired and applied agree, nothing drifted.
  PGF_ASSERT_OK_AND_ASSIGN(uint64_t v1, Push(kEnv, "default_pool_size = 6\n"));
  FleetctlResult applied =
      Ctl({"config", "apply", "--env", kEnv, "--version", absl::StrCat("v", v1), "--wait"});
  ASSERT_EQ(applied.exit_code, 0) << applied.Describe();
  PGF_ASSERT_OK(
      AwaitControllerSeries(absl::StrCat("pgfleet_controller_config_applied_agents{environment=\"",
                                         kEnv, "\",version=\"", v1, "\"}"),
                            2));
  PGF_ASSERT_OK_AND_ASSIGN(std::string body, ControllerMetrics());
  EXPECT_EQ(SeriesValue(body, "pgfleet_controller_config_desired_version" + env_label),
            static_cast<double>(v1));
  EXPECT_EQ(SeriesValue(body, "pgfleet_controller_agents_drifted" + env_label), 0);
  EXPECT_EQ(SeriesValue(body, "pgfleet_controller_agents_converged" + env_label), 2);
  EXPECT_EQ(SeriesValue(body, "pgfleet_controller_agents" + env_label), 2);
  EXPECT_EQ(SeriesValue(body, "pgfleet_controller_ready"), 1);
  EXPECT_EQ(SeriesValue(body,
                        "pgfleet_controller_maintenance_windows{environment=\"obs\","
                        "state=\"paused\"}"),
            0);
  // The store wrote (the push, the apply): its histogram counted them.
  ASSERT_TRUE(SeriesValue(body, "pgfleet_controller_store_write_duration_seconds_count"));
  EXPECT_GT(*SeriesValue(body, "pgfleet_controller_store_write_duration_seconds_count"), 0);
  if (HavePromtool()) {
    PGF_ASSERT_OK_AND_ASSIGN(RunResult check, PromtoolCheckMetrics(dir_, body, "controller"));
    EXPECT_TRUE(check.Succeeded()) << check.Describe() << "\n" << body;
  }

  // One agent stops: connected drops, the total does not.
  PGF_ASSERT_OK(agent("obs-2").Stop().status());
  PGF_ASSERT_OK(AwaitControllerSeries("pgfleet_controller_agents_connected" + env_label, 1));
  PGF_ASSERT_OK_AND_ASSIGN(body, ControllerMetrics());
  EXPECT_EQ(SeriesValue(body, "pgfleet_controller_agents" + env_label), 2);
  EXPECT_EQ(SeriesValue(body, "pgfleet_controller_agent_streams"), 2);
}

TEST_F(ObservabilityTest, RolloutShowsItsStatePhaseAndWave) {
  ASSERT_NO_FATAL_FAILURE(StartControllerWithHttp());
  ASSERT_NO_FATAL_FAILURE(StartAgent("obs-1", kEnv));
  ASSERT_NO_FATAL_FAILURE(StartAgent("obs-2", kEnv));
  PGF_ASSERT_OK_AND_ASSIGN(uint64_t base, Push(kEnv, "default_pool_size = 6\n"));
  FleetctlResult applied =
      Ctl({"config", "apply", "--env", kEnv, "--version", absl::StrCat("v", base), "--wait"});
  ASSERT_EQ(applied.exit_code, 0) << applied.Describe();
  PGF_ASSERT_OK_AND_ASSIGN(uint64_t next, Push(kEnv, "default_pool_size = 7\n"));
  // A canary wave, then a bake long enough to be seen: the rollout sits in wave 0, baking.
  FleetctlResult start = Ctl({"rollout", "start", "--env", kEnv, "--version",
                              absl::StrCat("v", next), "--waves", "1,100%", "--bake", "10m"});
  ASSERT_EQ(start.exit_code, 0) << start.Describe();
  const std::string env = absl::StrCat("environment=\"", kEnv, "\"");
  PGF_ASSERT_OK(AwaitControllerSeries(
      absl::StrCat("pgfleet_controller_rollout_phase{", env, ",phase=\"baking\"}"), 1));
  PGF_ASSERT_OK_AND_ASSIGN(std::string body, ControllerMetrics());
  EXPECT_EQ(SeriesValue(body, absl::StrCat("pgfleet_controller_rollout_state{", env,
                                           ",state=\"running\"}")),
            1);
  EXPECT_EQ(SeriesValue(
                body, absl::StrCat("pgfleet_controller_rollout_state{", env, ",state=\"failed\"}")),
            0);
  EXPECT_EQ(SeriesValue(body, absl::StrCat("pgfleet_controller_rollout_phase{", env,
                                           ",phase=\"applying\"}")),
            0);
  EXPECT_EQ(SeriesValue(body, absl::StrCat("pgfleet_controller_rollout_wave{", env, "}")), 0);
  EXPECT_EQ(SeriesValue(body, absl::StrCat("pgfleet_controller_rollout_waves{", env, "}")), 2);
  // Mid-rollout the canary runs `next`, the other agent still `base`.
  EXPECT_EQ(SeriesValue(body, absl::StrCat("pgfleet_controller_config_applied_agents{", env,
                                           ",version=\"", next, "\"}")),
            1);
  EXPECT_EQ(SeriesValue(body, absl::StrCat("pgfleet_controller_config_applied_agents{", env,
                                           ",version=\"", base, "\"}")),
            1);

  PGF_ASSERT_OK_AND_ASSIGN(std::string running, ControllerMetrics());
  std::optional<double> rollout_id =
      SeriesValue(running, absl::StrCat("pgfleet_controller_rollout_id{", env, "}"));
  ASSERT_TRUE(rollout_id.has_value()) << running;
  FleetctlResult abort =
      Ctl({"rollout", "abort", absl::StrCat(static_cast<uint64_t>(*rollout_id))});
  ASSERT_EQ(abort.exit_code, 0) << abort.Describe();
  PGF_ASSERT_OK(AwaitControllerSeries(
      absl::StrCat("pgfleet_controller_rollout_state{", env, ",state=\"aborted\"}"), 1));
  PGF_ASSERT_OK(AwaitControllerSeries(
      absl::StrCat("pgfleet_controller_rollout_phase{", env, ",phase=\"done\"}"), 1));
}

TEST_F(ObservabilityTest, RequestCountersMoveOnBothWires) {
  ASSERT_NO_FATAL_FAILURE(StartControllerWithHttp());
  const std::string grpc_ok =
      "pgfleet_controller_api_requests_total{wire=\"grpc\",method=\"ListAgents\",code=\"OK\"}";
  const std::string http_ok =
      "pgfleet_controller_api_requests_total{wire=\"http\",method=\"ListAgents\",code=\"OK\"}";
  const std::string grpc_not_found =
      "pgfleet_controller_api_requests_total{wire=\"grpc\",method=\"GetAgent\","
      "code=\"NOT_FOUND\"}";
  PGF_ASSERT_OK_AND_ASSIGN(std::string before, ControllerMetrics());
  EXPECT_EQ(SeriesValue(before, grpc_ok), std::nullopt);

  for (int i = 0; i < 3; ++i) {
    FleetctlResult list = Ctl({"agents", "list"});
    ASSERT_EQ(list.exit_code, 0) << list.Describe();
  }
  FleetctlResult missing = Ctl({"agents", "show", "no-such-agent"});
  EXPECT_NE(missing.exit_code, 0) << missing.Describe();
  PGF_ASSERT_OK_AND_ASSIGN(
      HttpResponse http_list,
      HttpGet(http_port_, "/api/ListAgents", {absl::StrCat("Authorization: Bearer ", token_)}));
  ASSERT_EQ(http_list.status, 200) << http_list.raw;

  PGF_ASSERT_OK_AND_ASSIGN(std::string after, ControllerMetrics());
  EXPECT_EQ(SeriesValue(after, grpc_ok), 3) << after;
  EXPECT_EQ(SeriesValue(after, http_ok), 1) << after;
  EXPECT_EQ(SeriesValue(after, grpc_not_found), 1) << after;
  // The histogram of the same calls counts them too, and its +Inf bucket holds all of them.
  EXPECT_EQ(SeriesValue(after,
                        "pgfleet_controller_api_request_duration_seconds_count{wire=\"grpc\","
                        "method=\"ListAgents\",code=\"OK\"}"),
            3);
  EXPECT_EQ(SeriesValue(after,
                        "pgfleet_controller_api_request_duration_seconds_bucket{wire=\"grpc\","
                        "method=\"ListAgents\",code=\"OK\",le=\"+Inf\"}"),
            3);
  if (HavePromtool()) {
    PGF_ASSERT_OK_AND_ASSIGN(RunResult check, PromtoolCheckMetrics(dir_, after, "requests"));
    EXPECT_TRUE(check.Succeeded()) << check.Describe() << "\n" << after;
  }
}

TEST_F(ObservabilityTest, MetricsTokenIsOptional) {
  ASSERT_NO_FATAL_FAILURE(StartControllerWithHttp());
  PGF_ASSERT_OK_AND_ASSIGN(HttpResponse open, HttpGet(http_port_, "/metrics", {}));
  EXPECT_EQ(open.status, 200) << open.raw;

  ASSERT_NO_FATAL_FAILURE(StartControllerWithHttp({"--metrics-require-token"}));
  PGF_ASSERT_OK_AND_ASSIGN(HttpResponse refused, HttpGet(http_port_, "/metrics", {}));
  EXPECT_EQ(refused.status, 401) << refused.raw;
  PGF_ASSERT_OK_AND_ASSIGN(HttpResponse wrong,
                           HttpGet(http_port_, "/metrics", {"Authorization: Bearer not-a-token"}));
  EXPECT_EQ(wrong.status, 401) << wrong.raw;
  PGF_ASSERT_OK_AND_ASSIGN(
      HttpResponse allowed,
      HttpGet(http_port_, "/metrics", {absl::StrCat("Authorization: Bearer ", token_)}));
  EXPECT_EQ(allowed.status, 200) << allowed.raw;
  EXPECT_THAT(allowed.body, ::testing::HasSubstr("# TYPE pgfleet_controller_ready gauge"));
}

TEST_F(ObservabilityTest, GrpcHealthAndReflectionAnswer) {
  ASSERT_NO_FATAL_FAILURE(StartControllerWithHttp());
  const std::string address = controller_->address();
  // HealthCheckResponse{status = SERVING (1)}: field 1, varint 1.
  const std::string serving("\x08\x01", 2);
  for (const std::string service :
       {"", "pgfleet.v1.FleetService", "pgfleet.v1.AgentService", "pgfleet.v1.RolloutService"}) {
    PGF_ASSERT_OK_AND_ASSIGN(std::string reply, HealthCheck(address, service));
    EXPECT_EQ(reply, serving) << "service '" << service << "'";
  }
  absl::StatusOr<std::string> unknown = HealthCheck(address, "pgfleet.v1.NoSuchService");
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kNotFound) << unknown.status();

  // ServerReflectionInfo with list_services (field 7): the reply names our services.
  auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  const grpc::internal::RpcMethod method(
      "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
      grpc::internal::RpcMethod::BIDI_STREAMING);
  std::unique_ptr<grpc::ClientReaderWriter<grpc::ByteBuffer, grpc::ByteBuffer>> stream(
      grpc::internal::ClientReaderWriterFactory<grpc::ByteBuffer, grpc::ByteBuffer>::Create(
          channel.get(), method, &context));
  ASSERT_TRUE(stream->Write(ToByteBuffer(std::string("\x3A\x01*", 3))));
  ASSERT_TRUE(stream->WritesDone());
  grpc::ByteBuffer reply;
  ASSERT_TRUE(stream->Read(&reply));
  const std::string listed = FromByteBuffer(reply);
  for (const char* service : {"pgfleet.v1.FleetService", "pgfleet.v1.AgentService",
                              "pgfleet.v1.RolloutService", "grpc.health.v1.Health"}) {
    EXPECT_THAT(listed, ::testing::HasSubstr(service));
  }
  while (stream->Read(&reply)) {
  }
  grpc::Status finished = stream->Finish();
  EXPECT_TRUE(finished.ok()) << finished.error_message();
}

TEST_F(ObservabilityTest, AgentExporterShowsItsLinkAndPendingRestart) {
  ASSERT_NO_FATAL_FAILURE(StartControllerWithHttp());
  ASSERT_NO_FATAL_FAILURE(StartAgent("obs-1", kEnv));
  PGF_ASSERT_OK(AwaitAgentSeries("obs-1", "pgfleet_agent_controller_link_up", 1));
  PGF_ASSERT_OK_AND_ASSIGN(std::string body, AgentMetrics("obs-1"));
  EXPECT_EQ(SeriesValue(body, "pgfleet_agent_controller_configured"), 1);
  EXPECT_EQ(SeriesValue(body, "pgfleet_agent_controller_link_state{state=\"connected\"}"), 1);
  EXPECT_EQ(SeriesValue(body, "pgfleet_agent_controller_link_state{state=\"backoff\"}"), 0);
  EXPECT_EQ(SeriesValue(body, "pgfleet_agent_restart_pending"), 0);

  // A pidfile only takes effect at the next start: applied, and shown as a pending restart.
  PGF_ASSERT_OK_AND_ASSIGN(
      uint64_t version,
      Push(kEnv, absl::StrCat("default_pool_size = 6\npidfile = ", dir_, "/obs-1.pid\n")));
  FleetctlResult applied =
      Ctl({"config", "apply", "--env", kEnv, "--version", absl::StrCat("v", version), "--wait"});
  ASSERT_EQ(applied.exit_code, 0) << applied.Describe();
  PGF_ASSERT_OK(AwaitAgentSeries("obs-1", "pgfleet_config_version", static_cast<double>(version)));
  PGF_ASSERT_OK(AwaitAgentSeries("obs-1", "pgfleet_agent_restart_pending", 1));
  PGF_ASSERT_OK(AwaitControllerSeries(
      absl::StrCat("pgfleet_controller_agents_restart_pending{environment=\"", kEnv, "\"}"), 1));
  PGF_ASSERT_OK_AND_ASSIGN(body, AgentMetrics("obs-1"));
  if (HavePromtool()) {
    PGF_ASSERT_OK_AND_ASSIGN(RunResult check, PromtoolCheckMetrics(dir_, body, "agent"));
    EXPECT_TRUE(check.Succeeded()) << check.Describe() << "\n" << body;
  }

  // The controller goes away: the link is down and backing off.
  PGF_ASSERT_OK(controller_->Stop().status());
  PGF_ASSERT_OK(AwaitAgentSeries("obs-1", "pgfleet_agent_controller_link_up", 0));
  PGF_ASSERT_OK_AND_ASSIGN(body, AgentMetrics("obs-1"));
  EXPECT_EQ(SeriesValue(body, "pgfleet_agent_controller_link_state{state=\"connected\"}"), 0);
  EXPECT_EQ(SeriesValue(body, "pgfleet_agent_controller_configured"), 1);
}

// packaging/monitoring/: the rules load and their unit tests pass; the dashboards are JSON and
// query only metrics our exporters declare.
TEST_F(ObservabilityTest, MonitoringFilesMatchTheExporters) {
  if (!HavePromtool()) {
    if (getenv("CI") != nullptr) FAIL() << "promtool is missing: run scripts/install-deps.sh";
    GTEST_SKIP() << "promtool (Debian package prometheus) is not installed: "
                    "scripts/install-deps.sh installs it";
  }
  const std::string rules = kMonitoringDir + "/pgfleet-alerts.yml";
  PGF_ASSERT_OK_AND_ASSIGN(RunResult check,
                           RunCommand({"/usr/bin/promtool", "check", "rules", rules}));
  EXPECT_TRUE(check.Succeeded()) << check.Describe();
  RunOptions in_dir;
  in_dir.working_dir = kMonitoringDir;
  PGF_ASSERT_OK_AND_ASSIGN(
      RunResult test,
      RunCommand({"/usr/bin/promtool", "test", "rules", "pgfleet-alerts.test.yml"}, in_dir));
  EXPECT_TRUE(test.Succeeded()) << test.Describe();

  // The names a live controller and a live linked agent declare.
  ASSERT_NO_FATAL_FAILURE(StartControllerWithHttp());
  ASSERT_NO_FATAL_FAILURE(StartAgent("obs-1", kEnv));
  PGF_ASSERT_OK(AwaitAgentSeries("obs-1", "pgfleet_agent_controller_link_up", 1));
  // A call on each wire, so the request families have samples as well as declarations.
  ASSERT_EQ(Ctl({"agents", "list"}).exit_code, 0);
  PGF_ASSERT_OK_AND_ASSIGN(std::string controller_body, ControllerMetrics());
  PGF_ASSERT_OK_AND_ASSIGN(std::string agent_body, AgentMetrics("obs-1"));
  std::set<std::string> declared = DeclaredNames(controller_body);
  declared.merge(DeclaredNames(agent_body));
  ASSERT_TRUE(declared.count("pgfleet_controller_agents_connected"));
  ASSERT_TRUE(declared.count("pgbouncer_pools_client_waiting_connections"));

  const std::regex metric_name("\\b(pgfleet|pgbouncer)_[a-zA-Z0-9_]*");
  auto unknown_names = [&](const std::string& text) {
    std::set<std::string> unknown;
    for (std::sregex_iterator it(text.begin(), text.end(), metric_name), end; it != end; ++it) {
      const std::string name = it->str();
      // Dashboard uids and titles are named pgfleet-*, never pgfleet_*: only metric names here.
      if (!declared.count(name)) unknown.insert(name);
    }
    return unknown;
  };
  int dashboards = 0;
  for (const auto& entry : std::filesystem::directory_iterator(kMonitoringDir)) {
    if (entry.path().extension() != ".json") continue;
    ++dashboards;
    const std::string text = ReadWhole(entry.path());
    google::protobuf::Value parsed;
    auto status = google::protobuf::util::JsonStringToMessage(text, &parsed);
    EXPECT_TRUE(status.ok()) << entry.path() << " is not JSON: " << status.ToString();
    // Only the queries: the panels' "expr" strings and the variables' "query"/"definition".
    std::string exprs;
    const std::regex expr("\"(?:expr|query|definition)\"\\s*:\\s*\"((?:[^\"\\\\]|\\\\.)*)\"");
    for (std::sregex_iterator it(text.begin(), text.end(), expr), end; it != end; ++it) {
      absl::StrAppend(&exprs, (*it)[1].str(), "\n");
    }
    EXPECT_FALSE(exprs.empty()) << entry.path() << " has no queries";
    const std::set<std::string> unknown = unknown_names(exprs);
    EXPECT_TRUE(unknown.empty()) << entry.path() << " queries metrics no exporter declares: "
                                 << absl::StrJoin(unknown, ", ");
  }
  EXPECT_EQ(dashboards, 2);
  const std::set<std::string> unknown_in_rules = unknown_names(ReadWhole(rules));
  EXPECT_TRUE(unknown_in_rules.empty()) << "the alert rules use metrics no exporter declares: "
                                        << absl::StrJoin(unknown_in_rules, ", ");
}

}  // namespace
}  // namespace pgfleet::testutil
