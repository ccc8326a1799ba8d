// Cancel requests: the key registry of live clients, forwarding a cancel to the server
// running the query, and holding that server until the cancel is done.

#include "agent/agent.h"
#include "agent/client_conn.h"
#include "agent/pg/protocol.h"
#include "agent/server_conn.h"
#include "common/log.h"

namespace pgfleet::agent {

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

}  // namespace pgfleet::agent
