// What an idle client costs the agent (issue 20: at most half of PgBouncer's RSS per idle
// client). Every byte of ClientConn and NetConn is paid per idle client, so their sizes are
// pinned here: growing them is a decision (bench/results/idle-memory.txt), never an accident.
// And a connection must not cost a libevent event (128 bytes each, plus libevent's per-fd
// bookkeeping): sockets are watched through the loop's one Poller.

#include <event2/event.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <functional>
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
  auto open_connections = [&](int count) {
    for (int i = 0; i < count; ++i) {
      int fds[2];
      ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
      fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) | O_NONBLOCK);
      conns.push_back(std::make_unique<net::NetConn>(base, fds[0], &handler));
      peers.push_back(fds[1]);
    }
  };
  ASSERT_NO_FATAL_FAILURE(open_connections(3));
  const int with_three = event_base_get_num_events(base, EVENT_BASE_COUNT_ADDED);
  ASSERT_NO_FATAL_FAILURE(open_connections(50));
  EXPECT_EQ(event_base_get_num_events(base, EVENT_BASE_COUNT_ADDED), with_three)
      << "50 more reading connections added libevent events";
  conns.clear();  // Closes them; the last one frees the poller and its event.
  EXPECT_EQ(event_base_get_num_events(base, EVENT_BASE_COUNT_ADDED), 0);
  for (int fd : peers) close(fd);
  event_base_free(base);
}

struct CallbackHandler final : net::NetConn::Handler {
  std::function<void()> on_read;
  void OnNetRead() override { on_read(); }
  void OnNetDrained() override {}
  void OnNetClosed(bool, const std::string&) override {}
};

// Two sockets readable in the same wakeup, and whichever is handled first frees the other (as
// a client closing frees its server): the event fetched for the freed one is not delivered.
TEST(ConnMemoryTest, ConnectionFreedDuringABatchGetsNoEvent) {
  event_base* base = event_base_new();
  ASSERT_NE(base, nullptr);
  int a[2];
  int b[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, a), 0);
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, b), 0);
  CallbackHandler handler_a;
  CallbackHandler handler_b;
  auto conn_a = std::make_unique<net::NetConn>(base, a[0], &handler_a);
  auto conn_b = std::make_unique<net::NetConn>(base, b[0], &handler_b);
  int reads = 0;
  handler_a.on_read = [&] {
    ++reads;
    conn_b.reset();
  };
  handler_b.on_read = [&] {
    ++reads;
    conn_a.reset();
  };
  ASSERT_EQ(write(a[1], "x", 1), 1);
  ASSERT_EQ(write(b[1], "y", 1), 1);
  for (int i = 0; i < 100 && reads == 0; ++i) event_base_loop(base, EVLOOP_ONCE);
  event_base_loop(base, EVLOOP_NONBLOCK);
  EXPECT_EQ(reads, 1);
  conn_a.reset();
  conn_b.reset();
  close(a[1]);
  close(b[1]);
  event_base_free(base);
}

}  // namespace
}  // namespace pgfleet::agent
