#include "agent/agent.h"

#include <event2/event.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "agent/agent_detail.h"
#include "agent/client_conn.h"
#include "agent/metrics/metrics_server.h"
#include "agent/reboot.h"
#include "agent/server_conn.h"
#include "common/log.h"
#include "common/status_macros.h"

namespace pgfleet::agent {
namespace {

// Raises the open-file limit to the hard limit: each client and server is one fd.
void RaiseFdLimit() {
  rlimit limit;
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
  }
}

}  // namespace

void ApplyKeepalive(int fd, const config::Config& cfg) {
  // PgBouncer's tune_socket: buffer sizes and TCP_USER_TIMEOUT too; 0 keeps the kernel's.
  if (cfg.tcp_socket_buffer > 0) {
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &cfg.tcp_socket_buffer, sizeof(int));
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &cfg.tcp_socket_buffer, sizeof(int));
  }
  if (cfg.tcp_user_timeout > 0) {
    setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &cfg.tcp_user_timeout, sizeof(int));
  }
  if (!cfg.tcp_keepalive) return;
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
  // 0 keeps the kernel's default, as in PgBouncer.
  if (cfg.tcp_keepcnt > 0) setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cfg.tcp_keepcnt, sizeof(int));
  if (cfg.tcp_keepidle > 0) {
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &cfg.tcp_keepidle, sizeof(int));
  }
  if (cfg.tcp_keepintvl > 0) {
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &cfg.tcp_keepintvl, sizeof(int));
  }
}

Agent::Agent(AgentOptions options) : options_(std::move(options)) {}

absl::StatusOr<std::unique_ptr<Agent>> Agent::Create(AgentOptions options) {
  // Every early return below destroys a half-built Agent: ~Agent copes with any member unset.
  std::unique_ptr<Agent> agent(new Agent(std::move(options)));
  agent->path_policy_ = agent->options_.path_policy;
  PGF_ASSIGN_OR_RETURN(LoadedConfig loaded,
                       LoadConfigAndFiles(agent->options_.config_path,
                                          agent->ConfinementFor(agent->options_.config_path)));
  if (!agent->options_.local_listeners_file.empty()) {
    PGF_ASSIGN_OR_RETURN(agent->local_listeners_,
                         config::LoadConfig(agent->options_.local_listeners_file));
    agent->PinListeners(loaded.cfg);
  }
  for (const std::string& warning : loaded.cfg.warnings) PGF_WARN("config", "%s", warning);
  agent->auth_file_ = std::move(loaded.users);
  agent->hba_ = std::move(loaded.hba);
  agent->client_tls_ = std::move(loaded.client_tls);
  agent->server_tls_ = std::move(loaded.server_tls);
  // A file without `verbose` leaves -v's level (PgBouncer: the key has no default to reset to).
  if (!loaded.cfg.locations.contains("verbose")) {
    loaded.cfg.verbose = agent->options_.verbose_from_command_line;
  }
  agent->SetConfig(std::make_shared<const config::Config>(std::move(loaded.cfg)));
  if (!agent->config_->logfile.empty() && !common::SetLogFile(agent->config_->logfile)) {
    return AtKey(
        *agent->config_, "logfile",
        absl::ErrnoToStatus(errno, absl::StrCat("cannot open '", agent->config_->logfile, "'")));
  }
  common::SetLogLevel(agent->config_->verbose ? common::LogLevel::kDebug : common::LogLevel::kInfo);
  agent->loop_ = EventLoop::Create();
  agent->admin_ = std::make_unique<AdminConsole>(*agent);
  agent->start_time_us_ = MonotonicMicros();
  return agent;
}

