// PgBouncer's auth_file ("userlist.txt"): lines of `"user" "secret"`; a secret is plaintext,
// "md5" + 32 hex digits, or a SCRAM-SHA-256 verifier "SCRAM-SHA-256$iter:salt$stored:server".
#pragma once

#include <map>
#include <string>

#include "absl/status/statusor.h"

namespace pgfleet::config {

enum class SecretKind { kPlain, kMd5, kScramSha256 };

struct UserSecret {
  std::string user;
  std::string secret;  // As written in the file.
  SecretKind kind = SecretKind::kPlain;
};

using AuthFile = std::map<std::string, UserSecret>;

// One secret as an auth_file line holds it, its kind recognised as ParseAuthFile does (a
// malformed SCRAM verifier is InvalidArgument).
absl::StatusOr<UserSecret> MakeUserSecret(const std::string& user, const std::string& secret);

// Errors name file and line. Quotes inside a field are written twice ("" -> "), as PgBouncer.
absl::StatusOr<AuthFile> LoadAuthFile(const std::string& path);
absl::StatusOr<AuthFile> ParseAuthFile(const std::string& text, const std::string& path);

}  // namespace pgfleet::config
