// pgfleet-controller: the fleet's control plane. Stores config versions in SQLite, keeps a
// stream to every agent, and serves the operators' API.
#include <fcntl.h>
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <string>
#include <thread>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/log.h"
#include "common/service_notify.h"
#include "common/status_macros.h"
#include "controller/api/control_api.h"
#include "controller/api/fleet_api.h"
#include "controller/api/maintenance_api.h"
#include "controller/api/rollout_api.h"
#include "controller/auth/tokens.h"
#include "controller/clock.h"
#include "controller/controller_flags.h"
#include "controller/grpc/leader_proxy.h"
#include "controller/grpc/services.h"
#include "controller/http/api_router.h"
#include "controller/http/http_server.h"
#include "controller/http/metrics_history.h"
#include "controller/leader/leadership.h"
#include "controller/maintenance/orchestrator.h"
#include "controller/metrics/controller_metrics.h"
#include "controller/registry/agent_registry.h"
#include "controller/rollout/rollout_engine.h"
#include "controller/secrets/keyring_setup.h"
#include "controller/store/database_file_lock.h"
#include "controller/store/store.h"

namespace {

using pgfleet::controller::FleetApi;

// A PEM file named by a --tls-* flag. gRPC takes the files' contents and, given an empty or
// non-PEM one, only fails to listen ("cannot listen on ADDR"): say which file is wrong instead.
absl::StatusOr<std::string> ReadPemFile(const char* flag, const std::string& path) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return absl::FailedPreconditionError(absl::StrCat(flag, " ", path, ": ", strerror(errno)));
  }
  absl::Cleanup close_fd = [fd] { close(fd); };
  std::string text;
  char chunk[4096];
  while (true) {
    const ssize_t got = read(fd, chunk, sizeof(chunk));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) {
      return absl::FailedPreconditionError(absl::StrCat(flag, " ", path, ": ", strerror(errno)));
    }
    if (got == 0) break;
    text.append(chunk, static_cast<size_t>(got));
    // Certificates and keys are a few KiB; a path like /dev/zero must not fill the memory.
    if (text.size() > (1 << 20)) {
      return absl::FailedPreconditionError(absl::StrCat(flag, " ", path, ": larger than 1 MiB"));
    }
  }
  if (!absl::StrContains(text, "-----BEGIN ")) {
    return absl::FailedPreconditionError(
        absl::StrCat(flag, " ", path, ": not a PEM file (no -----BEGIN line)"));
  }
  return text;
}

struct TlsFiles {
  std::string cert, key, ca;
};

absl::StatusOr<TlsFiles> ReadTlsFiles(const pgfleet::controller::ControllerFlags& flags) {
  TlsFiles files;
  PGF_ASSIGN_OR_RETURN(files.cert, ReadPemFile("--tls-cert", flags.tls_cert));
  PGF_ASSIGN_OR_RETURN(files.key, ReadPemFile("--tls-key", flags.tls_key));
  PGF_ASSIGN_OR_RETURN(files.ca, ReadPemFile("--tls-ca", flags.tls_ca));
  return files;
}

// Scripts and service managers wait for this file: one that cannot be written must stop the
// start (it was ignored, and whoever waited for it waited forever).
absl::Status WritePortFile(const char* flag, const std::string& path, int port) {
  const std::string temporary = path + ".tmp";
  std::ofstream out(temporary);
  out << port << "\n";
  out.close();
  if (!out || rename(temporary.c_str(), path.c_str()) != 0) {
    const std::string reason = strerror(errno);
    unlink(temporary.c_str());
    return absl::FailedPreconditionError(
        absl::StrCat("cannot write ", flag, " ", path, ": ", reason));
  }
  return absl::OkStatus();
}

