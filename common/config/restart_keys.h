// The [pgbouncer] keys a running agent cannot take from a new config (RELOAD, SIGHUP, a pushed
// config): the one place that says which, and why. Everything else is applied live, the
// listeners included (listen_addr, listen_port and unix_socket_dir are bound anew on a reload,
// the new listeners before the old ones close).
//
// A reload that changes one of these applies everything else, keeps the running value of these
// keys, and reports them as "restart pending: KEY, KEY": the console's RELOAD answers it as a
// NOTICE, the log says it, a pushed config is ACKed with it, and the controller shows the agent
// as pending restart until it runs a config with nothing pending.
#pragma once

#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "common/config/config.h"

namespace pgfleet::config {

struct RestartOnlyKey {
  absl::string_view key;
  absl::string_view reason;  // Why a running agent cannot apply it.
};

// Every restart-only key, sorted by name.
const std::vector<RestartOnlyKey>& RestartOnlyKeys();
bool IsRestartOnly(absl::string_view key);

// The restart-only keys whose value in `loaded` differs from `running`, sorted; each of them is
// set back to its running value in `loaded` (the rest of `loaded` is untouched), so `loaded` is
// what the agent can run now.
std::vector<std::string> KeepRestartOnlyValues(const Config& running, Config& loaded);

// "restart pending: KEY1, KEY2" ("" when `keys` is empty).
std::string RestartPendingText(const std::vector<std::string>& keys);

}  // namespace pgfleet::config
