#include "agent/io/socket_io.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_struct.h>
#include <event2/event.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <array>

#include "agent/net/send_chains.h"

namespace pgfleet::agent {
namespace {

// The socket to send on directly, or -1 when the bytes must be queued: a TLS filter (it has
// an underlying bufferevent), a socket not connected yet, or output already waiting (sending
// now would overtake it).
int DirectSendFd(bufferevent* bev) {
  if (bufferevent_get_underlying(bev) != nullptr) return -1;
  if (evbuffer_get_length(bufferevent_get_output(bev)) != 0) return -1;
  return bufferevent_getfd(bev);
}

}  // namespace

void SendOrQueue(bufferevent* bev, evbuffer* from, size_t bytes) {
  if (bytes == 0) return;
  if (const int fd = DirectSendFd(bev); fd >= 0) {
    // An error other than EAGAIN is left for the bufferevent to meet when it writes the
    // rest (it reports it through the event callback, which closes the connection).
    bytes -= SendChainsNow(fd, from, bytes);
    if (bytes == 0) return;
  }
  evbuffer_remove_buffer(from, bufferevent_get_output(bev), bytes);
}

void SendOrQueue(bufferevent* bev, const void* data, size_t size) {
  if (size == 0) return;
  const char* bytes = static_cast<const char*>(data);
  if (const int fd = DirectSendFd(bev); fd >= 0) {
    const ssize_t sent = send(fd, bytes, size, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (sent > 0) {
      bytes += sent;
      size -= static_cast<size_t>(sent);
    }
    if (size == 0) return;
  }
  bufferevent_write(bev, bytes, size);
}

namespace {

// The read event's handler under UseDirectReads: one recv() per wakeup.
void OnReadable(evutil_socket_t fd, short, void* arg) {
  auto* bev = static_cast<bufferevent*>(arg);
  // Single-threaded loop: one scratch buffer for every connection. The bytes are copied
  // into the input buffer's chains, sized to what arrived.
  static thread_local std::array<char, 64 * 1024> scratch;
  const ssize_t n = recv(fd, scratch.data(), scratch.size(), 0);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
  if (n > 0) {
    // The bufferevent freezes its input's end against its users; libevent's own read
    // handler thaws it around the read the same way.
    evbuffer* in = bufferevent_get_input(bev);
    evbuffer_unfreeze(in, 0);
    evbuffer_add(in, scratch.data(), static_cast<size_t>(n));
    evbuffer_freeze(in, 0);
    if (bev->readcb != nullptr) bev->readcb(bev, bev->cbarg);  // May free bev.
    return;
  }
  // End of stream or a socket error: stop reading, as libevent does, and say which.
  const int saved_errno = errno;
  bufferevent_disable(bev, EV_READ);
  errno = saved_errno;
  const short what = BEV_EVENT_READING | (n == 0 ? BEV_EVENT_EOF : BEV_EVENT_ERROR);
  if (bev->errorcb != nullptr) bev->errorcb(bev, what, bev->cbarg);
}

}  // namespace

void UseDirectReads(bufferevent* bev) {
  const evutil_socket_t fd = bufferevent_getfd(bev);
  if (fd < 0 || bufferevent_get_underlying(bev) != nullptr) return;
  // The event must not be pending while it is reassigned.
  const bool reading = (bufferevent_get_enabled(bev) & EV_READ) != 0;
  bufferevent_disable(bev, EV_READ);
  event_assign(&bev->ev_read, bufferevent_get_base(bev), fd, EV_READ | EV_PERSIST | EV_FINALIZE,
               &OnReadable, bev);
  if (reading) bufferevent_enable(bev, EV_READ);
}

void UseLibeventReads(bufferevent* bev) {
  // Setting the same socket again reassigns both events to libevent's own handlers (and
  // re-enables what was enabled).
  bufferevent_setfd(bev, bufferevent_getfd(bev));
}

void FlushBestEffort(bufferevent* bev) {
  // Over TLS, encrypt what is queued into the socket's buffer first, then send that.
  if (bufferevent* socket_side = bufferevent_get_underlying(bev)) {
    bufferevent_flush(bev, EV_WRITE, BEV_FLUSH);
    bev = socket_side;
  }
  // A bufferevent keeps its output buffer's front frozen, so evbuffer_write() cannot drain
  // it; copy the bytes out and send them without blocking.
  evbuffer* out = bufferevent_get_output(bev);
  const size_t length = evbuffer_get_length(out);
  if (length == 0) return;
  const unsigned char* data = evbuffer_pullup(out, static_cast<ssize_t>(length));
  if (data == nullptr) return;
  size_t sent = 0;
  while (sent < length) {
    ssize_t n =
        send(bufferevent_getfd(bev), data + sent, length - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n <= 0) break;
    sent += static_cast<size_t>(n);
  }
}

void MarkCloseOnExec(bufferevent* bev) {
  const evutil_socket_t fd = bufferevent_getfd(bev);
  if (fd < 0) return;
  const int flags = fcntl(fd, F_GETFD);
  if (flags >= 0 && (flags & FD_CLOEXEC) == 0) fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
}

}  // namespace pgfleet::agent
