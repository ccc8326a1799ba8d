// What the hand-over and restart tests share: processes the test did not start (a new agent
// process is the old one's child), binaries replaced as a package manager does, and a writer
// whose every acknowledged row must survive a hand-over. Header-only: only those tests use it.
#pragma once

#include <signal.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "common/status_macros.h"
#include "tests/testutil/fixtures.h"
#include "tests/testutil/pq.h"
#include "tests/testutil/process.h"
#include "tests/testutil/wait.h"

namespace pgfleet::testutil {

inline absl::StatusOr<pid_t> ReadPidfile(const std::string& path) {
  PGF_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  int pid = 0;
  if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(text), &pid) || pid <= 0) {
    return absl::InternalError(absl::StrCat("pidfile ", path, " says '", text, "'"));
  }
  return pid;
}

// The kernel's start time of `pid` (clock ticks since boot, /proc/PID/stat field 22), or
// nullopt when no such process exists. A pid plus its start time names one process: pids are
// reused (pid_max is 32768 here, and PostgreSQL forks a backend per connection), so a test
// that signals a process it did not start must check it is still the same one.
inline std::optional<uint64_t> ProcessStartTicks(pid_t pid) {
  absl::StatusOr<std::string> stat = ReadFile(absl::StrCat("/proc/", pid, "/stat"));
  if (!stat.ok()) return std::nullopt;
  const size_t paren = stat->rfind(')');
  if (paren == std::string::npos) return std::nullopt;
  std::vector<std::string> fields = absl::StrSplit(stat->substr(paren + 2), ' ');
  uint64_t ticks = 0;
  // Field 3 (state) is fields[0], so field 22 (starttime) is fields[19].
  if (fields.size() < 20 || !absl::SimpleAtoi(fields[19], &ticks)) return std::nullopt;
  return ticks;
}

// Whether `pid` runs (a zombie counts as gone: its parent, the old agent, may be gone too).
inline bool ProcessRuns(pid_t pid) {
  absl::StatusOr<std::string> stat = ReadFile(absl::StrCat("/proc/", pid, "/stat"));
  if (!stat.ok()) return false;
  const size_t paren = stat->rfind(')');
  return paren != std::string::npos && paren + 2 < stat->size() && (*stat)[paren + 2] != 'Z';
}

// A process the test did not start (a new agent process is the old one's child), adopted by
// pid once known and stopped when the test ends: SIGTERM, then SIGKILL after 15 s, and only
// while the pid still names the process adopted (never a stranger that reused the pid).
class NewAgentProcess {
 public:
  NewAgentProcess() = default;
  explicit NewAgentProcess(pid_t pid) { Adopt(pid); }
  NewAgentProcess(const NewAgentProcess&) = delete;
  NewAgentProcess& operator=(const NewAgentProcess&) = delete;
  ~NewAgentProcess() { Stop(); }
  void Adopt(pid_t pid) {
    pid_ = pid;
    start_ticks_ = ProcessStartTicks(pid);
  }
  pid_t pid() const { return pid_; }
  // Whether the adopted process still runs.
  bool Runs() const { return pid_ > 0 && Same() && ProcessRuns(pid_); }
  void Stop() {
    if (pid_ <= 0) return;
    if (Same()) kill(pid_, SIGTERM);
    if (!PollUntil([&](std::string*) -> absl::StatusOr<bool> { return !Runs(); }, absl::Seconds(15),
                   "the process to exit")
             .ok() &&
        Same()) {
      kill(pid_, SIGKILL);
    }
    pid_ = -1;
  }

 private:
  bool Same() const { return start_ticks_.has_value() && ProcessStartTicks(pid_) == start_ticks_; }
  pid_t pid_ = -1;
  std::optional<uint64_t> start_ticks_;
};

// Writes `contents` beside `path` and renames it over: the running inode is never written to,
// as a package manager replaces a binary.
inline absl::Status InstallExecutable(const std::string& path, const std::string& contents) {
  const std::string temp = path + ".new";
  PGF_RETURN_IF_ERROR(WriteFile(temp, contents));
  chmod(temp.c_str(), 0755);
  if (rename(temp.c_str(), path.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("rename to ", path));
  }
  return absl::OkStatus();
}

inline absl::Status CopyExecutable(const std::string& from, const std::string& to) {
  PGF_ASSIGN_OR_RETURN(std::string contents, ReadFile(from));
  return InstallExecutable(to, contents);
}

// Inserts 1, 2, 3... into `table` (id bigint primary key) through the agent on `port`, one new
// connection per row (so it follows a hand-over to the new process), and remembers what was
// acknowledged: after the test every acknowledged row must be in the table.
class RowWriter {
 public:
  RowWriter(int port, std::string table) : port_(port), table_(std::move(table)) {
    thread_ = std::thread([this] { Run(); });
  }
  RowWriter(const RowWriter&) = delete;
  RowWriter& operator=(const RowWriter&) = delete;
  ~RowWriter() { Stop(); }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  int64_t acked_count() const { return acked_count_.load(); }
  std::vector<int64_t> acked() const {
    std::lock_guard<std::mutex> lock(mu_);
    return acked_;
  }
  std::vector<std::string> errors() const {
    std::lock_guard<std::mutex> lock(mu_);
    return errors_;
  }

 private:
  void Run() {
    for (int64_t id = NextId().fetch_add(1); !stop_; id = NextId().fetch_add(1)) {
      absl::StatusOr<PgConn> conn = Connect(TcpConnString(port_, kAppDb, kAppUser, kAppPassword));
      absl::Status inserted =
          conn.ok() ? Query(conn->get(), absl::StrCat("insert into ", table_, " values (", id, ")"))
                          .status()
                    : conn.status();
      std::lock_guard<std::mutex> lock(mu_);
      if (inserted.ok()) {
        acked_.push_back(id);
        acked_count_++;
      } else {
        errors_.push_back(absl::StrCat("row ", id, ": ", inserted.message()));
      }
    }
  }
  // Shared by every writer of the test binary: writers of one table never collide.
  static std::atomic<int64_t>& NextId() {
    static std::atomic<int64_t> next{1};
    return next;
  }

  const int port_;
  const std::string table_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> acked_count_{0};
  mutable std::mutex mu_;
  std::vector<int64_t> acked_;
  std::vector<std::string> errors_;
  std::thread thread_;
};

}  // namespace pgfleet::testutil
