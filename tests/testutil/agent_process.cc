#include "tests/testutil/agent_process.h"

#include <pwd.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "tests/testutil/free_port.h"
#include "tests/testutil/pq.h"
#include "tests/testutil/process.h"

namespace pgfleet::testutil {
namespace {

bool KeepTestDirs() {
  const char* keep = std::getenv("PGFLEET_KEEP_TEST_DIRS");
  return keep != nullptr && std::string(keep) == "1";
}

}  // namespace

bool UsingForeignAgentBinary() {
  const char* binary = std::getenv("PGFLEET_TEST_AGENT_BINARY");
  if (binary == nullptr || *binary == '\0') return false;
  return std::filesystem::path(binary).filename() != "pgfleet-agent";
}

std::string UserlistLine(const std::string& user, const std::string& secret) {
  auto quote = [](const std::string& s) {
    return absl::StrCat("\"", absl::StrReplaceAll(s, {{"\"", "\"\""}}), "\"");
  };
  return absl::StrCat(quote(user), " ", quote(secret));
}

absl::StatusOr<std::unique_ptr<AgentProcess>> AgentProcess::Start(AgentOptions options) {
  // For cross-checking the tests against another pooler (e.g. a real PgBouncer).
  if (const char* binary = std::getenv("PGFLEET_TEST_AGENT_BINARY"); binary != nullptr) {
    options.binary = binary;
  }
  std::unique_ptr<AgentProcess> agent(new AgentProcess());
  char tmpl[] = "/tmp/pgfleet-agent-XXXXXX";
  if (mkdtemp(tmpl) == nullptr) {
    return absl::InternalError(absl::StrCat("mkdtemp: ", std::strerror(errno)));
  }
  agent->dir_ = tmpl;
  agent->ini_path_ = agent->dir_ + "/pgbouncer.ini";
  agent->userlist_path_ = agent->dir_ + "/userlist.txt";
  agent->log_path_ = agent->dir_ + "/agent.log";
  agent->stderr_path_ = agent->dir_ + "/agent.stderr";

  absl::Status last = absl::OkStatus();
  for (int attempt = 0; attempt < 3; ++attempt) {
    absl::StatusOr<int> port = PickFreePort();
    if (!port.ok()) return port.status();
    agent->port_ = *port;
    last = agent->Launch(options);
    if (last.ok()) return agent;
    // Only a lost race for the port is worth another try.
    if (agent->StderrContents().find("in use") == std::string::npos &&
        agent->LogContents().find("in use") == std::string::npos) {
      break;
    }
  }
  return last;
}

absl::Status AgentProcess::Launch(const AgentOptions& options) {
  if (absl::Status s = WriteConfigFiles(options); !s.ok()) return s;
  std::vector<std::string> argv;
  // PGFLEET_TEST_AGENT_RUN_AS=<user>: run the binary as that OS user (PgBouncer refuses root).
  if (const char* run_as = std::getenv("PGFLEET_TEST_AGENT_RUN_AS");
      run_as != nullptr && *run_as != '\0') {
    struct passwd* pw = getpwnam(run_as);
    if (pw == nullptr) return absl::NotFoundError(absl::StrCat("no OS user ", run_as));
    for (const std::string& path : {dir_, ini_path_, userlist_path_}) {
      if (chown(path.c_str(), pw->pw_uid, pw->pw_gid) != 0) {
        return absl::InternalError(absl::StrCat("chown ", path, ": ", std::strerror(errno)));
      }
    }
    argv = {"setpriv", absl::StrCat("--reuid=", pw->pw_uid), absl::StrCat("--regid=", pw->pw_gid),
            "--clear-groups"};
  }
  argv.push_back(options.binary);
  argv.insert(argv.end(), options.extra_args.begin(), options.extra_args.end());
  argv.push_back(ini_path_);
  SpawnOptions spawn;
  spawn.working_dir = dir_;
  spawn.stdout_path = stderr_path_;
  spawn.stderr_path = stderr_path_;
  absl::StatusOr<pid_t> pid = Spawn(argv, spawn);
  if (!pid.ok()) return pid.status();
  pid_ = *pid;
  reaped_ = false;

  const absl::Time deadline = absl::Now() + options.start_timeout;
  while (true) {
    if (!IsRunning()) {
      return absl::InternalError(absl::StrCat("pgfleet-agent exited during startup (",
                                              DescribeWaitStatus(wait_status_), ")\n",
                                              Diagnostics()));
    }
    if (CanConnect(port_)) return absl::OkStatus();
    if (absl::Now() >= deadline) {
      std::string diagnostics = Diagnostics();
      kill(pid_, SIGKILL);
      (void)WaitForExit(absl::Seconds(10));
      return absl::DeadlineExceededError(
          absl::StrCat("pgfleet-agent did not accept TCP connections on 127.0.0.1:", port_,
                       " within ", absl::FormatDuration(options.start_timeout), "\n", diagnostics));
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
}

std::string AgentProcess::RenderIni(const AgentOptions& options) const {
  std::map<std::string, std::string> settings = {
      {"listen_addr", "127.0.0.1"},
      {"unix_socket_dir", ""},
      {"logfile", log_path_},
      {"auth_file", userlist_path_},
  };
  for (const auto& [key, value] : options.pgbouncer_settings) settings[key] = value;
  settings["listen_port"] = absl::StrCat(port_);

  std::string ini = "[databases]\n";
  absl::StrAppend(&ini, options.databases_section);
  if (!ini.empty() && ini.back() != '\n') ini.push_back('\n');
  if (!options.users_section.empty()) {
    absl::StrAppend(&ini, "\n[users]\n", options.users_section);
    if (ini.back() != '\n') ini.push_back('\n');
  }
  absl::StrAppend(&ini, "\n[pgbouncer]\n");
  for (const auto& [key, value] : settings) {
    absl::StrAppend(&ini, key, " = ", value, "\n");
  }
  if (!options.extra_ini.empty()) absl::StrAppend(&ini, "\n", options.extra_ini, "\n");
  return ini;
}

absl::Status AgentProcess::WriteConfigFiles(const AgentOptions& options) {
  std::string userlist;
  for (const auto& [user, secret] : options.userlist) {
    absl::StrAppend(&userlist, UserlistLine(user, secret), "\n");
  }
  // userlist first: a reload that sees the new ini should also see the new users.
  if (absl::Status s = WriteFile(userlist_path_ + ".tmp", userlist); !s.ok()) return s;
  if (rename((userlist_path_ + ".tmp").c_str(), userlist_path_.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("rename userlist: ", std::strerror(errno)));
  }
  if (absl::Status s = WriteFile(ini_path_ + ".tmp", RenderIni(options)); !s.ok()) return s;
  if (rename((ini_path_ + ".tmp").c_str(), ini_path_.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("rename ini: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

absl::Status AgentProcess::RewriteConfig(const AgentOptions& options) {
  return WriteConfigFiles(options);
}

absl::StatusOr<int> AgentProcess::Stop(absl::Duration grace) {
  if (pid_ <= 0) return absl::FailedPreconditionError("agent was never started");
  if (!IsRunning()) return wait_status_;
  kill(pid_, SIGTERM);
  absl::StatusOr<int> status = WaitForExit(grace);
  if (status.ok()) return status;
  kill(pid_, SIGKILL);
  (void)WaitForExit(absl::Seconds(10));
  return absl::DeadlineExceededError(absl::StrCat("pgfleet-agent pid ", pid_,
                                                  " ignored SIGTERM for ",
                                                  absl::FormatDuration(grace), "; SIGKILLed"));
}

std::string AgentProcess::SanitizerReport() const {
  std::string report;
  for (absl::string_view line : absl::StrSplit(StderrContents(), '\n')) {
    if (absl::StrContains(line, "AddressSanitizer") || absl::StrContains(line, "LeakSanitizer") ||
        absl::StrContains(line, "runtime error:") || absl::StrContains(line, "CHECK failed")) {
      absl::StrAppend(&report, line, "\n");
    }
  }
  return report;
}

AgentProcess::~AgentProcess() {
  if (pid_ > 0 && IsRunning()) {
    absl::StatusOr<int> stopped = Stop(absl::Seconds(10));
    if (!stopped.ok()) fprintf(stderr, "AgentProcess: %s\n", stopped.status().ToString().c_str());
  }
  if (!dir_.empty()) {
    if (KeepTestDirs()) {
      fprintf(stderr, "AgentProcess: keeping %s\n", dir_.c_str());
    } else {
      std::error_code ec;
      std::filesystem::remove_all(dir_, ec);
    }
  }
}

std::string AgentProcess::ConnString(const std::string& db, const std::string& user,
                                     const std::string& password) const {
  return TcpConnString(port_, db, user, password);
}

std::string AgentProcess::LogContents() const {
  absl::StatusOr<std::string> contents = ReadFile(log_path_);
  return contents.ok() ? *contents : "";
}

std::string AgentProcess::StderrContents() const {
  absl::StatusOr<std::string> contents = ReadFile(stderr_path_);
  return contents.ok() ? *contents : "";
}

std::string AgentProcess::Diagnostics() const {
  std::string out = absl::StrCat("--- agent pid ", pid_, " (", dir_, ") ");
  if (reaped_) {
    absl::StrAppend(&out, "exited: ", DescribeWaitStatus(wait_status_));
  } else {
    absl::StrAppend(&out, "running");
  }
  absl::StrAppend(&out, " ---\n--- agent.stderr (tail) ---\n", ReadFileTail(stderr_path_, 4096),
                  "\n--- agent.log (tail) ---\n", ReadFileTail(log_path_, 8192), "\n");
  return out;
}

bool AgentProcess::IsRunning() {
  if (pid_ <= 0 || reaped_) return false;
  int status = 0;
  pid_t r = waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    reaped_ = true;
    wait_status_ = status;
    return false;
  }
  return true;
}

absl::Status AgentProcess::Signal(int sig) {
  if (!IsRunning()) return absl::FailedPreconditionError("agent is not running");
  if (kill(pid_, sig) != 0) {
    return absl::InternalError(absl::StrCat("kill: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

absl::StatusOr<int> AgentProcess::WaitForExit(absl::Duration timeout) {
  if (reaped_) return wait_status_;
  if (pid_ <= 0) return absl::FailedPreconditionError("agent was never started");
  absl::StatusOr<int> status = WaitPid(pid_, timeout);
  if (status.ok()) {
    reaped_ = true;
    wait_status_ = *status;
  }
  return status;
}

}  // namespace pgfleet::testutil
