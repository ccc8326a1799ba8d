// Messages an engine decided to send, sent in the order they were decided but never while the
// engine's lock is held: Push (under the engine's lock) appends; Drain (after releasing it)
// sends. Only one thread sends at a time; a Drain that finds another thread sending returns at
// once and leaves its items to that thread, so no thread ever waits on another's stream, and a
// send may call back into the engine.
#pragma once

#include <deque>
#include <functional>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace pgfleet::controller {

template <typename Item>
class SendQueue {
 public:
  explicit SendQueue(std::function<void(const Item&)> send) : send_(std::move(send)) {}

  void Push(std::vector<Item> items) {
    absl::MutexLock lock(&mu_);
    for (Item& item : items) pending_.push_back(std::move(item));
  }

  void Drain() {
    mu_.Lock();
    if (draining_) {
      mu_.Unlock();
      return;
    }
    draining_ = true;
    while (!pending_.empty()) {
      std::deque<Item> batch;
      batch.swap(pending_);
      mu_.Unlock();
      for (const Item& item : batch) send_(item);
      mu_.Lock();
    }
    draining_ = false;
    mu_.Unlock();
  }

 private:
  const std::function<void(const Item&)> send_;
  absl::Mutex mu_;
  std::deque<Item> pending_ ABSL_GUARDED_BY(mu_);
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace pgfleet::controller