Agent::~Agent() {
  handover_.reset();
  for (int fd : options_.inherited_listeners) close(fd);
  if (options_.inherited_metrics_fd >= 0) close(options_.inherited_metrics_fd);
  metrics_server_.reset();
  CloseListeners();
  for (event* ev : signal_events_) event_free(ev);
  // Freeing them put back the default actions: a SIGTERM repeated while this process winds
  // down (a supervisor, a test's teardown, the hand-over's old process) must not turn a clean
  // exit into death by signal.
  if (!signal_events_.empty()) {
    for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGUSR2}) signal(sig, SIG_IGN);
  }
  // Connections still open at exit are released with the process; pools own no sockets.
  RunDeferredDeletes();
  if (deferred_delete_event_ != nullptr) event_free(deferred_delete_event_);
  if (!written_pidfile_.empty()) unlink(written_pidfile_.c_str());
}

absl::Status Agent::WritePidfile() {
  const std::string& path = config_->pidfile;
  if (path.empty()) return absl::OkStatus();
  // As PgBouncer: a pidfile naming a live process belongs to another instance (two poolers
  // sharing one would each remove the other's on exit); one naming a dead process is stale
  // and taken over.
  if (std::ifstream existing(path); existing) {
    long pid = 0;
    if (existing >> pid && pid > 0 && pid != getpid() && pid != options_.handover_parent_pid &&
        (kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM)) {
      return AtKey(*config_, "pidfile",
                   absl::FailedPreconditionError(absl::StrCat(
                       "'", path, "' names process ", pid,
                       ", which is running: is another agent using this pidfile? Stop it, or "
                       "remove the file if that process is not an agent")));
    }
  }
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    return AtKey(*config_, "pidfile",
                 absl::ErrnoToStatus(errno, absl::StrCat("cannot write '", path, "'")));
  }
  const std::string pid = absl::StrCat(getpid(), "\n");
  int error = 0;
  if (write(fd, pid.data(), pid.size()) != static_cast<ssize_t>(pid.size()))
    error = errno ? errno : EIO;
  if (close(fd) != 0 && error == 0) error = errno;
  if (error != 0) {
    unlink(path.c_str());
    return AtKey(*config_, "pidfile",
                 absl::ErrnoToStatus(error, absl::StrCat("cannot write '", path, "'")));
  }
  written_pidfile_ = path;
  return absl::OkStatus();
}

