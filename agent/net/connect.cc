#include "agent/net/connect.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "absl/status/status.h"

namespace pgfleet::agent::net {

absl::StatusOr<int> StartConnect(const sockaddr* addr, socklen_t length) {
  const int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::UnavailableError(strerror(errno));
  if (connect(fd, addr, length) == 0 || errno == EINPROGRESS || errno == EINTR) return fd;
  // A unix socket whose listen queue is full says EAGAIN: refused, as libevent treated it.
  const int error = errno;
  close(fd);
  return absl::UnavailableError(strerror(error));
}

void MarkCloseOnExec(int fd) {
  if (fd < 0) return;
  const int flags = fcntl(fd, F_GETFD);
  if (flags >= 0 && (flags & FD_CLOEXEC) == 0) fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
}

}  // namespace pgfleet::agent::net
