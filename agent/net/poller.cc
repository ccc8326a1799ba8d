#include "agent/net/poller.h"

#include <errno.h>
#include <event2/event.h>
#include <string.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "agent/net/net_conn.h"

namespace pgfleet::agent::net {
namespace {

// The pollers of this thread's loops (one in the agent; tests may have several bases).
std::vector<Poller*>& Registry() {
  static thread_local std::vector<Poller*> pollers;
  return pollers;
}

uint32_t EpollEvents(uint8_t mask) {
  return ((mask & Poller::kRead) != 0 ? EPOLLIN : 0u) |
         ((mask & Poller::kWrite) != 0 ? EPOLLOUT : 0u);
}

}  // namespace

Poller* Poller::Acquire(event_base* base) {
  for (Poller* poller : Registry()) {
    if (poller->base_ == base) {
      ++poller->users_;
      return poller;
    }
  }
  auto* poller = new Poller(base);
  poller->users_ = 1;
  Registry().push_back(poller);
  return poller;
}

Poller::Poller(event_base* base) : base_(base) {
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd_ < 0) {
    // Out of file descriptors or memory at the first connection: nothing could be served.
    fprintf(stderr, "epoll_create1: %s\n", strerror(errno));
    abort();
  }
  ready_event_ = event_new(base, epoll_fd_, EV_READ | EV_PERSIST, &Poller::OnReady, this);
  activate_event_ = event_new(base, -1, 0, &Poller::OnActivated, this);
  if (ready_event_ == nullptr || activate_event_ == nullptr) abort();
  event_add(ready_event_, nullptr);
}

Poller::~Poller() {
  event_free(ready_event_);
  event_free(activate_event_);
  close(epoll_fd_);
  auto& registry = Registry();
  registry.erase(std::remove(registry.begin(), registry.end(), this), registry.end());
}

void Poller::Release() {
  --users_;
  DeleteIfUnused();
}

void Poller::DeleteIfUnused() {
  if (users_ == 0 && !dispatching_) delete this;
}

void Poller::Watch(NetConn* conn, int fd, uint8_t watched, uint8_t wanted) {
  if (watched == wanted) return;
  epoll_event change{};
  change.events = EpollEvents(wanted);
  change.data.ptr = conn;
  if (wanted == 0) {
    epoll_ctl(epoll_fd_, EPOLL_CTL_DEL, fd, &change);
    return;
  }
  const int op = watched == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
  if (epoll_ctl(epoll_fd_, op, fd, &change) == 0) return;
  // As libevent does: the kernel's view may differ from ours (an fd number reused after a
  // close the set did not see); the other operation then does what was meant.
  if (op == EPOLL_CTL_ADD && errno == EEXIST) {
    epoll_ctl(epoll_fd_, EPOLL_CTL_MOD, fd, &change);
  } else if (op == EPOLL_CTL_MOD && errno == ENOENT) {
    epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, fd, &change);
  }
}

void Poller::Activate(NetConn* conn) {
  if (std::find(activated_.begin(), activated_.end(), conn) != activated_.end()) return;
  activated_.push_back(conn);
  event_active(activate_event_, 0, 1);
}

void Poller::Deactivate(NetConn* conn) {
  std::replace(activated_.begin(), activated_.end(), conn, static_cast<NetConn*>(nullptr));
  std::replace(activating_.begin(), activating_.end(), conn, static_cast<NetConn*>(nullptr));
}

void Poller::Forget(NetConn* conn) {
  for (size_t i = 0; i < batch_size_; ++i) {
    if (batch_[i].data.ptr == conn) batch_[i].data.ptr = nullptr;
  }
  Deactivate(conn);
}

void Poller::OnReady(int, short, void* arg) {
  auto* poller = static_cast<Poller*>(arg);
  const int ready = epoll_wait(poller->epoll_fd_, poller->batch_.data(),
                               static_cast<int>(poller->batch_.size()), 0);
  if (ready <= 0) return;
  poller->dispatching_ = true;
  poller->batch_size_ = static_cast<size_t>(ready);
  for (size_t i = 0; i < poller->batch_size_; ++i) {
    auto* conn = static_cast<NetConn*>(poller->batch_[i].data.ptr);
    if (conn != nullptr) conn->OnPollEvents(poller->batch_[i].events);
  }
  poller->batch_size_ = 0;
  poller->dispatching_ = false;
  poller->DeleteIfUnused();
}

void Poller::OnActivated(int, short, void* arg) {
  auto* poller = static_cast<Poller*>(arg);
  poller->dispatching_ = true;
  poller->activating_.swap(poller->activated_);
  for (size_t i = 0; i < poller->activating_.size(); ++i) {
    NetConn* conn = poller->activating_[i];
    if (conn != nullptr) conn->OnActivated();
  }
  poller->activating_.clear();
  poller->dispatching_ = false;
  poller->DeleteIfUnused();
}

}  // namespace pgfleet::agent::net
