#include "common/service_notify.h"

#include <systemd/sd-daemon.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "common/log.h"

namespace pgfleet::common {

bool ServiceManagerListening() {
  const char* socket = getenv("NOTIFY_SOCKET");
  return socket != nullptr && *socket != '\0';
}

void NotifyServiceManager(const std::string& state) {
  if (!ServiceManagerListening()) return;
  // unset_environment=0: see the header.
  if (int sent = sd_notify(0, state.c_str()); sent < 0) {
    PGF_WARN("systemd", "sd_notify failed: %s", strerror(-sent));
  }
}

std::string ServiceStatusLine(const std::string& status) {
  std::string line = status;
  for (char& c : line) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  return line;
}

}  // namespace pgfleet::common
