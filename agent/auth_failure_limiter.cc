#include "agent/auth_failure_limiter.h"

#include <algorithm>

#include "common/log.h"

namespace pgfleet::agent {

AuthFailureLimiter::Decision AuthFailureLimiter::OnFailure(absl::string_view address,
                                                           absl::Time now, int burst_setting,
                                                           absl::Duration max_delay) {
  ++failures_total_;
  Decision decision;
  if (burst_setting <= 0) {
    decision.failures_in_window = 1;
    return decision;
  }
  auto it = windows_.find(address);
  if (it == windows_.end()) {
    if (windows_.size() >= kMaxAddresses) EvictOldest();
    it = windows_.emplace(std::string(address), Window{now}).first;
  } else if (now - it->second.start >= kWindow) {
    decision.unlogged_in_previous_window = it->second.unlogged;
    it->second = Window{now};
  }
  Window& window = it->second;
  decision.failures_in_window = ++window.failures;
  const uint64_t burst = static_cast<uint64_t>(burst_setting);
  if (window.failures <= burst) return decision;

  const uint64_t past_burst = window.failures - burst;  // 1 for the first held back.
  absl::Duration delay = kFirstDelay;
  for (uint64_t i = 1; i < past_burst && delay < max_delay; ++i) delay *= 2;
  decision.delay = std::min(delay, max_delay);
  decision.log = false;
  decision.throttling_started = past_burst == 1;
  ++window.unlogged;
  ++delayed_total_;
  return decision;
}

std::vector<AuthFailureLimiter::Unlogged> AuthFailureLimiter::Expire(absl::Time now) {
  std::vector<Unlogged> unlogged;
  absl::erase_if(windows_, [&](const auto& entry) {
    if (now - entry.second.start < kWindow) return false;
    if (entry.second.unlogged > 0) unlogged.push_back({entry.first, entry.second.unlogged});
    return true;
  });
  return unlogged;
}

void AuthFailureLimiter::EvictOldest() {
  // Rare (10,000 distinct guessing addresses within a minute), so a linear scan will do.
  auto oldest = windows_.begin();
  for (auto it = windows_.begin(); it != windows_.end(); ++it) {
    if (it->second.start < oldest->second.start) oldest = it;
  }
  if (oldest != windows_.end()) windows_.erase(oldest);
}

void LogUnloggedFailures(absl::string_view address, uint64_t failures) {
  PGF_WARN("client", "%d more failed logins from %s in the last minute were not logged one by one",
           failures, address);
}

absl::string_view PeerAddressWithoutPort(absl::string_view peer) {
  if (!peer.empty() && peer.front() == '[') {
    const size_t close = peer.find(']');
    if (close != absl::string_view::npos) return peer.substr(1, close - 1);
    return peer;
  }
  const size_t colon = peer.rfind(':');
  // One colon: IPv4 with a port. More than one without brackets: a bare IPv6 address.
  if (colon != absl::string_view::npos && peer.find(':') == colon) return peer.substr(0, colon);
  return peer;
}

}  // namespace pgfleet::agent
