// Minimal structured logging, type-checked by StrFormat. Debian 12's Abseil has no absl/log, so
// this is ours. Two line shapes (SetLogFormat):
//   text: PgBouncer's, so its tools (pgbadger --format pgbouncer, log alerts) read ours:
//         `2026-12-05 22:44:05.521 UTC [1234] LOG component: message`, where a message about
//         one connection starts with PgBouncer's "C-0x1a: db/user@addr" (client) or "S-0x..."
//         (server) and carries no component.
//   json: one object per line for log pipelines:
//         {"time":"2026-12-05T22:44:05.521Z","level":"info","pid":1234,"component":"client",
//          "message":"..."}
#pragma once

#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <string_view>

#include "absl/strings/str_format.h"

namespace pgfleet::common {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3, kFatal = 4 };

enum class LogFormat { kText, kJson };

void SetLogLevel(LogLevel level);
void SetLogFormat(LogFormat format);
// "text" or "json"; nullopt for anything else.
std::optional<LogFormat> ParseLogFormat(std::string_view name);
// The line (with its newline) that LogLine writes, at `unix_micros`.
std::string FormatLogLine(LogFormat format, int64_t unix_micros, int pid, LogLevel level,
                          std::string_view component, std::string_view message);
LogLevel GetLogLevel();
// Sends log lines to `path` (appending) in addition to stderr; empty = stderr only.
bool SetLogFile(const std::string& path);
// PgBouncer's -q: false stops log lines going to stderr (the logfile and syslog still get every
// line, at the same level: -q is not about verbosity). On by default.
void SetLogToStderr(bool enabled);
// PgBouncer's syslog = 1: every log line also goes to syslog(3) as "LEVEL component message"
// under `ident` and `facility` (a name SyslogFacilityCode knows). Calling it again with other
// values reopens the connection; enabled = false closes it.
void SetSyslog(bool enabled, const std::string& ident, const std::string& facility);
// PgBouncer's syslog_facility names (auth, authpriv, daemon, user, local0-local7) as LOG_*
// codes; nullopt for any other name.
std::optional<int> SyslogFacilityCode(std::string_view name);
void LogLine(LogLevel level, std::string_view component, std::string_view message);
// `message` as it goes into a log line: control characters escaped (\n, \r, \t, other bytes
// below 0x20 and 0x7f as \xNN, the Unicode line separators and C1 controls as \uNNNN), so one
// log call is always exactly one line, whatever names and peer-provided text it quotes.
std::string EscapeLogMessage(std::string_view message);

inline bool LogEnabled(LogLevel level) { return level >= GetLogLevel(); }

}  // namespace pgfleet::common

#define PGF_LOG_AT(level, component, ...)                                         \
  do {                                                                            \
    if (::pgfleet::common::LogEnabled(level)) {                                   \
      ::pgfleet::common::LogLine(level, component, absl::StrFormat(__VA_ARGS__)); \
    }                                                                             \
  } while (0)

#define PGF_DEBUG(component, ...) \
  PGF_LOG_AT(::pgfleet::common::LogLevel::kDebug, component, __VA_ARGS__)
#define PGF_INFO(component, ...) \
  PGF_LOG_AT(::pgfleet::common::LogLevel::kInfo, component, __VA_ARGS__)
#define PGF_WARN(component, ...) \
  PGF_LOG_AT(::pgfleet::common::LogLevel::kWarning, component, __VA_ARGS__)
#define PGF_ERROR(component, ...) \
  PGF_LOG_AT(::pgfleet::common::LogLevel::kError, component, __VA_ARGS__)

// Invariant checks: a failure is a bug in pgfleet, never a reaction to network input.
#define PGF_CHECK(cond)                                                           \
  do {                                                                            \
    if (!(cond)) {                                                                \
      ::pgfleet::common::LogLine(                                                 \
          ::pgfleet::common::LogLevel::kFatal, "check",                           \
          absl::StrFormat("%s:%d: CHECK failed: %s", __FILE__, __LINE__, #cond)); \
      std::abort();                                                               \
    }                                                                             \
  } while (0)
#ifdef NDEBUG
#define PGF_DCHECK(cond) \
  do {                   \
  } while (0)
#else
#define PGF_DCHECK(cond) PGF_CHECK(cond)
#endif
