#include "tests/testutil/tls_certs.h"

#include <sys/stat.h>

#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "tests/testutil/process.h"

namespace pgfleet::testutil {

absl::Status MakeTestCerts(const std::string& dir, const std::vector<std::string>& client_names) {
  std::vector<std::string> argv = {std::string(PGFLEET_SOURCE_DIR) + "/scripts/make-test-certs.sh",
                                   dir};
  argv.insert(argv.end(), client_names.begin(), client_names.end());
  PGF_ASSIGN_OR_RETURN(RunResult made, RunCommand(argv));
  if (!made.Succeeded()) return absl::InternalError(made.Describe());
  return absl::OkStatus();
}

absl::Status HandCertsToPostgres(const std::string& dir) {
  PGF_ASSIGN_OR_RETURN(RunResult owned, RunCommand({"chown", "-R", "postgres", dir}));
  if (!owned.Succeeded()) return absl::InternalError(owned.Describe());
  chmod(dir.c_str(), 0755);
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (absl::EndsWith(entry.path().string(), "-key.pem")) chmod(entry.path().c_str(), 0600);
  }
  return absl::OkStatus();
}

std::vector<std::string> PostgresSslConf(const std::string& dir) {
  return {"ssl = on", absl::StrCat("ssl_cert_file = '", dir, "/controller.pem'"),
          absl::StrCat("ssl_key_file = '", dir, "/controller-key.pem'"),
          absl::StrCat("ssl_ca_file = '", dir, "/ca.pem'")};
}

}  // namespace pgfleet::testutil
