// Password hashing and SCRAM-SHA-256 (RFC 5802 / RFC 7677) from OpenSSL primitives.
// No sockets here: both exchanges are pure message-in / message-out state machines.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace pgfleet::crypto {

// Lower-case hex MD5 of `data`.
std::string Md5Hex(std::string_view data);
// PostgreSQL's stored md5 form: "md5" + md5hex(password + user).
std::string Md5PasswordHash(std::string_view password, std::string_view user);
// What a client sends for AuthenticationMD5Password: "md5" + md5hex(md5hex(password + user) +
// salt), computed from the stored form ("md5...", 35 chars).
std::string Md5SaltedResponse(std::string_view stored_md5_hash, std::string_view salt4);
// Constant-time comparison for secrets.
bool SecretEquals(std::string_view a, std::string_view b);
// Cryptographically random bytes (RAND_bytes).
std::string RandomBytes(size_t n);

using Sha256Digest = std::array<uint8_t, 32>;

// Upper bound on SCRAM iteration counts we accept from a secret or from a server. PostgreSQL has
// none, but a hostile server could otherwise make the agent spin in PBKDF2 for hours; 10M is
// ~2500x PostgreSQL's default of 4096 and still only seconds of CPU.
inline constexpr int kMaxScramIterations = 10'000'000;

struct ScramKeys {
  std::string salt;  // Raw bytes (not base64).
  int iterations = 4096;
  Sha256Digest stored_key{};
  Sha256Digest server_key{};
  // Known when derived from a plaintext password, or recovered from a client's proof.
  std::optional<Sha256Digest> client_key;
};

// Parses "SCRAM-SHA-256$<iter>:<salt b64>$<StoredKey b64>:<ServerKey b64>".
absl::StatusOr<ScramKeys> ParseScramSecret(std::string_view secret);
// Derives keys from a plaintext password (PBKDF2-HMAC-SHA-256). Passwords are used as given
// (no SASLprep), which matches PostgreSQL for ASCII passwords.
ScramKeys ScramKeysFromPassword(std::string_view password, std::string_view salt, int iterations);
std::string FormatScramSecret(const ScramKeys& keys);

// The SCRAM salt the agent shows for `user` when it has no salt of its own to show (an unknown
// user, an md5 or plaintext auth_file entry): HMAC-SHA-256(secret, user) cut to 16 bytes, as
// PostgreSQL's scram_mock_salt. Stable for a user for as long as `secret` is, so two attempts
// for a user name see the same salt whether or not the user exists.
inline constexpr size_t kScramMockSaltBytes = 16;
inline constexpr int kScramDefaultIterations = 4096;
std::string ScramMockSalt(std::string_view secret, std::string_view user);
// Keys for a user the agent cannot authenticate with SCRAM: the mock salt, the default
// iteration count and random StoredKey/ServerKey, so the exchange runs as for a real user and
// fails at the proof check. No PBKDF2: costs the same as a user whose keys are known.
ScramKeys ScramMockKeys(std::string_view secret, std::string_view user);

// The server side: the agent authenticating a client.
class ScramServerExchange {
 public:
  // `server_nonce` empty: 18 random bytes, base64. Tests pass a fixed one.
  explicit ScramServerExchange(ScramKeys keys, std::string server_nonce = "");
  // client-first-message ("n,,n=user,r=nonce") -> server-first-message ("r=..,s=..,i=..").
  absl::StatusOr<std::string> HandleClientFirst(std::string_view client_first);
  // client-final-message -> server-final-message ("v=..."). A wrong proof is
  // PermissionDenied; malformed input is InvalidArgument.
  absl::StatusOr<std::string> HandleClientFinal(std::string_view client_final);
  // After a successful HandleClientFinal: keys with client_key filled in.
  const ScramKeys& keys() const { return keys_; }
  // Before HandleClientFinal: other keys a proof may match (a user's previous password while a
  // rotation overlap is open). The client computed its proof with the salt and iteration count
  // the exchange showed, so only keys with those same ones can match: others are not added
  // (false). The proof is checked against the shown keys first, then these in turn.
  bool AddAlternativeKeys(ScramKeys keys);
  // After a successful HandleClientFinal: whether the proof matched alternative keys.
  bool matched_alternative() const { return matched_alternative_; }

 private:
  // One attempt per exchange: after HandleClientFinal (success or not) nothing more is accepted,
  // so a failed proof cannot be retried against the same nonces.
  enum class State { kAwaitingClientFirst, kAwaitingClientFinal, kDone };

  State state_ = State::kAwaitingClientFirst;
  ScramKeys keys_;
  std::vector<ScramKeys> alternatives_;
  bool matched_alternative_ = false;
  std::string server_nonce_;
  std::string gs2_header_;  // "n,," or "y,,"; the client-final's c= must echo it.
  std::string client_first_bare_;
  std::string server_first_;
  std::string combined_nonce_;
};

// The client side: the agent authenticating to PostgreSQL.
class ScramClientExchange {
 public:
  // Either a password or keys with client_key (pass-through of a client's SCRAM login).
  static ScramClientExchange FromPassword(std::string password, std::string client_nonce = "");
  static ScramClientExchange FromKeys(ScramKeys keys, std::string client_nonce = "");
  // Optional, before ClientFirstMessage: the n= user name (escaped as RFC 5802 saslname).
  // PostgreSQL ignores it; other SCRAM peers (and the RFC 7677 test vector) do not.
  void SetUserName(std::string_view user);
  // "n,,n=,r=<nonce>" (PostgreSQL ignores the user name here).
  std::string ClientFirstMessage();
  // server-first-message -> client-final-message.
  absl::StatusOr<std::string> HandleServerFirst(std::string_view server_first);
  // Checks the server's signature ("v=..."); PermissionDenied when it does not match.
  absl::Status VerifyServerFinal(std::string_view server_final);

 private:
  ScramClientExchange() = default;
  std::string password_;
  std::optional<ScramKeys> keys_;
  std::string client_nonce_;
  std::string user_name_;  // Already saslname-escaped.
  std::string client_first_bare_;
  std::string expected_server_signature_;  // Raw bytes; empty until HandleServerFirst succeeds.
};

}  // namespace pgfleet::crypto
