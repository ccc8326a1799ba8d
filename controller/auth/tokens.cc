#include "controller/auth/tokens.h"

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace pgfleet::controller {
namespace {

std::string Hex(const unsigned char* data, size_t size) {
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < size; ++i) {
    out.push_back(kHex[data[i] >> 4]);
    out.push_back(kHex[data[i] & 15]);
  }
  return out;
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

absl::StatusOr<Caller> AuthenticateBearer(Store& store, const std::string& header) {
  constexpr absl::string_view kPrefix = "Bearer ";
  if (!absl::StartsWith(header, kPrefix) || header.size() == kPrefix.size()) {
    return absl::UnauthenticatedError("missing bearer token (authorization: Bearer <token>)");
  }
  absl::StatusOr<TokenRow> token = store.LookupToken(HashToken(header.substr(kPrefix.size())));
  if (!token.ok()) {
    if (absl::IsNotFound(token.status())) return absl::UnauthenticatedError("unknown token");
    return token.status();
  }
  return Caller{token->name, token->role};
}

absl::StatusOr<Caller> AuthenticateGrpc(Store& store, const grpc::ServerContext& context) {
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) {
    return absl::UnauthenticatedError("missing bearer token (authorization: Bearer <token>)");
  }
  return AuthenticateBearer(store, std::string(it->second.data(), it->second.size()));
}

}  // namespace pgfleet::controller
