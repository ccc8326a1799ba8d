// What the admin console's SHOW commands share: the result-set writer and PgBouncer's
// formatting of values (show_commands.cc, show_connections.cc).
#pragma once

#include <sys/socket.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "agent/event_loop.h"
#include "agent/net/peer_address.h"
#include "agent/pg/protocol.h"

namespace pgfleet::agent::show {

// The column types PgBouncer's admin console sends (src/pktbuf.c RowDescription): text, int4
// for counts and settings, int8 for a few 64-bit values, numeric for the statistics (so
// drivers never overflow a bigint), bytea for SHOW FDS' keys. Tools that bind columns by type
// (Go's pgx, JDBC) break on a mismatch, so each column names PgBouncer's.
enum class ColumnType { kText, kInt4, kInt8, kNumeric, kBytea };

struct Column {
  const char* name;
  ColumnType type;
};

inline constexpr ColumnType kText = ColumnType::kText;
inline constexpr ColumnType kInt4 = ColumnType::kInt4;
inline constexpr ColumnType kInt8 = ColumnType::kInt8;
inline constexpr ColumnType kNumeric = ColumnType::kNumeric;
inline constexpr ColumnType kBytea = ColumnType::kBytea;

// The type's OID and typlen in a RowDescription.
inline std::pair<int32_t, int16_t> TypeOidAndLength(ColumnType type) {
  switch (type) {
    case ColumnType::kText:
      return {25, -1};
    case ColumnType::kInt4:
      return {23, 4};
    case ColumnType::kInt8:
      return {20, 8};
    case ColumnType::kNumeric:
      return {1700, -1};
    case ColumnType::kBytea:
      return {17, -1};
  }
  return {25, -1};
}

// Accumulates one result set: RowDescription, DataRows, CommandComplete "SHOW".
class ResultSet {
 public:
  explicit ResultSet(std::vector<Column> columns) : columns_(std::move(columns)) {
    pg::MessageBuilder builder('T');
    builder.Int16(static_cast<int16_t>(columns_.size()));
    for (const Column& column : columns_) {
      builder.CString(column.name).Int32(0).Int16(0);
      const auto [oid, length] = TypeOidAndLength(column.type);
      builder.Int32(oid).Int16(length);
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

// Splits "host:port" / "[v6]:port" / "unix" / "/dir/.s.PGSQL.port" into the addr and port
// columns. A Unix socket shows as "unix" with its port, as PgBouncer shows it; the port is
// always a number (the column is int4).
inline std::pair<std::string, std::string> SplitPeer(const std::string& peer) {
  auto numeric_or_zero = [](std::string port) {
    if (port.empty() || port.find_first_not_of("0123456789") != std::string::npos)
      return std::string("0");
    return port;
  };
  if (size_t socket = peer.rfind("/.s.PGSQL."); socket != std::string::npos) {
    return {"unix", numeric_or_zero(peer.substr(socket + 10))};
  }
  size_t colon = peer.rfind(':');
  if (colon == std::string::npos) return {peer, "0"};
  std::string host = peer.substr(0, colon);
  if (host.size() > 2 && host.front() == '[') host = host.substr(1, host.size() - 2);
  return {host, numeric_or_zero(peer.substr(colon + 1))};
}

// The addr and port columns of an address. A unix socket shows as "unix" with listen_port, the
// way PgBouncer fills a unix socket's PgAddr (util.c fill_local_addr / fill_remote_addr).
inline std::pair<std::string, std::string> AddrColumns(const net::PeerAddress& address,
                                                       int listen_port) {
  auto [addr, port] = SplitPeer(address.ToString());
  if (addr == "unix") port = Num(listen_port);
  return {addr, port};
}

// This end of socket `fd`, asked of the kernel now (getsockname), in the addr and port
// columns; empty and 0 when the kernel cannot say (a closed socket).
inline std::pair<std::string, std::string> LocalAddrColumns(int fd, int listen_port) {
  sockaddr_storage local{};
  socklen_t length = sizeof(local);
  if (fd < 0 || getsockname(fd, reinterpret_cast<sockaddr*>(&local), &length) != 0) {
    return {"", "0"};
  }
  return AddrColumns(net::PeerAddress(reinterpret_cast<const sockaddr*>(&local)), listen_port);
}

// A count in an int4 column: past the type's range it shows as the largest int4, which a
// client parsing int4 still reads.
inline std::string Int4(uint64_t value) { return Num(std::min<uint64_t>(value, 2147483647u)); }

// A tracked parameter's value ("" if the connection has none).
inline std::string ParamOf(const std::vector<std::pair<std::string, std::string>>& params,
                           const char* name) {
  for (const auto& [key, value] : params) {
    if (key == name) return value;
  }
  return "";
}

}  // namespace pgfleet::agent::show
