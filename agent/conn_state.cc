#include "agent/conn_state.h"

#include "agent/agent.h"
#include "agent/pool.h"

namespace pgfleet::agent {

IntrusiveList<ClientConn>* ConnMover::ListFor(ClientConn* client, ClientConn::State state) {
  using State = ClientConn::State;
  Pool* pool = client->pool();
  switch (state) {
    case State::kStartup:
    case State::kAuth:
      return &client->agent_.login_clients();
    case State::kAdmin:
      return &client->agent_.admin_clients();
    case State::kLoginWaiting:
      return &pool->login_waiting_clients_;
    case State::kIdle:
    case State::kActive:
      return &pool->active_clients_;
    case State::kWaiting:
      return &pool->waiting_clients_;
    case State::kClosed:
      return nullptr;
  }
  return nullptr;
}

IntrusiveList<ServerConn>* ConnMover::ListFor(ServerConn* server, ServerConn::State state) {
  using State = ServerConn::State;
  Pool& pool = server->pool();
  switch (state) {
    case State::kLogin:
      return &pool.login_servers_;
    case State::kIdle:
      return &pool.idle_servers_;
    case State::kActive:
      return &pool.active_servers_;
    case State::kUsed:
      return &pool.used_servers_;
    case State::kClosed:
      return nullptr;
  }
  return nullptr;
}

template <typename Conn, typename State>
void ConnMover::MoveBetweenLists(Conn* conn, State to) {
  IntrusiveList<Conn>* from_list = ListFor(conn, conn->state_);
  IntrusiveList<Conn>* to_list = ListFor(conn, to);
  if (from_list != to_list) {
    if (from_list != nullptr) from_list->Remove(conn);
    if (to_list != nullptr) to_list->PushBack(conn);
  }
  conn->state_ = to;
}

void ConnMover::Move(ClientConn* client, ClientConn::State to) {
  // Closed is final: a connection that left every list never comes back onto one.
  PGF_CHECK(client->state_ != ClientConn::State::kClosed);
  MoveBetweenLists(client, to);
}

void ConnMover::Move(ServerConn* server, ServerConn::State to) {
  PGF_CHECK(server->state_ != ServerConn::State::kClosed);
  MoveBetweenLists(server, to);
}

}  // namespace pgfleet::agent
