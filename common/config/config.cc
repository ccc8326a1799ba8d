// pgbouncer.ini semantics on top of ini_parser: sections, PgBouncer's keys and their value
// syntax, [databases]/[users] connection strings. The rule throughout is that a file
// PgBouncer 1.18 loads must load here too: keys we do not implement are warnings, not errors.
#include "common/config/config.h"

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "common/config/conn_string.h"
#include "common/config/ini_parser.h"
#include "common/config/tls_handshake.h"
#include "common/log.h"
#include "common/status_macros.h"

namespace pgfleet::config {
namespace {

// ---- Value syntax. Each parser returns the reason alone; callers add file, line and key.

absl::StatusOr<int> ParseInt(absl::string_view value, int64_t min, int64_t max) {
  int64_t number = 0;
  // Decimal only: PgBouncer's strtol(..., 0) would also take "0x10" and read "010" as octal,
  // which nobody means in a pool size.
  if (!absl::SimpleAtoi(value, &number)) {
    return absl::InvalidArgumentError(absl::StrCat("invalid integer '", value, "'"));
  }
  if (number < min || number > max) {
    std::string why;
    if (max != INT_MAX) {
      why = absl::StrCat("must be between ", min, " and ", max);
    } else if (number > max) {
      why = absl::StrCat("must be at most ", max);
    } else if (min == 0) {
      why = "must not be negative";
    } else {
      why = absl::StrCat("must be at least ", min);
    }
    return absl::InvalidArgumentError(absl::StrCat("invalid value '", value, "': ", why));
  }
  return static_cast<int>(number);
}

absl::StatusOr<bool> ParseBool(absl::string_view value) {
  std::string lower = absl::AsciiStrToLower(value);
  if (lower == "1" || lower == "yes" || lower == "true" || lower == "on") return true;
  if (lower == "0" || lower == "no" || lower == "false" || lower == "off") return false;
  return absl::InvalidArgumentError(absl::StrCat(
      "invalid boolean '", value, "' (expected 0, 1, yes, no, true, false, on or off)"));
}

// PgBouncer takes (fractional) seconds; the unit suffixes are a pgfleet convenience.
absl::StatusOr<absl::Duration> ParseDuration(absl::string_view value) {
  auto invalid = [value] {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid duration '", value,
                     "' (expected seconds such as '30' or '0.5', or a number with unit "
                     "ms, s, min or h)"));
  };
  size_t end = 0;
  bool any_digit = false;
  bool seen_dot = false;
  for (; end < value.size(); ++end) {
    char c = value[end];
    if (absl::ascii_isdigit(static_cast<unsigned char>(c))) {
      any_digit = true;
    } else if (c == '.' && !seen_dot) {
      seen_dot = true;
    } else {
      break;
    }
  }
  if (!any_digit) return invalid();
  // The prefix holds only digits and one dot, so strtod cannot wander into hex, inf or nan.
  double number = std::strtod(std::string(value.substr(0, end)).c_str(), nullptr);
  std::string unit = absl::AsciiStrToLower(absl::StripLeadingAsciiWhitespace(value.substr(end)));
  absl::Duration duration;
  if (unit.empty() || unit == "s") {
    duration = absl::Seconds(number);
  } else if (unit == "ms") {
    duration = absl::Milliseconds(number);
  } else if (unit == "min") {
    duration = absl::Minutes(number);
  } else if (unit == "h") {
    duration = absl::Hours(number);
  } else {
    return invalid();
  }
  if (duration == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(absl::StrCat("invalid duration '", value, "': too large"));
  }
  return duration;
}

absl::StatusOr<PoolMode> ParsePoolMode(absl::string_view value) {
  // Case-insensitive like PgBouncer's cf_set_lookup.
  for (PoolMode mode : {PoolMode::kSession, PoolMode::kTransaction, PoolMode::kStatement}) {
    if (absl::EqualsIgnoreCase(value, PoolModeName(mode))) return mode;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("invalid pool mode '", value, "' (expected session, transaction or statement)"));
}

absl::StatusOr<TlsMode> ParseTlsMode(absl::string_view value) {
  const std::string lower = absl::AsciiStrToLower(value);
  for (TlsMode mode : {TlsMode::kDisable, TlsMode::kAllow, TlsMode::kPrefer, TlsMode::kRequire,
                       TlsMode::kVerifyCa, TlsMode::kVerifyFull}) {
    if (lower == TlsModeName(mode)) return mode;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("invalid value '", value,
                   "': expected disable, allow, prefer, require, verify-ca or verify-full"));
}

absl::StatusOr<AuthType> ParseAuthType(absl::string_view value) {
  for (AuthType type : {AuthType::kTrust, AuthType::kPlain, AuthType::kMd5, AuthType::kScramSha256,
                        AuthType::kAny, AuthType::kHba, AuthType::kCert}) {
    if (absl::EqualsIgnoreCase(value, AuthTypeName(type))) return type;
  }
  std::string lower = absl::AsciiStrToLower(value);
  // Valid for PgBouncer, so say why the file is refused rather than calling it a typo. Not a
  // warning: silently falling back to another method would change who can log in.
  if (lower == "pam" || lower == "ldap") {
    return absl::InvalidArgumentError(
        absl::StrCat("auth_type '", value,
                     "' is not supported by pgfleet (supported: trust, plain, md5, "
                     "scram-sha-256, cert, hba, any)"));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("invalid auth type '", value,
                   "' (expected trust, plain, md5, scram-sha-256, cert, hba or any)"));
}

// PgBouncer's strlist: comma-separated, blanks around names dropped, empty items skipped.
std::vector<std::string> ParseList(absl::string_view value) {
  std::vector<std::string> items;
  for (absl::string_view item : absl::StrSplit(value, ',')) {
    item = absl::StripAsciiWhitespace(item);
    if (!item.empty()) items.emplace_back(item);
  }
  return items;
}

absl::Status SetInt(absl::string_view value, int& out, int64_t min = 0, int64_t max = INT_MAX) {
  PGF_ASSIGN_OR_RETURN(out, ParseInt(value, min, max));
  return absl::OkStatus();
}

absl::Status SetBool(absl::string_view value, bool& out) {
  PGF_ASSIGN_OR_RETURN(out, ParseBool(value));
  return absl::OkStatus();
}

