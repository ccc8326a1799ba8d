#include "agent/cancel_forwarder.h"

#include <event2/bufferevent.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "agent/net/connect.h"

namespace pgfleet::agent {

CancelForwarder::~CancelForwarder() {
  if (bev_ != nullptr) bufferevent_free(bev_);
}

void CancelForwarder::Start(EventLoop& loop, const config::DatabaseConfig& db,
                            const std::string& packet, absl::Duration timeout) {
  bev_ = bufferevent_socket_new(loop.base(), -1, BEV_OPT_CLOSE_ON_FREE);
  bufferevent_setcb(bev_, nullptr, nullptr, &CancelForwarder::OnEvent, this);
  // Both directions: the write timeout covers the connect, the read one PostgreSQL's answer
  // (it sends nothing and closes once it has signalled the backend).
  const timeval tv = absl::ToTimeval(timeout);
  bufferevent_set_timeouts(bev_, &tv, &tv);
  bufferevent_write(bev_, packet.data(), packet.size());
  bufferevent_enable(bev_, EV_READ | EV_WRITE);
  int rc;
  if (db.host.empty() || db.host[0] == '/') {
    std::string path =
        absl::StrCat(db.host.empty() ? "/var/run/postgresql" : db.host, "/.s.PGSQL.", db.port);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path.c_str());
    rc = bufferevent_socket_connect(bev_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  } else {
    rc = bufferevent_socket_connect_hostname(bev_, loop.dns(), AF_UNSPEC, db.host.c_str(), db.port);
  }
  net::MarkCloseOnExec(bufferevent_getfd(bev_));
  if (rc != 0) Finish(Outcome::kNotDelivered);
}

void CancelForwarder::OnEvent(bufferevent*, short events, void* arg) {
  auto* self = static_cast<CancelForwarder*>(arg);
  net::MarkCloseOnExec(bufferevent_getfd(self->bev_));
  if (events & BEV_EVENT_CONNECTED) {
    self->connected_ = true;
    return;
  }
  if (events & BEV_EVENT_EOF) {
    self->Finish(Outcome::kDelivered);
  } else if (events & (BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)) {
    self->Finish(self->connected_ ? Outcome::kUncertain : Outcome::kNotDelivered);
  }
}

void CancelForwarder::Finish(Outcome outcome) {
  if (finished_) return;
  finished_ = true;
  bufferevent_disable(bev_, EV_READ | EV_WRITE);
  // Last: the callee may delete this.
  Done done = std::move(done_);
  done(this, outcome);
}

}  // namespace pgfleet::agent
