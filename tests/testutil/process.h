// Child processes for tests: run a command to completion with captured output, or spawn a
// long-running one (an agent, a server) with its output going to files.
#pragma once

#include <sys/types.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace pgfleet::testutil {

struct SpawnOptions {
  // Environment variables set (or overridden) on top of the caller's environment.
  std::map<std::string, std::string> env;
  // Working directory of the child; empty keeps the caller's.
  std::string working_dir;
  // Where the child's stdout / stderr go (opened O_APPEND|O_CREAT); empty: /dev/null.
  std::string stdout_path;
  std::string stderr_path;
  // Kill the child with SIGKILL if the spawning thread exits (so a crashed test leaves no
  // orphan behind).
  bool die_with_parent = true;
};

// Starts argv[0] (searched in PATH when it has no '/') and returns its pid. The caller must
// reap it (WaitPid below). stdin is /dev/null.
absl::StatusOr<pid_t> Spawn(const std::vector<std::string>& argv, const SpawnOptions& options);

// Waits up to `timeout` for `pid` to exit. Returns the raw wait status (WIFEXITED etc.), or
// DeadlineExceeded if it is still running.
absl::StatusOr<int> WaitPid(pid_t pid, absl::Duration timeout);

// Human-readable form of a wait status: "exit 0", "signal 9 (Killed)".
std::string DescribeWaitStatus(int wait_status);

struct RunOptions {
  std::map<std::string, std::string> env;
  std::string working_dir;
  absl::Duration timeout = absl::Seconds(60);
};

struct RunResult {
  int wait_status = 0;
  bool timed_out = false;  // The child was killed because it overran `timeout`.
  std::string stdout_text;
  std::string stderr_text;

  bool Succeeded() const;  // Exited normally with status 0 and did not time out.
  std::optional<int> ExitCode() const;
  std::string Describe() const;  // Status plus both outputs, for test failure messages.
};

// Runs a command to completion, capturing stdout and stderr. A non-zero exit is not an error
// here (inspect the result); errors are failures to start it at all.
absl::StatusOr<RunResult> RunCommand(const std::vector<std::string>& argv,
                                     const RunOptions& options = {});

// The last `max_bytes` of a file (whole lines where possible); "" if it cannot be read.
std::string ReadFileTail(const std::string& path, size_t max_bytes = 8192);
// Whole file, or an error.
absl::StatusOr<std::string> ReadFile(const std::string& path);
absl::Status WriteFile(const std::string& path, const std::string& contents);

}  // namespace pgfleet::testutil
