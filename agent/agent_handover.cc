// The agent's side of a hand-over to a new process: starting it, acting on its outcome, and
// closing clients at a transaction boundary once the new process serves.

#include <event2/listener.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "agent/agent.h"
#include "agent/client_conn.h"
#include "agent/metrics/metrics_server.h"
#include "agent/reboot.h"
#include "agent/server_conn.h"
#include "common/log.h"

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
