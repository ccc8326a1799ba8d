#include "agent/agent_flags.h"

#include <event2/event.h>
#include <openssl/crypto.h>

#include <algorithm>
#include <cstdio>

#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "agent/build_info.h"
#include "common/command_line.h"
#include "common/log.h"

namespace pgfleet::agent {
namespace {

constexpr char kUsage[] =
    "Usage: pgfleet-agent [options] pgbouncer.ini\n"
    "\n"
    "A PgBouncer-compatible PostgreSQL connection pooler. Reads PgBouncer's\n"
    "pgbouncer.ini and auth_file formats unchanged.\n"
    "\n"
    "Options (--flag=VALUE or --flag VALUE):\n"
    "  -v, --verbose               log debug messages\n"
    "  -q, --quiet                 do not log to stderr (as PgBouncer's -q: the\n"
    "                              logfile and syslog get every line all the same,\n"
    "                              at the same level; a failed start still says why\n"
    "                              on stderr)\n"
    "  -d, --daemon                run in the background (as PgBouncer's -d): the\n"
    "                              command returns once the agent serves (0) or\n"
    "                              failed to start (1); needs pidfile in the config\n"
    "  -R, --reboot                online restart (as PgBouncer's -R): take the\n"
    "                              listening sockets over from the agent running\n"
    "                              with this config (found through its pidfile),\n"
    "                              which lets its clients finish and exits; starts\n"
    "                              normally when none runs\n"
    "  -u, --user=USER             when started as root, switch to USER once the\n"
    "                              listening sockets are bound (as PgBouncer's -u)\n"
    "      --shutdown-timeout=DUR  how long SIGINT/SIGTERM wait for transactions in\n"
    "                              flight before exiting (default 30s)\n"
    "      --handover-drain-timeout=DUR\n"
    "                              after a RESTART (SIGUSR2 or the console), how\n"
    "                              long the old process's clients may go on before\n"
    "                              each is closed at its next transaction boundary\n"
    "                              (overrides the ini's handover_drain_timeout,\n"
    "                              default 30s)\n"
    "      --metrics-listen=ADDR   serve Prometheus /metrics and /healthz on ADDR,\n"
    "                              [HOST:]PORT; no host is 127.0.0.1, \"*\" is\n"
    "                              every address (default: off)\n"
    "      --config=FILE           read these flags from FILE, `flag = value` lines\n"
    "                              (not the pgbouncer.ini)\n"
    "  -V, --version               print the version and exit\n"
    "  -h, --help                  print this help and exit\n"
    "\n"
    "Fleet mode (all optional; without --controller the agent runs alone):\n"
    "      --controller=HOST:PORT[,HOST:PORT...]\n"
    "                              keep a stream to pgfleet-controller; with several,\n"
    "                              one at a time, moving on when one is unreachable\n"
    "      --env=NAME              environment (dev, staging, prod...); required\n"
    "                              with --controller\n"
    "      --agent-id=ID           identity (default: hostname:listen_port of the\n"
    "                              local config file)\n"
    "      --labels=K=V,K=V        labels reported to the controller\n"
    "      --state-dir=DIR         where pushed configs are kept (default:\n"
    "                              <config dir>/pgfleet-state/<agent id>); one\n"
    "                              agent per state dir, a second one refuses to start\n"
    "      --allow-path=DIR[,DIR]  directories a pushed config may name files in\n"
    "                              (logfile, pidfile, auth_file, *_tls_*_file);\n"
    "                              repeatable. The local config's directory and the\n"
    "                              state dir are always allowed; a pushed config\n"
    "                              naming a file elsewhere is refused (NACK). The\n"
    "                              local config file itself is not confined\n"
    "      --tls-ca=FILE --tls-cert=FILE --tls-key=FILE\n"
    "                              mutual TLS to the controller\n"
    "      --join-token-file=FILE  the agent's join token for its environment\n"
    "                              (fleetctl token create --role agent --env ENV)\n"
    "      --local-listeners       listen_addr, listen_port and unix_socket_dir\n"
    "                              always come from the local config file, not\n"
    "                              from pushed configs (several agents on one\n"
    "                              host sharing their environment's config)\n"
    "\n"
    "Signals: SIGHUP reloads the config (a bad config is refused and the old one\n"
    "kept); SIGINT/SIGTERM shut down gracefully; SIGUSR2 restarts with no client\n"
    "error: the binary now at this path takes the listeners over (RESTART on the\n"
    "console does the same and answers when it is done).\n"
    "\n";

AgentCommandLine Exit(int code) {
  AgentCommandLine result;
  result.exit_code = code;
  return result;
}

AgentCommandLine UsageError(const std::string& message) {
  fprintf(stderr, "pgfleet-agent: %s\n", message.c_str());
  return Exit(2);
}

}  // namespace

AgentCommandLine ParseAgentCommandLine(int argc, const char* const* argv) {
  AgentCommandLine result;
  AgentOptions& options = result.options;
  FleetOptions fleet;
  LinkOptions& link = fleet.link;
  std::string labels, shutdown_timeout, handover_drain_timeout;
  bool help = false, version = false, verbose = false, quiet = false, local_listeners = false;

  CLI::App app{"pgfleet-agent", "pgfleet-agent"};
  app.set_help_flag();
  app.allow_extras();  // Reported below with a suggestion.
  app.add_flag("-h,--help", help);
  app.add_flag("-V,--version", version);
  app.add_flag("-v,--verbose", verbose);
  app.add_flag("-q,--quiet", quiet);
  app.add_flag("-d,--daemon", result.daemon);
  app.add_flag("-R,--reboot", result.reboot);
  app.add_option("-u,--user", result.run_as_user);
  app.add_option("--shutdown-timeout", shutdown_timeout);
  app.add_option("--metrics-listen", options.metrics_listen);
  app.add_option("--handover-drain-timeout", handover_drain_timeout);
  app.add_option("--allow-path", result.allowed_paths)->delimiter(',')->allow_extra_args(false);
  app.add_option("--state-dir", fleet.state_dir);
  app.add_option("--controller", link.controller_address);
  app.add_option("--env", link.environment);
  app.add_option("--agent-id", link.agent_id);
  app.add_option("--labels", labels);
  app.add_option("--tls-ca", link.ca_file);
  app.add_option("--tls-cert", link.cert_file);
  app.add_option("--tls-key", link.key_file);
  app.add_option("--join-token-file", link.join_token_file);
  app.add_flag("--local-listeners", local_listeners);
  for (CLI::Option* option : app.get_options()) {
    option->multi_option_policy(option->check_lname("allow-path")
                                    ? CLI::MultiOptionPolicy::TakeAll
                                    : CLI::MultiOptionPolicy::TakeLast);
  }
  common::AddEnvironmentAndConfigFile(app, "PGFLEET_AGENT_");
  // PgBouncer's positional config file; its own environment variable is PGFLEET_AGENT_INI.
  app.add_option("pgbouncer.ini", options.config_path)->envname("PGFLEET_AGENT_INI");
  try {
    app.parse(common::ArgsForCli11(std::vector<std::string>(argv + 1, argv + argc)));
  } catch (const CLI::ParseError& error) {
    return UsageError(common::DescribeParseError(app, error));
  }
  if (help) {
    printf("%s%s", kUsage, common::EnvironmentHelp(app).c_str());
    return Exit(0);
  }
  if (version) {
    // PgBouncer's shape: the version line (SHOW VERSION's), then the libraries it runs on.
    printf("%s\nlibevent %s\ntls: %s\n", kVersionLine, event_get_version(),
           OpenSSL_version(OPENSSL_VERSION));
    return Exit(0);
  }
  if (std::string unknown = common::UnknownArgumentError(app); !unknown.empty()) {
    if (unknown.rfind("unexpected argument", 0) == 0) {
      return UsageError("only one config file may be given");
    }
    fprintf(stderr, "pgfleet-agent: %s\n\n%s", unknown.c_str(), kUsage);
    return Exit(2);
  }
  if (verbose) common::SetLogLevel(common::LogLevel::kDebug);
  options.verbose_from_command_line = verbose;
  // PgBouncer's -q is about where log lines go, not which: stderr gets none.
  if (quiet) common::SetLogToStderr(false);
  if (!shutdown_timeout.empty() &&
      !absl::ParseDuration(shutdown_timeout, &options.shutdown_timeout)) {
    return UsageError("invalid duration in --shutdown-timeout=" + shutdown_timeout +
                      " (try 30s, 2m)");
  }
  if (!handover_drain_timeout.empty()) {
    absl::Duration drain;
    if (!absl::ParseDuration(handover_drain_timeout, &drain) || drain < absl::ZeroDuration()) {
      return UsageError("invalid duration in --handover-drain-timeout=" + handover_drain_timeout +
                        " (try 30s, 2m)");
    }
    options.handover_drain_timeout = drain;
  }
  if (options.config_path.empty()) {
    fprintf(stderr, "%s", kUsage);
    return Exit(2);
  }
  if (!link.controller_address.empty()) {
    if (link.environment.empty()) return UsageError("--controller needs --env");
    const int tls_parts = !link.ca_file.empty() + !link.cert_file.empty() + !link.key_file.empty();
    if (tls_parts != 0 && tls_parts != 3) {
      return UsageError("--tls-ca, --tls-cert and --tls-key go together");
    }
    for (absl::string_view pair : absl::StrSplit(labels, ',', absl::SkipEmpty())) {
      std::pair<std::string, std::string> kv = absl::StrSplit(pair, absl::MaxSplits('=', 1));
      if (kv.first.empty()) {
        return UsageError("bad label '" + std::string(pair) + "' (want key=value)");
      }
      link.labels[kv.first] = kv.second;
    }
    fleet.allowed_paths = result.allowed_paths;
    // The file named on the command line, before fleet mode may start from a pushed one.
    if (local_listeners) options.local_listeners_file = options.config_path;
    result.fleet = std::move(fleet);
  }
  return result;
}

}  // namespace pgfleet::agent
