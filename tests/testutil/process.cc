#include "tests/testutil/process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "tests/testutil/free_port.h"

extern char** environ;

namespace pgfleet::testutil {
namespace {

absl::Status ErrnoStatus(const std::string& what, int err) {
  return absl::InternalError(absl::StrCat(what, ": ", std::strerror(err)));
}

// Resolves a program name against PATH, as execvp would (but before fork, so the child only
// makes async-signal-safe calls).
std::string ResolveProgram(const std::string& name) {
  if (name.find('/') != std::string::npos) return name;
  const char* path = std::getenv("PATH");
  std::string search = path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin";
  for (absl::string_view dir : absl::StrSplit(search, ':')) {
    if (dir.empty()) dir = ".";
    std::string candidate = absl::StrCat(dir, "/", name);
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return name;
}

struct ChildSetup {
  std::vector<std::string> argv;
  std::map<std::string, std::string> env;
  std::string working_dir;
  int stdout_fd = -1;  // -1: /dev/null.
  int stderr_fd = -1;
  bool die_with_parent = true;
};

absl::StatusOr<pid_t> SpawnImpl(const ChildSetup& setup) {
  if (setup.argv.empty()) return absl::InvalidArgumentError("empty argv");
  const std::string program = ResolveProgram(setup.argv[0]);

  std::vector<char*> argv;
  for (const std::string& arg : setup.argv) argv.push_back(const_cast<char*>(arg.c_str()));
  argv.push_back(nullptr);

  std::map<std::string, std::string> env_map;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    std::string entry = *e;
    size_t eq = entry.find('=');
    if (eq == std::string::npos) continue;
    env_map[entry.substr(0, eq)] = entry.substr(eq + 1);
  }
  for (const auto& [key, value] : setup.env) env_map[key] = value;
  std::vector<std::string> env_strings;
  env_strings.reserve(env_map.size());
  for (const auto& [key, value] : env_map) env_strings.push_back(absl::StrCat(key, "=", value));
  std::vector<char*> envp;
  for (std::string& entry : env_strings) envp.push_back(entry.data());
  envp.push_back(nullptr);

  int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (devnull < 0) return ErrnoStatus("open /dev/null", errno);
  // The child reports a failed exec through this pipe; a successful exec closes it.
  int report[2];
  if (pipe2(report, O_CLOEXEC) != 0) {
    int err = errno;
    close(devnull);
    return ErrnoStatus("pipe2", err);
  }
  const pid_t parent = getpid();
  const char* working_dir = setup.working_dir.empty() ? nullptr : setup.working_dir.c_str();
  const int out_fd = setup.stdout_fd >= 0 ? setup.stdout_fd : devnull;
  const int err_fd = setup.stderr_fd >= 0 ? setup.stderr_fd : devnull;

  pid_t pid = fork();
  if (pid < 0) {
    int err = errno;
    close(devnull);
    close(report[0]);
    close(report[1]);
    return ErrnoStatus("fork", err);
  }
  if (pid == 0) {
    // Child: async-signal-safe calls only.
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    signal(SIGPIPE, SIG_DFL);
    if (setup.die_with_parent) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(127);
    }
    int step_errno = 0;
    if (dup2(devnull, 0) < 0 || dup2(out_fd, 1) < 0 || dup2(err_fd, 2) < 0) {
      step_errno = errno;
    } else if (working_dir != nullptr && chdir(working_dir) != 0) {
      step_errno = errno;
    } else {
      execve(program.c_str(), argv.data(), envp.data());
      step_errno = errno;
    }
    ssize_t ignored = write(report[1], &step_errno, sizeof(step_errno));
    (void)ignored;
    _exit(127);
  }
  close(devnull);
  close(report[1]);
  int child_errno = 0;
  ssize_t n;
  do {
    n = read(report[0], &child_errno, sizeof(child_errno));
  } while (n < 0 && errno == EINTR);
  close(report[0]);
  if (n == static_cast<ssize_t>(sizeof(child_errno))) {
    int status;
    waitpid(pid, &status, 0);
    return ErrnoStatus(absl::StrCat("exec ", program), child_errno);
  }
  return pid;
}

}  // namespace

