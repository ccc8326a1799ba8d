// pgfleet-controller's command line: `pgfleet-controller [options]` and
// `pgfleet-controller token create ...`. Each flag also comes from PGFLEET_CONTROLLER_<FLAG>
// (--db: PGFLEET_CONTROLLER_DB) or a --config file of `flag = value` lines.
#pragma once

#include <optional>
#include <string>

#include "absl/time/time.h"

namespace pgfleet::controller {

struct ControllerFlags {
  std::string listen = "127.0.0.1:7070";
  std::string db = "pgfleet.db";
  std::string tls_cert, tls_key, tls_ca;  // All three, or none.
  std::string port_file;
  absl::Duration metrics_interval = absl::Seconds(5);
  absl::Duration metrics_retention = absl::Hours(24);
  std::string http_listen = "127.0.0.1:7080";  // Empty: no dashboard.
  bool http_listen_given = false;              // Failing to bind it is then fatal.
  std::string http_port_file;
  int http_max_connections = 256;      // Open HTTP connections; one more is answered 503.
  bool metrics_require_token = false;  // GET /metrics needs an operator token (any role).
  std::string web_root;  // Resolved: the flag, or web/dist next to the build, or share/.
  bool insecure = false;
  bool insecure_agents = false;
  absl::Duration agent_hello_timeout = absl::Seconds(10);
  int max_pending_agent_streams = 64;
  // Encrypts credentials and TLS files at rest (controller/secrets/). Empty: none can be pushed.
  std::string secrets_key_file;
  std::string secrets_previous_key_file;  // Key rotation: values it sealed are re-sealed.
  // Several controllers on one PostgreSQL store (controller/leadership.h): the address the
  // others reach this one at (empty: --listen with its bound port), how long a leader's lease
  // lasts and how often it is renewed.
  std::string advertise;
  absl::Duration leader_lease = absl::Seconds(10);
  absl::Duration leader_renew = absl::Seconds(3);
  bool tls() const { return !tls_cert.empty(); }

  // `pgfleet-controller token create`: mint a token straight into --db.
  bool create_token = false;
  std::string token_name, token_role, token_environment;
  absl::Duration token_lifetime = absl::ZeroDuration();  // Zero: never expires.
};

struct ControllerCommandLine {
  // Set when the controller must exit at once with this code: --help, a usage error (already
  // printed).
  std::optional<int> exit_code;
  ControllerFlags flags;
};

// Parses argv (argv[0] is the program), checks the flags against each other, and applies -v.
ControllerCommandLine ParseControllerCommandLine(int argc, const char* const* argv);

}  // namespace pgfleet::controller
