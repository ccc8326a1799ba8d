// systemd's service notification protocol (sd_notify(3)) for the daemons' Type=notify units:
// READY=1 once they serve, RELOADING=1 then READY=1 around a reload, STOPPING=1 on shutdown,
// STATUS= a one-line summary. Every call is a no-op when NOTIFY_SOCKET is unset (not started by
// systemd), so the daemons call them unconditionally. Only the daemons link this (libsystemd).
#pragma once

#include <string>

namespace pgfleet::common {

// True when a service manager listens (NOTIFY_SOCKET is set).
bool ServiceManagerListening();
// Sends `state` ("READY=1\nSTATUS=...", newline-separated assignments) as is. NOTIFY_SOCKET stays
// in the environment: a process the daemon starts to take over from it (a zero-downtime
// restart) reports to the same manager.
void NotifyServiceManager(const std::string& state);

// `status` with newlines folded into spaces, so it stays one STATUS= assignment.
std::string ServiceStatusLine(const std::string& status);

}  // namespace pgfleet::common
