#include "tests/testutil/controller_process.h"

#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "tests/testutil/process.h"

namespace pgfleet::testutil {
namespace {

constexpr char kListenFlag[] = "--listen=";
constexpr char kRunMarker[] = "=== test harness: ";

}  // namespace

absl::StatusOr<std::unique_ptr<ControllerProcess>> ControllerProcess::Start(
    ControllerOptions options) {
  std::unique_ptr<ControllerProcess> controller(new ControllerProcess());
  if (absl::Status created = controller->CreateDir(); !created.ok()) return created;
  controller->port_file_ = controller->dir() + "/port";
  controller->log_path_ = controller->dir() + "/controller.log";
  if (options.db_path.empty()) options.db_path = controller->dir() + "/fleet.db";
  // A --listen among the extra arguments replaces ours; Restart keeps its host.
  std::string listen = "127.0.0.1:0";
  std::vector<std::string> extra;
  for (const std::string& arg : options.extra_args) {
    if (absl::StartsWith(arg, kListenFlag)) {
      listen = arg.substr(strlen(kListenFlag));
    } else {
      extra.push_back(arg);
    }
  }
  options.extra_args = std::move(extra);
  size_t colon = listen.rfind(':');
  controller->listen_host_ = colon == std::string::npos ? listen : listen.substr(0, colon);
  controller->options_ = std::move(options);
  if (absl::Status launched = controller->Launch(listen); !launched.ok()) return launched;
  return controller;
}

absl::Status ControllerProcess::Launch(const std::string& listen) {
  unlink(port_file_.c_str());
  std::vector<std::string> argv = {options_.binary, absl::StrCat(kListenFlag, listen),
                                   absl::StrCat("--db=", options_.db_path),
                                   absl::StrCat("--port-file=", port_file_),
                                   absl::StrCat("--metrics-interval=", options_.metrics_interval)};
  if (options_.insecure_agents) argv.push_back("--insecure-agents");
  argv.insert(argv.end(), options_.extra_args.begin(), options_.extra_args.end());
  SpawnOptions spawn;
  spawn.working_dir = dir();
  spawn.stdout_path = log_path_;
  spawn.stderr_path = log_path_;
  // Only what the caller asked for: an inherited bootstrap token would be a second admin.
  spawn.env["PGFLEET_BOOTSTRAP_TOKEN"] = options_.bootstrap_token;
  {
    // Marks each run in the log, so a restart's lines can be told apart.
    FILE* log = fopen(log_path_.c_str(), "a");
    if (log != nullptr) {
      fprintf(log, "%s%s ===\n", kRunMarker, absl::StrJoin(argv, " ").c_str());
      fclose(log);
    }
  }
  return SpawnAndAwait(argv, spawn, options_.start_timeout, "write its port file", [this] {
    absl::StatusOr<std::string> text = ReadFile(port_file_);
    int port = 0;
    if (!text.ok() || !absl::SimpleAtoi(absl::StripAsciiWhitespace(*text), &port) || port <= 0) {
      return false;
    }
    port_ = port;
    return true;
  });
}

std::string ControllerProcess::address() const { return absl::StrCat("127.0.0.1:", port_); }

absl::Status ControllerProcess::Restart() {
  if (IsRunning()) return absl::FailedPreconditionError("controller is still running");
  const std::string listen = absl::StrCat(listen_host_, ":", port_);
  // The port was just ours; gRPC binds with SO_REUSEADDR, so a retry is only for the rare case
  // of the kernel still tearing the old listener down.
  absl::Status last;
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (true) {
    last = Launch(listen);
    if (last.ok()) return last;
    if (!absl::StrContains(last.message(), "cannot listen") || absl::Now() >= deadline) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  return last;
}

std::string ControllerProcess::LogContents() const {
  absl::StatusOr<std::string> contents = ReadFile(log_path_);
  return contents.ok() ? *contents : "";
}

std::string ControllerProcess::CurrentRunLog() const {
  const std::string log = LogContents();
  const size_t marker = log.rfind(kRunMarker);
  return marker == std::string::npos ? log : log.substr(marker);
}

std::string ControllerProcess::Diagnostics() const {
  return absl::StrCat(StateLine("controller", absl::StrCat(", port ", port_)),
                      "--- controller.log (tail) ---\n", ReadFileTail(log_path_, 8192), "\n");
}

std::string FleetctlResult::Describe() const {
  return absl::StrCat("$ ", command, "\nexit code ", exit_code, "\n--- stdout ---\n", stdout_text,
                      "\n--- stderr ---\n", stderr_text);
}

absl::StatusOr<FleetctlResult> RunFleetctl(const std::vector<std::string>& args,
                                           const std::string& token, const std::string& controller,
                                           const FleetctlOptions& options) {
  std::vector<std::string> argv = {options.binary, absl::StrCat("--controller=", controller)};
  if (!token.empty()) argv.push_back(absl::StrCat("--token=", token));
  if (!options.tls_ca.empty()) argv.push_back(absl::StrCat("--tls-ca=", options.tls_ca));
  argv.insert(argv.end(), args.begin(), args.end());
  RunOptions run;
  run.timeout = options.timeout;
  // No token or controller from the caller's environment or home directory.
  run.env = {{"PGFLEET_TOKEN", ""},
             {"PGFLEET_CONTROLLER", ""},
             {"HOME", "/nonexistent-pgfleet-test-home"}};
  absl::StatusOr<RunResult> ran = RunCommand(argv, run);
  if (!ran.ok()) return ran.status();
  FleetctlResult result;
  result.command = absl::StrJoin(argv, " ");
  result.exit_code = ran->ExitCode().value_or(-1);
  result.stdout_text = std::move(ran->stdout_text);
  result.stderr_text = std::move(ran->stderr_text);
  if (ran->timed_out) absl::StrAppend(&result.stderr_text, "\n[test harness: timed out]\n");
  return result;
}

}  // namespace pgfleet::testutil
