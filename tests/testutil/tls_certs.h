// Certificates for TLS tests, made the way an operator would (scripts/make-test-certs.sh), and
// the postgresql.conf lines of a PostgreSQL that serves them.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace pgfleet::testutil {

// Runs scripts/make-test-certs.sh into `dir`: ca.pem (a fresh CA), controller.pem /
// controller-key.pem (CN=localhost, SAN localhost and 127.0.0.1, signed by that CA), and for
// each of `client_names` NAME.pem / NAME-key.pem with CN=NAME.
absl::Status MakeTestCerts(const std::string& dir, const std::vector<std::string>& client_names);

// Makes `dir` readable by PostgreSQL (run as the postgres OS user) with its private keys 0600,
// as PostgreSQL insists.
absl::Status HandCertsToPostgres(const std::string& dir);

// postgresql.conf lines for ssl = on with the certificate and key of MakeTestCerts(`dir`), and
// its CA for client certificates (pg_hba's `cert` method).
std::vector<std::string> PostgresSslConf(const std::string& dir);

}  // namespace pgfleet::testutil
