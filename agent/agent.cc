#include "agent/agent.h"

#include <arpa/inet.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "agent/client_conn.h"
#include "agent/metrics/metrics_server.h"
#include "agent/pg/protocol.h"
#include "agent/reboot.h"
#include "agent/server_conn.h"
#include "common/config/restart_keys.h"
#include "common/config/tls_settings.h"
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

// Whether a socket bound to `bound` is the one a config asks for at `wanted`.
bool SameAddress(const sockaddr_storage& bound, const sockaddr* wanted) {
  if (bound.ss_family != wanted->sa_family) return false;
  if (wanted->sa_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&bound);
    const auto* b = reinterpret_cast<const sockaddr_in*>(wanted);
    return a->sin_port == b->sin_port && a->sin_addr.s_addr == b->sin_addr.s_addr;
  }
  if (wanted->sa_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&bound);
    const auto* b = reinterpret_cast<const sockaddr_in6*>(wanted);
    return a->sin6_port == b->sin6_port &&
           memcmp(&a->sin6_addr, &b->sin6_addr, sizeof(a->sin6_addr)) == 0;
  }
  if (wanted->sa_family == AF_UNIX) {
    return strcmp(reinterpret_cast<const sockaddr_un*>(&bound)->sun_path,
                  reinterpret_cast<const sockaddr_un*>(wanted)->sun_path) == 0;
  }
  return false;
}

// "FILE:LINE: key: reason", FILE:LINE being the line that set `key`.
absl::Status AtKey(const config::Config& cfg, const std::string& key, const absl::Status& status) {
  return absl::Status(status.code(),
                      absl::StrCat(cfg.Where(key), ": ", key, ": ", status.message()));
}

absl::StatusOr<config::AuthFile> LoadAuthFileFor(const config::Config& cfg) {
  if (cfg.auth_file.empty()) {
    // With auth_user set, passwords come from PostgreSQL (auth_query); the auth_user's own
    // password is then empty, as in PgBouncer (pg_hba must trust it).
    if (cfg.auth_type == config::AuthType::kAny || cfg.UsesAuthQuery()) return config::AuthFile{};
    return absl::InvalidArgumentError(absl::StrCat(cfg.Where("auth_type"), ": auth_type ",
                                                   config::AuthTypeName(cfg.auth_type),
                                                   " needs an auth_file"));
  }
  absl::StatusOr<config::AuthFile> users = config::LoadAuthFile(cfg.auth_file);
  if (!users.ok()) return AtKey(cfg, "auth_file", users.status());
  return users;
}

}  // namespace

absl::StatusOr<std::shared_ptr<const config::HbaFile>> LoadHbaFor(const config::Config& cfg) {
  if (cfg.auth_type != config::AuthType::kHba) return std::shared_ptr<const config::HbaFile>();
  absl::StatusOr<config::HbaFile> hba = config::LoadHbaFile(cfg.auth_hba_file, cfg.auth_ident_file);
  if (!hba.ok()) return AtKey(cfg, "auth_hba_file", hba.status());
  return std::make_shared<const config::HbaFile>(*std::move(hba));
}

