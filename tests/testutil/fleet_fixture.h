// A controller (or several) and agents linked to it, as one gtest fixture: a temp dir for their
// state, an admin token, fleetctl runs against the controller, and a TearDown that stops every
// process and expects clean exits, printing their diagnostics when the test failed.
#pragma once

#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tests/testutil/agent_process.h"
#include "tests/testutil/controller_process.h"
#include "tests/testutil/fixtures.h"

namespace pgfleet::testutil {

class FleetFixture : public ::testing::Test {
 protected:
  // `name` names the temp dir (/tmp/<name>-XXXXXX) and prefixes the bootstrap admin token.
  explicit FleetFixture(std::string name) : name_(std::move(name)) {}

  void SetUp() override;
  void TearDown() override;

  // Starts a controller with the bootstrap token token_ (unless `options` names one); the first
  // becomes controller_, the one Ctl() talks to.
  void StartController(ControllerOptions options = {}, ControllerProcess** out = nullptr);

  // The userlist lines of users_path_.
  static std::string UsersText();

  std::string StateDir(const std::string& id) const;
  // The flags that link an agent to `controller_address` as `id` in `env`, with its state dir
  // under dir_.
  std::vector<std::string> LinkArgs(const std::string& id, const std::string& env,
                                    const std::string& controller_address) const;
  // Starts agent `id` with `options` (its link flags included) into agents_.
  void StartLinkedAgent(const std::string& id, const AgentOptions& options);

  // fleetctl against ctl_address_ (controller_'s unless set) with token_, or `token`.
  FleetctlResult Ctl(const std::vector<std::string>& args) const;
  FleetctlResult CtlAs(const std::string& token, const std::vector<std::string>& args) const;

  AgentProcess& agent(const std::string& id) { return *agents_.at(id); }
  int port(const std::string& id) { return agents_.at(id)->port(); }

  // False for tests whose agents are refused or cut off on purpose: TearDown then only prints
  // diagnostics on failure and judges no exit status.
  bool expect_clean_exits_ = true;

  std::string dir_;
  // <dir_>/fleet-users.txt with kAppUser and kAdminUser: the fleet-wide auth_file pushed configs
  // name (an absolute path every agent can read).
  std::string users_path_;
  std::string token_;
  std::vector<std::unique_ptr<ControllerProcess>> controllers_;
  ControllerProcess* controller_ = nullptr;
  std::string ctl_address_;
  FleetctlOptions ctl_options_;
  std::map<std::string, std::unique_ptr<AgentProcess>> agents_;
  // Agents a test replaced (RestartAgent-style), kept for their diagnostics.
  std::vector<std::unique_ptr<AgentProcess>> old_agents_;

 private:
  std::string name_;
  TempDir temp_dir_;
};

}  // namespace pgfleet::testutil
