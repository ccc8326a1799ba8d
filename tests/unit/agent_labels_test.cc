// Agents' --labels follow kubectl's label rules (issue 18): an agent reporting an invalid label
// key or value is refused at registration with an error naming the label, rather than joined
// without it (which would let selectors meant to exclude it pick it).
#include <memory>
#include <string>

#include "controller/api/fleet_api.h"
#include "controller/registry/agent_registry.h"
#include "controller/store/store.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testutil/status_testing.h"
#include "tests/testutil/temp_dir.h"

namespace pgfleet::controller {
namespace {

using ::testing::HasSubstr;

class AgentLabelsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PGF_ASSERT_OK(dir_.Create("pgfleet_labels"));
    PGF_ASSERT_OK_AND_ASSIGN(store_, OpenSqliteStore(dir_.path() + "/fleet.db"));
    api_ = std::make_unique<FleetApi>(*store_, registry_, clock_);
  }
  void TearDown() override {
    api_.reset();
    store_.reset();
  }
  absl::Status Hello(const std::string& agent_id, const std::string& key,
                     const std::string& value) {
    pgfleet::v1::AgentHello hello;
    hello.set_agent_id(agent_id);
    hello.set_environment("prod");
    (*hello.mutable_labels())["zone"] = "a";
    (*hello.mutable_labels())[key] = value;
    return api_->OnAgentHello(hello);
  }

  testutil::TempDir dir_;
  AgentRegistry registry_;
  SystemClock clock_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<FleetApi> api_;
};

TEST_F(AgentLabelsTest, InvalidLabelsAreRefusedNamingTheLabel) {
  struct Case {
    std::string key, value, rule;
  };
  for (const Case& bad :
       {Case{"size_", "large", "start and end with a letter or digit"},
        Case{"size", "very large", "may hold only"}, Case{"a/b/c", "x", "more than one '/'"},
        Case{"size", std::string(64, 'x'), "longer than 63"}}) {
    absl::Status refused = Hello("a1", bad.key, bad.value);
    EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument) << bad.key << "=" << bad.value;
    EXPECT_THAT(refused.message(), HasSubstr(absl::StrCat("--labels ", bad.key, "=")));
    EXPECT_THAT(refused.message(), HasSubstr(bad.rule));
  }
  // Not registered at all.
  EXPECT_EQ(store_->GetAgent("a1").status().code(), absl::StatusCode::kNotFound);
  // Valid ones (prefixed keys, empty values) join.
  PGF_EXPECT_OK(Hello("a2", "example.com/tier", ""));
  PGF_ASSERT_OK_AND_ASSIGN(AgentRow agent, store_->GetAgent("a2"));
  EXPECT_EQ(agent.labels.at("zone"), "a");
  EXPECT_EQ(agent.labels.at("example.com/tier"), "");
}

}  // namespace
}  // namespace pgfleet::controller
