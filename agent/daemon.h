// PgBouncer's -d/--daemon and -u USER for pgfleet-agent, so init scripts written for PgBouncer
// keep working: the agent detaches into the background (with a pidfile), and an agent started
// as root switches to an unprivileged user once its sockets are bound.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace pgfleet::agent {

// -u USER (or the config's `user`), resolved before anything serves so a typo fails at once.
struct RunAsUser {
  std::string name;
  // What asked for it, in front of every error: "-u NAME", or the config line with `user`.
  std::string origin;
  uid_t uid = 0;
  gid_t gid = 0;
  // False when the process runs as that user already (nothing to switch: started by a user
  // other than root with -u naming itself, or the new process of a zero-downtime restart).
  bool switch_needed = false;
};
// InvalidArgument for an unknown user; PermissionDenied when not root and USER is not who the
// process runs as.
// `origin` names what asked for the user in errors; empty: "-u NAME".
absl::StatusOr<RunAsUser> ResolveRunAsUser(const std::string& name, std::string origin = {});
// setgid, initgroups and setuid to `user` (nothing when !switch_needed). Root cannot be taken
// back afterwards: it is checked.
absl::Status SwitchToUser(const RunAsUser& user);

// -d: forks; the parent waits until the child says it serves (DetachedChildReady) and exits 0,
// or exits 1 when the child exits first (its error went to the terminal's stderr). Returns, in
// the child only, the fd to report readiness on. The child is a session leader with no
// controlling terminal.
absl::StatusOr<int> DetachIntoBackground();
// In the detached child once it serves: tells the waiting parent, and points stdin, stdout and
// stderr at /dev/null (the terminal may go away; logs go to the config's logfile).
void DetachedChildReady(int ready_fd);

}  // namespace pgfleet::agent
