// One PostgreSQL cluster shared by every store unit test that runs on PostgreSQL, as a ctest
// fixture (tests/CMakeLists.txt): ctest runs each test in its own process, and without it each
// of those tests started and stopped a cluster of its own (~3-6 s each, more under ASan).
//
//   store_postgres_fixture start FILE   starts a cluster in a background process, writes
//                                       "PORT PID" to FILE once it accepts connections
//   store_postgres_fixture stop FILE    stops that process (which stops and deletes the cluster)
//
// The tests find FILE through $PGFLEET_STORE_POSTGRES (tests/unit/store_backends.h); run by
// hand without it, a test binary starts a cluster of its own as before.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "tests/testutil/postgres_env.h"

namespace {

using pgfleet::testutil::PostgresEnv;

// A fixture left behind by an interrupted ctest run (its cleanup never ran) stops by itself.
constexpr int kLifetimeSeconds = 2 * 60 * 60;

int Fail(const std::string& message) {
  fprintf(stderr, "store_postgres_fixture: %s\n", message.c_str());
  return 1;
}

// Runs in the background child: owns the cluster until SIGTERM or the lifetime ends.
[[noreturn]] void ServeCluster(const std::string& file, int ready_fd) {
  // ctest reads the fixture's output until every writer closes it: the child must not hold it.
  const int null_fd = open("/dev/null", O_RDWR);
  dup2(null_fd, STDIN_FILENO);
  const std::string log_path = file + ".log";
  const int log_fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  dup2(log_fd >= 0 ? log_fd : null_fd, STDOUT_FILENO);
  dup2(log_fd >= 0 ? log_fd : null_fd, STDERR_FILENO);
  setsid();

  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  sigprocmask(SIG_BLOCK, &stop_signals, nullptr);

  absl::StatusOr<std::unique_ptr<PostgresEnv>> cluster = PostgresEnv::Start();
  char ready = 0;
  if (cluster.ok()) {
    const std::string tmp = file + ".tmp";
    std::ofstream(tmp) << (*cluster)->port() << " " << getpid() << "\n";
    if (rename(tmp.c_str(), file.c_str()) == 0) ready = 1;
  } else {
    fprintf(stderr, "starting PostgreSQL: %s\n", cluster.status().ToString().c_str());
  }
  (void)!write(ready_fd, &ready, 1);
  close(ready_fd);
  if (!ready) _exit(1);

  const struct timespec lifetime = {kLifetimeSeconds, 0};
  sigtimedwait(&stop_signals, nullptr, &lifetime);
  cluster->reset();  // pg_ctl stop, then the cluster's directory is deleted.
  unlink(file.c_str());
  _exit(0);
}

int Start(const std::string& file) {
  unlink(file.c_str());
  int ready_pipe[2];
  if (pipe2(ready_pipe, O_CLOEXEC) != 0) return Fail(strerror(errno));
  fflush(nullptr);
  const pid_t child = fork();
  if (child < 0) return Fail(strerror(errno));
  if (child == 0) {
    close(ready_pipe[0]);
    ServeCluster(file, ready_pipe[1]);
  }
  close(ready_pipe[1]);
  char ready = 0;
  ssize_t got;
  do {
    got = read(ready_pipe[0], &ready, 1);
  } while (got < 0 && errno == EINTR);
  if (got != 1 || !ready) {
    std::ifstream log(file + ".log");
    std::string line;
    while (std::getline(log, line)) fprintf(stderr, "%s\n", line.c_str());
    return Fail("the cluster did not start");
  }
  printf("store_postgres_fixture: PostgreSQL for the store tests is up (%s)\n", file.c_str());
  return 0;
}

int Stop(const std::string& file) {
  std::ifstream in(file);
  std::string line;
  if (!std::getline(in, line)) {
    printf("store_postgres_fixture: no cluster to stop (%s absent)\n", file.c_str());
    return 0;
  }
  std::vector<std::string> fields = absl::StrSplit(line, ' ');
  int pid = 0;
  if (fields.size() != 2 || !absl::SimpleAtoi(fields[1], &pid) || pid <= 1) {
    return Fail(absl::StrCat(file, ": expected \"PORT PID\", got \"", line, "\""));
  }
  const int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) {
    unlink(file.c_str());
    return Fail(absl::StrCat("the fixture process ", pid, " is gone: ", strerror(errno)));
  }
  if (kill(pid, SIGTERM) != 0) return Fail(strerror(errno));
  // The pidfd becomes readable when the process exits: after the cluster has stopped.
  struct pollfd exited = {pidfd, POLLIN, 0};
  if (poll(&exited, 1, 120 * 1000) != 1) return Fail("the fixture process did not exit");
  close(pidfd);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) return Fail("usage: store_postgres_fixture start|stop FILE");
  const std::string command = argv[1];
  if (command == "start") return Start(argv[2]);
  if (command == "stop") return Stop(argv[2]);
  return Fail(absl::StrCat("unknown command '", command, "' (start or stop)"));
}
