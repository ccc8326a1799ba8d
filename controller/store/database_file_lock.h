// One pgfleet-controller per SQLite file. Two controllers on one file would both lead: both
// tick the same rollouts, both hold agent streams and both write, each unaware of the other
// (SQLite's own locks only serialise their transactions). The controller takes this lock on
// --db before it opens the store, so a second one on the same file is refused at start.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace pgfleet::controller {

// An exclusive flock(2) on the database file, held until destroyed (or the process dies: the
// kernel drops it, so a controller killed with -9 does not leave the file locked).
class DatabaseFileLock {
 public:
  // Opens `path` (creating it empty if missing, as SQLite would) and locks it without waiting.
  // FailedPrecondition when another process holds the lock; the errno's text for a path that
  // cannot be opened (a directory, no permission, a read-only file system).
  static absl::StatusOr<DatabaseFileLock> Acquire(const std::string& path);

  DatabaseFileLock(DatabaseFileLock&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  DatabaseFileLock& operator=(DatabaseFileLock&&) = delete;
  DatabaseFileLock(const DatabaseFileLock&) = delete;
  DatabaseFileLock& operator=(const DatabaseFileLock&) = delete;
  // Closing this descriptor also drops every POSIX (fcntl) lock this process holds on the file,
  // SQLite's included: destroy it only after the store is closed.
  ~DatabaseFileLock();

 private:
  explicit DatabaseFileLock(int fd) : fd_(fd) {}
  int fd_;
};

}  // namespace pgfleet::controller