absl::StatusOr<pid_t> Spawn(const std::vector<std::string>& argv, const SpawnOptions& options) {
  ChildSetup setup;
  setup.argv = argv;
  setup.env = options.env;
  setup.working_dir = options.working_dir;
  setup.die_with_parent = options.die_with_parent;
  int out_fd = -1;
  int err_fd = -1;
  if (!options.stdout_path.empty()) {
    out_fd = open(options.stdout_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (out_fd < 0) return ErrnoStatus(absl::StrCat("open ", options.stdout_path), errno);
  }
  if (!options.stderr_path.empty()) {
    if (options.stderr_path == options.stdout_path) {
      err_fd = out_fd;
    } else {
      err_fd = open(options.stderr_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
      if (err_fd < 0) {
        int err = errno;
        if (out_fd >= 0) close(out_fd);
        return ErrnoStatus(absl::StrCat("open ", options.stderr_path), err);
      }
    }
  }
  setup.stdout_fd = out_fd;
  setup.stderr_fd = err_fd;
  absl::StatusOr<pid_t> pid = SpawnImpl(setup);
  if (out_fd >= 0) close(out_fd);
  if (err_fd >= 0 && err_fd != out_fd) close(err_fd);
  return pid;
}

absl::StatusOr<int> WaitPid(pid_t pid, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  absl::Duration backoff = absl::Milliseconds(1);
  while (true) {
    int status = 0;
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    if (r < 0 && errno != EINTR) return ErrnoStatus(absl::StrCat("waitpid ", pid), errno);
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("pid ", pid, " still running after ", absl::FormatDuration(timeout)));
    }
    absl::SleepFor(backoff);
    backoff = std::min(backoff * 2, absl::Milliseconds(20));
  }
}

std::string DescribeWaitStatus(int wait_status) {
  if (WIFEXITED(wait_status)) return absl::StrCat("exit ", WEXITSTATUS(wait_status));
  if (WIFSIGNALED(wait_status)) {
    int sig = WTERMSIG(wait_status);
    return absl::StrFormat("signal %d (%s)%s", sig, strsignal(sig),
                           WCOREDUMP(wait_status) ? ", core dumped" : "");
  }
  return absl::StrCat("wait status ", wait_status);
}

bool RunResult::Succeeded() const {
  return !timed_out && WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == 0;
}

std::optional<int> RunResult::ExitCode() const {
  if (timed_out || !WIFEXITED(wait_status)) return std::nullopt;
  return WEXITSTATUS(wait_status);
}

std::string RunResult::Describe() const {
  return absl::StrCat(timed_out ? "timed out, " : "", DescribeWaitStatus(wait_status),
                      "\n--- stdout ---\n", stdout_text, "\n--- stderr ---\n", stderr_text);
}

