// pgfleet-agent: a PgBouncer-compatible connection pooler. Usage: pgfleet-agent [options] CONFIG
#include <cstdio>
#include <cstring>
#include <string>

#include "absl/time/time.h"
#include "agent/agent.h"
#include "common/log.h"

namespace {

void PrintUsage(FILE* out) {
  fprintf(out,
          "Usage: pgfleet-agent [options] pgbouncer.ini\n"
          "\n"
          "A PgBouncer-compatible PostgreSQL connection pooler. Reads PgBouncer's\n"
          "pgbouncer.ini and auth_file formats unchanged.\n"
          "\n"
          "Options:\n"
          "  -v, --verbose               log debug messages\n"
          "  -q, --quiet                 log warnings and errors only\n"
          "      --shutdown-timeout=DUR  how long SIGINT/SIGTERM wait for transactions in\n"
          "                              flight before exiting (default 30s)\n"
          "  -V, --version               print the version and exit\n"
          "  -h, --help                  print this help and exit\n"
          "\n"
          "Signals: SIGHUP reloads the config (a bad config is refused and the old one\n"
          "kept); SIGINT/SIGTERM shut down gracefully.\n");
}

}  // namespace

int main(int argc, char** argv) {
  pgfleet::agent::AgentOptions options;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      PrintUsage(stdout);
      return 0;
    } else if (arg == "-V" || arg == "--version") {
      printf("pgfleet-agent 0.1.0 (PgBouncer 1.18 compatible)\n");
      return 0;
    } else if (arg == "-v" || arg == "--verbose") {
      pgfleet::common::SetLogLevel(pgfleet::common::LogLevel::kDebug);
    } else if (arg == "-q" || arg == "--quiet") {
      pgfleet::common::SetLogLevel(pgfleet::common::LogLevel::kWarning);
    } else if (arg.rfind("--shutdown-timeout=", 0) == 0) {
      if (!absl::ParseDuration(arg.substr(strlen("--shutdown-timeout=")),
                               &options.shutdown_timeout)) {
        fprintf(stderr, "pgfleet-agent: invalid duration in %s (try 30s, 2m)\n", arg.c_str());
        return 2;
      }
    } else if (!arg.empty() && arg[0] == '-') {
      fprintf(stderr, "pgfleet-agent: unknown option %s\n\n", arg.c_str());
      PrintUsage(stderr);
      return 2;
    } else if (options.config_path.empty()) {
      options.config_path = arg;
    } else {
      fprintf(stderr, "pgfleet-agent: only one config file may be given\n");
      return 2;
    }
  }
  if (options.config_path.empty()) {
    PrintUsage(stderr);
    return 2;
  }
  absl::StatusOr<std::unique_ptr<pgfleet::agent::Agent>> agent =
      pgfleet::agent::Agent::Create(std::move(options));
  if (!agent.ok()) {
    fprintf(stderr, "pgfleet-agent: %s\n", std::string(agent.status().message()).c_str());
    return 1;
  }
  return (*agent)->Run();
}
