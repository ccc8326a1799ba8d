#include "controller/controller_flags.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/command_line.h"
#include "common/log.h"

namespace pgfleet::controller {
namespace {

constexpr char kUsage[] =
    "Usage: pgfleet-controller [options]\n"
    "       pgfleet-controller token create --db=FILE --name=NAME --role=ROLE\n"
    "                          [--env=ENV] [--expires-in=DUR]\n"
    "\n"
    "Options (--flag=VALUE or --flag VALUE):\n"
    "  --listen=ADDR          gRPC address for agents and fleetctl (default 127.0.0.1:7070)\n"
    "  --db=FILE              SQLite database (default ./pgfleet.db), created if missing\n"
    "  --db=postgres://USER:PASSWORD@HOST:PORT/DB\n"
    "                         a PostgreSQL database instead (also postgresql://; libpq's\n"
    "                         URI, its parameters and PG* variables apply)\n"
    "  --tls-cert=FILE --tls-key=FILE --tls-ca=FILE\n"
    "                         serve TLS; agents must then present a certificate signed\n"
    "                         by --tls-ca whose CN is their agent id\n"
    "  --insecure             allow a non-loopback --listen without TLS\n"
    "  --insecure-agents      accept the environment an agent claims, without a join\n"
    "                         token or a pgfleet:// URI in its certificate (the behaviour\n"
    "                         of earlier versions; local demos only). Without it an agent\n"
    "                         proves its environment with a join token (an agent token\n"
    "                         of that environment, sent by --join-token-file) or, with\n"
    "                         TLS, a certificate whose URI SAN is\n"
    "                         pgfleet://env/ENV/agent/AGENT_ID\n"
    "  --agent-hello-timeout=DUR  an agent stream that sends no hello by then is\n"
    "                         closed (default 10s)\n"
    "  --max-pending-agent-streams=N  agent streams admitted but not yet past their\n"
    "                         hello; more are refused until some finish (default 64)\n"
    "  --secrets-key-file=FILE  key that encrypts credentials and TLS files in --db:\n"
    "                         32 random bytes as 64 hex digits (or base64), mode 0600.\n"
    "                         Make one: head -c 32 /dev/urandom | xxd -p -c 64 > FILE\n"
    "                         Without it, pushes carrying secrets are refused\n"
    "  --secrets-previous-key-file=FILE  the key before --secrets-key-file: values it\n"
    "                         encrypted are re-encrypted with the new key at start\n"
    "  --advertise=HOST:PORT  with --db=postgres://, several controllers share one store and\n"
    "                         one leads (rollouts, maintenance windows, agent streams);\n"
    "                         the others proxy writes to it at this address (default:\n"
    "                         --listen with its bound port)\n"
    "  --leader-lease=DUR     how long a leader's lease lasts without renewal: a dead\n"
    "                         leader is replaced within it (default 10s)\n"
    "  --leader-renew=DUR     how often the leader renews it (default 3s; under a third of\n"
    "                         the lease)\n"
    "  --metrics-interval=DUR how often agents report (default 5s)\n"
    "  --metrics-retention=DUR how long downsampled metrics are kept (default 24h)\n"
    "  --port-file=FILE       write the bound port there once listening (for scripts)\n"
    "  --http-listen=ADDR     dashboard and JSON API (/api/) address (default\n"
    "                         127.0.0.1:7080; empty: off). Plain HTTP, so a non-loopback\n"
    "                         address needs --insecure\n"
    "  --web-root=DIR         the dashboard's built files (default: web/dist next to the\n"
    "                         build, i.e. <binary dir>/../web/dist, or\n"
    "                         <binary dir>/../share/pgfleet/web when installed)\n"
    "  --http-port-file=FILE  write the bound HTTP port there once listening\n"
    "  --http-max-connections=N  open HTTP connections at most; one more is answered\n"
    "                         503 and closed (default 256)\n"
    "  --metrics-require-token  GET /metrics (Prometheus, on the HTTP listener) needs an\n"
    "                         operator token (Authorization: Bearer, any role); without\n"
    "                         it /metrics is open like /healthz (default)\n"
    "  --config=FILE          read these flags from FILE, `flag = value` lines\n"
    "  -v, --verbose          log debug messages\n"
    "  --log-format=text|json log lines as PgBouncer's text (default) or one JSON\n"
    "                         object per line\n"
    "  -V, --version          print the version and exit\n"
    "  -h, --help             print this help\n"
    "\n"
    "Environment: PGFLEET_BOOTSTRAP_TOKEN, if set, is registered as an admin token\n"
    "named 'bootstrap' at start (idempotent). It works only until the first other admin\n"
    "token is created (fleetctl token create --role admin, or token create here): that\n"
    "revokes it for good, and it is not registered again while an admin token exists.\n"
    "Roles: viewer (read), operator (push configs, pause/resume), admin (tokens),\n"
    "agent (a join token: lets agents join one environment; --env required).\n"
    "Tokens may expire (--expires-in=720h); fleetctl token list|create|revoke manages\n"
    "them through the API.\n"
    "\n";

ControllerCommandLine Exit(int code) {
  ControllerCommandLine result;
  result.exit_code = code;
  return result;
}

ControllerCommandLine UsageError(const std::string& message) {
  fprintf(stderr, "pgfleet-controller: %s\n", message.c_str());
  return Exit(2);
}

bool IsLoopback(const std::string& listen) {
  return absl::StartsWith(listen, "127.") || absl::StartsWith(listen, "localhost:") ||
         absl::StartsWith(listen, "[::1]:");
}

// Where the dashboard's files are when --web-root is not given: the build puts them in
// <build>/web/dist, next to <build>/controller/pgfleet-controller; an install in share/.
std::string DefaultWebRoot() {
  std::error_code error;
  const std::filesystem::path binary = std::filesystem::read_symlink("/proc/self/exe", error);
  if (error) return "";
  for (const char* relative : {"../web/dist", "../share/pgfleet/web"}) {
    std::filesystem::path candidate = binary.parent_path() / relative;
    if (std::filesystem::exists(candidate / "index.html", error)) {
      return std::filesystem::weakly_canonical(candidate, error).string();
    }
  }
  return "";
}

// HOST:PORT with a port gRPC and the HTTP server both read as given: gRPC takes an empty port
// as 443 and one past 65535 as some other port, and would listen there without a word.
std::string ListenAddressError(const char* flag, const std::string& address) {
  if (absl::StartsWith(address, "unix:")) return "";  // gRPC's Unix socket form.
  const size_t colon = address.rfind(':');
  const std::string port = colon == std::string::npos ? "" : address.substr(colon + 1);
  const bool digits = !port.empty() && std::all_of(port.begin(), port.end(),
                                                   [](char c) { return c >= '0' && c <= '9'; });
  int number = 0;
  if (colon == std::string::npos || colon == 0 || !digits || !absl::SimpleAtoi(port, &number) ||
      number > 65535) {
    return absl::StrCat(flag, " '", address, "'",
                        ": expected HOST:PORT with a port from 0 to 65535 (0: any free port), "
                        "like 127.0.0.1:7070");
  }
  return "";
}

bool ParsePositiveDuration(const std::string& text, absl::Duration* out) {
  return absl::ParseDuration(text, out) && *out > absl::ZeroDuration();
}

// Parses with CLI11 into the variables the options were declared with; an error is printed.
bool Parse(CLI::App& app, int argc, const char* const* argv, int skip) {
  try {
    app.parse(common::ArgsForCli11(std::vector<std::string>(argv + 1 + skip, argv + argc)));
  } catch (const CLI::ParseError& error) {
    fprintf(stderr, "pgfleet-controller: %s\n", common::DescribeParseError(app, error).c_str());
    return false;
  }
  return true;
}

ControllerCommandLine ParseCreateToken(int argc, const char* const* argv) {
  ControllerCommandLine result;
  ControllerFlags& flags = result.flags;
  flags.create_token = true;
  std::string expires_in;
  CLI::App app{"pgfleet-controller token create", "pgfleet-controller token create"};
  app.set_help_flag();
  app.allow_extras();
  // --db is the server's: PGFLEET_CONTROLLER_DB, or its --config file (other keys ignored).
  app.add_option("--db", flags.db)->envname("PGFLEET_CONTROLLER_DB");
  app.add_option("--name", flags.token_name);
  app.add_option("--role", flags.token_role);
  app.add_option("--env", flags.token_environment);
  app.add_option("--expires-in", expires_in);
  for (CLI::Option* option : app.get_options()) {
    option->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  }
  app.set_config("--config", "", "the server's flags file, for --db");
  app.allow_config_extras(CLI::config_extras_mode::ignore);
  if (!Parse(app, argc, argv, 2)) return Exit(2);
  if (std::string unknown = common::UnknownArgumentError(app); !unknown.empty()) {
    return UsageError("token create: " + unknown);
  }
  static constexpr char kTokenUsage[] =
      "usage: pgfleet-controller token create --db=FILE --name=NAME "
      "--role=agent|viewer|operator|admin [--env=ENV] [--expires-in=DUR]\n";
  if (flags.token_name.empty() || flags.token_role.empty()) {
    fprintf(stderr, "%s", kTokenUsage);
    return Exit(2);
  }
  if (!expires_in.empty() && !ParsePositiveDuration(expires_in, &flags.token_lifetime)) {
    return UsageError("--expires-in wants a duration like 720h");
  }
  return result;
}

}  // namespace

ControllerCommandLine ParseControllerCommandLine(int argc, const char* const* argv) {
  if (argc >= 3 && std::string(argv[1]) == "token" && std::string(argv[2]) == "create") {
    return ParseCreateToken(argc, argv);
  }
  ControllerCommandLine result;
  ControllerFlags& flags = result.flags;
  std::string metrics_interval = "5s", metrics_retention = "24h", hello_timeout = "10s";
  std::string leader_lease = "10s", leader_renew = "3s";
  std::string web_root;
  bool help = false, verbose = false, version = false;

  CLI::App app{"pgfleet-controller", "pgfleet-controller"};
  app.set_help_flag();
  app.allow_extras();  // Reported below with a suggestion.
  app.add_flag("-h,--help", help);
  app.add_flag("-V,--version", version);
  app.add_flag("-v,--verbose", verbose);
  std::string log_format = "text";
  app.add_option("--log-format", log_format);
  app.add_option("--listen", flags.listen);
  app.add_option("--db", flags.db);
  app.add_option("--tls-cert", flags.tls_cert);
  app.add_option("--tls-key", flags.tls_key);
  app.add_option("--tls-ca", flags.tls_ca);
  app.add_flag("--insecure", flags.insecure);
  app.add_flag("--insecure-agents", flags.insecure_agents);
  app.add_option("--agent-hello-timeout", hello_timeout);
  app.add_option("--max-pending-agent-streams", flags.max_pending_agent_streams);
  app.add_option("--secrets-key-file", flags.secrets_key_file);
  app.add_option("--secrets-previous-key-file", flags.secrets_previous_key_file);
  app.add_option("--advertise", flags.advertise);
  app.add_option("--leader-lease", leader_lease);
  app.add_option("--leader-renew", leader_renew);
  app.add_option("--metrics-interval", metrics_interval);
  app.add_option("--metrics-retention", metrics_retention);
  app.add_option("--port-file", flags.port_file);
  CLI::Option* http_listen = app.add_option("--http-listen", flags.http_listen);
  CLI::Option* web_root_option = app.add_option("--web-root", web_root);
  app.add_option("--http-port-file", flags.http_port_file);
  app.add_option("--http-max-connections", flags.http_max_connections);
  app.add_flag("--metrics-require-token", flags.metrics_require_token);
  for (CLI::Option* option : app.get_options()) {
    option->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  }
  common::AddEnvironmentAndConfigFile(app, "PGFLEET_CONTROLLER_");
  if (!Parse(app, argc, argv, 0)) return Exit(2);
  if (help) {
    printf("%s%s", kUsage, common::EnvironmentHelp(app).c_str());
    return Exit(0);
  }
  if (version) {
    printf("pgfleet-controller %s\n", PGFLEET_VERSION);  // The project's version (CMake).
    return Exit(0);
  }
  if (std::string unknown = common::UnknownArgumentError(app); !unknown.empty()) {
    fprintf(stderr, "pgfleet-controller: %s\n\n%s", unknown.c_str(), kUsage);
    return Exit(2);
  }
  if (verbose) common::SetLogLevel(common::LogLevel::kDebug);
  if (std::optional<common::LogFormat> format = common::ParseLogFormat(log_format)) {
    common::SetLogFormat(*format);
  } else {
    fprintf(stderr, "pgfleet-controller: --log-format=%s: expected text or json\n\n%s",
            log_format.c_str(), kUsage);
    return Exit(2);
  }
  flags.http_listen_given = http_listen->count() > 0;
  if (!absl::ParseDuration(metrics_interval, &flags.metrics_interval) ||
      !absl::ParseDuration(metrics_retention, &flags.metrics_retention) ||
      !ParsePositiveDuration(hello_timeout, &flags.agent_hello_timeout)) {
    return UsageError("invalid duration (try 5s, 24h)");
  }
  if (!ParsePositiveDuration(leader_lease, &flags.leader_lease) ||
      !ParsePositiveDuration(leader_renew, &flags.leader_renew)) {
    return UsageError("--leader-lease and --leader-renew want positive durations (10s, 3s)");
  }
  if (flags.leader_renew * 2 > flags.leader_lease) {
    return UsageError(
        "--leader-renew must be at most half of --leader-lease (a leader renews "
        "several times within one lease)");
  }
  if (flags.max_pending_agent_streams < 1) {
    return UsageError("--max-pending-agent-streams wants a positive number");
  }
  if (flags.http_max_connections < 1) {
    return UsageError("--http-max-connections wants a positive number");
  }
  if (!flags.secrets_previous_key_file.empty() && flags.secrets_key_file.empty()) {
    return UsageError("--secrets-previous-key-file needs --secrets-key-file (the new key)");
  }
  if (flags.tls() && (flags.tls_key.empty() || flags.tls_ca.empty())) {
    return UsageError("--tls-cert needs --tls-key and --tls-ca");
  }
  if (std::string error = ListenAddressError("--listen", flags.listen); !error.empty()) {
    return UsageError(error);
  }
  if (!flags.http_listen.empty()) {
    if (std::string error = ListenAddressError("--http-listen", flags.http_listen);
        !error.empty()) {
      return UsageError(error);
    }
  }
  if (!flags.tls() && !IsLoopback(flags.listen) && !flags.insecure) {
    return UsageError(absl::StrCat("refusing to listen on ", flags.listen,
                                   " without TLS; give --tls-cert/--tls-key/--tls-ca, or "
                                   "--insecure if you really mean it"));
  }
  // The dashboard speaks plain HTTP with bearer tokens: never on the network by accident.
  if (!flags.http_listen.empty() && !IsLoopback(flags.http_listen) && !flags.insecure) {
    return UsageError(absl::StrCat("refusing to serve the dashboard on ", flags.http_listen,
                                   " over plain HTTP; use a loopback address (and a "
                                   "TLS-terminating proxy), or --insecure if you really mean "
                                   "it"));
  }
  flags.web_root = web_root_option->count() > 0 ? web_root : DefaultWebRoot();
  return result;
}

}  // namespace pgfleet::controller
