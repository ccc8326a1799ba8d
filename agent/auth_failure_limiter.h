// Slows down password guessing, per source address, without locking anyone out.
//
// Every failed login from an address counts in a window (60 s from its first failure). The
// first `burst` failures of a window are answered at once and logged one by one, as
// PgBouncer logs them. Past the burst, each further failure's error is held back, 100 ms
// for the first and doubling up to `max_delay`, and is not logged on its own: one line says
// the address is being slowed down, and one when its window ends says how many went unlogged. A
// guesser thus gets a few tries a second per connection instead of thousands, and a storm of
// failures cannot flood the log.
//
// Successful logins are never delayed and nobody is refused outright: on an application
// server every client comes from 127.0.0.1, so locking an address out would lock the
// application out with the attacker (PostgreSQL's auth_delay takes the same view).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace pgfleet::agent {

class AuthFailureLimiter {
 public:
  static constexpr absl::Duration kWindow = absl::Seconds(60);
  static constexpr absl::Duration kFirstDelay = absl::Milliseconds(100);
  // Addresses remembered at most; past it the oldest windows are forgotten first.
  static constexpr size_t kMaxAddresses = 10000;

  struct Decision {
    absl::Duration delay;  // How long to hold the error back (zero: answer now).
    bool log = true;       // Log this failure on its own line.
    // The first failure past the burst: say that the address is now slowed down.
    bool throttling_started = false;
    // The address's previous window ended here, before the janitor saw it: this many of its
    // failures went unlogged.
    uint64_t unlogged_in_previous_window = 0;
    uint64_t failures_in_window = 0;
  };
  struct Unlogged {
    std::string address;
    uint64_t failures;
  };

  // A failed login from `address` (without the port) at `now`, under the config's
  // auth_failure_burst (0 turns the limiter off: every failure answered at once and logged)
  // and auth_failure_max_delay.
  Decision OnFailure(absl::string_view address, absl::Time now, int burst,
                     absl::Duration max_delay);
  // Forgets windows that ended by `now` (the janitor calls it) and returns, for those that
  // went past the burst, how many failures were not logged.
  std::vector<Unlogged> Expire(absl::Time now);

  // For SHOW/metrics: failures seen and failures delayed, since start.
  uint64_t failures_total() const { return failures_total_; }
  uint64_t delayed_total() const { return delayed_total_; }
  size_t tracked_addresses() const { return windows_.size(); }

 private:
  struct Window {
    absl::Time start;
    uint64_t failures = 0;
    uint64_t unlogged = 0;
  };
  void EvictOldest();

  absl::flat_hash_map<std::string, Window> windows_;
  uint64_t failures_total_ = 0;
  uint64_t delayed_total_ = 0;
};

// The one line that stands for an address's failures past the burst once its window is over
// (whether the janitor or the address's next failure closes the window).
void LogUnloggedFailures(absl::string_view address, uint64_t failures);

// "10.1.2.3:5555" -> "10.1.2.3", "[::1]:5555" -> "::1"; anything else (a unix socket's
// description) is returned as it is.
absl::string_view PeerAddressWithoutPort(absl::string_view peer);

}  // namespace pgfleet::agent
