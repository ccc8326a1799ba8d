// Helpers shared by the files of Agent (agent.cc, agent_config.cc, agent_listeners.cc);
// nothing outside Agent uses them.
#pragma once

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "agent/path_policy.h"
#include "agent/tls/tls_context.h"
#include "common/config/auth_file.h"
#include "common/config/config.h"
#include "common/config/hba.h"

namespace pgfleet::agent {

// "FILE:LINE: key: reason", FILE:LINE being the line that set `key`.
inline absl::Status AtKey(const config::Config& cfg, const std::string& key,
                          const absl::Status& status) {
  return absl::Status(status.code(),
                      absl::StrCat(cfg.Where(key), ": ", key, ": ", status.message()));
}

// Everything a config needs from disk besides itself, loaded and checked before anything
// changes, for start-up and RELOAD alike. Errors name file, line and key.
struct LoadedConfig {
  config::Config cfg;
  config::AuthFile users;
  std::shared_ptr<const config::HbaFile> hba;
  std::shared_ptr<const TlsContext> client_tls;
  std::shared_ptr<const TlsContext> server_tls;
};

// `confine`: the config is a pushed one, read again at every RELOAD; its %include, its files
// and its hba @file includes are held to the policy each time they are read, not only when the
// push was checked (a symlink in an allowed directory may point elsewhere by then).
absl::StatusOr<LoadedConfig> LoadConfigAndFiles(const std::string& path, const PathPolicy* confine);

}  // namespace pgfleet::agent
