#include "common/log.h"

#include <atomic>
#include <cstdlib>
#include <ctime>
#include <mutex>
#include <sys/time.h>

namespace pgfleet::common {
namespace {

std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};
std::mutex g_file_mu;
FILE* g_file = nullptr;  // Guarded by g_file_mu.

const char* LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug: return "DEBUG";
    case LogLevel::kInfo: return "INFO";
    case LogLevel::kWarning: return "WARNING";
    case LogLevel::kError: return "ERROR";
    case LogLevel::kFatal: return "FATAL";
  }
  return "?";
}

}  // namespace

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
                                     LevelName(level), component, message);
  fwrite(line.data(), 1, line.size(), stderr);
  std::lock_guard<std::mutex> lock(g_file_mu);
  if (g_file != nullptr) {
    fwrite(line.data(), 1, line.size(), g_file);
    fflush(g_file);
  }
}

}  // namespace pgfleet::common
