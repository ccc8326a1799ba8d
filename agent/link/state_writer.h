// The link's file work (the applied config and its version, written with fsync) on a thread of
// its own, so a slow disk never stalls the event loop and the clients it serves.
#pragma once

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <utility>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"

namespace pgfleet::agent {

class EventLoop;

class StateWriter {
 public:
  // Runs on the writer thread.
  using Job = absl::AnyInvocable<absl::Status()>;
  // Runs on the loop thread with the job's result.
  using Done = absl::AnyInvocable<void(absl::Status)>;

  explicit StateWriter(EventLoop& loop);
  // Runs the jobs still queued (a write that started is finished, not torn), then joins.
  // Their Done is posted to the loop, which may no longer run it.
  ~StateWriter();
  StateWriter(const StateWriter&) = delete;
  StateWriter& operator=(const StateWriter&) = delete;

  // Jobs run one at a time in the order they were enqueued, and their Done callbacks reach
  // the loop in that order: of two writes to one file, the later one is what stays on disk.
  void Enqueue(Job job, Done done);

 private:
  void Run();

  EventLoop& loop_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::pair<Job, Done>> queue_;  // Guarded by mu_.
  bool stopping_ = false;                   // Guarded by mu_.
  std::thread thread_;                      // Last: started once the rest is built.
};

}  // namespace pgfleet::agent