// A file mode as C's strtol(value, 0) reads it (PgBouncer's unix_socket_mode): "0777" octal,
// "0x1ff" hex, "511" decimal; only the permission bits.
absl::StatusOr<int> ParseFileMode(absl::string_view value) {
  const std::string text(absl::StripAsciiWhitespace(value));
  char* end = nullptr;
  errno = 0;
  const long mode = text.empty() ? -1 : std::strtol(text.c_str(), &end, 0);
  if (text.empty() || errno != 0 || *end != '\0' || mode < 0 || mode > 07777) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid file mode '", value, "' (expected octal such as 0777)"));
  }
  return static_cast<int>(mode);
}

absl::Status SetDuration(absl::string_view value, absl::Duration& out) {
  PGF_ASSIGN_OR_RETURN(out, ParseDuration(value));
  return absl::OkStatus();
}

// ---- [pgbouncer]

using Setter = absl::Status (*)(Config& config, absl::string_view value);
// Renders the field the way PgBouncer 1.18's SHOW CONFIG prints it.
using Getter = std::string (*)(const Config& config);

// PgBouncer's CF_NO_RELOAD: SET refuses the key and RELOAD keeps the old value.
constexpr bool kOnline = true;
constexpr bool kRestartOnly = false;

struct Option {
  absl::string_view name;
  Setter set;
  Getter get;
  bool changeable = kOnline;
  // SHOW CONFIG's default column when it is not the rendering of a default Config.
  const char* default_override = nullptr;
};

// PgBouncer's formatting of each value kind (libusual's cf_get_*).
std::string FormatBool(bool value) { return value ? "1" : "0"; }

std::string FormatSeconds(absl::Duration value) {
  // cf_get_time_usec: microseconds as seconds through "%g", so 600 s is "600", 500 ms "0.5".
  return absl::StrFormat("%g", static_cast<double>(absl::ToInt64Microseconds(value)) / 1e6);
}

// Setters and getters for plain fields, instantiated per field so the table below stays
// declarative.
template <std::string Config::*kField>
constexpr Option StringOption(absl::string_view name, bool changeable = kOnline) {
  return {name,
          [](Config& c, absl::string_view v) {
            c.*kField = std::string(v);
            return absl::OkStatus();
          },
          [](const Config& c) { return c.*kField; }, changeable};
}

template <std::vector<std::string> Config::*kField>
constexpr Option ListOption(absl::string_view name) {
  return {name,
          [](Config& c, absl::string_view v) {
            c.*kField = ParseList(v);
            return absl::OkStatus();
          },
          [](const Config& c) { return absl::StrJoin(c.*kField, ","); }};
}

template <int Config::*kField, int64_t kMin = 0, int64_t kMax = INT_MAX>
constexpr Option IntOption(absl::string_view name, bool changeable = kOnline) {
  return {name, [](Config& c, absl::string_view v) { return SetInt(v, c.*kField, kMin, kMax); },
          [](const Config& c) { return absl::StrCat(c.*kField); }, changeable};
}

template <bool Config::*kField>
constexpr Option BoolOption(absl::string_view name) {
  return {name, [](Config& c, absl::string_view v) { return SetBool(v, c.*kField); },
          [](const Config& c) { return FormatBool(c.*kField); }};
}

template <absl::Duration Config::*kField>
constexpr Option DurationOption(absl::string_view name) {
  return {name, [](Config& c, absl::string_view v) { return SetDuration(v, c.*kField); },
          [](const Config& c) { return FormatSeconds(c.*kField); }};
}

// SET applies them: the agent rebuilds the side's TLS context (Agent::ReplaceConfig).
constexpr bool kTlsSetting = kOnline;

// A TLS handshake key kept as written once `kCheck` (tls_handshake.h) accepts it, so a bad value
// is refused at its line, by SET and by RELOAD rather than when the context is built.
template <std::string Config::*kField, absl::Status (*kCheck)(absl::string_view)>
constexpr Option TlsHandshakeOption(absl::string_view name) {
  return {name,
          [](Config& c, absl::string_view v) {
            if (absl::Status valid = kCheck(v); !valid.ok()) {
              return absl::InvalidArgumentError(
                  absl::StrCat("invalid value '", v, "': ", valid.message()));
            }
            c.*kField = std::string(v);
            return absl::OkStatus();
          },
          [](const Config& c) { return c.*kField; }, kTlsSetting};
}

template <TlsMode Config::*kField>
constexpr Option TlsModeOption(absl::string_view name) {
  return {name,
          [](Config& c, absl::string_view v) {
            PGF_ASSIGN_OR_RETURN(c.*kField, ParseTlsMode(v));
            return absl::OkStatus();
          },
          [](const Config& c) { return std::string(TlsModeName(c.*kField)); }, kTlsSetting};
}

