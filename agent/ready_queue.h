// Client connections with input to handle, run from the event loop rather than from the
// middle of whatever made them ready. Linking a client to a server, releasing its server or
// welcoming it happens deep inside another connection's handler (a server's ReadyForQuery
// releases it to the pool, which links the next client): reading that client's input right
// there re-entered the pool and the connections on one stack (server -> pool -> client ->
// server). Instead the client is marked here, and the loop handles it once the handler that
// marked it has returned, in the same loop turn (one libevent event, activated; no syscall).
#pragma once

#include <cstddef>
#include <vector>

struct event;
struct event_base;

namespace pgfleet::agent {

class ClientConn;

class ReadyQueue {
 public:
  explicit ReadyQueue(event_base* base);
  ~ReadyQueue();
  ReadyQueue(const ReadyQueue&) = delete;
  ReadyQueue& operator=(const ReadyQueue&) = delete;

  // Marks `client` to have its input handled (ClientConn::ProcessInput) soon; once, however
  // often it is marked before that.
  void Schedule(ClientConn* client);
  // Forgets `client` (it is closing; its memory goes at the next deferred delete).
  void Cancel(ClientConn* client);
  size_t pending() const { return ready_.size(); }

 private:
  static void OnReady(int fd, short what, void* arg);
  void Run();

  event* event_ = nullptr;
  std::vector<ClientConn*> ready_;
  // The batch being run: a client closed by another's handler is taken out of it too.
  std::vector<ClientConn*> running_;
};

}  // namespace pgfleet::agent
