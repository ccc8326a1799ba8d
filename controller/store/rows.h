// Rows of the controller's store that several parts read: environments, config versions and
// agents. Apart from store.h so the engines' narrow store interfaces can name them.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/config/overlay.h"

namespace pgfleet::controller {

struct EnvironmentRow {
  std::string name;
  uint64_t desired_version = 0;  // 0: none yet.
  int64_t created_unix_ms = 0;
};

// Immutable once written. `version` is a global, increasing id; `sha256` addresses content.
struct ConfigVersionRow {
  uint64_t version = 0;
  std::string environment;
  std::string sha256;
  std::string ini_text;  // Empty in list results.
  std::string author;
  std::string message;
  int64_t created_unix_ms = 0;
  uint64_t parent_version = 0;  // The environment's newest version before this one (0: none).
  // Per-host edits on top of ini_text (controller/config/overlays.h); each agent runs its
  // render. Part of the content address: see ConfigContentSha256.
  std::vector<config::ConfigOverlay> overlays;
};

struct AgentRow {
  std::string agent_id;
  std::string environment;
  std::map<std::string, std::string> labels;
  std::string agent_version;
  std::string hostname;
  bool connected = false;
  int64_t first_seen_unix_ms = 0;
  int64_t last_seen_unix_ms = 0;
  uint64_t applied_version = 0;
  std::string applied_sha256;
  std::string last_error;  // Last NACK reason; cleared by an ACK.
  std::optional<uint64_t> pinned_version;
};

}  // namespace pgfleet::controller