// Changeability follows PgBouncer 1.18's SHOW CONFIG, not intuition: logfile and
// max_packet_size are changeable there, pidfile and pkt_buf are not.
const Option kOptions[] = {
    StringOption<&Config::listen_addr>("listen_addr", kRestartOnly),
    IntOption<&Config::listen_port, 1, 65535>("listen_port", kRestartOnly),
    // PgBouncer's CF_NO_RELOAD for SET; a RELOAD applies it to the listeners (agent_listeners.cc).
    IntOption<&Config::listen_backlog>("listen_backlog", kRestartOnly),
    StringOption<&Config::unix_socket_dir>("unix_socket_dir", kRestartOnly),
    {"auth_type",
     [](Config& c, absl::string_view v) {
       PGF_ASSIGN_OR_RETURN(c.auth_type, ParseAuthType(v));
       return absl::OkStatus();
     },
     [](const Config& c) { return std::string(AuthTypeName(c.auth_type)); }},
    StringOption<&Config::auth_file>("auth_file"),
    StringOption<&Config::auth_hba_file>("auth_hba_file"),
    StringOption<&Config::auth_ident_file>("auth_ident_file"),
    StringOption<&Config::auth_user>("auth_user"),
    StringOption<&Config::auth_query>("auth_query"),
    StringOption<&Config::auth_dbname>("auth_dbname"),
    ListOption<&Config::admin_users>("admin_users"),
    ListOption<&Config::stats_users>("stats_users"),
    {"pool_mode",
     [](Config& c, absl::string_view v) {
       PGF_ASSIGN_OR_RETURN(c.pool_mode, ParsePoolMode(v));
       return absl::OkStatus();
     },
     [](const Config& c) { return std::string(PoolModeName(c.pool_mode)); }},
    IntOption<&Config::default_pool_size>("default_pool_size"),
    IntOption<&Config::min_pool_size>("min_pool_size"),
    IntOption<&Config::reserve_pool_size>("reserve_pool_size"),
    DurationOption<&Config::reserve_pool_timeout>("reserve_pool_timeout"),
    IntOption<&Config::max_client_conn>("max_client_conn"),
    IntOption<&Config::max_db_connections>("max_db_connections"),
    IntOption<&Config::max_user_connections>("max_user_connections"),
    // PgBouncer 1.24's client-side limits; [databases] / [users] entries override them.
    IntOption<&Config::max_db_client_connections>("max_db_client_connections"),
    IntOption<&Config::max_user_client_connections>("max_user_client_connections"),
    StringOption<&Config::server_reset_query>("server_reset_query"),
    BoolOption<&Config::server_reset_query_always>("server_reset_query_always"),
    BoolOption<&Config::server_fast_close>("server_fast_close"),
    BoolOption<&Config::server_round_robin>("server_round_robin"),
    StringOption<&Config::server_check_query>("server_check_query"),
    DurationOption<&Config::server_check_delay>("server_check_delay"),
    DurationOption<&Config::server_lifetime>("server_lifetime"),
    DurationOption<&Config::server_idle_timeout>("server_idle_timeout"),
    DurationOption<&Config::server_connect_timeout>("server_connect_timeout"),
    DurationOption<&Config::server_login_retry>("server_login_retry"),
    DurationOption<&Config::client_login_timeout>("client_login_timeout"),
    DurationOption<&Config::autodb_idle_timeout>("autodb_idle_timeout"),
    DurationOption<&Config::pool_idle_timeout>("pool_idle_timeout"),
    DurationOption<&Config::client_idle_timeout>("client_idle_timeout"),
    DurationOption<&Config::query_timeout>("query_timeout"),
    DurationOption<&Config::query_wait_timeout>("query_wait_timeout"),
    DurationOption<&Config::idle_transaction_timeout>("idle_transaction_timeout"),
    DurationOption<&Config::transaction_timeout>("transaction_timeout"),
    ListOption<&Config::ignore_startup_parameters>("ignore_startup_parameters"),
    IntOption<&Config::query_wait_notify>("query_wait_notify"),
    // PgBouncer's CF_NO_RELOAD.
    {"disable_pqexec", [](Config& c, absl::string_view v) { return SetBool(v, c.disable_pqexec); },
     [](const Config& c) { return FormatBool(c.disable_pqexec); }, kRestartOnly},
    StringOption<&Config::login_notify_message>("login_notify_message"),
    BoolOption<&Config::application_name_add_host>("application_name_add_host"),
    // Root is given up at start, so only a restart can switch to another user.
    StringOption<&Config::run_as_user>("user", kRestartOnly),
    ListOption<&Config::track_extra_parameters>("track_extra_parameters"),
    IntOption<&Config::scram_iterations, 1, INT_MAX>("scram_iterations"),
    {"unix_socket_mode",
     [](Config& c, absl::string_view v) {
       // libusual's cf_set_int reads it with strtol base 0: "0777" is octal, "511" decimal.
       PGF_ASSIGN_OR_RETURN(c.unix_socket_mode, ParseFileMode(v));
       return absl::OkStatus();
     },
     [](const Config& c) { return absl::StrCat(c.unix_socket_mode); }, kRestartOnly, "0777"},
    StringOption<&Config::unix_socket_group>("unix_socket_group", kRestartOnly),
    IntOption<&Config::max_packet_size>("max_packet_size"),
    IntOption<&Config::max_prepared_statements>("max_prepared_statements"),
    IntOption<&Config::auth_failure_burst>("auth_failure_burst"),
    DurationOption<&Config::auth_failure_max_delay>("auth_failure_max_delay"),
    DurationOption<&Config::handover_drain_timeout>("handover_drain_timeout"),
    IntOption<&Config::pkt_buf, 1, INT_MAX>("pkt_buf", kRestartOnly),
    BoolOption<&Config::tcp_keepalive>("tcp_keepalive"),
    IntOption<&Config::tcp_user_timeout>("tcp_user_timeout"),
    IntOption<&Config::tcp_socket_buffer>("tcp_socket_buffer"),
    // Set on the listening sockets, so only a restart changes it.
    {"tcp_defer_accept",
     [](Config& c, absl::string_view v) { return SetBool(v, c.tcp_defer_accept); },
     [](const Config& c) { return FormatBool(c.tcp_defer_accept); }, kRestartOnly},
    IntOption<&Config::tcp_keepcnt>("tcp_keepcnt"),
    IntOption<&Config::tcp_keepidle>("tcp_keepidle"),
    IntOption<&Config::tcp_keepintvl>("tcp_keepintvl"),
    StringOption<&Config::logfile>("logfile"),
    StringOption<&Config::pidfile>("pidfile", kRestartOnly),
    BoolOption<&Config::log_connections>("log_connections"),
    BoolOption<&Config::log_disconnections>("log_disconnections"),
    BoolOption<&Config::log_pooler_errors>("log_pooler_errors"),
    BoolOption<&Config::log_stats>("log_stats"),
    {"log_format",
     [](Config& c, absl::string_view v) {
       if (!common::ParseLogFormat(std::string_view(v.data(), v.size())).has_value()) {
         return absl::InvalidArgumentError(
             absl::StrCat("invalid value '", v, "': expected text or json"));
       }
       c.log_format = std::string(v);
       return absl::OkStatus();
     },
     [](const Config& c) { return c.log_format; }},
    BoolOption<&Config::syslog>("syslog"),
    StringOption<&Config::syslog_ident>("syslog_ident"),
    {"syslog_facility",
     [](Config& c, absl::string_view v) {
       // PgBouncer's names only, so a typo is an error rather than logs that go nowhere.
       if (!common::SyslogFacilityCode(std::string_view(v.data(), v.size())).has_value()) {
         return absl::InvalidArgumentError(absl::StrCat(
             "invalid value '", v, "': expected auth, authpriv, daemon, user or local0-local7"));
       }
       c.syslog_facility = std::string(v);
       return absl::OkStatus();
     },
     [](const Config& c) { return c.syslog_facility; }},
    // TLS keys change with SET (one at a time, in force once they work together) and RELOAD.
    TlsModeOption<&Config::client_tls_sslmode>("client_tls_sslmode"),
    StringOption<&Config::client_tls_cert_file>("client_tls_cert_file", kTlsSetting),
    StringOption<&Config::client_tls_key_file>("client_tls_key_file", kTlsSetting),
    StringOption<&Config::client_tls_ca_file>("client_tls_ca_file", kTlsSetting),
    StringOption<&Config::client_tls_protocols>("client_tls_protocols", kTlsSetting),
    StringOption<&Config::client_tls_ciphers>("client_tls_ciphers", kTlsSetting),
    TlsHandshakeOption<&Config::client_tls13_ciphers, &CheckTls13Ciphers>("client_tls13_ciphers"),
    TlsHandshakeOption<&Config::client_tls_ecdhcurve, &CheckEcdhCurve>("client_tls_ecdhcurve"),
    TlsHandshakeOption<&Config::client_tls_dheparams, &CheckDheParams>("client_tls_dheparams"),
    TlsModeOption<&Config::server_tls_sslmode>("server_tls_sslmode"),
    StringOption<&Config::server_tls_cert_file>("server_tls_cert_file", kTlsSetting),
    StringOption<&Config::server_tls_key_file>("server_tls_key_file", kTlsSetting),
    StringOption<&Config::server_tls_ca_file>("server_tls_ca_file", kTlsSetting),
    StringOption<&Config::server_tls_protocols>("server_tls_protocols", kTlsSetting),
    StringOption<&Config::server_tls_ciphers>("server_tls_ciphers", kTlsSetting),
    TlsHandshakeOption<&Config::server_tls13_ciphers, &CheckTls13Ciphers>("server_tls13_ciphers"),
    {"stats_period",
     [](Config& c, absl::string_view v) {
       PGF_ASSIGN_OR_RETURN(absl::Duration period, ParseDuration(v));
       // A stats timer with period 0 would spin.
       if (period <= absl::ZeroDuration()) {
         return absl::InvalidArgumentError(
             absl::StrCat("invalid value '", v, "': must be greater than 0"));
       }
       c.stats_period = period;
       return absl::OkStatus();
     },
     [](const Config& c) { return FormatSeconds(c.stats_period); }},
    {"verbose",
     [](Config& c, absl::string_view v) {
       // PgBouncer's verbose is a level (0, 1, 2, ...); any level above 0 turns on debug logs.
       PGF_ASSIGN_OR_RETURN(int level, ParseInt(v, 0, INT_MAX));
       c.verbose = level > 0;
       return absl::OkStatus();
     },
     [](const Config& c) { return FormatBool(c.verbose); }, kOnline,
     // PgBouncer's verbose has no default string (the level starts at 0 in code), so its
     // default column is empty.
     ""},
};

