#include "tests/testutil/free_port.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace pgfleet::testutil {

namespace {

// A TCP socket bound to 127.0.0.1 on a port the kernel picks, listening when `backlog` >= 0.
absl::StatusOr<LoopbackListener> BindLoopback(int backlog) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  const char* step = nullptr;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    step = "bind 127.0.0.1:0";
  } else if (backlog >= 0 && listen(fd, backlog) != 0) {
    step = "listen";
  } else if (getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    step = "getsockname";
  }
  if (step != nullptr) {
    const int err = errno;
    close(fd);
    return absl::InternalError(absl::StrCat(step, ": ", std::strerror(err)));
  }
  return LoopbackListener{fd, static_cast<int>(ntohs(addr.sin_port))};
}

}  // namespace

absl::StatusOr<int> PickFreePort() {
  absl::StatusOr<LoopbackListener> bound = BindLoopback(-1);
  if (!bound.ok()) return bound.status();
  close(bound->fd);
  return bound->port;
}

absl::StatusOr<LoopbackListener> ListenOnLoopback(int backlog) { return BindLoopback(backlog); }

bool CanConnect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  bool ok = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  close(fd);
  return ok;
}

bool CanConnectUnix(const std::string& path) {
  sockaddr_un addr{};
  if (path.size() >= sizeof(addr.sun_path)) return false;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), path.size());
  bool ok = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  close(fd);
  return ok;
}

}  // namespace pgfleet::testutil
