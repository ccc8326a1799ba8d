// Opening an outgoing socket without blocking the loop: the connect is started here and
// finished by NetConn (Start::kConnecting), which waits for the socket to become writable and
// reads SO_ERROR.
#pragma once

#include <sys/socket.h>

#include <string>

#include "absl/status/statusor.h"

namespace pgfleet::agent::net {

// A non-blocking, close-on-exec socket for `addr` with its connect started (in progress, or
// already done, as a unix socket's usually is). The caller owns the fd.
absl::StatusOr<int> StartConnect(const sockaddr* addr, socklen_t length);

// Sets FD_CLOEXEC on `fd` if it is a socket without it. A process started by a hand-over
// (agent/handover.h) must not inherit a server or cancel connection: its copy would keep the
// PostgreSQL connection open after this process closed it. libevent creates the socket of a
// bufferevent_socket_connect[_hostname] without it (the cancel forwarder's).
void MarkCloseOnExec(int fd);

}  // namespace pgfleet::agent::net