const Option* FindOption(absl::string_view key) {
  for (const Option& option : kOptions) {
    if (option.name == key) return &option;
  }
  return nullptr;
}

// PgBouncer 1.25 settings pgfleet loads without acting on them, and why (see config.h).
const char kOneProcess[] =
    "pgfleet runs one process per listener (online restart is its own hand-over)";
const char kResolver[] = "host names are resolved by the system resolver on each server connect";
const char kWindows[] = "Windows service registration only";

const std::vector<UnsupportedSetting> kUnsupportedSettings = {
    {"pgbouncer", "auth_ldap_options", "", "auth_type ldap is not supported"},
    {"pgbouncer", "cancel_wait_timeout", "10",
     "cancel requests are forwarded at once on their own connection, never queued"},
    {"pgbouncer", "conffile", "", "the file is the one named on the command line"},
    {"pgbouncer", "dns_max_ttl", "15", kResolver},
    {"pgbouncer", "dns_nxdomain_ttl", "15", kResolver},
    {"pgbouncer", "dns_zone_check_period", "0", kResolver},
    {"pgbouncer", "job_name", "pgbouncer", kWindows},
    {"pgbouncer", "peer_id", "0", kOneProcess},
    {"pgbouncer", "resolv_conf", "", kResolver},
    {"pgbouncer", "sbuf_loopcnt", "5", "the event loop bounds the work per connection itself"},
    {"pgbouncer", "service_name", "pgbouncer", kWindows},
    {"pgbouncer", "so_reuseport", "0", kOneProcess},
    {"pgbouncer", "suspend_timeout", "10", kOneProcess},
};

const UnsupportedSetting* FindUnsupported(absl::string_view section, absl::string_view key) {
  for (const UnsupportedSetting& setting : kUnsupportedSettings) {
    if (setting.section == section && setting.key == key) return &setting;
  }
  return nullptr;
}

std::string UnsupportedWarning(const UnsupportedSetting& setting) {
  return absl::StrCat("is not supported by pgfleet (", setting.reason, "); ignored");
}

template <typename Range>
bool Contains(const Range& range, absl::string_view name) {
  return std::find(std::begin(range), std::end(range), name) != std::end(range);
}

std::string Location(const IniEntry& entry) { return absl::StrCat(entry.file, ":", entry.line); }

absl::Status ApplyOption(const IniEntry& entry, Config& config) {
  // PgBouncer matches keys exactly; case-folding only accepts more files.
  std::string key = absl::AsciiStrToLower(entry.key);
  if (const Option* option = FindOption(key)) {
    absl::Status status = option->set(config, entry.value);
    if (!status.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(Location(entry), ": key '", key, "': ", status.message()));
    }
    config.locations[key] = Location(entry);
    return absl::OkStatus();
  }
  if (const UnsupportedSetting* unsupported = FindUnsupported("pgbouncer", key)) {
    config.unsupported_values[key] = entry.value;
    config.warnings.push_back(
        absl::StrCat(Location(entry), ": key '", key, "' ", UnsupportedWarning(*unsupported)));
  } else {
    config.warnings.push_back(
        absl::StrCat(Location(entry), ": unknown key '", entry.key, "' in [pgbouncer]; ignored"));
  }
  return absl::OkStatus();
}

// ---- [databases] and [users]: libpq-style strings (conn_string.h).

absl::Status SetOptionalInt(absl::string_view value, std::optional<int>& out) {
  PGF_ASSIGN_OR_RETURN(out, ParseInt(value, 0, INT_MAX));
  return absl::OkStatus();
}

