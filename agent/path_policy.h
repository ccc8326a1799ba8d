// Where the files a config names may be: the rule for pushed configs (logfile, pidfile,
// auth_file, TLS files, %include) and for the console's SET logfile. Part of the pooler, not of
// the controller link, because a standalone agent confines SET logfile the same way.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/config/config.h"
#include "common/config/hba.h"

namespace pgfleet::agent {

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

// The @file reader for the hba file of a pushed config: an include outside `policy`'s
// directories is refused before it is opened ("/etc/group is outside the allowed paths
// (--allow-path)"; the hba parser adds the including file, its line and the @name). Without
// it a pushed hba file could make the agent read any file it can (its names end up in the rules).
config::ReadFileFn PushedHbaIncludeReader(const PathPolicy& policy);

// The directory part of a path ("." for a bare name).
std::string DirOf(const std::string& path);

// The policy of an agent without a controller: the config's directory and `allowed_paths`
// (--allow-path), with the config itself protected from being written over.
absl::StatusOr<PathPolicy> StandalonePathPolicy(const std::string& config_path,
                                                const std::vector<std::string>& allowed_paths);

}  // namespace pgfleet::agent
