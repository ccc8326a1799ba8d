// The fleet state dir (where the agent keeps the config the controller pushed).
#pragma once

#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "agent/path_policy.h"
#include "common/config/config.h"

namespace pgfleet::agent {

// An agent id as one path component: letters, digits, '.', '_' and '-' are kept, anything
// else becomes '_' ("db-1.example.com:6432" -> "db-1.example.com_6432"), and a leading '.'
// becomes '_' so the result is never "." or "..". Ids that differ only in replaced
// characters map to one name; the state dir lock catches that.
std::string SanitizeAgentId(const std::string& agent_id);

// The default state dir: <dir of config_path>/pgfleet-state/<sanitised agent id>, one per
// agent so several agents configured from one directory never share fail-static state.
std::string DefaultStateDir(const std::string& config_path, const std::string& agent_id);

// mkdir -p with `mode` for the directories it creates.
absl::Status MakeDirs(const std::string& dir, mode_t mode);

// The pid of the process holding `dir`'s lock (the agent serving from it), nullopt when no
// process holds it (or the dir has never been used).
absl::StatusOr<std::optional<pid_t>> StateDirHolder(const std::string& dir);

// Exclusive use of a state dir: an flock on <dir>/lock, held for the life of the object (and
// released by the kernel if the process dies), with the holder's pid written in the file.
class StateDirLock {
 public:
  // FailedPrecondition "state dir DIR is in use by another pgfleet-agent (pid N)" when an
  // other process holds it.
  static absl::StatusOr<std::unique_ptr<StateDirLock>> Acquire(const std::string& dir);
  // The lock a hand-over passed in `fd` (an open file description holding the flock: the lock
  // is shared, so it was never free). Checks that `fd` is <dir>/lock, then writes our pid.
  static absl::StatusOr<std::unique_ptr<StateDirLock>> Adopt(const std::string& dir, int fd);
  ~StateDirLock();
  int fd() const { return fd_; }

  StateDirLock(const StateDirLock&) = delete;
  StateDirLock& operator=(const StateDirLock&) = delete;

 private:
  explicit StateDirLock(int fd) : fd_(fd) {}
  int fd_;
};

}  // namespace pgfleet::agent
