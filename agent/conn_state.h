// The one place a connection changes state (PgBouncer's change_client_state and
// change_server_state). A connection's state is the list it sits on (intrusive_list.h), so a
// state change is a move between lists: done here and nowhere else, the lists cannot drift
// from the states. Nobody else writes a connection's state.
#pragma once

#include "agent/client_conn.h"
#include "agent/server_conn.h"

namespace pgfleet::agent {

struct ConnMover {
  // Takes `client` off the list of its current state (the agent's login or admin list, or one
  // of its pool's) and puts it on the list of `to`; kClosed is on no list. A move between two
  // states that share a list (kIdle and kActive) keeps its place.
  static void Move(ClientConn* client, ClientConn::State to);
  static void Move(ServerConn* server, ServerConn::State to);

 private:
  static IntrusiveList<ClientConn>* ListFor(ClientConn* client, ClientConn::State state);
  static IntrusiveList<ServerConn>* ListFor(ServerConn* server, ServerConn::State state);
  template <typename Conn, typename State>
  static void MoveBetweenLists(Conn* conn, State to);
};

}  // namespace pgfleet::agent
