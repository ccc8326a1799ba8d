// The agent's single event loop. Every socket, pool and timer belongs to the loop thread;
// other threads (the controller link, signal handling) hand work in through Post().
#pragma once

#include <cstdint>
#include <deque>
#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

struct event_base;
struct event;
struct evdns_base;

namespace pgfleet::agent {

// Microseconds on a monotonic clock: cheap enough for per-message stats.
uint64_t MonotonicMicros();

class Timer;

class EventLoop {
 public:
  static std::unique_ptr<EventLoop> Create();
  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  event_base* base() const { return base_; }
  evdns_base* dns() const { return dns_; }

  // Runs until Stop(). Returns non-zero on a libevent error.
  int Run();
  void Stop();
  bool IsLoopThread() const;

  // Safe from any thread: runs `fn` on the loop thread soon. The loop is woken only when
  // the queue was empty (Envoy's dispatcher does the same).
  void Post(absl::AnyInvocable<void()> fn);

 private:
  EventLoop() = default;
  static void OnPosted(int fd, short what, void* arg);
  void RunPosted();

  event_base* base_ = nullptr;
  evdns_base* dns_ = nullptr;
  event* post_event_ = nullptr;
  uint64_t loop_thread_id_ = 0;
  absl::Mutex mu_;
  std::deque<absl::AnyInvocable<void()>> posted_ ABSL_GUARDED_BY(mu_);
};

// A repeating or one-shot timer bound to the loop.
class Timer {
 public:
  Timer(EventLoop& loop, absl::AnyInvocable<void()> fn);
  ~Timer();
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;
  void Start(absl::Duration delay, bool repeat);
  void Cancel();

 private:
  static void OnFire(int fd, short what, void* arg);
  event* event_ = nullptr;
  absl::AnyInvocable<void()> fn_;
};

}  // namespace pgfleet::agent
