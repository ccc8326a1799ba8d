// Multi-host databases (`host=a,b,c`): which host a new server connection goes to, under
// PgBouncer's load_balance_hosts, and which hosts are left out because connecting to them
// failed. The connect path asks PickHost; the pool reports each login's outcome to HostHealth.
//
// PgBouncer 1.25 only rotates (a dead host of the list keeps getting its share of attempts);
// pgfleet also skips a host whose login failed, for a backoff that starts at server_login_retry
// and doubles up to 4x that, then lets one connection (the probe) find out whether it is back;
// only a probe that logs in and answers server_check_query puts the host back in rotation.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/time/time.h"
#include "common/config/config.h"

namespace pgfleet::agent {

// The index of `usable` a new connection goes to under `mode`, advancing PgBouncer's per-pool
// cursor (its rrcounter): round-robin moves past the chosen host, disable stays on it, so the
// next connection goes to the same host until that host becomes unusable. Unusable hosts are
// skipped; nullopt when none is usable.
std::optional<size_t> ChooseHost(config::LoadBalanceHosts mode, const std::vector<bool>& usable,
                                 size_t& cursor);

// How long a host stays out after its `failures`-th failed login in a row (>= 1): `retry`
// (server_login_retry), doubled with each further failure, at most four times `retry`.
absl::Duration HostBackoff(int failures, absl::Duration retry);

// Whether a server whose login reported `params` (ParameterStatus name/value pairs) is one
// `wanted` accepts, as libpq and PgBouncer judge it from in_hot_standby and
// default_transaction_read_only. A server that reports neither (before PostgreSQL 14) only
// satisfies "any".
bool SatisfiesTargetSessionAttrs(config::TargetSessionAttrs wanted,
                                 const std::vector<std::pair<std::string, std::string>>& params);

// The hosts (by config::EndpointAddress) whose last login failed, agent-wide: a host that is
// down is down for every pool that lists it.
class HostHealth {
 public:
  struct Down {
    int failures = 0;           // Failed logins in a row.
    uint64_t retry_at_us = 0;   // Not tried again before this (MonotonicMicros).
    uint64_t probe_server = 0;  // The connection finding out whether it is back; 0: none.
  };

  // Whether a new connection may go to `address`: it is up, or its backoff is over and no
  // other connection is already probing it.
  bool Usable(const std::string& address, uint64_t now_us) const;
  // nullptr when the host is up.
  const Down* Find(const std::string& address) const;
  // Connection `server_id` goes to the down host `address` to see whether it is back.
  void BeginProbe(const std::string& address, uint64_t server_id);
  // A login to `address` failed. Counts as one more failure in a row when the host was up,
  // when it was this host's probe, or when its backoff was over; a connection started before
  // the host went down does not lengthen the backoff. Returns how long the host stays out.
  absl::Duration MarkFailed(const std::string& address, uint64_t server_id, uint64_t now_us,
                            absl::Duration retry);
  // The probe logged in and answered: the host is back. False if it was not down.
  bool MarkUp(const std::string& address);
  // Connection `server_id` went away before its probe had an answer (pool reclaimed, RELOAD):
  // another connection may probe.
  void EndProbe(const std::string& address, uint64_t server_id);
  size_t down_count() const { return down_.size(); }

 private:
  absl::flat_hash_map<std::string, Down> down_;
};

struct HostPick {
  config::ServerEndpoint endpoint;
  std::string address;  // config::EndpointAddress(endpoint).
  // The host is down and this connection finds out whether it is back: it must log in and
  // answer server_check_query before the host serves clients again (HostHealth::MarkUp).
  bool probe = false;
};

// The host connection `server_id` of a pool goes to. One endpoint: that one, health aside (the
// pool's server_login_retry paces it, as in PgBouncer). Several: ChooseHost over the usable
// ones; when none is usable, the rotation goes on over all of them (the pool's retry paces it),
// each attempt a probe unless one is in flight for that host.
// `mismatched`, when given, holds the hosts this pool found not to satisfy its database's
// target_session_attrs: left out as well (for this pool only, since another database may
// accept them), then tried again after their backoff.
HostPick PickHost(const std::vector<config::ServerEndpoint>& endpoints,
                  config::LoadBalanceHosts mode, size_t& cursor, HostHealth& health,
                  uint64_t server_id, uint64_t now_us, const HostHealth* mismatched = nullptr);

}  // namespace pgfleet::agent
