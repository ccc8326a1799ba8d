#include "agent/daemon.h"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include "absl/strings/str_cat.h"

namespace pgfleet::agent {

absl::StatusOr<RunAsUser> ResolveRunAsUser(const std::string& name, std::string origin) {
  if (origin.empty()) origin = absl::StrCat("-u ", name);
  std::vector<char> buffer(16384);
  passwd entry{};
  passwd* found = nullptr;
  if (int error = getpwnam_r(name.c_str(), &entry, buffer.data(), buffer.size(), &found);
      error != 0 || found == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(origin, ": no such user"));
  }
  RunAsUser user{name, origin, found->pw_uid, found->pw_gid, false};
  if (geteuid() == user.uid) return user;
  if (geteuid() != 0) {
    return absl::PermissionDeniedError(
        absl::StrCat(origin,
                     ": switching user needs the agent started as root (it runs as "
                     "uid ",
                     geteuid(), ")"));
  }
  user.switch_needed = true;
  return user;
}

absl::Status SwitchToUser(const RunAsUser& user) {
  if (!user.switch_needed) return absl::OkStatus();
  // Group first: once the uid is dropped, the groups can no longer be changed.
  if (setgid(user.gid) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat(user.origin, ": setgid"));
  }
  if (initgroups(user.name.c_str(), user.gid) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat(user.origin, ": initgroups"));
  }
  if (setuid(user.uid) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat(user.origin, ": setuid"));
  }
  if (user.uid != 0 && (setuid(0) == 0 || geteuid() == 0)) {
    return absl::InternalError(absl::StrCat(user.origin, ": root privileges were not dropped"));
  }
  return absl::OkStatus();
}

absl::StatusOr<int> DetachIntoBackground() {
  int ready_pipe[2];
  if (pipe2(ready_pipe, O_CLOEXEC) != 0) return absl::ErrnoToStatus(errno, "-d: pipe");
  const pid_t child = fork();
  if (child < 0) {
    const int error = errno;
    close(ready_pipe[0]);
    close(ready_pipe[1]);
    return absl::ErrnoToStatus(error, "-d: fork");
  }
  if (child > 0) {
    // The parent: exit as the start-up went, like PgBouncer's -d (an init script sees a bind
    // error as a failed start), without running destructors on state the child now owns.
    close(ready_pipe[1]);
    char ready = 0;
    ssize_t got;
    do {
      got = read(ready_pipe[0], &ready, 1);
    } while (got < 0 && errno == EINTR);
    if (got == 1 && ready == 'R') _exit(0);
    int status = 0;
    if (waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) != 0) {
      _exit(WEXITSTATUS(status));
    }
    _exit(1);
  }
  close(ready_pipe[0]);
  setsid();
  return ready_pipe[1];
}

void DetachedChildReady(int ready_fd) {
  const char ready = 'R';
  ssize_t written;
  do {
    written = write(ready_fd, &ready, 1);
  } while (written < 0 && errno == EINTR);
  close(ready_fd);
  if (int null = open("/dev/null", O_RDWR | O_CLOEXEC); null >= 0) {
    dup2(null, STDIN_FILENO);
    dup2(null, STDOUT_FILENO);
    dup2(null, STDERR_FILENO);
    if (null > STDERR_FILENO) close(null);
  }
}

}  // namespace pgfleet::agent
