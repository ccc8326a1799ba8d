#include "tests/testutil/agent_process.h"

#include <pwd.h>
#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "tests/testutil/free_port.h"
#include "tests/testutil/pq.h"
#include "tests/testutil/process.h"

namespace pgfleet::testutil {

std::string AgentBinaryUnderTest() {
  const char* binary = std::getenv("PGFLEET_TEST_AGENT_BINARY");
  return binary != nullptr && *binary != '\0' ? binary : PGFLEET_AGENT_BINARY;
}

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

namespace {

// The port of a `--metrics-listen=[HOST]:PORT` (or `--metrics-listen [HOST]:PORT`) argument, or
// 0 when there is none (or it asks for an ephemeral port, which the test cannot know).
int MetricsPortOf(const std::vector<std::string>& args) {
  constexpr absl::string_view kFlag = "--metrics-listen";
  for (size_t i = 0; i < args.size(); ++i) {
    absl::string_view arg = args[i];
    std::string value;
    if (absl::StartsWith(arg, absl::StrCat(kFlag, "="))) {
      value = std::string(arg.substr(kFlag.size() + 1));
    } else if (arg == kFlag && i + 1 < args.size()) {
      value = args[i + 1];
    } else {
      continue;
    }
    const size_t colon = value.rfind(':');
    int port = 0;
    if (colon != std::string::npos && absl::SimpleAtoi(value.substr(colon + 1), &port)) {
      return port;
    }
  }
  return 0;
}

}  // namespace

absl::StatusOr<std::unique_ptr<AgentProcess>> AgentProcess::Start(AgentOptions options) {
  // For cross-checking the tests against another pooler (e.g. a real PgBouncer).
  if (const char* binary = std::getenv("PGFLEET_TEST_AGENT_BINARY"); binary != nullptr) {
    options.binary = binary;
  }
  std::unique_ptr<AgentProcess> agent(new AgentProcess());
  if (absl::Status created = agent->CreateDir(); !created.ok()) return created;
  agent->ini_path_ = agent->dir() + "/pgbouncer.ini";
  agent->userlist_path_ = agent->dir() + "/userlist.txt";
  agent->log_path_ = agent->dir() + "/agent.log";
  agent->stderr_path_ = agent->dir() + "/agent.stderr";
  absl::Status launched = LaunchOnFreePort([&](int port) {
    agent->port_ = port;
    return agent->Launch(options);
  });
  if (!launched.ok()) return launched;
  return agent;
}

absl::Status AgentProcess::Launch(const AgentOptions& options) {
  if (absl::Status s = WriteConfigFiles(options); !s.ok()) return s;
  std::vector<std::string> argv;
  // PGFLEET_TEST_AGENT_RUN_AS=<user>: run the binary as that OS user (PgBouncer refuses root).
  if (const char* run_as = std::getenv("PGFLEET_TEST_AGENT_RUN_AS");
      run_as != nullptr && *run_as != '\0') {
    struct passwd* pw = getpwnam(run_as);
    if (pw == nullptr) return absl::NotFoundError(absl::StrCat("no OS user ", run_as));
    for (const std::string& path : {dir(), ini_path_, userlist_path_}) {
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
  spawn.working_dir = dir();
  spawn.stdout_path = stderr_path_;
  spawn.stderr_path = stderr_path_;
  // The agent opens its client listener before its metrics listener: a test that reads
  // /metrics right after start must not race the second bind.
  const int metrics_port = MetricsPortOf(options.extra_args);
  // Likewise the unix socket is bound after the TCP listener: a test that connects over it
  // right after start must not find it missing or not listening yet.
  std::string unix_socket;
  if (auto dir = options.pgbouncer_settings.find("unix_socket_dir");
      dir != options.pgbouncer_settings.end() && !dir->second.empty() && dir->second[0] == '/') {
    unix_socket = absl::StrCat(dir->second, "/.s.PGSQL.", port_);
  }
  std::string awaited = absl::StrCat("accept TCP connections on 127.0.0.1:", port_);
  if (metrics_port > 0) absl::StrAppend(&awaited, " and on its metrics port ", metrics_port);
  if (!unix_socket.empty()) absl::StrAppend(&awaited, " and on ", unix_socket);
  return SpawnAndAwait(
      argv, spawn, options.start_timeout, awaited, [this, metrics_port, unix_socket] {
        return CanConnect(port_) && (metrics_port <= 0 || CanConnect(metrics_port)) &&
               (unix_socket.empty() || CanConnectUnix(unix_socket));
      });
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
  return absl::StrCat(StateLine("agent"), "--- agent.stderr (tail) ---\n",
                      ReadFileTail(stderr_path_, 4096), "\n--- agent.log (tail) ---\n",
                      ReadFileTail(log_path_, 8192), "\n");
}

}  // namespace pgfleet::testutil
