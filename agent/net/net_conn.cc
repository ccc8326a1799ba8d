#include "agent/net/net_conn.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <array>

#include "agent/net/buffer_pool.h"
#include "agent/net/poller.h"
#include "agent/net/send_chains.h"
#include "agent/tls/tls_context.h"

namespace pgfleet::agent::net {
namespace {

// Single-threaded loop: one scratch buffer for every connection's reads. The bytes are
// copied into the input buffer's chains, sized to what arrived, so a connection that read
// 100 bytes does not hold a 64 KiB chain until they are forwarded.
std::array<char, 64 * 1024>& Scratch() {
  static thread_local std::array<char, 64 * 1024> scratch;
  return scratch;
}

// The largest plaintext one SSL_write is given: one TLS record. A write the socket did not
// take must be retried with at least as many bytes; capping every write at one record keeps
// that true of a retry from the queue (which holds at least those bytes).
constexpr size_t kTlsWriteChunk = 16 * 1024;

bool WouldBlock(int error) { return error == EAGAIN || error == EWOULDBLOCK || error == EINTR; }

}  // namespace

NetConn::NetConn(event_base* base, int fd, Handler* handler, Start start)
    : handler_(handler), poller_(Poller::Acquire(base)), fd_(fd) {
  if (start == Start::kConnecting) {
    connecting_ = true;
    ArmWrite();
  }
  EnableRead();
}

void NetConn::UpdateWatch() {
  if (!open_) return;
  const uint8_t wanted = static_cast<uint8_t>((reading_ && !connecting_ ? Poller::kRead : 0) |
                                              (write_armed_ ? Poller::kWrite : 0));
  if (wanted == watched_) return;
  poller_->Watch(this, fd_, watched_, wanted);
  watched_ = wanted;
}

void NetConn::OnPollEvents(uint32_t events) {
  // As libevent reports them: an error or hang-up wakes whichever side is watched, whose
  // read or write then meets it.
  if ((events & (EPOLLERR | EPOLLHUP)) != 0) events |= EPOLLIN | EPOLLOUT;
  // Writability first, as libevent ran a socket's write event (added last) before its read.
  if ((events & EPOLLOUT) != 0 && (watched_ & Poller::kWrite) != 0) {
    OnWritable();
    if (!open_) return;
  }
  if ((events & EPOLLIN) != 0 && (watched_ & Poller::kRead) != 0) OnReadable();
}

void NetConn::OnActivated() {
  if (open_) OnReadable();
}

NetConn::~NetConn() { Close(); }

evbuffer* NetConn::input() const { return in_ != nullptr ? in_ : BufferPool::Empty(); }

size_t NetConn::input_length() const { return in_ != nullptr ? evbuffer_get_length(in_) : 0; }

size_t NetConn::output_length() const { return out_ != nullptr ? evbuffer_get_length(out_) : 0; }

void NetConn::EnableRead() {
  if (reading_ || !open_) return;
  reading_ = true;
  if (connecting_) return;  // FinishConnect starts watching for input.
  UpdateWatch();
  // OpenSSL may hold bytes it read from the socket and not yet decrypted for us: the socket
  // will not say readable for them, so the loop comes back here instead.
  if (ssl_ != nullptr && SSL_has_pending(ssl_)) poller_->Activate(this);
}

void NetConn::DisableRead() {
  if (!reading_) return;
  reading_ = false;
  UpdateWatch();
  poller_->Deactivate(this);
}

void NetConn::ReleaseDrainedInput() {
  if (in_ != nullptr && evbuffer_get_length(in_) == 0) {
    BufferPool::Local().Give(in_);
    in_ = nullptr;
  }
}

void NetConn::Close() {
  if (!open_) return;
  reading_ = write_armed_ = false;
  UpdateWatch();
  poller_->Forget(this);
  poller_->Release();
  poller_ = nullptr;
  if (in_ != nullptr) BufferPool::Local().Give(in_);
  if (out_ != nullptr) BufferPool::Local().Give(out_);
  in_ = out_ = nullptr;
  // No close_notify, as libevent's TLS bufferevent did not send one either: the peer reads an
  // EOF, which both sides accept as the end (dirty shutdown allowed).
  if (ssl_ != nullptr) SSL_free(ssl_);
  ssl_ = nullptr;
  close(fd_);
  open_ = false;
}

bool NetConn::StartTls(ssl_st* ssl, TlsRole role) {
  if (ssl == nullptr) return false;
  FlushBestEffort();
  if (output_length() != 0 || !open_ || connecting_ || SSL_set_fd(ssl, fd()) != 1) {
    SSL_free(ssl);
    return false;
  }
  ssl_ = ssl;
  // A peer that closes without close_notify ends the stream as a plain socket's EOF does
  // (libpq and PostgreSQL close that way); the protocol's own framing tells a cut message.
  SSL_set_options(ssl_, SSL_OP_IGNORE_UNEXPECTED_EOF);
  read_wants_write_ = write_wants_read_ = false;
  if (role == TlsRole::kAccept) {
    SSL_set_accept_state(ssl_);
    return true;
  }
  SSL_set_connect_state(ssl_);
  // The ClientHello goes out now; the rest of the handshake runs in the read handler (SSL_read
  // drives it) and in the first send (SSL_write waits for it, queued, as write_wants_read_).
  ERR_clear_error();
  const int result = SSL_do_handshake(ssl_);
  if (result != 1) {
    const int error = SSL_get_error(ssl_, result);
    if (error == SSL_ERROR_WANT_WRITE) {
      read_wants_write_ = true;
      ArmWrite();
    } else if (error != SSL_ERROR_WANT_READ) {
      // Reported by the next read, as any TLS failure (the handler is not called from here).
      poller_->Activate(this);
    }
  }
  return true;
}

// ---- Reading ----------------------------------------------------------------------------

void NetConn::OnReadable() {
  if (ssl_ != nullptr ? ReadTls() : ReadPlain()) {
    // The handler may have closed the connection (its object lives on until the loop's
    // deferred delete), so nothing below touches more than the buffer pointer.
    ReleaseDrainedInput();
  }
}

bool NetConn::ReadPlain() {
  // One recv() per wakeup: the event is level-triggered, so what is left comes next turn.
  auto& scratch = Scratch();
  const ssize_t n = recv(fd(), scratch.data(), scratch.size(), 0);
  if (n > 0) {
    if (in_ == nullptr) in_ = BufferPool::Local().Take();
    evbuffer_add(in_, scratch.data(), static_cast<size_t>(n));
    handler_->OnNetRead();
    return true;
  }
  if (n < 0 && WouldBlock(errno)) return true;
  Fail(n == 0, n == 0 ? "" : strerror(errno));
  return false;
}

bool NetConn::ReadTls() {
  auto& scratch = Scratch();
  read_wants_write_ = false;
  bool got = false;
  int failure = SSL_ERROR_NONE;
  int result = 0;
  // Everything OpenSSL can give now: a record it already read from the socket would get no
  // readable event of its own.
  while (true) {
    ERR_clear_error();
    result = SSL_read(ssl_, scratch.data(), static_cast<int>(scratch.size()));
    if (result > 0) {
      if (in_ == nullptr) in_ = BufferPool::Local().Take();
      evbuffer_add(in_, scratch.data(), static_cast<size_t>(result));
      got = true;
      continue;
    }
    const int error = SSL_get_error(ssl_, result);
    if (error == SSL_ERROR_WANT_READ) break;
    if (error == SSL_ERROR_WANT_WRITE) {
      read_wants_write_ = true;
      ArmWrite();
      break;
    }
    failure = error;
    break;
  }
  if (failure != SSL_ERROR_NONE) {
    const bool eof = failure == SSL_ERROR_ZERO_RETURN ||
                     (failure == SSL_ERROR_SYSCALL && result == 0 && ERR_peek_error() == 0);
    const std::string why = eof ? "" : TlsFailure(failure);
    if (got) {
      handler_->OnNetRead();
      if (!open_) return false;
    }
    Fail(eof, why);
    return false;
  }
  // Output that waited for the handshake may go now.
  if (write_wants_read_ && out_ != nullptr) {
    write_wants_read_ = false;
    if (!WriteTls()) return false;
  }
  if (got) handler_->OnNetRead();
  return true;
}

// ---- Writing ----------------------------------------------------------------------------

long NetConn::SendNow(const void* data, size_t size) {
  if (ssl_ != nullptr) {
    ERR_clear_error();
    const int n = SSL_write(ssl_, data, static_cast<int>(std::min(size, kTlsWriteChunk)));
    if (n > 0) return n;
    const int error = SSL_get_error(ssl_, n);
    // The bytes are queued and retried from the queue (same bytes, at least as many).
    if (error == SSL_ERROR_WANT_READ) write_wants_read_ = true;
    return error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE ? 0 : -1;
  }
  const ssize_t n = send(fd(), data, size, MSG_NOSIGNAL | MSG_DONTWAIT);
  if (n >= 0) return n;
  return WouldBlock(errno) ? 0 : -1;
}

void NetConn::Queue(const void* data, size_t size) {
  if (out_ == nullptr) out_ = BufferPool::Local().Take();
  evbuffer_add(out_, data, size);
}

void NetConn::Send(const void* data, size_t size) {
  if (size == 0 || !open_) return;
  const char* bytes = static_cast<const char*>(data);
  if (output_length() == 0 && !connecting_) {
    // A TLS write takes one record at a time: keep going while the socket takes them.
    while (size > 0) {
      const long sent = SendNow(bytes, size);
      if (sent <= 0) break;  // Would block, or failed: the write event meets the failure.
      bytes += sent;
      size -= static_cast<size_t>(sent);
    }
    if (size == 0) return;
  }
  Queue(bytes, size);
  if (!write_wants_read_) ArmWrite();
}

void NetConn::Send(evbuffer* from, size_t bytes) {
  bytes = std::min(bytes, evbuffer_get_length(from));
  if (bytes == 0) return;
  if (!open_) {
    evbuffer_drain(from, bytes);
    return;
  }
  if (connecting_) {
    // Queued until the connect finishes (the write event is armed for it).
  } else if (output_length() == 0 && ssl_ == nullptr) {
    // Straight from the reader's chains to the kernel.
    bytes -= SendChainsNow(fd(), from, bytes);
    if (bytes == 0) return;
  } else if (output_length() == 0) {
    while (bytes > 0) {
      const size_t chunk = std::min(bytes, kTlsWriteChunk);
      const unsigned char* data = evbuffer_pullup(from, static_cast<ssize_t>(chunk));
      const long sent = data != nullptr ? SendNow(data, chunk) : -1;
      if (sent <= 0) break;
      evbuffer_drain(from, static_cast<size_t>(sent));
      bytes -= static_cast<size_t>(sent);
    }
    if (bytes == 0) return;
  }
  if (out_ == nullptr) out_ = BufferPool::Local().Take();
  evbuffer_remove_buffer(from, out_, bytes);
  if (!write_wants_read_) ArmWrite();
}

void NetConn::ArmWrite() {
  if (!open_) return;
  write_armed_ = true;
  UpdateWatch();
}

void NetConn::DisarmWrite() {
  write_armed_ = false;
  UpdateWatch();
}

void NetConn::FinishConnect() {
  connecting_ = false;
  int error = 0;
  socklen_t length = sizeof(error);
  if (getsockopt(fd(), SOL_SOCKET, SO_ERROR, &error, &length) != 0) error = errno;
  if (error != 0) {
    Fail(false, strerror(error));
    return;
  }
  if (out_ == nullptr) write_armed_ = false;
  UpdateWatch();  // Reads now, if wanted.
  handler_->OnNetConnected();
}

void NetConn::OnWritable() {
  NetConn* conn = this;
  if (conn->connecting_) {
    conn->FinishConnect();
    return;
  }
  if (conn->read_wants_write_) {
    // A TLS read stopped for the socket to take a handshake message: it goes on now (and
    // retries queued output itself).
    if (!conn->reading_) {
      conn->read_wants_write_ = false;
    } else if (!conn->ReadTls()) {
      return;
    } else {
      conn->ReleaseDrainedInput();
      if (!conn->open_) return;
    }
  }
  const bool had_output = conn->out_ != nullptr;
  if (had_output && !(conn->ssl_ != nullptr ? conn->WriteTls() : conn->WritePlain())) return;
  if (conn->out_ == nullptr && !conn->read_wants_write_) conn->DisarmWrite();
  if (had_output && conn->out_ == nullptr) conn->handler_->OnNetDrained();
}

bool NetConn::WritePlain() {
  while (out_ != nullptr && evbuffer_get_length(out_) > 0) {
    const int n = evbuffer_write(out_, fd());
    if (n < 0 && WouldBlock(errno)) return true;
    if (n <= 0) {
      Fail(false, n == 0 ? "connection closed while writing" : strerror(errno));
      return false;
    }
  }
  if (out_ != nullptr) {
    BufferPool::Local().Give(out_);
    out_ = nullptr;
  }
  return true;
}

bool NetConn::WriteTls() {
  while (out_ != nullptr && evbuffer_get_length(out_) > 0) {
    const size_t chunk = std::min(evbuffer_get_length(out_), kTlsWriteChunk);
    const unsigned char* data = evbuffer_pullup(out_, static_cast<ssize_t>(chunk));
    ERR_clear_error();
    const int n = SSL_write(ssl_, data, static_cast<int>(chunk));
    if (n > 0) {
      evbuffer_drain(out_, static_cast<size_t>(n));
      continue;
    }
    const int error = SSL_get_error(ssl_, n);
    if (error == SSL_ERROR_WANT_WRITE) {
      ArmWrite();
      return true;
    }
    if (error == SSL_ERROR_WANT_READ) {
      // The handshake needs the peer's next message; the read handler retries.
      write_wants_read_ = true;
      return true;
    }
    Fail(false, TlsFailure(error));
    return false;
  }
  if (out_ != nullptr) {
    BufferPool::Local().Give(out_);
    out_ = nullptr;
  }
  return true;
}

void NetConn::FlushBestEffort() {
  if (!open_ || out_ == nullptr || connecting_) return;
  while (evbuffer_get_length(out_) > 0) {
    long sent;
    if (ssl_ != nullptr) {
      const size_t chunk = std::min(evbuffer_get_length(out_), kTlsWriteChunk);
      const unsigned char* data = evbuffer_pullup(out_, static_cast<ssize_t>(chunk));
      sent = SendNow(data, chunk);
    } else {
      sent = evbuffer_write(out_, fd());
      if (sent > 0) continue;  // evbuffer_write drained what it sent.
    }
    if (sent <= 0) return;
    evbuffer_drain(out_, static_cast<size_t>(sent));
  }
  BufferPool::Local().Give(out_);
  out_ = nullptr;
  if (!read_wants_write_) DisarmWrite();
}

void NetConn::Fail(bool eof, const std::string& why) {
  connecting_ = false;
  reading_ = write_armed_ = false;
  UpdateWatch();
  read_wants_write_ = write_wants_read_ = false;
  handler_->OnNetClosed(eof, why);
}

std::string NetConn::TlsFailure(int ssl_error) {
  if (ssl_error == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
    // A handshake that failed inside a send (SendNow leaves the failure for the next read or
    // write to report, by when OpenSSL's error queue is gone) still says why it failed.
    if (const long verify = SSL_get_verify_result(ssl_); verify != X509_V_OK) {
      return std::string("certificate verify failed (") + X509_verify_cert_error_string(verify) +
             ")";
    }
    return errno != 0 ? strerror(errno) : "connection closed during TLS";
  }
  return TlsErrorText(ssl_);
}

}  // namespace pgfleet::agent::net
