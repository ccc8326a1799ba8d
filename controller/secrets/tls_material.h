// TLS files pushed with a config version: what the API shows of a certificate (subject, expiry)
// and the checks made at push time, so an expired or mismatched certificate is refused by the
// controller, naming the file, instead of by every agent at reload.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace pgfleet::controller::secrets {

struct CertificateInfo {
  std::string subject;  // One line, e.g. "CN=db.example.com,O=Example".
  int64_t not_before_unix_ms = 0;
  int64_t not_after_unix_ms = 0;
};

// The first certificate of a PEM text. InvalidArgument when there is none.
absl::StatusOr<CertificateInfo> InspectCertificate(const std::string& pem);

// Files for one side (client_tls_* or server_tls_*). Empty PEMs are not given.
struct TlsFilesToCheck {
  std::string side;  // "client" or "server": names the files in messages.
  std::string cert_pem;
  std::string key_pem;
  std::string ca_pem;
};

// Checks that each given PEM parses, the key matches the certificate, the certificate is valid
// now, and the CA (when given) verifies it. InvalidArgument naming the file and the reason.
// Returns warnings that do not refuse the push (expires within 30 days).
absl::StatusOr<std::vector<std::string>> ValidateTlsFiles(const TlsFilesToCheck& files,
                                                          int64_t now_unix_ms);

}  // namespace pgfleet::controller::secrets