absl::StatusOr<RunResult> RunCommand(const std::vector<std::string>& argv,
                                     const RunOptions& options) {
  int out_pipe[2];
  int err_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0) return ErrnoStatus("pipe2", errno);
  if (pipe2(err_pipe, O_CLOEXEC) != 0) {
    int err = errno;
    close(out_pipe[0]);
    close(out_pipe[1]);
    return ErrnoStatus("pipe2", err);
  }
  ChildSetup setup;
  setup.argv = argv;
  setup.env = options.env;
  setup.working_dir = options.working_dir;
  setup.stdout_fd = out_pipe[1];
  setup.stderr_fd = err_pipe[1];
  absl::StatusOr<pid_t> pid = SpawnImpl(setup);
  close(out_pipe[1]);
  close(err_pipe[1]);
  if (!pid.ok()) {
    close(out_pipe[0]);
    close(err_pipe[0]);
    return pid.status();
  }
  fcntl(out_pipe[0], F_SETFL, O_NONBLOCK);
  fcntl(err_pipe[0], F_SETFL, O_NONBLOCK);

  RunResult result;
  const absl::Time deadline = absl::Now() + options.timeout;
  int fds[2] = {out_pipe[0], err_pipe[0]};
  std::string* sinks[2] = {&result.stdout_text, &result.stderr_text};
  bool open_fds[2] = {true, true};
  bool exited = false;
  auto drain = [&](int i) {
    char buf[65536];
    while (open_fds[i]) {
      ssize_t n = read(fds[i], buf, sizeof(buf));
      if (n > 0) {
        sinks[i]->append(buf, static_cast<size_t>(n));
      } else if (n == 0) {
        open_fds[i] = false;
      } else if (errno == EINTR) {
        continue;
      } else {
        if (errno != EAGAIN) open_fds[i] = false;
        break;
      }
    }
  };
  while (true) {
    int status = 0;
    pid_t r = waitpid(*pid, &status, WNOHANG);
    if (r == *pid) {
      result.wait_status = status;
      exited = true;
    }
    if (exited) {
      // A grandchild may still hold the pipes (a daemon); take what is there and stop.
      drain(0);
      drain(1);
      break;
    }
    if (absl::Now() >= deadline) {
      kill(*pid, SIGKILL);
      waitpid(*pid, &result.wait_status, 0);
      result.timed_out = true;
      drain(0);
      drain(1);
      break;
    }
    struct pollfd pfds[2];
    int nfds = 0;
    int index[2];
    for (int i = 0; i < 2; ++i) {
      if (!open_fds[i]) continue;
      pfds[nfds] = {fds[i], POLLIN, 0};
      index[nfds] = i;
      ++nfds;
    }
    if (nfds == 0) {
      absl::SleepFor(absl::Milliseconds(2));
      continue;
    }
    int ready = poll(pfds, static_cast<nfds_t>(nfds), 20);
    if (ready > 0) {
      for (int k = 0; k < nfds; ++k) {
        if (pfds[k].revents != 0) drain(index[k]);
      }
    }
  }
  close(out_pipe[0]);
  close(err_pipe[0]);
  return result;
}

std::vector<std::string> ProcessUids(pid_t pid) {
  absl::StatusOr<std::string> status = ReadFile(absl::StrCat("/proc/", pid, "/status"));
  if (!status.ok()) return {};
  for (absl::string_view line : absl::StrSplit(*status, '\n')) {
    if (absl::ConsumePrefix(&line, "Uid:")) {
      return absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    }
  }
  return {};
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::ostringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

std::string ReadFileTail(const std::string& path, size_t max_bytes) {
  absl::StatusOr<std::string> contents = ReadFile(path);
  if (!contents.ok()) return "";
  if (contents->size() <= max_bytes) return *contents;
  std::string tail = contents->substr(contents->size() - max_bytes);
  size_t newline = tail.find('\n');
  if (newline != std::string::npos && newline + 1 < tail.size()) tail = tail.substr(newline + 1);
  return absl::StrCat("[...]\n", tail);
}

absl::Status WriteFile(const std::string& path, const std::string& contents) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::InternalError(absl::StrCat("cannot open ", path, " for writing"));
  out << contents;
  out.close();
  if (!out) return absl::InternalError(absl::StrCat("error writing ", path));
  return absl::OkStatus();
}

absl::Status LaunchOnFreePort(const std::function<absl::Status(int port)>& launch) {
  absl::Status last = absl::OkStatus();
  for (int attempt = 0; attempt < 3; ++attempt) {
    absl::StatusOr<int> port = PickFreePort();
    if (!port.ok()) return port.status();
    last = launch(*port);
    if (last.ok()) return last;
    // Only a lost race for the port is worth another try.
    if (!absl::StrContains(last.message(), "in use") &&
        !absl::StrContains(last.message(), "could not bind")) {
      break;
    }
  }
  return last;
}

