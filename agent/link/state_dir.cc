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

absl::StatusOr<std::optional<pid_t>> StateDirHolder(const std::string& dir) {
  const std::string path = absl::StrCat(dir, "/lock");
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return std::nullopt;
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot open ", path));
  }
  const bool held = flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
  close(fd);  // Releases the shared lock when it was free.
  if (!held) return std::nullopt;
  // The holder writes its pid right after locking: give it a moment when the file is empty.
  for (int attempt = 0; attempt < 50; ++attempt) {
    absl::StatusOr<std::string> text = config::ReadTextFile(path);
    int pid = 0;
    if (text.ok() && absl::SimpleAtoi(absl::StripAsciiWhitespace(*text), &pid) && pid > 0) {
      return static_cast<pid_t>(pid);
    }
    usleep(10'000);
  }
  return absl::UnavailableError(absl::StrCat(path, " is locked but names no pid"));
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

absl::StatusOr<std::unique_ptr<StateDirLock>> StateDirLock::Adopt(const std::string& dir, int fd) {
  const std::string path = absl::StrCat(dir, "/lock");
  struct stat held {
  }, named{};
  if (fstat(fd, &held) != 0 || stat(path.c_str(), &named) != 0 || held.st_dev != named.st_dev ||
      held.st_ino != named.st_ino) {
    close(fd);
    return absl::FailedPreconditionError(
        absl::StrCat("the state dir lock handed over is not ", path));
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

}  // namespace pgfleet::agent
