#include "common/auth_crypto.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <cstdlib>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace pgfleet::crypto {
namespace {

constexpr std::string_view kScramPrefix = "SCRAM-SHA-256$";
// PostgreSQL's (and libpq's) nonce length: 18 random bytes, 24 base64 characters.
constexpr size_t kNonceBytes = 18;

// The OpenSSL primitives used here only fail on allocation failure or a broken provider. The
// functions that call them cannot report errors (their signatures return plain values), and
// carrying on with an uninitialised digest or a predictable nonce would silently weaken
// authentication, so we fail closed by stopping the process.
[[noreturn]] void CryptoFailure() { std::abort(); }

// Debian's Abseil is built with its own absl::string_view (not an alias of std::string_view),
// and its string utilities do not accept std::string_view; this bridges the two.
absl::string_view Av(std::string_view s) { return absl::string_view(s.data(), s.size()); }

std::vector<std::string_view> Split(std::string_view s, char separator) {
  std::vector<std::string_view> parts;
  while (true) {
    const size_t end = s.find(separator);
    parts.push_back(s.substr(0, end));
    if (end == std::string_view::npos) return parts;
    s.remove_prefix(end + 1);
  }
}

std::string_view AsStringView(const Sha256Digest& digest) {
  return std::string_view(reinterpret_cast<const char*>(digest.data()), digest.size());
}

const unsigned char* Bytes(std::string_view s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}

Sha256Digest Sha256(std::string_view data) {
  Sha256Digest out;
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), out.data(), &len, EVP_sha256(), nullptr) != 1 ||
      len != out.size()) {
    CryptoFailure();
  }
  return out;
}

Sha256Digest HmacSha256(std::string_view key, std::string_view data) {
  Sha256Digest out;
  unsigned int len = 0;
  if (HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), Bytes(data), data.size(),
           out.data(), &len) == nullptr ||
      len != out.size()) {
    CryptoFailure();
  }
  return out;
}

Sha256Digest Xor(const Sha256Digest& a, const Sha256Digest& b) {
  Sha256Digest out;
  for (size_t i = 0; i < out.size(); ++i) out[i] = a[i] ^ b[i];
  return out;
}

std::string Base64Encode(std::string_view data) {
  // EVP_EncodeBlock always pads and writes a trailing NUL, hence the extra byte.
  std::vector<unsigned char> buf(4 * ((data.size() + 2) / 3) + 1);
  const int n = EVP_EncodeBlock(buf.data(), Bytes(data), static_cast<int>(data.size()));
  return std::string(reinterpret_cast<const char*>(buf.data()), static_cast<size_t>(n));
}

bool IsBase64Char(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '/';
}

// Strict standard base64 with padding. EVP_DecodeBlock alone is too lenient (it skips
// surrounding whitespace) and reports padding as decoded zero bytes, so we validate first and
// then trim the padding bytes it produced.
std::optional<std::string> Base64Decode(std::string_view text) {
  if (text.size() % 4 != 0) return std::nullopt;
  size_t padding = 0;
  if (!text.empty() && text.back() == '=') ++padding;
  if (text.size() >= 2 && text[text.size() - 2] == '=') ++padding;
  for (size_t i = 0; i < text.size() - padding; ++i) {
    if (!IsBase64Char(text[i])) return std::nullopt;
  }
  if (text.empty()) return std::string();
  std::vector<unsigned char> buf(text.size() / 4 * 3);
  const int n = EVP_DecodeBlock(buf.data(), Bytes(text), static_cast<int>(text.size()));
  if (n < 0 || static_cast<size_t>(n) < padding) return std::nullopt;
  return std::string(reinterpret_cast<const char*>(buf.data()), static_cast<size_t>(n) - padding);
}

std::optional<Sha256Digest> DecodeDigest(std::string_view text) {
  std::optional<std::string> raw = Base64Decode(text);
  if (!raw.has_value()) return std::nullopt;
  Sha256Digest out;
  if (raw->size() != out.size()) return std::nullopt;
  for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<uint8_t>((*raw)[i]);
  return out;
}

