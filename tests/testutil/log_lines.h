// Reading the daemons' log lines in tests (common/log.h writes them).
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace pgfleet::testutil {

// When a text-format log line was written: its leading "2026-12-05 22:44:05.521 UTC".
inline absl::StatusOr<absl::Time> LogLineTime(absl::string_view line) {
  const size_t zone = line.find(" UTC ");
  if (zone == absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat("no timestamp in log line '", line, "'"));
  }
  absl::Time time;
  std::string error;
  if (!absl::ParseTime("%Y-%m-%d %H:%M:%E*S", std::string(line.substr(0, zone)),
                       absl::UTCTimeZone(), &time, &error)) {
    return absl::InvalidArgumentError(
        absl::StrCat("bad timestamp in log line '", line, "': ", error));
  }
  return time;
}

}  // namespace pgfleet::testutil