int Agent::Run() {
  // Start-up errors read like Create's (main prints those): "pgfleet-agent: FILE:LINE: key:
  // reason" on stderr; with a logfile they go there too.
  auto fail = [this](const absl::Status& status) {
    start_error_ = status;
    fprintf(stderr, "pgfleet-agent: %s\n", std::string(status.message()).c_str());
    if (!config_->logfile.empty()) PGF_ERROR("agent", "%s", status.message());
    return 1;
  };
  // Signals first: once a listener accepts, whoever started the agent may signal it (a SIGTERM
  // right after the port opens must be a clean shutdown, never the default action). They are
  // handled once the loop runs.
  signal(SIGPIPE, SIG_IGN);
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGUSR2}) {
    event* ev = evsignal_new(loop_->base(), sig, &Agent::OnSignal, this);
    evsignal_add(ev, nullptr);
    signal_events_.push_back(ev);
  }
  // main() held SIGHUP and SIGUSR2 until now: one sent during start-up is handled as it would
  // have been a moment later, once the loop runs.
  sigset_t held;
  sigemptyset(&held);
  sigaddset(&held, SIGHUP);
  sigaddset(&held, SIGUSR2);
  sigprocmask(SIG_UNBLOCK, &held, nullptr);
  // What the previous process's console set, before the first client is accepted: a client
  // of a paused database queues here as it did there.
  for (const CarriedState::Pause& pause : options_.inherited_state.paused) {
    if (absl::Status paused = Pause(pause.db, pause.remaining); !paused.ok()) {
      PGF_WARN("agent", "hand-over: the previous process's PAUSE %s is not kept: %s",
               pause.db.empty() ? "(all)" : pause.db, paused.message());
    }
  }
  for (const std::string& db : options_.inherited_state.disabled) SetDisabled(db, true);
  options_.inherited_state = {};
  if (absl::Status listening = ApplyListeners(*config_, /*at_start=*/true); !listening.ok()) {
    return fail(listening);
  }
  RaiseFdLimit();
  if (!options_.metrics_listen.empty()) {
    absl::StatusOr<std::unique_ptr<MetricsServer>> metrics =
        MetricsServer::Start(*this, options_.metrics_listen, options_.inherited_metrics_fd);
    options_.inherited_metrics_fd = -1;  // The server owns it now, whatever happened.
    if (!metrics.ok()) {
      return fail(absl::Status(metrics.status().code(),
                               absl::StrCat("--metrics-listen: ", metrics.status().message())));
    }
    metrics_server_ = std::move(*metrics);
    PGF_INFO("agent", "metrics on http://%s/metrics", options_.metrics_listen);
  }
  if (absl::Status pidfile = WritePidfile(); !pidfile.ok()) return fail(pidfile);
  // After the signal handlers (above): on_started tells systemd (or a -d parent) the agent is
  // ready, and a reload (SIGHUP) or restart (SIGUSR2) may follow at once.
  if (on_started_) {
    if (absl::Status started = on_started_(); !started.ok()) return fail(started);
  }
  deferred_delete_event_ = event_new(
      loop_->base(), -1, 0,
      [](int, short, void* arg) { static_cast<Agent*>(arg)->RunDeferredDeletes(); }, this);
  janitor_timer_ = std::make_unique<Timer>(*loop_, [this] { Janitor(); });
  janitor_timer_->Start(absl::Milliseconds(500), /*repeat=*/true);
  stats_timer_ = std::make_unique<Timer>(*loop_, [this] {
    stats_history_.Sample(StatsByDatabase(), absl::ToDoubleSeconds(config_->stats_period));
    if (config_->log_stats) {
      // PgBouncer's line, word for word as 1.21 to 1.25 write it (src/stats.c refresh_stats),
      // the wait being per server assignment since 1.23. pgbadger reads this shape from 13.1
      // on; Debian 12's pgbadger 12.0 knows only the shape before 1.21.
      const StatsAverages& avg = stats_history_.TotalAverages();
      PGF_INFO("stats",
               "%d xacts/s, %d queries/s, %d client parses/s, %d server parses/s, %d binds/s, "
               "in %d B/s, out %d B/s, xact %d us, query %d us, wait %d us",
               avg.xact_count, avg.query_count, avg.client_parse_count, avg.server_parse_count,
               avg.bind_count, avg.bytes_received, avg.bytes_sent, avg.xact_time_us,
               avg.query_time_us, avg.wait_time_us);
    }
  });
  stats_timer_->Start(config_->stats_period, /*repeat=*/true);
  PGF_INFO("agent", "pgfleet-agent started (config %s, pid %d)", config_->path, getpid());
  int rc = loop_->Run();
  PGF_INFO("agent", "pgfleet-agent stopped");
  return rc != 0 ? rc : exit_code_;
}

void Agent::OnSignal(int sig, short, void* arg) {
  auto* agent = static_cast<Agent*>(arg);
  if (sig == SIGHUP) {
    if (absl::Status reloaded = agent->Reload(); !reloaded.ok()) {
      PGF_ERROR("agent", "RELOAD (SIGHUP) refused, keeping the previous config: %s",
                reloaded.message());
    }
    return;
  }
  if (sig == SIGUSR2) {
    // SIGUSR2 as nginx's "upgrade the executable on the fly". PgBouncer gives SIGUSR1/SIGUSR2
    // to PAUSE/RESUME (and, before 1.23, SIGUSR2 cancelled a safe shutdown); pgfleet does
    // those through the console and the controller only, so a script sending PgBouncer's
    // SIGUSR2 here gets a restart that no client notices, never a dropped connection. A process
    // started with -R (PgBouncer's online restart) that sent the signal gets the listeners
    // (agent/handover.h). The console's RESTART answers its caller; a signal's outcome goes to
    // the log.
    std::optional<TakeoverRequest> requester = AcceptTakeoverRequest();
    const char* trigger = requester.has_value() ? "-R" : "SIGUSR2";
    agent->BeginHandover(
        0,
        [trigger](absl::StatusOr<pid_t> outcome) {
          if (outcome.ok()) {
            PGF_INFO("agent", "RESTART (%s): pid %d took over", trigger, *outcome);
          } else {
            PGF_ERROR("agent", "RESTART (%s) failed, this process keeps serving: %s", trigger,
                      outcome.status().message());
          }
        },
        std::move(requester));
    return;
  }
  agent->BeginShutdown(sig == SIGINT ? "SIGINT" : "SIGTERM");
}

