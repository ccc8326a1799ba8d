// ClientConn, first part of its login: the startup packet (SSLRequest, CancelRequest,
// StartupMessage and its parameters) and the TLS upgrade.
#include <event2/buffer.h>
#include <event2/event.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "agent/agent.h"
#include "agent/client_conn.h"
#include "agent/client_conn_detail.h"
#include "agent/conn_state.h"
#include "agent/io/evbuffer_frames.h"
#include "agent/pg/protocol.h"
#include "agent/pg/startup_options.h"
#include "agent/server_conn.h"
#include "common/log.h"

namespace pgfleet::agent {
using namespace client_conn_detail;
namespace {

// Where a client connects from, as PgBouncer's application_name_add_host spells it: "ADDR:PORT"
// ("[ADDR]:PORT" for IPv6), and for a unix socket "unix(PID@HOSTNAME):PORT" with the client's
// pid and the listen port (just "unix:PORT" when the kernel does not say the pid).
std::string ClientHostDetails(const ClientConn& client, int listen_port) {
  std::string peer = client.peer();
  if (peer != "unix") return peer;
  ucred credentials{};
  socklen_t length = sizeof(credentials);
  if (getsockopt(client.fd(), SOL_SOCKET, SO_PEERCRED, &credentials, &length) != 0 ||
      credentials.pid == 0) {
    return absl::StrCat("unix:", listen_port);
  }
  char hostname[256] = "";
  if (gethostname(hostname, sizeof(hostname) - 1) != 0) snprintf(hostname, sizeof(hostname), "?");
  return absl::StrCat("unix(", credentials.pid, "@", hostname, "):", listen_port);
}

}  // namespace

void ClientConn::HandleStartup() {
  while (state_ == State::kStartup) {
    // Fetched each time round: the input buffer is given back when drained.
    evbuffer* in = net_.input();
    size_t available = evbuffer_get_length(in);
    if (available < 4) return;
    char raw_length[4];
    evbuffer_copyout(in, raw_length, sizeof(raw_length));
    const uint32_t length = pg::PeekStartupLength(std::string_view(raw_length, 4));
    if (length < 8 || length > pg::kMaxStartupPacket) {
      CloseWithError("08P01", absl::StrCat("invalid startup packet length ", length));
      return;
    }
    if (available < length) return;
    std::string packet(length, '\0');
    evbuffer_remove(in, packet.data(), length);
    HandleStartupPacket(packet);
  }
}

bool ClientConn::ApplyStartupOptions(const std::string& options) {
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> settings =
      pg::ParseStartupOptions(options);
  if (!settings.ok()) {
    CloseWithError("08P01", std::string(settings.status().message()));
    return false;
  }
  const std::vector<std::string>& ignored = agent_.config().ignore_startup_parameters;
  auto is_ignored = [&](const std::string& name) {
    return std::find(ignored.begin(), ignored.end(), name) != ignored.end();
  };
  for (const auto& [name, value] : *settings) {
    if (std::string tracked = TrackedParamName(agent_.config(), name); !tracked.empty()) {
      SetTrackedParam(tracked, value);
    } else if (!is_ignored(name) && !is_ignored("options")) {
      CloseWithError("08P01", absl::StrCat("unsupported startup parameter in options: ", name));
      return false;
    }
  }
  return true;
}

void ClientConn::HandleStartupPacket(std::string_view packet) {
  // A CancelRequest is never answered, well-formed or not: PostgreSQL and PgBouncer close the
  // connection without a byte, and a client must not learn anything from trying keys.
  uint32_t code = 0;
  if (packet.size() >= 8) memcpy(&code, packet.data() + 4, 4);
  if (ntohl(code) == static_cast<uint32_t>(pg::kCancelRequestCode)) {
    absl::StatusOr<pg::StartupPacket> cancel = pg::ParseStartupPacket(packet);
    if (cancel.ok()) {
      agent_.HandleCancelRequest(cancel->cancel_pid, cancel->cancel_key);
    } else {
      PGF_INFO("client", "c=%d %s malformed cancel request ignored: %s", id_, peer(),
               cancel.status().message());
    }
    Close("cancel request handled");
    return;
  }
  absl::StatusOr<pg::StartupPacket> startup = pg::ParseStartupPacket(packet);
  if (!startup.ok()) {
    const bool wrong_version = absl::StrContains(startup.status().message(), "protocol");
    CloseWithError(wrong_version ? "0A000" : "08P01", std::string(startup.status().message()));
    return;
  }
  switch (startup->code) {
    case pg::kSslRequestCode:
    case pg::kGssEncRequestCode: {
      // One SSLRequest and one GSSENCRequest at most, and none once TLS is on, as PostgreSQL
      // 15's ProcessStartupPacket: anything more is not a protocol it speaks.
      bool& done = startup->code == pg::kSslRequestCode ? ssl_negotiated_ : gss_negotiated_;
      if (done) {
        const uint32_t request = static_cast<uint32_t>(startup->code);
        CloseWithError("0A000", absl::StrCat("unsupported frontend protocol ", request >> 16, ".",
                                             request & 0xffff, ": server supports 3.0 to 3.0"));
        return;
      }
      done = true;
      if (startup->code == pg::kGssEncRequestCode) {
        // No GSS encryption: the client may go on in plain text (or ask for TLS).
        Write("N");
        return;
      }
      StartTls();
      if (tls_) gss_negotiated_ = true;  // Inside TLS there is nothing left to negotiate.
      return;
    }
    default:
      break;
  }
  const config::Config& cfg = agent_.config();
  if (!tls_ && !unix_socket_ && cfg.client_tls_sslmode >= config::TlsMode::kRequire) {
    CloseWithError("28000", absl::StrCat("SSL required (client_tls_sslmode = ",
                                         config::TlsModeName(cfg.client_tls_sslmode), ")"));
    return;
  }
  for (const auto& [name, value] : startup->params) {
    if (name == "user") {
      login_names().user = value;
    } else if (name == "database") {
      login_names().database = value;
    } else if (std::string tracked = TrackedParamName(cfg, name); !tracked.empty()) {
      SetTrackedParam(tracked, value);
    } else if (name == "options") {
      if (!ApplyStartupOptions(value)) return;
    } else if (std::find(cfg.ignore_startup_parameters.begin(), cfg.ignore_startup_parameters.end(),
                         name) == cfg.ignore_startup_parameters.end()) {
      CloseWithError("08P01", absl::StrCat("unsupported startup parameter: ", name));
      return;
    }
  }
  if (user().empty()) {
    CloseWithError("08P01", "no user name in startup packet");
    return;
  }
  if (database().empty()) login_names().database = user();
  if (cfg.application_name_add_host) {
    // Once, at login (PgBouncer's set_appname): the name then travels to every server this
    // client gets like any tracked parameter; a later SET application_name replaces it whole.
    std::string name = "app";  // PgBouncer's name for a client that gave none.
    for (const auto& [key, value] : params()) {
      if (key == "application_name") name = value;
    }
    SetTrackedParam("application_name",
                    absl::StrCat(name, " - ", ClientHostDetails(*this, cfg.listen_port)));
  }
  if (agent_.shutting_down()) {
    CloseWithError("57P01", "pooler is shutting down");
    return;
  }
  if (agent_.client_count() > static_cast<size_t>(cfg.max_client_conn)) {
    CloseWithError("53300", "no more connections allowed (max_client_conn)");
    return;
  }
  // An unknown or disabled database is answered after authentication, as PgBouncer does
  // (finish_client_login): the client that cannot log in learns nothing about the databases.
  StartAuth();
}

void ClientConn::StartTls() {
  const TlsContext* tls = agent_.client_tls();
  if (tls == nullptr || tls_ || unix_socket_) {
    Write("N");  // Plain text it is (TLS off, already on, or a unix socket).
    return;
  }
  // Bytes after the SSLRequest would have been sent before encryption started: someone in
  // the middle may have injected them (CVE-2021-23214).
  if (net_.input_length() != 0) {
    CloseWithError("08P01", "received unencrypted data after SSL request");
    return;
  }
  Write("S");
  if (!net_.StartTls(tls->NewSession())) {
    Close("cannot start TLS");
    return;
  }
  tls_ = true;
}

}  // namespace pgfleet::agent
