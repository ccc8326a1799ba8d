// One CancelRequest forwarded to PostgreSQL on a connection of its own. PostgreSQL reads it,
// signals the backend and closes the connection: only then has the cancel landed, so the
// server connection it targets is not handed to another client before (see Agent's
// cancel_targets_, as PgBouncer 1.18's SV_BEING_CANCELED).
#pragma once

#include <cstdint>
#include <string>

#include "absl/functional/any_invocable.h"
#include "absl/time/time.h"
#include "agent/event_loop.h"
#include "common/config/config.h"

struct bufferevent;

namespace pgfleet::agent {

class CancelForwarder {
 public:
  enum class Outcome {
    kDelivered,     // PostgreSQL read the request and closed the connection.
    kNotDelivered,  // No connection to PostgreSQL: the request never left.
    kUncertain,     // Sent, but the connection ended otherwise (timeout, reset): may land late.
  };
  // Called once, last thing the forwarder does; the callee may delete it.
  using Done = absl::AnyInvocable<void(CancelForwarder* forwarder, Outcome outcome)>;

  CancelForwarder(uint64_t server_id, Done done) : server_id_(server_id), done_(std::move(done)) {}
  ~CancelForwarder();
  CancelForwarder(const CancelForwarder&) = delete;
  CancelForwarder& operator=(const CancelForwarder&) = delete;

  // Connects to `db`'s server and sends `packet`; `timeout` bounds the whole exchange.
  void Start(EventLoop& loop, const config::DatabaseConfig& db, const std::string& packet,
             absl::Duration timeout);
  uint64_t server_id() const { return server_id_; }

 private:
  static void OnEvent(bufferevent* bev, short events, void* arg);
  void Finish(Outcome outcome);

  uint64_t server_id_;
  Done done_;
  bufferevent* bev_ = nullptr;
  bool connected_ = false;
  bool finished_ = false;
};

}  // namespace pgfleet::agent
