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
                                const std::vector<config::ConfigOverlay>& overlays) {
  if (overlays.empty()) return Sha256Hex(ini_text);
  // The overlay text starts with a section header on its own line, so base and overlays
  // cannot be confused by moving text between them.
  return Sha256Hex(absl::StrCat(ini_text, "\n", config::FormatOverlays(overlays)));
}

}  // namespace pgfleet::controller
