// What an idle client costs the agent (issue 20: at most half of PgBouncer's RSS per idle
// client). Every byte of ClientConn and NetConn is paid per idle client, so their sizes are
// pinned here: growing them is a decision (bench/results/idle-memory.txt), never an accident.
// And a connection must not cost a libevent event (128 bytes each, plus libevent's per-fd
// bookkeeping): sockets are watched through the loop's one Poller.

#include <event2/event.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "agent/client_conn.h"
#include "agent/net/net_conn.h"
#include "agent/net/peer_address.h"
#include "agent/net/poller.h"
#include "gtest/gtest.h"

namespace pgfleet::agent {
namespace {

// The bounds measured when they were set (x86-64, libstdc++). Raise them only together with a
// new idle-memory measurement.
constexpr size_t kClientConnMaxBytes = 240;
constexpr size_t kNetConnMaxBytes = 48;

TEST(ConnMemoryTest, ClientConnStaysWithinItsBound) {
  EXPECT_LE(sizeof(ClientConn), kClientConnMaxBytes);
  EXPECT_LE(sizeof(net::NetConn), kNetConnMaxBytes);
  EXPECT_LE(sizeof(net::PeerAddress), 20u);
}

struct NullHandler final : net::NetConn::Handler {
  void OnNetRead() override {}
  void OnNetDrained() override {}
  void OnNetClosed(bool, const std::string&) override {}
};

TEST(ConnMemoryTest, IdleConnectionsAddNoLibeventEvents) {
  event_base* base = event_base_new();
  ASSERT_NE(base, nullptr);
  NullHandler handler;
  std::vector<int> peers;
  std::vector<std::unique_ptr<net::NetConn>> conns;
  for (int i = 0; i < 3; ++i) {
    int fds[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) | O_NONBLOCK);
    conns.push_back(std::make_unique<net::NetConn>(base, fds[0], &handler));
    peers.push_back(fds[1]);
  }
  const int with_three = event_base_get_num_events(base, EVENT_BASE_COUNT_ADDED);
  for (int i = 0; i < 50; ++i) {
    int fds[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) | O_NONBLOCK);
    conns.push_back(std::make_unique<net::NetConn>(base, fds[0], &handler));
    peers.push_back(fds[1]);
  }
  EXPECT_EQ(event_base_get_num_events(base, EVENT_BASE_COUNT_ADDED), with_three)
      << "50 more reading connections added libevent events";
  conns.clear();  // Closes them; the last one frees the poller and its event.
  EXPECT_EQ(event_base_get_num_events(base, EVENT_BASE_COUNT_ADDED), 0);
  for (int fd : peers) close(fd);
  event_base_free(base);
}

}  // namespace
}  // namespace pgfleet::agent
