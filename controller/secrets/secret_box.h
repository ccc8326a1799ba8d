// Encryption of secret material at rest (credentials and TLS files of config versions):
// AES-256-GCM from OpenSSL, a random 12-byte nonce per value, and associated data that binds
// each ciphertext to where it belongs (config version and file key), so a ciphertext copied to
// another row does not decrypt. The key comes from a file (--secrets-key-file); its id (the first
// bytes of sha256(key), hex) is stored beside each ciphertext so a rotated key can be told
// apart from a wrong one.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"

namespace pgfleet::controller::secrets {

inline constexpr size_t kKeyBytes = 32;
inline constexpr size_t kNonceBytes = 12;
inline constexpr size_t kTagBytes = 16;

// How to make a key, for every message that needs one.
inline constexpr char kMakeKeyHint[] =
    "make one with `head -c 32 /dev/urandom | xxd -p -c 64 > /etc/pgfleet/secrets.key; chmod 600 "
    "/etc/pgfleet/secrets.key` and start pgfleet-controller with "
    "--secrets-key-file=/etc/pgfleet/secrets.key";

// The HKDF label of the fingerprint key: a fixed string, so the key is stable for one secrets
// key and unrelated to the encryption itself.
inline constexpr char kFingerprintLabel[] = "pgfleet secret fingerprint v1";

// A value as stored: ciphertext followed by the 16-byte GCM tag, its nonce, and the key's id.
struct SealedValue {
  std::string ciphertext;  // Includes the tag at the end.
  std::string nonce;       // kNonceBytes.
  std::string key_id;      // Hex, KeyId() of the key that sealed it.
};

class SecretKey {
 public:
  // Exactly kKeyBytes raw bytes; InvalidArgument otherwise.
  static absl::StatusOr<SecretKey> FromBytes(const std::string& raw);
  // A file holding 32 bytes as 64 hex digits or as base64 (surrounding whitespace ignored).
  // FailedPrecondition when the file is readable by its group or by others.
  static absl::StatusOr<SecretKey> FromFile(const std::string& path);

  SecretKey(const SecretKey&) = default;
  SecretKey& operator=(const SecretKey&) = default;
  ~SecretKey();  // Wipes the key bytes.

  // First 8 bytes of sha256(key), 16 hex digits.
  const std::string& id() const { return id_; }

  // What the API, the CLI, the dashboard and the logs show of secret material (and what
  // content addresses cover): HMAC-SHA256 of `material` under a key derived from this one
  // (HKDF-SHA256, info kFingerprintLabel), 64 hex digits. A plain sha256 would let anyone who
  // reads the API confirm a guessed password offline; this one needs the controller's key.
  std::string Fingerprint(const std::string& material) const;

  // `associated_data` is authenticated, not encrypted: Open must be given the same.
  absl::StatusOr<SealedValue> Seal(const std::string& plaintext,
                                   const std::string& associated_data) const;
  // FailedPrecondition when the value was sealed by another key; DataLoss when the ciphertext,
  // nonce, tag or associated data do not authenticate.
  absl::StatusOr<std::string> Open(const SealedValue& sealed,
                                   const std::string& associated_data) const;

 private:
  SecretKey() = default;
  std::array<uint8_t, kKeyBytes> key_{};
  std::string id_;
};

// The current key (seals and opens) and optionally the previous one (opens only), for key
// rotation: values sealed by the previous key are re-sealed with the current one at start.
class Keyring {
 public:
  explicit Keyring(std::optional<SecretKey> current = std::nullopt,
                   std::optional<SecretKey> previous = std::nullopt)
      : current_(std::move(current)), previous_(std::move(previous)) {}

  bool can_seal() const { return current_.has_value(); }
  // The current key's Fingerprint; FailedPrecondition (with kMakeKeyHint) without a key.
  absl::StatusOr<std::string> Fingerprint(const std::string& material) const;
  const std::optional<SecretKey>& current() const { return current_; }
  const std::optional<SecretKey>& previous() const { return previous_; }

  // FailedPrecondition (with kMakeKeyHint) without a current key.
  absl::StatusOr<SealedValue> Seal(const std::string& plaintext,
                                   const std::string& associated_data) const;
  // With whichever key's id matches; FailedPrecondition when neither does.
  absl::StatusOr<std::string> Open(const SealedValue& sealed,
                                   const std::string& associated_data) const;

 private:
  std::optional<SecretKey> current_;
  std::optional<SecretKey> previous_;
};

// The keyring from pgfleet-controller's --secrets-key-file and --secrets-previous-key-file
// (either may be empty). An unreadable or unsafe file is an error: the controller must not
// start thinking it has no key when it was given one.
absl::StatusOr<std::shared_ptr<const Keyring>> LoadKeyring(const std::string& key_file,
                                                           const std::string& previous_key_file);

// The associated data binding a value to its row: "pgfleet-secret\0<kind>\0<version>\0<name>".
std::string AssociatedData(const std::string& kind, uint64_t version, const std::string& name);

}  // namespace pgfleet::controller::secrets