absl::Status SetOptionalPoolMode(absl::string_view value, std::optional<PoolMode>& out) {
  PGF_ASSIGN_OR_RETURN(out, ParsePoolMode(value));
  return absl::OkStatus();
}

// PgBouncer's per-database and per-user query_wait_timeout: seconds, or -1 for "not set".
absl::Status SetOptionalDuration(absl::string_view value, std::optional<absl::Duration>& out) {
  if (value == "-1") {
    out.reset();
    return absl::OkStatus();
  }
  PGF_ASSIGN_OR_RETURN(out, ParseDuration(value));
  return absl::OkStatus();
}

// `host=a,b,c`: kept as written (SHOW DATABASES shows it so); Endpoints() splits it. An empty
// entry would make PgBouncer's host count and its list disagree: refused.
absl::Status SetHostList(absl::string_view value, DatabaseConfig& db) {
  for (absl::string_view host : absl::StrSplit(value, ',')) {
    if (absl::StripAsciiWhitespace(host).empty()) {
      return absl::InvalidArgumentError(absl::StrCat("empty host in the list '", value, "'"));
    }
  }
  db.host = std::string(value);
  return absl::OkStatus();
}

// `port=5432` for every host, or `port=5432,5433` one per host (checked against the host list
// once the whole entry is read: the two may come in either order).
absl::Status SetPortList(absl::string_view value, DatabaseConfig& db) {
  std::vector<int> ports;
  for (absl::string_view port : absl::StrSplit(value, ',')) {
    PGF_ASSIGN_OR_RETURN(int number, ParseInt(absl::StripAsciiWhitespace(port), 1, 65535));
    ports.push_back(number);
  }
  db.port = ports.front();
  if (ports.size() == 1) ports.clear();
  db.ports = std::move(ports);
  return absl::OkStatus();
}

absl::Status SetTargetSessionAttrs(absl::string_view value, TargetSessionAttrs& out) {
  for (TargetSessionAttrs attrs :
       {TargetSessionAttrs::kAny, TargetSessionAttrs::kReadWrite, TargetSessionAttrs::kReadOnly,
        TargetSessionAttrs::kPrimary, TargetSessionAttrs::kStandby}) {
    if (value == TargetSessionAttrsName(attrs)) {
      out = attrs;
      return absl::OkStatus();
    }
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "invalid value '", value,
      "' (expected any, read-write, read-only, primary or standby; prefer-standby is not "
      "supported)"));
}

absl::Status SetLoadBalanceHosts(absl::string_view value, LoadBalanceHosts& out) {
  if (value == "round-robin") {
    out = LoadBalanceHosts::kRoundRobin;
  } else if (value == "disable") {
    out = LoadBalanceHosts::kDisable;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid value '", value, "' (expected round-robin or disable)"));
  }
  return absl::OkStatus();
}

size_t HostCount(const DatabaseConfig& db) {
  return db.host.empty() ? 1
                         : static_cast<size_t>(std::count(db.host.begin(), db.host.end(), ',')) + 1;
}

// Returns the reason only; `ignored` is the entry of a parameter accepted without effect.
absl::Status ApplyDatabaseParam(const ConnParam& p, DatabaseConfig& db,
                                const UnsupportedSetting*& ignored) {
  ignored = nullptr;
  const std::string& v = p.value;
  const std::string& k = p.key;
  absl::Status status;
  if (k == "host") {
    status = SetHostList(v, db);
  } else if (k == "port") {
    status = SetPortList(v, db);
  } else if (k == "load_balance_hosts") {
    status = SetLoadBalanceHosts(v, db.load_balance_hosts);
  } else if (k == "target_session_attrs") {
    status = SetTargetSessionAttrs(v, db.target_session_attrs);
  } else if (k == "dbname") {
    db.dbname = v;
  } else if (k == "user") {
    db.user = v;
  } else if (k == "password") {
    db.password = v;
  } else if (k == "pool_size") {
    status = SetOptionalInt(v, db.pool_size);
  } else if (k == "min_pool_size") {
    status = SetOptionalInt(v, db.min_pool_size);
  } else if (k == "reserve_pool" || k == "reserve_pool_size") {
    // reserve_pool is 1.18's spelling; later PgBouncer releases also take reserve_pool_size.
    status = SetOptionalInt(v, db.reserve_pool);
  } else if (k == "pool_mode") {
    status = SetOptionalPoolMode(v, db.pool_mode);
  } else if (k == "max_db_connections") {
    status = SetOptionalInt(v, db.max_db_connections);
  } else if (k == "max_db_client_connections") {
    status = SetOptionalInt(v, db.max_db_client_connections);
  } else if (k == "query_wait_timeout") {
    status = SetOptionalDuration(v, db.query_wait_timeout);
  } else if (k == "server_lifetime") {
    status = SetOptionalDuration(v, db.server_lifetime);
    // PgBouncer 1.24 stores 0 for "not set": the [pgbouncer] value applies.
    if (status.ok() && db.server_lifetime == absl::ZeroDuration()) db.server_lifetime.reset();
  } else if (k == "connect_query") {
    db.connect_query = v;
  } else if (k == "client_encoding") {
    db.client_encoding = v;
  } else if (k == "datestyle") {
    db.datestyle = v;
  } else if (k == "timezone") {
    db.timezone = v;
  } else if (k == "application_name") {
    db.application_name = v;
  } else if (k == "auth_user") {
    db.auth_user = v;
  } else if (k == "auth_query") {
    db.auth_query = v;
  } else if (k == "auth_dbname") {
    db.auth_dbname = v;
  } else if ((ignored = FindUnsupported("databases", k)) != nullptr) {
  } else if (FindOption(k) != nullptr) {
    // Easy to mistake for a per-database override; say so rather than just "unknown".
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown parameter '", k, "': it is a [pgbouncer] setting, not a per-database one"));
  } else {
    return absl::InvalidArgumentError(absl::StrCat("unknown parameter '", k, "'"));
  }
  if (!status.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("key '", k, "': ", status.message()));
  }
  return absl::OkStatus();
}

