#include "common/log.h"

#include <sys/time.h>

#include <atomic>
#include <cstdlib>
#include <ctime>
#include <mutex>

namespace pgfleet::common {
namespace {

std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};
std::mutex g_file_mu;
FILE* g_file = nullptr;  // Guarded by g_file_mu.

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
  std::lock_guard<std::mutex> lock(g_file_mu);
  if (g_file != nullptr) {
    fwrite(line.data(), 1, line.size(), g_file);
    fflush(g_file);
  }
}

}  // namespace pgfleet::common
