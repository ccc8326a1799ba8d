// PgBouncer's prefix for a log line about one client connection, "C-0x1f: app/alice@10.0.0.5:5000",
// so pgbadger (--format pgbouncer) and alerts written for PgBouncer's log read ours. The log
// writer (common/log.h) leaves the component out of lines that start with it.
#pragma once

#include <cstdint>
#include <string>

#include "absl/strings/str_format.h"

namespace pgfleet {

inline std::string ClientLogPrefix(uint64_t id, const std::string& database,
                                   const std::string& user, const std::string& peer) {
  return absl::StrFormat("C-0x%x: %s/%s@%s", id, database, user, peer);
}

}  // namespace pgfleet
