// A pgfleet-controller child process on its own SQLite file, and fleetctl runs against it.
#pragma once

#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "tests/testutil/process.h"

namespace pgfleet::testutil {

struct ControllerOptions {
  // SQLite file; empty: <temp dir>/fleet.db.
  std::string db_path;
  // Registered as an admin token at start (PGFLEET_BOOTSTRAP_TOKEN); empty: none.
  std::string bootstrap_token;
  // More flags (--tls-cert=..., -v, ...). A --listen here replaces the default
  // --listen=127.0.0.1:0.
  std::vector<std::string> extra_args;
  std::string metrics_interval = "1s";
  // Passes --insecure-agents: agents join whatever environment they claim, as most tests
  // exercise other things. Tests of agent authentication set it false.
  bool insecure_agents = true;
  std::string binary = PGFLEET_CONTROLLER_BINARY;
  absl::Duration start_timeout = absl::Seconds(15);
};

// Stopping, signals and the exit status come from ChildProcess; the destructor stops the
// controller (SIGTERM, then SIGKILL) and removes its temp dir.
class ControllerProcess : public ChildProcess {
 public:
  // Makes a temp dir, spawns the controller with --listen=127.0.0.1:0 --port-file=<dir>/port
  // and waits until the port file names the bound port.
  static absl::StatusOr<std::unique_ptr<ControllerProcess>> Start(ControllerOptions options);

  int port() const { return port_; }
  // "127.0.0.1:PORT" (the host agents and fleetctl dial).
  std::string address() const;
  const std::string& db_path() const { return options_.db_path; }
  const std::string& log_path() const { return log_path_; }
  const std::string& bootstrap_token() const { return options_.bootstrap_token; }

  // Starts the controller again on the same database and, with --listen=127.0.0.1:<port>, on
  // the same port (retrying while the old socket is still being released). The process must
  // have exited (Stop or Kill9).
  absl::Status Restart();

  // stderr of every run so far (the controller logs there).
  std::string LogContents() const;
  // The log of the latest run only (since the last Start/Restart).
  std::string CurrentRunLog() const;
  std::string Diagnostics() const override;

 private:
  ControllerProcess() : ChildProcess("pgfleet-controller") {}
  // Spawns with --listen=`listen` and waits for the port file.
  absl::Status Launch(const std::string& listen);

  ControllerOptions options_;
  std::string port_file_;
  std::string log_path_;
  std::string listen_host_ = "127.0.0.1";
  int port_ = 0;
};

struct FleetctlResult {
  int exit_code = -1;  // -1: killed by a signal or timed out.
  std::string stdout_text;
  std::string stderr_text;
  std::string Describe() const;  // For failure messages: command, exit code, both outputs.
  std::string command;
};

struct FleetctlOptions {
  // Passed as --tls-ca when set.
  std::string tls_ca;
  absl::Duration timeout = absl::Seconds(90);
  std::string binary = PGFLEET_FLEETCTL_BINARY;
};

// Runs `fleetctl --controller=<controller> [--token=<token>] <args...>` to completion. HOME,
// PGFLEET_TOKEN and PGFLEET_CONTROLLER are neutralised so only the arguments count. An error
// only when fleetctl could not be run at all.
absl::StatusOr<FleetctlResult> RunFleetctl(const std::vector<std::string>& args,
                                           const std::string& token, const std::string& controller,
                                           const FleetctlOptions& options = {});

}  // namespace pgfleet::testutil
