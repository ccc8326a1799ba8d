#include "agent/path_policy.h"

#include <sys/stat.h>

#include <filesystem>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "common/config/ini_parser.h"
#include "common/status_macros.h"

namespace pgfleet::agent {

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

namespace {

// CheckPushedPath without the key in front of the message.
absl::Status CheckAllowed(const std::string& value, const PathPolicy& policy, bool written) {
  absl::StatusOr<std::string> resolved = ResolveForOpen(value);
  if (!resolved.ok()) return absl::InvalidArgumentError(resolved.status().message());
  bool allowed = false;
  for (const std::string& dir : policy.allowed_dirs) allowed |= IsInside(*resolved, dir);
  if (!allowed) {
    const bool moved = *resolved != value;
    return absl::PermissionDeniedError(
        absl::StrCat(value, moved ? absl::StrCat(" (", *resolved, ")") : "",
                     " is outside the allowed paths (--allow-path)"));
  }
  if (written) {
    for (const std::string& file : policy.protected_files) {
      if (*resolved == file) {
        return absl::PermissionDeniedError(
            absl::StrCat(value, " is a file the agent itself depends on"));
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckPushedPath(const std::string& key, const std::string& value,
                             const PathPolicy& policy, bool written) {
  if (value.empty()) return absl::OkStatus();
  absl::Status allowed = CheckAllowed(value, policy, written);
  if (allowed.ok()) return allowed;
  return absl::Status(allowed.code(), absl::StrCat(key, ": ", allowed.message()));
}

config::ReadFileFn PushedHbaIncludeReader(const PathPolicy& policy) {
  return [&policy](const std::string& path) -> absl::StatusOr<std::string> {
    PGF_RETURN_IF_ERROR(CheckAllowed(path, policy, /*written=*/false));
    return config::ReadTextFile(path);
  };
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
      {"auth_hba_file", config.auth_hba_file, false},
      {"auth_ident_file", config.auth_ident_file, false},
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

std::string DirOf(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

absl::StatusOr<PathPolicy> StandalonePathPolicy(const std::string& config_path,
                                                const std::vector<std::string>& allowed_paths) {
  std::vector<std::string> dirs = {DirOf(config_path)};
  dirs.insert(dirs.end(), allowed_paths.begin(), allowed_paths.end());
  return MakePathPolicy(dirs, {config_path});
}

}  // namespace pgfleet::agent
