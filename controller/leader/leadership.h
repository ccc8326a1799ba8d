// Several controllers, one leader (issue 24). Controllers that share one PostgreSQL store elect
// a leader through the store's lease (Store::AcquireLeadership, migrations/0010): the leader
// renews it every `renew`; a controller that cannot renew (the store refused, or is
// unreachable) stops leading at once, and in any case `lease - renew` after its last renewal
// began, before its lease can expire and another controller can take over. Only the leader runs
// the rollout and maintenance engines, holds the agents' streams and serves writes; every write
// of its store is fenced by the lease's token, so a deposed leader's late write is refused.
//
// With SQLite (one controller, the default) there is no election: the controller always leads
// and its store is not fenced.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "controller/clock.h"
#include "controller/store/store.h"

namespace pgfleet::controller {

struct LeadershipOptions {
  // This controller's address as the others reach it (host:port): the lease's holder, and where
  // followers send the writes they are given.
  std::string self;
  absl::Duration lease = absl::Seconds(10);
  absl::Duration renew = absl::Seconds(3);
  bool elect = true;  // False: no election, always the leader (SQLite).
};

class Leadership {
 public:
  Leadership(Store& store, const Clock& clock, LeadershipOptions options);
  ~Leadership();
  Leadership(const Leadership&) = delete;
  Leadership& operator=(const Leadership&) = delete;

  // Called on the leadership thread when this controller starts leading (before IsLeader turns
  // true: the new leader's set-up, on its fenced store) and when it stops (after IsLeader turned
  // false). Set before Start.
  void set_on_elected(std::function<void()> fn) { on_elected_ = std::move(fn); }
  void set_on_deposed(std::function<void()> fn) { on_deposed_ = std::move(fn); }

  // One attempt at once (so a lone controller leads before it serves), then one every `renew`
  // on a thread of its own until Stop.
  void Start();
  void Stop();

  // Leading now: elected, and the last renewal began less than `lease - renew` ago.
  bool IsLeader() const;
  bool elects() const { return options_.elect; }
  std::string self() const;
  // The address, once known (the bound port): before Start.
  void set_self(const std::string& self);
  // The leader's address as last read from the store ("" when unknown); self() when leading.
  std::string leader() const;
  // UNAVAILABLE, naming the leader (or saying none is known yet): retry there, or shortly.
  absl::Status NotLeaderError() const;

  // One election round: take or renew the lease, or learn who holds it. Public for tests.
  void RunOnce();

 private:
  void StepDown(const std::string& why);

  Store& store_;
  const Clock& clock_;
  LeadershipOptions options_;  // options_.self is guarded by mu_.
  std::function<void()> on_elected_, on_deposed_;

  mutable absl::Mutex mu_;
  bool leading_ ABSL_GUARDED_BY(mu_) = false;
  std::chrono::steady_clock::time_point valid_until_ ABSL_GUARDED_BY(mu_);
  std::string leader_ ABSL_GUARDED_BY(mu_);
  uint64_t fencing_token_ ABSL_GUARDED_BY(mu_) = 0;

  std::thread thread_;
  std::mutex stop_mu_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;
};

}  // namespace pgfleet::controller
