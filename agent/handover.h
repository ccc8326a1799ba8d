// Zero-downtime restart: the running agent (the old process) starts a new process of the binary
// now at its path and hands it its listening sockets; the new one starts serving with them,
// says it is ready, and only then the old one stops accepting, lets its clients finish and
// exits.
//
// Why SCM_RIGHTS over a socketpair and not SO_REUSEPORT overlap (measured: see
// tests/integration/handover_test.cc and the report for issue 19):
//  - The listening sockets themselves move. The kernel's accept queue is one per socket, so a
//    connection that arrived a microsecond before the old process lets go is still in the
//    queue the new process accepts from. With SO_REUSEPORT each process has its own socket and
//    queue: connections the kernel hashed to the old socket between its last accept() and its
//    close() are reset (the classic reuseport reload race; PgBouncer's rolling-restart docs
//    accept it, HAProxy and Envoy pass fds for this reason).
//  - It works whatever the config says: so_reuseport need not be on, and a unix socket (which
//    SO_REUSEPORT does not cover on Linux) keeps its inode, so clients connecting through it
//    never see ENOENT or ECONNREFUSED while the path is unlinked and bound again.
//  - Only listeners move, not client or server connections (PgBouncer's -R moved those too,
//    with their TLS and protocol state, which is what made it fragile): the old process keeps
//    its clients until they are done, so nothing in flight is handed across.
//
// The channel is a SOCK_SEQPACKET socketpair; the new process finds its end in the environment
// variable PGFLEET_HANDOVER_FD. Messages (one datagram each):
//   old -> new: "pgfleet-handover 1\nparent N\ncommand N\n" then one line per fd passed with
//               SCM_RIGHTS in the same datagram, in order: "listener", "metrics", "state-lock";
//               then the console state that outlives a process (CarriedState): "pause MS DB"
//               (MS: milliseconds left before the pause ends by itself, "-" for none; DB empty
//               for a PAUSE of everything) and "disable DB", one line each.
//   new -> old: "ready N" (N: the new pid) once it accepts on the listeners and, in fleet mode,
//               its controller stream is up (or a bound passed); "failed REASON" if it cannot
//               start. End of file without "ready" is a failure too (the process died).
// The state dir lock is an flock on an open file description: passing the fd shares the lock,
// so the new process holds it before the old one lets go, and nobody else can take it between.
//
// PgBouncer's -R/--reboot hands over the same way to a process the admin started instead of a
// forked one: see agent/reboot.h.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

struct event;

namespace pgfleet::agent {

class EventLoop;

// The process's own argv, kept by main() so a hand-over starts the new process with the same
// flags.
void SetProcessArguments(int argc, const char* const* argv);

// The path of the running executable as /proc/self/exe names it, without the " (deleted)" the
// kernel appends once a package upgrade has replaced the file: the path, not the old inode, so
// the new binary runs.
absl::StatusOr<std::string> ExecutablePath();

// What the old process's console (and the controller's maintenance) set that the new process
// must keep: paused databases, with the time left on a PAUSE ... FOR, and DISABLE-d ones.
// SUSPEND is not carried: a suspended agent refuses RESTART (see Agent::BeginHandover).
struct CarriedState {
  struct Pause {
    std::string db;  // Empty: every database.
    std::optional<absl::Duration> remaining;
  };
  std::vector<Pause> paused;
  std::vector<std::string> disabled;
};

// What the new process received from the old one.
struct InheritedSockets {
  int channel_fd = -1;  // Where to say "ready" or "failed".
  pid_t parent_pid = 0;
  uint64_t command_id = 0;  // The controller command that asked for the restart, 0 if none.
  std::vector<int> listeners;
  int metrics_fd = -1;
  int state_lock_fd = -1;
  CarriedState state;
  // Taken over with -R: this process was started by an admin, not forked by the old one (so
  // -d applies to it).
  bool requested = false;
};

// In the new process, before anything else starts: nullopt unless PGFLEET_HANDOVER_FD is set
// (the variable is removed so a later hand-over from this process does not see it). Waits up
// to `timeout` for the old process's message.
absl::StatusOr<std::optional<InheritedSockets>> ReceiveHandover(absl::Duration timeout);
// The new process's answers. Each closes the channel.
void ReportHandoverReady(InheritedSockets& inherited);
void ReportHandoverFailed(InheritedSockets& inherited, const std::string& reason);
// Closes whatever the new process did not use.
void CloseUnusedInherited(InheritedSockets& inherited);

// A -R process waiting for this agent's listeners (the old process's side; agent/reboot.h).
struct TakeoverRequest {
  int channel_fd = -1;
  pid_t pid = 0;
  int pidfd = -1;  // To stop it if it never gets ready; -1 if the kernel has no pidfd_open.
};

// The fds the old process hands over.
struct HandoverFds {
  std::vector<int> listeners;
  int metrics_fd = -1;
  int state_lock_fd = -1;
  CarriedState state;  // Not fds, but sent in the same message.
};

// The old process's side of one hand-over, on its loop: starts the new process (or, given a -R
// `requester`, hands over to that one), sends the fds and waits for its answer. `done` runs once
// on the loop: OK with the new pid when it is ready, an error naming why otherwise (a forked
// process is then killed and reaped; a -R process that was not ready in time is killed).
class HandoverParent {
 public:
  using Done = std::function<void(absl::StatusOr<pid_t>)>;
  static absl::StatusOr<std::unique_ptr<HandoverParent>> Start(
      EventLoop& loop, const HandoverFds& fds, uint64_t command_id, absl::Duration timeout,
      Done done, std::optional<TakeoverRequest> requester = std::nullopt);
  ~HandoverParent();
  HandoverParent(const HandoverParent&) = delete;
  HandoverParent& operator=(const HandoverParent&) = delete;

  pid_t child_pid() const { return child_pid_; }

 private:
  HandoverParent(EventLoop& loop, Done done) : loop_(loop), done_(std::move(done)) {}
  // Sends the first message on channel_fd_ and waits for the answer.
  absl::Status SendAndWatch(const std::string& text, const std::vector<int>& fds,
                            absl::Duration timeout);
  static void OnReadable(int fd, short what, void* arg);
  void Finish(absl::StatusOr<pid_t> outcome);
  // A failed child is killed (if it still runs) and reaped, and its exit status described.
  std::string ReapFailedChild();

  EventLoop& loop_;
  Done done_;
  int channel_fd_ = -1;
  pid_t child_pid_ = -1;
  // A -R process, not our child: never reaped; killed through its pidfd if it hangs.
  bool requested_ = false;
  int requester_pidfd_ = -1;
  event* readable_ = nullptr;
  bool finished_ = false;
};

// The channel's wire, shared by this file and agent/reboot.cc (not for other callers).
namespace handover_wire {
// The old process's answer to a -R request it turns down, followed by why.
inline constexpr char kRefused[] = "refused ";
// One datagram on the channel; `fds` (if any) ride along with SCM_RIGHTS.
absl::Status SendMessage(int fd, const std::string& text, const std::vector<int>& fds);
// Waits up to `timeout` for the old process's message on `channel` and takes what it carries.
// `channel` is owned by the result (closed on error).
absl::StatusOr<InheritedSockets> ReadHandoverMessage(int channel, absl::Duration timeout);
}  // namespace handover_wire

}  // namespace pgfleet::agent
