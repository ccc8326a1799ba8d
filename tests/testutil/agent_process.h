// A pgfleet-agent child process with a generated pgbouncer.ini and userlist.txt.
#pragma once

#include <sys/types.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "tests/testutil/process.h"

namespace pgfleet::testutil {

struct AgentOptions {
  // [pgbouncer] keys. The harness sets listen_addr = 127.0.0.1, listen_port (free port),
  // unix_socket_dir = (empty), logfile and auth_file; entries here override those defaults
  // (except listen_port, which RewriteConfig keeps stable).
  std::map<std::string, std::string> pgbouncer_settings;
  // Body of [databases] / [users]: "name = host=... port=... dbname=..." lines.
  std::string databases_section;
  std::string users_section;
  // userlist.txt entries: user -> secret (plaintext, "md5...", or "SCRAM-SHA-256$...").
  std::vector<std::pair<std::string, std::string>> userlist;
  // Text appended verbatim to the ini after the sections (for odd-syntax tests).
  std::string extra_ini;

  std::string binary = PGFLEET_AGENT_BINARY;
  std::vector<std::string> extra_args;  // Before the ini path.
  absl::Duration start_timeout = absl::Seconds(10);
};

// Stopping, signals and the exit status come from ChildProcess; the destructor stops the agent
// (SIGTERM, up to 10 s grace, then SIGKILL) and removes its temp dir.
class AgentProcess : public ChildProcess {
 public:
  // Writes the config into a fresh temp dir, spawns the agent with the ini path as its only
  // argument, and waits until its TCP port accepts connections.
  static absl::StatusOr<std::unique_ptr<AgentProcess>> Start(AgentOptions options);

  int port() const { return port_; }
  const std::string& ini_path() const { return ini_path_; }
  const std::string& log_path() const { return log_path_; }
  const std::string& stderr_path() const { return stderr_path_; }

  std::string ConnString(const std::string& db, const std::string& user,
                         const std::string& password) const;

  std::string LogContents() const;
  std::string StderrContents() const;
  // Tails of agent.log and agent.stderr plus the exit status if it died, for failure output.
  std::string Diagnostics() const override;

  // Rewrites pgbouncer.ini / userlist.txt from `options` (same listen port). Send SIGHUP (or
  // RELOAD on the admin console) afterwards to make the agent read them.
  absl::Status RewriteConfig(const AgentOptions& options);
  // Lines of agent.stderr that come from AddressSanitizer / UBSan / a failed CHECK, or "".
  std::string SanitizerReport() const;

  // The generated ini text (for debugging).
  std::string RenderIni(const AgentOptions& options) const;

 private:
  AgentProcess() : ChildProcess("pgfleet-agent") {}
  absl::Status WriteConfigFiles(const AgentOptions& options);
  absl::Status Launch(const AgentOptions& options);

  std::string ini_path_;
  std::string userlist_path_;
  std::string log_path_;
  std::string stderr_path_;
  int port_ = 0;
};

// The pooler binary the tests run: PGFLEET_TEST_AGENT_BINARY when set (see below), else this
// build's pgfleet-agent.
std::string AgentBinaryUnderTest();

// True when PGFLEET_TEST_AGENT_BINARY points the tests at another pooler (e.g. PgBouncer, to
// cross-check the tests themselves; any binary not named pgfleet-agent); pgfleet-only
// expectations such as "exits 0 on SIGTERM" are relaxed then.
bool UsingForeignAgentBinary();

// One userlist.txt line: "user" "secret" with embedded quotes doubled.
std::string UserlistLine(const std::string& user, const std::string& secret);

}  // namespace pgfleet::testutil
