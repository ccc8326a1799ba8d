// agent/net: the buffer pool and NetConn over real sockets (a socketpair), plain and TLS.
// What matters for memory: an idle connection holds no buffer and no write event; a buffer
// is taken while bytes are in flight and given back once they are gone. What matters for
// correctness: output the kernel refuses is queued and sent in order when the socket is
// writable, over TLS too (OpenSSL's want-read / want-write retried by the layer).

#include "agent/net/net_conn.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <functional>
#include <string>
#include <thread>

#include "agent/net/buffer_pool.h"
#include "agent/net/connect.h"
#include "gtest/gtest.h"

namespace pgfleet::agent::net {
namespace {

TEST(BufferPoolTest, BuffersAreReusedAndCounted) {
  BufferPool pool;
  evbuffer* first = pool.Take();
  ASSERT_NE(first, nullptr);
  EXPECT_EQ(pool.in_use(), 1u);
  pool.Give(first);
  EXPECT_EQ(pool.in_use(), 0u);
  EXPECT_EQ(pool.free_count(), 1u);
  evbuffer* second = pool.Take();
  EXPECT_EQ(second, first) << "a given-back buffer is reused";
  evbuffer_add(second, "left over", 9);
  pool.Give(second);
  evbuffer* third = pool.Take();
  EXPECT_EQ(evbuffer_get_length(third), 0u) << "a reused buffer never carries old bytes";
  pool.Give(third);
}

TEST(BufferPoolTest, FreeListIsBounded) {
  BufferPool pool;
  std::vector<evbuffer*> taken;
  for (size_t i = 0; i < BufferPool::kMaxFree + 10; ++i) taken.push_back(pool.Take());
  for (evbuffer* buffer : taken) pool.Give(buffer);
  EXPECT_EQ(pool.free_count(), BufferPool::kMaxFree);
  EXPECT_EQ(pool.in_use(), 0u);
}

// A handler whose reactions the test sets.
struct TestHandler final : NetConn::Handler {
  std::function<void()> on_read = [] {};
  std::function<void()> on_drained = [] {};
  std::function<void(bool, const std::string&)> on_closed = [](bool, const std::string&) {};
  std::function<void()> on_connected = [] {};
  void OnNetConnected() override { on_connected(); }
  void OnNetRead() override { on_read(); }
  void OnNetDrained() override { on_drained(); }
  void OnNetClosed(bool eof, const std::string& why) override { on_closed(eof, why); }
};

class NetConnTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // As in the agent (agent.cc): OpenSSL's socket BIO writes with write(), which raises
    // SIGPIPE on a socket the peer closed.
    signal(SIGPIPE, SIG_IGN);
    base_ = event_base_new();
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds_), 0);
    fcntl(fds_[0], F_SETFL, fcntl(fds_[0], F_GETFL) | O_NONBLOCK);
  }
  void TearDown() override {
    if (fds_[1] >= 0) close(fds_[1]);
    event_base_free(base_);
  }
  // Runs the loop until `done` or 20 s (a hung test fails instead of hanging).
  void RunUntil(const std::function<bool()>& done) {
    for (int i = 0; i < 20000 && !done(); ++i) {
      event_base_loop(base_, EVLOOP_ONCE | EVLOOP_NONBLOCK);
      if (i > 100) usleep(1000);
    }
  }
  event_base* base_ = nullptr;
  int fds_[2] = {-1, -1};
};