void Agent::BeginShutdown(const std::string& why) {
  if (shutting_down_) {
    PGF_WARN("agent", "%s during shutdown: exiting now", why);
    StopLoop();
    return;
  }
  shutting_down_ = true;
  if (service_notifier_) service_notifier_(absl::StrCat("STOPPING=1\nSTATUS=stopping (", why, ")"));
  PGF_INFO("agent", "%s: shutting down, waiting up to %s for transactions in flight", why,
           absl::FormatDuration(options_.shutdown_timeout));
  CloseListeners();
  login_clients_.ForEach([](ClientConn* client) { client->Close("pooler shutting down"); });
  for (auto& [key, pool] : pools_) {
    // Idle and queued clients have nothing in flight; linked ones finish first.
    std::vector<ClientConn*> to_close;
    pool->active_clients().ForEach([&](const ClientConn* client) {
      if (client->server() == nullptr) to_close.push_back(const_cast<ClientConn*>(client));
    });
    pool->waiting_clients().ForEach(
        [&](const ClientConn* client) { to_close.push_back(const_cast<ClientConn*>(client)); });
    pool->login_waiting_clients().ForEach(
        [&](const ClientConn* client) { to_close.push_back(const_cast<ClientConn*>(client)); });
    for (ClientConn* client : to_close) {
      client->CloseWithError("57P01", "pooler is shutting down");
    }
    pool->CloseAllServers("pooler shutting down", /*idle_only=*/true);
  }
  shutdown_timer_ = std::make_unique<Timer>(*loop_, [this] {
    PGF_WARN("agent", "shutdown timeout reached with clients still in transactions: exiting");
    StopLoop();
  });
  shutdown_timer_->Start(options_.shutdown_timeout, /*repeat=*/false);
  MaybeFinishShutdown();
}

void Agent::MaybeFinishShutdown() {
  if (handed_over_ && !shutting_down_) {
    if (!login_clients_.empty()) return;
    for (auto& [key, pool] : pools_) {
      if (pool->client_count() > 0) return;
    }
    PGF_INFO("agent", "hand-over: every client of this process has gone; exiting");
    StopLoop();
    return;
  }
  if (wait_for_clients_) {
    size_t pool_clients = 0;
    for (auto& [key, pool] : pools_) pool_clients += pool->client_count();
    if (pool_clients == 0) StopLoop();
    return;
  }
  if (!shutting_down_) return;
  for (auto& [key, pool] : pools_) {
    if (!pool->active_servers().empty() || pool->client_count() > 0) return;
  }
  StopLoop();
}

void Agent::StopLoop() {
  // Everything still open is closed, so every socket ends cleanly (consoles get an error,
  // PostgreSQL a Terminate) and every object is freed before the process exits.
  while (ClientConn* client = login_clients_.front()) client->Close("pooler shutting down");
  while (ClientConn* client = admin_clients_.front()) {
    client->CloseWithError("57P01", "pooler is shutting down");
  }
  for (auto& [key, pool] : pools_) {
    std::vector<ClientConn*> clients;
    auto add = [&](const ClientConn* client) {
      clients.push_back(const_cast<ClientConn*>(client));
    };
    pool->active_clients().ForEach(add);
    pool->waiting_clients().ForEach(add);
    pool->login_waiting_clients().ForEach(add);
    for (ClientConn* client : clients) client->CloseWithError("57P01", "pooler is shutting down");
    pool->CloseAllServers("pooler shutting down", /*idle_only=*/false);
  }
  loop_->Stop();
}