// Decimal digits only (no sign, no whitespace), within [1, kMaxScramIterations].
std::optional<int> ParseIterations(std::string_view text) {
  if (text.empty() || text.size() > 9) return std::nullopt;
  int value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + (c - '0');
  }
  if (value < 1 || value > kMaxScramIterations) return std::nullopt;
  return value;
}

// RFC 5802 "printable": %x21-2B / %x2D-7E, i.e. visible ASCII except ','.
bool IsValidNonce(std::string_view nonce) {
  if (nonce.empty()) return false;
  for (char c : nonce) {
    if (c < 0x21 || c > 0x7e || c == ',') return false;
  }
  return true;
}

// "x=value" with the given attribute letter.
bool Attribute(std::string_view part, char name, std::string_view* value) {
  if (part.size() < 2 || part[0] != name || part[1] != '=') return false;
  *value = part.substr(2);
  return true;
}

// Extensions (unknown attributes) are ignored, as PostgreSQL does, but must be well-formed.
bool IsExtension(std::string_view part) {
  return part.size() >= 2 && absl::ascii_isalpha(static_cast<unsigned char>(part[0])) &&
         part[1] == '=';
}

absl::Status Malformed(std::string_view message, std::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("malformed SCRAM ", Av(message), ": ", Av(what)));
}

std::string NewNonce() { return Base64Encode(RandomBytes(kNonceBytes)); }

}  // namespace

std::string Md5Hex(std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), digest, &len, EVP_md5(), nullptr) != 1 || len != 16) {
    CryptoFailure();
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(2 * len, '\0');
  for (unsigned int i = 0; i < len; ++i) {
    out[2 * i] = kHex[digest[i] >> 4];
    out[2 * i + 1] = kHex[digest[i] & 0xf];
  }
  return out;
}

std::string Md5PasswordHash(std::string_view password, std::string_view user) {
  return absl::StrCat("md5", Md5Hex(absl::StrCat(Av(password), Av(user))));
}

std::string Md5SaltedResponse(std::string_view stored_md5_hash, std::string_view salt4) {
  // The stored form carries the "md5" marker; the inner hash is over its hex digits only.
  std::string_view hex = stored_md5_hash;
  if (hex.starts_with("md5")) hex.remove_prefix(3);
  return absl::StrCat("md5", Md5Hex(absl::StrCat(Av(hex), Av(salt4))));
}

bool SecretEquals(std::string_view a, std::string_view b) {
  // Lengths are not secret (hash forms have fixed sizes); the contents are compared without an
  // early exit so timing does not reveal the matching prefix.
  if (a.size() != b.size()) return false;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string RandomBytes(size_t n) {
  std::string out(n, '\0');
  if (n > 0 && RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(n)) != 1) {
    CryptoFailure();
  }
  return out;
}

absl::StatusOr<ScramKeys> ParseScramSecret(std::string_view secret) {
  // Error messages never echo the secret: StoredKey/ServerKey allow offline dictionary attacks.
  if (!secret.starts_with(kScramPrefix)) {
    return absl::InvalidArgumentError("SCRAM secret does not start with \"SCRAM-SHA-256$\"");
  }
  secret.remove_prefix(kScramPrefix.size());
  std::vector<std::string_view> halves = Split(secret, '$');
  if (halves.size() != 2) {
    return absl::InvalidArgumentError(
        "SCRAM secret is not \"SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>\"");
  }
  std::vector<std::string_view> salt_part = Split(halves[0], ':');
  std::vector<std::string_view> key_part = Split(halves[1], ':');
  if (salt_part.size() != 2 || key_part.size() != 2) {
    return absl::InvalidArgumentError(
        "SCRAM secret is not \"SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>\"");
  }
  ScramKeys keys;
  std::optional<int> iterations = ParseIterations(salt_part[0]);
  if (!iterations.has_value()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "SCRAM secret has an invalid iteration count (must be 1..", kMaxScramIterations, ")"));
  }
  keys.iterations = *iterations;
  std::optional<std::string> salt = Base64Decode(salt_part[1]);
  if (!salt.has_value() || salt->empty()) {
    return absl::InvalidArgumentError("SCRAM secret has an invalid base64 salt");
  }
  keys.salt = std::move(*salt);
  std::optional<Sha256Digest> stored_key = DecodeDigest(key_part[0]);
  if (!stored_key.has_value()) {
    return absl::InvalidArgumentError("SCRAM secret's StoredKey is not 32 base64-encoded bytes");
  }
  std::optional<Sha256Digest> server_key = DecodeDigest(key_part[1]);
  if (!server_key.has_value()) {
    return absl::InvalidArgumentError("SCRAM secret's ServerKey is not 32 base64-encoded bytes");
  }
  keys.stored_key = *stored_key;
  keys.server_key = *server_key;
  return keys;
}