TEST_F(NetConnTest, IdleConnectionHoldsNoBufferAndNoWriteEvent) {
  TestHandler handler;
  std::string consumed;
  handler.on_read = [&] {};
  NetConn conn(base_, fds_[0], &handler);
  const size_t before = BufferPool::Local().in_use();
  EXPECT_FALSE(conn.holds_buffers());
  EXPECT_FALSE(conn.has_write_event());
  EXPECT_EQ(evbuffer_get_length(conn.input()), 0u);

  // Bytes the handler leaves in place keep the input buffer...
  ASSERT_EQ(write(fds_[1], "abcdef", 6), 6);
  RunUntil([&] { return conn.input_length() == 6; });
  EXPECT_EQ(conn.input_length(), 6u);
  EXPECT_TRUE(conn.holds_buffers());
  EXPECT_EQ(BufferPool::Local().in_use(), before + 1);

  // ...and consuming them gives it back after the read.
  handler.on_read = [&] {
    char bytes[64];
    const int n = evbuffer_remove(conn.input(), bytes, sizeof(bytes));
    consumed.append(bytes, static_cast<size_t>(n));
  };
  ASSERT_EQ(write(fds_[1], "gh", 2), 2);
  RunUntil([&] { return consumed.size() == 8; });
  EXPECT_EQ(consumed, "abcdefgh");
  EXPECT_FALSE(conn.holds_buffers());
  EXPECT_FALSE(conn.has_write_event());
  EXPECT_EQ(BufferPool::Local().in_use(), before);

  // A send the kernel takes whole queues nothing.
  conn.Send("reply", 5);
  EXPECT_FALSE(conn.holds_buffers());
  EXPECT_FALSE(conn.has_write_event());
  char reply[5];
  ASSERT_EQ(read(fds_[1], reply, sizeof(reply)), 5);
}