namespace {

// TlsContext's errors start with the key they are about ("client_tls_cert_file /x: cannot
// load certificate: ..."); this puts the line that set it in front.
absl::Status LocateTlsError(const config::Config& cfg, const absl::Status& status) {
  static const char* const kTlsKeys[] = {
      "client_tls_cert_file", "client_tls_key_file",  "client_tls_ca_file",  "client_tls_protocols",
      "client_tls_ciphers",   "server_tls_cert_file", "server_tls_key_file", "server_tls_ca_file",
      "server_tls_protocols", "server_tls_ciphers"};
  for (const char* key : kTlsKeys) {
    if (absl::StartsWith(status.message(), absl::StrCat(key, " "))) {
      return absl::Status(status.code(), absl::StrCat(cfg.Where(key), ": ", status.message()));
    }
  }
  return absl::Status(status.code(), absl::StrCat(cfg.path, ": ", status.message()));
}

// Whether the logfile can be opened for appending (creating it, as the logger will), so a bad
// path is an error at start and a refused RELOAD rather than a silently lost log.
absl::Status CheckLogFile(const config::Config& cfg) {
  if (cfg.logfile.empty()) return absl::OkStatus();
  const int fd = open(cfg.logfile.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0666);
  if (fd < 0) {
    return AtKey(cfg, "logfile",
                 absl::ErrnoToStatus(errno, absl::StrCat("cannot open '", cfg.logfile, "'")));
  }
  close(fd);
  return absl::OkStatus();
}

// Everything a config needs from disk besides itself, loaded and checked before anything
// changes, for start-up and RELOAD alike. Errors name file, line and key.
struct LoadedConfig {
  config::Config cfg;
  config::AuthFile users;
  std::shared_ptr<const config::HbaFile> hba;
  std::shared_ptr<const TlsContext> client_tls;
  std::shared_ptr<const TlsContext> server_tls;
};

absl::StatusOr<LoadedConfig> LoadConfigAndFiles(const std::string& path) {
  LoadedConfig loaded;
  PGF_ASSIGN_OR_RETURN(loaded.cfg, config::LoadConfig(path));
  PGF_ASSIGN_OR_RETURN(loaded.users, LoadAuthFileFor(loaded.cfg));
  PGF_ASSIGN_OR_RETURN(loaded.hba, LoadHbaFor(loaded.cfg));
  if (loaded.hba != nullptr && (loaded.cfg.client_tls_sslmode == config::TlsMode::kDisable ||
                                loaded.cfg.client_tls_ca_file.empty())) {
    // Such a line can never log anyone in: the agent does not ask for client certificates.
    for (const config::HbaRule& rule : loaded.hba->rules) {
      if (rule.method != config::HbaMethod::kCert) continue;
      loaded.cfg.warnings.push_back(absl::StrCat(
          loaded.hba->path, ":", rule.line,
          ": cert needs client TLS with client_tls_ca_file; this line refuses every login"));
      break;
    }
  }
  absl::StatusOr<std::shared_ptr<const TlsContext>> client_tls = TlsContext::ForClients(loaded.cfg);
  if (!client_tls.ok()) return LocateTlsError(loaded.cfg, client_tls.status());
  loaded.client_tls = std::move(*client_tls);
  absl::StatusOr<std::shared_ptr<const TlsContext>> server_tls = TlsContext::ForServers(loaded.cfg);
  if (!server_tls.ok()) return LocateTlsError(loaded.cfg, server_tls.status());
  loaded.server_tls = std::move(*server_tls);
  PGF_RETURN_IF_ERROR(CheckLogFile(loaded.cfg));
  return loaded;
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
  PGF_ASSIGN_OR_RETURN(LoadedConfig loaded, LoadConfigAndFiles(agent->options_.config_path));
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

// Where one listener of a config binds; `address` names it in logs and errors.
struct Agent::ListenSpec {
  std::string address;  // "127.0.0.1:6432", "[::1]:6432", or the unix socket path.
  std::string key;      // The config key an error is about.
  sockaddr_storage storage{};
  socklen_t length = 0;
  bool is_unix = false;
};

namespace {

// The listeners `cfg` asks for, in config order: one per listen_addr entry, then the unix
// socket. Parse errors name the key.
absl::StatusOr<std::vector<Agent::ListenSpec>> ListenSpecsOf(const config::Config& cfg);

}  // namespace

absl::StatusOr<evconnlistener*> Agent::BindListener(const ListenSpec& spec, bool at_start) {
  if (evconnlistener* adopted = AdoptInheritedListener(spec); adopted != nullptr) {
    PGF_INFO("agent", "%s%s handed over by the previous process",
             spec.is_unix ? "unix socket " : "", spec.address);
    return adopted;
  }
  const sockaddr* addr = reinterpret_cast<const sockaddr*>(&spec.storage);
  if (!spec.is_unix) {
    evconnlistener* listener =
        evconnlistener_new_bind(loop_->base(), &Agent::OnAccept, this,
                                LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC,
                                1024, addr, static_cast<int>(spec.length));
    if (listener == nullptr) {
      return absl::ErrnoToStatus(errno, absl::StrCat("cannot listen on ", spec.address));
    }
    if (config_->tcp_defer_accept) {
      // PgBouncer's hard-coded 45 s: accept() only once the client has sent something.
      const int seconds = 45;
      setsockopt(evconnlistener_get_fd(listener), IPPROTO_TCP, TCP_DEFER_ACCEPT, &seconds,
                 sizeof(seconds));
    }
    return listener;
  }
  struct stat st;
  if (lstat(spec.address.c_str(), &st) == 0) {
    if (!at_start) {
      // A reload must not take a socket another server still answers on: only a file nobody
      // listens on (left by a process that died) is replaced.
      const int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
      const bool live = probe >= 0 && connect(probe, addr, spec.length) == 0;
      if (probe >= 0) close(probe);
      if (live) {
        return absl::AlreadyExistsError(absl::StrCat("cannot listen on ", spec.address,
                                                     ": another process is listening on it"));
      }
    }
    unlink(spec.address.c_str());
  }
  evconnlistener* listener = evconnlistener_new_bind(loop_->base(), &Agent::OnAccept, this,
                                                     LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC,
                                                     1024, addr, static_cast<int>(spec.length));
  if (listener == nullptr) {
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot listen on ", spec.address));
  }
  // unix_socket_mode and unix_socket_group, as PgBouncer sets them on its socket file.
  if (chmod(spec.address.c_str(), static_cast<mode_t>(config_->unix_socket_mode)) != 0) {
    const int error = errno;
    evconnlistener_free(listener);
    unlink(spec.address.c_str());
    return absl::ErrnoToStatus(error, absl::StrCat("cannot set the mode of ", spec.address));
  }
  if (!config_->unix_socket_group.empty()) {
    const group* found = getgrnam(config_->unix_socket_group.c_str());
    const int error = found == nullptr ? ENOENT
                      : chown(spec.address.c_str(), static_cast<uid_t>(-1), found->gr_gid) != 0
                          ? errno
                          : 0;
    if (error != 0) {
      evconnlistener_free(listener);
      unlink(spec.address.c_str());
      return absl::ErrnoToStatus(error, absl::StrCat("cannot give ", spec.address, " the group '",
                                                     config_->unix_socket_group, "'"));
    }
  }
  return listener;
}

void Agent::CloseListener(const Listener& listener, bool remove_socket_file) {
  // The kernel has completed the handshake of connections still in the accept queue: closing
  // the socket would reset them. They are clients like any other, so take them first.
  const int fd = evconnlistener_get_fd(listener.listener);
  if (!listener.is_unix) {
    // A handshake the kernel completed between the last accept below and the close would still
    // be reset ("server closed the connection unexpectedly"). With every packet dropped first,
    // a new SYN goes unanswered and the client's retry finds the port closed: a refusal, which
    // it can act on (try the next address). Best effort: without it the window is microseconds.
    sock_filter drop_all = BPF_STMT(BPF_RET | BPF_K, 0);
    sock_fprog program{1, &drop_all};
    if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &program, sizeof(program)) != 0) {
      PGF_DEBUG("agent", "listener %s: no drop filter before closing: %s", listener.address,
                strerror(errno));
    }
  }
  while (true) {
    sockaddr_storage peer{};
    socklen_t length = sizeof(peer);
    const int client = accept4(fd, reinterpret_cast<sockaddr*>(&peer), &length, SOCK_CLOEXEC);
    if (client < 0) {
      if (errno == EINTR) continue;
      break;  // EAGAIN: the queue is empty (the listener is non-blocking).
    }
    OnAccept(listener.listener, client, reinterpret_cast<sockaddr*>(&peer),
             static_cast<int>(length), this);
  }
  evconnlistener_free(listener.listener);
  if (listener.is_unix && remove_socket_file) unlink(listener.address.c_str());
}

