#include "common/config/restart_keys.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace pgfleet::config {
namespace {

// One row per key: its name and reason, and how to compare and carry its value.
struct Row {
  RestartOnlyKey key;
  bool (*same)(const Config& a, const Config& b);
  void (*keep)(const Config& running, Config& loaded);
};

template <std::string Config::*kField>
constexpr Row StringRow(absl::string_view key, absl::string_view reason) {
  return {{key, reason},
          [](const Config& a, const Config& b) { return a.*kField == b.*kField; },
          [](const Config& running, Config& loaded) { loaded.*kField = running.*kField; }};
}

// Decided per key from what the agent does with it. listen_addr, listen_port and
// unix_socket_dir are not here: a reload binds the new listeners before closing the old ones.
// stats_period restarts its timer, logfile reopens, TLS files are read again, pool settings
// reach pools and their servers as they cycle, listen_backlog is set anew on the listeners.
// Keys pgfleet accepts but ignores (so_reuseport, ...) have no effect at all, at start or later.
const Row kRows[] = {
    StringRow<&Config::pidfile>(
        "pidfile",
        "written once at start-up and removed at exit: a service manager that found the agent "
        "through it (systemd PIDFile=, init scripts) would lose track of a moved one"),
    StringRow<&Config::run_as_user>(
        "user",
        "the switch from root happens once at start-up; a process that gave "
        "up root cannot become another user"),
};

const Row* FindRow(absl::string_view key) {
  for (const Row& row : kRows) {
    if (row.key.key == key) return &row;
  }
  return nullptr;
}

}  // namespace

const std::vector<RestartOnlyKey>& RestartOnlyKeys() {
  static const std::vector<RestartOnlyKey>* const keys = [] {
    auto* list = new std::vector<RestartOnlyKey>;
    for (const Row& row : kRows) list->push_back(row.key);
    std::sort(list->begin(), list->end(),
              [](const RestartOnlyKey& a, const RestartOnlyKey& b) { return a.key < b.key; });
    return list;
  }();
  return *keys;
}

bool IsRestartOnly(absl::string_view key) { return FindRow(key) != nullptr; }

std::vector<std::string> KeepRestartOnlyValues(const Config& running, Config& loaded) {
  std::vector<std::string> pending;
  for (const Row& row : kRows) {
    if (row.same(running, loaded)) continue;
    pending.emplace_back(row.key.key);
    row.keep(running, loaded);
    // Errors about the key keep pointing at the line that set the value in force.
    const std::string key(row.key.key);
    if (auto it = running.locations.find(key); it != running.locations.end()) {
      loaded.locations[key] = it->second;
    } else {
      loaded.locations.erase(key);
    }
  }
  std::sort(pending.begin(), pending.end());
  return pending;
}

std::string RestartPendingText(const std::vector<std::string>& keys) {
  if (keys.empty()) return "";
  return absl::StrCat("restart pending: ", absl::StrJoin(keys, ", "));
}

}  // namespace pgfleet::config
