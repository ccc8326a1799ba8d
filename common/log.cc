#include "common/log.h"

#include <sys/time.h>
#include <syslog.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <ctime>
#include <mutex>
#include <utility>

namespace pgfleet::common {
namespace {

std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};
std::atomic<int> g_format{static_cast<int>(LogFormat::kText)};
std::atomic<bool> g_to_stderr{true};
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

// PgBouncer's level words: LOG for what is neither a warning nor an error.
const char* LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "DEBUG";
    case LogLevel::kInfo:
      return "LOG";
    case LogLevel::kWarning:
      return "WARNING";
    case LogLevel::kError:
      return "ERROR";
    case LogLevel::kFatal:
      return "FATAL";
  }
  return "?";
}

const char* JsonLevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarning:
      return "warning";
    case LogLevel::kError:
      return "error";
    case LogLevel::kFatal:
      return "fatal";
  }
  return "info";
}

// The length of the valid UTF-8 sequence at text[i], or 0 when the bytes there are not one.
size_t Utf8SequenceLength(std::string_view text, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(text[k]); };
  const unsigned char lead = byte(i);
  size_t length = 0;
  uint32_t min = 0;
  if (lead < 0x80) return 1;
  if (lead >= 0xc2 && lead <= 0xdf) {
    length = 2;
    min = 0x80;
  } else if (lead >= 0xe0 && lead <= 0xef) {
    length = 3;
    min = 0x800;
  } else if (lead >= 0xf0 && lead <= 0xf4) {
    length = 4;
    min = 0x10000;
  } else {
    return 0;
  }
  if (i + length > text.size()) return 0;
  uint32_t code = lead & (0x7f >> length);
  for (size_t k = 1; k < length; ++k) {
    if ((byte(i + k) & 0xc0) != 0x80) return 0;
    code = (code << 6) | (byte(i + k) & 0x3f);
  }
  if (code < min || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff)) return 0;
  return length;
}

// `text` as a JSON string: quotes, backslashes and controls escaped, the line separators as
// \u2028/\u2029, and bytes that are not UTF-8 (peer-provided names can be anything) as U+FFFD,
// so every line is valid JSON.
void AppendJsonString(std::string& out, std::string_view text) {
  out.push_back('"');
  for (size_t i = 0; i < text.size();) {
    const auto c = static_cast<unsigned char>(text[i]);
    const size_t length = Utf8SequenceLength(text, i);
    if (length == 0) {
      out += "\\ufffd";
      ++i;
      continue;
    }
    if (length == 1) {
      if (c == '"') {
        out += "\\\"";
      } else if (c == '\\') {
        out += "\\\\";
      } else if (c == '\n') {
        out += "\\n";
      } else if (c == '\r') {
        out += "\\r";
      } else if (c == '\t') {
        out += "\\t";
      } else if (c < 0x20 || c == 0x7f) {
        absl::StrAppendFormat(&out, "\\u%04x", c);
      } else {
        out.push_back(static_cast<char>(c));
      }
    } else if (length == 3 && c == 0xe2 && static_cast<unsigned char>(text[i + 1]) == 0x80 &&
               (static_cast<unsigned char>(text[i + 2]) == 0xa8 ||
                static_cast<unsigned char>(text[i + 2]) == 0xa9)) {
      absl::StrAppendFormat(&out, "\\u%04x",
                            0x2000 + static_cast<unsigned char>(text[i + 2]) - 0x80);
    } else {
      out.append(text.substr(i, length));
    }
    i += length;
  }
  out.push_back('"');
}

// A message about one connection starts with PgBouncer's "C-0x..."/"S-0x..." prefix.
bool StartsWithConnectionPrefix(std::string_view message) {
  return message.size() > 4 && (message[0] == 'C' || message[0] == 'S') &&
         message.substr(1, 3) == "-0x";
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
void SetLogFormat(LogFormat format) { g_format.store(static_cast<int>(format)); }
void SetLogToStderr(bool enabled) { g_to_stderr.store(enabled); }

std::optional<LogFormat> ParseLogFormat(std::string_view name) {
  if (name == "text") return LogFormat::kText;
  if (name == "json") return LogFormat::kJson;
  return std::nullopt;
}

std::string FormatLogLine(LogFormat format, int64_t unix_micros, int pid, LogLevel level,
                          std::string_view component, std::string_view message) {
  const time_t seconds = static_cast<time_t>(unix_micros / 1000000);
  const int millis = static_cast<int>(unix_micros % 1000000 / 1000);
  tm parts;
  gmtime_r(&seconds, &parts);
  char date_time[32];
  if (format == LogFormat::kJson) {
    strftime(date_time, sizeof(date_time), "%Y-%m-%dT%H:%M:%S", &parts);
    std::string line = absl::StrFormat(R"({"time":"%s.%03dZ","level":"%s","pid":%d,"component":)",
                                       date_time, millis, JsonLevelName(level), pid);
    AppendJsonString(line, component);
    line += ",\"message\":";
    AppendJsonString(line, message);
    line += "}\n";
    return line;
  }
  strftime(date_time, sizeof(date_time), "%Y-%m-%d %H:%M:%S", &parts);
  const bool with_component = !component.empty() && !StartsWithConnectionPrefix(message);
  return absl::StrFormat("%s.%03d UTC [%d] %s %s%s%s\n", date_time, millis, pid, LevelName(level),
                         with_component ? component : "", with_component ? ": " : "",
                         EscapeLogMessage(message));
}
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
  const int64_t unix_micros = int64_t{tv.tv_sec} * 1000000 + tv.tv_usec;
  const auto format = static_cast<LogFormat>(g_format.load(std::memory_order_relaxed));
  const std::string line = FormatLogLine(format, unix_micros, getpid(), level, component, message);
  if (g_to_stderr.load(std::memory_order_relaxed)) fwrite(line.data(), 1, line.size(), stderr);
  if (g_syslog.load(std::memory_order_relaxed)) {
    // syslog adds its own timestamp and pid: the text line from its level on, without the
    // newline, as PgBouncer sends it.
    const std::string text =
        format == LogFormat::kText
            ? line
            : FormatLogLine(LogFormat::kText, unix_micros, getpid(), level, component, message);
    const size_t level_begin = text.find("] ") + 2;
    std::lock_guard<std::mutex> syslog_lock(g_syslog_mu);
    if (g_syslog_facility >= 0) {
      syslog(SyslogPriority(level), "%.*s", static_cast<int>(text.size() - level_begin - 1),
             text.data() + level_begin);
    }
  }
  std::lock_guard<std::mutex> lock(g_file_mu);
  if (g_file != nullptr) {
    fwrite(line.data(), 1, line.size(), g_file);
    fflush(g_file);
  }
}

}  // namespace pgfleet::common
