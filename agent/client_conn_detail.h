// Limits and helpers shared by the files of ClientConn (client_conn.cc, client_startup.cc,
// client_auth.cc, client_rewrite.cc); nothing outside ClientConn uses them.
#pragma once

#include <strings.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "agent/pool.h"
#include "common/config/config.h"

namespace pgfleet::agent::client_conn_detail {

// Past this many bytes queued towards the server, stop reading from the client.
inline constexpr size_t kOutputHighWater = 256 * 1024;
// Largest password/SASL message accepted during login.
inline constexpr uint32_t kMaxAuthMessage = 10000;
// A client queued for a server keeps its read armed (disarming and re-arming it cost two
// epoll_ctl calls per queued transaction); past this much buffered input it stops reading.
inline constexpr size_t kWaitingInputLimit = 64 * 1024;
// Console commands are short; anything longer is not a command.
inline constexpr uint32_t kMaxAdminMessage = 64 * 1024;
// Messages the agent must read whole before rewriting them (a named Parse, whose definition
// it keeps; Describe and Close): anything larger is refused, so no client can make the agent
// hold more than this of its input. Every other message, a named Bind included, is forwarded
// as it arrives.
inline constexpr size_t kMaxHeldMessage = 1 << 20;
// The start of a message that decides whether it is rewritten (statement names are there).
inline constexpr size_t kRewriteHeadSize = 1024;

// Parameters the pooler keeps in step between every client and whichever server it gets
// (PgBouncer's built-in list). Spelled as PostgreSQL reports them in ParameterStatus.
inline constexpr const char* kTrackedParams[] = {"client_encoding", "DateStyle", "TimeZone",
                                                 "standard_conforming_strings", "application_name"};
// PostgreSQL's own spelling of the parameters it reports (and extensions commonly make it
// report), so a track_extra_parameters entry written in another case still matches the
// server's ParameterStatus.
inline constexpr const char* kReportedParamSpellings[] = {
    "IntervalStyle",   "search_path",  "default_transaction_read_only",
    "in_hot_standby",  "is_superuser", "session_authorization",
    "scram_iterations"};

inline bool EqualsIgnoringCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && strncasecmp(a.data(), b.data(), a.size()) == 0;
}

// The name under which parameter `name` is tracked: a built-in one, or one of the config's
// track_extra_parameters (PgBouncer matches both case-insensitively). Empty: not tracked.
inline std::string TrackedParamName(const config::Config& cfg, std::string_view name) {
  for (const char* tracked : kTrackedParams) {
    if (EqualsIgnoringCase(name, tracked)) return tracked;
  }
  for (const std::string& extra : cfg.track_extra_parameters) {
    if (!EqualsIgnoringCase(name, extra)) continue;
    for (const char* spelling : kReportedParamSpellings) {
      if (EqualsIgnoringCase(name, spelling)) return spelling;
    }
    return extra;
  }
  return {};
}

inline void SetParam(ParamList& params, const std::string& name, const std::string& value) {
  for (auto& [key, current] : params) {
    if (key == name) {
      current = value;
      return;
    }
  }
  params.emplace_back(name, value);
}

}  // namespace pgfleet::agent::client_conn_detail
