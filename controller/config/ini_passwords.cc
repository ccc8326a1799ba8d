#include "controller/config/ini_passwords.h"

#include <optional>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/config/conn_string.h"
#include "common/status_macros.h"

namespace pgfleet::controller {
namespace {

using config::ConnParam;
using config::IniTextLine;

constexpr char kDatabases[] = "databases";

bool IsPasswordKey(const std::string& key) { return key == "password"; }

// A connection string with every password value replaced by kRedactedPassword; the whole
// value replaced when it does not parse.
std::string RedactConnString(const std::string& value) {
  absl::StatusOr<std::vector<ConnParam>> params = config::SplitConnString(value);
  if (!params.ok()) return kRedactedPassword;
  std::string out;
  size_t copied = 0;
  for (const ConnParam& param : *params) {
    if (!IsPasswordKey(param.key)) continue;
    absl::StrAppend(&out, value.substr(copied, param.value_begin - copied), kRedactedPassword);
    copied = param.value_end;
  }
  absl::StrAppend(&out, value.substr(copied));
  return out;
}

bool HasRedactedPassword(const std::string& value) {
  absl::StatusOr<std::vector<ConnParam>> params = config::SplitConnString(value);
  if (!params.ok()) return false;
  for (const ConnParam& param : *params) {
    if (IsPasswordKey(param.key) && param.value == kRedactedPassword) return true;
  }
  return false;
}

// The password of `value`'s connection string, if it has one.
std::optional<std::string> PasswordOf(const std::string& value) {
  absl::StatusOr<std::vector<ConnParam>> params = config::SplitConnString(value);
  if (!params.ok()) return std::nullopt;
  std::optional<std::string> password;
  for (const ConnParam& param : *params) {
    if (IsPasswordKey(param.key)) password = param.value;  // The last one wins, as in parsing.
  }
  return password;
}

// `value` with each redacted password replaced by `password`.
std::string PutBack(const std::string& value, const std::string& password) {
  absl::StatusOr<std::vector<ConnParam>> params = config::SplitConnString(value);
  if (!params.ok()) return value;
  std::string out;
  size_t copied = 0;
  for (const ConnParam& param : *params) {
    if (!IsPasswordKey(param.key) || param.value != kRedactedPassword) continue;
    absl::StrAppend(&out, value.substr(copied, param.value_begin - copied),
                    config::QuoteConnValue(password));
    copied = param.value_end;
  }
  absl::StrAppend(&out, value.substr(copied));
  return out;
}

std::vector<IniTextLine> Lines(const std::string& text) {
  return config::ScanIniLines(absl::StrSplit(text, '\n'));
}

bool IsDatabaseEntry(const IniTextLine& line) {
  return line.key && line.value_begin != std::string::npos &&
         config::SameSection(line.in_section, kDatabases);
}

std::string ValueOf(const IniTextLine& line) {
  return line.text.substr(line.value_begin, line.value_end - line.value_begin);
}

// The password the last [databases] entry named `database` in `ini_text` has.
std::optional<std::string> DatabasePassword(const std::string& ini_text,
                                            const std::string& database) {
  std::optional<std::string> password;
  for (const IniTextLine& line : Lines(ini_text)) {
    if (IsDatabaseEntry(line) && config::SameKey(kDatabases, *line.key, database)) {
      password = PasswordOf(ValueOf(line));
    }
  }
  return password;
}

absl::Status NothingToKeep(const std::string& database, const std::string& where) {
  return absl::InvalidArgumentError(absl::StrCat(
      "database '", database, "'", where, ": password=", kRedactedPassword,
      " keeps the password the environment's newest version has for it, and it has none; "
      "push the password itself"));
}

bool SameTarget(const config::ConfigOverlay& a, const config::ConfigOverlay& b) {
  return a.by_agent == b.by_agent &&
         (a.by_agent ? a.agent_id == b.agent_id : a.selector == b.selector);
}

}  // namespace

std::string RedactIniPasswords(const std::string& ini_text) {
  std::vector<IniTextLine> lines = Lines(ini_text);
  std::vector<std::string> out;
  out.reserve(lines.size());
  for (const IniTextLine& line : lines) {
    if (!IsDatabaseEntry(line)) {
      out.push_back(line.text);
      continue;
    }
    out.push_back(absl::StrCat(line.text.substr(0, line.value_begin),
                               RedactConnString(ValueOf(line)), line.text.substr(line.value_end)));
  }
  return absl::StrJoin(out, "\n");
}

std::vector<config::ConfigOverlay> RedactOverlayPasswords(
    std::vector<config::ConfigOverlay> overlays) {
  for (config::ConfigOverlay& overlay : overlays) {
    for (config::OverlaySetting& setting : overlay.set) {
      if (config::SameSection(setting.section, kDatabases)) {
        setting.value = RedactConnString(setting.value);
      }
    }
  }
  return overlays;
}

absl::StatusOr<std::string> RestoreIniPasswords(const std::string& pushed,
                                                const std::string& previous) {
  std::vector<IniTextLine> lines = Lines(pushed);
  std::vector<std::string> out;
  out.reserve(lines.size());
  for (const IniTextLine& line : lines) {
    if (!IsDatabaseEntry(line) || !HasRedactedPassword(ValueOf(line))) {
      out.push_back(line.text);
      continue;
    }
    std::optional<std::string> password = DatabasePassword(previous, *line.key);
    if (!password.has_value()) return NothingToKeep(*line.key, "");
    out.push_back(absl::StrCat(line.text.substr(0, line.value_begin),
                               PutBack(ValueOf(line), *password),
                               line.text.substr(line.value_end)));
  }
  return absl::StrJoin(out, "\n");
}

absl::StatusOr<std::vector<config::ConfigOverlay>> RestoreOverlayPasswords(
    std::vector<config::ConfigOverlay> pushed,
    const std::vector<config::ConfigOverlay>& previous_overlays, const std::string& previous_ini) {
  for (size_t i = 0; i < pushed.size(); ++i) {
    config::ConfigOverlay& overlay = pushed[i];
    for (config::OverlaySetting& setting : overlay.set) {
      if (!config::SameSection(setting.section, kDatabases) ||
          !HasRedactedPassword(setting.value)) {
        continue;
      }
      std::optional<std::string> password;
      for (const config::ConfigOverlay& before : previous_overlays) {
        if (!SameTarget(overlay, before)) continue;
        for (const config::OverlaySetting& old : before.set) {
          if (config::SameSection(old.section, kDatabases) &&
              config::SameKey(kDatabases, old.key, setting.key)) {
            password = PasswordOf(old.value);
          }
        }
      }
      if (!password.has_value()) password = DatabasePassword(previous_ini, setting.key);
      if (!password.has_value()) {
        return NothingToKeep(setting.key,
                             absl::StrCat(" in ", overlay.Describe(static_cast<int>(i) + 1)));
      }
      setting.value = PutBack(setting.value, *password);
    }
  }
  return pushed;
}

}  // namespace pgfleet::controller