int CreateToken(const pgfleet::controller::ControllerFlags& flags) {
  const std::string& db = flags.db;
  const std::string& name = flags.token_name;
  const std::string& role_name = flags.token_role;
  const std::string& environment = flags.token_environment;
  absl::StatusOr<pgfleet::controller::Role> role = pgfleet::controller::ParseRole(role_name);
  if (!role.ok()) {
    fprintf(stderr,
            "usage: pgfleet-controller token create --db=FILE --name=NAME "
            "--role=agent|viewer|operator|admin [--env=ENV] [--expires-in=DUR]\n");
    return 2;
  }
  const absl::Duration lifetime = flags.token_lifetime;
  auto store = pgfleet::controller::OpenStore(db);
  if (!store.ok()) {
    fprintf(stderr, "pgfleet-controller: %s\n", std::string(store.status().message()).c_str());
    return 1;
  }
  std::string token = pgfleet::controller::NewToken();
  const int64_t now = pgfleet::controller::UnixMillis(pgfleet::controller::SystemClock().Now());
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
  const pgfleet::controller::ControllerCommandLine command_line =
      pgfleet::controller::ParseControllerCommandLine(argc, argv);
  if (command_line.exit_code.has_value()) return *command_line.exit_code;
  const pgfleet::controller::ControllerFlags& flags = command_line.flags;
  if (flags.create_token) return CreateToken(flags);
  const std::string& listen = flags.listen;
  const std::string& db = flags.db;
  const bool tls = flags.tls();
  pgfleet::controller::FleetApiOptions api_options;
  api_options.metrics_interval = flags.metrics_interval;
  const absl::Duration retention = flags.metrics_retention;
  pgfleet::controller::AgentAuthOptions agent_auth;
  agent_auth.insecure_agents = flags.insecure_agents;
  agent_auth.hello_timeout = flags.agent_hello_timeout;
  agent_auth.max_pending_streams = flags.max_pending_agent_streams;

  // Signals are taken by one thread with sigtimedwait; blocked here, before gRPC starts its
  // threads, so none of those receives them. A shell starts background jobs with SIGINT ignored; an
  // ignored signal is never pending, so restore the default before waiting for it.
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  // SIGHUP is systemd's ExecReload (and would otherwise kill the process).
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  TlsFiles tls_files;
  if (tls) {
    absl::StatusOr<TlsFiles> read = ReadTlsFiles(flags);
    if (!read.ok()) {
      fprintf(stderr, "pgfleet-controller: %s\n", std::string(read.status().message()).c_str());
      return 1;
    }
    tls_files = *std::move(read);
  }
  const bool shared_store =
      absl::StartsWith(db, "postgres://") || absl::StartsWith(db, "postgresql://");
  // One controller per SQLite file, taken before the store is opened (and migrated); it is
  // declared before the store, so released after the store is closed. SQLite's ":memory:" has
  // no file to share.
  std::optional<pgfleet::controller::DatabaseFileLock> db_lock;
  if (!shared_store && db != ":memory:") {
    absl::StatusOr<pgfleet::controller::DatabaseFileLock> locked =
        pgfleet::controller::DatabaseFileLock::Acquire(db);
    if (!locked.ok()) {
      fprintf(stderr, "pgfleet-controller: %s\n", std::string(locked.status().message()).c_str());
      return 1;
    }
    db_lock.emplace(*std::move(locked));
  }
  auto store = pgfleet::controller::OpenStore(db);
  if (!store.ok()) {
    fprintf(stderr, "pgfleet-controller: %s\n", std::string(store.status().message()).c_str());
    return 1;
  }
  if (absl::Status keys = pgfleet::controller::secrets::InstallKeyring(
          **store, flags.secrets_key_file, flags.secrets_previous_key_file);
      !keys.ok()) {
    fprintf(stderr, "pgfleet-controller: %s\n", std::string(keys.message()).c_str());
    return 1;
  }
  // Where every part below takes the time from (tests give theirs a fake one).
  pgfleet::controller::SystemClock clock;
  if (const char* bootstrap = getenv("PGFLEET_BOOTSTRAP_TOKEN"); bootstrap && *bootstrap) {
    const std::string hash = pgfleet::controller::HashToken(bootstrap);
    // Known already (active, or revoked when an admin token was made): left as it is.
    if (!(*store)->LookupToken(hash).ok()) {
      pgfleet::controller::TokenRow row;
      row.name = "bootstrap";
      row.role = pgfleet::controller::Role::kAdmin;
      row.created_unix_ms = pgfleet::controller::UnixMillis(clock.Now());
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
  // Several controllers on one PostgreSQL store elect a leader; with SQLite (one controller)
  // there is no election and this one always leads. Only the leader holds agent streams, runs
  // the engines and serves writes (controller/leader/leadership.h).
  pgfleet::controller::LeadershipOptions leadership_options;
  leadership_options.lease = flags.leader_lease;
  leadership_options.renew = flags.leader_renew;
  leadership_options.elect = shared_store;
  pgfleet::controller::Leadership leadership(**store, clock, leadership_options);
  pgfleet::controller::AgentRegistry registry;
  pgfleet::controller::RolloutEngine rollouts(**store, registry, clock);
  pgfleet::controller::MaintenanceOrchestrator maintenance(**store, registry, clock);
  FleetApi api(**store, registry, clock, api_options);
  api.set_rollout_store(store->get());
  api.set_engines(&rollouts, &maintenance);
  pgfleet::controller::RolloutApi rollout_api(**store, rollouts, registry, clock);
  pgfleet::controller::MaintenanceApi maintenance_api(**store, maintenance, registry, clock);
  agent_auth.require_client_cert = tls;
  pgfleet::controller::AgentServiceImpl agent_service(api, registry, agent_auth);
  pgfleet::controller::TokenAdmin token_admin(**store, clock);
  token_admin.set_revoked_listener([&agent_service](const pgfleet::controller::TokenRow& token) {
    agent_service.DisconnectJoinToken(token.id);
  });
  // The one operator API; both wires below are adapters over it.
  pgfleet::controller::ControlApi control(**store, clock, api, rollout_api, maintenance_api,
                                          token_admin);
  // /metrics: the fleet from the store and the registry, and every API request both wires
  // pass to `control`.
  pgfleet::controller::ControllerMetrics controller_metrics(**store, api, registry, clock);
  control.set_call_observer([&controller_metrics](pgfleet::controller::Wire wire,
                                                  const pgfleet::controller::ApiMethod& method,
                                                  absl::StatusCode code, double seconds) {
    controller_metrics.ObserveApiCall(wire, method, code, seconds);
  });
  // How a follower reaches the leader: the same CA that signs the controllers' certificates.
  std::shared_ptr<grpc::ChannelCredentials> peer_credentials = grpc::InsecureChannelCredentials();
  if (tls) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = tls_files.ca;
    peer_credentials = grpc::SslCredentials(ssl);
  }
  // Followers hand the writes they are given to the leader.
  pgfleet::controller::LeaderProxy leader_proxy(leadership, peer_credentials);
  // Its thread calls back into the services below: stopped before they go, on every path out.
  absl::Cleanup stop_leadership = [&leadership] { leadership.Stop(); };
  control.set_leader_routing(leader_proxy.Routing());
  api.set_streams_here([&leadership] { return leadership.IsLeader(); });
  leadership.set_on_elected([&] {
    // Agents that streamed to an earlier leader (or to this one before a restart) are not
    // connected here: they are marked so until they reconnect (on the leader's fenced store).
    if (absl::Status reset = (*store)->MarkAllAgentsDisconnected(); !reset.ok()) {
      PGF_WARN("leader", "agents not marked disconnected: %s", reset.message());
    }
  });
  leadership.set_on_deposed([&agent_service] {
    // Their link goes on to the next controller address until it reaches the new leader.
    agent_service.DisconnectAll("this controller no longer leads");
  });
  agent_service.set_admission_check([&leadership]() -> absl::Status {
    return leadership.IsLeader() ? absl::OkStatus() : leadership.NotLeaderError();
  });
  // One controller (SQLite): it leads from the start, before it serves.
  if (!leadership_options.elect) leadership.Start();
  pgfleet::controller::TokenServiceImpl token_service(control);
  pgfleet::controller::MaintenanceServiceImpl maintenance_service(control);
  pgfleet::controller::FleetServiceImpl fleet_service(control);
  pgfleet::controller::RolloutServiceImpl rollout_service(control);
  pgfleet::controller::SecretsServiceImpl secrets_service(control);

  std::shared_ptr<grpc::ServerCredentials> credentials;
  if (tls) {
    grpc::SslServerCredentialsOptions ssl(
        GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY);  // Agents: certs; fleetctl: tokens.
    ssl.pem_root_certs = tls_files.ca;
    ssl.pem_key_cert_pairs.push_back({tls_files.key, tls_files.cert});
    credentials = grpc::SslServerCredentials(ssl);
  } else {
    credentials = grpc::InsecureServerCredentials();
  }
  int bound_port = 0;
  // grpc.health.v1.Health (standard probes, grpc_health_probe) and server reflection
  // (grpcurl): both must be set up before the builder exists.
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(listen, credentials, &bound_port);
  // gRPC sets SO_REUSEPORT by default: a second controller given the same --listen would then
  // bind too, and the kernel would spread agents and fleetctl calls between the two. Off, the
  // second one fails to listen.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.RegisterService(&agent_service);
  builder.RegisterService(&fleet_service);
  builder.RegisterService(&rollout_service);
  builder.RegisterService(&maintenance_service);
  builder.RegisterService(&token_service);
  builder.RegisterService(&secrets_service);
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
    fprintf(stderr, "pgfleet-controller: cannot listen on %s (%s; gRPC's reason is logged above)\n",
            listen.c_str(),
            tls ? "address in use or not local, or --tls-key is not the key of --tls-cert"
                : "address in use or not local");
    return 1;
  }
  // NOT_SERVING until the start-up below is done (the store is open and migrated already);
  // "" is the whole server, and each service has its own name for per-service probes.
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  const std::vector<std::string> health_services = {
      "",
      pgfleet::v1::AgentService::service_full_name(),
      pgfleet::v1::FleetService::service_full_name(),
      pgfleet::v1::RolloutService::service_full_name(),
      pgfleet::v1::MaintenanceService::service_full_name(),
      pgfleet::v1::TokenService::service_full_name(),
      pgfleet::v1::SecretsService::service_full_name()};
  auto set_serving = [&](bool serving) {
    controller_metrics.set_ready(serving);
    if (health == nullptr) return;
    for (const std::string& service : health_services) {
      health->SetServingStatus(service, serving);
    }
  };
  set_serving(false);
  PGF_INFO("controller", "pgfleet-controller listening on %s (port %d, %s), database %s", listen,
           bound_port, tls ? "mutual TLS for agents" : "plaintext",
           pgfleet::controller::StoreDisplayName(db));
  if (agent_auth.insecure_agents) {
    PGF_WARN("controller",
             "--insecure-agents: agents are not asked to prove their environment; any agent "
             "that reaches this port can ask for any environment's config");
  }
  // The lease's holder: the address the other controllers reach this one at.
  leadership_options.self = flags.advertise;
  if (leadership_options.self.empty()) {
    const size_t colon = listen.rfind(':');
    std::string host = colon == std::string::npos ? listen : listen.substr(0, colon);
    if (host.empty() || host == "0.0.0.0" || host == "[::]") {
      char name[256] = {};
      gethostname(name, sizeof(name) - 1);
      host = name;
    }
    leadership_options.self = absl::StrCat(host, ":", bound_port);
  }
  if (leadership_options.elect) {
    leadership.set_self(leadership_options.self);
    leadership.Start();
  }
  if (leadership_options.elect) {
    PGF_INFO("controller", "controller %s on a shared store: %s (lease %s, renewed every %s)",
             leadership_options.self,
             leadership.IsLeader() ? "leading" : absl::StrCat("following ", leadership.leader()),
             absl::FormatDuration(flags.leader_lease), absl::FormatDuration(flags.leader_renew));
  }
  // Rollouts in progress before a restart (or a change of leader) resume from their stored
  // state on the leader's first tick.
  auto leading = [&leadership] { return leadership.IsLeader(); };
  rollouts.StartTicking(absl::Milliseconds(500), leading);
  maintenance.StartTicking(absl::Milliseconds(500), leading);
  if (!flags.port_file.empty()) {
    if (absl::Status written = WritePortFile("--port-file", flags.port_file, bound_port);
        !written.ok()) {
      fprintf(stderr, "pgfleet-controller: %s\n", std::string(written.message()).c_str());
      server->Shutdown();
      return 1;
    }
  }

  pgfleet::controller::MetricsHistory metrics_history;
  pgfleet::controller::ApiRouter api_router(control, metrics_history);
  const bool metrics_require_token = flags.metrics_require_token;
  std::unique_ptr<pgfleet::controller::HttpServer> http;
  if (!flags.http_listen.empty()) {
    pgfleet::controller::HttpServerOptions http_options;
    http_options.listen = flags.http_listen;
    http_options.web_root = flags.web_root;
    http_options.max_connections = flags.http_max_connections;
    http_options.render_metrics = [&controller_metrics] { return controller_metrics.Render(); };
    http_options.metrics_require_token = metrics_require_token;
    http = std::make_unique<pgfleet::controller::HttpServer>(http_options, api_router,
                                                             metrics_history, registry);
    absl::StatusOr<int> http_port = http->Start();
    if (!http_port.ok() && flags.http_listen_given) {
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
    } else if (!flags.http_port_file.empty()) {
      if (absl::Status written =
              WritePortFile("--http-port-file", flags.http_port_file, *http_port);
          !written.ok()) {
        fprintf(stderr, "pgfleet-controller: %s\n", std::string(written.message()).c_str());
        http.reset();
        server->Shutdown();
        return 1;
      }
    }
  }

  set_serving(true);
  // systemd (Type=notify; a no-op without NOTIFY_SOCKET): serving from here on, and a one-line
  // summary refreshed by the janitor.
  const std::string serving = absl::StrCat("gRPC on ", listen, " (port ", bound_port, ")",
                                           http != nullptr ? ", dashboard on " : "",
                                           http != nullptr ? flags.http_listen : "");
  auto service_status = [&serving, &registry] {
    return absl::StrCat("STATUS=", serving, "; ", registry.List("").size(), " agents connected");
  };
  pgfleet::common::NotifyServiceManager("READY=1\n" + service_status());

  // Signals end the server from a thread of their own; a kill -9 loses nothing committed.
  std::thread janitor([&] {
    while (true) {
      timespec wait{60, 0};
      int sig = sigtimedwait(&signals, nullptr, &wait);
      if (sig == SIGHUP) {
        // The flags are read once at start: nothing to re-read yet, but a reload (systemctl
        // reload) must not stop the controller, and systemd waits for READY=1 again.
        pgfleet::common::NotifyServiceManager("RELOADING=1");
        PGF_INFO("controller", "SIGHUP: nothing to reload (flags take effect on a restart)");
        pgfleet::common::NotifyServiceManager("READY=1\n" + service_status());
        continue;
      }
      if (sig == SIGINT || sig == SIGTERM) {
        pgfleet::common::NotifyServiceManager(
            absl::StrCat("STOPPING=1\nSTATUS=stopping (signal ", sig, ")"));
        PGF_INFO("controller", "signal %d: shutting down", sig);
        set_serving(false);  // Probes see it go before the listeners do.

        server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
        return;
      }
      pgfleet::common::NotifyServiceManager(service_status());
      if (!leadership.IsLeader()) continue;  // The leader prunes for everyone.
      (void)(*store)->PruneMetrics(pgfleet::controller::UnixMillis(clock.Now()) -
                                   absl::ToInt64Milliseconds(retention));
    }
  });
  server->Wait();
  janitor.join();
  leadership.Stop();
  if (http != nullptr) http->Stop();
  return 0;
}