void Agent::OnClientClosed(ClientConn*) {
  client_count_--;
  if (shutting_down_ || wait_for_clients_ || handed_over_) RequestShutdownCheck();
}

void Agent::RequestShutdownCheck() {
  // Checked from the deferred event, never from inside a close: MaybeFinishShutdown closes
  // servers, and the caller may be iterating a pool list.
  shutdown_check_pending_ = true;
  if (deferred_delete_event_ != nullptr) event_active(deferred_delete_event_, 0, 0);
}

ReadyQueue& Agent::ready_clients() {
  if (ready_clients_ == nullptr) ready_clients_ = std::make_unique<ReadyQueue>(loop_->base());
  return *ready_clients_;
}

void Agent::DeferDelete(ClientConn* client) {
  deferred_clients_.push_back(client);
  if (deferred_delete_event_ != nullptr) event_active(deferred_delete_event_, 0, 0);
}

void Agent::DeferDelete(ServerConn* server) {
  deferred_servers_.push_back(server);
  if (deferred_delete_event_ != nullptr) event_active(deferred_delete_event_, 0, 0);
  admin_->CheckPending();
  if (shutting_down_) RequestShutdownCheck();
}

bool Agent::IsLiveAdminClient(const ClientConn* client, uint64_t id) const {
  bool live = false;
  admin_clients_.ForEach([&](const ClientConn* candidate) {
    if (candidate == client && candidate->id() == id) live = true;
  });
  return live;
}

std::map<std::string, PoolStats> Agent::StatsByDatabase() const {
  std::map<std::string, PoolStats> totals;
  for (const auto& [key, pool] : pools_) totals[key.first] += pool->stats();
  for (const auto& [db, stats] : reclaimed_stats_) totals[db] += stats;
  return totals;
}

void Agent::RunDeferredDeletes() {
  std::vector<ClientConn*> clients;
  std::vector<ServerConn*> servers;
  clients.swap(deferred_clients_);
  servers.swap(deferred_servers_);
  for (ClientConn* client : clients) delete client;
  for (ServerConn* server : servers) delete server;
  if (shutdown_check_pending_) {
    shutdown_check_pending_ = false;
    MaybeFinishShutdown();
  }
}

void Agent::Janitor() {
  const uint64_t now = MonotonicMicros();
  const uint64_t login_limit =
      static_cast<uint64_t>(absl::ToInt64Microseconds(config_->client_login_timeout));
  if (login_limit > 0) {
    login_clients_.ForEach([&](ClientConn* client) {
      if (now - client->connect_time_us() > login_limit) {
        client->CloseWithError("08P01", "client_login_timeout");
      }
    });
  }
  // PgBouncer's janitor: a database that forces its user keeps min_pool_size servers ready
  // before any client comes (other pools fill up once a client made them).
  for (const auto& [name, db] : config_->databases) {
    if (name != "*" && !db.user.empty() && db.min_pool_size.value_or(config_->min_pool_size) > 0) {
      GetPool(name, db.user);
    }
  }
  for (auto& [key, pool] : pools_) pool->Janitor(now);
  if (handover_drain_bound_passed_) CloseClientsAtTransactionBoundary();
  ReclaimUnusedPools(now);
  admin_->CheckPending();
  for (const AuthFailureLimiter::Unlogged& unlogged : auth_failures_.Expire(absl::Now())) {
    LogUnloggedFailures(unlogged.address, unlogged.failures);
  }
}

bool Agent::ServerLimitsStale(const std::string& address, uint64_t now_us) const {
  // max_connections only changes with a PostgreSQL restart; a few minutes is fresh enough.
  constexpr uint64_t kRefreshAfterUs = 5ull * 60 * 1000 * 1000;
  auto it = server_limits_.find(address);
  return it == server_limits_.end() || now_us - it->second.learnt_us > kRefreshAfterUs;
}

}  // namespace pgfleet::agent
