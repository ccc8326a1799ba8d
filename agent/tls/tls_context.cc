#include "agent/tls/tls_context.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/config/tls_handshake.h"
#include "common/status_macros.h"

namespace pgfleet::agent {
namespace {

using config::TlsMode;

// "error:0A000086:SSL routines::certificate verify failed" -> "certificate verify failed".
std::string ReasonOf(unsigned long code) {
  char buffer[256];
  ERR_error_string_n(code, buffer, sizeof(buffer));
  const std::string line = buffer;
  const size_t reason = line.rfind(':');
  return reason == std::string::npos ? line : line.substr(reason + 1);
}

std::string OpenSslError() {
  std::string text;
  while (unsigned long code = ERR_get_error()) {
    absl::StrAppend(&text, text.empty() ? "" : "; ", ReasonOf(code));
  }
  return text.empty() ? "unknown OpenSSL error" : text;
}

// PgBouncer's tls_protocols: "secure" (TLSv1.2 and TLSv1.3), "all", "legacy", or a list of
// tlsv1.0 .. tlsv1.3.
absl::Status SetProtocols(SSL_CTX* ctx, const std::string& key, const std::string& value) {
  int min_version = 0, max_version = 0;
  auto widen = [&](int version) {
    if (min_version == 0 || version < min_version) min_version = version;
    if (version > max_version) max_version = version;
  };
  for (absl::string_view token : absl::StrSplit(value, absl::ByAnyChar(", "), absl::SkipEmpty())) {
    const std::string name = absl::AsciiStrToLower(token);
    if (name == "secure" || name == "default") {
      widen(TLS1_2_VERSION);
      widen(TLS1_3_VERSION);
    } else if (name == "all" || name == "legacy") {
      widen(TLS1_VERSION);
      widen(TLS1_3_VERSION);
    } else if (name == "tlsv1.0") {
      widen(TLS1_VERSION);
    } else if (name == "tlsv1.1") {
      widen(TLS1_1_VERSION);
    } else if (name == "tlsv1.2") {
      widen(TLS1_2_VERSION);
    } else if (name == "tlsv1.3") {
      widen(TLS1_3_VERSION);
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat(key, ": unknown protocol '", token, "' (try secure, tlsv1.2, tlsv1.3)"));
    }
  }
  if (min_version == 0) return absl::InvalidArgumentError(absl::StrCat(key, " is empty"));
  SSL_CTX_set_min_proto_version(ctx, min_version);
  SSL_CTX_set_max_proto_version(ctx, max_version);
  return absl::OkStatus();
}

absl::Status SetCiphers(SSL_CTX* ctx, const std::string& key, const std::string& value) {
  // libtls' named sets, as PgBouncer accepts them: OpenSSL's defaults are its secure set.
  const std::string lower = absl::AsciiStrToLower(value);
  if (lower.empty() || lower == "default" || lower == "secure" || lower == "fast" ||
      lower == "normal") {
    return absl::OkStatus();
  }
  const std::string list =
      (lower == "all" || lower == "legacy" || lower == "compat" || lower == "insecure")
          ? "ALL:!aNULL"
          : value;
  if (SSL_CTX_set_cipher_list(ctx, list.c_str()) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(key, " '", value, "': no usable cipher (", OpenSslError(), ")"));
  }
  return absl::OkStatus();
}

// The handshake keys of tls_handshake.h, with the key and value in front of the reason, as the
// other keys' errors have them (LocateTlsError finds the key's line from it).
absl::Status ApplyHandshakeKey(SSL_CTX* ctx, absl::Status (*apply)(SSL_CTX*, absl::string_view),
                               const std::string& key, const std::string& value) {
  absl::Status applied = apply(ctx, value);
  if (applied.ok()) return applied;
  return absl::Status(applied.code(), absl::StrCat(key, " '", value, "': ", applied.message()));
}

absl::Status LoadKeyPair(SSL_CTX* ctx, const std::string& cert_key, const std::string& cert,
                         const std::string& key_key, const std::string& key) {
  if (SSL_CTX_use_certificate_chain_file(ctx, cert.c_str()) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(cert_key, " ", cert, ": cannot load certificate: ", OpenSslError()));
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, key.c_str(), SSL_FILETYPE_PEM) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(key_key, " ", key, ": cannot load private key: ", OpenSslError()));
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(key_key, " ", key, " does not match ", cert_key, " ", cert));
  }
  return absl::OkStatus();
}

absl::Status LoadCa(SSL_CTX* ctx, const std::string& ca_key, const std::string& ca) {
  if (SSL_CTX_load_verify_locations(ctx, ca.c_str(), nullptr) != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(ca_key, " ", ca, ": cannot load CA certificates: ", OpenSslError()));
  }
  return absl::OkStatus();
}

bool IsIpAddress(const std::string& host) {
  unsigned char buffer[sizeof(in6_addr)];
  return inet_pton(AF_INET, host.c_str(), buffer) == 1 ||
         inet_pton(AF_INET6, host.c_str(), buffer) == 1;
}

bool Verifies(TlsMode mode) { return mode == TlsMode::kVerifyCa || mode == TlsMode::kVerifyFull; }

}  // namespace