ScramKeys ScramKeysFromPassword(std::string_view password, std::string_view salt, int iterations) {
  Sha256Digest salted_password;
  if (PKCS5_PBKDF2_HMAC(password.data(), static_cast<int>(password.size()), Bytes(salt),
                        static_cast<int>(salt.size()), iterations, EVP_sha256(),
                        static_cast<int>(salted_password.size()), salted_password.data()) != 1) {
    CryptoFailure();
  }
  ScramKeys keys;
  keys.salt = std::string(salt);
  keys.iterations = iterations;
  const Sha256Digest client_key = HmacSha256(AsStringView(salted_password), "Client Key");
  keys.stored_key = Sha256(AsStringView(client_key));
  keys.server_key = HmacSha256(AsStringView(salted_password), "Server Key");
  keys.client_key = client_key;
  OPENSSL_cleanse(salted_password.data(), salted_password.size());
  return keys;
}

std::string FormatScramSecret(const ScramKeys& keys) {
  return absl::StrCat(Av(kScramPrefix), keys.iterations, ":", Base64Encode(keys.salt), "$",
                      Base64Encode(AsStringView(keys.stored_key)), ":",
                      Base64Encode(AsStringView(keys.server_key)));
}

std::string ScramMockSalt(std::string_view secret, std::string_view user) {
  const Sha256Digest digest = HmacSha256(secret, user);
  return std::string(AsStringView(digest).substr(0, kScramMockSaltBytes));
}

ScramKeys ScramMockKeys(std::string_view secret, std::string_view user) {
  ScramKeys keys;
  keys.salt = ScramMockSalt(secret, user);
  keys.iterations = kScramDefaultIterations;
  const std::string random = RandomBytes(keys.stored_key.size() + keys.server_key.size());
  memcpy(keys.stored_key.data(), random.data(), keys.stored_key.size());
  memcpy(keys.server_key.data(), random.data() + keys.stored_key.size(), keys.server_key.size());
  return keys;
}

// ---------------------------------------------------------------------------------------------
// Server side.

ScramServerExchange::ScramServerExchange(ScramKeys keys, std::string server_nonce)
    : keys_(std::move(keys)),
      server_nonce_(server_nonce.empty() ? NewNonce() : std::move(server_nonce)) {}

