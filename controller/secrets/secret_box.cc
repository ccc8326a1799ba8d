#include "controller/secrets/secret_box.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/log.h"
#include "common/status_macros.h"

namespace pgfleet::controller::secrets {
namespace {

struct CipherCtxFree {
  void operator()(EVP_CIPHER_CTX* ctx) const { EVP_CIPHER_CTX_free(ctx); }
};
using CipherCtx = std::unique_ptr<EVP_CIPHER_CTX, CipherCtxFree>;

bool IsHex(const std::string& text) {
  for (char c : text) {
    if (!absl::ascii_isxdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

// Wipes a string that held key material before it is freed.
void Wipe(std::string& text) {
  if (!text.empty()) OPENSSL_cleanse(text.data(), text.size());
  text.clear();
}

}  // namespace

SecretKey::~SecretKey() { OPENSSL_cleanse(key_.data(), key_.size()); }

std::string SecretKey::Fingerprint(const std::string& material) const {
  std::array<unsigned char, 32> fingerprint_key{};
  size_t key_length = fingerprint_key.size();
  EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, nullptr);
  const bool derived =
      ctx != nullptr && EVP_PKEY_derive_init(ctx) == 1 &&
      EVP_PKEY_CTX_set_hkdf_md(ctx, EVP_sha256()) == 1 &&
      EVP_PKEY_CTX_set1_hkdf_key(ctx, key_.data(), static_cast<int>(key_.size())) == 1 &&
      EVP_PKEY_CTX_add1_hkdf_info(ctx, reinterpret_cast<const unsigned char*>(kFingerprintLabel),
                                  static_cast<int>(strlen(kFingerprintLabel))) == 1 &&
      EVP_PKEY_derive(ctx, fingerprint_key.data(), &key_length) == 1;
  EVP_PKEY_CTX_free(ctx);
  PGF_CHECK(derived && key_length == fingerprint_key.size());
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int mac_length = 0;
  const unsigned char* computed = HMAC(
      EVP_sha256(), fingerprint_key.data(), static_cast<int>(fingerprint_key.size()),
      reinterpret_cast<const unsigned char*>(material.data()), material.size(), mac, &mac_length);
  OPENSSL_cleanse(fingerprint_key.data(), fingerprint_key.size());
  PGF_CHECK(computed != nullptr);
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(mac), mac_length));
}

absl::StatusOr<std::string> Keyring::Fingerprint(const std::string& material) const {
  if (!current_.has_value()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "this controller has no secrets key, so it stores no credentials or TLS files; ",
        kMakeKeyHint));
  }
  return current_->Fingerprint(material);
}

absl::StatusOr<SecretKey> SecretKey::FromBytes(const std::string& raw) {
  if (raw.size() != kKeyBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("a secrets key is ", kKeyBytes, " bytes, got ", raw.size()));
  }
  SecretKey key;
  memcpy(key.key_.data(), raw.data(), kKeyBytes);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  if (EVP_Digest(raw.data(), raw.size(), digest, &length, EVP_sha256(), nullptr) != 1) {
    return absl::InternalError("sha256 failed");
  }
  key.id_ = absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(digest), 8));
  return key;
}

absl::StatusOr<SecretKey> SecretKey::FromFile(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    return absl::NotFoundError(
        absl::StrCat("secrets key file ", path, ": ", strerror(errno), "; ", kMakeKeyHint));
  }
  // A directory (a mistyped path) was told to chmod 600, then that it held no key.
  if (!S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat("secrets key file ", path, " is not a regular file",
                     S_ISDIR(st.st_mode) ? " but a directory" : "", "; ", kMakeKeyHint));
  }
  if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "secrets key file ", path, " is readable or writable by its group or others (mode ",
        absl::StrFormat("%04o", st.st_mode & 0777), "); chmod 600 it"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot read secrets key file ", path, ": ", strerror(errno)));
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  std::string text = buffer.str();
  std::string trimmed(absl::StripAsciiWhitespace(text));
  Wipe(text);
  std::string raw;
  if (trimmed.size() == 2 * kKeyBytes && IsHex(trimmed)) {
    raw = absl::HexStringToBytes(trimmed);
  } else if (!absl::Base64Unescape(trimmed, &raw) || raw.size() != kKeyBytes) {
    Wipe(trimmed);
    Wipe(raw);
    return absl::InvalidArgumentError(
        absl::StrCat("secrets key file ", path,
                     " must hold 32 random bytes as 64 hex digits or as base64; ", kMakeKeyHint));
  }
  Wipe(trimmed);
  absl::StatusOr<SecretKey> key = FromBytes(raw);
  Wipe(raw);
  return key;
}

