// pgfleet-controller: the fleet's control plane. Stores config versions in SQLite, keeps a
// stream to every agent, and serves the operators' API.
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/log.h"
#include "controller/api/control_api.h"
#include "controller/api/fleet_api.h"
#include "controller/api/maintenance_api.h"
#include "controller/api/rollout_api.h"
#include "controller/auth/tokens.h"
#include "controller/clock.h"
#include "controller/grpc/services.h"
#include "controller/http/api_router.h"
#include "controller/http/http_server.h"
#include "controller/http/metrics_history.h"
#include "controller/maintenance/orchestrator.h"
#include "controller/registry/agent_registry.h"
#include "controller/rollout/rollout_engine.h"
#include "controller/store/store.h"

namespace {

using pgfleet::controller::FleetApi;

void PrintUsage(FILE* out) {
  fprintf(out,
          "Usage: pgfleet-controller [options]\n"
          "       pgfleet-controller token create --db=FILE --name=NAME --role=ROLE\n"
          "                          [--env=ENV] [--expires-in=DUR]\n"
          "\n"
          "Options:\n"
          "  --listen=ADDR          gRPC address for agents and fleetctl (default 127.0.0.1:7070)\n"
          "  --db=FILE              SQLite database (default ./pgfleet.db), created if missing\n"
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
          "  -v, --verbose          log debug messages\n"
          "  -h, --help             print this help\n"
          "\n"
          "Environment: PGFLEET_BOOTSTRAP_TOKEN, if set, is registered as an admin token\n"
          "named 'bootstrap' at start (idempotent). It works only until the first other admin\n"
          "token is created (fleetctl token create --role admin, or token create here): that\n"
          "revokes it for good, and it is not registered again while an admin token exists.\n"
          "Roles: viewer (read), operator (push configs, pause/resume), admin (tokens),\n"
          "agent (a join token: lets agents join one environment; --env required).\n"
          "Tokens may expire (--expires-in=720h); fleetctl token list|create|revoke manages\n"
          "them through the API.\n");
}

bool TakeValue(const std::string& arg, const char* name, std::string* value) {
  const std::string prefix = absl::StrCat(name, "=");
  if (arg.rfind(prefix, 0) != 0) return false;
  *value = arg.substr(prefix.size());
  return true;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
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

void WritePortFile(const std::string& path, int port) {
  std::ofstream(path + ".tmp") << port << "\n";
  rename((path + ".tmp").c_str(), path.c_str());
}

bool IsLoopback(const std::string& listen) {
  return absl::StartsWith(listen, "127.") || absl::StartsWith(listen, "localhost:") ||
         absl::StartsWith(listen, "[::1]:");
}

int CreateToken(int argc, char** argv) {
  std::string db = "pgfleet.db", name, role_name, environment, expires_in;
  for (int i = 3; i < argc; ++i) {
    std::string arg = argv[i];
    if (!TakeValue(arg, "--db", &db) && !TakeValue(arg, "--name", &name) &&
        !TakeValue(arg, "--role", &role_name) && !TakeValue(arg, "--env", &environment) &&
        !TakeValue(arg, "--expires-in", &expires_in)) {
      fprintf(stderr, "pgfleet-controller token create: unknown option %s\n", arg.c_str());
      return 2;
    }
  }
  absl::StatusOr<pgfleet::controller::Role> role = pgfleet::controller::ParseRole(role_name);
  if (name.empty() || !role.ok()) {
    fprintf(stderr,
            "usage: pgfleet-controller token create --db=FILE --name=NAME "
            "--role=agent|viewer|operator|admin [--env=ENV] [--expires-in=DUR]\n");
    return 2;
  }
  absl::Duration lifetime = absl::ZeroDuration();
  if (!expires_in.empty() &&
      (!absl::ParseDuration(expires_in, &lifetime) || lifetime <= absl::ZeroDuration())) {
    fprintf(stderr, "pgfleet-controller: --expires-in wants a duration like 720h\n");
    return 2;
  }
  auto store = pgfleet::controller::OpenSqliteStore(db);
  if (!store.ok()) {
    fprintf(stderr, "pgfleet-controller: %s\n", std::string(store.status().message()).c_str());
    return 1;
  }
  std::string token = pgfleet::controller::NewToken();
  const int64_t now = pgfleet::controller::NowMillis();
  pgfleet::controller::TokenRow row;
  row.name = name;
  row.role = *role;
  row.environment = environment;
  row.created_unix_ms = now;
  row.created_by = "pgfleet-controller token create";
  if (lifetime > absl::ZeroDuration())
    row.expires_unix_ms = now + absl::ToInt64Milliseconds(lifetime);
  absl::Status added = (*store)->CreateToken(row, pgfleet::controller::HashToken(token)).status();
  if (added.ok()) {
    added = (*store)->Audit(
        "cli", "token.create", name,
        environment.empty() ? role_name : absl::StrCat(role_name, " env=", environment), now);
  }
  if (!added.ok()) {
    fprintf(stderr, "pgfleet-controller: %s\n", std::string(added.message()).c_str());
    return 1;
  }
  printf("%s\n", token.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
#ifdef NDEBUG
  // Debian's Abseil checks every Mutex acquisition for lock-order cycles (about 2% of the
  // controller's CPU with 1,000 agents); debug and sanitizer builds keep the check.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
#endif
  if (argc >= 3 && std::string(argv[1]) == "token" && std::string(argv[2]) == "create") {
    return CreateToken(argc, argv);
  }
  std::string listen = "127.0.0.1:7070", db = "pgfleet.db", tls_cert, tls_key, tls_ca, port_file;
  std::string metrics_interval = "5s", metrics_retention = "24h";
  std::string http_listen = "127.0.0.1:7080", http_port_file;
  std::optional<std::string> web_root;
  bool insecure = false, http_listen_given = false;
  pgfleet::controller::AgentAuthOptions agent_auth;
  std::string hello_timeout = "10s", max_pending = "64", http_max_connections = "256";
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      PrintUsage(stdout);
      return 0;
    } else if (arg == "-v" || arg == "--verbose") {
      pgfleet::common::SetLogLevel(pgfleet::common::LogLevel::kDebug);
    } else if (arg == "--insecure") {
      insecure = true;
    } else if (arg == "--insecure-agents") {
      agent_auth.insecure_agents = true;
    } else if (TakeValue(arg, "--listen", &listen) || TakeValue(arg, "--db", &db) ||
               TakeValue(arg, "--tls-cert", &tls_cert) || TakeValue(arg, "--tls-key", &tls_key) ||
               TakeValue(arg, "--tls-ca", &tls_ca) || TakeValue(arg, "--port-file", &port_file) ||
               TakeValue(arg, "--metrics-interval", &metrics_interval) ||
               TakeValue(arg, "--metrics-retention", &metrics_retention) ||
               TakeValue(arg, "--http-port-file", &http_port_file) ||
               TakeValue(arg, "--agent-hello-timeout", &hello_timeout) ||
               TakeValue(arg, "--max-pending-agent-streams", &max_pending) ||
               TakeValue(arg, "--http-max-connections", &http_max_connections)) {
      continue;
    } else if (TakeValue(arg, "--http-listen", &http_listen)) {
      http_listen_given = true;
    } else if (std::string root; TakeValue(arg, "--web-root", &root)) {
      web_root = root;
    } else {
      fprintf(stderr, "pgfleet-controller: unknown option %s\n\n", arg.c_str());
      PrintUsage(stderr);
      return 2;
    }
  }
  pgfleet::controller::FleetApiOptions api_options;
  absl::Duration retention;
  if (!absl::ParseDuration(metrics_interval, &api_options.metrics_interval) ||
      !absl::ParseDuration(metrics_retention, &retention) ||
      !absl::ParseDuration(hello_timeout, &agent_auth.hello_timeout) ||
      agent_auth.hello_timeout <= absl::ZeroDuration()) {
    fprintf(stderr, "pgfleet-controller: invalid duration (try 5s, 24h)\n");
    return 2;
  }
  if (!absl::SimpleAtoi(max_pending, &agent_auth.max_pending_streams) ||
      agent_auth.max_pending_streams < 1) {
    fprintf(stderr, "pgfleet-controller: --max-pending-agent-streams wants a positive number\n");
    return 2;
  }
  int http_connection_limit = 0;
  if (!absl::SimpleAtoi(http_max_connections, &http_connection_limit) ||
      http_connection_limit < 1) {
    fprintf(stderr, "pgfleet-controller: --http-max-connections wants a positive number\n");
    return 2;
  }
  const bool tls = !tls_cert.empty();
  if (tls && (tls_key.empty() || tls_ca.empty())) {
    fprintf(stderr, "pgfleet-controller: --tls-cert needs --tls-key and --tls-ca\n");
    return 2;
  }
  if (!tls && !IsLoopback(listen) && !insecure) {
    fprintf(stderr,
            "pgfleet-controller: refusing to listen on %s without TLS; give --tls-cert/"
            "--tls-key/--tls-ca, or --insecure if you really mean it\n",
            listen.c_str());
    return 2;
  }

  // The dashboard speaks plain HTTP with bearer tokens: never on the network by accident.
  if (!http_listen.empty() && !IsLoopback(http_listen) && !insecure) {
    fprintf(stderr,
            "pgfleet-controller: refusing to serve the dashboard on %s over plain HTTP; use a "
            "loopback address (and a TLS-terminating proxy), or --insecure if you really mean "
            "it\n",
            http_listen.c_str());
    return 2;
  }
  if (!web_root.has_value()) web_root = DefaultWebRoot();

  // Signals are taken by one thread with sigtimedwait; blocked here, before gRPC starts its
  // threads, so none of those receives them. A shell starts background jobs with SIGINT ignored; an
  // ignored signal is never pending, so restore the default before waiting for it.
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  auto store = pgfleet::controller::OpenSqliteStore(db);
  if (!store.ok()) {
    fprintf(stderr, "pgfleet-controller: %s\n", std::string(store.status().message()).c_str());
    return 1;
  }
  if (absl::Status reset = (*store)->MarkAllAgentsDisconnected(); !reset.ok()) {
    fprintf(stderr, "pgfleet-controller: %s\n", std::string(reset.message()).c_str());
    return 1;
  }
  if (const char* bootstrap = getenv("PGFLEET_BOOTSTRAP_TOKEN"); bootstrap && *bootstrap) {
    const std::string hash = pgfleet::controller::HashToken(bootstrap);
    // Known already (active, or revoked when an admin token was made): left as it is.
    if (!(*store)->LookupToken(hash).ok()) {
      pgfleet::controller::TokenRow row;
      row.name = "bootstrap";
      row.role = pgfleet::controller::Role::kAdmin;
      row.created_unix_ms = pgfleet::controller::NowMillis();
      row.created_by = "PGFLEET_BOOTSTRAP_TOKEN";
      row.bootstrap = true;
      absl::Status added = (*store)->CreateToken(row, hash).status();
      if (absl::IsFailedPrecondition(added)) {
        PGF_WARN("controller",
                 "PGFLEET_BOOTSTRAP_TOKEN ignored: an admin token exists, use it (or "
                 "`pgfleet-controller token create` on this host)");
      } else if (!added.ok()) {
        fprintf(stderr, "pgfleet-controller: %s\n", std::string(added.message()).c_str());
        return 1;
      }
    }
  }

  // The engines work on the store and the connected agents; the API (for both wires) sits on
  // top of them and feeds them the agents' config results and connections.
  pgfleet::controller::SystemClock clock;
  pgfleet::controller::AgentRegistry registry;
  pgfleet::controller::RolloutEngine rollouts(**store, registry, clock);
  pgfleet::controller::MaintenanceOrchestrator maintenance(**store, registry, clock);
  FleetApi api(**store, registry, api_options);
  api.set_rollout_store(store->get());
  api.set_engines(&rollouts, &maintenance);
  pgfleet::controller::RolloutApi rollout_api(**store, rollouts, registry, clock);
  pgfleet::controller::MaintenanceApi maintenance_api(**store, maintenance, registry, clock);
  agent_auth.require_client_cert = tls;
  pgfleet::controller::AgentServiceImpl agent_service(api, registry, agent_auth);
  pgfleet::controller::TokenAdmin token_admin(**store);
  token_admin.set_revoked_listener([&agent_service](const pgfleet::controller::TokenRow& token) {
    agent_service.DisconnectJoinToken(token.id);
  });
  // The one operator API; both wires below are adapters over it.
  pgfleet::controller::ControlApi control(**store, api, rollout_api, maintenance_api, token_admin);
  pgfleet::controller::TokenServiceImpl token_service(control);
  pgfleet::controller::MaintenanceServiceImpl maintenance_service(control);
  pgfleet::controller::FleetServiceImpl fleet_service(control);
  pgfleet::controller::RolloutServiceImpl rollout_service(control);

  std::shared_ptr<grpc::ServerCredentials> credentials;
  if (tls) {
    grpc::SslServerCredentialsOptions ssl(
        GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY);  // Agents: certs; fleetctl: tokens.
    ssl.pem_root_certs = ReadFile(tls_ca);
    ssl.pem_key_cert_pairs.push_back({ReadFile(tls_key), ReadFile(tls_cert)});
    credentials = grpc::SslServerCredentials(ssl);
  } else {
    credentials = grpc::InsecureServerCredentials();
  }
  int bound_port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort(listen, credentials, &bound_port);
  builder.RegisterService(&agent_service);
  builder.RegisterService(&fleet_service);
  builder.RegisterService(&rollout_service);
  builder.RegisterService(&maintenance_service);
  builder.RegisterService(&token_service);
  // A connection that never finishes its HTTP/2 (and TLS) handshake is dropped as soon as a
  // silent agent stream would be.
  builder.AddChannelArgument(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS,
                             static_cast<int>(absl::ToInt64Milliseconds(
                                 std::max(agent_auth.hello_timeout, absl::Seconds(5)))));
  // Agents hold one stream each; let keepalive pings through so dead agents are noticed.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 5000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  // Bandwidth-delay probing pings every stream after data frames; agents send a small report
  // every few seconds, so it only adds round trips (measured with 1,000 simulated agents:
  // controller CPU 25% -> 15% of a core with it off).
  builder.AddChannelArgument(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || bound_port == 0) {
    fprintf(stderr, "pgfleet-controller: cannot listen on %s\n", listen.c_str());
    return 1;
  }
  PGF_INFO("controller", "pgfleet-controller listening on %s (port %d, %s), database %s", listen,
           bound_port, tls ? "mutual TLS for agents" : "plaintext", db);
  if (agent_auth.insecure_agents) {
    PGF_WARN("controller",
             "--insecure-agents: agents are not asked to prove their environment; any agent "
             "that reaches this port can ask for any environment's config");
  }
  // Rollouts in progress before a restart resume from their stored state on the first tick.
  rollouts.StartTicking(absl::Milliseconds(500));
  maintenance.StartTicking(absl::Milliseconds(500));
  if (!port_file.empty()) WritePortFile(port_file, bound_port);

  pgfleet::controller::MetricsHistory metrics_history;
  pgfleet::controller::ApiRouter api_router(control, metrics_history);
  std::unique_ptr<pgfleet::controller::HttpServer> http;
  if (!http_listen.empty()) {
    pgfleet::controller::HttpServerOptions http_options;
    http_options.listen = http_listen;
    http_options.web_root = *web_root;
    http_options.max_connections = http_connection_limit;
    http = std::make_unique<pgfleet::controller::HttpServer>(http_options, api_router,
                                                             metrics_history, registry);
    absl::StatusOr<int> http_port = http->Start();
    if (!http_port.ok() && http_listen_given) {
      fprintf(stderr, "pgfleet-controller: %s\n",
              std::string(http_port.status().message()).c_str());
      http.reset();
      server->Shutdown();
      return 1;
    }
    if (!http_port.ok()) {
      // Only the default address was asked for (several controllers on one host, tests): the
      // fleet API matters more than the dashboard, so carry on without it.
      PGF_WARN("http", "no dashboard: %s (give --http-listen to choose another address)",
               http_port.status().message());
      http.reset();
    } else if (!http_port_file.empty()) {
      WritePortFile(http_port_file, *http_port);
    }
  }

  // Signals end the server from a thread of their own; a kill -9 loses nothing committed.
  std::thread janitor([&] {
    while (true) {
      timespec wait{60, 0};
      int sig = sigtimedwait(&signals, nullptr, &wait);
      if (sig == SIGINT || sig == SIGTERM) {
        PGF_INFO("controller", "signal %d: shutting down", sig);
        server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
        return;
      }
      (void)(*store)->PruneMetrics(pgfleet::controller::NowMillis() -
                                   absl::ToInt64Milliseconds(retention));
    }
  });
  server->Wait();
  janitor.join();
  if (http != nullptr) http->Stop();
  return 0;
}