absl::Status ApplyDatabase(const IniEntry& entry, Config& config) {
  std::string where = absl::StrCat(Location(entry), ": database '", entry.key, "'");
  // PgBouncer's admin console answers to this name; an entry would be unreachable.
  if (entry.key == "pgbouncer") {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": the name is reserved for the admin console"));
  }
  absl::StatusOr<std::vector<ConnParam>> params = SplitConnString(entry.value);
  if (!params.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": ", params.status().message()));
  }
  DatabaseConfig db;
  db.name = entry.key;
  for (const ConnParam& param : *params) {
    const UnsupportedSetting* ignored = nullptr;
    absl::Status status = ApplyDatabaseParam(param, db, ignored);
    if (!status.ok())
      return absl::InvalidArgumentError(absl::StrCat(where, ": ", status.message()));
    if (ignored != nullptr) {
      config.warnings.push_back(
          absl::StrCat(where, ": parameter '", param.key, "' ", UnsupportedWarning(*ignored)));
    }
  }
  if (!db.ports.empty() && db.ports.size() != HostCount(db)) {
    const size_t hosts = HostCount(db);
    return absl::InvalidArgumentError(absl::StrCat(where, ": ", db.ports.size(), " ports for ",
                                                   hosts, hosts == 1 ? " host" : " hosts",
                                                   " (give one port, or one per host)"));
  }
  // A repeated name replaces the earlier entry, as in PgBouncer.
  config.databases[db.name] = std::move(db);
  return absl::OkStatus();
}

absl::Status ApplyUser(const IniEntry& entry, Config& config) {
  std::string where = absl::StrCat(Location(entry), ": user '", entry.key, "'");
  absl::StatusOr<std::vector<ConnParam>> params = SplitConnString(entry.value);
  if (!params.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": ", params.status().message()));
  }
  UserConfig user;
  user.name = entry.key;
  for (const ConnParam& p : *params) {
    absl::Status status;
    if (p.key == "pool_mode") {
      status = SetOptionalPoolMode(p.value, user.pool_mode);
    } else if (p.key == "max_user_connections") {
      status = SetOptionalInt(p.value, user.max_user_connections);
    } else if (p.key == "pool_size") {
      status = SetOptionalInt(p.value, user.pool_size);
    } else if (p.key == "reserve_pool_size" || p.key == "reserve_pool") {
      status = SetOptionalInt(p.value, user.reserve_pool_size);
    } else if (p.key == "max_user_client_connections") {
      status = SetOptionalInt(p.value, user.max_user_client_connections);
    } else if (p.key == "query_wait_timeout") {
      status = SetOptionalDuration(p.value, user.query_wait_timeout);
    } else if (p.key == "client_idle_timeout") {
      status = SetOptionalDuration(p.value, user.client_idle_timeout);
    } else if (p.key == "idle_transaction_timeout") {
      status = SetOptionalDuration(p.value, user.idle_transaction_timeout);
    } else if (p.key == "query_timeout") {
      status = SetOptionalDuration(p.value, user.query_timeout);
    } else if (p.key == "transaction_timeout") {
      status = SetOptionalDuration(p.value, user.transaction_timeout);
    } else if (const UnsupportedSetting* ignored = FindUnsupported("users", p.key)) {
      config.warnings.push_back(
          absl::StrCat(where, ": parameter '", p.key, "' ", UnsupportedWarning(*ignored)));
    } else if (FindOption(p.key) != nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": unknown parameter '", p.key,
                       "': it is a [pgbouncer] setting, not a per-user one"));
    } else {
      return absl::InvalidArgumentError(absl::StrCat(where, ": unknown parameter '", p.key, "'"));
    }
    if (!status.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": key '", p.key, "': ", status.message()));
    }
  }
  config.users[user.name] = std::move(user);
  return absl::OkStatus();
}

}  // namespace

std::vector<ServerEndpoint> Endpoints(const DatabaseConfig& db) {
  if (db.host.empty()) return {ServerEndpoint{"", db.port}};
  std::vector<ServerEndpoint> endpoints;
  for (absl::string_view host : absl::StrSplit(db.host, ',')) {
    const size_t index = endpoints.size();
    // A list the parser checked pairs up; anything else (a hand-built entry) uses the first.
    const int port = index < db.ports.size() ? db.ports[index] : db.port;
    endpoints.push_back(ServerEndpoint{std::string(absl::StripAsciiWhitespace(host)), port});
  }
  return endpoints;
}

std::string EndpointAddress(const ServerEndpoint& endpoint) {
  if (endpoint.host.empty() || endpoint.host[0] == '/') {
    return absl::StrCat(endpoint.host.empty() ? "/var/run/postgresql" : endpoint.host, "/.s.PGSQL.",
                        endpoint.port);
  }
  return absl::StrCat(endpoint.host, ":", endpoint.port);
}

std::string ServerAddress(const DatabaseConfig& db) {
  return EndpointAddress(Endpoints(db).front());
}

const char* TargetSessionAttrsName(TargetSessionAttrs attrs) {
  switch (attrs) {
    case TargetSessionAttrs::kAny:
      return "any";
    case TargetSessionAttrs::kReadWrite:
      return "read-write";
    case TargetSessionAttrs::kReadOnly:
      return "read-only";
    case TargetSessionAttrs::kPrimary:
      return "primary";
    case TargetSessionAttrs::kStandby:
      return "standby";
  }
  return "any";
}

const char* LoadBalanceHostsName(LoadBalanceHosts mode) {
  return mode == LoadBalanceHosts::kDisable ? "disable" : "round-robin";
}

std::map<std::string, int> MaxServerConnectionsByAddress(const Config& config) {
  std::map<std::string, int> by_address;
  for (const auto& [name, db] : config.databases) {
    if (name == "*") continue;
    // A forced user's [users] entry sizes the entry's one pool, as in PgBouncer.
    int connections = config.PoolSizeFor(db, db.user) + config.ReservePoolSizeFor(db, db.user);
    const int cap = db.max_db_connections.value_or(config.max_db_connections);
    if (cap > 0) connections = std::min(connections, cap);
    for (const ServerEndpoint& endpoint : Endpoints(db)) {
      by_address[EndpointAddress(endpoint)] += connections;
    }
  }
  return by_address;
}

const char* TlsModeName(TlsMode mode) {
  switch (mode) {
    case TlsMode::kDisable:
      return "disable";
    case TlsMode::kAllow:
      return "allow";
    case TlsMode::kPrefer:
      return "prefer";
    case TlsMode::kRequire:
      return "require";
    case TlsMode::kVerifyCa:
      return "verify-ca";
    case TlsMode::kVerifyFull:
      return "verify-full";
  }
  return "?";
}

