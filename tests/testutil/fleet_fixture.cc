#include "tests/testutil/fleet_fixture.h"

#include <iostream>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "tests/testutil/process.h"
#include "tests/testutil/status_testing.h"

namespace pgfleet::testutil {

void FleetFixture::SetUp() {
  PGF_ASSERT_OK(temp_dir_.Create(name_));
  dir_ = temp_dir_.path();
  users_path_ = dir_ + "/fleet-users.txt";
  PGF_ASSERT_OK(WriteFile(users_path_, UsersText()));
  std::random_device random;
  token_ = absl::StrCat(name_, "-", random(), random());
}

void FleetFixture::TearDown() {
  if (expect_clean_exits_) {
    // Agents also have to shut down cleanly on SIGTERM with a controller link open; a test may
    // have stopped some on purpose already.
    for (auto& [id, agent] : agents_) {
      ExpectCleanStop(*agent, absl::StrCat("agent ", id), IfExited::kSkip);
    }
    for (auto& controller : controllers_) ExpectCleanStop(*controller);
  }
  if (HasFailure()) {
    for (auto& [id, agent] : agents_) {
      std::cerr << "=== agent " << id << "\n" << agent->Diagnostics();
    }
    for (auto& controller : controllers_) std::cerr << controller->Diagnostics();
  }
  agents_.clear();
  old_agents_.clear();
  controller_ = nullptr;
  controllers_.clear();
}

void FleetFixture::StartController(ControllerOptions options, ControllerProcess** out) {
  if (options.bootstrap_token.empty()) options.bootstrap_token = token_;
  absl::StatusOr<std::unique_ptr<ControllerProcess>> controller =
      ControllerProcess::Start(std::move(options));
  ASSERT_TRUE(controller.ok()) << controller.status();
  controllers_.push_back(std::move(*controller));
  if (out != nullptr) *out = controllers_.back().get();
  if (controller_ == nullptr) {
    controller_ = controllers_.back().get();
    if (ctl_address_.empty()) ctl_address_ = controller_->address();
  }
}

std::string FleetFixture::UsersText() {
  return absl::StrCat(UserlistLine(kAppUser, kAppPassword), "\n",
                      UserlistLine(kAdminUser, kAdminPassword), "\n");
}

std::string FleetFixture::StateDir(const std::string& id) const {
  return absl::StrCat(dir_, "/state-", id);
}

std::vector<std::string> FleetFixture::LinkArgs(const std::string& id, const std::string& env,
                                                const std::string& controller_address) const {
  return {absl::StrCat("--controller=", controller_address), absl::StrCat("--env=", env),
          absl::StrCat("--agent-id=", id), absl::StrCat("--state-dir=", StateDir(id))};
}

void FleetFixture::StartLinkedAgent(const std::string& id, const AgentOptions& options) {
  ASSERT_EQ(agents_.count(id), 0u) << id;
  absl::StatusOr<std::unique_ptr<AgentProcess>> agent = AgentProcess::Start(options);
  ASSERT_TRUE(agent.ok()) << id << ": " << agent.status();
  agents_[id] = std::move(*agent);
}

FleetctlResult FleetFixture::Ctl(const std::vector<std::string>& args) const {
  return CtlAs(token_, args);
}

FleetctlResult FleetFixture::CtlAs(const std::string& token,
                                   const std::vector<std::string>& args) const {
  const std::string address =
      !ctl_address_.empty() ? ctl_address_ : (controller_ ? controller_->address() : "");
  absl::StatusOr<FleetctlResult> result = RunFleetctl(args, token, address, ctl_options_);
  if (!result.ok()) {
    FleetctlResult failed;
    failed.exit_code = -2;
    failed.stderr_text =
        absl::StrCat("[test harness] cannot run fleetctl: ", result.status().ToString());
    return failed;
  }
  return *result;
}

}  // namespace pgfleet::testutil