ChildProcess::~ChildProcess() {
  if (pid_ > 0 && IsRunning()) {
    absl::StatusOr<int> stopped = Stop(absl::Seconds(10));
    if (!stopped.ok()) {
      fprintf(stderr, "%s: %s\n", program_.c_str(), stopped.status().ToString().c_str());
    }
  }
}

bool ChildProcess::IsRunning() {
  if (pid_ <= 0 || reaped_) return false;
  int status = 0;
  if (waitpid(pid_, &status, WNOHANG) == pid_) {
    reaped_ = true;
    wait_status_ = status;
    return false;
  }
  return true;
}

absl::Status ChildProcess::Signal(int sig) {
  if (!IsRunning()) return absl::FailedPreconditionError(absl::StrCat(program_, " is not running"));
  if (kill(pid_, sig) != 0) return ErrnoStatus("kill", errno);
  return absl::OkStatus();
}

absl::StatusOr<int> ChildProcess::WaitForExit(absl::Duration timeout) {
  if (pid_ <= 0) return absl::FailedPreconditionError(absl::StrCat(program_, " was never started"));
  if (reaped_) return wait_status_;
  absl::StatusOr<int> status = WaitPid(pid_, timeout);
  if (status.ok()) {
    reaped_ = true;
    wait_status_ = *status;
  }
  return status;
}

absl::StatusOr<int> ChildProcess::Stop(absl::Duration grace) {
  if (pid_ <= 0) return absl::FailedPreconditionError(absl::StrCat(program_, " was never started"));
  if (!IsRunning()) return wait_status_;
  kill(pid_, SIGTERM);
  absl::StatusOr<int> status = WaitForExit(grace);
  if (status.ok()) return status;
  kill(pid_, SIGKILL);
  (void)WaitForExit(absl::Seconds(10));
  return absl::DeadlineExceededError(absl::StrCat(program_, " pid ", pid_, " ignored SIGTERM for ",
                                                  absl::FormatDuration(grace), "; SIGKILLed"));
}

absl::Status ChildProcess::Kill9() {
  if (!IsRunning()) return absl::FailedPreconditionError(absl::StrCat(program_, " is not running"));
  if (kill(pid_, SIGKILL) != 0) return ErrnoStatus("kill", errno);
  return WaitForExit(absl::Seconds(10)).status();
}

absl::Status ChildProcess::SpawnAndAwait(const std::vector<std::string>& argv,
                                         const SpawnOptions& options, absl::Duration timeout,
                                         const std::string& awaited,
                                         const std::function<bool()>& ready) {
  absl::StatusOr<pid_t> pid = Spawn(argv, options);
  if (!pid.ok()) return pid.status();
  pid_ = *pid;
  reaped_ = false;
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    if (!IsRunning()) {
      return absl::InternalError(absl::StrCat(program_, " exited during startup (",
                                              DescribeWaitStatus(wait_status_), ")\n",
                                              Diagnostics()));
    }
    if (ready()) return absl::OkStatus();
    if (absl::Now() >= deadline) {
      std::string diagnostics = Diagnostics();
      kill(pid_, SIGKILL);
      (void)WaitForExit(absl::Seconds(10));
      return absl::DeadlineExceededError(absl::StrCat(program_, " did not ", awaited, " within ",
                                                      absl::FormatDuration(timeout), "\n",
                                                      diagnostics));
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
}

std::string ChildProcess::StateLine(const std::string& label, const std::string& detail) const {
  const std::string where = absl::StrCat(dir(), detail);
  return absl::StrCat(
      "--- ", label, " pid ", pid_, where.empty() ? "" : " (" + where + ")", " ",
      reaped_ ? absl::StrCat("exited: ", DescribeWaitStatus(wait_status_)) : std::string("running"),
      " ---\n");
}

}  // namespace pgfleet::testutil