absl::Status Agent::ApplyListeners(const config::Config& cfg, bool at_start) {
  PGF_ASSIGN_OR_RETURN(std::vector<ListenSpec> specs, ListenSpecsOf(cfg));
  std::vector<Listener> next;
  std::vector<Listener> opened;
  auto kept = [&](const std::string& address) {
    for (const Listener& current : listeners_) {
      if (current.address == address) return true;
    }
    return false;
  };
  for (const ListenSpec& spec : specs) {
    bool duplicate = false;
    for (const Listener& listener : next) duplicate |= listener.address == spec.address;
    if (duplicate) continue;
    if (kept(spec.address)) {
      for (const Listener& current : listeners_) {
        if (current.address == spec.address) next.push_back(current);
      }
      continue;
    }
    absl::StatusOr<evconnlistener*> bound = BindListener(spec, at_start);
    if (!bound.ok()) {
      // All or nothing: what this call opened goes, what was serving stays. At start the
      // agent is about to exit: connections queued on what it opened are not taken as clients
      // (nothing would serve them, and they would outlive the agent); they are reset.
      for (const Listener& listener : opened) {
        if (!at_start) {
          CloseListener(listener, /*remove_socket_file=*/true);
          continue;
        }
        evconnlistener_free(listener.listener);
        if (listener.is_unix) unlink(listener.address.c_str());
      }
      return AtKey(cfg, spec.key, bound.status());
    }
    Listener listener{spec.address, *bound, spec.is_unix};
    if (suspended_) evconnlistener_disable(listener.listener);
    opened.push_back(listener);
    next.push_back(listener);
  }
  // The new listeners accept from here on; only now do the ones no longer wanted close.
  for (const Listener& listener : opened) {
    PGF_INFO("agent", "listening on %s%s", listener.is_unix ? "unix socket " : "",
             listener.address);
  }
  for (const Listener& current : listeners_) {
    bool still_wanted = false;
    for (const Listener& listener : next) still_wanted |= listener.listener == current.listener;
    if (still_wanted) continue;
    CloseListener(current, /*remove_socket_file=*/true);
    PGF_INFO("agent", "stopped listening on %s%s (no longer in the config)",
             current.is_unix ? "unix socket " : "", current.address);
  }
  listeners_ = std::move(next);
  for (int unused : options_.inherited_listeners) {
    PGF_INFO("agent", "a handed-over listener the config no longer names is closed");
    close(unused);
  }
  options_.inherited_listeners.clear();
  return absl::OkStatus();
}

namespace {

absl::StatusOr<std::vector<Agent::ListenSpec>> ListenSpecsOf(const config::Config& cfg) {
  std::vector<Agent::ListenSpec> specs;
  if (!cfg.listen_addr.empty()) {
    for (absl::string_view raw : absl::StrSplit(cfg.listen_addr, ',')) {
      std::string addr(absl::StripAsciiWhitespace(raw));
      if (addr.empty()) continue;
      if (addr == "*") addr = "0.0.0.0";
      if (addr == "localhost") addr = "127.0.0.1";
      Agent::ListenSpec spec;
      spec.key = "listen_addr";
      int len = sizeof(spec.storage);
      spec.address = addr.find(':') != std::string::npos
                         ? absl::StrCat("[", addr, "]:", cfg.listen_port)
                         : absl::StrCat(addr, ":", cfg.listen_port);
      if (evutil_parse_sockaddr_port(spec.address.c_str(),
                                     reinterpret_cast<sockaddr*>(&spec.storage), &len) != 0) {
        return AtKey(cfg, "listen_addr",
                     absl::InvalidArgumentError(absl::StrCat("cannot parse '", addr, "'")));
      }
      spec.length = static_cast<socklen_t>(len);
      specs.push_back(std::move(spec));
    }
  }
  if (!cfg.unix_socket_dir.empty()) {
    Agent::ListenSpec spec;
    spec.key = "unix_socket_dir";
    spec.is_unix = true;
    spec.address = absl::StrCat(cfg.unix_socket_dir, "/.s.PGSQL.", cfg.listen_port);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (spec.address.size() >= sizeof(addr.sun_path)) {
      return AtKey(
          cfg, "unix_socket_dir",
          absl::InvalidArgumentError(absl::StrCat("unix socket path too long: ", spec.address)));
    }
    memcpy(addr.sun_path, spec.address.c_str(), spec.address.size() + 1);
    memcpy(&spec.storage, &addr, sizeof(addr));
    spec.length = sizeof(addr);
    specs.push_back(std::move(spec));
  }
  if (specs.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(cfg.path, ": nothing to listen on: set listen_addr or unix_socket_dir"));
  }
  return specs;
}

}  // namespace

