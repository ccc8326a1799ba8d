// The agent's listening sockets: binding them from a config, adopting those inherited in a
// hand-over, swapping them on RELOAD, and accepting clients on them.

#include <event2/listener.h>
#include <grp.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "agent/agent.h"
#include "agent/agent_detail.h"
#include "agent/client_conn.h"
#include "common/log.h"
#include "common/status_macros.h"

namespace pgfleet::agent {

namespace {

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

}  // namespace

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
                                config_->listen_backlog, addr, static_cast<int>(spec.length));
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
  evconnlistener* listener = evconnlistener_new_bind(
      loop_->base(), &Agent::OnAccept, this, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC,
      config_->listen_backlog, addr, static_cast<int>(spec.length));
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
  // listen() again on a listening socket sets its backlog: the config's listen_backlog then
  // holds for the listeners a reload kept or a hand-over passed on, not only for new ones.
  for (const Listener& listener : listeners_) {
    if (listen(evconnlistener_get_fd(listener.listener), cfg.listen_backlog) != 0) {
      PGF_WARN("agent", "%s: cannot set listen_backlog %d: %s", listener.address,
               cfg.listen_backlog, strerror(errno));
    }
  }
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
    // Backlog 0: the socket listens already (libevent calls listen() again with its own
    // default for -1); its queue, with whatever the old process had not accepted yet, is ours
    // now, and ApplyListeners gives it this config's listen_backlog. A unix socket keeps its
    // path: clients never miss it.
    evconnlistener* listener =
        evconnlistener_new(loop_->base(), &Agent::OnAccept, this,
                           LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, fd);
    if (listener == nullptr) close(fd);
    return listener;
  }
  return nullptr;
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

}  // namespace pgfleet::agent
