#include "controller/store/store.h"

#include <openssl/evp.h>

#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace pgfleet::controller {

const char* RoleName(Role role) {
  switch (role) {
    case Role::kAgent:
      return "agent";
    case Role::kViewer:
      return "viewer";
    case Role::kOperator:
      return "operator";
    case Role::kAdmin:
      return "admin";
  }
  return "?";
}

absl::StatusOr<Role> ParseRole(const std::string& name) {
  if (name == "agent") return Role::kAgent;
  if (name == "viewer") return Role::kViewer;
  if (name == "operator") return Role::kOperator;
  if (name == "admin") return Role::kAdmin;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown role '", name, "' (expected agent, viewer, operator or admin)"));
}

std::string Sha256Hex(const std::string& data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  PGF_CHECK(EVP_Digest(data.data(), data.size(), digest, &length, EVP_sha256(), nullptr) == 1);
  PGF_CHECK(length == 32);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(2 * length);
  for (unsigned int i = 0; i < length; ++i) {
    hex.push_back(kHex[digest[i] >> 4]);
    hex.push_back(kHex[digest[i] & 0x0f]);
  }
  return hex;
}

std::string ConfigContentSha256(const std::string& ini_text,
                                const std::vector<config::ConfigOverlay>& overlays,
                                const std::vector<ConfigFileRow>& files,
                                const std::vector<CredentialOverlapRow>& overlaps) {
  // Versions without overlays or secret material keep the ini's own sha256 (what they always
  // had).
  if (overlays.empty() && files.empty() && overlaps.empty()) return Sha256Hex(ini_text);
  std::string material = absl::StrCat("pgfleet-config-v3\n", Sha256Hex(ini_text), "\n");
  if (!overlays.empty()) {
    absl::StrAppend(&material, "overlays ", Sha256Hex(config::FormatOverlays(overlays)), "\n");
  }
  // Secret material by its keyed fingerprint only: the address is shown by the API, and a
  // digest over plain sha256s would confirm a guessed password as well as the sha256 itself.
  for (const ConfigFileRow& file : files) {
    PGF_CHECK(!file.fingerprint.empty());
    absl::StrAppend(&material, "file ", file.key, " ", file.fingerprint, "\n");
  }
  for (const CredentialOverlapRow& overlap : overlaps) {
    PGF_CHECK(!overlap.fingerprint.empty());
    absl::StrAppend(&material, "overlap ", Sha256Hex(overlap.user), " ", overlap.fingerprint, " ",
                    overlap.expires_unix_ms, "\n");
  }
  return Sha256Hex(material);
}

}  // namespace pgfleet::controller
