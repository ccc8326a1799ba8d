// Picks a TCP port on 127.0.0.1 that nothing listens on right now.
#pragma once

#include <string>

#include "absl/status/statusor.h"

namespace pgfleet::testutil {

// Binds 127.0.0.1:0, reads back the port the kernel chose, closes the socket. Another process
// could take the port before the caller binds it; in practice the kernel hands out ports
// round-robin, so reuse within a test run is rare.
absl::StatusOr<int> PickFreePort();

// A TCP socket listening on 127.0.0.1, on a port the kernel picked: for tests that stand in
// for a peer (a scripted server, a relay, a listener that never accepts). The caller owns fd.
struct LoopbackListener {
  int fd = -1;
  int port = 0;
};
absl::StatusOr<LoopbackListener> ListenOnLoopback(int backlog = 16);

// True if a TCP connect to 127.0.0.1:port succeeds right now.
bool CanConnect(int port);
// Whether something accepts connections on the unix socket at `path`.
bool CanConnectUnix(const std::string& path);

}  // namespace pgfleet::testutil
