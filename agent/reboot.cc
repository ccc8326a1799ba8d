#include "agent/reboot.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "agent/build_info.h"
#include "common/log.h"

namespace pgfleet::agent {
namespace {

using handover_wire::kRefused;
using handover_wire::ReadHandoverMessage;
using handover_wire::SendMessage;

// Where a -R process waits for agent `pid` (abstract namespace: sun_path starts with a NUL).
socklen_t TakeoverAddress(pid_t pid, sockaddr_un& addr) {
  addr = {};
  addr.sun_family = AF_UNIX;
  const std::string name = absl::StrCat("pgfleet-agent-takeover/", pid);
  memcpy(addr.sun_path + 1, name.data(), name.size());
  return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
}

absl::StatusOr<ucred> PeerCredentials(int fd) {
  ucred cred{};
  socklen_t length = sizeof(cred);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &length) != 0) {
    return absl::ErrnoToStatus(errno, "SO_PEERCRED");
  }
  return cred;
}

}  // namespace

absl::StatusOr<std::optional<pid_t>> FindAgentToTakeOver(const std::string& pidfile) {
  if (pidfile.empty()) {
    return absl::FailedPreconditionError(
        "-R/--reboot finds the running agent through the config's pidfile, and the config sets "
        "none: set pidfile, or restart the running agent with SIGUSR2 or the console's RESTART "
        "(the same hand-over)");
  }
  std::ifstream file(pidfile);
  if (!file) {
    if (errno == ENOENT) return std::nullopt;
    return absl::ErrnoToStatus(errno, absl::StrCat("-R: cannot read the pidfile ", pidfile));
  }
  long pid = 0;
  if (!(file >> pid) || pid <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("-R: the pidfile ", pidfile, " does not hold a pid"));
  }
  return CheckAgentToTakeOver(static_cast<pid_t>(pid), pidfile);
}

absl::StatusOr<std::optional<pid_t>> CheckAgentToTakeOver(pid_t pid, const std::string& where) {
  if (pid == getpid()) return std::nullopt;
  if (kill(pid, 0) != 0) {
    if (errno == ESRCH) return std::nullopt;  // Stale: nobody to take over from.
    return absl::PermissionDeniedError(absl::StrCat(
        "-R: pid ", pid, " (", where, ") runs as another user: run -R as that user or root"));
  }
  // Only a pgfleet-agent knows the hand-over; another program's SIGUSR2 means something else.
  if (EmbeddedVersionOfFile(absl::StrCat("/proc/", pid, "/exe")).empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "-R: pid ", pid, " (", where,
        ") is not a pgfleet-agent: -R takes the sockets over from a running pgfleet-agent "
        "only; stop that process first"));
  }
  return pid;
}

absl::StatusOr<InheritedSockets> RequestTakeover(pid_t old_pid, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  const int listener = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (listener < 0) return absl::ErrnoToStatus(errno, "-R: socket");
  sockaddr_un addr;
  const socklen_t length = TakeoverAddress(old_pid, addr);
  if (bind(listener, reinterpret_cast<sockaddr*>(&addr), length) != 0 || listen(listener, 1) != 0) {
    const int error = errno;
    close(listener);
    return absl::ErrnoToStatus(
        error, error == EADDRINUSE
                   ? absl::StrCat("-R: another process is already taking over from pid ", old_pid)
                   : std::string("-R: cannot listen for the running agent"));
  }
  if (kill(old_pid, SIGUSR2) != 0) {
    const int error = errno;
    close(listener);
    return absl::ErrnoToStatus(error, absl::StrCat("-R: cannot signal pid ", old_pid));
  }
  pollfd pfd{listener, POLLIN, 0};
  int ready;
  do {
    ready = poll(
        &pfd, 1,
        static_cast<int>(std::max<int64_t>(0, absl::ToInt64Milliseconds(deadline - absl::Now()))));
  } while (ready < 0 && errno == EINTR);
  const int channel = ready > 0 ? accept4(listener, nullptr, nullptr, SOCK_CLOEXEC) : -1;
  close(listener);
  if (channel < 0) {
    return absl::DeadlineExceededError(absl::StrCat(
        "-R: the agent (pid ", old_pid, ") did not answer within ", absl::FormatDuration(timeout),
        "; its log says why (a pgfleet-agent from before -R restarts by itself on SIGUSR2)"));
  }
  absl::StatusOr<ucred> peer = PeerCredentials(channel);
  if (!peer.ok() || peer->pid != old_pid) {
    close(channel);
    return absl::PermissionDeniedError(absl::StrCat(
        "-R: the connection came from another process than pid ", old_pid, ": refused"));
  }
  absl::StatusOr<InheritedSockets> inherited =
      ReadHandoverMessage(channel, std::max(deadline - absl::Now(), absl::Seconds(1)));
  if (!inherited.ok()) {
    return absl::Status(inherited.status().code(),
                        absl::StrCat("-R: the agent (pid ", old_pid,
                                     ") did not hand over: ", inherited.status().message()));
  }
  inherited->requested = true;
  return inherited;
}

std::optional<TakeoverRequest> AcceptTakeoverRequest() {
  const int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return std::nullopt;
  sockaddr_un addr;
  const socklen_t length = TakeoverAddress(getpid(), addr);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), length) != 0) {
    close(fd);  // Nobody waiting (ECONNREFUSED): a plain SIGUSR2.
    return std::nullopt;
  }
  absl::StatusOr<ucred> peer = PeerCredentials(fd);
  if (!peer.ok() || (peer->uid != geteuid() && peer->uid != 0)) {
    PGF_WARN("handover",
             "SIGUSR2: a process of another user (pid %d, uid %d) waits to take the listeners "
             "over: ignored",
             peer.ok() ? peer->pid : 0, peer.ok() ? static_cast<int>(peer->uid) : -1);
    close(fd);
    return std::nullopt;
  }
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
  TakeoverRequest request;
  request.channel_fd = fd;
  request.pid = peer->pid;
  request.pidfd = static_cast<int>(syscall(SYS_pidfd_open, peer->pid, 0));
  return request;
}

void RefuseTakeover(TakeoverRequest& request, const std::string& reason) {
  if (request.channel_fd >= 0) {
    (void)SendMessage(request.channel_fd, absl::StrCat(kRefused, reason.substr(0, 2000)), {});
  }
  if (request.channel_fd >= 0) close(request.channel_fd);
  if (request.pidfd >= 0) close(request.pidfd);
  request.channel_fd = request.pidfd = -1;
}

}  // namespace pgfleet::agent
