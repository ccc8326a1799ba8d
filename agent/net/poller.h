// The sockets of NetConn, watched through one epoll set of our own that the libevent loop sees
// as a single readable fd. A libevent event costs 128 bytes in every connection plus libevent's
// per-fd bookkeeping (about 40 bytes more): at 10,000 idle clients those were a third of the
// agent's memory per client. Here a connection costs the kernel's entry and a few bits of its
// own (what the kernel watches for it), nothing in user space.
//
// One Poller per event_base, shared by the connections of that loop and made by the first
// (Acquire); the last one to close frees it (Release). A connection closing takes itself out of
// the events fetched but not yet delivered (Forget), so a batch never reaches a closed one.
#pragma once

#include <sys/epoll.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <vector>

struct event;
struct event_base;

namespace pgfleet::agent::net {

class NetConn;

class Poller {
 public:
  // What a connection waits for (bits).
  static constexpr uint8_t kRead = 1;
  static constexpr uint8_t kWrite = 2;

  // The loop's poller, made on first use; each Acquire is paired with one Release.
  static Poller* Acquire(event_base* base);
  void Release();

  // Tells the kernel that `conn`'s socket `fd` now waits for `wanted` (it waited for
  // `watched`): adds, changes or removes its entry.
  void Watch(NetConn* conn, int fd, uint8_t watched, uint8_t wanted);
  // Runs `conn`'s read handler soon although the socket may not say readable (OpenSSL holds
  // bytes it already read; a failure to report from the read path).
  void Activate(NetConn* conn);
  // Withdraws an Activate not yet run (reading was disabled since, as libevent's event_del
  // withdrew an activated event).
  void Deactivate(NetConn* conn);
  // `conn` is closing: no event fetched for it is delivered any more.
  void Forget(NetConn* conn);

  int epoll_fd() const { return epoll_fd_; }

 private:
  explicit Poller(event_base* base);
  ~Poller();
  Poller(const Poller&) = delete;
  Poller& operator=(const Poller&) = delete;

  static void OnReady(int fd, short what, void* arg);
  static void OnActivated(int fd, short what, void* arg);
  void DeleteIfUnused();

  // Events handed out per wakeup; more wait for the next turn (the epoll fd stays readable).
  static constexpr size_t kBatch = 256;

  event_base* base_;
  int epoll_fd_ = -1;
  event* ready_event_ = nullptr;
  event* activate_event_ = nullptr;
  size_t users_ = 0;
  // Delivering a batch or activations: a Release to zero waits until it is over.
  bool dispatching_ = false;
  std::array<epoll_event, kBatch> batch_{};
  size_t batch_size_ = 0;
  std::vector<NetConn*> activated_;
  std::vector<NetConn*> activating_;
};

}  // namespace pgfleet::agent::net
