// The one operator API (controller/api/control_api.h) that both wires adapt: every RPC of every
// operator-facing proto service has an entry (a new RPC cannot ship on one wire only, or
// without a decided role), every entry is a real RPC with its types, each entry's role is
// enforced before the method runs, and the wires include neither an engine nor the store.
#include "controller/api/control_api.h"

#include <google/protobuf/descriptor.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "controller/clock.h"
#include "controller/maintenance/orchestrator.h"
#include "controller/registry/agent_registry.h"
#include "controller/rollout/rollout_engine.h"
#include "controller/store/store.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "pgfleet/v1/agent.pb.h"
#include "pgfleet/v1/fleet.pb.h"
#include "tests/testutil/temp_dir.h"

namespace pgfleet::controller {
namespace {

namespace pb = google::protobuf;

// Services whose callers are not operators with bearer tokens.
const std::set<std::string> kNotOperatorFacing = {"pgfleet.v1.AgentService"};

class ControlApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const absl::Status created = temp_dir_.Create("pgfleet_ctlapi");
    ASSERT_TRUE(created.ok()) << created;
    dir_ = temp_dir_.path();
    absl::StatusOr<std::unique_ptr<Store>> store =
        OpenSqliteStore((std::filesystem::path(dir_) / "fleet.db").string());
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(store).value();
    rollouts_ = std::make_unique<RolloutEngine>(*store_, registry_, clock_);
    maintenance_ = std::make_unique<MaintenanceOrchestrator>(*store_, registry_, clock_);
    fleet_ = std::make_unique<FleetApi>(*store_, registry_, clock_);
    fleet_->set_engines(rollouts_.get(), maintenance_.get());
    rollout_api_ = std::make_unique<RolloutApi>(*store_, *rollouts_, registry_, clock_);
    maintenance_api_ = std::make_unique<MaintenanceApi>(*store_, *maintenance_, registry_, clock_);
    tokens_ = std::make_unique<TokenAdmin>(*store_, clock_);
    api_ = std::make_unique<ControlApi>(*store_, clock_, *fleet_, *rollout_api_, *maintenance_api_,
                                        *tokens_);
  }
  void TearDown() override {
    api_.reset();
    tokens_.reset();
    maintenance_api_.reset();
    rollout_api_.reset();
    fleet_.reset();
    maintenance_.reset();
    rollouts_.reset();
    store_.reset();
  }

  // The proto files that declare services.
  static std::vector<const pb::FileDescriptor*> ServiceFiles() {
    return {pgfleet::v1::PushConfigRequest::descriptor()->file(),
            pgfleet::v1::AgentMessage::descriptor()->file()};
  }

  testutil::TempDir temp_dir_;  // Declared first: removed after the store closes.
  std::string dir_;
  SystemClock clock_;
  AgentRegistry registry_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<RolloutEngine> rollouts_;
  std::unique_ptr<MaintenanceOrchestrator> maintenance_;
  std::unique_ptr<FleetApi> fleet_;
  std::unique_ptr<RolloutApi> rollout_api_;
  std::unique_ptr<MaintenanceApi> maintenance_api_;
  std::unique_ptr<TokenAdmin> tokens_;
  std::unique_ptr<ControlApi> api_;
};

TEST_F(ControlApiTest, EveryRpcOfEveryOperatorServiceHasAnApiEntry) {
  int rpcs = 0;
  for (const pb::FileDescriptor* file : ServiceFiles()) {
    for (int s = 0; s < file->service_count(); ++s) {
      const pb::ServiceDescriptor* service = file->service(s);
      if (kNotOperatorFacing.count(service->full_name()) != 0) continue;
      for (int m = 0; m < service->method_count(); ++m) {
        const pb::MethodDescriptor* rpc = service->method(m);
        ++rpcs;
        const ApiMethod* entry = api_->Find(service->full_name(), rpc->name());
        ASSERT_NE(entry, nullptr) << rpc->full_name()
                                  << " has no entry in ControlApi (controller/api/control_api.cc)";
        EXPECT_EQ(entry->request_type, rpc->input_type()) << rpc->full_name();
        EXPECT_EQ(entry->response_type, rpc->output_type()) << rpc->full_name();
      }
    }
  }
  EXPECT_GE(rpcs, 26);
}

