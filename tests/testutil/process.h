// Child processes for tests: run a command to completion with captured output, or spawn a
// long-running one (an agent, a server) with its output going to files; ChildProcess is what
// AgentProcess and ControllerProcess share (start, await ready, stop, reap, clean up).
#pragma once

#include <sys/types.h>

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "tests/testutil/temp_dir.h"

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
// The "Uid:" line of /proc/PID/status: real, effective, saved and filesystem uid; empty when
// the process is gone.
std::vector<std::string> ProcessUids(pid_t pid);
absl::Status WriteFile(const std::string& path, const std::string& contents);

// Picks a free port and runs `launch` on it; while the launch fails because another process took
// the port between PickFreePort and the child's bind (the error says "in use" or "could not
// bind"), tries again on another port, three times in all.
absl::Status LaunchOnFreePort(const std::function<absl::Status(int port)>& launch);

// A long-running child that a test owns, in a temp dir of its own: spawned, awaited until it
// is ready, reaped exactly once, and stopped (SIGTERM, then SIGKILL) when the test is done.
// Subclasses add what is specific to the program: its files, its readiness, its diagnostics.
class ChildProcess {
 public:
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  // Stops the child if it still runs, then removes the dir (unless KeepTestDirs()).
  virtual ~ChildProcess();

  pid_t pid() const { return pid_; }
  const std::string& dir() const { return dir_.path(); }

  // True while the child has not exited (reaps it if it has).
  bool IsRunning();
  absl::Status Signal(int sig);
  // Waits for the child to exit; returns its raw wait status.
  absl::StatusOr<int> WaitForExit(absl::Duration timeout);
  // SIGTERM and wait up to `grace` for a clean exit. Returns the wait status, or
  // DeadlineExceeded (after which the child has been SIGKILLed and reaped).
  absl::StatusOr<int> Stop(absl::Duration grace = absl::Seconds(10));
  // SIGKILL, and reap.
  absl::Status Kill9();

  // Whether the child runs or how it exited, and its logs' tails, for failure messages.
  virtual std::string Diagnostics() const = 0;

 protected:
  // `program` names the child in messages and its dir (/tmp/<program>-XXXXXX).
  explicit ChildProcess(std::string program) : program_(std::move(program)) {}

  absl::Status CreateDir() { return dir_.Create(program_); }
  // Spawns `argv` and polls `ready` until it returns true. Fails, with Diagnostics(), when the
  // child exits first, or when `timeout` passes (the child is then SIGKILLed and reaped);
  // `awaited` says what did not happen in time ("accept TCP connections on ...").
  absl::Status SpawnAndAwait(const std::vector<std::string>& argv, const SpawnOptions& options,
                             absl::Duration timeout, const std::string& awaited,
                             const std::function<bool()>& ready);
  // "--- <label> pid N (<dir><detail>) running ---" or "... exited: exit 0 ---".
  std::string StateLine(const std::string& label, const std::string& detail = "") const;

 private:
  std::string program_;
  TempDir dir_;
  pid_t pid_ = -1;
  bool reaped_ = false;
  int wait_status_ = 0;
};

}  // namespace pgfleet::testutil