const char* PoolModeName(PoolMode mode) {
  switch (mode) {
    case PoolMode::kSession:
      return "session";
    case PoolMode::kTransaction:
      return "transaction";
    case PoolMode::kStatement:
      return "statement";
  }
  return "unknown";
}

const char* AuthTypeName(AuthType type) {
  switch (type) {
    case AuthType::kTrust:
      return "trust";
    case AuthType::kPlain:
      return "plain";
    case AuthType::kMd5:
      return "md5";
    case AuthType::kScramSha256:
      return "scram-sha-256";
    case AuthType::kAny:
      return "any";
    case AuthType::kHba:
      return "hba";
    case AuthType::kCert:
      return "cert";
  }
  return "unknown";
}

std::optional<DatabaseConfig> Config::FindDatabase(const std::string& name) const {
  auto it = databases.find(name);
  if (it == databases.end()) it = databases.find("*");
  if (it == databases.end()) return std::nullopt;
  DatabaseConfig db = it->second;
  db.name = name;
  // The fallback entry's own dbname (if any) wins, as with PgBouncer's autodb connstr.
  if (db.dbname.empty()) db.dbname = name;
  return db;
}

const std::vector<UnsupportedSetting>& UnsupportedSettings() { return kUnsupportedSettings; }

const std::string& Config::AuthUserFor(const DatabaseConfig& db) const {
  return db.auth_user.empty() ? auth_user : db.auth_user;
}

const std::string& Config::AuthQueryFor(const DatabaseConfig& db) const {
  return db.auth_query.empty() ? auth_query : db.auth_query;
}

std::string Config::AuthDbnameFor(const DatabaseConfig& db) const {
  if (!db.auth_dbname.empty()) return db.auth_dbname;
  return auth_dbname.empty() ? db.name : auth_dbname;
}

bool Config::UsesAuthQuery() const {
  if (!auth_user.empty()) return true;
  for (const auto& [name, db] : databases) {
    if (!db.auth_user.empty()) return true;
  }
  return false;
}

const UnsupportedSetting* FindUnsupportedSetting(const std::string& section,
                                                 const std::string& key) {
  return FindUnsupported(section, key);
}

int Config::PoolSizeFor(const DatabaseConfig& db, const std::string& user) const {
  if (const UserConfig* entry = FindUser(user); entry && entry->pool_size) return *entry->pool_size;
  return db.pool_size.value_or(default_pool_size);
}

int Config::ReservePoolSizeFor(const DatabaseConfig& db, const std::string& user) const {
  if (const UserConfig* entry = FindUser(user); entry && entry->reserve_pool_size) {
    return *entry->reserve_pool_size;
  }
  return db.reserve_pool.value_or(reserve_pool_size);
}

PoolMode Config::PoolModeFor(const DatabaseConfig& db, const std::string& user) const {
  if (const UserConfig* entry = FindUser(user); entry && entry->pool_mode) return *entry->pool_mode;
  return db.pool_mode.value_or(pool_mode);
}

absl::Duration Config::QueryWaitTimeoutFor(const DatabaseConfig& db,
                                           const std::string& user) const {
  if (const UserConfig* entry = FindUser(user); entry && entry->query_wait_timeout) {
    return *entry->query_wait_timeout;
  }
  return db.query_wait_timeout.value_or(query_wait_timeout);
}

absl::Duration Config::ServerLifetimeFor(const DatabaseConfig& db) const {
  return db.server_lifetime.value_or(server_lifetime);
}

int Config::MaxDbClientConnectionsFor(const DatabaseConfig& db) const {
  return db.max_db_client_connections.value_or(max_db_client_connections);
}

int Config::MaxUserClientConnectionsFor(const std::string& user) const {
  if (const UserConfig* entry = FindUser(user); entry && entry->max_user_client_connections) {
    return *entry->max_user_client_connections;
  }
  return max_user_client_connections;
}

namespace {

// PgBouncer's per-user timeout rule (janitor.c): the user's value wins only when above 0.
absl::Duration UserTimeout(const UserConfig* entry,
                           std::optional<absl::Duration> UserConfig::*field,
                           absl::Duration global) {
  if (entry != nullptr && (entry->*field).has_value() && *(entry->*field) > absl::ZeroDuration()) {
    return *(entry->*field);
  }
  return global;
}

}  // namespace

absl::Duration Config::ClientIdleTimeoutFor(const std::string& user) const {
  return UserTimeout(FindUser(user), &UserConfig::client_idle_timeout, client_idle_timeout);
}

absl::Duration Config::IdleTransactionTimeoutFor(const std::string& user) const {
  return UserTimeout(FindUser(user), &UserConfig::idle_transaction_timeout,
                     idle_transaction_timeout);
}

absl::Duration Config::QueryTimeoutFor(const std::string& user) const {
  return UserTimeout(FindUser(user), &UserConfig::query_timeout, query_timeout);
}

absl::Duration Config::TransactionTimeoutFor(const std::string& user) const {
  return UserTimeout(FindUser(user), &UserConfig::transaction_timeout, transaction_timeout);
}

const UserConfig* Config::FindUser(const std::string& name) const {
  auto it = users.find(name);
  return it == users.end() ? nullptr : &it->second;
}

std::string Config::Where(const std::string& key) const {
  auto it = locations.find(key);
  return it == locations.end() ? path : it->second;
}

bool Config::IsAdminUser(const std::string& user) const { return Contains(admin_users, user); }

// Only stats_users: admin_users get the stats commands too, but the caller checks that, so
// this stays a plain membership test.
bool Config::IsStatsUser(const std::string& user) const { return Contains(stats_users, user); }

