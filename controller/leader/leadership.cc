#include "controller/leader/leadership.h"

#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace pgfleet::controller {

Leadership::Leadership(Store& store, const Clock& clock, LeadershipOptions options)
    : store_(store), clock_(clock), options_(std::move(options)) {}

Leadership::~Leadership() { Stop(); }

std::string Leadership::self() const {
  absl::MutexLock lock(&mu_);
  return options_.self;
}

void Leadership::set_self(const std::string& self) {
  absl::MutexLock lock(&mu_);
  options_.self = self;
}

void Leadership::Start() {
  if (!options_.elect) {
    if (on_elected_) on_elected_();
    absl::MutexLock lock(&mu_);
    leading_ = true;
    valid_until_ = std::chrono::steady_clock::time_point::max();
    leader_ = options_.self;
    return;
  }
  if (self().empty()) set_self("pgfleet-controller");
  RunOnce();
  thread_ = std::thread([this] {
    std::unique_lock<std::mutex> lock(stop_mu_);
    while (!stop_cv_.wait_for(lock, absl::ToChronoMilliseconds(options_.renew),
                              [this] { return stopping_; })) {
      lock.unlock();
      RunOnce();
      lock.lock();
    }
  });
}

void Leadership::Stop() {
  {
    std::lock_guard<std::mutex> lock(stop_mu_);
    stopping_ = true;
  }
  stop_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

bool Leadership::IsLeader() const {
  absl::MutexLock lock(&mu_);
  return leading_ && std::chrono::steady_clock::now() < valid_until_;
}

std::string Leadership::leader() const {
  absl::MutexLock lock(&mu_);
  return leader_;
}

absl::Status Leadership::NotLeaderError() const {
  const std::string leader = this->leader();
  const std::string self = this->self();
  if (leader.empty() || leader == self) {
    return absl::UnavailableError(absl::StrCat("no controller leads right now (controller ", self,
                                               " follows); a leader is elected within ",
                                               absl::FormatDuration(options_.lease),
                                               ": retry shortly"));
  }
  return absl::UnavailableError(absl::StrCat("controller ", self,
                                             " is not the leader; the leader is ", leader,
                                             ": retry there (fleetctl --controller=", leader, ")"));
}

void Leadership::RunOnce() {
  const std::string self = this->self();
  const auto started = std::chrono::steady_clock::now();
  const int64_t now_ms = UnixMillis(clock_.Now());
  absl::StatusOr<LeaderLease> lease =
      store_.AcquireLeadership(self, now_ms, absl::ToInt64Milliseconds(options_.lease));
  if (lease.ok()) {
    bool was_leading = false;
    uint64_t token = 0;
    {
      absl::MutexLock lock(&mu_);
      was_leading = leading_;
      token = fencing_token_;
    }
    if (!was_leading || token != lease->fencing_token) {
      PGF_INFO("leader", "controller %s leads (fencing token %d)", self, lease->fencing_token);
      if (on_elected_) on_elected_();
    }
    absl::MutexLock lock(&mu_);
    leading_ = true;
    fencing_token_ = lease->fencing_token;
    // Stop leading before the lease can expire in the store (when a follower may take over):
    // the renewals in between have this much time to succeed.
    valid_until_ = started + absl::ToChronoMilliseconds(options_.lease - options_.renew);
    leader_ = self;
    return;
  }
  std::string holder;
  if (absl::IsFailedPrecondition(lease.status())) {
    if (absl::StatusOr<LeaderLease> current = store_.GetLeaderLease(); current.ok()) {
      holder = current->holder;
    }
  }
  {
    absl::MutexLock lock(&mu_);
    if (holder != leader_ && !holder.empty() && holder != self) {
      PGF_INFO("leader", "controller %s follows %s", self, holder);
    }
    leader_ = holder;
  }
  StepDown(std::string(lease.status().message()));
}

void Leadership::StepDown(const std::string& why) {
  {
    absl::MutexLock lock(&mu_);
    if (!leading_) return;
    leading_ = false;
  }
  PGF_WARN("leader", "controller %s no longer leads: %s", self(), why);
  if (on_deposed_) on_deposed_();
}

}  // namespace pgfleet::controller
