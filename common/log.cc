#include "common/log.h"

#include <sys/time.h>
#include <syslog.h>

#include <atomic>
#include <cstdlib>
#include <ctime>
#include <mutex>
#include <utility>

namespace pgfleet::common {
namespace {

std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};
std::mutex g_file_mu;
FILE* g_file = nullptr;  // Guarded by g_file_mu.

std::atomic<bool> g_syslog{false};
std::mutex g_syslog_mu;
// openlog(3) keeps the ident pointer: the string lives here while the connection is open.
std::string g_syslog_ident;  // Guarded by g_syslog_mu.
int g_syslog_facility = -1;  // Guarded by g_syslog_mu; -1 while closed.

int SyslogPriority(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return LOG_DEBUG;
    case LogLevel::kInfo:
      return LOG_INFO;
    case LogLevel::kWarning:
      return LOG_WARNING;
    case LogLevel::kError:
      return LOG_ERR;
    case LogLevel::kFatal:
      return LOG_CRIT;
  }
  return LOG_INFO;
}

const char* LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "DEBUG";
    case LogLevel::kInfo:
      return "INFO";
    case LogLevel::kWarning:
      return "WARNING";
    case LogLevel::kError:
      return "ERROR";
    case LogLevel::kFatal:
      return "FATAL";
  }
  return "?";
}

}  // namespace

std::string EscapeLogMessage(std::string_view message) {
  auto needs_escape = [](unsigned char c) {
    return c < 0x20 || c == 0x7f || c == 0xc2 || c == 0xe2;
  };
  size_t first = 0;
  while (first < message.size() && !needs_escape(static_cast<unsigned char>(message[first]))) {
    ++first;
  }
  if (first == message.size()) return std::string(message);
  std::string escaped(message.substr(0, first));
  escaped.reserve(message.size() + 16);
  for (size_t i = first; i < message.size(); ++i) {
    const auto c = static_cast<unsigned char>(message[i]);
    const auto next = [&](size_t offset) -> unsigned char {
      return i + offset < message.size() ? static_cast<unsigned char>(message[i + offset]) : 0;
    };
    if (c == '\n') {
      escaped += "\\n";
    } else if (c == '\r') {
      escaped += "\\r";
    } else if (c == '\t') {
      escaped += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      absl::StrAppendFormat(&escaped, "\\x%02x", c);
    } else if (c == 0xc2 && next(1) >= 0x80 && next(1) <= 0x9f) {
      // U+0080..U+009F, the C1 controls (NEL, CSI...).
      absl::StrAppendFormat(&escaped, "\\u%04x", next(1));
      ++i;
    } else if (c == 0xe2 && next(1) == 0x80 && (next(2) == 0xa8 || next(2) == 0xa9)) {
      // U+2028 LINE SEPARATOR, U+2029 PARAGRAPH SEPARATOR.
      absl::StrAppendFormat(&escaped, "\\u%04x", 0x2000 + next(2) - 0x80);
      i += 2;
    } else {
      escaped.push_back(static_cast<char>(c));
    }
  }
  return escaped;
}

void SetLogLevel(LogLevel level) { g_level.store(static_cast<int>(level)); }
LogLevel GetLogLevel() { return static_cast<LogLevel>(g_level.load(std::memory_order_relaxed)); }

bool SetLogFile(const std::string& path) {
  std::lock_guard<std::mutex> lock(g_file_mu);
  if (g_file != nullptr) {
    fclose(g_file);
    g_file = nullptr;
  }
  if (path.empty()) return true;
  g_file = fopen(path.c_str(), "ae");
  return g_file != nullptr;
}

std::optional<int> SyslogFacilityCode(std::string_view name) {
  static constexpr std::pair<std::string_view, int> kFacilities[] = {
      {"auth", LOG_AUTH},     {"authpriv", LOG_AUTHPRIV}, {"daemon", LOG_DAEMON},
      {"user", LOG_USER},     {"local0", LOG_LOCAL0},     {"local1", LOG_LOCAL1},
      {"local2", LOG_LOCAL2}, {"local3", LOG_LOCAL3},     {"local4", LOG_LOCAL4},
      {"local5", LOG_LOCAL5}, {"local6", LOG_LOCAL6},     {"local7", LOG_LOCAL7}};
  for (const auto& [facility, code] : kFacilities) {
    if (facility == name) return code;
  }
  return std::nullopt;
}

void SetSyslog(bool enabled, const std::string& ident, const std::string& facility) {
  std::lock_guard<std::mutex> lock(g_syslog_mu);
  const int code = SyslogFacilityCode(facility).value_or(LOG_DAEMON);
  if (!enabled) {
    g_syslog.store(false);
    if (g_syslog_facility >= 0) closelog();
    g_syslog_facility = -1;
    return;
  }
  if (g_syslog_facility == code && g_syslog_ident == ident) return;
  g_syslog.store(false);
  if (g_syslog_facility >= 0) closelog();
  g_syslog_ident = ident;
  g_syslog_facility = code;
  openlog(g_syslog_ident.c_str(), LOG_PID | LOG_NDELAY, code);
  g_syslog.store(true);
}

void LogLine(LogLevel level, std::string_view component, std::string_view message) {
  timeval tv;
  gettimeofday(&tv, nullptr);
  tm parts;
  gmtime_r(&tv.tv_sec, &parts);
  char ts[32];
  strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &parts);
  std::string line = absl::StrFormat("%s.%03dZ %s %s %s\n", ts, static_cast<int>(tv.tv_usec / 1000),
                                     LevelName(level), component, EscapeLogMessage(message));
  fwrite(line.data(), 1, line.size(), stderr);
  if (g_syslog.load(std::memory_order_relaxed)) {
    // syslog adds its own timestamp; the line without ours and without the newline.
    const size_t timestamp_end = line.find(' ') + 1;
    std::lock_guard<std::mutex> syslog_lock(g_syslog_mu);
    if (g_syslog_facility >= 0) {
      syslog(SyslogPriority(level), "%.*s", static_cast<int>(line.size() - timestamp_end - 1),
             line.data() + timestamp_end);
    }
  }
  std::lock_guard<std::mutex> lock(g_file_mu);
  if (g_file != nullptr) {
    fwrite(line.data(), 1, line.size(), g_file);
    fflush(g_file);
  }
}

}  // namespace pgfleet::common
