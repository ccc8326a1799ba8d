// Socket I/O for a connection's bufferevent, with fewer syscalls than libevent's own.
//
// Writes.
// A socket bufferevent writes only from its EV_WRITE callback: every message queued on it
// costs an epoll_ctl to arm the write event, a loop iteration for the event to fire, and a
// second epoll_ctl to disarm it once the buffer is empty. A pooler forwards one or two
// messages per read, so that was most of its syscalls (strace: about three epoll_ctl per
// message). PgBouncer sends straight from its read handler and only waits for EV_WRITE when
// the kernel would block; these helpers do the same: when nothing is queued on a plain
// socket, the bytes go to the kernel at once, and only what it does not take is queued on
// the bufferevent (whose write event then sends it in order, and whose write callback still
// reports the drain that backpressure waits for).
//
// Over TLS the bytes must go through the TLS filter, so they are always queued. Direct
// sends use sendmsg(), lighter in the kernel than the writev() libevent uses (no file
// position lock, no generic VFS path).
//
// Reads. libevent's socket bufferevent asks the kernel how much is readable (ioctl FIONREAD)
// before every readv(); UseDirectReads() points the bufferevent's read event at a handler
// that makes one recv() per wakeup instead, into the same input buffer, then calls the same
// read callback, or the event callback with BEV_EVENT_EOF / BEV_EVENT_ERROR, as libevent
// would. bufferevent_enable/disable(EV_READ) keep working (they add and remove that event),
// so backpressure, PAUSE and SUSPEND are unchanged. A connection that goes TLS hands
// reading back to libevent first (UseLibeventReads), since the TLS filter relies on it.
#pragma once

#include <cstddef>

struct bufferevent;
struct evbuffer;

namespace pgfleet::agent {

// Moves the first `bytes` of `from` to the connection: sent now when possible, the rest
// queued. `from` loses those bytes either way.
void SendOrQueue(bufferevent* bev, evbuffer* from, size_t bytes);
void SendOrQueue(bufferevent* bev, const void* data, size_t size);

// `bev` must be a plain socket bufferevent with its socket set (connected or accepted).
void UseDirectReads(bufferevent* bev);
void UseLibeventReads(bufferevent* bev);

// Sends what is queued on `bev` without blocking, before the socket is closed. Whatever the
// kernel does not take is dropped with the connection.
void FlushBestEffort(bufferevent* bev);

// Sets FD_CLOEXEC on `bev`'s socket, if it has one yet. libevent creates the socket of a
// bufferevent_socket_connect[_hostname] without it, and a process started by a hand-over
// (agent/handover.h) must not inherit a server or cancel connection: its copy would keep the
// PostgreSQL connection open after this process closed it. Called right after the connect
// call (an address, and a numeric host, get their socket there) and on the first event (a
// host name gets its socket once resolved).
void MarkCloseOnExec(bufferevent* bev);

}  // namespace pgfleet::agent
