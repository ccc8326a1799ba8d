// The agent's gRPC stream to pgfleet-controller. It runs on threads of its own: the data path
// never waits for it. Messages from the controller are handed to the event loop with Post();
// the loop hands reports back with Send(), which only queues.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/time/time.h"
#include "pgfleet/v1/agent.grpc.pb.h"

namespace pgfleet::agent {

class EventLoop;

struct LinkOptions {
  // host:port, or several separated by commas (controllers of one fleet): the link uses one at
  // a time and moves to the next when it cannot connect or its stream ends.
  std::string controller_address;
  std::string agent_id;
  std::string environment;
  std::map<std::string, std::string> labels;
  // TLS: all three set for mutual TLS; none for a plaintext link (loopback, --insecure).
  std::string ca_file;
  std::string cert_file;
  std::string key_file;
  // A file holding the agent's join token (fleetctl token create --role agent --env ENV), sent
  // as "authorization: Bearer <token>" on every stream. Read at each connect, so a rotated
  // token is picked up without a restart. Empty: none.
  std::string join_token_file;
  absl::Duration initial_backoff = absl::Milliseconds(250);
  absl::Duration max_backoff = absl::Seconds(15);
};

enum class LinkState { kConnecting, kConnected, kBackoff, kStopped };
const char* LinkStateName(LinkState state);

class ControllerLink {
 public:
  // Called on the loop thread for every message from the controller.
  using MessageHandler = absl::AnyInvocable<void(pgfleet::v1::ControllerMessage)>;
  // Called on the link thread at each (re)connect; returns the hello to send. Must only read
  // state that is safe off the loop (the caller keeps it in an atomic snapshot).
  using HelloBuilder = absl::AnyInvocable<pgfleet::v1::AgentHello()>;

  ControllerLink(EventLoop& loop, LinkOptions options, HelloBuilder hello, MessageHandler handler);
  ~ControllerLink();  // Stops and joins.

  void Start();
  void Stop();
  // Thread-safe. Queued for the current stream; dropped when there is none (reports are
  // periodic and config results are re-derived from the hello after a reconnect).
  void Send(pgfleet::v1::AgentMessage message);
  LinkState state() const { return state_.load(); }
  // The controller address the link uses now (or tries next).
  std::string current_address() const;
  // Thread-safe. While held, a stream that ends is not reopened (a hand-over in progress).
  void HoldReconnects(bool hold);
  uint64_t connects() const { return connects_.load(); }

 private:
  void Run();
  // One stream's life to `address`; returns when it breaks. True if it got as far as the
  // controller's first answer.
  bool RunStream(pgfleet::v1::AgentService::Stub& stub, const std::string& address);
  void SleepBackoff(absl::Duration delay);

  EventLoop& loop_;
  LinkOptions options_;
  HelloBuilder hello_;
  MessageHandler handler_;
  std::thread thread_;
  std::atomic<LinkState> state_{LinkState::kConnecting};
  std::atomic<uint64_t> connects_{0};
  std::vector<std::string> addresses_;  // controller_address split; fixed after construction.
  std::atomic<size_t> current_{0};      // Index into addresses_.

  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;                         // Guarded by mu_.
  bool stream_open_ = false;                      // Guarded by mu_.
  bool hold_reconnects_ = false;                  // Guarded by mu_.
  std::deque<pgfleet::v1::AgentMessage> outbox_;  // Guarded by mu_.
  void* active_context_ = nullptr;                // grpc::ClientContext*, guarded by mu_.
};

}  // namespace pgfleet::agent