absl::StatusOr<std::string> ScramServerExchange::HandleClientFirst(std::string_view client_first) {
  if (state_ != State::kAwaitingClientFirst) {
    return absl::FailedPreconditionError("SCRAM client-first-message already handled");
  }
  // Any error ends the exchange; only success moves it on.
  state_ = State::kDone;
  constexpr std::string_view kMsg = "client-first-message";

  // gs2-header: gs2-cbind-flag "," [authzid] ",".
  if (client_first.starts_with("p=")) {
    return absl::InvalidArgumentError(
        "SCRAM client requested channel binding (p=), but only SCRAM-SHA-256 is offered, not "
        "SCRAM-SHA-256-PLUS");
  }
  if (client_first.size() < 2 || (client_first[0] != 'n' && client_first[0] != 'y') ||
      client_first[1] != ',') {
    return Malformed(kMsg, "expected gs2 header \"n,,\" or \"y,,\"");
  }
  if (client_first.substr(2).starts_with("a=")) {
    return absl::InvalidArgumentError("SCRAM authorization identity (a=) is not supported");
  }
  if (client_first.size() < 3 || client_first[2] != ',') {
    return Malformed(kMsg, "expected gs2 header \"n,,\" or \"y,,\"");
  }
  std::string gs2_header(client_first.substr(0, 3));
  std::string_view bare = client_first.substr(3);

  std::vector<std::string_view> parts = Split(bare, ',');
  std::string_view user, client_nonce;
  if (!parts.empty() && parts[0].starts_with("m=")) {
    return absl::InvalidArgumentError("SCRAM mandatory extension (m=) is not supported");
  }
  // The user name is ignored, as in PostgreSQL: the startup packet's user is authoritative.
  if (parts.empty() || !Attribute(parts[0], 'n', &user)) {
    return Malformed(kMsg, "missing user name (n=)");
  }
  if (parts.size() < 2 || !Attribute(parts[1], 'r', &client_nonce)) {
    return Malformed(kMsg, "missing nonce (r=)");
  }
  if (!IsValidNonce(client_nonce)) {
    return Malformed(kMsg, "nonce is empty or has non-printable characters");
  }
  for (size_t i = 2; i < parts.size(); ++i) {
    if (!IsExtension(parts[i])) return Malformed(kMsg, "garbage after nonce");
  }

  gs2_header_ = std::move(gs2_header);
  client_first_bare_ = std::string(bare);
  combined_nonce_ = absl::StrCat(Av(client_nonce), server_nonce_);
  server_first_ =
      absl::StrCat("r=", combined_nonce_, ",s=", Base64Encode(keys_.salt), ",i=", keys_.iterations);
  state_ = State::kAwaitingClientFinal;
  return server_first_;
}

absl::StatusOr<std::string> ScramServerExchange::HandleClientFinal(std::string_view client_final) {
  if (state_ != State::kAwaitingClientFinal) {
    return absl::FailedPreconditionError(
        "SCRAM client-final-message is only accepted once, after the client-first-message");
  }
  state_ = State::kDone;
  constexpr std::string_view kMsg = "client-final-message";

  // c=<channel binding>,r=<nonce>[,extensions],p=<proof>; the proof is always last.
  std::vector<std::string_view> parts = Split(client_final, ',');
  std::string_view channel_binding, nonce, proof_b64;
  if (!Attribute(parts[0], 'c', &channel_binding)) {
    return Malformed(kMsg, "missing channel binding (c=)");
  }
  if (parts.size() < 2 || !Attribute(parts[1], 'r', &nonce)) {
    return Malformed(kMsg, "missing nonce (r=)");
  }
  if (parts.size() < 3 || !Attribute(parts.back(), 'p', &proof_b64)) {
    return Malformed(kMsg, "missing proof (p=) as the last attribute");
  }
  for (size_t i = 2; i + 1 < parts.size(); ++i) {
    if (!IsExtension(parts[i])) return Malformed(kMsg, "garbage between nonce and proof");
  }
  std::optional<std::string> cbind = Base64Decode(channel_binding);
  if (!cbind.has_value()) return Malformed(kMsg, "channel binding (c=) is not valid base64");
  // Without channel binding, c= is just the base64 of the gs2 header; a different one means the
  // header was altered in flight (e.g. a "y" downgraded to "n").
  if (*cbind != gs2_header_) {
    return absl::InvalidArgumentError(
        "SCRAM channel binding (c=) does not match the client-first-message's gs2 header");
  }
  if (nonce != combined_nonce_) {
    return absl::InvalidArgumentError("SCRAM nonce mismatch in client-final-message");
  }
  std::optional<Sha256Digest> proof = DecodeDigest(proof_b64);
  if (!proof.has_value()) return Malformed(kMsg, "proof (p=) is not 32 base64-encoded bytes");

  std::string_view without_proof =
      client_final.substr(0, client_final.size() - parts.back().size() - 1);
  const std::string auth_message =
      absl::StrCat(client_first_bare_, ",", server_first_, ",", Av(without_proof));
  // ClientProof = ClientKey XOR ClientSignature, so the XOR gives back the ClientKey, which is
  // right iff it hashes to StoredKey. Keeping it lets the agent log in to PostgreSQL as the user.
  auto matches = [&](const ScramKeys& keys) -> std::optional<Sha256Digest> {
    const Sha256Digest client_signature = HmacSha256(AsStringView(keys.stored_key), auth_message);
    const Sha256Digest client_key = Xor(*proof, client_signature);
    const Sha256Digest stored_key = Sha256(AsStringView(client_key));
    if (!SecretEquals(AsStringView(stored_key), AsStringView(keys.stored_key))) return std::nullopt;
    return client_key;
  };
  std::optional<Sha256Digest> client_key = matches(keys_);
  for (size_t i = 0; !client_key.has_value() && i < alternatives_.size(); ++i) {
    client_key = matches(alternatives_[i]);
    if (client_key.has_value()) {
      keys_ = std::move(alternatives_[i]);
      matched_alternative_ = true;
    }
  }
  alternatives_.clear();
  if (!client_key.has_value()) {
    return absl::PermissionDeniedError("SCRAM authentication failed: client proof is wrong");
  }
  keys_.client_key = *client_key;
  const Sha256Digest server_signature = HmacSha256(AsStringView(keys_.server_key), auth_message);
  return absl::StrCat("v=", Base64Encode(AsStringView(server_signature)));
}

