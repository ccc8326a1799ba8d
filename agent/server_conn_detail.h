// Limits and helpers shared by the files of ServerConn (server_conn.cc, server_login.cc,
// server_internal.cc); nothing outside ServerConn uses them.
#pragma once

#include <arpa/inet.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "agent/pg/protocol.h"

namespace pgfleet::agent::server_conn_detail {

inline constexpr size_t kOutputHighWater = 256 * 1024;
// Login and internal-query messages are read whole; none is legitimately this large.
inline constexpr uint32_t kMaxLoginMessage = 1 << 20;
// Length 8, then the SSLRequest code, both big-endian.
inline std::string SslRequestPacket() {
  const uint32_t words[2] = {htonl(8), htonl(static_cast<uint32_t>(pg::kSslRequestCode))};
  return std::string(reinterpret_cast<const char*>(words), sizeof(words));
}

// PostgreSQL 15 reports about 15 parameters at login, a few more with extensions: a server that
// sends more, or more bytes of them, is not one to keep (each is kept for the server's life and
// looked up by name, so a flood would cost memory and quadratic time).
inline constexpr size_t kMaxServerParameters = 1000;
inline constexpr size_t kMaxServerParameterBytes = 1 << 20;
inline std::string TooManyParameters() {
  return absl::StrCat("server sent more than ", kMaxServerParameters, " parameters or ",
                      kMaxServerParameterBytes, " bytes of them (ParameterStatus)");
}

// Whether keeping `name` = `value` besides `params` (name/value pairs) goes over those limits.
template <typename Params>
bool ParameterLimitExceeded(const Params& params, std::string_view name, std::string_view value) {
  if (params.size() < kMaxServerParameters) {
    size_t bytes = name.size() + value.size();
    for (const auto& [known, known_value] : params) bytes += known.size() + known_value.size();
    if (bytes <= kMaxServerParameterBytes) return false;
  }
  for (const auto& param : params) {
    if (param.first == name) return false;  // Replaces a value: nothing new is kept.
  }
  return true;
}

inline constexpr char kServerLimitsQuery[] =
    "SELECT current_setting('max_connections'), "
    "current_setting('superuser_reserved_connections')";

inline std::string ErrorMessageOf(std::string_view body) {
  std::map<char, std::string> fields = pg::ParseErrorFields(body);
  std::string message = fields['M'];
  if (!fields['C'].empty()) absl::StrAppend(&message, " (SQLSTATE ", fields['C'], ")");
  return message;
}

}  // namespace pgfleet::agent::server_conn_detail
