// Who an agent's stream may speak for, established from what the agent cannot choose: its TLS
// client certificate and its join token. Checked from the stream's TLS session and metadata
// before the agent's hello is read, then matched against the hello.
//
// Certificates bind the environment with a URI subject alternative name
//
//     pgfleet://env/<environment>/agent/<agent id>
//
// (e.g. `subjectAltName = URI:pgfleet://env/prod/agent/prod-7`, as scripts/make-test-certs.sh
// writes for `AGENT_ID@ENV`). A certificate with such a URI may only speak for that agent in that
// environment; its CN must still be the agent id. A certificate without one names no
// environment: the agent then needs a join token of its environment (or --insecure-agents).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace pgfleet::controller {

struct CertificateBinding {
  std::string environment;
  std::string agent_id;
};

// Parses "pgfleet://env/<env>/agent/<id>". InvalidArgument for anything else that starts with
// "pgfleet://" (a typo must not silently leave the environment unbound).
absl::StatusOr<CertificateBinding> ParseAgentUri(const std::string& uri);

// The URI SANs of a PEM certificate. InvalidArgument when the PEM does not parse.
absl::StatusOr<std::vector<std::string>> CertificateUris(const std::string& pem);

// The certificate's pgfleet:// binding, if it has one. InvalidArgument for a malformed pgfleet
// URI or for more than one.
absl::StatusOr<std::optional<CertificateBinding>> CertificateBindingFromPem(const std::string& pem);

}  // namespace pgfleet::controller
