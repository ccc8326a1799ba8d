#include "controller/store/database_file_lock.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace pgfleet::controller {

absl::StatusOr<DatabaseFileLock> DatabaseFileLock::Acquire(const std::string& path) {
  // 0644 before the umask: the mode SQLite itself creates the file with.
  const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    const int error = errno;
    if (error == EISDIR) {
      return absl::FailedPreconditionError(
          absl::StrCat("--db ", path, " is a directory; give a file (created if missing)"));
    }
    return absl::FailedPreconditionError(
        absl::StrCat("cannot open --db ", path, " for writing: ", strerror(error)));
  }
  // flock and SQLite's fcntl locks are independent on Linux: this one never blocks SQLite.
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int error = errno;
    close(fd);
    if (error == EWOULDBLOCK) {
      return absl::FailedPreconditionError(absl::StrCat(
          "--db ", path,
          " is in use by another pgfleet-controller (it holds the file's lock): one controller "
          "per SQLite file. Stop the other one, or give several controllers one "
          "--db=postgres://... to share"));
    }
    return absl::FailedPreconditionError(
        absl::StrCat("cannot lock --db ", path, ": ", strerror(error)));
  }
  return DatabaseFileLock(fd);
}

DatabaseFileLock::~DatabaseFileLock() {
  if (fd_ >= 0) close(fd_);
}

}  // namespace pgfleet::controller