absl::StatusOr<SealedValue> SecretKey::Seal(const std::string& plaintext,
                                            const std::string& associated_data) const {
  SealedValue sealed;
  sealed.key_id = id_;
  sealed.nonce.resize(kNonceBytes);
  if (RAND_bytes(reinterpret_cast<unsigned char*>(sealed.nonce.data()), kNonceBytes) != 1) {
    return absl::InternalError("RAND_bytes failed");
  }
  CipherCtx ctx(EVP_CIPHER_CTX_new());
  if (ctx == nullptr) return absl::ResourceExhaustedError("EVP_CIPHER_CTX_new failed");
  int length = 0;
  sealed.ciphertext.resize(plaintext.size() + kTagBytes);
  auto* out = reinterpret_cast<unsigned char*>(sealed.ciphertext.data());
  if (EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, kNonceBytes, nullptr) != 1 ||
      EVP_EncryptInit_ex(ctx.get(), nullptr, nullptr, key_.data(),
                         reinterpret_cast<const unsigned char*>(sealed.nonce.data())) != 1 ||
      EVP_EncryptUpdate(ctx.get(), nullptr, &length,
                        reinterpret_cast<const unsigned char*>(associated_data.data()),
                        static_cast<int>(associated_data.size())) != 1 ||
      EVP_EncryptUpdate(ctx.get(), out, &length,
                        reinterpret_cast<const unsigned char*>(plaintext.data()),
                        static_cast<int>(plaintext.size())) != 1) {
    return absl::InternalError("AES-256-GCM encryption failed");
  }
  int final_length = 0;
  if (EVP_EncryptFinal_ex(ctx.get(), out + length, &final_length) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, kTagBytes,
                          out + length + final_length) != 1) {
    return absl::InternalError("AES-256-GCM encryption failed");
  }
  sealed.ciphertext.resize(length + final_length + kTagBytes);
  return sealed;
}

absl::StatusOr<std::string> SecretKey::Open(const SealedValue& sealed,
                                            const std::string& associated_data) const {
  if (sealed.key_id != id_) {
    return absl::FailedPreconditionError(
        absl::StrCat("sealed by key ", sealed.key_id, ", not by this key (", id_, ")"));
  }
  if (sealed.nonce.size() != kNonceBytes || sealed.ciphertext.size() < kTagBytes) {
    return absl::DataLossError("malformed encrypted value");
  }
  const size_t body = sealed.ciphertext.size() - kTagBytes;
  std::string plaintext(body, '\0');
  CipherCtx ctx(EVP_CIPHER_CTX_new());
  if (ctx == nullptr) return absl::ResourceExhaustedError("EVP_CIPHER_CTX_new failed");
  int length = 0;
  auto* out = reinterpret_cast<unsigned char*>(plaintext.data());
  std::string tag = sealed.ciphertext.substr(body);
  if (EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, kNonceBytes, nullptr) != 1 ||
      EVP_DecryptInit_ex(ctx.get(), nullptr, nullptr, key_.data(),
                         reinterpret_cast<const unsigned char*>(sealed.nonce.data())) != 1 ||
      EVP_DecryptUpdate(ctx.get(), nullptr, &length,
                        reinterpret_cast<const unsigned char*>(associated_data.data()),
                        static_cast<int>(associated_data.size())) != 1 ||
      EVP_DecryptUpdate(ctx.get(), out, &length,
                        reinterpret_cast<const unsigned char*>(sealed.ciphertext.data()),
                        static_cast<int>(body)) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, kTagBytes, tag.data()) != 1) {
    Wipe(plaintext);
    return absl::DataLossError("encrypted value does not decrypt");
  }
  int final_length = 0;
  if (EVP_DecryptFinal_ex(ctx.get(), out + length, &final_length) != 1) {
    Wipe(plaintext);
    return absl::DataLossError(
        "encrypted value does not authenticate (tampered, or moved from another row)");
  }
  plaintext.resize(length + final_length);
  return plaintext;
}

absl::StatusOr<SealedValue> Keyring::Seal(const std::string& plaintext,
                                          const std::string& associated_data) const {
  if (!current_.has_value()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "this controller has no secrets key, so it stores no credentials or TLS files; ",
        kMakeKeyHint));
  }
  return current_->Seal(plaintext, associated_data);
}

absl::StatusOr<std::string> Keyring::Open(const SealedValue& sealed,
                                          const std::string& associated_data) const {
  if (current_.has_value() && sealed.key_id == current_->id()) {
    return current_->Open(sealed, associated_data);
  }
  if (previous_.has_value() && sealed.key_id == previous_->id()) {
    return previous_->Open(sealed, associated_data);
  }
  return absl::FailedPreconditionError(
      absl::StrCat("secret material was encrypted with key ", sealed.key_id,
                   ", which this controller does not have (give it as --secrets-key-file, or as "
                   "--secrets-previous-key-file while rotating to a new key)"));
}

absl::StatusOr<std::shared_ptr<const Keyring>> LoadKeyring(const std::string& key_file,
                                                           const std::string& previous_key_file) {
  std::optional<SecretKey> current, previous;
  if (!key_file.empty()) {
    PGF_ASSIGN_OR_RETURN(SecretKey key, SecretKey::FromFile(key_file));
    current = std::move(key);
  }
  if (!previous_key_file.empty()) {
    PGF_ASSIGN_OR_RETURN(SecretKey key, SecretKey::FromFile(previous_key_file));
    previous = std::move(key);
  }
  if (current.has_value() && previous.has_value() && current->id() == previous->id()) {
    previous.reset();  // The same key twice: nothing to rotate.
  }
  return std::make_shared<const Keyring>(std::move(current), std::move(previous));
}

std::string AssociatedData(const std::string& kind, uint64_t version, const std::string& name) {
  std::string out = "pgfleet-secret";
  out.push_back('\0');
  absl::StrAppend(&out, kind);
  out.push_back('\0');
  absl::StrAppend(&out, version);
  out.push_back('\0');
  absl::StrAppend(&out, name);
  return out;
}

}  // namespace pgfleet::controller::secrets
