// pgfleet-agent: a PgBouncer-compatible connection pooler. Usage: pgfleet-agent [options] CONFIG
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "agent/agent.h"
#include "agent/link/fleet_agent.h"
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
          "      --metrics-listen=ADDR   serve Prometheus /metrics and /healthz on ADDR,\n"
          "                              [HOST:]PORT; no host is 127.0.0.1, \"*\" is\n"
          "                              every address (default: off)\n"
          "  -V, --version               print the version and exit\n"
          "  -h, --help                  print this help and exit\n"
          "\n"
          "Fleet mode (all optional; without --controller the agent runs alone):\n"
          "      --controller=HOST:PORT  keep a stream to pgfleet-controller\n"
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
          "\n"
          "Signals: SIGHUP reloads the config (a bad config is refused and the old one\n"
          "kept); SIGINT/SIGTERM shut down gracefully.\n");
}

bool TakeValue(const std::string& arg, const char* name, std::string* value) {
  const std::string prefix = absl::StrCat(name, "=");
  if (arg.rfind(prefix, 0) != 0) return false;
  *value = arg.substr(prefix.size());
  return true;
}

// Wiring: the pooler alone, or with the controller link attached through AgentControl.
int RunAgent(pgfleet::agent::AgentOptions options,
             std::optional<pgfleet::agent::FleetOptions> fleet_options,
             const std::vector<std::string>& allowed_paths) {
  auto fail = [](const absl::Status& status) {
    fprintf(stderr, "pgfleet-agent: %s\n", std::string(status.message()).c_str());
    return 1;
  };
  std::optional<pgfleet::agent::FleetSetup> fleet_setup;
  if (fleet_options.has_value()) {
    absl::StatusOr<pgfleet::agent::FleetSetup> setup =
        pgfleet::agent::PrepareFleet(std::move(*fleet_options), options.config_path);
    if (!setup.ok()) return fail(setup.status());
    options.config_path = setup->start_config_path;
    options.path_policy = setup->path_policy;
    fleet_setup = std::move(*setup);
  } else {
    // Nothing is pushed without a controller, but the console's SET logfile names a file to
    // write all the same: the same confinement, to the config's directory and --allow-path.
    absl::StatusOr<pgfleet::agent::PathPolicy> policy =
        pgfleet::agent::StandalonePathPolicy(options.config_path, allowed_paths);
    if (!policy.ok()) return fail(policy.status());
    options.path_policy = *std::move(policy);
  }
  absl::StatusOr<std::unique_ptr<pgfleet::agent::Agent>> agent =
      pgfleet::agent::Agent::Create(std::move(options));
  if (!agent.ok()) return fail(agent.status());
  // Declared after the agent, so destroyed first: the link's timers live on the agent's loop.
  std::unique_ptr<pgfleet::agent::FleetAgent> fleet;
  if (fleet_setup.has_value()) {
    fleet = std::make_unique<pgfleet::agent::FleetAgent>(**agent, std::move(*fleet_setup));
    pgfleet::agent::FleetAgent* link = fleet.get();
    (*agent)->set_control_plane_status([link] { return link->status(); });
    (*agent)->set_on_started([link] { link->Start(); });
  }
  const int exit_code = (*agent)->Run();
  (*agent)->set_control_plane_status(nullptr);
  fleet.reset();
  return exit_code;
}

}  // namespace

int main(int argc, char** argv) {
  pgfleet::agent::AgentOptions options;
  pgfleet::agent::FleetOptions fleet_options;
  pgfleet::agent::LinkOptions& link = fleet_options.link;
  std::string labels, shutdown_timeout, allow_path;
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
    } else if (TakeValue(arg, "--shutdown-timeout", &shutdown_timeout)) {
      if (!absl::ParseDuration(shutdown_timeout, &options.shutdown_timeout)) {
        fprintf(stderr, "pgfleet-agent: invalid duration in %s (try 30s, 2m)\n", arg.c_str());
        return 2;
      }
    } else if (TakeValue(arg, "--allow-path", &allow_path)) {
      for (absl::string_view dir : absl::StrSplit(allow_path, ',', absl::SkipEmpty())) {
        fleet_options.allowed_paths.emplace_back(dir);
      }
    } else if (TakeValue(arg, "--metrics-listen", &options.metrics_listen) ||
               TakeValue(arg, "--controller", &link.controller_address) ||
               TakeValue(arg, "--env", &link.environment) ||
               TakeValue(arg, "--agent-id", &link.agent_id) ||
               TakeValue(arg, "--labels", &labels) ||
               TakeValue(arg, "--state-dir", &fleet_options.state_dir) ||
               TakeValue(arg, "--tls-ca", &link.ca_file) ||
               TakeValue(arg, "--tls-cert", &link.cert_file) ||
               TakeValue(arg, "--tls-key", &link.key_file) ||
               TakeValue(arg, "--join-token-file", &link.join_token_file)) {
      continue;
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
  if (!link.controller_address.empty()) {
    if (link.environment.empty()) {
      fprintf(stderr, "pgfleet-agent: --controller needs --env\n");
      return 2;
    }
    const int tls_parts = !link.ca_file.empty() + !link.cert_file.empty() + !link.key_file.empty();
    if (tls_parts != 0 && tls_parts != 3) {
      fprintf(stderr, "pgfleet-agent: --tls-ca, --tls-cert and --tls-key go together\n");
      return 2;
    }
    for (absl::string_view pair : absl::StrSplit(labels, ',', absl::SkipEmpty())) {
      std::pair<std::string, std::string> kv = absl::StrSplit(pair, absl::MaxSplits('=', 1));
      if (kv.first.empty()) {
        fprintf(stderr, "pgfleet-agent: bad label '%s' (want key=value)\n",
                std::string(pair).c_str());
        return 2;
      }
      link.labels[kv.first] = kv.second;
    }
  }
  const std::vector<std::string> allowed_paths = fleet_options.allowed_paths;
  return RunAgent(
      std::move(options),
      link.controller_address.empty() ? std::nullopt : std::make_optional(std::move(fleet_options)),
      allowed_paths);
}