absl::StatusOr<std::shared_ptr<const TlsContext>> TlsContext::ForClients(
    const config::Config& cfg) {
  if (cfg.client_tls_sslmode == TlsMode::kDisable) return nullptr;
  ERR_clear_error();
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  if (ctx == nullptr) return absl::InternalError(OpenSslError());
  std::shared_ptr<const TlsContext> context(new TlsContext(ctx, cfg.client_tls_sslmode));
  PGF_RETURN_IF_ERROR(LoadKeyPair(ctx, "client_tls_cert_file", cfg.client_tls_cert_file,
                                  "client_tls_key_file", cfg.client_tls_key_file));
  PGF_RETURN_IF_ERROR(SetProtocols(ctx, "client_tls_protocols", cfg.client_tls_protocols));
  PGF_RETURN_IF_ERROR(SetCiphers(ctx, "client_tls_ciphers", cfg.client_tls_ciphers));
  PGF_RETURN_IF_ERROR(ApplyHandshakeKey(ctx, &config::ApplyTls13Ciphers, "client_tls13_ciphers",
                                        cfg.client_tls13_ciphers));
  PGF_RETURN_IF_ERROR(ApplyHandshakeKey(ctx, &config::ApplyEcdhCurve, "client_tls_ecdhcurve",
                                        cfg.client_tls_ecdhcurve));
  // After the cipher string: an @SECLEVEL there decides whether "legacy" DH is allowed.
  PGF_RETURN_IF_ERROR(ApplyHandshakeKey(ctx, &config::ApplyDheParams, "client_tls_dheparams",
                                        cfg.client_tls_dheparams));
  if (!cfg.client_tls_ca_file.empty()) {
    PGF_RETURN_IF_ERROR(LoadCa(ctx, "client_tls_ca_file", cfg.client_tls_ca_file));
  }
  // verify-ca / verify-full: clients must present a certificate the CA signed. Below that,
  // with a CA set, a certificate is asked for but optional, and checked when presented (as
  // PgBouncer's verify_client_optional): an hba `cert` line can then log a client in under
  // sslmode require too.
  if (Verifies(cfg.client_tls_sslmode)) {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  } else if (!cfg.client_tls_ca_file.empty()) {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  }
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
  static const unsigned char kSessionContext[] = "pgfleet-agent";
  SSL_CTX_set_session_id_context(ctx, kSessionContext, sizeof(kSessionContext) - 1);
  return context;
}

absl::StatusOr<std::shared_ptr<const TlsContext>> TlsContext::ForServers(
    const config::Config& cfg) {
  if (cfg.server_tls_sslmode == TlsMode::kDisable) return nullptr;
  ERR_clear_error();
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (ctx == nullptr) return absl::InternalError(OpenSslError());
  std::shared_ptr<const TlsContext> context(new TlsContext(ctx, cfg.server_tls_sslmode));
  PGF_RETURN_IF_ERROR(SetProtocols(ctx, "server_tls_protocols", cfg.server_tls_protocols));
  PGF_RETURN_IF_ERROR(SetCiphers(ctx, "server_tls_ciphers", cfg.server_tls_ciphers));
  PGF_RETURN_IF_ERROR(ApplyHandshakeKey(ctx, &config::ApplyTls13Ciphers, "server_tls13_ciphers",
                                        cfg.server_tls13_ciphers));
  if (!cfg.server_tls_cert_file.empty()) {
    PGF_RETURN_IF_ERROR(LoadKeyPair(ctx, "server_tls_cert_file", cfg.server_tls_cert_file,
                                    "server_tls_key_file", cfg.server_tls_key_file));
  }
  if (!cfg.server_tls_ca_file.empty()) {
    PGF_RETURN_IF_ERROR(LoadCa(ctx, "server_tls_ca_file", cfg.server_tls_ca_file));
  }
  // prefer/require encrypt without checking who answers, as libpq does.
  SSL_CTX_set_verify(ctx, Verifies(cfg.server_tls_sslmode) ? SSL_VERIFY_PEER : SSL_VERIFY_NONE,
                     nullptr);
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  return context;
}

TlsContext::~TlsContext() { SSL_CTX_free(ctx_); }

ssl_st* TlsContext::NewSession(const std::string& host) const {
  SSL* ssl = SSL_new(ctx_);
  if (ssl == nullptr || host.empty()) return ssl;
  if (!IsIpAddress(host)) SSL_set_tlsext_host_name(ssl, host.c_str());
  if (mode_ == TlsMode::kVerifyFull) {
    // The certificate must name the host we connected to (DNS name or IP address SAN/CN).
    if (IsIpAddress(host)) {
      X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host.c_str());
    } else {
      SSL_set1_host(ssl, host.c_str());
    }
  }
  return ssl;
}

namespace {

// The reasons collected, then the certificate check's verdict when it failed.
std::string ErrorTextWithVerify(std::string text, SSL* ssl) {
  if (ssl != nullptr) {
    const long verify = SSL_get_verify_result(ssl);
    if (verify != X509_V_OK) {
      absl::StrAppend(&text, text.empty() ? "" : " (", X509_verify_cert_error_string(verify),
                      text.empty() ? "" : ")");
    }
  }
  return text.empty() ? "TLS error" : text;
}

}  // namespace

std::string DescribeTls(ssl_st* ssl) {
  if (ssl == nullptr) return "";
  return absl::StrCat(SSL_get_version(ssl), "/", SSL_get_cipher_name(ssl));
}

std::string TlsErrorText(ssl_st* ssl) {
  std::string text;
  while (unsigned long code = ERR_get_error()) {
    absl::StrAppend(&text, text.empty() ? "" : "; ", ReasonOf(code));
  }
  return ErrorTextWithVerify(std::move(text), ssl);
}

}  // namespace pgfleet::agent
