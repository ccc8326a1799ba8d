// What the admin console's SHOW commands share: the result-set writer and PgBouncer's
// formatting of values (show_commands.cc, show_connections.cc).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "agent/event_loop.h"
#include "agent/pg/protocol.h"

namespace pgfleet::agent::show {

inline constexpr int32_t kTextOid = 25;
inline constexpr int32_t kInt8Oid = 20;

struct Column {
  const char* name;
  bool numeric;
};

// Accumulates one result set: RowDescription, DataRows, CommandComplete "SHOW".
class ResultSet {
 public:
  explicit ResultSet(std::vector<Column> columns) : columns_(std::move(columns)) {
    pg::MessageBuilder builder('T');
    builder.Int16(static_cast<int16_t>(columns_.size()));
    for (const Column& column : columns_) {
      builder.CString(column.name).Int32(0).Int16(0);
      builder.Int32(column.numeric ? kInt8Oid : kTextOid).Int16(column.numeric ? 8 : -1);
      builder.Int32(-1).Int16(0);
    }
    out_ = builder.Finish();
  }
  // Values in column order; a value of nullopt is SQL NULL.
  void AddRow(const std::vector<std::optional<std::string>>& values) {
    pg::MessageBuilder builder('D');
    builder.Int16(static_cast<int16_t>(values.size()));
    for (const std::optional<std::string>& value : values) {
      if (!value.has_value()) {
        builder.Int32(-1);
      } else {
        builder.Int32(static_cast<int32_t>(value->size())).Bytes(*value);
      }
    }
    out_ += builder.Finish();
  }
  std::string Finish() { return out_ + pg::CommandComplete("SHOW"); }

 private:
  std::vector<Column> columns_;
  std::string out_;
};

inline std::string Num(uint64_t value) { return absl::StrCat(value); }
inline std::string Num(int64_t value) { return absl::StrCat(value); }
inline std::string Num(int value) { return absl::StrCat(value); }
inline std::string Num(size_t value, bool) { return absl::StrCat(value); }

// A monotonic timestamp shown as wall-clock time, the way PgBouncer prints it.
inline std::string WallTime(uint64_t mono_us) {
  const uint64_t now_mono = MonotonicMicros();
  absl::Time wall = absl::Now() - absl::Microseconds(static_cast<int64_t>(now_mono - mono_us));
  return absl::FormatTime("%Y-%m-%d %H:%M:%S UTC", wall, absl::UTCTimeZone());
}

inline std::string Ptr(uint64_t id) { return absl::StrCat("0x", absl::Hex(id)); }

// Splits "host:port" / "[v6]:port" / "unix" into address and port.
inline std::pair<std::string, std::string> SplitPeer(const std::string& peer) {
  size_t colon = peer.rfind(':');
  if (colon == std::string::npos) return {peer, "0"};
  std::string host = peer.substr(0, colon);
  if (host.size() > 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  return {host, peer.substr(colon + 1)};
}

// A tracked parameter's value ("" if the connection has none).
inline std::string ParamOf(const std::vector<std::pair<std::string, std::string>>& params,
                           const char* name) {
  for (const auto& [key, value] : params) {
    if (key == name) return value;
  }
  return "";
}

}  // namespace pgfleet::agent::show
