// The fleet state dir (where the agent keeps the config the controller pushed) and the rules
// for the file paths a pushed config may name.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
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

// Exclusive use of a state dir: an flock on <dir>/lock, held for the life of the object (and
// released by the kernel if the process dies), with the holder's pid written in the file.
class StateDirLock {
 public:
  // FailedPrecondition "state dir DIR is in use by another pgfleet-agent (pid N)" when an
  // other process holds it.
  static absl::StatusOr<std::unique_ptr<StateDirLock>> Acquire(const std::string& dir);
  ~StateDirLock();

  StateDirLock(const StateDirLock&) = delete;
  StateDirLock& operator=(const StateDirLock&) = delete;

 private:
  explicit StateDirLock(int fd) : fd_(fd) {}
  int fd_;
};

// Directories a pushed config's files must stay in, and files it must never name for writing.
struct PathPolicy {
  // Resolved (realpath) directories; a file must be inside one of them.
  std::vector<std::string> allowed_dirs;
  // Files a pushed logfile or pidfile must not be: the local config, the state dir's own files.
  std::vector<std::string> protected_files;
};

// Resolves `dirs` (each must exist) into a policy; an error names the directory.
absl::StatusOr<PathPolicy> MakePathPolicy(const std::vector<std::string>& dirs,
                                          std::vector<std::string> protected_files);

// Checks every file path of a pushed config (logfile, pidfile, auth_file, client_tls_* and
// server_tls_* files) against `policy`. A path is resolved the way the kernel would open it:
// symlinks followed, ".." applied, relative paths against the working directory, and for a
// file that does not exist yet its parent directory. The error names the key:
// "logfile: /etc/passwd is outside the allowed paths (--allow-path)".
absl::Status CheckPushedPaths(const config::Config& config, const PathPolicy& policy);
// One path, named `key` in the error; `written` for files the agent creates or truncates.
absl::Status CheckPushedPath(const std::string& key, const std::string& value,
                             const PathPolicy& policy, bool written);
// The %include check for pushed configs (config::IncludeCheck).
inline config::IncludeCheck PushedIncludeCheck(const PathPolicy& policy) {
  return [&policy](const std::string& path) {
    return CheckPushedPath("%include", path, policy, /*written=*/false);
  };
}

}  // namespace pgfleet::agent