// Settings that only make sense together; the files themselves are read when the agent
// builds its TLS contexts, so a RELOAD can name a missing certificate.
static absl::Status ValidateTls(const Config& config, const std::string& path) {
  if (config.client_tls_sslmode != TlsMode::kDisable &&
      (config.client_tls_cert_file.empty() || config.client_tls_key_file.empty())) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": client_tls_sslmode = ", TlsModeName(config.client_tls_sslmode),
                     " needs client_tls_cert_file and client_tls_key_file"));
  }
  if ((config.client_tls_sslmode == TlsMode::kVerifyCa ||
       config.client_tls_sslmode == TlsMode::kVerifyFull) &&
      config.client_tls_ca_file.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": client_tls_sslmode = ", TlsModeName(config.client_tls_sslmode),
                     " verifies client certificates and needs client_tls_ca_file"));
  }
  if ((config.server_tls_sslmode == TlsMode::kVerifyCa ||
       config.server_tls_sslmode == TlsMode::kVerifyFull) &&
      config.server_tls_ca_file.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": server_tls_sslmode = ", TlsModeName(config.server_tls_sslmode),
                     " verifies the server's certificate and needs server_tls_ca_file"));
  }
  // PgBouncer's sbuf_tls_setup: cert logins need every client certificate verified. It asks
  // for verify-full exactly; verify-ca checks client certificates the same way.
  const bool verifies_clients = config.client_tls_sslmode == TlsMode::kVerifyCa ||
                                config.client_tls_sslmode == TlsMode::kVerifyFull;
  if (config.auth_type == AuthType::kCert &&
      (!verifies_clients || config.client_tls_ca_file.empty())) {
    return absl::InvalidArgumentError(
        absl::StrCat(config.Where("auth_type"),
                     ": auth_type = cert needs client_tls_sslmode = verify-full (or verify-ca) and "
                     "client_tls_ca_file"));
  }
  if (config.auth_type == AuthType::kHba && config.auth_hba_file.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(config.Where("auth_type"), ": auth_type = hba needs auth_hba_file"));
  }
  if (config.server_tls_cert_file.empty() != config.server_tls_key_file.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": server_tls_cert_file and server_tls_key_file go together"));
  }
  return absl::OkStatus();
}

absl::StatusOr<Config> ParseConfig(const std::string& text, const std::string& path,
                                   const IncludeCheck& check_include) {
  PGF_ASSIGN_OR_RETURN(std::vector<IniEntry> entries, ParseIni(text, path, check_include));
  enum class Section { kNone, kPgbouncer, kDatabases, kUsers, kPeers };
  Section section = Section::kNone;
  bool saw_pgbouncer = false;
  Config config;
  config.path = path;
  for (const IniEntry& entry : entries) {
    if (entry.kind == IniEntry::Kind::kSection) {
      std::string name = absl::AsciiStrToLower(entry.key);
      if (name == "pgbouncer") {
        section = Section::kPgbouncer;
        saw_pgbouncer = true;
      } else if (name == "databases") {
        section = Section::kDatabases;
      } else if (name == "users") {
        section = Section::kUsers;
      } else if (name == "peers") {
        section = Section::kPeers;
        config.warnings.push_back(absl::StrCat(
            Location(entry), ": section [peers] is not supported by pgfleet; ignored"));
      } else {
        // PgBouncer refuses unknown sections too, so no working file has one.
        return absl::InvalidArgumentError(
            absl::StrCat(Location(entry), ": unknown section [", entry.key, "]"));
      }
      continue;
    }
    switch (section) {
      case Section::kNone:
        return absl::InvalidArgumentError(
            absl::StrCat(Location(entry), ": key '", entry.key, "' before any [section] header"));
      case Section::kPgbouncer:
        PGF_RETURN_IF_ERROR(ApplyOption(entry, config));
        break;
      case Section::kDatabases:
        PGF_RETURN_IF_ERROR(ApplyDatabase(entry, config));
        break;
      case Section::kUsers:
        PGF_RETURN_IF_ERROR(ApplyUser(entry, config));
        break;
      case Section::kPeers:
        break;  // Warned once at the header.
    }
  }
  if (!saw_pgbouncer) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": no [pgbouncer] section"));
  }
  PGF_RETURN_IF_ERROR(ValidateTls(config, path));
  return config;
}

absl::StatusOr<Config> LoadConfig(const std::string& path, const IncludeCheck& check_include) {
  absl::StatusOr<std::string> text = ReadTextFile(path);
  if (!text.ok()) {
    return absl::Status(text.status().code(),
                        absl::StrCat("config file: ", text.status().message()));
  }
  return ParseConfig(*text, path, check_include);
}

std::vector<ConfigEntry> DescribeConfig(const Config& config) {
  const Config defaults;
  std::vector<ConfigEntry> entries;
  entries.reserve(std::size(kOptions));
  for (const Option& option : kOptions) {
    entries.push_back(ConfigEntry{
        .key = std::string(option.name),
        .value = option.get(config),
        .default_value = option.default_override != nullptr ? std::string(option.default_override)
                                                            : option.get(defaults),
        .changeable = option.changeable,
    });
  }
  for (const UnsupportedSetting& setting : kUnsupportedSettings) {
    if (absl::string_view(setting.section) != "pgbouncer") continue;
    auto written = config.unsupported_values.find(setting.key);
    entries.push_back(ConfigEntry{
        .key = setting.key,
        .value = written != config.unsupported_values.end() ? written->second
                                                            : setting.pgbouncer_default,
        .default_value = setting.pgbouncer_default,
        .changeable = false,
    });
  }
  std::sort(entries.begin(), entries.end(),
            [](const ConfigEntry& a, const ConfigEntry& b) { return a.key < b.key; });
  return entries;
}

absl::Status ApplySetting(Config& config, const std::string& key, const std::string& value) {
  // Keys match case-insensitively, as in the file.
  std::string name = absl::AsciiStrToLower(key);
  const Option* option = FindOption(name);
  if (option == nullptr) {
    if (FindUnsupported("pgbouncer", name) != nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("config parameter '", name, "' is not supported by pgfleet"));
    }
    return absl::InvalidArgumentError(absl::StrCat("unknown config parameter: ", key));
  }
  // Checked before the value, as PgBouncer does: SET of such a key fails whatever the value.
  if (!option->changeable) {
    return absl::InvalidArgumentError(
        absl::StrCat("config parameter '", name, "' cannot be changed online"));
  }
  // On a copy, so a setter that fails halfway leaves `config` untouched.
  Config updated = config;
  absl::Status status = option->set(updated, value);
  if (!status.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("key '", name, "': ", status.message()));
  }
  // The value no longer comes from that line of the file.
  updated.locations.erase(name);
  config = std::move(updated);
  return absl::OkStatus();
}

}  // namespace pgfleet::config