evconnlistener* Agent::AdoptInheritedListener(const ListenSpec& spec) {
  const sockaddr* addr = reinterpret_cast<const sockaddr*>(&spec.storage);
  for (auto it = options_.inherited_listeners.begin(); it != options_.inherited_listeners.end();
       ++it) {
    sockaddr_storage bound{};
    socklen_t bound_len = sizeof(bound);
    if (getsockname(*it, reinterpret_cast<sockaddr*>(&bound), &bound_len) != 0 ||
        !SameAddress(bound, addr)) {
      continue;
    }
    const int fd = *it;
    options_.inherited_listeners.erase(it);
    evutil_make_socket_nonblocking(fd);
    // Backlog -1: the socket listens already; its queue, with whatever the old process had
    // not accepted yet, is ours now. A unix socket keeps its path: clients never miss it.
    evconnlistener* listener =
        evconnlistener_new(loop_->base(), &Agent::OnAccept, this,
                           LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, fd);
    if (listener == nullptr) close(fd);
    return listener;
  }
  return nullptr;
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

void Agent::CloseListeners() {
  for (const Listener& listener : listeners_) evconnlistener_free(listener.listener);
  listeners_.clear();
}

void Agent::OnAccept(evconnlistener*, int fd, sockaddr* addr, int, void* arg) {
  auto* agent = static_cast<Agent*>(arg);
  if (agent->shutting_down_) {
    close(fd);
    return;
  }
  evutil_make_socket_nonblocking(fd);
  if (addr->sa_family != AF_UNIX) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    ApplyKeepalive(fd, *agent->config_);
  }
  auto* client = new ClientConn(*agent, fd, net::PeerAddress(addr), agent->NextConnId());
  agent->login_clients_.PushBack(client);
  agent->client_count_++;
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

absl::Status Agent::Reload() {
  // systemd shows the unit as "reloading" until READY=1 comes again, refused or not.
  if (service_notifier_) service_notifier_("RELOADING=1");
  absl::Status reloaded = ReloadConfig();
  if (service_notifier_) {
    service_notifier_(absl::StrCat(
        "READY=1\nSTATUS=", reloaded.ok()
                                ? ServiceStatus()
                                : absl::StrCat("RELOAD refused (", reloaded.message(),
                                               "), previous config kept; ", ServiceStatus())));
  }
  return reloaded;
}

std::string Agent::ServiceStatus() const {
  std::string listening;
  for (const Listener& listener : listeners_) {
    absl::StrAppend(&listening, listening.empty() ? "" : ", ", listener.address);
  }
  if (shutting_down_) return absl::StrCat("shutting down; ", client_count_, " clients left");
  return absl::StrCat("serving on ", listening.empty() ? "(no listener)" : listening, "; ",
                      client_count_, " clients, ", pools_.size(), " pools",
                      PausedScopes().empty() ? "" : "; paused", suspended_ ? "; suspended" : "");
}

absl::Status Agent::ReloadConfig() {
  // Certificates and keys are read again, so a renewed certificate needs only a RELOAD; the
  // logfile is opened first, so a path the agent cannot write refuses the RELOAD.
  PGF_ASSIGN_OR_RETURN(LoadedConfig loaded, LoadConfigAndFiles(options_.config_path));
  config::Config& cfg = loaded.cfg;
  PinListeners(cfg);
  config::AuthFile& users = loaded.users;
  std::shared_ptr<const TlsContext>& client_tls = loaded.client_tls;
  std::shared_ptr<const TlsContext>& server_tls = loaded.server_tls;
  for (const std::string& warning : cfg.warnings) PGF_WARN("config", "%s", warning);
  // What only a restart can change keeps its running value; the rest is applied below.
  std::vector<std::string> pending = config::KeepRestartOnlyValues(*config_, cfg);
  // The last step that can fail: new listeners are bound before old ones close, and a bind
  // failure leaves the listeners and (returning here) the whole config as they were.
  PGF_RETURN_IF_ERROR(ApplyListeners(cfg, /*at_start=*/false));
  const bool new_stats_period = cfg.stats_period != config_->stats_period;
  // A file without `verbose` keeps the level in force (-v, or a console SET), as PgBouncer,
  // whose verbose has no default a reload would reset it to.
  if (!cfg.locations.contains("verbose")) cfg.verbose = config_->verbose;
  // Servers connected under other server TLS settings are replaced as they are released
  // (PgBouncer: "database configuration changed").
  const bool server_tls_changed = config::ServerTlsDiffers(*config_, cfg);
  tls_staged_.reset();
  SetConfig(std::make_shared<const config::Config>(std::move(cfg)));
  auth_file_ = std::move(users);
  hba_ = std::move(loaded.hba);
  client_tls_ = std::move(client_tls);
  server_tls_ = std::move(server_tls);
  scram_cache_.clear();
  common::SetLogLevel(config_->verbose ? common::LogLevel::kDebug : common::LogLevel::kInfo);
  if (!config_->logfile.empty()) common::SetLogFile(config_->logfile);
  for (auto& [key, pool] : pools_) {
    if (std::optional<config::DatabaseConfig> db = config_->FindDatabase(key.first)) {
      pool->Reconfigure(*db);
    }
  }
  if (new_stats_period && stats_timer_ != nullptr) {
    stats_timer_->Start(config_->stats_period, /*repeat=*/true);
  }
  if (server_tls_changed) ReconnectForNewServerTls();
  PGF_INFO("agent", "RELOAD: configuration %s loaded%s", config_->path,
           server_tls_changed ? " (server TLS settings changed: servers close as released)" : "");
  if (!pending.empty()) {
    PGF_WARN("agent", "RELOAD: %s (the running values of these keys stay until the agent restarts)",
             config::RestartPendingText(pending));
  }
  {
    absl::MutexLock lock(&restart_pending_mu_);
    restart_pending_ = std::move(pending);
  }
  return absl::OkStatus();
}

void Agent::PinListeners(config::Config& cfg) const {
  if (!local_listeners_.has_value()) return;
  const config::Config& local = *local_listeners_;
  cfg.listen_addr = local.listen_addr;
  cfg.listen_port = local.listen_port;
  cfg.unix_socket_dir = local.unix_socket_dir;
  for (const char* key : {"listen_addr", "listen_port", "unix_socket_dir"}) {
    cfg.locations[key] = local.Where(key);
  }
}

std::vector<std::string> Agent::restart_pending() const {
  absl::MutexLock lock(&restart_pending_mu_);
  return restart_pending_;
}

absl::Status Agent::ReloadFrom(const std::string& path) {
  std::string previous = std::move(options_.config_path);
  options_.config_path = path;
  absl::Status reloaded = Reload();
  if (!reloaded.ok()) options_.config_path = std::move(previous);
  return reloaded;
}

void Agent::SetConfig(std::shared_ptr<const config::Config> config) {
  config_ = std::move(config);
  listen_port_.store(config_->listen_port, std::memory_order_relaxed);
  // Start, RELOAD, SET and pushed configs all land here.
  common::SetSyslog(config_->syslog, config_->syslog_ident, config_->syslog_facility);
  common::SetLogFormat(
      common::ParseLogFormat(config_->log_format).value_or(common::LogFormat::kText));
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

Pool* Agent::GetPool(const std::string& database, const std::string& user) {
  auto key = std::make_pair(database, user);
  if (auto it = pools_.find(key); it != pools_.end()) return it->second.get();
  std::optional<config::DatabaseConfig> db = config_->FindDatabase(database);
  if (!db.has_value()) return nullptr;
  if (!config_->databases.contains(database) &&
      std::none_of(pools_.begin(), pools_.end(),
                   [&](const auto& entry) { return entry.first.first == database; })) {
    // PgBouncer's words when "*" serves a database for the first time.
    PGF_INFO("client", "registered new auto-database: db=%s", database);
  }
  auto [it, inserted] = pools_.emplace(key, std::make_unique<Pool>(*this, *db, user));
  return it->second.get();
}

std::string Agent::PoolUserFor(const std::string& database, const std::string& client_user) const {
  const std::optional<config::DatabaseConfig> db = config_->FindDatabase(database);
  return db.has_value() && !db->user.empty() ? db->user : client_user;
}

Pool* Agent::FindPool(const std::string& database, const std::string& user) {
  auto it = pools_.find(std::make_pair(database, user));
  return it == pools_.end() ? nullptr : it->second.get();
}

std::optional<absl::Duration> Agent::PoolReclaimDelay(const std::string& db,
                                                      const std::string& user) const {
  // Pools nobody configured (any user name under auth_type any, users removed from auth_file)
  // go sooner than autodb_idle_timeout's hour: they are what someone can create at will.
  constexpr absl::Duration kUnconfiguredPoolGrace = absl::Seconds(60);
  const config::Config& cfg = *config_;
  const bool user_known = auth_file_.find(user) != auth_file_.end() || cfg.users.contains(user) ||
                          PoolUserFor(db, "") == user;
  if (!cfg.FindDatabase(db).has_value() || !user_known) {
    return std::min(cfg.autodb_idle_timeout, kUnconfiguredPoolGrace);
  }
  if (!cfg.databases.contains(db)) return cfg.autodb_idle_timeout;  // Served by "*".
  return std::nullopt;
}

void Agent::ReclaimUnusedPools(uint64_t now_us) {
  for (auto it = pools_.begin(); it != pools_.end();) {
    Pool& pool = *it->second;
    const std::optional<absl::Duration> delay = PoolReclaimDelay(it->first.first, it->first.second);
    const uint64_t unused_for = pool.UnusedForMicros(now_us);
    // PgBouncer 1.25's pool_idle_timeout: any pool, configured or not, once it has had no
    // client and no server connection at all for that long.
    const absl::Duration idle_timeout = config_->pool_idle_timeout;
    const uint64_t empty_for = pool.EmptyForMicros(now_us);
    const bool idle_expired =
        idle_timeout > absl::ZeroDuration() && empty_for > 0 &&
        empty_for >= static_cast<uint64_t>(absl::ToInt64Microseconds(idle_timeout));
    const bool unused_expired =
        delay.has_value() && unused_for > 0 &&
        unused_for >= static_cast<uint64_t>(absl::ToInt64Microseconds(*delay));
    if (!idle_expired && !unused_expired) {
      ++it;
      continue;
    }
    pool.Retire();
    if (pool.server_count() != 0) {  // Defensive: Retire leaves none of an unused pool.
      ++it;
      continue;
    }
    // A configured database's totals keep what its reclaimed pools counted (SHOW STATS
    // counters never go down); an auto database's go with it, as in PgBouncer.
    if (config_->databases.contains(it->first.first)) {
      reclaimed_stats_[it->first.first] += pool.stats();
    }
    if (unused_expired) {
      PGF_INFO("pool", "db=%s user=%s pool reclaimed after %s unused (no config entry of its own)",
               it->first.first, it->first.second,
               absl::FormatDuration(absl::Microseconds(static_cast<int64_t>(unused_for))));
    } else {
      PGF_INFO("pool", "db=%s user=%s pool freed after %s without connections (pool_idle_timeout)",
               it->first.first, it->first.second,
               absl::FormatDuration(absl::Microseconds(static_cast<int64_t>(empty_for))));
    }
    it = pools_.erase(it);
  }
}

void Agent::RegisterCancelKey(ClientConn* client) {
  uint64_t key = (static_cast<uint64_t>(static_cast<uint32_t>(client->cancel_pid())) << 32) |
                 static_cast<uint32_t>(client->cancel_key());
  cancel_keys_[key] = client;
}

void Agent::UnregisterCancelKey(ClientConn* client) {
  uint64_t key = (static_cast<uint64_t>(static_cast<uint32_t>(client->cancel_pid())) << 32) |
                 static_cast<uint32_t>(client->cancel_key());
  auto it = cancel_keys_.find(key);
  if (it != cancel_keys_.end() && it->second == client) cancel_keys_.erase(it);
}

void Agent::HandleCancelRequest(int32_t pid, int32_t key) {
  uint64_t lookup =
      (static_cast<uint64_t>(static_cast<uint32_t>(pid)) << 32) | static_cast<uint32_t>(key);
  auto it = cancel_keys_.find(lookup);
  if (it == cancel_keys_.end()) {
    PGF_INFO("agent", "cancel request with an unknown key ignored");
    return;
  }
  ClientConn* client = it->second;
  ServerConn* server = client->server();
  if (server == nullptr || server->state() != ServerConn::State::kActive || server->IsClean()) {
    // Nothing is running for this client, so there is nothing to cancel (PostgreSQL too
    // ignores a cancel for an idle backend). Forwarding it anyway could hit whatever the
    // server runs later, maybe for another client.
    PGF_INFO("agent", "c=%d cancel request while no query runs: ignored", client->id());
    return;
  }
  PGF_INFO("agent", "c=%d cancel request forwarded to s=%d (backend pid %d)", client->id(),
           server->id(), server->backend_pid());
  CancelTarget& target = cancel_targets_[server->id()];
  target.server = server;
  ++target.in_flight;
  auto forwarder = std::make_unique<CancelForwarder>(
      server->id(), [this](CancelForwarder* done, CancelForwarder::Outcome outcome) {
        OnCancelForwarded(done, outcome);
      });
  CancelForwarder* raw = forwarder.get();
  cancel_forwarders_.emplace(raw, std::move(forwarder));
  // To the host this server connection went to, of the database's host list.
  config::DatabaseConfig host = server->pool().db();
  host.host = server->endpoint().host;
  host.port = server->endpoint().port;
  host.ports.clear();
  // May finish (and free the forwarder) before it returns.
  raw->Start(*loop_, host, pg::CancelRequest(server->backend_pid(), server->backend_key()),
             config_->server_connect_timeout);
}

bool Agent::CancelInFlight(const ServerConn* server) const {
  return cancel_targets_.contains(server->id());
}

void Agent::HoldUntilCancelled(ServerConn* server) {
  auto it = cancel_targets_.find(server->id());
  if (it == cancel_targets_.end()) return;
  if (it->second.in_flight == 0) {
    // Only a cancel whose fate is unknown is left (see OnCancelForwarded).
    cancel_targets_.erase(it);
    server->Close("a cancel request to it may still land", /*is_error=*/false);
    return;
  }
  it->second.held = true;
}

int Agent::ServersBeingCanceled(const Pool& pool) const {
  int count = 0;
  for (const auto& [id, target] : cancel_targets_) {
    count += target.held && &target.server->pool() == &pool ? 1 : 0;
  }
  return count;
}

int Agent::CancelsInFlight(const Pool& pool) const {
  int count = 0;
  for (const auto& [id, target] : cancel_targets_) {
    if (&target.server->pool() == &pool) count += target.in_flight;
  }
  return count;
}

void Agent::ForgetCancelTarget(const ServerConn* server) { cancel_targets_.erase(server->id()); }

void Agent::OnCancelForwarded(CancelForwarder* forwarder, CancelForwarder::Outcome outcome) {
  const uint64_t server_id = forwarder->server_id();
  cancel_forwarders_.erase(forwarder);  // Frees it; it touches nothing after calling us.
  auto it = cancel_targets_.find(server_id);
  if (it == cancel_targets_.end()) return;  // The server has closed meanwhile.
  CancelTarget& target = it->second;
  if (outcome == CancelForwarder::Outcome::kUncertain) {
    // Sent, but PostgreSQL did not close the connection in time: the signal may still
    // arrive, so this backend must serve nobody else once its client lets go of it.
    PGF_WARN("agent", "s=%d cancel request did not complete within server_connect_timeout",
             server_id);
    target.uncertain = true;
  }
  if (--target.in_flight > 0) return;
  ServerConn* server = target.server;
  const bool held = target.held;
  if (target.uncertain && !held) return;  // Still linked: closed when released.
  const bool uncertain = target.uncertain;
  cancel_targets_.erase(it);
  if (!held) return;
  if (uncertain) {
    server->Close("a cancel request to it may still land", /*is_error=*/false);
  } else {
    server->pool().OnCancelsDone(server);
  }
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

int Agent::ServerCountForDb(const std::string& db) const {
  int count = 0;
  for (const auto& [key, pool] : pools_) {
    if (key.first == db) count += static_cast<int>(pool->server_count());
  }
  return count;
}

int Agent::ServerCountForUser(const std::string& user) const {
  int count = 0;
  for (const auto& [key, pool] : pools_) {
    if (pool->server_user() == user) count += static_cast<int>(pool->server_count());
  }
  return count;
}

const crypto::ScramKeys& Agent::ScramKeysForPlainPassword(const std::string& user,
                                                          const std::string& password) {
  auto it = scram_cache_.find(user);
  // scram_iterations may have changed since (SET, RELOAD): the verifier follows it.
  if (it == scram_cache_.end() || it->second.password != password ||
      it->second.keys.iterations != config_->scram_iterations) {
    CachedScram entry{password, crypto::ScramKeysFromPassword(
                                    password, crypto::ScramMockSalt(mock_auth_secret_, user),
                                    config_->scram_iterations)};
    it = scram_cache_.insert_or_assign(user, std::move(entry)).first;
  }
  return it->second.keys;
}

absl::Status Agent::SetCredentialOverlaps(const std::vector<CredentialOverlap>& overlaps) {
  const absl::Time now = absl::Now();
  absl::flat_hash_map<std::string, OpenOverlap> open;
  for (const CredentialOverlap& overlap : overlaps) {
    if (overlap.expires <= now) continue;
    PGF_ASSIGN_OR_RETURN(config::UserSecret previous,
                         config::MakeUserSecret(overlap.user, overlap.previous_secret));
    open.insert_or_assign(overlap.user, OpenOverlap{std::move(previous), overlap.expires});
  }
  for (const auto& [user, overlap] : open) {
    if (!overlaps_.contains(user) || overlaps_.at(user).expires != overlap.expires ||
        !crypto::SecretEquals(overlaps_.at(user).previous.secret, overlap.previous.secret)) {
      // The user and the expiry, never the secret.
      PGF_INFO("agent",
               "password rotation overlap for user '%s' open until %s: its previous secret is "
               "accepted too",
               user, absl::FormatTime(absl::RFC3339_sec, overlap.expires, absl::UTCTimeZone()));
    }
  }
  for (const auto& [user, overlap] : overlaps_) {
    if (!open.contains(user)) {
      PGF_INFO("agent", "password rotation overlap for user '%s' closed", user);
    }
  }
  overlaps_ = std::move(open);
  previous_scram_cache_.clear();
  return absl::OkStatus();
}

const config::UserSecret* Agent::PreviousSecret(const std::string& user) {
  auto it = overlaps_.find(user);
  if (it == overlaps_.end()) return nullptr;
  if (absl::Now() >= it->second.expires) {
    PGF_INFO("agent",
             "password rotation overlap for user '%s' expired: only the current "
             "secret is accepted now",
             user);
    overlaps_.erase(it);
    previous_scram_cache_.erase(user);
    return nullptr;
  }
  return &it->second.previous;
}

std::map<std::string, absl::Time> Agent::OverlapExpiries() const {
  std::map<std::string, absl::Time> expiries;
  const absl::Time now = absl::Now();
  for (const auto& [user, overlap] : overlaps_) {
    if (overlap.expires > now) expiries[user] = overlap.expires;
  }
  return expiries;
}

const crypto::ScramKeys& Agent::ScramKeysWithSalt(const std::string& user,
                                                  const std::string& password,
                                                  const crypto::ScramKeys& shown) {
  auto it = previous_scram_cache_.find(user);
  if (it == previous_scram_cache_.end() || it->second.password != password ||
      it->second.keys.salt != shown.salt || it->second.keys.iterations != shown.iterations) {
    CachedScram entry{password,
                      crypto::ScramKeysFromPassword(password, shown.salt, shown.iterations)};
    it = previous_scram_cache_.insert_or_assign(user, std::move(entry)).first;
  }
  return it->second.keys;
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

namespace pgfleet::agent {

void Agent::BeginHandover(uint64_t command_id, HandoverDone done) {
  BeginHandover(command_id, std::move(done), std::nullopt);
}

void Agent::BeginHandover(uint64_t command_id, HandoverDone caller_done,
                          std::optional<TakeoverRequest> requester) {
  // A refusal goes to the -R process too, so it says why instead of waiting out its timeout.
  std::shared_ptr<TakeoverRequest> pending =
      requester.has_value() ? std::make_shared<TakeoverRequest>(*requester) : nullptr;
  HandoverDone done = [pending, caller_done](absl::StatusOr<pid_t> outcome) {
    if (pending != nullptr && !outcome.ok()) {
      RefuseTakeover(*pending, std::string(outcome.status().message()));
    }
    caller_done(std::move(outcome));
  };
  if (shutting_down_ || handed_over_) {
    done(absl::FailedPreconditionError("this agent is shutting down or has handed over already"));
    return;
  }
  if (handover_ != nullptr) {
    done(absl::FailedPreconditionError(
        absl::StrCat("a restart is already in progress (new pid ", handover_->child_pid(), ")")));
    return;
  }
  if (suspended_) {
    // SUSPEND freezes every connection for an admin working on the host (PgBouncer's online
    // restart used it to hand sockets over); a new process would start serving new clients
    // while this one's stay frozen with no RESUME able to reach them. Refused, not carried.
    done(absl::FailedPreconditionError(
        "the agent is suspended (SUSPEND): RESUME first, then RESTART"));
    return;
  }
  HandoverFds fds;
  // Pauses and DISABLE outlive the process: the new one starts with them (and PAUSE, RESUME,
  // DISABLE and ENABLE are refused until the hand-over ends, so what it got stays true).
  const absl::Time now = absl::Now();
  if (pause_all_) fds.state.paused.push_back({"", std::nullopt});
  for (const std::string& db : paused_dbs_) fds.state.paused.push_back({db, std::nullopt});
  for (CarriedState::Pause& pause : fds.state.paused) {
    if (auto it = pause_deadlines_.find(pause.db); it != pause_deadlines_.end()) {
      pause.remaining = std::max(it->second - now, absl::Milliseconds(1));
    }
  }
  fds.state.disabled.assign(disabled_dbs_.begin(), disabled_dbs_.end());
  for (const Listener& listener : listeners_) {
    fds.listeners.push_back(evconnlistener_get_fd(listener.listener));
  }
  if (metrics_server_ != nullptr) fds.metrics_fd = metrics_server_->fd();
  if (handover_hooks_.state_lock_fd) fds.state_lock_fd = handover_hooks_.state_lock_fd();
  // The new process's controller stream supersedes this one; this one must not come back and
  // supersede it in turn while the new process starts.
  if (handover_hooks_.hold_link) handover_hooks_.hold_link(true);
  if (pending != nullptr) {
    PGF_INFO("agent", "RESTART: handing %d listener(s) over to pid %d (started with -R)",
             fds.listeners.size(), pending->pid);
  } else {
    PGF_INFO("agent", "RESTART: starting a new process to hand %d listener(s) over to",
             fds.listeners.size());
  }
  // Bounds start-up: loading the config and files, and the controller stream (the new process
  // waits for that a few seconds at most, see main.cc).
  constexpr absl::Duration kNewProcessReadyTimeout = absl::Seconds(30);
  // From here the hand-over owns the -R process's channel and says what happened through it.
  std::optional<TakeoverRequest> handed;
  if (pending != nullptr) {
    handed = *pending;
    *pending = TakeoverRequest{};
  }
  absl::StatusOr<std::unique_ptr<HandoverParent>> started = HandoverParent::Start(
      *loop_, fds, command_id, kNewProcessReadyTimeout,
      [this, done](absl::StatusOr<pid_t> outcome) { OnHandoverOutcome(std::move(outcome), done); },
      std::move(handed));
  if (!started.ok()) {
    if (handover_hooks_.hold_link) handover_hooks_.hold_link(false);
    done(absl::Status(started.status().code(),
                      absl::StrCat("cannot start the new process: ", started.status().message())));
    return;
  }
  handover_ = std::move(*started);
}

void Agent::OnHandoverOutcome(absl::StatusOr<pid_t> outcome, const HandoverDone& done) {
  // Called from inside handover_: it is freed once its callback has returned.
  loop_->Post([finished = std::move(handover_)]() mutable { finished.reset(); });
  if (!outcome.ok()) {
    PGF_ERROR("agent", "RESTART failed, this process (pid %d) keeps serving: %s", getpid(),
              outcome.status().message());
    if (handover_hooks_.hold_link) handover_hooks_.hold_link(false);
    done(outcome.status());
    return;
  }
  // The flag wins over the config key; the key is read now, so a RELOAD before the hand-over
  // changes it.
  handover_drain_bound_ = options_.handover_drain_timeout.value_or(config_->handover_drain_timeout);
  handover_successor_pid_ = *outcome;
  PGF_INFO("agent",
           "RESTART: pid %d is ready and accepting; this process (pid %d) stops accepting and "
           "lets its %d client(s) finish (drain bound %s)",
           *outcome, getpid(), client_count_, absl::FormatDuration(handover_drain_bound_));
  handed_over_ = true;
  CloseListeners();
  metrics_server_.reset();
  written_pidfile_.clear();  // The new process wrote its pid there: not ours to remove.
  if (handover_hooks_.on_handed_over) handover_hooks_.on_handed_over();
  done(*outcome);
  handover_drain_timer_ = std::make_unique<Timer>(*loop_, [this] {
    handover_drain_bound_passed_ = true;
    PGF_INFO("agent",
             "hand-over drain bound passed: clients are closed at their next transaction "
             "boundary (hard stop in %s)",
             absl::FormatDuration(options_.shutdown_timeout));
    CloseClientsAtTransactionBoundary();
    shutdown_timer_ = std::make_unique<Timer>(*loop_, [this] {
      PGF_WARN("agent",
               "hand-over: clients still in transactions after the drain bound and "
               "--shutdown-timeout: exiting");
      StopLoop();
    });
    shutdown_timer_->Start(options_.shutdown_timeout, /*repeat=*/false);
  });
  handover_drain_timer_->Start(handover_drain_bound_, /*repeat=*/false);
  RequestShutdownCheck();
}

std::string Agent::HandoverCloseMessage() const {
  return absl::StrCat("the agent restarted: pid ", handover_successor_pid_,
                      " serves this address now and this connection outlived the drain bound (",
                      absl::FormatDuration(handover_drain_bound_), "): reconnect");
}

void Agent::CloseClientsAtTransactionBoundary() {
  std::vector<ClientConn*> to_close;
  for (auto& [key, pool] : pools_) {
    pool->active_clients().ForEach([&](const ClientConn* client) {
      // Outside a transaction: no server (transaction pooling), or a session's server with
      // nothing open and nothing in flight. A client queued for a server has a query waiting:
      // it gets its server and is closed after.
      const ServerConn* server = client->server();
      if (server == nullptr || server->IsClean()) {
        to_close.push_back(const_cast<ClientConn*>(client));
      }
    });
  }
  for (ClientConn* client : to_close) {
    client->CloseWithError("57P01", HandoverCloseMessage());
  }
}

}  // namespace pgfleet::agent