bool ScramServerExchange::AddAlternativeKeys(ScramKeys keys) {
  if (state_ == State::kDone || keys.salt != keys_.salt || keys.iterations != keys_.iterations) {
    return false;
  }
  alternatives_.push_back(std::move(keys));
  return true;
}

// ---------------------------------------------------------------------------------------------
// Client side.

ScramClientExchange ScramClientExchange::FromPassword(std::string password,
                                                      std::string client_nonce) {
  ScramClientExchange exchange;
  exchange.password_ = std::move(password);
  exchange.client_nonce_ = client_nonce.empty() ? NewNonce() : std::move(client_nonce);
  return exchange;
}

ScramClientExchange ScramClientExchange::FromKeys(ScramKeys keys, std::string client_nonce) {
  ScramClientExchange exchange;
  exchange.keys_ = std::move(keys);
  exchange.client_nonce_ = client_nonce.empty() ? NewNonce() : std::move(client_nonce);
  return exchange;
}

void ScramClientExchange::SetUserName(std::string_view user) {
  user_name_.clear();
  for (char c : user) {
    if (c == '=') {
      user_name_ += "=3D";
    } else if (c == ',') {
      user_name_ += "=2C";
    } else {
      user_name_ += c;
    }
  }
}

std::string ScramClientExchange::ClientFirstMessage() {
  client_first_bare_ = absl::StrCat("n=", user_name_, ",r=", client_nonce_);
  // "n": we do not support channel binding and do not claim the server lacks it.
  return absl::StrCat("n,,", client_first_bare_);
}

