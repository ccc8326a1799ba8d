#include "controller/auth/tokens.h"

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/log.h"

namespace pgfleet::controller {
namespace {

// last_used is for people ("is this token still in use?"), so a busy dashboard writes it at
// most once a minute rather than on every call.
constexpr int64_t kLastUsedResolutionMs = 60 * 1000;

std::string Hex(const unsigned char* data, size_t size) {
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < size; ++i) {
    out.push_back(kHex[data[i] >> 4]);
    out.push_back(kHex[data[i] & 15]);
  }
  return out;
}

std::string FormatMillis(int64_t unix_ms) {
  return absl::FormatTime("%Y-%m-%d %H:%M:%S UTC", absl::FromUnixMillis(unix_ms),
                          absl::UTCTimeZone());
}

// The token named by "Bearer <token>", if it is usable at all (any role).
absl::StatusOr<TokenRow> LookupUsable(Store& store, const std::string& header, absl::Time at) {
  constexpr absl::string_view kPrefix = "Bearer ";
  if (!absl::StartsWith(header, kPrefix) || header.size() == kPrefix.size()) {
    return absl::UnauthenticatedError("missing bearer token (authorization: Bearer <token>)");
  }
  absl::StatusOr<TokenRow> token = store.LookupToken(HashToken(header.substr(kPrefix.size())));
  if (!token.ok()) {
    if (absl::IsNotFound(token.status())) return absl::UnauthenticatedError("unknown token");
    return token.status();
  }
  const int64_t now = absl::ToUnixMillis(at);
  if (token->revoked_unix_ms != 0) {
    if (token->bootstrap) {
      return absl::UnauthenticatedError(absl::StrCat(
          "the bootstrap token stopped working at ", FormatMillis(token->revoked_unix_ms),
          " when an admin token was created; use an admin token"));
    }
    return absl::UnauthenticatedError(absl::StrCat("token '", token->name, "' was revoked at ",
                                                   FormatMillis(token->revoked_unix_ms)));
  }
  if (token->expires_unix_ms != 0 && now >= token->expires_unix_ms) {
    return absl::UnauthenticatedError(absl::StrCat("token '", token->name, "' expired at ",
                                                   FormatMillis(token->expires_unix_ms)));
  }
  if (now - token->last_used_unix_ms >= kLastUsedResolutionMs) {
    if (absl::Status touched = store.TouchToken(token->id, now); !touched.ok()) {
      PGF_WARN("auth", "token %d: last use not recorded: %s", token->id, touched.message());
    }
  }
  return token;
}

}  // namespace

std::string HashToken(const std::string& token) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_Digest(token.data(), token.size(), digest, &length, EVP_sha256(), nullptr);
  return Hex(digest, length);
}

std::string NewToken() {
  unsigned char bytes[32];
  if (RAND_bytes(bytes, sizeof(bytes)) != 1) std::abort();  // No entropy: nothing is safe.
  return absl::StrCat("pgf_", Hex(bytes, sizeof(bytes)));
}

const char* TokenState(const TokenRow& token, int64_t now_ms) {
  if (token.revoked_unix_ms != 0) return token.bootstrap ? "superseded" : "revoked";
  if (token.expires_unix_ms != 0 && now_ms >= token.expires_unix_ms) return "expired";
  return "active";
}

absl::StatusOr<Caller> AuthenticateBearer(Store& store, const std::string& header, absl::Time now) {
  absl::StatusOr<TokenRow> token = LookupUsable(store, header, now);
  if (!token.ok()) return token.status();
  if (token->role == Role::kAgent) {
    // The message names the least role the operators' API takes (as RequireRole would).
    return absl::PermissionDeniedError(
        absl::StrCat("token '", token->name, "' is an agent's join token (environment ",
                     token->environment, "): it only opens an agent's stream; the API needs ",
                     RoleName(Role::kViewer), " or above"));
  }
  return Caller{token->name, token->role};
}

absl::StatusOr<TokenRow> AuthenticateJoinToken(Store& store, const std::string& header,
                                               absl::Time now) {
  absl::StatusOr<TokenRow> token = LookupUsable(store, header, now);
  if (!token.ok()) {
    return absl::Status(token.status().code(),
                        absl::StrCat("join token refused: ", token.status().message()));
  }
  if (token->role != Role::kAgent) {
    return absl::PermissionDeniedError(absl::StrCat(
        "join token refused: token '", token->name, "' is a ", RoleName(token->role),
        " token; agents need an agent token (fleetctl token create --role agent --env ENV)"));
  }
  return token;
}

}  // namespace pgfleet::controller
