#include "agent/handover.h"

#include <event2/event.h>
#include <fcntl.h>
#include <linux/close_range.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "agent/event_loop.h"
#include "agent/reboot.h"
#include "common/log.h"
#include "common/status_macros.h"

extern char** environ;

namespace pgfleet::agent {
namespace {

constexpr char kChannelEnv[] = "PGFLEET_HANDOVER_FD";
constexpr char kMagic[] = "pgfleet-handover 1";
// The first message carries one line per paused or disabled database: room for thousands.
constexpr size_t kMaxMessage = 64 * 1024;
constexpr size_t kMaxFds = 64;

// The message's lines that each stand for one fd, in order. Kinds added later must start with
// "fd-": every other key is a value line, which a receiver skips when it does not know it.
bool CarriesFd(absl::string_view key) {
  return key == "listener" || key == "metrics" || key == "state-lock" ||
         absl::StartsWith(key, "fd-");
}

std::vector<std::string>& SavedArguments() {
  static std::vector<std::string> arguments;
  return arguments;
}

void CloseFd(int& fd) {
  if (fd >= 0) close(fd);
  fd = -1;
}

}  // namespace

namespace handover_wire {

absl::Status SendMessage(int fd, const std::string& text, const std::vector<int>& fds) {
  iovec iov{const_cast<char*>(text.data()), text.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  std::vector<char> control(CMSG_SPACE(sizeof(int) * fds.size()));
  if (!fds.empty()) {
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    memcpy(CMSG_DATA(cmsg), fds.data(), sizeof(int) * fds.size());
  }
  ssize_t sent;
  do {
    sent = sendmsg(fd, &msg, MSG_NOSIGNAL);
  } while (sent < 0 && errno == EINTR);
  if (sent != static_cast<ssize_t>(text.size())) {
    return absl::ErrnoToStatus(errno, "cannot send the hand-over message");
  }
  return absl::OkStatus();
}

}  // namespace handover_wire

using handover_wire::kRefused;
using handover_wire::SendMessage;

void SetProcessArguments(int argc, const char* const* argv) {
  SavedArguments().assign(argv, argv + argc);
}

absl::StatusOr<std::string> ExecutablePath() {
  char buffer[4096];
  const ssize_t n = readlink("/proc/self/exe", buffer, sizeof(buffer) - 1);
  if (n < 0) return absl::ErrnoToStatus(errno, "cannot read /proc/self/exe");
  std::string path(buffer, static_cast<size_t>(n));
  // The file was replaced (a package upgrade renames the new binary over it): the path now
  // names the new binary, which is the one to run.
  constexpr absl::string_view kDeleted = " (deleted)";
  if (absl::EndsWith(path, kDeleted)) path.resize(path.size() - kDeleted.size());
  return path;
}

absl::StatusOr<InheritedSockets> handover_wire::ReadHandoverMessage(int channel,
                                                                    absl::Duration timeout) {
  InheritedSockets inherited;
  inherited.channel_fd = channel;
  pollfd pfd{channel, POLLIN, 0};
  int ready;
  do {
    ready = poll(&pfd, 1, static_cast<int>(absl::ToInt64Milliseconds(timeout)));
  } while (ready < 0 && errno == EINTR);
  if (ready <= 0) {
    CloseFd(inherited.channel_fd);
    return absl::DeadlineExceededError("no hand-over message from the old process");
  }
  std::vector<char> buffer(kMaxMessage);
  char* text = buffer.data();
  iovec iov{text, buffer.size()};
  std::vector<char> control(CMSG_SPACE(sizeof(int) * kMaxFds));
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control.data();
  msg.msg_controllen = control.size();
  const ssize_t n = recvmsg(channel, &msg, MSG_CMSG_CLOEXEC);
  std::vector<int> fds;
  for (cmsghdr* cmsg = CMSG_FIRSTHDR(&msg); cmsg != nullptr; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
    if (cmsg->cmsg_level != SOL_SOCKET || cmsg->cmsg_type != SCM_RIGHTS) continue;
    const size_t count = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    const size_t at = fds.size();
    fds.resize(at + count);
    memcpy(fds.data() + at, CMSG_DATA(cmsg), count * sizeof(int));
  }
  auto fail = [&](const std::string& why) {
    for (int& fd : fds) CloseFd(fd);
    CloseFd(inherited.channel_fd);
    return absl::InvalidArgumentError(absl::StrCat("bad hand-over message: ", why));
  };
  if (n <= 0) return fail("nothing received");
  if ((msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0) return fail("truncated");
  const absl::string_view received(text, static_cast<size_t>(n));
  if (absl::StartsWith(received, kRefused)) {
    // A -R request the running agent turned down (agent/handover.h RequestTakeover).
    for (int& fd : fds) CloseFd(fd);
    CloseFd(inherited.channel_fd);
    return absl::FailedPreconditionError(std::string(received.substr(sizeof(kRefused) - 1)));
  }
  std::vector<std::string> lines = absl::StrSplit(received, '\n', absl::SkipEmpty());
  if (lines.empty() || lines[0] != kMagic) return fail("unknown version");
  size_t next_fd = 0;
  for (size_t i = 1; i < lines.size(); ++i) {
    std::pair<std::string, std::string> kv = absl::StrSplit(lines[i], absl::MaxSplits(' ', 1));
    if (kv.first == "parent") {
      (void)absl::SimpleAtoi(kv.second, &inherited.parent_pid);
      continue;
    }
    if (kv.first == "command") {
      (void)absl::SimpleAtoi(kv.second, &inherited.command_id);
      continue;
    }
    if (kv.first == "pause") {
      std::pair<std::string, std::string> left_db =
          absl::StrSplit(kv.second, absl::MaxSplits(' ', 1));
      CarriedState::Pause pause;
      pause.db = left_db.second;
      int64_t millis = 0;
      if (left_db.first != "-") {
        if (!absl::SimpleAtoi(left_db.first, &millis)) return fail("bad pause line");
        pause.remaining = absl::Milliseconds(std::max<int64_t>(millis, 1));
      }
      inherited.state.paused.push_back(std::move(pause));
      continue;
    }
    if (kv.first == "disable") {
      inherited.state.disabled.push_back(kv.second);
      continue;
    }
    // A value line this version does not know: a newer process's extra state, skipped so a
    // hand-over to an older build (a downgrade) still takes the sockets.
    if (!CarriesFd(kv.first)) continue;
    if (next_fd >= fds.size()) return fail("fewer fds than announced");
    const int fd = fds[next_fd];
    fds[next_fd++] = -1;
    if (kv.first == "listener") {
      inherited.listeners.push_back(fd);
    } else if (kv.first == "metrics") {
      inherited.metrics_fd = fd;
    } else if (kv.first == "state-lock") {
      inherited.state_lock_fd = fd;
    } else {
      close(fd);  // A kind this version does not know: not ours to use.
    }
  }
  for (int& fd : fds) CloseFd(fd);
  return inherited;
}

using handover_wire::ReadHandoverMessage;

absl::StatusOr<std::optional<InheritedSockets>> ReceiveHandover(absl::Duration timeout) {
  const char* value = getenv(kChannelEnv);
  if (value == nullptr) return std::nullopt;
  int channel = -1;
  const bool parsed = absl::SimpleAtoi(value, &channel) && channel >= 0;
  unsetenv(kChannelEnv);
  if (!parsed) return absl::InvalidArgumentError(absl::StrCat(kChannelEnv, " is not an fd"));
  fcntl(channel, F_SETFD, FD_CLOEXEC);
  absl::StatusOr<InheritedSockets> inherited = ReadHandoverMessage(channel, timeout);
  if (!inherited.ok()) return inherited.status();
  return std::optional<InheritedSockets>(*std::move(inherited));
}

void ReportHandoverReady(InheritedSockets& inherited) {
  if (inherited.channel_fd < 0) return;
  (void)SendMessage(inherited.channel_fd, absl::StrCat("ready ", getpid()), {});
  CloseFd(inherited.channel_fd);
}

void ReportHandoverFailed(InheritedSockets& inherited, const std::string& reason) {
  if (inherited.channel_fd < 0) return;
  (void)SendMessage(inherited.channel_fd, absl::StrCat("failed ", reason.substr(0, 2000)), {});
  CloseFd(inherited.channel_fd);
}

void CloseUnusedInherited(InheritedSockets& inherited) {
  for (int& fd : inherited.listeners) CloseFd(fd);
  inherited.listeners.clear();
  CloseFd(inherited.metrics_fd);
  CloseFd(inherited.state_lock_fd);
}

namespace {

// The first message (see handover.h) and the fds it carries, in order.
absl::StatusOr<std::pair<std::string, std::vector<int>>> HandoverMessage(const HandoverFds& fds,
                                                                         uint64_t command_id) {
  std::string text = absl::StrCat(kMagic, "\nparent ", getpid(), "\ncommand ", command_id, "\n");
  std::vector<int> passed;
  for (int fd : fds.listeners) {
    absl::StrAppend(&text, "listener\n");
    passed.push_back(fd);
  }
  if (fds.metrics_fd >= 0) {
    absl::StrAppend(&text, "metrics\n");
    passed.push_back(fds.metrics_fd);
  }
  if (fds.state_lock_fd >= 0) {
    absl::StrAppend(&text, "state-lock\n");
    passed.push_back(fds.state_lock_fd);
  }
  for (const CarriedState::Pause& pause : fds.state.paused) {
    absl::StrAppend(&text, "pause ",
                    pause.remaining.has_value()
                        ? absl::StrCat(absl::ToInt64Milliseconds(*pause.remaining))
                        : std::string("-"),
                    " ", pause.db, "\n");
  }
  for (const std::string& db : fds.state.disabled) absl::StrAppend(&text, "disable ", db, "\n");
  if (text.size() > kMaxMessage) {
    return absl::ResourceExhaustedError("too many paused or disabled databases to hand over");
  }
  return std::make_pair(std::move(text), std::move(passed));
}

}  // namespace

absl::StatusOr<std::unique_ptr<HandoverParent>> HandoverParent::Start(
    EventLoop& loop, const HandoverFds& fds, uint64_t command_id, absl::Duration timeout, Done done,
    std::optional<TakeoverRequest> requester) {
  absl::StatusOr<std::pair<std::string, std::vector<int>>> message =
      HandoverMessage(fds, command_id);
  if (requester.has_value()) {
    // -R: the new process runs already; its connection is the channel.
    std::unique_ptr<HandoverParent> parent(new HandoverParent(loop, std::move(done)));
    parent->channel_fd_ = requester->channel_fd;
    parent->child_pid_ = requester->pid;
    parent->requested_ = true;
    parent->requester_pidfd_ = requester->pidfd;
    if (!message.ok()) {
      RefuseTakeover(*requester, std::string(message.status().message()));
      parent->channel_fd_ = parent->requester_pidfd_ = -1;
      parent->finished_ = true;
      return message.status();
    }
    if (absl::Status sent = parent->SendAndWatch(message->first, message->second, timeout);
        !sent.ok()) {
      parent->finished_ = true;  // Nothing to stop: it sees the channel close and gives up.
      return sent;
    }
    PGF_INFO("handover", "pid %d (started with -R) is taking the listeners over", requester->pid);
    return parent;
  }
  if (!message.ok()) return message.status();
  const std::vector<std::string>& arguments = SavedArguments();
  if (arguments.empty()) return absl::FailedPreconditionError("the agent's argv was not kept");
  absl::StatusOr<std::string> path = ExecutablePath();
  if (!path.ok()) return path.status();
  if (access(path->c_str(), X_OK) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot execute ", *path));
  }
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) {
    return absl::ErrnoToStatus(errno, "socketpair");
  }
  std::unique_ptr<HandoverParent> parent(new HandoverParent(loop, std::move(done)));
  parent->channel_fd_ = pair[0];
  int child_end = pair[1];

  // Everything the child needs is built before fork(): the agent has other threads (the
  // controller link), so the child may only call async-signal-safe functions until execve.
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) {
    if (!absl::StartsWith(*e, absl::StrCat(kChannelEnv, "="))) env_strings.emplace_back(*e);
  }
  env_strings.push_back(absl::StrCat(kChannelEnv, "=", child_end));
  std::vector<char*> envp;
  for (std::string& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> argv_strings = arguments;
  std::vector<char*> argv;
  for (std::string& s : argv_strings) argv.push_back(s.data());
  argv.push_back(nullptr);

  // The fds go in the first datagram; the kernel keeps it until the child reads it.
  if (absl::Status sent = SendMessage(parent->channel_fd_, message->first, message->second);
      !sent.ok()) {
    close(child_end);
    return sent;
  }

  const char* exe = path->c_str();
  rlimit fd_limit{};
  getrlimit(RLIMIT_NOFILE, &fd_limit);
  const int max_fd =
      fd_limit.rlim_cur == RLIM_INFINITY ? 65536 : static_cast<int>(fd_limit.rlim_cur);
  const pid_t pid = fork();
  if (pid < 0) {
    const int error = errno;
    close(child_end);
    return absl::ErrnoToStatus(error, "fork");
  }
  if (pid == 0) {
    // The child's end of the channel survives execve and nothing else of ours does: libevent
    // opens server and cancel sockets without CLOEXEC, and a copy of one in the new process
    // would keep a PostgreSQL connection open after the old process closed it.
    if (syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC) != 0) {
      for (int fd = 3; fd < max_fd; ++fd) fcntl(fd, F_SETFD, FD_CLOEXEC);
    }
    fcntl(child_end, F_SETFD, 0);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    execve(exe, argv.data(), envp.data());
    static const char kExecFailed[] = "pgfleet-agent: hand-over: execve of the new binary failed\n";
    (void)!write(2, kExecFailed, sizeof(kExecFailed) - 1);
    _exit(127);
  }
  close(child_end);
  parent->child_pid_ = pid;
  PGF_INFO("handover", "started pid %d (%s) to take over the listeners", pid, *path);
  (void)parent->SendAndWatch("", {}, timeout);  // Sent above: only the watch is left.
  return parent;
}

absl::Status HandoverParent::SendAndWatch(const std::string& text, const std::vector<int>& fds,
                                          absl::Duration timeout) {
  if (!text.empty()) PGF_RETURN_IF_ERROR(SendMessage(channel_fd_, text, fds));
  readable_ =
      event_new(loop_.base(), channel_fd_, EV_READ | EV_PERSIST, &HandoverParent::OnReadable, this);
  const timeval tv = absl::ToTimeval(timeout);
  event_add(readable_, &tv);
  return absl::OkStatus();
}

HandoverParent::~HandoverParent() {
  if (readable_ != nullptr) event_free(readable_);
  if (channel_fd_ >= 0) close(channel_fd_);
  if (!finished_ && child_pid_ > 0) (void)ReapFailedChild();
  if (requester_pidfd_ >= 0) close(requester_pidfd_);
}

void HandoverParent::OnReadable(int fd, short what, void* arg) {
  auto* parent = static_cast<HandoverParent*>(arg);
  if ((what & EV_TIMEOUT) != 0) {
    parent->Finish(absl::DeadlineExceededError(
        absl::StrCat("the new process (pid ", parent->child_pid_, ") was not ready in time")));
    return;
  }
  char text[kMaxMessage];
  const ssize_t n = recv(fd, text, sizeof(text), MSG_DONTWAIT);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (n <= 0) {
    parent->Finish(absl::UnavailableError(
        absl::StrCat("the new process (pid ", parent->child_pid_, ") ended before it was ready")));
    return;
  }
  const absl::string_view message(text, static_cast<size_t>(n));
  if (absl::StartsWith(message, "ready ")) {
    // A -R process started with -d serves from the child it detached: the pid it reports.
    pid_t ready_pid = 0;
    if (parent->requested_ && absl::SimpleAtoi(message.substr(6), &ready_pid) && ready_pid > 0) {
      parent->child_pid_ = ready_pid;
    }
    parent->Finish(parent->child_pid_);
    return;
  }
  absl::string_view reason = message;
  absl::ConsumePrefix(&reason, "failed ");
  parent->Finish(absl::FailedPreconditionError(
      absl::StrCat("the new process (pid ", parent->child_pid_, ") could not start: ", reason)));
}

std::string HandoverParent::ReapFailedChild() {
  if (requested_) {
    // Not our child: it exits by itself once it failed or saw the channel close; one that
    // still runs (too slow) holds copies of our listeners and is stopped, through its pidfd so
    // that a reused pid is never hit.
    if (requester_pidfd_ >= 0 &&
        syscall(SYS_pidfd_send_signal, requester_pidfd_, SIGKILL, nullptr, 0) == 0) {
      return " (it was stopped)";
    }
    return "";
  }
  int status = 0;
  pid_t reaped = waitpid(child_pid_, &status, WNOHANG);
  if (reaped == 0) {
    // Still running but failed or too slow: it holds copies of our listeners, so it must not
    // linger (it would accept clients nobody serves once it stops).
    kill(child_pid_, SIGKILL);
    reaped = waitpid(child_pid_, &status, 0);
  }
  if (reaped != child_pid_) return "";
  if (WIFEXITED(status)) return absl::StrCat(" (exit status ", WEXITSTATUS(status), ")");
  if (WIFSIGNALED(status)) return absl::StrCat(" (killed by signal ", WTERMSIG(status), ")");
  return "";
}

void HandoverParent::Finish(absl::StatusOr<pid_t> outcome) {
  if (finished_) return;
  finished_ = true;
  event_del(readable_);
  close(channel_fd_);
  channel_fd_ = -1;
  // A -R process that answered "failed" or closed the channel is exiting by itself; only one
  // that is too slow must be stopped. A forked child is reaped whatever happened.
  const bool stop_it = !outcome.ok() && (!requested_ || absl::IsDeadlineExceeded(outcome.status()));
  if (stop_it) {
    outcome = absl::Status(outcome.status().code(),
                           absl::StrCat(outcome.status().message(), ReapFailedChild()));
  }
  // `done` may destroy this object: copy it out first.
  Done done = std::move(done_);
  done(std::move(outcome));
}

}  // namespace pgfleet::agent
