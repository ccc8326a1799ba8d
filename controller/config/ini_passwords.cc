#include "controller/config/ini_passwords.h"

#include <optional>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
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

bool IsDatabaseEntry(const IniTextLine& line) {
  return line.key && line.value_begin != std::string::npos &&
         config::SameSection(line.in_section, kDatabases);
}

std::string ValueOf(const IniTextLine& line) {
  return line.text.substr(line.value_begin, line.value_end - line.value_begin);
}

// The password each [databases] entry of `ini_text` has (the last entry of a name wins), read
// in one pass so a push that keeps many passwords does not rescan the previous text for each.
class DatabasePasswords {
 public:
  explicit DatabasePasswords(const std::string& ini_text) {
    config::VisitIniLines(ini_text, [this](const IniTextLine& line) {
      if (IsDatabaseEntry(line)) by_name_[*line.key] = PasswordOf(ValueOf(line));
    });
  }
  std::optional<std::string> Of(const std::string& database) const {
    auto it = by_name_.find(database);
    return it == by_name_.end() ? std::nullopt : it->second;
  }

 private:
  // Database names in [databases] are exact (SameKey), so a plain map matches them.
  absl::flat_hash_map<std::string, std::optional<std::string>> by_name_;
};

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
  std::string out;
  out.reserve(ini_text.size());
  bool first = true;
  config::VisitIniLines(ini_text, [&](const IniTextLine& line) {
    if (!first) out.push_back('\n');
    first = false;
    if (!IsDatabaseEntry(line)) {
      out.append(line.text);
      return;
    }
    absl::StrAppend(&out, line.text.substr(0, line.value_begin), RedactConnString(ValueOf(line)),
                    line.text.substr(line.value_end));
  });
  return out;
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
  // Most pushes keep no password: skip scanning a large text line by line for nothing.
  if (!absl::StrContains(pushed, kRedactedPassword)) return pushed;
  std::optional<DatabasePasswords> previous_passwords;
  std::string out;
  out.reserve(pushed.size());
  bool first = true;
  absl::Status status;
  config::VisitIniLines(pushed, [&](const IniTextLine& line) {
    if (!status.ok()) return;
    if (!first) out.push_back('\n');
    first = false;
    if (!IsDatabaseEntry(line) || !HasRedactedPassword(ValueOf(line))) {
      out.append(line.text);
      return;
    }
    if (!previous_passwords) previous_passwords.emplace(previous);
    std::optional<std::string> password = previous_passwords->Of(*line.key);
    if (!password.has_value()) {
      status = NothingToKeep(*line.key, "");
      return;
    }
    absl::StrAppend(&out, line.text.substr(0, line.value_begin), PutBack(ValueOf(line), *password),
                    line.text.substr(line.value_end));
  });
  if (!status.ok()) return status;
  return out;
}

absl::StatusOr<std::vector<config::ConfigOverlay>> RestoreOverlayPasswords(
    std::vector<config::ConfigOverlay> pushed,
    const std::vector<config::ConfigOverlay>& previous_overlays, const std::string& previous_ini) {
  std::optional<DatabasePasswords> ini_passwords;
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
      if (!password.has_value()) {
        if (!ini_passwords) ini_passwords.emplace(previous_ini);
        password = ini_passwords->Of(setting.key);
      }
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
