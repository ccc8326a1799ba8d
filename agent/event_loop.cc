#include "agent/event_loop.h"

#include <event2/dns.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <pthread.h>
#include <time.h>

#include "common/log.h"

namespace pgfleet::agent {

uint64_t MonotonicMicros() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000 + static_cast<uint64_t>(ts.tv_nsec) / 1000;
}

namespace {
uint64_t CurrentThreadId() { return static_cast<uint64_t>(pthread_self()); }
}  // namespace

std::unique_ptr<EventLoop> EventLoop::Create() {
  static const bool threads_ready = evthread_use_pthreads() == 0;
  PGF_CHECK(threads_ready);
  std::unique_ptr<EventLoop> loop(new EventLoop());
  // The changelist folds the event changes made while handling one wakeup (a read disabled
  // and enabled again, a write armed and disarmed) into at most one epoll_ctl per socket.
  event_config* config = event_config_new();
  PGF_CHECK(config != nullptr);
  event_config_set_flag(config, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
  loop->base_ = event_base_new_with_config(config);
  event_config_free(config);
  PGF_CHECK(loop->base_ != nullptr);
  loop->dns_ = evdns_base_new(loop->base_, EVDNS_BASE_INITIALIZE_NAMESERVERS);
  if (loop->dns_ == nullptr) {
    // No resolv.conf: numeric hosts and /etc/hosts still work.
    loop->dns_ = evdns_base_new(loop->base_, 0);
  }
  loop->post_event_ = event_new(loop->base_, -1, 0, &EventLoop::OnPosted, loop.get());
  loop->loop_thread_id_ = CurrentThreadId();
  return loop;
}

EventLoop::~EventLoop() {
  event_free(post_event_);
  if (dns_ != nullptr) evdns_base_free(dns_, 0);
  event_base_free(base_);
}

int EventLoop::Run() {
  loop_thread_id_ = CurrentThreadId();
  return event_base_dispatch(base_) < 0 ? 1 : 0;
}

void EventLoop::Stop() { event_base_loopbreak(base_); }

bool EventLoop::IsLoopThread() const { return CurrentThreadId() == loop_thread_id_; }

void EventLoop::Post(absl::AnyInvocable<void()> fn) {
  bool was_empty;
  {
    absl::MutexLock lock(&mu_);
    was_empty = posted_.empty();
    posted_.push_back(std::move(fn));
  }
  if (was_empty) event_active(post_event_, 0, 0);
}

void EventLoop::OnPosted(int, short, void* arg) { static_cast<EventLoop*>(arg)->RunPosted(); }

void EventLoop::RunPosted() {
  std::deque<absl::AnyInvocable<void()>> batch;
  {
    absl::MutexLock lock(&mu_);
    batch.swap(posted_);
  }
  for (auto& fn : batch) fn();
}

Timer::Timer(EventLoop& loop, absl::AnyInvocable<void()> fn) : fn_(std::move(fn)) {
  event_ = event_new(loop.base(), -1, 0, &Timer::OnFire, this);
}

Timer::~Timer() { event_free(event_); }

void Timer::Start(absl::Duration delay, bool repeat) {
  event_del(event_);
  event_assign(event_, event_get_base(event_), -1, repeat ? EV_PERSIST : 0, &Timer::OnFire, this);
  timeval tv = absl::ToTimeval(delay);
  event_add(event_, &tv);
}

void Timer::Cancel() { event_del(event_); }

void Timer::OnFire(int, short, void* arg) { static_cast<Timer*>(arg)->fn_(); }

}  // namespace pgfleet::agent
