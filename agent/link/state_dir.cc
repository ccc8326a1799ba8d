#include "agent/link/state_dir.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <system_error>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/config/ini_parser.h"
#include "common/status_macros.h"

namespace pgfleet::agent {

std::string SanitizeAgentId(const std::string& agent_id) {
  std::string name;
  name.reserve(agent_id.size());
  for (char c : agent_id) {
    const bool keep =
        absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
    name.push_back(keep ? c : '_');
  }
  if (name.empty()) return "_";
  if (name[0] == '.') name[0] = '_';
  return name;
}

std::string DefaultStateDir(const std::string& config_path, const std::string& agent_id) {
  const size_t slash = config_path.rfind('/');
  const std::string dir = slash == std::string::npos ? "."
                          : slash == 0               ? "/"
                                                     : config_path.substr(0, slash);
  return absl::StrCat(dir == "/" ? "" : dir, "/pgfleet-state/", SanitizeAgentId(agent_id));
}

absl::Status MakeDirs(const std::string& dir, mode_t mode) {
  std::string prefix;
  size_t at = 0;
  while (at != std::string::npos) {
    const size_t next = dir.find('/', at + 1);
    prefix = dir.substr(0, next);
    at = next;
    if (prefix.empty() || prefix == "/") continue;
    if (mkdir(prefix.c_str(), mode) != 0 && errno != EEXIST) {
      return absl::ErrnoToStatus(errno, absl::StrCat("cannot create state dir ", prefix));
    }
  }
  struct stat st {};
  if (stat(dir.c_str(), &st) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("state dir ", dir));
  }
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat("state dir ", dir, " is not a directory"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<StateDirLock>> StateDirLock::Acquire(const std::string& dir) {
  const std::string path = absl::StrCat(dir, "/lock");
  const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat("cannot open ", path));
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int error = errno;
    close(fd);
    if (error != EWOULDBLOCK) {
      return absl::ErrnoToStatus(error, absl::StrCat("cannot lock ", path));
    }
    // The holder writes its pid right after locking; it may not have yet.
    absl::StatusOr<std::string> text = config::ReadTextFile(path);
    int pid = 0;
    const bool known = text.ok() && absl::SimpleAtoi(absl::StripAsciiWhitespace(*text), &pid);
    return absl::FailedPreconditionError(
        absl::StrCat("state dir ", dir, " is in use by another pgfleet-agent (",
                     known ? absl::StrCat("pid ", pid) : std::string("pid unknown"), ", holding ",
                     path, "); give each agent its own --state-dir or --agent-id"));
  }
  const std::string pid = absl::StrCat(getpid(), "\n");
  if (ftruncate(fd, 0) != 0 || pwrite(fd, pid.data(), pid.size(), 0) < 0) {
    const int error = errno;
    close(fd);
    return absl::ErrnoToStatus(error, absl::StrCat("cannot write ", path));
  }
  return std::unique_ptr<StateDirLock>(new StateDirLock(fd));
}

StateDirLock::~StateDirLock() { close(fd_); }

namespace {

// Where the kernel would find `path`: the file's realpath when it exists, else its parent's
// realpath plus the name (a logfile or pidfile may not exist yet). Relative paths are taken
// against the working directory, as open() would.
absl::StatusOr<std::string> ResolveForOpen(const std::string& path) {
  std::error_code ec;
  std::filesystem::path absolute = std::filesystem::absolute(path, ec);
  if (ec) return absl::InvalidArgumentError(absl::StrCat("cannot resolve ", path));
  // A dangling symlink counts as "not there" for canonical(), but open(O_CREAT) follows it:
  // follow links by hand until the name is not one.
  for (int hops = 0; hops < 40; ++hops) {
    std::filesystem::path resolved = std::filesystem::canonical(absolute, ec);
    if (!ec) return resolved.string();
    struct stat st {};
    if (lstat(absolute.c_str(), &st) != 0 || !S_ISLNK(st.st_mode)) break;
    std::filesystem::path target = std::filesystem::read_symlink(absolute, ec);
    if (ec) return absl::InvalidArgumentError(absl::StrCat("cannot resolve ", path));
    absolute = target.is_absolute() ? target : absolute.parent_path() / target;
  }
  // Not there (yet): resolve the parent, which must exist for the file to be created.
  std::filesystem::path parent = std::filesystem::canonical(absolute.parent_path(), ec);
  if (ec) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": directory ", absolute.parent_path().string(), " does not exist"));
  }
  const std::string name = absolute.filename().string();
  if (name.empty() || name == "." || name == "..") {
    return absl::InvalidArgumentError(absl::StrCat(path, " does not name a file"));
  }
  return (parent / name).string();
}

bool IsInside(const std::string& path, const std::string& dir) {
  if (dir == "/") return true;
  return path.size() > dir.size() && path.compare(0, dir.size(), dir) == 0 &&
         path[dir.size()] == '/';
}

}  // namespace

absl::StatusOr<PathPolicy> MakePathPolicy(const std::vector<std::string>& dirs,
                                          std::vector<std::string> protected_files) {
  PathPolicy policy;
  for (const std::string& dir : dirs) {
    std::error_code ec;
    std::filesystem::path resolved = std::filesystem::canonical(dir, ec);
    if (ec || !std::filesystem::is_directory(resolved, ec)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--allow-path ", dir, ": not an existing directory"));
    }
    policy.allowed_dirs.push_back(resolved.string());
  }
  for (const std::string& file : protected_files) {
    absl::StatusOr<std::string> resolved = ResolveForOpen(file);
    policy.protected_files.push_back(resolved.ok() ? *resolved : file);
  }
  return policy;
}

absl::Status CheckPushedPath(const std::string& key, const std::string& value,
                             const PathPolicy& policy, bool written) {
  if (value.empty()) return absl::OkStatus();
  absl::StatusOr<std::string> resolved = ResolveForOpen(value);
  if (!resolved.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(key, ": ", resolved.status().message()));
  }
  bool allowed = false;
  for (const std::string& dir : policy.allowed_dirs) allowed |= IsInside(*resolved, dir);
  if (!allowed) {
    const bool moved = *resolved != value;
    return absl::PermissionDeniedError(
        absl::StrCat(key, ": ", value, moved ? absl::StrCat(" (", *resolved, ")") : "",
                     " is outside the allowed paths (--allow-path)"));
  }
  if (written) {
    for (const std::string& file : policy.protected_files) {
      if (*resolved == file) {
        return absl::PermissionDeniedError(
            absl::StrCat(key, ": ", value, " is a file the agent itself depends on"));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status CheckPushedPaths(const config::Config& config, const PathPolicy& policy) {
  struct PathKey {
    const char* key;
    const std::string& value;
    bool written;  // The agent creates or truncates it.
  };
  const PathKey keys[] = {
      {"logfile", config.logfile, true},
      {"pidfile", config.pidfile, true},
      {"auth_file", config.auth_file, false},
      {"client_tls_cert_file", config.client_tls_cert_file, false},
      {"client_tls_key_file", config.client_tls_key_file, false},
      {"client_tls_ca_file", config.client_tls_ca_file, false},
      {"server_tls_cert_file", config.server_tls_cert_file, false},
      {"server_tls_key_file", config.server_tls_key_file, false},
      {"server_tls_ca_file", config.server_tls_ca_file, false},
  };
  for (const PathKey& entry : keys) {
    PGF_RETURN_IF_ERROR(CheckPushedPath(entry.key, entry.value, policy, entry.written));
  }
  return absl::OkStatus();
}

}  // namespace pgfleet::agent
