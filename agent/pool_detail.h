// Helpers shared by the files of Pool (pool.cc, pool_servers.cc, pool_janitor.cc); nothing
// outside Pool uses them.
#pragma once

#include <cstdint>
#include <string>

#include "absl/time/time.h"
#include "agent/pool.h"
#include "common/config/config.h"

namespace pgfleet::agent::pool_detail {

// PgBouncer's words when a server made under older settings (RECONNECT, a RELOAD or SET that
// changes how servers are reached) is closed; log alerts match them.
inline constexpr char kConfigurationChanged[] = "database configuration changed";

inline uint64_t ToMicros(absl::Duration d) {
  return static_cast<uint64_t>(absl::ToInt64Microseconds(d));
}

}  // namespace pgfleet::agent::pool_detail