TEST_F(NetConnTest, RefusedOutputIsQueuedSentInOrderAndReleased) {
  TestHandler handler;
  int drained = 0;
  handler.on_drained = [&] { ++drained; };
  int small = 4096;
  setsockopt(fds_[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
  NetConn conn(base_, fds_[0], &handler);

  std::string sent;
  for (int i = 0; sent.size() < 2 * 1024 * 1024; ++i) sent += std::to_string(i) + ",";
  // Half as bytes, half moved from another buffer (the forwarder's path).
  const size_t half = sent.size() / 2;
  conn.Send(sent.data(), half);
  evbuffer* from = evbuffer_new();
  evbuffer_add(from, sent.data() + half, sent.size() - half);
  conn.Send(from, sent.size() - half);
  EXPECT_EQ(evbuffer_get_length(from), 0u);
  evbuffer_free(from);
  EXPECT_GT(conn.output_length(), 0u) << "the kernel should not take 2 MiB at once";
  EXPECT_TRUE(conn.has_write_event());

  std::string received;
  fcntl(fds_[1], F_SETFL, fcntl(fds_[1], F_GETFL) | O_NONBLOCK);
  RunUntil([&] {
    char chunk[65536];
    ssize_t n;
    while ((n = read(fds_[1], chunk, sizeof(chunk))) > 0) received.append(chunk, n);
    return received.size() == sent.size() && drained > 0;
  });
  EXPECT_EQ(received.size(), sent.size());
  EXPECT_TRUE(received == sent) << "bytes out of order or corrupted";
  EXPECT_EQ(drained, 1);
  EXPECT_FALSE(conn.holds_buffers()) << "the output buffer goes back once drained";
  EXPECT_FALSE(conn.has_write_event()) << "the write event goes once nothing waits";
}

TEST_F(NetConnTest, PeerCloseIsReportedAsEofAndCloseFreesEverything) {
  TestHandler handler;
  bool eof = false;
  bool closed = false;
  handler.on_closed = [&](bool was_eof, const std::string&) {
    closed = true;
    eof = was_eof;
  };
  NetConn conn(base_, fds_[0], &handler);
  close(fds_[1]);
  fds_[1] = -1;
  RunUntil([&] { return closed; });
  EXPECT_TRUE(closed);
  EXPECT_TRUE(eof);
  EXPECT_FALSE(conn.reading());
  conn.Close();
  EXPECT_FALSE(conn.open());
  conn.Close();  // Idempotent.
}

// A self-signed certificate made in memory, for a TLS server context.
SSL_CTX* MakeServerContext() {
  EVP_PKEY* key = EVP_EC_gen("P-256");
  X509* cert = X509_new();
  X509_set_version(cert, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
  X509_gmtime_adj(X509_getm_notBefore(cert), 0);
  X509_gmtime_adj(X509_getm_notAfter(cert), 3600);
  X509_set_pubkey(cert, key);
  X509_NAME* name = X509_get_subject_name(cert);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("net_conn_test"), -1, -1, 0);
  X509_set_issuer_name(cert, name);
  X509_sign(cert, key, EVP_sha256());
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  SSL_CTX_use_certificate(ctx, cert);
  SSL_CTX_use_PrivateKey(ctx, key);
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  X509_free(cert);
  EVP_PKEY_free(key);
  return ctx;
}

TEST_F(NetConnTest, TlsHandshakeEchoAndLargeReplyThroughRefusedWrites) {
  SSL_CTX* server_ctx = MakeServerContext();
  ASSERT_NE(server_ctx, nullptr);
  int small = 4096;
  setsockopt(fds_[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));

  // The peer: a blocking TLS client in a thread. It sends a request, reads the whole reply,
  // then closes without close_notify (as many clients do).
  std::string reply;
  std::string client_error;
  const size_t reply_size = 3 * 1024 * 1024 + 7;
  const int client_fd = fds_[1];
  fds_[1] = -1;
  std::thread client([&] {
    SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
    SSL* ssl = SSL_new(ctx);
    SSL_set_fd(ssl, client_fd);
    if (SSL_connect(ssl) != 1) {
      client_error = "handshake failed";
    } else {
      const std::string request = "request";
      SSL_write(ssl, request.data(), static_cast<int>(request.size()));
      char chunk[16384];
      while (reply.size() < reply_size) {
        const int n = SSL_read(ssl, chunk, sizeof(chunk));
        if (n <= 0) {
          client_error = "read failed";
          break;
        }
        reply.append(chunk, static_cast<size_t>(n));
      }
    }
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    close(client_fd);
  });

  TestHandler handler;
  std::string request;
  bool replied = false;
  int drained = 0;
  bool closed = false;
  bool eof = false;
  std::string expected;
  for (size_t i = 0; expected.size() < reply_size; ++i)
    expected.push_back(static_cast<char>('a' + i % 26));
  expected.resize(reply_size);
  NetConn conn(base_, fds_[0], &handler);
  handler.on_read = [&] {
    char bytes[64];
    const int n = evbuffer_remove(conn.input(), bytes, sizeof(bytes));
    request.append(bytes, static_cast<size_t>(n));
    if (request == "request" && !replied) {
      replied = true;
      conn.Send(expected.data(), expected.size());
      EXPECT_GT(conn.output_length(), 0u) << "the small send buffer should refuse most of it";
    }
  };
  handler.on_drained = [&] { ++drained; };
  std::string why;
  handler.on_closed = [&](bool was_eof, const std::string& text) {
    closed = true;
    eof = was_eof;
    why = text;
  };
  ASSERT_TRUE(conn.StartTls(SSL_new(server_ctx)));
  RunUntil([&] { return closed; });
  client.join();
  EXPECT_EQ(client_error, "");
  EXPECT_EQ(request, "request");
  EXPECT_TRUE(reply == expected) << "reply of " << reply.size() << " bytes differs";
  EXPECT_GE(drained, 1);
  EXPECT_TRUE(closed);
  EXPECT_TRUE(eof) << "a close without close_notify reads as EOF; got: " << why;
  EXPECT_FALSE(conn.holds_buffers());
  EXPECT_FALSE(conn.has_write_event());
  conn.Close();
  SSL_CTX_free(server_ctx);
}

TEST_F(NetConnTest, TlsHandshakeFailureIsAnErrorWithItsReason) {
  SSL_CTX* server_ctx = MakeServerContext();
  TestHandler handler;
  bool closed = false;
  bool eof = true;
  std::string why;
  handler.on_closed = [&](bool was_eof, const std::string& text) {
    closed = true;
    eof = was_eof;
    why = text;
  };
  NetConn conn(base_, fds_[0], &handler);
  ASSERT_TRUE(conn.StartTls(SSL_new(server_ctx)));
  // Not a ClientHello.
  const std::string garbage = "GET / HTTP/1.0\r\n\r\n";
  ASSERT_EQ(write(fds_[1], garbage.data(), garbage.size()), static_cast<ssize_t>(garbage.size()));
  RunUntil([&] { return closed; });
  EXPECT_TRUE(closed);
  EXPECT_FALSE(eof);
  EXPECT_FALSE(why.empty());
  EXPECT_NE(why, "TLS error") << "the reason should come from OpenSSL's error queue";
  conn.Close();
  SSL_CTX_free(server_ctx);
}

// ---- Connecting (server connections) ------------------------------------------------------

// A listening TCP socket on 127.0.0.1 and its address.
struct Listener {
  int fd = -1;
  sockaddr_in addr{};
  explicit Listener(bool listening = true) {
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(addr);
    bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &length);
    if (listening) listen(fd, 8);
  }
  ~Listener() {
    if (fd >= 0) close(fd);
  }
  const sockaddr* sockaddr_ptr() const { return reinterpret_cast<const sockaddr*>(&addr); }
};

TEST_F(NetConnTest, ConnectReportsConnectedAndSendsWhatWasQueuedMeanwhile) {
  Listener listener;
  absl::StatusOr<int> fd = StartConnect(listener.sockaddr_ptr(), sizeof(listener.addr));
  ASSERT_TRUE(fd.ok()) << fd.status();
  EXPECT_NE(fcntl(*fd, F_GETFD) & FD_CLOEXEC, 0) << "a hand-over must not inherit it";
  TestHandler handler;
  bool connected = false;
  std::string echoed;
  handler.on_connected = [&] { connected = true; };
  NetConn conn(base_, *fd, &handler, NetConn::Start::kConnecting);
  handler.on_read = [&] {
    char bytes[64];
    const int n = evbuffer_remove(conn.input(), bytes, sizeof(bytes));
    echoed.append(bytes, static_cast<size_t>(n));
  };
  EXPECT_TRUE(conn.connecting());
  conn.Send("queued", 6);  // Before the connect finished: kept until it has.
  RunUntil([&] { return connected; });
  ASSERT_TRUE(connected);
  EXPECT_FALSE(conn.connecting());
  const int peer = accept(listener.fd, nullptr, nullptr);
  ASSERT_GE(peer, 0);
  std::string got;
  char bytes[64];
  RunUntil([&] { return conn.output_length() == 0; });
  const ssize_t n = read(peer, bytes, sizeof(bytes));
  ASSERT_GT(n, 0);
  got.assign(bytes, static_cast<size_t>(n));
  EXPECT_EQ(got, "queued");
  ASSERT_EQ(write(peer, "back", 4), 4);
  RunUntil([&] { return echoed == "back"; });
  EXPECT_EQ(echoed, "back") << "reads start once connected";
  EXPECT_FALSE(conn.holds_buffers());
  EXPECT_FALSE(conn.has_write_event());
  close(peer);
}

TEST_F(NetConnTest, RefusedConnectIsAnErrorWithTheSocketsReason) {
  Listener not_listening(/*listening=*/false);
  absl::StatusOr<int> fd = StartConnect(not_listening.sockaddr_ptr(), sizeof(not_listening.addr));
  ASSERT_TRUE(fd.ok()) << fd.status();
  TestHandler handler;
  bool connected = false;
  bool closed = false;
  bool eof = true;
  std::string why;
  handler.on_connected = [&] { connected = true; };
  handler.on_closed = [&](bool was_eof, const std::string& text) {
    closed = true;
    eof = was_eof;
    why = text;
  };
  NetConn conn(base_, *fd, &handler, NetConn::Start::kConnecting);
  RunUntil([&] { return closed; });
  EXPECT_TRUE(closed);
  EXPECT_FALSE(connected);
  EXPECT_FALSE(eof);
  EXPECT_EQ(why, "Connection refused");
  conn.Close();
}

// TLS as the connecting side against a blocking TLS server in a thread; `client_ctx` decides
// whether the server's certificate is checked.
struct TlsServerThread {
  std::string received;
  std::string error;
  std::thread thread;
  TlsServerThread(int listen_fd, SSL_CTX* server_ctx) {
    thread = std::thread([this, listen_fd, server_ctx] {
      const int fd = accept(listen_fd, nullptr, nullptr);
      SSL* ssl = SSL_new(server_ctx);
      SSL_set_fd(ssl, fd);
      if (SSL_accept(ssl) != 1) {
        error = "handshake failed";
      } else {
        char bytes[64];
        const int n = SSL_read(ssl, bytes, sizeof(bytes));
        if (n > 0) received.assign(bytes, static_cast<size_t>(n));
        SSL_write(ssl, "world", 5);
        SSL_read(ssl, bytes, sizeof(bytes));  // Until the client closes.
      }
      SSL_free(ssl);
      close(fd);
    });
  }
};

TEST_F(NetConnTest, TlsAsTheConnectingSideSendsAndReads) {
  SSL_CTX* server_ctx = MakeServerContext();
  SSL_CTX* client_ctx = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_mode(client_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  Listener listener;
  TlsServerThread server(listener.fd, server_ctx);
  absl::StatusOr<int> fd = StartConnect(listener.sockaddr_ptr(), sizeof(listener.addr));
  ASSERT_TRUE(fd.ok()) << fd.status();
  TestHandler handler;
  std::string reply;
  bool closed = false;
  NetConn conn(base_, *fd, &handler, NetConn::Start::kConnecting);
  handler.on_connected = [&] {
    ASSERT_TRUE(conn.StartTls(SSL_new(client_ctx), NetConn::TlsRole::kConnect));
    conn.Send("hello", 5);  // Waits for the handshake.
  };
  handler.on_read = [&] {
    char bytes[64];
    const int n = evbuffer_remove(conn.input(), bytes, sizeof(bytes));
    reply.append(bytes, static_cast<size_t>(n));
  };
  handler.on_closed = [&](bool, const std::string&) { closed = true; };
  RunUntil([&] { return reply == "world" || closed; });
  EXPECT_EQ(reply, "world");
  EXPECT_FALSE(closed);
  EXPECT_NE(conn.ssl(), nullptr);
  conn.Close();
  server.thread.join();
  EXPECT_EQ(server.error, "");
  EXPECT_EQ(server.received, "hello");
  SSL_CTX_free(client_ctx);
  SSL_CTX_free(server_ctx);
}

TEST_F(NetConnTest, TlsAsTheConnectingSideRefusesAnUntrustedCertificate) {
  SSL_CTX* server_ctx = MakeServerContext();
  SSL_CTX* client_ctx = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_verify(client_ctx, SSL_VERIFY_PEER, nullptr);  // No CA: nothing is trusted.
  Listener listener;
  TlsServerThread server(listener.fd, server_ctx);
  absl::StatusOr<int> fd = StartConnect(listener.sockaddr_ptr(), sizeof(listener.addr));
  ASSERT_TRUE(fd.ok()) << fd.status();
  TestHandler handler;
  bool closed = false;
  bool eof = true;
  std::string why;
  NetConn conn(base_, *fd, &handler, NetConn::Start::kConnecting);
  handler.on_connected = [&] {
    ASSERT_TRUE(conn.StartTls(SSL_new(client_ctx), NetConn::TlsRole::kConnect));
    conn.Send("hello", 5);
  };
  handler.on_closed = [&](bool was_eof, const std::string& text) {
    closed = true;
    eof = was_eof;
    why = text;
  };
  RunUntil([&] { return closed; });
  EXPECT_TRUE(closed);
  EXPECT_FALSE(eof);
  EXPECT_NE(why.find("certificate verify failed"), std::string::npos) << why;
  conn.Close();
  server.thread.join();
  EXPECT_NE(server.error, "") << "the server saw the handshake refused";
  SSL_CTX_free(client_ctx);
  SSL_CTX_free(server_ctx);
}

}  // namespace
}  // namespace pgfleet::agent::net