absl::StatusOr<std::string> ScramClientExchange::HandleServerFirst(std::string_view server_first) {
  if (client_first_bare_.empty()) {
    return absl::FailedPreconditionError("SCRAM server-first-message before ClientFirstMessage()");
  }
  if (!expected_server_signature_.empty()) {
    return absl::FailedPreconditionError("SCRAM server-first-message already handled");
  }
  constexpr std::string_view kMsg = "server-first-message";

  std::vector<std::string_view> parts = Split(server_first, ',');
  std::string_view nonce, salt_b64, iterations_text;
  if (parts[0].starts_with("m=")) {
    return absl::InvalidArgumentError("SCRAM mandatory extension (m=) is not supported");
  }
  if (!Attribute(parts[0], 'r', &nonce)) return Malformed(kMsg, "missing nonce (r=)");
  if (parts.size() < 2 || !Attribute(parts[1], 's', &salt_b64)) {
    return Malformed(kMsg, "missing salt (s=)");
  }
  if (parts.size() < 3 || !Attribute(parts[2], 'i', &iterations_text)) {
    return Malformed(kMsg, "missing iteration count (i=)");
  }
  for (size_t i = 3; i < parts.size(); ++i) {
    if (!IsExtension(parts[i])) return Malformed(kMsg, "garbage after iteration count");
  }
  // The server must extend our nonce, not replace it: otherwise this could be a replay.
  if (nonce.size() <= client_nonce_.size() || !nonce.starts_with(client_nonce_) ||
      !IsValidNonce(nonce)) {
    return absl::InvalidArgumentError(
        "SCRAM server nonce does not extend the client nonce (nonce mismatch)");
  }
  std::optional<std::string> salt = Base64Decode(salt_b64);
  if (!salt.has_value() || salt->empty()) {
    return Malformed(kMsg, "salt (s=) is empty or not valid base64");
  }
  std::optional<int> iterations = ParseIterations(iterations_text);
  if (!iterations.has_value()) {
    return Malformed(
        kMsg, absl::StrCat("iteration count (i=) must be a number in 1..", kMaxScramIterations));
  }

  ScramKeys keys;
  if (keys_.has_value()) {
    // Recovered keys are tied to one salt and iteration count: if the server's secret differs
    // (e.g. the password was changed on the server), these keys cannot produce a valid proof.
    if (*salt != keys_->salt || *iterations != keys_->iterations) {
      return absl::FailedPreconditionError(
          "server's SCRAM salt/iteration count differ from the ones of the client's keys; the "
          "server has a different secret for this user");
    }
    if (!keys_->client_key.has_value()) {
      return absl::FailedPreconditionError(
          "SCRAM keys have no ClientKey; cannot authenticate without the password");
    }
    keys = *keys_;
  } else {
    keys = ScramKeysFromPassword(password_, *salt, *iterations);
  }

  const std::string without_proof = absl::StrCat("c=", Base64Encode("n,,"), ",r=", Av(nonce));
  const std::string auth_message =
      absl::StrCat(client_first_bare_, ",", Av(server_first), ",", without_proof);
  const Sha256Digest client_signature = HmacSha256(AsStringView(keys.stored_key), auth_message);
  const Sha256Digest proof = Xor(*keys.client_key, client_signature);
  const Sha256Digest server_signature = HmacSha256(AsStringView(keys.server_key), auth_message);
  expected_server_signature_ = std::string(AsStringView(server_signature));
  return absl::StrCat(without_proof, ",p=", Base64Encode(AsStringView(proof)));
}

absl::Status ScramClientExchange::VerifyServerFinal(std::string_view server_final) {
  if (expected_server_signature_.empty()) {
    return absl::FailedPreconditionError(
        "SCRAM server-final-message before a successful server-first-message");
  }
  constexpr std::string_view kMsg = "server-final-message";
  std::vector<std::string_view> parts = Split(server_final, ',');
  std::string_view value;
  if (Attribute(parts[0], 'e', &value)) {
    return absl::PermissionDeniedError(absl::StrCat("SCRAM server error: ", Av(value)));
  }
  if (!Attribute(parts[0], 'v', &value)) return Malformed(kMsg, "missing verifier (v=)");
  for (size_t i = 1; i < parts.size(); ++i) {
    if (!IsExtension(parts[i])) return Malformed(kMsg, "garbage after verifier");
  }
  std::optional<std::string> signature = Base64Decode(value);
  if (!signature.has_value()) return Malformed(kMsg, "verifier (v=) is not valid base64");
  if (!SecretEquals(*signature, expected_server_signature_)) {
    return absl::PermissionDeniedError(
        "SCRAM server signature does not match: the server does not know the secret");
  }
  return absl::OkStatus();
}

}  // namespace pgfleet::crypto