TEST_F(ControlApiTest, EveryEntryIsAnRpcAndOneHttpRoute) {
  const pb::DescriptorPool* pool = pb::DescriptorPool::generated_pool();
  std::set<std::string> names;
  for (const ApiMethod& method : api_->methods()) {
    const pb::ServiceDescriptor* service = pool->FindServiceByName(method.service);
    ASSERT_NE(service, nullptr) << method.service;
    EXPECT_NE(service->FindMethodByName(method.name), nullptr)
        << method.service << "/" << method.name;
    // HTTP routes are /api/<name>: a name may be used once across services.
    EXPECT_TRUE(names.insert(method.name).second) << method.name << " is in two services";
    ASSERT_TRUE(method.new_request && method.run) << method.name;
    EXPECT_EQ(method.new_request()->GetDescriptor(), method.request_type) << method.name;
  }
}

TEST_F(ControlApiTest, EveryEntryRefusesRolesBelowItsOwnBeforeRunning) {
  for (const ApiMethod& method : api_->methods()) {
    std::unique_ptr<pb::Message> request = method.new_request();
    for (Role role : {Role::kAgent, Role::kViewer, Role::kOperator, Role::kAdmin}) {
      const Caller caller{"test", role};
      absl::StatusOr<std::unique_ptr<pb::Message>> result = api_->Invoke(caller, method, *request);
      if (static_cast<int>(role) < static_cast<int>(method.role)) {
        EXPECT_EQ(result.status().code(), absl::StatusCode::kPermissionDenied)
            << method.name << " as " << RoleName(role);
      } else {
        EXPECT_NE(result.status().code(), absl::StatusCode::kPermissionDenied)
            << method.name << " as " << RoleName(role) << ": " << result.status();
      }
    }
  }
  // Reads are viewers', and only reads are reachable with GET.
  for (const ApiMethod& method : api_->methods()) {
    if (method.read_only) {
      EXPECT_EQ(method.role, Role::kViewer) << method.name;
    }
  }
}

TEST_F(ControlApiTest, InvokeRefusesARequestOfTheWrongType) {
  const ApiMethod* get = api_->Find("pgfleet.v1.FleetService", "GetAgent");
  ASSERT_NE(get, nullptr);
  pgfleet::v1::PushConfigRequest wrong;
  EXPECT_EQ(api_->Invoke(Caller{"test", Role::kAdmin}, *get, wrong).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(ControlApiTest, CallAuthenticatesFirst) {
  pgfleet::v1::ListEnvironmentsRequest request;
  pgfleet::v1::ListEnvironmentsResponse response;
  EXPECT_EQ(
      api_->Call("Bearer nope", "pgfleet.v1.FleetService", "ListEnvironments", request, &response)
          .code(),
      absl::StatusCode::kUnauthenticated);
}

// The wires are adapters: the engines and the store are reached through controller/api/ only.
TEST(WireLayeringTest, GrpcAndHttpIncludeNeitherAnEngineNorTheStore) {
  int files = 0;
  for (const char* dir : {"controller/grpc", "controller/http"}) {
    for (const auto& entry :
         std::filesystem::directory_iterator(std::filesystem::path(PGFLEET_SOURCE_DIR) / dir)) {
      std::ifstream in(entry.path());
      std::string line;
      ++files;
      while (std::getline(in, line)) {
        if (line.rfind("#include", 0) != 0) continue;
        for (const char* banned :
             {"controller/rollout/", "controller/maintenance/", "controller/store/"}) {
          EXPECT_EQ(line.find(banned), std::string::npos) << entry.path().string() << ": " << line;
        }
      }
    }
  }
  EXPECT_GE(files, 4);
}

}  // namespace
}  // namespace pgfleet::controller
