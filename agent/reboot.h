// PgBouncer's -R/--reboot: the hand-over of agent/handover.h to a process the admin started
// instead of a forked one: `pgfleet-agent -R pgbouncer.ini` finds the running agent through the
// config's pidfile, listens on the abstract unix socket "@pgfleet-agent-takeover/<old pid>"
// (SOCK_SEQPACKET) and sends that agent SIGUSR2. On SIGUSR2 an agent first looks for such a
// listener for its own pid: when there is one whose owner is its own user (or root), that
// connection is the hand-over channel in place of a socketpair, with the same messages, so the -R
// process takes the listeners over and the old one lets its clients finish and exits. Otherwise
// SIGUSR2 forks a new process as before. A request the old process turns down (a restart already
// under way, SUSPEND) is answered "refused REASON". Abstract socket names need no file to clean
// up; the credential checks on both ends keep another user from posing as either side.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "agent/handover.h"

namespace pgfleet::agent {

// -R, in the new process: the running agent the config's `pidfile` names. nullopt when there is
// none to take over from (no pidfile, or it names no running process): start normally, as
// PgBouncer does. An error when the config has no pidfile, or names a process -R cannot take
// over from (another user's, not a pgfleet-agent).
absl::StatusOr<std::optional<pid_t>> FindAgentToTakeOver(const std::string& pidfile);
// Whether `pid` (read from `where`, for errors) is an agent -R can take over from: nullopt when
// it no longer runs (or is this process).
absl::StatusOr<std::optional<pid_t>> CheckAgentToTakeOver(pid_t pid, const std::string& where);
// -R: asks agent `old_pid` to hand its listeners over to this process (see the top of this
// file) and waits up to `timeout` for them. The result is then used as ReceiveHandover's.
absl::StatusOr<InheritedSockets> RequestTakeover(pid_t old_pid, absl::Duration timeout);

// On SIGUSR2: the -R process waiting for this process, if any.
std::optional<TakeoverRequest> AcceptTakeoverRequest();
// Tells a -R process why this agent will not hand over, and closes the request.
void RefuseTakeover(TakeoverRequest& request, const std::string& reason);

}  // namespace pgfleet::agent
